"""Model-config normalisation and the checks that make bad values fail early, naming the key.

The `model` node mirrors the original's lower-cased LOFTR node (docs/original.md#config-defaults),
which is also kornia's `default_cfg` layout. Hydra composes it; `model_config` turns it into the
plain dict the modules read, and `validate_model_config` rejects values the model cannot run with.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from loftr.errors import ConfigError

MATCH_TYPES = ("dual_softmax", "sinkhorn")
RESOLUTIONS = ((8, 2), (16, 4))
ATTENTIONS = ("linear", "full")


# What a numeric setting may hold: a test of the value and the words that say it.
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "non_negative": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "fraction": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "probability": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "count": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "count_or_zero": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "limit": (lambda v: _is_int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1 (no limit)"),
    "count_or_all": (lambda v: _is_int(v) and v >= -1, "an integer >= 0, or -1 (all)"),
    "batches": (
        lambda v: (_is_int(v) and v >= 0) or (_is_number(v) and 0 <= v <= 1),
        "a number of batches >= 0 or a fraction in [0, 1]",
    ),
}
MODEL_RANGES = (
    ("match_coarse.thr", "fraction"),
    ("match_coarse.border_rm", "count_or_zero"),
    ("match_coarse.dsmax_temperature", "positive"),
    ("match_coarse.skh_iters", "count"),
    ("match_coarse.train_coarse_percent", "fraction"),
    ("match_coarse.train_pad_num_gt_min", "count_or_zero"),
)
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_range(key: str, value: Any, kind: str) -> None:
    test, allowed = KINDS[kind]
    if not test(value):
        raise ConfigError(f"{key}={value!r} must be {allowed}")


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
        _check_range(key, _setting(cfg, key), kind)


def check_gpus(hardware: Mapping[str, Any]) -> None:
    """A GPU hardware group needs that many GPUs on this machine (per node), before any work."""
    if hardware["accelerator"] not in ("gpu", "cuda"):
        return
    import torch  # here: `--help` and `--cfg` stay fast

    devices = hardware["devices"]
    wanted = devices if _is_int(devices) and devices > 0 else 1
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


def model_config(config: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A validated plain-dict copy of a `model` node, with `resolution` as a tuple.

    Args:
        config: the `model` node (DictConfig or mapping), e.g. `cfg.model`.

    Returns:
        A deep copy as plain containers; the caller's object is never modified.
    """
    if isinstance(config, DictConfig):
        plain = OmegaConf.to_container(config, resolve=True)
    else:
        plain = copy.deepcopy(dict(config))
    plain["resolution"] = tuple(plain["resolution"])
    validate_model_config(plain)
    return plain


