"""Every OmegaConf resolver of the project, registered in one place (`register_resolvers`).

- `${loftr.true_bs:devices,num_nodes,batch_size,accumulate}`: the true batch size;
- `${loftr.scaled_lr:canonical_lr,devices,num_nodes,batch_size,accumulate,canonical_bs}` and
  `${loftr.scaled_warmup_steps:canonical_warmup_steps,...}`: `optim.lr` and `optim.warmup_steps`
  scaled linearly with the true batch (docs/original.md#lr-scaling);
- `${loftr.run_id:time_format}`: the default run directory's last part, computed once per process.

The batch arithmetic is plain Python (the schedule, `loftr.lightning.schedule`, re-exports it), so
that composing a config never imports torch.
"""

from __future__ import annotations

import math
import os
from datetime import datetime
from typing import Any

from omegaconf import ListConfig, OmegaConf

from loftr.errors import ConfigError


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


def run_id(time_format: str) -> str:
    """The last part of the default run directory (`${loftr.run_id:FORMAT}`), one for all nodes.

    Ranks cannot talk before the process group exists, so every node derives the name from what
    they share: torchrun's rendezvous id (`--rdzv-id`), or the job and step ids of a multi-task
    SLURM job. A restarted or requeued job finds the same directory and continues its
    `last.ckpt`. A single process tree is named by its start time (`time_format`).
    """
    env = os.environ
    elastic = env.get("TORCHELASTIC_RUN_ID")
    if elastic and elastic != "none":
        return f"torchrun-{elastic}"
    if elastic == "none" and int(env.get("WORLD_SIZE", "1")) > 1:
        # an exit, not an exception: Hydra resolves this before the run, where an exception
        # would end in its traceback instead of this line
        raise SystemExit(
            "error: torchrun without --rdzv-id: its processes cannot agree on a run directory; "
            "pass torchrun --rdzv-id JOB_ID (the same on every node) or hydra.run.dir=DIR"
        )
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
        step = env.get("SLURM_STEP_ID")
        return f"slurm-{env['SLURM_JOB_ID']}" + (f".{step}" if step else "")
    return datetime.now().strftime(time_format)


#: The data sources whose pairs are related by a homography: their validation reports the
#: corner-error AUC@3/5/10 (docs/homography.md#validation), the others the pose AUC@5/10/20.
HOMOGRAPHY_SOURCES = ("Homographies", "PairsWithHomography", "HPatches")


def checkpoint_filename(source: Any) -> str:
    """The top-k checkpoints' file name (`${loftr.checkpoint_filename:SOURCE}`): the epoch and the
    AUCs the validation of `source` reports. No `=` or `@`: `ckpt_path=<path>` must parse as a
    Hydra override unquoted."""
    thresholds = (3, 5, 10) if str(source) in HOMOGRAPHY_SOURCES else (5, 10, 20)
    return "epoch{epoch}-" + "-".join(f"auc{t}_{{auc@{t}:.3f}}" for t in thresholds)


RESOLVERS = {
    "loftr.checkpoint_filename": (checkpoint_filename, False),
    "loftr.true_bs": (true_batch_size, False),
    "loftr.scaled_lr": (_resolve_scaled_lr, False),
    "loftr.scaled_warmup_steps": (_resolve_scaled_warmup_steps, False),
    "loftr.run_id": (run_id, True),  # cached: one run directory per process
}


def register_resolvers() -> None:
    """Register every `loftr.*` resolver; calling it again does nothing."""
    for name, (function, cached) in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=cached)
