"""Tests of the LR scaling, warm-up and schedule (docs/original.md#lr-scaling, #optimizer-schedule)
and of the optim configs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from loftr.config.resolvers import register_resolvers
from loftr.errors import ConfigError
from loftr.lightning.schedule import (
    build_optimizer,
    lr_at,
    scaled_learning_rate,
    scaled_warmup_steps,
    scheduler_factor,
    set_learning_rate,
    true_batch_size,
    warmup_lr,
)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
INDOOR = {"canonical_lr": 6e-3, "canonical_warmup_steps": 4800, "warmup_ratio": 0.0}
OUTDOOR = {"canonical_lr": 8e-3, "canonical_warmup_steps": 1875, "warmup_ratio": 0.1}


# -------------------------------------------------------------------------
# docs/original.md#lr-scaling table

# (recipe, devices, num_nodes, batch_size, accumulate) -> (lr, warm-up steps, warm-up start lr)
SPEC_TABLE = [
    (INDOOR, 64, 1, 1, 1, 6e-3, 4800, 0.0),  # indoor canonical (64 x 1)
    (INDOOR, 4, 1, 1, 1, 3.75e-4, 76_800, 0.0),  # indoor script (4 x 1)
    (OUTDOOR, 64, 1, 1, 1, 8e-3, 1875, 8e-4),  # outdoor canonical
    (OUTDOOR, 4, 1, 1, 1, 5e-4, 30_000, 5e-5),  # outdoor script
    (INDOOR, 4, 1, 1, 16, 6e-3, 4800, 0.0),  # 4 GPUs x accumulate 16 = 64
    (OUTDOOR, 8, 4, 2, 1, 8e-3, 1875, 8e-4),  # 8 GPUs x 4 nodes x batch 2 = 64
    (OUTDOOR, [0, 1], 1, 2, 4, 2e-3, 7500, 2e-4),  # a list of 2 device ids x 2 x 4 = 16
]


@pytest.mark.parametrize(
    ("recipe", "dev", "nodes", "bs", "acc", "lr", "steps", "start"), SPEC_TABLE
)
def test_spec_lr_table(
    recipe: dict[str, float],
    dev: Any,
    nodes: int,
    bs: int,
    acc: int,
    lr: float,
    steps: int,
    start: float,
) -> None:
    true_bs = true_batch_size(dev, nodes, bs, acc)
    assert scaled_learning_rate(recipe["canonical_lr"], true_bs) == lr
    assert scaled_warmup_steps(recipe["canonical_warmup_steps"], true_bs) == steps
    assert warmup_lr(0, lr, steps, recipe["warmup_ratio"]) == pytest.approx(start, rel=1e-15)


def test_warmup_steps_are_floored() -> None:
    # 7 GPUs: 1875 / (7 / 64) = 17142.86 -> 17142; 5 GPUs: 4800 / (5 / 64) = 61440.
    assert scaled_warmup_steps(1875, 7) == 17142
    assert scaled_warmup_steps(4800, 5) == 61440


def test_true_batch_size_rejects_uncountable_values() -> None:
    with pytest.raises(ConfigError, match="hardware.devices='auto'"):
        true_batch_size("auto", 1, 1, 1)
    with pytest.raises(ConfigError, match="hardware.devices=-1"):
        true_batch_size(-1, 1, 1, 1)
    with pytest.raises(ConfigError, match="accumulate=0"):
        true_batch_size(4, 1, 1, 0)
    assert true_batch_size("0,1,2", 2, 1, 1) == 6


# -------------------------------------------------------------------------- warm-up, lr_at


def test_warmup_linear_and_constant() -> None:
    # base = 0.1 * 8e-3 = 8e-4; halfway: 8e-4 + 0.5 * 7.2e-3 = 4.4e-3.
    assert warmup_lr(0, 8e-3, 1000, 0.1) == pytest.approx(8e-4)
    assert warmup_lr(500, 8e-3, 1000, 0.1) == pytest.approx(4.4e-3)
    assert warmup_lr(999, 8e-3, 1000, 0.1) == pytest.approx(8e-3 - 7.2e-6)
    assert warmup_lr(0, 8e-3, 1000, 0.1, "constant") == 8e-3
    with pytest.raises(ConfigError, match="optim.warmup_type='cosine'"):
        warmup_lr(0, 8e-3, 1000, 0.1, "cosine")


def _optim(**overrides: Any) -> dict[str, Any]:
    cfg = {
        "lr": 6e-3,
        "warmup_steps": 4800,
        "warmup_type": "linear",
        "warmup_ratio": 0.0,
        "scheduler": "MultiStepLR",
        "scheduler_interval": "epoch",
        "milestones": [3, 6, 9, 12, 17, 20, 23, 26, 29],
        "gamma": 0.5,
        "cosa_tmax": 30,
        "elr_gamma": 0.999992,
    }
    cfg.update(overrides)
    return cfg


def test_lr_at_indoor_canonical_follows_warmup_then_milestones() -> None:
    cfg = _optim()
    last_warmup = 6e-3 * 4799 / 4800  # docs/original.md#optimizer-schedule: the lr stays at the
    # last warm-up value
    assert lr_at(0, 0, cfg) == 0.0  # ratio 0: the first step has lr 0
    assert lr_at(2400, 0, cfg) == pytest.approx(3e-3)
    assert lr_at(4799, 1, cfg) == pytest.approx(last_warmup, rel=1e-15)
    assert lr_at(4800, 1, cfg) == lr_at(4799, 1, cfg)  # not reset to 6e-3
    assert lr_at(9000, 2, cfg) == lr_at(4799, 1, cfg)
    assert lr_at(15000, 3, cfg) == lr_at(4799, 1, cfg) / 2  # halved at the start of epoch 3
    assert lr_at(30000, 6, cfg) == lr_at(4799, 1, cfg) / 4
    assert lr_at(140000, 29, cfg) == lr_at(4799, 1, cfg) / 512  # 9 milestones: lr / 2^9


def test_lr_at_constant_warmup_is_plain_multistep() -> None:
    cfg = _optim(warmup_type="constant")
    assert lr_at(0, 0, cfg) == 6e-3
    assert lr_at(10, 2, cfg) == 6e-3
    assert lr_at(10, 3, cfg) == 3e-3
    assert lr_at(10, 12, cfg) == 6e-3 / 16


def _torch_reference(
    cfg: dict[str, Any], epochs: int, steps_per_epoch: int
) -> list[tuple[int, int, float]]:
    """The original's loop on torch objects: warm-up overwrite in optimizer_step + a scheduler.

    Returns (global_step, epoch, lr used by that optimizer step) for every step.
    """
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=cfg["lr"], weight_decay=0.1)
    if cfg["scheduler"] == "MultiStepLR":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg["milestones"], cfg["gamma"])
    elif cfg["scheduler"] == "CosineAnnealing":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["cosa_tmax"])
    else:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg["elr_gamma"])
    out = []
    step = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(epochs):
            for _ in range(steps_per_epoch):
                if step < cfg["warmup_steps"] and cfg["warmup_type"] == "linear":
                    base = cfg["warmup_ratio"] * cfg["lr"]
                    lr = base + (step / cfg["warmup_steps"]) * abs(cfg["lr"] - base)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                out.append((step, epoch, optimizer.param_groups[0]["lr"]))
                param.grad = torch.ones(1)
                optimizer.step()
                step += 1
                if cfg["scheduler_interval"] == "step":
                    scheduler.step()
            if cfg["scheduler_interval"] == "epoch":
                scheduler.step()
    return out


REFERENCE_CASES = {
    # Milestones after the warm-up (as shipped), a repeated milestone: exact, spe not needed.
    "multistep": (_optim(lr=8e-3, warmup_steps=10, warmup_ratio=0.1, milestones=[3, 5, 5, 7]),
                  9, 4),
    # Milestone 1 falls inside the warm-up (steps 4..9): the original loses it.
    "multistep_in_warmup": (_optim(lr=8e-3, warmup_steps=10, milestones=[1, 4]), 6, 4),
    "constant": (_optim(warmup_type="constant", milestones=[1, 2]), 4, 3),
    # Warm-up ends in epoch 1, T_max 5, run past T_max (torch's restart branch).
    "cosine": (_optim(warmup_steps=6, scheduler="CosineAnnealing", cosa_tmax=5), 13, 4),
    "exponential": (_optim(warmup_steps=6, warmup_ratio=0.1, scheduler="ExponentialLR",
                           elr_gamma=0.9), 6, 4),
    "exponential_per_step": (_optim(warmup_steps=5, scheduler="ExponentialLR", elr_gamma=0.97,
                                    scheduler_interval="step"), 3, 7),
    "multistep_per_step": (_optim(warmup_steps=5, milestones=[3, 7, 12], scheduler_interval="step"),
                           3, 6),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_lr_at_matches_the_originals_torch_loop(case: str) -> None:
    cfg, epochs, spe = REFERENCE_CASES[case]
    for step, epoch, expected in _torch_reference(cfg, epochs, spe):
        got = lr_at(step, epoch, cfg, steps_per_epoch=spe)
        if cfg["scheduler"] == "MultiStepLR":
            assert got == expected, (case, step, epoch)  # gamma 0.5: bit-exact
        else:
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-18), (case, step, epoch)


def test_lr_at_without_steps_per_epoch_is_exact_for_shipped_milestones() -> None:
    cfg, epochs, spe = REFERENCE_CASES["multistep"]
    for step, epoch, expected in _torch_reference(cfg, epochs, spe):
        assert lr_at(step, epoch, cfg) == expected
    # A milestone inside the warm-up needs steps_per_epoch: without it, it is counted.
    cfg, epochs, spe = REFERENCE_CASES["multistep_in_warmup"]
    assert lr_at(12, 3, cfg, steps_per_epoch=spe) == 8e-3 * 9 / 10
    assert lr_at(12, 3, cfg) == 8e-3 * 9 / 10 / 2


def test_lr_at_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match="optim.scheduler='OneCycle'"):
        lr_at(0, 0, _optim(scheduler="OneCycle"))
    with pytest.raises(ConfigError, match="optim.scheduler_interval='batch'"):
        lr_at(0, 0, _optim(scheduler_interval="batch"))
    with pytest.raises(ConfigError, match="optim.milestones"):
        cfg = _optim(warmup_type="constant")
        del cfg["milestones"]
        lr_at(0, 0, cfg)


def test_scheduler_factor_closed_forms() -> None:
    assert scheduler_factor(7, "MultiStepLR", milestones=[3, 6, 9], gamma=0.5) == 0.25
    assert scheduler_factor(7, "MultiStepLR", milestones=[3, 6, 9], gamma=0.5, since=3) == 0.5
    assert scheduler_factor(3, "ExponentialLR", elr_gamma=0.5) == 0.125
    # (1 + cos(pi * 15 / 30)) / (1 + cos 0) = 1 / 2.
    assert scheduler_factor(15, "CosineAnnealing", cosa_tmax=30) == pytest.approx(0.5)


def test_build_optimizer_and_set_learning_rate() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(params, {"optimizer": "adamw", "lr": 1e-3, "adamw_decay": 0.1})
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[0]["lr"] == 1e-3
    opt = build_optimizer(params, {"optimizer": "adam", "lr": 1e-3, "adam_decay": 0.0})
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["weight_decay"] == 0.0
    set_learning_rate(opt, lr_at(0, 0, _optim(warmup_ratio=0.1)))
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-4)
    with pytest.raises(ConfigError, match="optim.optimizer='sgd'"):
        build_optimizer(params, {"optimizer": "sgd", "lr": 1e-3})


# ------------------------------------------------------------------- resolvers and configs


@pytest.fixture
def small_conf(tmp_path: Path) -> Path:
    """A primary config with the optim group of the repository and its own hardware keys."""
    (tmp_path / "small.yaml").write_text(
        "defaults:\n  - _self_\n  - optim: indoor\n"
        f"hydra:\n  searchpath:\n    - file://{CONF_DIR}\n"
        "hardware: {devices: 4, num_nodes: 1, batch_size: 1}\n"
        "accumulate: 1\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("overrides", "lr", "warmup_steps", "ratio", "milestones"),
    [
        ([], 3.75e-4, 76_800, 0.0, [3, 6, 9, 12, 17, 20, 23, 26, 29]),
        (["accumulate=16"], 6e-3, 4800, 0.0, [3, 6, 9, 12, 17, 20, 23, 26, 29]),
        (["optim=outdoor"], 5e-4, 30_000, 0.1, [8, 12, 16, 20, 24]),
        (["optim=outdoor", "hardware.devices=8", "hardware.num_nodes=8"], 8e-3, 1875, 0.1,
         [8, 12, 16, 20, 24]),
    ],
)  # fmt: skip
def test_optim_configs_resolve_derived_keys(
    small_conf: Path,
    overrides: list[str],
    lr: float,
    warmup_steps: int,
    ratio: float,
    milestones: list[int],
) -> None:
    register_resolvers()
    register_resolvers()  # idempotent
    with initialize_config_dir(config_dir=str(small_conf), version_base="1.3"):
        cfg = compose("small", overrides=overrides)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    assert optim["lr"] == lr
    assert optim["warmup_steps"] == warmup_steps
    assert optim["warmup_ratio"] == ratio
    assert optim["milestones"] == milestones
    assert optim["canonical_bs"] == 64 and optim["gamma"] == 0.5
    assert optim["optimizer"] == "adamw" and optim["adamw_decay"] == 0.1
    assert optim["adam_decay"] == 0.0 and optim["gradient_clipping"] == 0.5
    assert optim["cosa_tmax"] == 30 and optim["elr_gamma"] == 0.999992
    assert optim["scheduler"] == "MultiStepLR" and optim["warmup_type"] == "linear"
    # The resolved node drives lr_at directly: the first step starts the warm-up.
    assert lr_at(0, 0, optim) == pytest.approx(ratio * lr, rel=1e-15)


def test_resolver_error_names_the_key(small_conf: Path) -> None:
    with initialize_config_dir(config_dir=str(small_conf), version_base="1.3"):
        cfg = compose("small", overrides=["hardware.devices=auto"])
    with pytest.raises(Exception, match="hardware.devices='auto'"):
        OmegaConf.to_container(cfg.optim, resolve=True)
