"""W&B: offline runs read back completely, one W&B run per training, names, job types, models."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import wandb
from omegaconf import OmegaConf
from wandb.sdk.lib.service.service_connection import ServiceConnection

from loftr.lightning.loggers import RUN_ID_FILE, log_evaluation, sweep_job_names, wandb_mode
from tests.helpers import ROOT
from tests.helpers.compose import compose_cfg
from tests.helpers.runs import train_fast, wait_for_last_checkpoint
from tests.helpers.wandb_records import (
    BLOCK,
    history_rows,
    model_artifacts,
    offline_run_file,
    offline_run_files,
    run_record,
)

pytestmark = pytest.mark.usefixtures("in_repo")


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


@pytest.fixture
def fresh_wandb_settings():
    """wandb reads the environment into its settings once per service; start and end anew."""
    wandb.teardown()
    yield
    wandb.teardown()


def test_login_is_found_by_wandb_s_credential_lookup(tmp_path, monkeypatch, fresh_wandb_settings):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine wandb.example.com\n  login user\n  password {'a' * 40}\n")
    netrc.chmod(0o600)
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # neither the machine's ~/.netrc nor its settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")  # a self-hosted server
    assert wandb_mode(None) == "online"
    wandb.teardown()
    monkeypatch.setenv("WANDB_BASE_URL", "https://other.example.com")  # no entry for this one
    assert wandb_mode(None) == "offline"
    assert wandb_mode("disabled") == "disabled"


def test_sweep_jobs_are_named_by_their_overrides_and_grouped_by_sweep():
    job = OmegaConf.create(
        {
            "mode": "MULTIRUN",
            "job": {"override_dirname": "matcher=ot,supervision=sparse"},
            "sweep": {"dir": "multirun/ablation/2026-01-01_00-00-00"},
        }
    )
    assert sweep_job_names(job) == (
        "matcher=ot,supervision=sparse",
        "ablation/2026-01-01_00-00-00",
    )
    job.mode = "RUN"
    assert sweep_job_names(job) == (None, None)
    assert sweep_job_names(None) == (None, None)


def test_evaluation_run_has_job_type_eval(tmp_path):
    cfg = compose_cfg("evaluate", "ckpt_path=unused.ckpt", "logger=wandb", f"run_dir={tmp_path}")
    result = {"metrics": {"auc@5": 0.5}, "rows": [["a b", "s", 3, 1.0, 0.1, 0.2]]}
    log_evaluation(cfg, {**result, "protocol_key": "k"})
    run = run_record(offline_run_file(tmp_path))
    assert run.job_type == "eval"
    assert history_rows(offline_run_file(tmp_path))[0]["test/auc@5"] == 0.5


def test_checkpoints_are_uploaded_and_wandb_steps_are_trainer_steps(tmp_path):
    train_fast(tmp_path, "logger=wandb", "logger.log_model=true")
    path = offline_run_file(tmp_path)
    run = run_record(path)
    assert run.job_type == "train" and run.run_id == (tmp_path / RUN_ID_FILE).read_text().strip()
    uploads = model_artifacts(path)
    last = [meta["global_step"] for aliases, meta in uploads if "last" in aliases]
    best = [meta for aliases, meta in uploads if "best" in aliases]
    assert last == [2, 4]  # every 2 steps (debug=fast); the save after validation is the same
    assert len(best) == 1 and best[0]["file"].startswith("epoch0-") and "score" in best[0]
    rows = history_rows(path)
    assert [row["_step"] for row in rows] == [0, 1, 2, 3]  # one row per logging step
    assert "metrics_synthetic_test/auc@10" in rows[-1]  # validation joins its step's row


@pytest.mark.slow  # two training processes
def test_sigkill_resume_continues_the_wandb_run_rewound_to_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    train = [
        sys.executable,
        "-m",
        "loftr.train",
        "debug=fast",
        "logger=wandb",
        "trainer.limit_train_batches=6",
        "checkpoint.every_n_train_steps=2",
        "trainer.limit_val_batches=1",
        "logger.n_val_pairs_to_plot=0",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        train, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_last_checkpoint(proc, run_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < step < 6, "the kill must land before the run ends"
    subprocess.run(train, cwd=ROOT, env=env, check=True, capture_output=True)
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    # one W&B run, two processes; the killed one's log holds what wandb-core wrote before it
    # died, often nothing, as it buffers up to 32 KiB (an online run has streamed it already)
    killed, resumed = offline_run_files(run_dir)
    assert killed.name == resumed.name == f"run-{run_id}.wandb"
    record = run_record(resumed)
    assert record.run_id == run_id and record.job_type == "train"
    assert (record.branch_point.run, record.branch_point.value) == (run_id, step - 1)
    assert [row["_step"] for row in history_rows(resumed)] == list(range(step, 6))


def test_stop_signal_save_is_uploaded(tmp_path, monkeypatch):
    from loftr.lightning.module import LoFTRModule

    training_step = LoFTRModule.training_step

    def sigterm_in_first_step(self, *args, **kwargs):
        if self.trainer.global_step == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # LastCheckpoint's handler: stop after this step
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(LoFTRModule, "training_step", sigterm_in_first_step)
    result = train_fast(tmp_path, "logger=wandb", "logger.log_model=true")
    assert result["stopped_by"] == "SIGTERM"
    uploads = model_artifacts(offline_run_file(tmp_path))
    # step 1 is no periodic save (every 2 steps): the upload is the stop's own save
    assert [meta["global_step"] for aliases, meta in uploads if "last" in aliases] == [1]
