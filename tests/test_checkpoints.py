"""Where checkpoints are written and what a run resumes: atomic saves across filesystems, own
lineage only, the same training values, one command per run directory, one directory per job."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import loftr.config  # noqa: F401  (registers the schemas and resolvers)
from loftr.errors import CheckpointError, ConfigError
from loftr.lightning import checkpoints
from loftr.lightning.fit import train
from tests.helpers import ROOT
from tests.helpers.compose import compose_fast
from tests.helpers.runs import train_command, wait_for_last_checkpoint

pytestmark = pytest.mark.usefixtures("in_repo")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished two-step run directory; tests copy it before resuming it."""
    run_dir = tmp_path_factory.mktemp("run") / "run"
    os.chdir(ROOT)
    train(compose_fast(f"run_dir={run_dir}", "trainer.limit_train_batches=2"))
    return run_dir


def copy_run(trained_run: Path, dest: Path) -> Path:
    shutil.copytree(trained_run, dest)
    return dest


def step_of(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=True)["global_step"]


# ---------------------------------------------------------------------- 1: atomic writes
# Runs in a child process: builds the project's Trainer and saves `last.ckpt` through it. The
# process is SIGKILLed the moment anything in the checkpoint directory is opened for writing,
# the instant a slow write is most exposed.
KILLED_SAVE = """
import builtins, os, signal, sys
from pathlib import Path
import torch
from hydra import compose, initialize_config_dir
import loftr.lightning.schedule
from loftr.lightning.trainer import build_trainer

root, run_dir = sys.argv[1], Path(sys.argv[2])
with initialize_config_dir(config_dir=root + "/conf", version_base="1.3"):
    cfg = compose("train", overrides=["debug=fast", "logger=none", f"run_dir={run_dir}"])
trainer = build_trainer(cfg, run_dir, False, [])
ckpt_dir, real_open = str(run_dir / "checkpoints"), builtins.open

def open_then_die(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if "w" in mode and isinstance(file, (str, os.PathLike)):
        if os.path.dirname(os.path.abspath(file)) == ckpt_dir:
            os.kill(os.getpid(), signal.SIGKILL)
    return f

builtins.open = open_then_die
trainer.strategy.checkpoint_io.save_checkpoint(
    {"global_step": 2, "weights": torch.zeros(1000)}, run_dir / "checkpoints" / "last.ckpt"
)
"""


