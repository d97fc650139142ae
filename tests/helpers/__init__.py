"""Helpers the test modules share: config composition, data-set writers, subprocess runs, W&B
run files and analytic scene geometry. It holds no tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
