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

The derived config keys ``optim.lr`` and ``optim.warmup_steps`` come from OmegaConf resolvers
registered by :func:`register_resolvers` (called on import), so ``--cfg job --resolve`` shows the
numbers a run will use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import ListConfig, OmegaConf

from loftr.config import run_id
from loftr.errors import ConfigError

__all__ = [
    "SCHEDULERS",
    "WARMUP_TYPES",
    "build_optimizer",
    "lr_at",
    "register_resolvers",
    "scaled_learning_rate",
    "scaled_warmup_steps",
    "scheduler_factor",
    "set_learning_rate",
    "true_batch_size",
    "warmup_lr",
]

WARMUP_TYPES = ("linear", "constant")
SCHEDULERS = ("MultiStepLR", "CosineAnnealing", "ExponentialLR")
SCHEDULER_INTERVALS = ("epoch", "step")


# --------------------------------------------------------------------------------------------
# Batch scaling (docs/original.md#lr-scaling)
# --------------------------------------------------------------------------------------------


def _count_devices(devices: Any) -> int:
    """Number of devices from Lightning's ``devices``: an int, a list of ids or ``"0,1,2"``."""
    if isinstance(devices, list | tuple | ListConfig):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    else:
        try:
            count = int(devices)
        except (TypeError, ValueError):
            count = -1
    if count < 1:
        raise ConfigError(
            f"hardware.devices={devices!r} does not give a device count; the true batch size "
            "(and so optim.lr and optim.warmup_steps, docs/original.md#lr-scaling) needs a "
            "positive int or a list of device ids."
        )
    return count


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or number != value:
        raise ConfigError(
            f"{name}={value!r} must be a positive integer (docs/original.md#lr-scaling)."
        )
    return number


def true_batch_size(devices: Any, num_nodes: int, batch_size: int, accumulate: int = 1) -> int:
    """Pairs per optimizer step: devices x nodes x per-device batch x accumulation
    (docs/original.md#lr-scaling).

    Gradient accumulation counts in the true batch (docs/differences.md#6).

    Args:
        devices: devices per node: an int, a list of ids or a ``"0,1"`` string.
        num_nodes: number of nodes.
        batch_size: pairs per device per forward pass.
        accumulate: forward passes per optimizer step.

    Returns:
        The true batch size.

    Raises:
        ConfigError: a value that is not a positive count.

    Example:
        >>> true_batch_size(4, 1, 1, 16)
        64
    """
    return (
        _count_devices(devices)
        * _positive_int("hardware.num_nodes", num_nodes)
        * _positive_int("hardware.batch_size", batch_size)
        * _positive_int("accumulate", accumulate)
    )


def _scaling(true_bs: int, canonical_bs: int) -> float:
    return _positive_int("true batch size", true_bs) / _positive_int(
        "optim.canonical_bs", canonical_bs
    )


def scaled_learning_rate(canonical_lr: float, true_bs: int, canonical_bs: int = 64) -> float:
    """``canonical_lr * true_bs / canonical_bs``, computed as the original does
    (docs/original.md#lr-scaling).

    Example:
        >>> scaled_learning_rate(6e-3, 4)
        0.000375
    """
    return float(canonical_lr) * _scaling(true_bs, canonical_bs)


def scaled_warmup_steps(canonical_warmup_steps: int, true_bs: int, canonical_bs: int = 64) -> int:
    """``floor(canonical_warmup_steps / scaling)``: the warm-up length in pairs is kept
    (docs/original.md#lr-scaling).

    Example:
        >>> scaled_warmup_steps(4800, 4)
        76800
    """
    return math.floor(canonical_warmup_steps / _scaling(true_bs, canonical_bs))


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
    name = str(_get(optim_cfg, "optimizer"))
    lr = float(_get(optim_cfg, "lr"))
    if name == "adamw":
        return torch.optim.AdamW(
            parameters, lr=lr, weight_decay=float(_get(optim_cfg, "adamw_decay"))
        )
    if name == "adam":
        return torch.optim.Adam(
            parameters, lr=lr, weight_decay=float(_get(optim_cfg, "adam_decay"))
        )
    raise ConfigError(f"optim.optimizer={name!r} is unknown; choose 'adamw' or 'adam'.")


# --------------------------------------------------------------------------------------------
# OmegaConf resolvers for the derived keys
# --------------------------------------------------------------------------------------------


def _resolve_true_bs(devices: Any, num_nodes: Any, batch_size: Any, accumulate: Any) -> int:
    return true_batch_size(devices, num_nodes, batch_size, accumulate)


def _resolve_scaled_lr(
    canonical_lr: Any,
    devices: Any,
    num_nodes: Any,
    batch_size: Any,
    accumulate: Any,
    canonical_bs: Any = 64,
) -> float:
    true_bs = true_batch_size(devices, num_nodes, batch_size, accumulate)
    return scaled_learning_rate(float(canonical_lr), true_bs, int(canonical_bs))


def _resolve_scaled_warmup_steps(
    canonical_warmup_steps: Any,
    devices: Any,
    num_nodes: Any,
    batch_size: Any,
    accumulate: Any,
    canonical_bs: Any = 64,
) -> int:
    true_bs = true_batch_size(devices, num_nodes, batch_size, accumulate)
    return scaled_warmup_steps(int(canonical_warmup_steps), true_bs, int(canonical_bs))


_RESOLVERS = {
    "loftr.true_bs": _resolve_true_bs,
    "loftr.scaled_lr": _resolve_scaled_lr,
    "loftr.scaled_warmup_steps": _resolve_scaled_warmup_steps,
}


def register_resolvers() -> None:
    """Register the ``loftr.*`` OmegaConf resolvers; calling it again does nothing.

    - ``${loftr.true_bs:devices,num_nodes,batch_size,accumulate}``
    - ``${loftr.scaled_lr:canonical_lr,devices,num_nodes,batch_size,accumulate,canonical_bs}``
    - ``${loftr.scaled_warmup_steps:canonical_warmup_steps,devices,num_nodes,batch_size,
      accumulate,canonical_bs}``

    - ``${loftr.run_id:time_format}``: the default run directory's name (`loftr.config.run_id`),
      computed once per process

    Entry points must import this module before Hydra composes (it registers on import).
    """
    for name, fn in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    if not OmegaConf.has_resolver("loftr.run_id"):
        OmegaConf.register_new_resolver("loftr.run_id", run_id, use_cache=True)


register_resolvers()
