"""The learning-rate rule of the original LoFTR as pure functions
(docs/original.md#lr-scaling, #optimizer-schedule).

The learning rate and the warm-up length scale linearly with the true batch size (devices x
nodes x per-device batch x gradient accumulation) relative to the canonical 64; warm-up is
linear from ``warmup_ratio * lr`` and overwrites the lr before every optimizer step; then the
scheduler (MultiStepLR by default, stepped per epoch) takes over.

The original applies the warm-up in ``optimizer_step`` and lets a chained torch scheduler decay
whatever lr is current, which breaks on resume. Here the lr is a pure function of
``(global optimizer step, epoch)`` (docs/differences.md#1) that reproduces the
original's numbers, its quirks included:

- step 0 of a linear warm-up with ratio 0 has lr 0;
- after the warm-up the lr is *not* reset to ``lr``: it keeps the last warm-up value,
  ``lr * (1 - (1 - ratio) / warmup_steps)``, and the scheduler's factors multiply that value;
- scheduler updates that happen while the warm-up is still running are overwritten by it and
  lost (never the case with the shipped milestones; :func:`lr_at` takes ``steps_per_epoch`` to
  place the end of the warm-up when it matters).

The batch scaling itself (:func:`true_batch_size`, :func:`scaled_learning_rate`,
:func:`scaled_warmup_steps`) is plain arithmetic in `loftr.config.resolvers`, whose resolvers derive
the config keys ``optim.lr`` and ``optim.warmup_steps`` from it (``--cfg job --resolve`` shows the
numbers a run will use); it is re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from loftr.config.resolvers import scaled_learning_rate, scaled_warmup_steps, true_batch_size
from loftr.errors import ConfigError

__all__ = [
    "SCHEDULERS",
    "WARMUP_TYPES",
    "build_optimizer",
    "check_optim_config",
    "lr_at",
    "scaled_learning_rate",
    "scaled_warmup_steps",
    "scheduler_factor",
    "set_learning_rate",
    "true_batch_size",
    "warmup_lr",
]

OPTIMIZERS = ("adamw", "adam")
WARMUP_TYPES = ("linear", "constant")
SCHEDULERS = ("MultiStepLR", "CosineAnnealing", "ExponentialLR")
SCHEDULER_INTERVALS = ("epoch", "step")


# --------------------------------------------------------------------------------------------
# Warm-up and schedulers (docs/original.md#optimizer-schedule)
# --------------------------------------------------------------------------------------------


def warmup_lr(
    step: int, lr: float, warmup_steps: int, warmup_ratio: float, warmup_type: str = "linear"
) -> float:
    """The lr of optimizer step ``step`` during the warm-up (docs/original.md#optimizer-schedule).

    ``linear``: ``base + step / warmup_steps * |lr - base|`` with ``base = warmup_ratio * lr``,
    so with ratio 0 the first step (``step = 0``) has lr 0. ``constant``: no warm-up, ``lr``.

    Args:
        step: global optimizer step, 0-based, ``< warmup_steps`` for a meaningful value.
        lr: the scaled (true) learning rate.
        warmup_steps: the scaled warm-up length in optimizer steps.
        warmup_ratio: start of the ramp as a fraction of ``lr``.
        warmup_type: ``"linear"`` or ``"constant"``.

    Returns:
        The learning rate.

    Raises:
        ConfigError: an unknown warm-up type.

    Example:
        >>> warmup_lr(0, 8e-3, 1875, 0.1)
        0.0008
    """
    if warmup_type == "constant":
        return float(lr)
    if warmup_type != "linear":
        raise ConfigError(
            f"optim.warmup_type={warmup_type!r} is unknown; choose one of {list(WARMUP_TYPES)}."
        )
    base = warmup_ratio * lr
    return base + (step / warmup_steps) * abs(lr - base)


def scheduler_factor(
    counter: int,
    scheduler: str,
    *,
    milestones: Sequence[int] = (),
    gamma: float = 0.5,
    cosa_tmax: int = 30,
    elr_gamma: float = 0.999992,
    since: int = 0,
) -> float:
    """The factor by which a torch scheduler scales the lr from counter ``since`` to ``counter``.

    The original's schedulers are torch's chained forms
    (docs/original.md#config-defaults, #optimizer-schedule): at each scheduler step the current lr
    is multiplied (MultiStepLR by ``gamma`` per milestone reached, ExponentialLR by ``elr_gamma``,
    CosineAnnealing by ``(1 + cos(pi c / T)) / (1 + cos(pi (c - 1) / T))``, ``eta_min = 0``). This
    is the product of the updates at counters ``since + 1 .. counter``, in closed form. For
    CosineAnnealing past ``T`` the chained form restarts from the initial lr; use :func:`lr_at`,
    which handles that.

    Args:
        counter: the scheduler's counter (epochs for interval 'epoch', steps for 'step').
        scheduler: ``"MultiStepLR"``, ``"CosineAnnealing"`` or ``"ExponentialLR"``.
        milestones: MultiStepLR milestones (repeated values count repeatedly, as in torch).
        gamma: MultiStepLR factor.
        cosa_tmax: CosineAnnealing ``T_max``.
        elr_gamma: ExponentialLR factor.
        since: the counter from which updates count (the last one overwritten by a warm-up).

    Returns:
        The multiplicative factor (1 when ``counter <= since``).
    """
    if counter <= since:
        return 1.0
    if scheduler == "MultiStepLR":
        reached = sum(1 for m in milestones if since < m <= counter)
        return gamma**reached
    if scheduler == "ExponentialLR":
        return elr_gamma ** (counter - since)
    if scheduler == "CosineAnnealing":
        return (1 + math.cos(math.pi * counter / cosa_tmax)) / (
            1 + math.cos(math.pi * since / cosa_tmax)
        )
    raise ConfigError(
        f"optim.scheduler={scheduler!r} is unknown; choose one of {list(SCHEDULERS)}."
    )


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    if key not in cfg:
        raise ConfigError(f"Missing key optim.{key} (see conf/optim/indoor.yaml).")
    return cfg[key]


def lr_at(
    step: int, epoch: int, optim_cfg: Mapping[str, Any], steps_per_epoch: int | None = None
) -> float:
    """The learning rate of optimizer step ``step`` in epoch ``epoch``, as the original yields it.

    While ``step < warmup_steps`` (linear warm-up) this is :func:`warmup_lr`. Afterwards it is
    the last warm-up value (``lr`` itself for a constant warm-up or no warm-up steps) times the
    scheduler's factor for the scheduler steps taken since the warm-up ended
    (docs/original.md#optimizer-schedule); with the default MultiStepLR per epoch, the lr is halved
    at the start of each milestone epoch.

    Args:
        step: global optimizer step (Lightning's ``global_step``), 0-based.
        epoch: current epoch (Lightning's ``current_epoch``), 0-based.
        optim_cfg: the ``optim`` node: ``lr``, ``warmup_steps``, ``warmup_type``,
            ``warmup_ratio``, ``scheduler``, ``milestones``, ``gamma``, ``cosa_tmax``,
            ``elr_gamma`` and optionally ``scheduler_interval`` (``"epoch"``, default, or
            ``"step"``).
        steps_per_epoch: optimizer steps per epoch. Only needed when an epoch-interval
            scheduler would have updated the lr while the warm-up was still running (a
            milestone inside the warm-up, or CosineAnnealing / ExponentialLR with a warm-up
            longer than an epoch): the original loses those updates, and this places them.
            Without it the warm-up is taken to end in epoch 0, which is exact for the shipped
            MultiStepLR recipes (their first milestone comes after the warm-up).

    Returns:
        The learning rate.

    Example:
        >>> cfg = dict(lr=8e-3, warmup_steps=1875, warmup_type="linear", warmup_ratio=0.1,
        ...            scheduler="MultiStepLR", milestones=[8, 12], gamma=0.5)
        >>> lr_at(0, 0, cfg)  # warm-up starts at 0.1 * lr
        0.0008
        >>> round(lr_at(1875, 7, cfg), 12)  # the last warm-up value, 8e-3 * (1 - 0.9 / 1875)
        0.00799616
        >>> round(lr_at(9000, 8, cfg), 12)  # halved at the start of milestone epoch 8
        0.00399808
    """
    lr = float(_get(optim_cfg, "lr"))
    warmup_steps = int(_get(optim_cfg, "warmup_steps"))
    warmup_type = str(_get(optim_cfg, "warmup_type"))
    warmup_ratio = float(_get(optim_cfg, "warmup_ratio"))
    scheduler = str(_get(optim_cfg, "scheduler"))
    interval = str(optim_cfg.get("scheduler_interval", "epoch"))
    if interval not in SCHEDULER_INTERVALS:
        raise ConfigError(
            f"optim.scheduler_interval={interval!r} is unknown; choose one of "
            f"{list(SCHEDULER_INTERVALS)}."
        )
    if warmup_type not in WARMUP_TYPES:
        raise ConfigError(
            f"optim.warmup_type={warmup_type!r} is unknown; choose one of {list(WARMUP_TYPES)}."
        )
    if scheduler not in SCHEDULERS:
        raise ConfigError(
            f"optim.scheduler={scheduler!r} is unknown; choose one of {list(SCHEDULERS)}."
        )
    warming = warmup_type == "linear" and warmup_steps > 0
    if warming and step < warmup_steps:
        return warmup_lr(step, lr, warmup_steps, warmup_ratio, warmup_type)

    counter = epoch if interval == "epoch" else step
    if warming:
        # docs/original.md#optimizer-schedule: the lr keeps the value of the last warm-up step, and
        # every scheduler update up to that step was overwritten by the warm-up.
        start = warmup_lr(warmup_steps - 1, lr, warmup_steps, warmup_ratio, warmup_type)
        if interval == "step":
            since = warmup_steps - 1
        else:
            since = 0 if steps_per_epoch is None else (warmup_steps - 1) // steps_per_epoch
    else:
        start, since = lr, 0

    kwargs: dict[str, Any] = {}
    if scheduler == "MultiStepLR":
        kwargs = {
            "milestones": list(_get(optim_cfg, "milestones")),
            "gamma": float(_get(optim_cfg, "gamma")),
        }
    elif scheduler == "ExponentialLR":
        kwargs = {"elr_gamma": float(_get(optim_cfg, "elr_gamma"))}
    elif scheduler == "CosineAnnealing":
        tmax = int(_get(optim_cfg, "cosa_tmax"))
        if counter > tmax:
            # torch's chained cosine restarts from the initial lr after T_max (its
            # "(last_epoch - 1 - T_max) % (2 T_max) == 0" branch): lr * (1 + cos) / 2.
            return lr * (1 + math.cos(math.pi * counter / tmax)) / 2
        kwargs = {"cosa_tmax": tmax}
    return start * scheduler_factor(counter, scheduler, since=since, **kwargs)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's lr, e.g. to ``lr_at(global_step, current_epoch, cfg.optim)``.

    Call it before each optimizer step (the LightningModule's ``optimizer_step`` or
    ``on_before_optimizer_step``); no torch scheduler is needed then, and a resumed run gets the
    same lr as an uninterrupted one (docs/differences.md#1).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], optim_cfg: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """The original's optimizer: one group, AdamW or Adam with the configured decay
    (docs/original.md#optimizer-schedule).

    Betas and eps are torch's defaults; weight decay applies to every parameter.

    Raises:
        ConfigError: an unknown ``optim.optimizer``.
    """
    name = _optimizer_name(optim_cfg)
    optimizer = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    decay = float(_get(optim_cfg, f"{name}_decay"))
    return optimizer(parameters, lr=float(_get(optim_cfg, "lr")), weight_decay=decay)


def _optimizer_name(optim_cfg: Mapping[str, Any]) -> str:
    name = str(_get(optim_cfg, "optimizer"))
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.optimizer={name!r} is unknown; choose 'adamw' or 'adam'.")
    return name


def check_optim_config(optim_cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError, naming the key, when the schedule cannot run with the `optim` node:
    an unknown optimizer, warm-up, scheduler or interval, or a key the scheduler needs missing
    (the lr of the first step and of the first step after the warm-up are computed)."""
    _optimizer_name(optim_cfg)
    lr_at(0, 0, optim_cfg)
    lr_at(int(_get(optim_cfg, "warmup_steps")), 0, optim_cfg)
