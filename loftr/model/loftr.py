"""The LoFTR matcher (docs/original.md#model): backbone, coarse transformer, coarse matching, fine
refinement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from kornia.feature.loftr.utils.fine_matching import FineMatching
from omegaconf import DictConfig
from torch import nn
from torch.profiler import record_function

from loftr.errors import CheckpointError
from loftr.model.activation_checkpointing import CheckpointedStage
from loftr.model.backbone import ResNetFPN_8_2, backbone_trunk, build_backbone
from loftr.model.checkpoint import (
    checkpoint_state_dict,
    read_checkpoint,
    read_state_dict,
    stored_model_config,
    strip_prefix,
)
from loftr.model.coarse_matching import CoarseMatching
from loftr.model.config import checkpoint_model, model_config, normalised_model_config
from loftr.model.fine import (
    TRAIN_MAX_SPARSE_COVERAGE,
    FinePreprocess,
    LazyFineMaps,
    TrainFineMaps,
)
from loftr.model.transformer import LocalFeatureTransformer
from loftr.model.variants import (
    build_feature_transform,
    build_position_encoding,
    shape_kwargs,
)


class LoFTR(nn.Module):
    """Detector-free matching with transformers, trainable and loadable from any LoFTR checkpoint.

    The modules and their state-dict keys are the original's (docs/original.md#state-dict), so
    original, kornia and Lightning checkpoints load with or without the `matcher.` prefix, and
    `kornia.feature.LoFTR` loads this model's `state_dict()` strictly.

    In eval mode without autograd (validation, testing, matching) the same maths runs faster:
    BatchNorm folded into a cached copy of the convolutions, channels-last maps, the fine branch
    computed only around the windows the coarse matches select, fused transformer layers and an
    in-place dual softmax (backbone.py, fine.py, transformer.py, coarse_matching.py). Training,
    or any forward autograd records, runs kornia's module code, except that the fine branch's
    last 3x3 conv is evaluated only on the selected windows (docs/differences.md#15).

    Args:
        config: the `model` node (docs/original.md#config-defaults keys, lower-cased), a DictConfig
        or a mapping. Two
            optional keys tune inference only: `fine_windows_only` (default true: the fine
            branch around the selected windows; false: over the whole map) and `compile`
            (default false: `torch.compile` the backbone trunk and both transformers).
            Two tune training: `fine_train_max_coverage` (default 0.5: above that share of the
            1/2 map in windows, the fine branch's last conv runs dense) and
            `checkpoint_activations` (default false: the backbone stages and transformer layers
            recompute their activations in backward).
        validated: `config` has passed `loftr.model.config.validate_model_config` already (a
            training run's `loftr.config.validate.validate`), so it is not checked again.

    Example:
        >>> from hydra import compose, initialize_config_dir
        >>> matcher = LoFTR(cfg.model).eval()                              # doctest: +SKIP
        >>> data = {"image0": torch.rand(1, 1, 480, 640), "image1": torch.rand(1, 1, 480, 640)}
        >>> matcher(data); data["mkpts0_f"].shape                          # doctest: +SKIP
        torch.Size([M, 2])
    """

    def __init__(self, config: Mapping[str, Any] | DictConfig, *, validated: bool = False) -> None:
        super().__init__()
        # a LoFTR built by a user (or from a checkpoint) checks its config; a training run has
        # checked it once already and passes `validated=True`
        self.config = normalised_model_config(config) if validated else model_config(config)
        cfg = self.config
        self.backbone = build_backbone(cfg)
        # the paper modules, or a Table 6 ablation variant chosen by model keys (variants.py)
        self.pos_encoding = build_position_encoding(cfg)
        self.loftr_coarse = build_feature_transform(cfg, "coarse")
        self.coarse_matching = CoarseMatching(cfg["match_coarse"])
        self.fine_preprocess = FinePreprocess(cfg)
        self.loftr_fine = build_feature_transform(cfg, "fine")
        self.fine_matching = FineMatching()
        # Inference speed-ups (eval mode without autograd; same results, see backbone.py and
        # fine.py): the fine branch only around the selected windows, and torch.compile.
        self.fine_windows_only = bool(cfg.get("fine_windows_only", True))
        # Training: the fine branch after its BatchNorm only over the windows while they cover
        # at most this share of the 1/2-resolution map (docs/differences.md#15); 0: always dense.
        if isinstance(self.backbone, ResNetFPN_8_2):
            self.backbone.train_max_sparse_coverage = float(
                cfg.get("fine_train_max_coverage", TRAIN_MAX_SPARSE_COVERAGE)
            )
        self.compile = bool(cfg.get("compile", False))
        self._compiled: dict[str, Any] = {}  # plain attribute: not in the state dict
        self.last_fine_plan: dict[str, Any] | None = None
        # Training memory (activation_checkpointing.py): the backbone stages and the transformer
        # layers keep only their inputs for backward and recompute the rest.
        self.checkpoint_activations = bool(cfg.get("checkpoint_activations", False))
        for part in self.modules():
            if isinstance(part, (CheckpointedStage, LocalFeatureTransformer)):
                part.checkpoint_activations = self.checkpoint_activations

    def forward(self, data: dict[str, Any]) -> None:
        """Match `image0` against `image1`, writing the original's output keys into `data`.

        Args:
            data: the batch, updated in place. Reads `image0`, `image1` (N, 1, H, W) grey in
                [0, 1] with H and W multiples of the coarse stride; optional `mask0`, `mask1`
                (N, H/8, W/8) bool coarse masks, True where valid (image-resolution masks as
                kornia takes them are converted to coarse ones in place); optional `scale0`,
                `scale1` (N, 2) = [w_orig / w_in, h_orig / h_in]; in training the ground truth
                `spv_b_ids`, `spv_i_ids`, `spv_j_ids` for the fine-window padding.

        Writes:
            `bs`, `hw0_i`, `hw1_i`, `hw0_c`, `hw1_c`, `hw0_f`, `hw1_f`; `conf_matrix` (N, L, S)
            and, for sparse OT, `conf_matrix_with_bin` (N, L+1, S+1); `b_ids`, `i_ids`, `j_ids`,
            `gt_mask` (M',) for every fine window (predictions, then ground-truth pads in
            training); `m_bids`, `mconf` (M,), `mkpts0_c`, `mkpts1_c`, `mkpts0_f`, `mkpts1_f`
            (M, 2) in original image pixels; `expec_f` (M', 3) = normalised offset and std.
        """
        stride_c, stride_f = self.config["resolution"]
        image0, image1 = data["image0"], data["image1"]
        for name, image in (("image0", image0), ("image1", image1)):
            if image.dim() != 4 or image.shape[1] != 1:
                raise ValueError(f"{name} must be (N, 1, H, W) grey; got {tuple(image.shape)}")
            if image.shape[2] % stride_c or image.shape[3] % stride_c:
                raise ValueError(
                    f"{name} is {image.shape[2]}x{image.shape[3]}: height and width must be "
                    f"multiples of {stride_c} (resize or pad the input)"
                )
        data.update(
            bs=image0.shape[0],
            hw0_i=image0.shape[2:],
            hw1_i=image1.shape[2:],
            stride_c=stride_c,
            stride_f=stride_f,
        )
        for side in ("0", "1"):
            mask = data.get(f"mask{side}")
            if mask is not None and mask.shape[-2:] == data[f"hw{side}_i"]:
                data[f"mask{side}"] = mask[..., ::stride_c, ::stride_c].bool()

        with record_function("loftr/backbone"):
            # one backbone pass for both images (docs/original.md#model-flow)
            if image0.shape == image1.shape:
                feats_c, feats_f = self._backbone(torch.cat([image0, image1], dim=0))
                feat_c0, feat_c1 = feats_c.split(data["bs"])
                feat_f0, feat_f1 = feats_f.split(data["bs"])
            else:
                feat_c0, feat_f0 = self._backbone(image0)
                feat_c1, feat_f1 = self._backbone(image1)
        data.update(
            hw0_c=feat_c0.shape[2:],
            hw1_c=feat_c1.shape[2:],
            hw0_f=feat_f0.shape[2:],
            hw1_f=feat_f1.shape[2:],
        )

        # position encoding, then (N, C, h, w) -> (N, hw, C) token sequences
        feat_c0 = self.pos_encoding(feat_c0).flatten(2).transpose(1, 2).contiguous()
        feat_c1 = self.pos_encoding(feat_c1).flatten(2).transpose(1, 2).contiguous()
        mask_c0 = mask_c1 = None
        if data.get("mask0") is not None and data.get("mask1") is not None:
            mask_c0, mask_c1 = data["mask0"].flatten(-2), data["mask1"].flatten(-2)
        shapes = shape_kwargs(self.loftr_coarse, data["hw0_c"], data["hw1_c"])
        with record_function("loftr/coarse_transformer"):
            loftr_coarse = self._maybe_compiled("loftr_coarse")
            feat_c0, feat_c1 = loftr_coarse(feat_c0, feat_c1, mask_c0, mask_c1, **shapes)

        with record_function("loftr/coarse_matching"):
            self.coarse_matching(feat_c0, feat_c1, data, mask_c0=mask_c0, mask_c1=mask_c1)

        with record_function("loftr/fine_preprocess"):  # includes the lazy fine branch
            feat_f0_win, feat_f1_win = self.fine_preprocess(
                feat_f0, feat_f1, feat_c0, feat_c1, data
            )
        # how the fine branch was computed (sparse or dense, coverages), for the benchmarks
        self.last_fine_plan = getattr(feat_f0, "last_plan", None)
        with record_function("loftr/fine_transformer"):
            if feat_f0_win.shape[0] > 0:
                loftr_fine = self._maybe_compiled("loftr_fine")
                feat_f0_win, feat_f1_win = loftr_fine(feat_f0_win, feat_f1_win)
        with record_function("loftr/fine_matching"):
            self.fine_matching(feat_f0_win, feat_f1_win, data)

    def _backbone(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | LazyFineMaps | TrainFineMaps]:
        """Coarse and fine maps of `(B, 1, H, W)` images; the fine ones lazily when that applies.

        In eval without autograd the fine maps are `LazyFineMaps` (computed only around the
        windows the coarse matches select) when `fine_windows_only`; otherwise (training, or
        autograd recording) `TrainFineMaps`, whose part after the last BatchNorm is computed
        only where the windows read it.
        """
        if isinstance(self.backbone, ResNetFPN_8_2):
            if self.backbone.fast_path_applies():
                trunk = self._maybe_compiled("backbone_trunk") if self.compile else None
                coarse, fine = self.backbone.forward_lazy(images, trunk=trunk)
                return coarse, (fine if self.fine_windows_only else fine.dense())
            return self.backbone.forward_windowed(images)
        coarse, fine_map = self.backbone(images)
        return coarse, fine_map

    def _maybe_compiled(self, name: str) -> Any:
        """`torch.compile` of a part when `compile` is on (built on first use), else the part."""
        if not self.compile:
            return backbone_trunk if name == "backbone_trunk" else getattr(self, name)
        if name not in self._compiled:
            target = backbone_trunk if name == "backbone_trunk" else getattr(self, name)
            self._compiled[name] = torch.compile(target, dynamic=name == "loftr_fine")
        if name != "backbone_trunk" and hasattr(getattr(self, name), "_fused_weights"):
            getattr(self, name)._fused_weights()  # filled before tracing: no guard flips later
        return self._compiled[name]

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load original, kornia, Lightning or our weights, with or without the `matcher.` prefix.

        Raises:
            CheckpointError: when `strict` and the keys or shapes differ (`check_fits`).
        """
        state_dict = strip_prefix(state_dict)
        if strict:
            self.check_fits(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def check_fits(
        self, state_dict: Mapping[str, Any], source: str | Path = "the checkpoint"
    ) -> None:
        """Raise CheckpointError naming the first keys that are missing, extra or of other shapes.

        Args:
            state_dict: weights without the `matcher.` prefix.
            source: what the weights come from, for the message (a checkpoint path).
        """
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{source} does not fit this LoFTR config: missing keys {_preview(missing)}, "
                f"unexpected keys {_preview(unexpected)} (check model.resolution, "
                "model.match_coarse.match_type and the widths)"
            )
        wrong = [
            f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
            for k, v in state_dict.items()
            if tuple(v.shape) != tuple(expected[k].shape)
        ]
        if wrong:
            raise CheckpointError(
                f"{source} has other shapes than this LoFTR config (checkpoint vs model): "
                f"{_preview(wrong, limit=3)} (check model.resnetfpn.block_dims and the widths)"
            )

    def load_weights(self, path: str | Path) -> LoFTR:
        """Load a checkpoint file: a Lightning `.ckpt`, an original or kornia one, or a state dict.

        The file goes through the one reader (`loftr.model.checkpoint.read_checkpoint`).
        """
        self._load_fitting(read_state_dict(path), f"checkpoint {path}")
        return self

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        model: DictConfig,
        overrides: Sequence[str] = (),
        use_stored_config: bool = True,
    ) -> LoFTR:
        """A matcher built and loaded from a checkpoint file, every fault named in one line.

        Args:
            path: the checkpoint file.
            model: the composed `model` node, for files without a stored config and for the
                values of the command line's `model.*` overrides.
            overrides: the command line's overrides (`loftr.model.config.checkpoint_model`).
            use_stored_config: build the model a checkpoint of ours stores (`model_from_ckpt`).
        """
        content = read_checkpoint(path)
        stored = stored_model_config(content) if use_stored_config else None
        matcher = cls(checkpoint_model(model, stored, overrides))
        matcher._load_fitting(checkpoint_state_dict(content, path), f"checkpoint {path}")
        return matcher

    def _load_fitting(self, state_dict: Mapping[str, Any], source: str) -> None:
        self.check_fits(state_dict, source)
        nn.Module.load_state_dict(self, state_dict)


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_counts(config: Mapping[str, Any]) -> dict[str, int]:
    """Trainable parameters of the model built from `config`, per top-level part and in total.

    Args:
        config: a `model` node (DictConfig or mapping).

    Returns:
        `{"backbone": ..., "loftr_coarse": ..., "coarse_matching": ..., "fine_preprocess": ...,
        "loftr_fine": ..., "total": ...}`.
    """
    model = LoFTR(config)
    counts = {name: count_parameters(child) for name, child in model.named_children()}
    counts = {k: v for k, v in counts.items() if k not in ("pos_encoding", "fine_matching")}
    counts["total"] = count_parameters(model)
    return counts


__all__ = ["LoFTR", "count_parameters", "parameter_counts", "read_state_dict", "strip_prefix"]
