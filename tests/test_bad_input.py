"""Bad input is named in one line before work starts, by train, evaluate and match alike."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from omegaconf import OmegaConf

from loftr.config.validate import validate
from loftr.errors import CheckpointError, ConfigError
from loftr.evaluation.testing import evaluate
from loftr.inference import match_pair
from loftr.lightning.fit import train
from loftr.model import LoFTR
from tests.helpers import ROOT
from tests.helpers.compose import compose_cfg

pytestmark = pytest.mark.usefixtures("in_repo")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    """Exit status 2 and a single `error: ...` line on stderr that matches `pattern`."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), proc.stderr[-3000:]


@pytest.fixture(scope="module")
def fast_ckpt(tmp_path_factory) -> Path:
    """A real Lightning checkpoint of a 2-step `debug=fast` run (it stores its model config)."""
    run_dir = tmp_path_factory.mktemp("fast_run")
    os.chdir(ROOT)
    train(
        compose_cfg(
            "train",
            "debug=fast",
            "logger=none",
            f"run_dir={run_dir}",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
        )
    )
    return run_dir / "checkpoints" / "last.ckpt"


# ------------------------------------------------------------------ settings out of range
@pytest.mark.parametrize(
    "override, named",
    [
        ("optim.lr=-1e-3", r"optim\.lr=-0\.001 must be a number > 0"),
        ("optim.canonical_lr=0", r"optim\.lr=0\.0 must be a number > 0"),
        ("trainer.max_epochs=-5", r"trainer\.max_epochs=-5 must be an integer >= 1, or -1"),
        ("trainer.max_steps=0", r"trainer\.max_steps=0 must be"),
        ("accumulate=0", r"accumulate=0 must be an integer >= 1"),
        ("hardware.batch_size=0", r"hardware\.batch_size=0 must be an integer >= 1"),
        ("hardware.num_workers=-1", r"hardware\.num_workers=-1 must be an integer >= 0"),
        ("trainer.limit_val_batches=1.5", r"trainer\.limit_val_batches=1\.5 must be"),
        ("checkpoint.every_n_train_steps=-2", r"checkpoint\.every_n_train_steps=-2 must be"),
        ("checkpoint.save_top_k=-3", r"checkpoint\.save_top_k=-3 must be"),
        ("model.match_coarse.thr=1.5", r"model\.match_coarse\.thr=1\.5 must be a number in"),
        ("eval.ransac_conf=1.0", r"eval\.ransac_conf=1\.0 must be a number in \(0, 1\)"),
        ("eval.pose_estimator=RANSACK", r"'RANSACK' \(eval\.pose_estimator\)"),
    ],
)
def test_setting_out_of_range_is_named(override, named):
    with pytest.raises(ConfigError, match=named):
        validate(compose_cfg("train", override))


def test_out_of_range_setting_on_the_command_line_is_one_line_and_leaves_no_folder(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("loftr.train", "optim.lr=-1", "logger=none", f"hydra.run.dir={run_dir}")
    assert_one_line_error(proc, r"^error: optim\.lr=-1 must be a number > 0$")
    assert not run_dir.exists()


def test_a_trainer_argument_typo_on_the_command_line_names_the_nearest_and_leaves_no_folder(
    tmp_path,
):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "loftr.train", "+trainer.val_chek_interval=3", "logger=none", f"hydra.run.dir={run_dir}"
    )
    named = (  # refused as the command line is composed, before Hydra makes the folder
        r"^error: \+trainer\.val_chek_interval=3: trainer has no key 'val_chek_interval'; "
        r"did you mean 'val_check_interval'\?"
    )
    assert_one_line_error(proc, named)
    assert not run_dir.exists()


# ------------------------------------------------------------------- test-only configs
@pytest.mark.parametrize("dataset", ["scannet_test_1500", "megadepth_test_1500"])
def test_a_test_set_is_refused_by_training_naming_the_evaluate_command(dataset):
    with pytest.raises(
        ConfigError, match=rf"python -m loftr\.evaluate ckpt_path=PATH dataset={dataset}"
    ):
        validate(compose_cfg("train", f"dataset={dataset}"))


def test_an_eval_experiment_is_refused_by_training_on_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("loftr.train", "experiment=eval_indoor_ds", f"hydra.run.dir={run_dir}")
    assert_one_line_error(
        proc, r"^error: dataset scannet_test_1500 is a test set .*loftr\.evaluate"
    )
    assert not run_dir.exists()


# --------------------------------------------------------------------------- GPU groups
def test_gpu_group_needs_its_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"asks for 4 GPU\(s\) .*devices=4.* this machine has 1"):
        validate(compose_cfg("train", "hardware=gpus4"))


def test_gpu_group_without_gpus_is_one_line_naming_the_group(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "loftr.train",
        "hardware=gpus4",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        env={"CUDA_VISIBLE_DEVICES": ""},  # no GPU is visible, on any machine
    )
    assert_one_line_error(proc, r"hardware=gpus4 asks for 4 GPU\(s\) .* this machine has 0")
    assert not run_dir.exists()


