"""Helpers for tests that run training: `train_fast` in this process, `python -m loftr.train` in a
subprocess (waiting for its checkpoints and reading its output), and run-directory checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from loftr.lightning.fit import train
from tests.helpers.compose import compose_cfg

# one thread: multi-threaded CPU reductions differ in the last bits from run to run
SINGLE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_command(*overrides: str) -> list[str]:
    """`python -m loftr.train` as a subprocess runs it: the `debug=fast` config, no logger, no
    progress bar, then `overrides`."""
    return [
        sys.executable,
        "-m",
        "loftr.train",
        "debug=fast",
        "logger=none",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]


def train_fast(run_dir: Path, *overrides: str) -> dict:
    """A `debug=fast` training run into `run_dir`, in this process; `train`'s result."""
    cfg = compose_cfg("train", "debug=fast", f"run_dir={run_dir}", *overrides)
    return train(cfg)


def assert_nothing_half_written(run_dir: Path) -> None:
    """No temporary file anywhere; every checkpoint that exists is complete."""
    leftovers = [p for p in run_dir.rglob("*") if p.is_file() and re.search(r"tmp", p.name)]
    assert not leftovers, leftovers
    for ckpt in run_dir.rglob("*.ckpt"):
        torch.load(ckpt, weights_only=True)


def wait_for_last_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float = 300) -> Path:
    """Block until the run writes its first `last.ckpt` (or ends, or `timeout` seconds pass)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + timeout
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return last


class Output:
    """Collects a subprocess's stdout and stderr as they come (progress bars write no newline)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self.threads = [
            threading.Thread(target=self._read, args=(getattr(proc, name), chunks), daemon=True)
            for name, chunks in self.chunks.items()
        ]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _read(stream, chunks: list[bytes]) -> None:
        while chunk := os.read(stream.fileno(), 65536):
            chunks.append(chunk)

    def text(self, name: str) -> str:
        return b"".join(self.chunks[name]).decode(errors="replace")

    def join(self) -> tuple[str, str]:
        """Both streams in full, once the process has closed them."""
        for thread in self.threads:
            thread.join(timeout=60)
        return self.text("stdout"), self.text("stderr")


def wait_until(proc: subprocess.Popen, condition, timeout: float = 300) -> bool:
    """Poll `condition()` until it holds, the process ends or `timeout` seconds pass."""
    deadline = time.time() + timeout
    while not condition() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    return condition()
