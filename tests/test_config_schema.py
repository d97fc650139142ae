"""The config's one door: bad choices and unknown keys fail at composition, the resolvers and the
schema come with `import loftr.config`, and one training run checks each room's rules once."""

from __future__ import annotations

import copy
import functools
import inspect
import json
import re
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.errors import HydraException
from lightning.fabric.connector import _PRECISION_INPUT_STR
from omegaconf import OmegaConf

import loftr.data.datamodule
import loftr.lightning.schedule
import loftr.losses
import loftr.model.config
from loftr.config import check_additions, plain, schema
from loftr.config import validate as validate_module
from loftr.errors import ConfigError
from loftr.lightning.checkpoints import config_changes
from tests.helpers import ROOT
from tests.helpers.compose import compose_cfg, compose_fast

BAD_CHOICES = [
    ("model.coarse.attention=fulll", "model.coarse.attention", "linear, full"),
    ("optim.scheduler=Cosine", "optim.scheduler", "MultiStepLR, CosineAnnealing, ExponentialLR"),
    ("optim.optimizer=adamw2", "optim.optimizer", "adamw, adam"),
    ("model.match_coarse.match_type=softmax", "model.match_coarse.match_type", "dual_softmax"),
    ("model.loss.coarse_type=focall", "model.loss.coarse_type", "focal, cross_entropy"),
    ("precision=16", "precision", "bf16-mixed"),
]


@pytest.mark.parametrize(
    ("override", "key", "allowed"), BAD_CHOICES, ids=[b[1] for b in BAD_CHOICES]
)
def test_a_bad_choice_fails_at_composition_naming_the_key_and_the_choices(override, key, allowed):
    with pytest.raises(HydraException) as err:
        compose_cfg("train", override)
    message = f"{err.value} {err.value.__cause__}"  # Hydra's line, then OmegaConf's
    assert key in message and allowed in message


def test_an_unknown_key_fails_at_composition():
    with pytest.raises(HydraException, match="Could not override 'seedd'") as err:
        compose_cfg("train", "seedd=1")
    assert "Key 'seedd' not in 'TrainConf'" in str(err.value.__cause__)
    with pytest.raises(ConfigError, match="the config has no key 'trainr'; did you mean 'trainer'"):
        compose_cfg("train", "+trainr.max_epochs=1")
    with pytest.raises(ConfigError, match="model.coarse has no key 'atention'"):
        compose_cfg("evaluate", "+model.coarse.atention=full")


def test_a_typo_in_a_trainer_argument_fails_and_any_trainer_argument_composes():
    with pytest.raises(ConfigError, match="trainer has no key 'val_chek_interval'.*'val_check"):
        compose_cfg("train", "+trainer.val_chek_interval=100")
    cfg = compose_cfg("train", "+trainer.val_check_interval=100", "+trainer.min_epochs=2")
    assert cfg.trainer.val_check_interval == 100 and cfg.trainer.min_epochs == 2
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.trainer.max_consecutive_nonfinite == 10 and cfg.trainer.max_skipped_pairs == 100


