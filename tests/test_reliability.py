"""Faults, bad input and interrupted runs: a clear answer, nothing lost, nothing half-written."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

import loftr.config  # noqa: F401  (registers the schemas and resolvers)
from loftr.errors import CheckpointError, ConfigError, DataError, NonFiniteError
from loftr.lightning import fit
from loftr.lightning import trainer as lightning_trainer
from loftr.lightning.callbacks import LastCheckpoint
from loftr.lightning.fit import report_stop, train
from loftr.lightning.module import LoFTRModule
from loftr.losses import LoFTRLoss
from tests.helpers import ROOT
from tests.helpers.compose import compose_fast
from tests.helpers.datasets import SCENE, scannet_copy
from tests.helpers.runs import (
    SINGLE_THREAD,
    Output,
    assert_nothing_half_written,
    train_command,
    wait_for_last_checkpoint,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("in_repo")


# ------------------------------------------------------------------------- interruptions
TRAIN = train_command(
    "trainer.limit_train_batches=40",
    "trainer.limit_val_batches=1",
    "checkpoint.every_n_train_steps=2",
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_signal_saves_the_step_it_stopped_at_and_exits_cleanly(tmp_path, signum):
    proc = subprocess.Popen(
        [*TRAIN, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    last = wait_for_last_checkpoint(proc, tmp_path)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err
    stopped_at = int(re.search(r"stopped by SIG\w+ after step (\d+)", out).group(1))
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == stopped_at < 40
    assert ckpt["LoFTRDataModule"]["train_sampler"]["consumed"] == stopped_at  # batch 1
    # no validation after the stop, so no top-k entry for the unfinished epoch
    assert not list((tmp_path / "checkpoints").glob("epoch*"))
    assert not (tmp_path / "metrics.json").exists()
    assert_nothing_half_written(tmp_path)


VAL_BATCHES = 6
VALIDATING = train_command(
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    f"trainer.limit_val_batches={VAL_BATCHES}",
    "trainer.enable_progress_bar=true",  # the test reads the validation batches off the bar
)


def validation_batches_done(output: Output, since: int = 0) -> int:
    """Finished batches of the validation under way, as the progress bar shows them."""
    bar = rf"Validation DataLoader 0:[^|]*\|[^|]*\| (\d+)/{VAL_BATCHES}"
    done = re.findall(bar, output.text("stdout")[since:])
    return int(done[-1]) if done else 0


def stop_in_validation(run_dir: Path, signum: int, after_metrics: bool, *extra: str) -> str:
    """Start (or resume) the run, send `signum` once a validation batch is done (the second
    validation of the run when `after_metrics`: metrics.json marks the first's end); return the
    run's stdout."""
    proc = subprocess.Popen(
        [*VALIDATING, f"hydra.run.dir={run_dir}", *extra],
        cwd=ROOT,
        env=SINGLE_THREAD,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    output, since = Output(proc), 0
    if after_metrics:
        assert wait_until(proc, (run_dir / "metrics.json").exists)
        since = len(output.text("stdout"))
    assert wait_until(proc, lambda: validation_batches_done(output, since) >= 1)
    seen = validation_batches_done(output, since)
    proc.send_signal(signum)
    proc.wait(timeout=300)
    out, err = output.join()
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err
    # the batch under way when the signal came was the last (the bar shows finished ones)
    assert validation_batches_done(output, since) <= seen + 1 < VAL_BATCHES
    return out


def test_signal_in_validation_stops_after_that_batch_and_the_run_resumes_exactly(tmp_path):
    reference, run_dir = tmp_path / "reference", tmp_path / "stopped"
    subprocess.run(
        [*VALIDATING, f"hydra.run.dir={reference}"],
        cwd=ROOT,
        env=SINGLE_THREAD,
        check=True,
        capture_output=True,
    )
    ckpt_dir = run_dir / "checkpoints"
    # epoch 0's validation: no top-k entry, no metrics, nothing logged for it
    out = stop_in_validation(run_dir, signal.SIGTERM, after_metrics=False)
    assert "stopped by SIGTERM after step 2, during validation" in out
    assert not list(ckpt_dir.glob("epoch*")), "a top-k entry for an unfinished validation"
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "figures").exists()
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 2
    # resumed: epoch 0 validated again in full, then the final validation stopped by SIGUSR2
    out = stop_in_validation(run_dir, signal.SIGUSR2, after_metrics=True)
    assert "stopped by SIGUSR2 after step 4, during validation" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["last"]["epoch"] == 0
    assert metrics["last"]["sets"]["synthetic_test"]["n_pairs"] == VAL_BATCHES
    assert [p.name.split("-")[0] for p in ckpt_dir.glob("epoch*")] == ["epoch0"]
    # resumed again: the final validation redone, and the run equals the uninterrupted one
    subprocess.run(
        [*VALIDATING, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=SINGLE_THREAD,
        check=True,
        capture_output=True,
    )
    ref_ckpt, ckpt = (
        torch.load(d / "checkpoints/last.ckpt", weights_only=True) for d in (reference, run_dir)
    )
    assert ckpt["global_step"] == ref_ckpt["global_step"] == 4
    for key, value in ref_ckpt["state_dict"].items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["last"] == ref_metrics["last"] and metrics["best"] == ref_metrics["best"]
    names = sorted(p.name for p in ckpt_dir.glob("epoch*"))
    assert names == sorted(p.name for p in (reference / "checkpoints").glob("epoch*"))
    assert_nothing_half_written(run_dir)


def test_ddp_ranks_agree_on_a_stop_in_validation(tmp_path):
    """SIGTERM to rank 0 alone (rank 1 is its child process): both ranks stop after the same
    validation batch and save together; neither waits for the other."""
    out = stop_in_validation(tmp_path, signal.SIGTERM, False, "hardware=cpu2")
    assert "stopped by SIGTERM after step 2, during validation" in out
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 and len(ckpt["rng_states"]) == 2  # both ranks saved
    assert not list((tmp_path / "checkpoints").glob("epoch*"))

    def rank_1_running() -> bool:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if str(tmp_path) in cmdline.read_text():
                    return True
            except OSError:  # the process ended meanwhile
                pass
        return False

    deadline = time.time() + 60
    while rank_1_running() and time.time() < deadline:
        time.sleep(0.2)
    assert not rank_1_running()


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_a_requeue_signal_goes_on_to_the_handler_installed_before_training(signum, capsys):
    """submitit's SIGUSR1/2 handler requeues the job: it runs once the run has saved and said
    where it stopped. Its SIGTERM handler only logs, so a SIGTERM does not go on."""
    calls: list[int] = []
    previous = signal.signal(signum, lambda received, frame: calls.append(received))
    result = {"stopped_by": signum.name, "stopped_in": "training"}
    try:
        with pytest.raises(SystemExit) as stop:
            report_stop({**result, "trainer": SimpleNamespace(global_step=7)}, "runs/x")
    finally:
        signal.signal(signum, previous)
    assert calls == ([signum] if signum == signal.SIGUSR2 else [])
    assert stop.value.code == 128 + signum
    assert f"stopped by {signum.name} after step 7, during training" in capsys.readouterr().out


def test_two_quick_ctrl_c_are_two_even_inside_one_c_call(tmp_path):
    """Both SIGINTs arrive while the main thread is in one C call, so Python calls the handler
    once; the second still stops at once (the wakeup pipe counted two deliveries)."""
    last = LastCheckpoint(tmp_path, every_n_train_steps=0)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job, else Python's
    sender = subprocess.Popen(
        ["sh", "-c", f"read go; kill -INT {os.getpid()}; sleep 0.1; kill -INT {os.getpid()}"],
        stdin=subprocess.PIPE,
    )
    last._install_handlers(SimpleNamespace(received_sigterm=False))
    try:
        with pytest.raises(SIGTERMException):
            sender.stdin.write(b"go\n")
            sender.stdin.close()
            sum(range(10**8))  # one C call of a second or more: no handler runs inside it
            sender.wait()
    finally:
        last._restore_handlers()
        sender.wait()
    assert (last.stopped_by, last.stopped_in) == ("SIGINT", "at once")
    assert signal.getsignal(signal.SIGINT) is before


def test_crash_while_writing_last_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def crash_on_second_checkpoint(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-4 save: half the bytes reach the disk, then the crash
            data = io.BytesIO()
            real_save(obj, data, *args, **kwargs)
            f.write(data.getvalue()[: len(data.getvalue()) // 2])
            raise OSError("simulated crash while writing")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_on_second_checkpoint)
    cfg = compose_fast(
        f"run_dir={tmp_path}", "trainer.limit_train_batches=6", "checkpoint.every_n_train_steps=2"
    )
    with pytest.raises(OSError, match="simulated crash"):
        train(cfg)
    monkeypatch.undo()
    assert torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 2
    assert_nothing_half_written(tmp_path)
    result = train(
        compose_fast(
            f"run_dir={tmp_path}",
            "trainer.limit_train_batches=6",
            "checkpoint.every_n_train_steps=2",
            "ckpt_path=last",
        )
    )
    assert result["trainer"].global_step == 6


# ---------------------------------------------------------------------- non-finite steps
def _nan_loss_on_calls(monkeypatch, calls: set[int]) -> None:
    real_forward, counter = LoFTRLoss.forward, {"n": 0}

    def forward(self, data):
        out = real_forward(self, data)
        if self.training:
            counter["n"] += 1
            if counter["n"] in calls or -1 in calls:
                data["loss"] = data["loss"] * float("nan")
        return out

    monkeypatch.setattr(LoFTRLoss, "forward", forward)


def test_a_nan_loss_is_skipped_counted_and_training_goes_on(tmp_path, monkeypatch):
    _nan_loss_on_calls(monkeypatch, {2})
    result = train(compose_fast(f"run_dir={tmp_path}", "logger=csv"))
    module, trainer = result["module"], result["trainer"]
    assert module.skipped_steps == 1
    # Lightning counts the batch as a step; the optimizer itself stepped 3 times of 4
    assert trainer.global_step == 4
    adam_steps = {int(st["step"]) for st in trainer.optimizers[0].state.values()}
    assert adam_steps == {3}
    assert all(torch.isfinite(p).all() for p in module.parameters())
    logged = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "train/skipped_steps" in logged


def test_too_many_non_finite_steps_stop_the_run_naming_the_pairs(tmp_path, monkeypatch):
    _nan_loss_on_calls(monkeypatch, {-1})
    with pytest.raises(NonFiniteError, match=r"3 consecutive .*pairs .*color/\d+\.jpg"):
        train(compose_fast(f"run_dir={tmp_path}", "trainer.max_consecutive_nonfinite=3"))
    assert_nothing_half_written(tmp_path)


def _fp16_with_grad_scaler(monkeypatch, init_scale: float) -> list[str]:
    """Train through `MixedPrecision("16-mixed")` and its GradScaler on the CPU (where Lightning
    would turn `precision=16-mixed` into bf16); returns the config overrides that go with it."""
    plugin = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=init_scale))
    monkeypatch.setattr(lightning_trainer, "cluster_plugins", lambda: [plugin])
    return ["precision=null"]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_each_precision_plugin_steps_and_skips_a_nan_loss(tmp_path, monkeypatch, precision):
    """The precision plugin's own step path: the weights move, AdamW's moments fill, the NaN
    step is skipped and counted, and a GradScaler neither steps nor backs off on it."""
    overrides = [f"precision={precision}"]
    if precision == "16-mixed":  # scale 1: no fp16 overflow, every finite step goes through
        overrides = _fp16_with_grad_scaler(monkeypatch, init_scale=1.0)
    initial: dict[str, torch.Tensor] = {}

    def recording_module(*args, **kwargs):
        module = LoFTRModule(*args, **kwargs)
        initial.update({n: p.detach().clone() for n, p in module.named_parameters()})
        return module

    monkeypatch.setattr(fit, "LoFTRModule", recording_module)
    _nan_loss_on_calls(monkeypatch, {2})
    result = train(
        compose_fast(f"run_dir={tmp_path}", "logger=csv", "trainer.limit_val_batches=1", *overrides)
    )
    module, trainer = result["module"], result["trainer"]
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    assert (scaler is not None) == (precision == "16-mixed")
    assert module.skipped_steps == 1 and module.scaler_skipped_steps == 0
    state = trainer.optimizers[0].state
    assert len(state) == len(initial)
    for name, param in module.named_parameters():
        st = state[param]
        assert int(st["step"]) == 3, name  # 4 batches, the NaN one skipped
        assert torch.isfinite(param).all() and not torch.equal(param, initial[name]), name
        assert torch.isfinite(st["exp_avg"]).all() and st["exp_avg_sq"].sum() > 0, name
    if scaler is not None:
        assert scaler.get_scale() == 1.0  # no backoff: the NaN step never reached the scaler
    logged = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "train/skipped_steps" in logged
    assert ("train/scaler_skipped_steps" in logged) == (scaler is not None)


def test_grad_scaler_overflows_are_counted_apart_and_do_not_stop_the_run(tmp_path, monkeypatch):
    """From its default scale 2^16 the scaler skips the first fp16 steps (overflow) and backs
    off: its calibration, counted apart, not towards `max_consecutive_nonfinite`."""
    overrides = _fp16_with_grad_scaler(monkeypatch, init_scale=2.0**16)
    _nan_loss_on_calls(monkeypatch, {2})
    result = train(
        compose_fast(
            f"run_dir={tmp_path}",
            "trainer.max_consecutive_nonfinite=2",
            "trainer.limit_val_batches=1",
            *overrides,
        )
    )
    module, trainer = result["module"], result["trainer"]
    overflows = module.scaler_skipped_steps
    assert module.skipped_steps == 1 and overflows >= 2  # with the NaN: over the cap of 2
    assert trainer.precision_plugin.scaler.get_scale() == 2.0 ** (16 - overflows)
    stepped = 4 - 1 - overflows  # of 4 batches: the NaN one and the overflows skipped
    assert all(int(st["step"]) == stepped for st in trainer.optimizers[0].state.values())


def test_ddp_ranks_skip_together_when_one_rank_has_a_nan_loss(tmp_path):
    """Two processes over gloo (hardware=cpu2): rank 1's second loss is NaN, its gradients are
    finite; both ranks skip that step, so their weights stay identical."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "helpers" / "nan_loss_train.py"),
            "hardware=cpu2",
            "debug=fast",
            "logger=csv",
            "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NAN_LOSS_RANK": "1", "NAN_LOSS_CALL": "2"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads((tmp_path / "metrics.json").read_text())["per_rank"]
    assert len(ranks) == 2 and ranks[0]["parameter_checksum"] == ranks[1]["parameter_checksum"]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4  # 4 batches per rank
    steps = {int(st["step"]) for st in ckpt["optimizer_states"][0]["state"].values()}
    assert steps == {3}  # rank 0's optimizer skipped the step of rank 1's NaN too
    with open(tmp_path / "csv" / "metrics.csv") as f:
        logged = [r["train/skipped_steps"] for r in csv.DictReader(f)]
    assert max(float(v) for v in logged if v) == 1  # counted on rank 0 too, which logs


# ------------------------------------------------------------------------ GPU generators
def _fast_module() -> LoFTRModule:
    return LoFTRModule(OmegaConf.to_container(compose_fast(), resolve=True))


def _resume(module: LoFTRModule, checkpoint: dict, path: Path) -> None:
    """Write `checkpoint` to `path`, load it into `module`, and start the first training batch
    (where the generators are restored)."""
    torch.save(checkpoint, path)
    module.on_load_checkpoint(torch.load(path, weights_only=True))
    module.on_train_batch_start(None, 0)


@pytest.mark.parametrize("visible_at_resume", [2, 1])
def test_checkpoint_restores_every_cuda_generator(tmp_path, monkeypatch, caplog, visible_at_resume):
    """CUDA faked with two devices (a CPU machine): their generator states go into the
    checkpoint and come back on resume; on fewer devices the common ones, with a warning."""
    saving, resumed = _fast_module(), _fast_module()
    generators = {0: torch.arange(8, dtype=torch.uint8), 1: torch.arange(8, 16, dtype=torch.uint8)}
    visible = {"n": 2}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible["n"])
    monkeypatch.setattr(
        torch.cuda, "get_rng_state_all", lambda: [generators[i].clone() for i in range(2)]
    )
    monkeypatch.setattr(
        torch.cuda, "set_rng_state_all", lambda states: generators.update(enumerate(states))
    )
    checkpoint = {"state_dict": saving.state_dict()}
    saving.on_save_checkpoint(checkpoint)
    saved = {i: g.clone() for i, g in generators.items()}
    for g in generators.values():  # the interrupted run drew on after saving
        g += 100
    visible["n"] = visible_at_resume
    with caplog.at_level(logging.WARNING, logger="loftr.lightning.module"):
        _resume(resumed, checkpoint, tmp_path / "last.ckpt")
    for i in range(2):
        assert torch.equal(generators[i], saved[i]) == (i < visible_at_resume), i
    warned = "CUDA generators of 2 device(s), this process sees 1" in caplog.text
    assert warned == (visible_at_resume == 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_resume_exactly_on_every_device(tmp_path):
    """The draws after a resume are those the interrupted run made next, on each GPU."""
    saving = _fast_module()
    checkpoint = {"state_dict": saving.state_dict()}
    saving.on_save_checkpoint(checkpoint)
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    expected = [torch.randint(1 << 30, (16,), device=d).cpu() for d in devices]
    _resume(_fast_module(), checkpoint, tmp_path / "last.ckpt")
    drawn = [torch.randint(1 << 30, (16,), device=d).cpu() for d in devices]
    assert all(torch.equal(a, b) for a, b in zip(expected, drawn, strict=True))


# ----------------------------------------------------------------------------- bad input
def run_on(tmp_path: Path, paths: dict[str, Path], *extra: str) -> Path:
    run_dir = tmp_path / "run"
    cfg = compose_fast(
        f"run_dir={run_dir}",
        f"dataset.train_data_root={paths['root']}",
        f"dataset.train_npz_root={paths['npz']}",
        f"dataset.train_list_path={paths['list']}",
        *extra,
    )
    train(cfg)
    return run_dir


def _frames(root: Path, kind: str) -> list[Path]:
    return sorted((root / SCENE / kind).iterdir())


def break_missing_root(paths):
    paths["root"] = paths["root"].parent / "not_there"
    return r"not_there does not exist"


def break_broken_symlink(paths):
    link = paths["root"].parent / "dangling"
    os.symlink(paths["root"].parent / "gone", link)
    paths["root"] = link
    return r"dangling is a broken symlink"


def break_missing_image(paths):
    for f in _frames(paths["root"], "color"):
        f.unlink()
    return rf"image .*{SCENE}/color/\d+\.jpg does not exist"


def break_corrupt_image(paths):
    for f in _frames(paths["root"], "color"):
        f.write_bytes(b"\xff\xd8 not a jpeg")
    return rf"image .*{SCENE}/color/\d+\.jpg is corrupt"


def break_depth_size(paths):
    for f in _frames(paths["root"], "depth"):
        cv2.imwrite(str(f), np.full((100, 120), 1500, np.uint16))
    return rf"depth map .*{SCENE}/depth/\d+\.png is 120x100"


def break_no_depth(paths):
    for f in _frames(paths["root"], "depth"):
        f.unlink()
    return rf"{SCENE}/depth/\d+\.png does not exist"


def break_empty_index(paths):
    np.savez(
        paths["npz"] / f"{SCENE}.npz",
        name=np.zeros((0, 4), np.uint16),
        score=np.zeros(0, np.float16),
    )
    return r"every scene listed in .*train_list.txt is empty"


def break_malformed_index(paths):
    np.savez(paths["npz"] / f"{SCENE}.npz", pairs=np.zeros((3, 4), np.uint16))
    return rf"{SCENE}.npz.*name"


def break_list_names_missing_scene(paths):
    paths["list"].write_text(f"{SCENE}.npz\nscene0999_00.npz\n")
    return r"scene0999_00"


BAD_DATA = [
    break_missing_root,
    break_broken_symlink,
    break_missing_image,
    break_corrupt_image,
    break_depth_size,
    break_no_depth,
    break_empty_index,
    break_malformed_index,
    break_list_names_missing_scene,
]


@pytest.mark.parametrize("breaker", BAD_DATA, ids=lambda f: f.__name__[len("break_") :])
def test_bad_data_names_the_culprit_and_leaves_nothing_half_written(tmp_path, breaker):
    paths = scannet_copy(tmp_path)
    message = breaker(paths)
    with pytest.raises(DataError, match=message):
        run_on(tmp_path, paths)
    run_dir = tmp_path / "run"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()
    assert_nothing_half_written(run_dir)


def test_pickle_with_disallowed_contents_is_refused_before_running(tmp_path):
    from loftr.data.scene_info import load_scene_info

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    bad = tmp_path / "0015_0.1_0.3.npz"
    bad.write_bytes(pickle.dumps({"image_paths": Payload()}))
    with pytest.raises(DataError, match=r"0015_0.1_0.3.npz.*write_text"):
        load_scene_info(bad)
    assert not marker.exists()


@pytest.fixture(scope="module")
def fast_checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ds_run")
    cfg = compose_fast(f"run_dir={run_dir}", "trainer.limit_train_batches=2")
    os.chdir(ROOT)
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


def test_truncated_checkpoint_is_named(tmp_path, fast_checkpoint):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(fast_checkpoint.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match=r"cut.ckpt is truncated"):
        train(compose_fast(f"run_dir={tmp_path / 'run'}", f"ckpt_path={cut}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path, fast_checkpoint):
    with pytest.raises(CheckpointError, match=r"coarse_matching\.bin_score"):
        train(
            compose_fast(
                f"run_dir={tmp_path / 'run'}", f"ckpt_path={fast_checkpoint}", "matcher=ot"
            )
        )
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_image_size_not_divisible_by_8_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset\.scannet_img_resize=\[322, 240\]"):
        train(compose_fast(f"run_dir={tmp_path}", "dataset.scannet_img_resize=[322,240]"))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_unknown_config_key_is_named():
    proc = subprocess.run(
        [sys.executable, "-m", "loftr.train", "optim.learning_rate=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
