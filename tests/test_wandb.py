"""W&B: offline runs read back completely, one W&B run per training, names, job types, models."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import wandb
from wandb.sdk.lib.service.service_connection import ServiceConnection

sys.path.insert(0, str(Path(__file__).parent))
from wandb_records import BLOCK, history_rows, offline_run_file  # noqa: E402


def _wandb_core_children() -> list[int]:
    """Process ids of the wandb-core services this process started."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if name.endswith("(wandb-core") and int(rest.split()[1]) == os.getpid():
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture
def lagging_wandb_core(monkeypatch):
    """wandb-core stopped for 3 s from the moment a run asks it to close the run's stream, as
    on a loaded machine, where it may close it well after `run.finish()` returned."""
    inform_finish = ServiceConnection.inform_finish
    stopped: list[int] = []

    def inform_finish_then_lag(self, run_id: str) -> None:
        for pid in _wandb_core_children():
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        inform_finish(self, run_id=run_id)
        threading.Timer(3.0, resume).start()

    def resume() -> None:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):  # gone once torn down
                os.kill(pid, signal.SIGCONT)

    monkeypatch.setattr(ServiceConnection, "inform_finish", inform_finish_then_lag)
    yield stopped
    resume()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds wandb-core in /proc")
def test_offline_run_is_read_complete_when_wandb_core_closes_it_late(tmp_path, lagging_wandb_core):
    run = wandb.init(mode="offline", dir=tmp_path, project="loftr-test")
    for i in range(5):
        run.log({"x": i})
    run.finish()
    assert lagging_wandb_core, "no wandb-core service was found to stop"
    rows = history_rows(offline_run_file(tmp_path))
    assert [row["x"] for row in rows] == [0, 1, 2, 3, 4]


def test_reader_follows_records_across_32_kib_blocks(tmp_path):
    run = wandb.init(mode="offline", dir=tmp_path, project="loftr-test")
    for i in range(400):
        run.log({"i": i, "text": f"{i:04d}" * (i % 97)})  # records of many lengths
    run.finish()
    path = offline_run_file(tmp_path)
    assert path.stat().st_size > 4 * BLOCK
    rows = history_rows(path)
    assert [row["i"] for row in rows] == list(range(400))
    assert all(row["text"] == f"{row['i']:04d}" * (row["i"] % 97) for row in rows)