def checkpoint_model(
    model: DictConfig, stored: Mapping[str, Any] | None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """The model config a checkpoint runs with, validated (`model_config`).

    A checkpoint of ours stores its model config: that config is used, with the command line's
    `model.*` key overrides on top, so `model.match_coarse.thr=0.3` takes effect. Group choices
    (`model=`, `matcher=`, `debug=`) do not: they describe another architecture. Without a
    stored config (original and kornia files, or `model_from_ckpt=false`) `model` is used.

    Args:
        model: the composed `model` node, which holds the overridden values.
        stored: the checkpoint's model config, or None.
        overrides: the command line's overrides, as Hydra received them.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if stored is None:
        return model_config(model)
    merged = OmegaConf.create(copy.deepcopy(dict(stored)))
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.package is not None or not key.startswith("model."):
            continue
        key = key[len("model.") :]
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(merged, parent) if parent else merged
            if isinstance(node, DictConfig):
                node.pop(leaf, None)
        else:
            OmegaConf.update(merged, key, OmegaConf.select(model, key), force_add=True)
    return model_config(merged)


def _require(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"model.{dotted} is missing from the model config")
        node = node[part]
    return node


def _one_of(config: Mapping[str, Any], dotted: str, allowed: tuple) -> None:
    value = _require(config, dotted)
    if value not in allowed:
        raise ConfigError(f"model.{dotted}={value!r} is not supported; use one of {list(allowed)}")


def validate_model_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError naming the key when the model config cannot build or train a LoFTR.

    Checks the backbone type, the (coarse, fine) resolution, an odd fine window, the attention
    and matcher types, head counts that divide the widths, and the loss types together with the
    supervision mode (`loftr.losses.check_loss_config`).
    """
    if _require(config, "backbone_type") != "ResNetFPN":
        raise ConfigError(
            f"model.backbone_type={config['backbone_type']!r}: only 'ResNetFPN' exists"
        )
    resolution = tuple(_require(config, "resolution"))
    if resolution not in RESOLUTIONS:
        raise ConfigError(
            f"model.resolution={list(resolution)} is not supported; use [8, 2] or [16, 4]"
        )
    n_dims = len(_require(config, "resnetfpn.block_dims"))
    if n_dims != {(8, 2): 3, (16, 4): 4}[resolution]:
        raise ConfigError(
            f"model.resnetfpn.block_dims has {n_dims} entries; resolution {list(resolution)} "
            f"needs {3 if resolution == (8, 2) else 4}"
        )
    dims = _require(config, "resnetfpn.block_dims")
    coarse_dim, fine_dim = (dims[2], dims[0]) if resolution == (8, 2) else (dims[3], dims[1])
    for level, channels in (("coarse", coarse_dim), ("fine", fine_dim)):
        if _require(config, f"{level}.d_model") != channels:
            raise ConfigError(
                f"model.{level}.d_model={config[level]['d_model']} must equal the backbone's "
                f"{level} channels {channels} (model.resnetfpn.block_dims={list(dims)})"
            )
    window = _require(config, "fine_window_size")
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ConfigError(
            f"model.fine_window_size={window!r} must be an odd positive integer (the window "
            "needs a centre cell, docs/original.md#fine-matching)"
        )
    for level in ("coarse", "fine"):
        _one_of(config, f"{level}.attention", ATTENTIONS)
        d_model, nhead = _require(config, f"{level}.d_model"), _require(config, f"{level}.nhead")
        if d_model % nhead:
            raise ConfigError(
                f"model.{level}.d_model={d_model} is not divisible by model.{level}.nhead={nhead}"
            )
        for name in _require(config, f"{level}.layer_names"):
            if name not in ("self", "cross"):
                raise ConfigError(
                    f"model.{level}.layer_names holds {name!r}; use 'self' or 'cross'"
                )
    if _require(config, "coarse.d_model") % 4:
        raise ConfigError("model.coarse.d_model must be divisible by 4 (sine position encoding)")
    _one_of(config, "match_coarse.match_type", MATCH_TYPES)
    for key, kind in MODEL_RANGES:  # the training-only ones may be absent at inference
        section, leaf = key.split(".")
        if leaf in config.get(section, {}):
            _check_range(f"model.{key}", config[section][leaf], kind)
    if "loss" in config:
        from loftr.losses import check_loss_config  # the loss owns its rules
        # (docs/original.md#coarse-loss)

        check_loss_config(config)
    from loftr.model.variants import validate_variant_config  # the ablation variants' keys

    validate_variant_config(config)


def validate_run_config(cfg: Mapping[str, Any] | DictConfig) -> None:
    """Checks across groups that would otherwise fail deep inside a run, naming the keys.

    The network input must be divisible by the coarse stride: ScanNet-format images are resized
    to `dataset.scannet_img_resize`, MegaDepth-format ones floored to `dataset.mgdpt_df`. The
    numeric settings of `RUN_RANGES` must be in range, and a GPU hardware group must find its
    GPUs.
    """
    stride = int(cfg["model"]["resolution"][0])
    dataset = cfg["dataset"]
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
    model_config(cfg["model"])


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
    from loftr.metrics import check_pose_estimator  # the metrics own their estimators

    check_ranges(cfg, EVAL_RANGES)
    check_pose_estimator(_setting(cfg, "eval.pose_estimator"))


def validate_evaluate_config(cfg: DictConfig) -> None:
    """Checks of an `evaluate` config before a checkpoint is read or a folder made."""
    if OmegaConf.is_missing(cfg, "ckpt") or not cfg.ckpt:
        raise ConfigError("ckpt is not set: pass ckpt=PATH to a LoFTR checkpoint")
    check_ranges(cfg, (("hardware.num_workers", "count_or_zero"),))
    validate_protocol(cfg)
