"""Helpers for tests that drive `python -m loftr.train` in a subprocess."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for_last_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float = 300) -> Path:
    """Block until the run writes its first `last.ckpt` (or ends, or `timeout` seconds pass)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + timeout
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return last
