"""Helpers the test modules share: config composition, data-set writers, subprocess runs, W&B
run files and analytic scene geometry, and `nan_loss_train.py`, a training entry point the
reliability tests start. It holds no tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
