"""Model-config normalisation and the checks that make bad values fail early, naming the key.

The `model` node mirrors the original's lower-cased LOFTR node (SPEC §1.2), which is also
kornia's `default_cfg` layout. Hydra composes it; `model_config` turns it into the plain dict the
modules read, and `validate_model_config` rejects values the model cannot run with.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from omegaconf import DictConfig, OmegaConf

from loftr.errors import ConfigError

MATCH_TYPES = ("dual_softmax", "sinkhorn")
RESOLUTIONS = ((8, 2), (16, 4))
ATTENTIONS = ("linear", "full")


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
            "needs a centre cell, SPEC §2.7)"
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
    if "loss" in config:
        from loftr.losses import check_loss_config  # the loss owns its rules (SPEC §4.1)

        check_loss_config(config)
    from loftr.model.variants import validate_variant_config  # the ablation variants' keys

    validate_variant_config(config)


def validate_run_config(cfg: Mapping[str, Any] | DictConfig) -> None:
    """Checks across groups that would otherwise fail deep inside a run, naming the keys.

    The network input must be divisible by the coarse stride: ScanNet-format images are resized
    to `dataset.scannet_img_resize`, MegaDepth-format ones floored to `dataset.mgdpt_df`.
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
