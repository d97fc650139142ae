"""Helpers for tests that drive `python -m loftr.train` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path


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