def test_open_nodes_take_new_keys():
    cfg = compose_cfg(
        "train",
        "+callbacks.lr_monitor._target_=lightning.pytorch.callbacks.LearningRateMonitor",
        "+logger.anonymous=true",
    )
    assert cfg.callbacks.lr_monitor._target_.endswith("LearningRateMonitor")
    assert cfg.logger.anonymous is True
    check_additions("train", ["+experiment=indoor_ds", "+hydra.job.chdir=true"])  # not keys


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            ["model.coarse.attention=fulll"],
            r"^error: model\.coarse\.attention='fulll': Invalid value 'fulll', expected one of "
            r"\[linear, full\]$",
        ),
        (
            ["+trainer.val_chek_interval=100"],
            r"^error: \+trainer\.val_chek_interval=100: trainer has no key 'val_chek_interval'; "
            r"did you mean 'val_check_interval'\?",
        ),
        (
            ["logger=tensorboard"],
            r"^error: .*Could not find 'logger/tensorboard' Available options in 'logger': "
            r"csv none wandb",
        ),
    ],
)
def test_cfg_job_fails_on_the_command_line_in_one_line(args, named):
    proc = subprocess.run(
        [sys.executable, "-m", "loftr.train", *args, "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and not proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(named, errors[0]), proc.stderr


def test_the_trainer_schema_has_every_trainer_argument():
    parameters = list(inspect.signature(pl.Trainer.__init__).parameters)[1:]
    assert list(schema.TRAINER_ARGUMENTS) == parameters
    names = [f.name for f in fields(schema.TrainerConf)]
    assert names == ["_target_", *parameters, "max_consecutive_nonfinite", "max_skipped_pairs"]


def test_the_precision_choices_are_lightnings():
    assert [p.value for p in schema.Precision] == list(typing.get_args(_PRECISION_INPUT_STR))


def test_a_choice_reads_as_its_string():
    cfg = compose_cfg("train")
    attention = cfg.model.coarse.attention
    assert attention == "linear" and attention in ("linear", "full")
    assert str(attention) == f"{attention}" == "linear" and {"linear": 1}[attention] == 1
    assert json.dumps({"a": attention}) == '{"a": "linear"}'
    out = plain(cfg)
    assert type(out["model"]["coarse"]["attention"]) is str
    assert type(out["precision"]) is str and out["optim"]["lr"] == pytest.approx(1e-3)


def test_the_package_registers_resolvers_and_schemas_without_torch():
    code = (
        "import sys, loftr.config\n"
        "from omegaconf import OmegaConf\n"
        "from hydra.core.config_store import ConfigStore\n"
        "assert all(OmegaConf.has_resolver(f'loftr.{n}') for n in ('scaled_lr', 'run_id'))\n"
        "assert {'train_schema.yaml', 'evaluate_schema.yaml', 'match_schema.yaml'} <= "
        "set(ConfigStore.instance().list(''))\n"
        "assert not {'torch', 'lightning'} & set(sys.modules), 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_validate_takes_only_a_composed_config():
    with pytest.raises(ConfigError, match="composed from conf/train.yaml"):
        validate_module.validate(OmegaConf.create({"model": {}}))


def _counting(monkeypatch, module, name: str, calls: dict[str, int]) -> None:
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls[name] += 1
        return original(*args, **kwargs)

    calls[name] = 0
    monkeypatch.setattr(module, name, counted)


@pytest.mark.usefixtures("in_repo")
def test_one_training_run_checks_each_rule_once_and_writes_plain_checkpoints(
    tmp_path: Path, monkeypatch
):
    from loftr.lightning import fit, trainer

    calls: dict[str, int] = {}
    for module, name in (
        (loftr.model.config, "validate_model_config"),
        (loftr.model.config, "validate_variant_config"),
        (loftr.losses, "check_loss_config"),
        (loftr.lightning.schedule, "check_optim_config"),
        (loftr.data.datamodule, "check_dataset_config"),
        (trainer, "check_lightning_config"),
        (fit, "validate"),
    ):
        _counting(monkeypatch, module, name, calls)
    fit.train(
        compose_fast(
            f"run_dir={tmp_path}", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"
        )
    )
    assert calls == dict.fromkeys(calls, 1)

    content = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    config = content["hyper_parameters"]["config"]
    assert config["model"]["coarse"]["attention"] == "linear"

    def leaves(node):
        if isinstance(node, dict):
            assert all(type(k) is str for k in node)
            for value in node.values():
                yield from leaves(value)
        elif isinstance(node, list):
            for value in node:
                yield from leaves(value)
        else:
            yield node

    assert {type(v) for v in leaves(config)} <= {str, int, float, bool, type(None)}


def test_a_checkpoint_from_before_the_schema_resumes_without_reported_changes():
    """Its config lacks the schema's optional keys (null now): they are no change; a real one is."""
    current = plain(compose_fast())
    saved = copy.deepcopy(current)
    optional = ("model.coarse.layer_type", "model.coarse.pos_encoding", "model.fine.layer_type")
    for dotted in (*optional, "dataset.test_only"):
        *parents, leaf = dotted.split(".")
        node = functools.reduce(dict.__getitem__, parents, saved)
        assert node.pop(leaf) is None
    assert config_changes(saved, current) == []
    # checkpointing changes how a step is computed, not what: absent or switched, no change
    assert saved["model"].pop("checkpoint_activations") is False
    assert config_changes(saved, current) == []
    current["model"]["checkpoint_activations"] = True
    assert config_changes(saved, current) == []
    saved["model"]["coarse"]["attention"] = "full"
    assert config_changes(saved, current) == ["model.coarse.attention: 'full' -> 'linear'"]
