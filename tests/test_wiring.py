"""The Trainer, the logger and the callbacks come from their config nodes' `_target_`: any of
their arguments passes through, a typo is named with the nearest argument, and what the
platform's guarantees rely on cannot be configured away; `ckpt=` is `ckpt_path=`'s old name."""

from __future__ import annotations

import json

import pytest

import loftr.lightning.schedule  # noqa: F401  (registers the LR resolvers)
from loftr.cli import checkpoint_option
from loftr.errors import ConfigError
from loftr.inference import match_config
from loftr.lightning.fit import train_command
from loftr.lightning.loggers import build_logger
from loftr.lightning.trainer import build_callbacks, build_trainer, check_lightning_config
from tests.helpers.compose import compose_cfg, compose_fast
from tests.helpers.wandb_records import offline_run_file, run_record


def test_any_trainer_argument_reaches_the_trainer(tmp_path):
    cfg = compose_fast("+trainer.val_check_interval=3", "+trainer.detect_anomaly=true")
    check_lightning_config(cfg)
    trainer = build_trainer(cfg, tmp_path, False, [])
    assert trainer.val_check_interval == 3 and trainer._detect_anomaly is True
    # the platform's settings and the interpolated ones are there too
    assert trainer.log_every_n_steps == cfg.logger.log_every_n_steps
    assert trainer.gradient_clip_val == cfg.optim.gradient_clipping
    assert trainer.gradient_clip_algorithm == "norm"
    assert trainer._accelerator_connector.use_distributed_sampler is False


def test_any_wandb_argument_reaches_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(
        "train",
        "debug=fast",
        "logger=wandb",
        "+logger.notes=from the command line",
        "+logger.job_type=probe",
        "logger.tags=[a,b]",
    )
    check_lightning_config(cfg)
    logger = build_logger(cfg, tmp_path, {"seed": 1})
    assert logger.experiment.notes == "from the command line"
    logger.experiment.finish()
    run = run_record(offline_run_file(tmp_path))
    assert run.notes == "from the command line" and run.job_type == "probe"
    assert list(run.tags) == ["a", "b"] and run.display_name == "default"