@pytest.fixture
def shm_dir():
    """A directory on /dev/shm (tmpfs), another filesystem than the work tree and tmp_path."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm tmpfs on this machine")
    path = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="loftr-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_kill_during_a_save_across_filesystems_keeps_last_and_leaks_nothing(tmp_path, shm_dir):
    run_dir, tmpdir = shm_dir / "run", tmp_path / "tmpdir"
    tmpdir.mkdir()
    if os.stat(shm_dir).st_dev == os.stat(tmpdir).st_dev:
        pytest.skip("/dev/shm and the test's TMPDIR are one filesystem here")
    (run_dir / "checkpoints").mkdir(parents=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 1}, last)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(ROOT), str(run_dir)],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert step_of(last) == 1  # the previous checkpoint, whole
    assert not list(tmpdir.iterdir())  # nothing staged (and leaked) in $TMPDIR
    leftovers = list(run_dir.rglob("*tmp*"))
    assert leftovers and checkpoints.remove_leftovers(run_dir) == leftovers
    assert not list(run_dir.rglob("*tmp*"))


def test_a_run_removes_what_a_killed_save_left(tmp_path, trained_run):
    run_dir = copy_run(trained_run, tmp_path / "run")
    leftover = run_dir / "checkpoints" / f".last.ckpt.999{checkpoints.TMP_SUFFIX}"
    leftover.write_bytes(b"half a checkpoint")
    train(compose_fast(f"run_dir={run_dir}", "trainer.limit_train_batches=2"))
    assert not leftover.exists()


# ----------------------------------------------------------------- 4: own lineage only
def test_ckpt_path_last_never_resumes_a_sibling_job(tmp_path, trained_run):
    sweep = tmp_path / "multirun"
    copy_run(trained_run, sweep / "0")  # job 0 saved; job 1 was interrupted before saving
    with pytest.raises(CheckpointError, match=r"multirun/1/checkpoints/last.ckpt does not exist"):
        train(compose_fast(f"run_dir={sweep / '1'}", "ckpt_path=last"))
    assert not (sweep / "1" / "checkpoints").exists()


# ------------------------------------------------------------- 5: same values, one command
def test_resume_with_other_training_values_is_refused_naming_the_keys(tmp_path, trained_run):
    run_dir = copy_run(trained_run, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(
        CheckpointError,
        match=r"model\.match_coarse\.sparse_spvs: False -> True; optim\.canonical_lr: 0\.001 -> "
        r"0\.01; optim\.lr: .*resume_allow_changes=\[model\.match_coarse\.sparse_spvs,"
        r"optim\.canonical_lr,optim\.lr\]",
    ):
        train(
            compose_fast(
                f"run_dir={run_dir}",
                "trainer.limit_train_batches=2",
                "supervision=sparse",
                "optim.canonical_lr=0.01",
            )
        )
    assert step_of(last) == 2


def test_allowed_changes_and_a_longer_run_resume_and_say_what(tmp_path, trained_run, caplog):
    run_dir = copy_run(trained_run, tmp_path / "run")
    caplog.set_level(logging.INFO)
    result = train(
        compose_fast(
            f"run_dir={run_dir}",
            "trainer.limit_train_batches=2",
            "trainer.max_epochs=2",  # extending the run is a plain resume
            "supervision=sparse",
            "resume_allow_changes=[model.match_coarse]",
        )
    )
    assert result["trainer"].global_step == 4
    assert f"resuming {run_dir}/checkpoints/last.ckpt: epoch 0, step 2" in caplog.text


def test_an_allowed_change_that_names_no_training_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"resume_allow_changes names 'optim\.lerning_rate'"):
        train(compose_fast(f"run_dir={tmp_path}", "resume_allow_changes=[optim.lerning_rate]"))


def test_a_second_command_on_a_live_run_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        train_command("trainer.limit_train_batches=40", f"hydra.run.dir={run_dir}"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_last_checkpoint(proc, run_dir).exists()
        host = socket.gethostname()
        with pytest.raises(CheckpointError, match=rf"in use by pid {proc.pid} on {host}"):
            train(compose_fast(f"run_dir={run_dir}", "optim.canonical_lr=0.01"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    assert not (run_dir / ".lock").exists()  # the first run let go of it when it stopped


def test_stale_locks_are_taken_over_and_live_ones_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    lock = checkpoints.RunLock(tmp_path)

    def held_by(age_s: float = 0, **holder) -> None:
        lock.path.write_text(json.dumps({"since": "08:00", **holder}))
        os.utime(lock.path, (time.time() - age_s, time.time() - age_s))

    def takes_over() -> None:
        lock.acquire()
        assert lock.holder()["pid"] == os.getpid()
        lock.release()
        assert not lock.path.exists()

    child = subprocess.Popen([sys.executable, "-c", "print()"])
    child.wait()
    held_by(host=socket.gethostname(), pid=child.pid)  # this host, process gone
    takes_over()
    held_by(host="node17", pid=1, job="slurm-777")  # an earlier start of this SLURM job
    takes_over()
    held_by(age_s=3600, host="node17", pid=1, job="slurm-1")  # its heartbeat stopped an hour ago
    takes_over()
    held_by(host="node17", pid=1, job="slurm-1")  # another job, alive on another host
    with pytest.raises(CheckpointError, match=r"in use by pid 1 on node17 since 08:00"):
        lock.acquire()


def test_the_lock_holder_keeps_its_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints.RunLock, "HEARTBEAT_S", 0.05)
    lock = checkpoints.RunLock(tmp_path)
    lock.acquire()
    os.utime(lock.path, (0, 0))
    deadline = time.time() + 60
    while lock.path.stat().st_mtime < time.time() - 3600 and time.time() < deadline:
        time.sleep(0.05)
    lock.release()
    assert time.time() < deadline, "the heartbeat never touched the lock"


# ---------------------------------------------------------------- 8: one directory per job
def test_every_node_of_a_job_gets_one_run_directory(monkeypatch):
    for var in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job42")
    monkeypatch.setenv("WORLD_SIZE", "16")
    assert compose_fast(hydra_node=True).hydra.run.dir == "outputs/default/torchrun-job42"
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert compose_fast(hydra_node=True).hydra.run.dir == "outputs/default/slurm-777.0"


def test_torchrun_without_a_shared_id_is_refused(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's value without --rdzv-id
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match=r"pass torchrun --rdzv-id JOB_ID"):
        OmegaConf.to_container(compose_fast(hydra_node=True).hydra.run, resolve=True)


def test_ranks_that_disagree_on_the_start_stop_naming_them(monkeypatch):
    guard = checkpoints.ResumeGuard("outputs/a", None, OmegaConf.to_container(compose_fast()))
    other = {"run_dir": "outputs/b", "ckpt_path": None}
    monkeypatch.setattr(checkpoints, "gather_objects", lambda obj: [obj, other])
    with pytest.raises(CheckpointError, match=r"rank 0: outputs/a.*rank 1: outputs/b"):
        guard.setup(None, None, "fit")