# ------------------------------------------------------------------- checkpoint faults
def missing(path: Path, good: Path) -> str:
    return r"does not exist"


def empty(path: Path, good: Path) -> str:
    path.write_bytes(b"")
    return r"is empty \(0 bytes\)"


def truncated(path: Path, good: Path) -> str:
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return r"is truncated"


def foreign_zip(path: Path, good: Path) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not weights")
    return r"is a zip archive but not a torch checkpoint"


def pickle_payload(path: Path, good: Path) -> str:
    content = torch.load(good, weights_only=True)
    content["payload"] = Payload(path.parent / "code_ran")
    torch.save(content, path)
    return r"pickled Python objects that a weights-only load refuses \(.*GLOBAL"


def not_a_dict(path: Path, good: Path) -> str:
    torch.save(torch.zeros(3), path)
    return r"holds a Tensor, not a dict of weights"


class Payload:
    """Unpickling this would write a file: a checkpoint that runs code when opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


FAULTS = [missing, empty, truncated, foreign_zip, pickle_payload, not_a_dict]


def entry_error(entry: str, ckpt: Path, tmp_path: Path, *model: str) -> str:
    """The CheckpointError message of `entry` (train resume, evaluate or match) on `ckpt`."""
    with pytest.raises(CheckpointError) as caught:
        if entry == "train":
            train(
                compose_cfg(
                    "train",
                    "logger=none",
                    f"run_dir={tmp_path / 'run'}",
                    f"ckpt_path={ckpt}",
                    *model,
                )
            )
        elif entry == "evaluate":
            evaluate(
                compose_cfg(
                    "evaluate",
                    "dataset=synthetic",
                    "logger=none",
                    f"ckpt_path={ckpt}",
                    f"run_dir={tmp_path / 'run'}",
                    f"cache_dir={tmp_path / 'dump'}",
                    *model,
                )
            )
        else:
            image = tmp_path / "image.png"
            cv2.imwrite(str(image), np.zeros((64, 64), np.uint8))
            match_pair(compose_cfg("match", f"ckpt_path={ckpt}", *model), str(image), str(image))
    return str(caught.value)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
def test_bad_checkpoint_is_named_alike_by_train_evaluate_and_match(tmp_path, fast_ckpt, fault):
    ckpt = tmp_path / "bad.ckpt"
    pattern = fault(ckpt, fast_ckpt)
    messages = {
        entry: entry_error(entry, ckpt, tmp_path / entry, *small)
        for entry, small in (("train", ["debug=fast"]), ("evaluate", ["debug=fast"]), ("match", []))
    }
    assert len(set(messages.values())) == 1, messages  # one reader, one message
    message = messages["train"]
    assert message.startswith(f"checkpoint {ckpt} ") and "\n" not in message
    assert re.search(pattern, message), message
    assert not (tmp_path / "code_ran").exists()
    for entry in messages:  # failed before work: nothing written, no cache
        written = [p for p in (tmp_path / entry).rglob("*") if p.is_file()]
        assert written == [] or entry == "match" and written == [tmp_path / entry / "image.png"]


def test_checkpoint_of_other_shapes_names_keys_and_shapes_alike(tmp_path, fast_ckpt, caplog):
    """The paper widths against a `debug=fast` checkpoint (its layers): same keys, other shapes."""
    caplog.set_level("INFO")
    layers = "model.coarse.layer_names=[self,cross]"
    messages = {
        entry: entry_error(entry, fast_ckpt, tmp_path / entry, layers, "model_from_ckpt=false")
        for entry in ("evaluate", "match")
    }
    # training's default is the reduced model: the paper model by name, as evaluate's default
    messages["train"] = entry_error("train", fast_ckpt, tmp_path / "train", layers, "model=loftr")
    assert len(set(messages.values())) == 1, messages
    message = messages["train"]
    assert "\n" not in message and len(message) < 600
    assert re.search(
        rf"^checkpoint {re.escape(str(fast_ckpt))} has other shapes than this LoFTR config "
        r"\(checkpoint vs model\): \[backbone\.\S+ \(32, .*\) vs \(128, .*\), ",
        message,
    ), message
    # the failed resume saved nothing, and its report says so instead of naming a last.ckpt
    assert not (tmp_path / "train" / "run" / "checkpoints").exists()
    assert "last checkpoint: (none saved)" in caplog.text


# --------------------------------------------------------------- evaluate and match typos
@pytest.mark.parametrize(
    "overrides, named",
    [
        ([], r"^error: ckpt is not set"),
        (["eval.pose_estimator=RANSACK"], r"'RANSACK' \(eval\.pose_estimator\)"),
        (["model.match_coarse.match_type=dual"], r"model\.match_coarse\.match_type='dual'"),
        (["ckpt=other.ckpt"], r"^error: ckpt= and ckpt_path= are both given"),
    ],
)
def test_evaluate_config_typo_is_one_line_and_leaves_no_folder(
    tmp_path, fast_ckpt, overrides, named
):
    run_dir = tmp_path / "eval"
    ckpt = [f"ckpt_path={fast_ckpt}"] if overrides else []
    proc = run_cli(
        "loftr.evaluate",
        *ckpt,
        "dataset=synthetic",
        "debug=fast",
        "logger=none",
        f"cache_dir={tmp_path / 'dump'}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    )
    assert_one_line_error(proc, named)
    assert not run_dir.exists() and not (tmp_path / "dump").exists()


@pytest.mark.parametrize(
    "override, named",
    [
        ("modle.match_coarse.thr=0.1", r"^error: Could not override 'modle\.match_coarse\.thr'"),
        ("model.match_coarse.thr=2", r"^error: model\.match_coarse\.thr=2 must be"),
    ],
)
def test_match_config_typo_is_one_line(tmp_path, fast_ckpt, override, named):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((64, 64), np.uint8))
    output = tmp_path / "pair.png"
    proc = run_cli(
        "loftr.match",
        str(image),
        str(image),
        f"ckpt_path={fast_ckpt}",
        f"output={output}",
        override,
    )
    assert_one_line_error(proc, named)
    assert not output.exists()


# ------------------------------------------------- model overrides on a stored model config
def test_evaluate_applies_command_line_model_overrides_to_the_stored_config(tmp_path, fast_ckpt):
    common = [
        f"ckpt_path={fast_ckpt}",
        "dataset=synthetic",
        "debug=fast",
        "logger=none",
        f"cache_dir={tmp_path / 'dump'}",
    ]
    first = run_cli("loftr.evaluate", *common, f"hydra.run.dir={tmp_path / 'e1'}")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(
        "loftr.evaluate",
        *common,
        f"hydra.run.dir={tmp_path / 'e2'}",
        "model.match_coarse.border_rm=0",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing cached predictions" not in second.stdout + second.stderr
    e1, e2 = (json.loads((tmp_path / e / "metrics.json").read_text()) for e in ("e1", "e2"))
    assert e1["protocol"]["border_rm"] == 2 and e2["protocol"]["border_rm"] == 0
    assert e1["cache"] != e2["cache"]  # the cache key holds the effective model config


def test_match_uses_the_stored_model_its_coarse_stride_and_model_overrides(tmp_path):
    model = OmegaConf.merge(
        OmegaConf.load(ROOT / "conf/model/loftr.yaml"),
        OmegaConf.load(ROOT / "conf/model/loftr_16_4.yaml"),
    )
    del model["defaults"]
    model.match_coarse.thr = 1.0  # stored: no match can pass; the command line lowers it
    matcher = LoFTR(model)
    ckpt = tmp_path / "res16.ckpt"
    torch.save(
        {
            "state_dict": {f"matcher.{k}": v for k, v in matcher.state_dict().items()},
            "hyper_parameters": {"config": {"model": OmegaConf.to_container(model)}},
        },
        ckpt,
    )
    photo = skimage.data.camera()
    cv2.imwrite(str(tmp_path / "a.png"), photo[:240, :300])
    cv2.imwrite(str(tmp_path / "b.png"), photo[6:246, 10:310])
    overrides = [f"ckpt_path={ckpt}", "resize=300", "model.match_coarse.thr=0.0"]
    data = match_pair(
        compose_cfg("match", *overrides),
        str(tmp_path / "a.png"),
        str(tmp_path / "b.png"),
        overrides=overrides,
    )
    assert tuple(data["hw0_i"]) == (240, 288)  # 300 floored to a multiple of 16, not of 8
    assert tuple(data["hw0_c"]) == (15, 18) and data["stride_c"] == 16
    assert len(data["mconf"]) > 0


# ------------------------------------------------------------- commands that paste back
@pytest.mark.slow  # a training, an evaluation and a composition in subprocesses (~70 s loaded)
def test_printed_evaluate_and_resume_commands_work_when_pasted(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_cli(
        "loftr.train",
        "debug=fast",
        "logger=none",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = trained.stdout + trained.stderr
    best = re.search(r"best checkpoint: (\S+)", report).group(1)
    assert Path(best).is_file() and not re.search(r"[=@]", Path(best).name)
    evaluate_cmd = shlex.split(re.search(r"evaluate +: (.+)", report).group(1))
    assert (
        evaluate_cmd[:3] == ["python", "-m", "loftr.evaluate"]
        and f"ckpt_path={best}" in evaluate_cmd
    )
    evaluated = subprocess.run(
        [
            sys.executable,
            *evaluate_cmd[1:],
            "logger=none",
            f"cache_dir={tmp_path / 'dump'}",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_pairs"] == 30
    resume_cmd = shlex.split(re.search(r"resume +: (.+)", report).group(1))
    assert resume_cmd[:3] == ["python", "-m", "loftr.train"]
    assert resume_cmd[-2:] == [f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    # the pasted resume command composes (its continuation is tested with the SIGKILL resume)
    composed = subprocess.run(
        [sys.executable, *resume_cmd[1:], "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert composed.returncode == 0, composed.stderr[-3000:]
    assert "ckpt_path: last" in composed.stdout and "limit_train_batches: 2" in composed.stdout