def test_an_added_callback_runs_and_the_objective_is_a_config_key(tmp_path, in_repo):
    cfg = compose_fast(
        f"run_dir={tmp_path}",
        "logger=csv",
        "+callbacks.lr_monitor._target_=lightning.pytorch.callbacks.LearningRateMonitor",
        "+callbacks.lr_monitor.logging_interval=step",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "objective=loss_c",
    )
    objective = train_command(cfg)
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "lr-AdamW" in header
    (validated,) = json.loads((tmp_path / "metrics.json").read_text())["last"]["sets"].values()
    assert objective == pytest.approx(validated["loss_c"]) and objective > 0


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (  # the schema refuses it as the command line is composed
            "+trainer.val_chek_interval=3",
            r"^\+trainer\.val_chek_interval=3: trainer has no key 'val_chek_interval'; did you "
            r"mean 'val_check_interval'\?",
        ),
        (
            "+logger.notse=x",
            r"^logger\.notse is not an argument of .*RunLogger; did you mean "
            r"logger\.notes\?$",
        ),
        (
            "logger=csv +logger.flush_log_every=5",
            r"logger\.flush_log_every .*CSVLogger; did you "
            r"mean logger\.flush_logs_every_n_steps\?",
        ),
        (
            "+callbacks.top_k.monitr=auc@5",
            r"^callbacks\.top_k\.monitr is not an argument of lightning\.pytorch\.callbacks\."
            r"ModelCheckpoint; did you mean callbacks\.top_k\.monitor",
        ),
        (
            "+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor "
            "+callbacks.lr.logging_intervl=step",
            r"did you mean callbacks\.lr\.logging_interval\?",
        ),
        (
            "+callbacks.x._target_=lightning.pytorch.callbacks.Nope",
            r"^callbacks\.x\._target_=lightning\.pytorch\.callbacks\.Nope cannot be imported: ",
        ),
        ("+callbacks.x.monitor=auc@5", r"^callbacks\.x\._target_ is not set"),
    ],
)
def test_a_key_that_is_not_an_argument_is_named_with_the_nearest(override, named):
    with pytest.raises(ConfigError, match=named):
        check_lightning_config(compose_cfg("train", "debug=fast", *override.split()))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (
            "+trainer.use_distributed_sampler=true",
            r"^trainer\.use_distributed_sampler cannot be "
            r"set: .*samplers shard",
        ),
        ("+trainer.enable_checkpointing=false", r"^trainer\.enable_checkpointing cannot be set"),
        (
            "trainer.accumulate_grad_batches=4",
            r"^trainer\.accumulate_grad_batches=4 differs from accumulate=1: set accumulate",
        ),
        ("trainer.devices=2", r"^trainer\.devices=2 differs from hardware\.devices=1"),
        ("+trainer.plugins=[]", r"^trainer\.plugins cannot be set: .*AtomicCheckpointIO"),
        ("+trainer.callbacks=[]", r"^trainer\.callbacks cannot be set: add a callback as"),
        ("logger=wandb +logger.id=abc", r"^logger\.id cannot be set: .*wandb_run_id"),
        ("logger=csv +logger.save_dir=elsewhere", r"^logger\.save_dir cannot be set"),
        (
            "+callbacks.last._target_=loftr.lightning.callbacks.LastCheckpoint",
            r"^callbacks\.last: LastCheckpoint is added by the platform \(last\.ckpt and the stop "
            r"signals rely on it\)",
        ),
        ("+callbacks.m._target_=loftr.lightning.callbacks.MetricsJson", r"MetricsJson is added"),
        ("+callbacks.r._target_=loftr.lightning.checkpoints.ResumeGuard", r"ResumeGuard is added"),
    ],
)
def test_what_the_guarantees_rely_on_cannot_be_configured(override, named):
    with pytest.raises(ConfigError, match=named):
        check_lightning_config(compose_cfg("train", "debug=fast", *override.split()))


def test_the_top_k_checkpoints_go_to_the_run_and_a_null_callback_is_left_out(tmp_path):
    (top_k,) = build_callbacks(compose_fast(), tmp_path / "checkpoints")
    assert top_k.dirpath == str(tmp_path / "checkpoints") and top_k.save_top_k == 5
    cfg = compose_fast("callbacks.top_k=null")
    check_lightning_config(cfg)
    assert build_callbacks(cfg, tmp_path) == []


def test_the_deprecated_ckpt_name_still_works_with_one_line(capsys):
    evaluate = compose_cfg("evaluate", "ckpt=old.ckpt")
    checkpoint_option(evaluate, ["ckpt=old.ckpt"])
    assert evaluate.ckpt_path == "old.ckpt" and "ckpt" not in evaluate
    assert match_config(["ckpt=old.ckpt"]).ckpt_path == "old.ckpt"
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["ckpt= is deprecated, use ckpt_path="] * 2  # one line each
    # an experiment's checkpoint is replaced by the deprecated name on the command line
    experiment = compose_cfg("evaluate", "experiment=eval_indoor_ds", "ckpt=mine.ckpt")
    checkpoint_option(experiment, ["experiment=eval_indoor_ds", "ckpt=mine.ckpt"])
    assert experiment.ckpt_path == "mine.ckpt"
    # a file's `ckpt` gives way to the command line's `ckpt_path`
    older = compose_cfg("evaluate", "ckpt=from_a_file.ckpt", "ckpt_path=given.ckpt")
    checkpoint_option(older, ["ckpt_path=given.ckpt"])
    assert older.ckpt_path == "given.ckpt" and "ckpt" not in older


def test_ckpt_and_ckpt_path_together_are_refused():
    both = ["ckpt=a.ckpt", "ckpt_path=b.ckpt"]
    with pytest.raises(ConfigError, match=r"^ckpt= and ckpt_path= are both given"):
        checkpoint_option(compose_cfg("evaluate", *both), both)
    with pytest.raises(ConfigError, match=r"^ckpt= and ckpt_path= are both given"):
        match_config(both)
