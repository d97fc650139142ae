"""The run's config checks, which make bad values fail early naming the key, and its run id.

`validate_run_config` checks what spans the groups (strides, numeric ranges, the pose protocol,
the GPUs) and hands the `model` node to the model's own check (`loftr.model.config`) and the loss
rules to the loss (`loftr.losses.check_loss_config`); `validate_evaluate_config` is the
evaluation's counterpart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from loftr.checks import check_range, is_int
from loftr.errors import ConfigError

# the batch-size keys come first: optim.lr and optim.warmup_steps are derived from them
RUN_RANGES = (
    ("hardware.num_nodes", "count"),
    ("hardware.batch_size", "count"),
    ("hardware.num_workers", "count_or_zero"),
    ("accumulate", "count"),
    ("optim.lr", "positive"),
    ("optim.warmup_steps", "count_or_zero"),
    ("optim.warmup_ratio", "fraction"),
    ("optim.gamma", "positive"),
    ("optim.adam_decay", "non_negative"),
    ("optim.adamw_decay", "non_negative"),
    ("optim.gradient_clipping", "non_negative"),
    ("trainer.max_epochs", "limit"),
    ("trainer.max_steps", "limit"),
    ("trainer.check_val_every_n_epoch", "count"),
    ("trainer.limit_train_batches", "batches"),
    ("trainer.limit_val_batches", "batches"),
    ("trainer.num_sanity_val_steps", "count_or_all"),
    ("trainer.max_consecutive_nonfinite", "count"),
    ("checkpoint.every_n_train_steps", "count_or_zero"),
    ("checkpoint.save_top_k", "count_or_all"),
    ("logger.log_every_n_steps", "count"),
    ("logger.n_val_pairs_to_plot", "count_or_zero"),
)
EVAL_RANGES = (
    ("eval.epi_err_thr", "positive"),
    ("eval.ransac_pixel_thr", "positive"),
    ("eval.ransac_conf", "probability"),
)


def _setting(cfg: Mapping[str, Any] | DictConfig, dotted: str) -> Any:
    """`cfg`'s value at a dotted key, resolved; a derived value that cannot be made is named."""
    node: Any = cfg
    try:
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"{dotted} is missing from the config")
            node = node[part]
    except OmegaConfBaseException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"{dotted} cannot be resolved: {str(exc).splitlines()[0]}") from None
    return node


def check_ranges(cfg: Mapping[str, Any] | DictConfig, ranges: tuple[tuple[str, str], ...]) -> None:
    """Raise ConfigError naming the first setting of `ranges` whose value is out of range."""
    for key, kind in ranges:
        check_range(key, _setting(cfg, key), kind)


def check_gpus(hardware: Mapping[str, Any]) -> None:
    """A GPU hardware group needs that many GPUs on this machine (per node), before any work."""
    if hardware["accelerator"] not in ("gpu", "cuda"):
        return
    import torch  # here: `--help` and `--cfg` stay fast

    devices = hardware["devices"]
    wanted = devices if is_int(devices) and devices > 0 else 1
    found = torch.cuda.device_count()
    if found < wanted:
        raise ConfigError(
            f"{group_choice('hardware', 'hardware.accelerator=gpu')} asks for {wanted} GPU(s) per "
            f"node (hardware.devices={devices!r}) but this machine has {found}; use hardware=cpu "
            "or a hardware group with fewer devices"
        )


def group_choice(group: str, fallback: str) -> str:
    """`group=option` as the command line chose it (Hydra runs), else `fallback`."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        option = HydraConfig.get().runtime.choices.get(group)
        if option is not None:
            return f"{group}={option}"
    return fallback


def validate_run_config(cfg: Mapping[str, Any] | DictConfig) -> None:
    """Checks across groups that would otherwise fail deep inside a run, naming the keys.

    A test-only dataset (and so an `eval_*` experiment) is refused with the command that takes
    it. The network input must be divisible by the coarse stride: ScanNet-format images are resized
    to `dataset.scannet_img_resize`, MegaDepth-format ones floored to `dataset.mgdpt_df`. The
    numeric settings of `RUN_RANGES` must be in range, a GPU hardware group must find its
    GPUs, and the model config must pass the model's check and the loss's.
    """
    dataset = cfg["dataset"]
    if dataset.get("test_only"):
        name = dataset.get("name")
        raise ConfigError(
            f"dataset {name} is a test set (dataset.test_only), not a training set: test a "
            f"checkpoint on it with `python -m loftr.evaluate ckpt_path=PATH dataset={name}` (the "
            "eval_* experiments too: `python -m loftr.evaluate experiment=eval_indoor_ds`)"
        )
    stride = int(cfg["model"]["resolution"][0])
    sources = {dataset.get("trainval_data_source"), dataset.get("test_data_source")}
    if "ScanNet" in sources:
        width, height = dataset.get("scannet_img_resize") or (640, 480)
        if width % stride or height % stride:
            raise ConfigError(
                f"dataset.scannet_img_resize=[{width}, {height}] is not divisible by the coarse "
                f"stride {stride} (model.resolution); use e.g. [640, 480] or [320, 240]"
            )
    if "MegaDepth" in sources and int(dataset.get("mgdpt_df") or stride) % stride:
        raise ConfigError(
            f"dataset.mgdpt_df={dataset['mgdpt_df']} must be a multiple of the coarse stride "
            f"{stride} (model.resolution)"
        )
    check_ranges(cfg, RUN_RANGES)
    validate_protocol(cfg)
    check_gpus(cfg["hardware"])
    from loftr.losses import check_loss_config  # here: both load torch, --cfg stays fast
    from loftr.model.config import model_config

    model = model_config(cfg["model"])  # the model's own checks
    if "loss" in model:
        check_loss_config(model)  # the loss owns its rules (docs/original.md#coarse-loss)


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


def validate_protocol(cfg: Mapping[str, Any] | DictConfig) -> None:
    """The pose protocol (`eval`) a run validates and an evaluation tests with, in range."""
    from loftr.evaluation.metrics import check_pose_estimator  # the metrics own their estimators

    check_ranges(cfg, EVAL_RANGES)
    check_pose_estimator(_setting(cfg, "eval.pose_estimator"))


def validate_evaluate_config(cfg: DictConfig) -> None:
    """Checks of an `evaluate` config before a checkpoint is read or a folder made."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("ckpt is not set: pass ckpt_path=PATH to a LoFTR checkpoint")
    check_ranges(cfg, (("hardware.num_workers", "count_or_zero"),))
    validate_protocol(cfg)
