"""Shared test set-up: small thread count and deterministic seeds on these 2-core machines, and
the fixtures several modules use."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

import loftr.config  # noqa: E402, F401  (the schemas and resolvers, before any test composes)
from tests.helpers import ROOT  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def in_repo(monkeypatch) -> None:
    """Work from the repository root: runs read `data/synthetic` relative to it, as `make train`
    does. A module that needs it in every test says so in its `pytestmark`."""
    monkeypatch.chdir(ROOT)
