"""The model config: normalisation, the checks that name a bad key, and the variants' keys.

The `model` node mirrors the original's lower-cased LOFTR node (docs/original.md#config-defaults),
which is also kornia's `default_cfg` layout. Hydra composes it; `model_config` turns it into the
plain dict the modules read, and `validate_model_config` rejects values the model cannot run with.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from loftr.checks import check_range
from loftr.errors import ConfigError

MATCH_TYPES = ("dual_softmax", "sinkhorn")
RESOLUTIONS = ((8, 2), (16, 4))
ATTENTIONS = ("linear", "full")
LAYER_TYPES = ("transformer", "conv")
POS_ENCODINGS = ("input", "every_layer")
MODEL_RANGES = (
    ("match_coarse.thr", "fraction"),
    ("match_coarse.border_rm", "count_or_zero"),
    ("match_coarse.dsmax_temperature", "positive"),
    ("match_coarse.skh_iters", "count"),
    ("match_coarse.train_coarse_percent", "fraction"),
    ("match_coarse.train_pad_num_gt_min", "count_or_zero"),
)


def normalised_model_config(config: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A plain-dict copy of a `model` node, its choices as strings and `resolution` a tuple;
    not checked (`model_config` checks it).

    Args:
        config: the `model` node (DictConfig or mapping), e.g. `cfg.model`.

    Returns:
        A deep copy as plain containers; the caller's object is never modified.
    """
    if isinstance(config, DictConfig):
        plain = OmegaConf.to_container(config, resolve=True, enum_to_str=True)
    else:
        plain = copy.deepcopy(dict(config))
    plain["resolution"] = tuple(plain["resolution"])
    return plain


def model_config(config: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A validated plain-dict copy of a `model` node (`normalised_model_config`, then
    `validate_model_config`)."""
    plain = normalised_model_config(config)
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
    and matcher types, head counts that divide the widths, the matching ranges and the ablation
    variants' keys. The loss rules are the loss's own (`loftr.losses.check_loss_config`): the run's
    check (`loftr.config.validate.validate`) applies them, so building a LoFTR never reads them.
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
            check_range(f"model.{key}", config[section][leaf], kind)
    if "fine_train_max_coverage" in config:  # absent from older checkpoints' configs
        check_range("model.fine_train_max_coverage", config["fine_train_max_coverage"], "fraction")
    validate_variant_config(config)  # the ablation variants' keys


def validate_variant_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError, naming the key, for an unknown or impossible variant setting.

    Args:
        config: the `model` node as a plain mapping (docs/original.md#config-defaults keys,
        lower-cased).
    """
    for level in ("coarse", "fine"):
        layer_type = config[level].get("layer_type") or "transformer"
        if layer_type not in LAYER_TYPES:
            raise ConfigError(
                f"model.{level}.layer_type={layer_type!r} is not supported; use one of "
                f"{list(LAYER_TYPES)}"
            )
    pos_encoding = config["coarse"].get("pos_encoding") or "input"
    if pos_encoding not in POS_ENCODINGS:
        raise ConfigError(
            f"model.coarse.pos_encoding={pos_encoding!r} is not supported; use one of "
            f"{list(POS_ENCODINGS)}"
        )
    if pos_encoding == "every_layer" and config["coarse"].get("layer_type") == "conv":
        raise ConfigError(
            "model.coarse.pos_encoding=every_layer adds the encoding to attention queries and "
            "keys; it needs model.coarse.layer_type=transformer, not conv"
        )


def variant_name(config: Mapping[str, Any]) -> str:
    """`model.variant` when set, else `full` (the paper model)."""
    return str(config.get("variant") or "full")
