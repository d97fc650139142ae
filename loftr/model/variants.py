"""The paper's ablation variants of LoFTR (docs/original.md#ablation, Table 6), selected by `model`
keys.

Three optional keys of the `model` node pick a variant; when absent the paper model is built, so
original, kornia and our own checkpoints need none of them:

- `model.coarse.layer_type`, `model.fine.layer_type`: `transformer` (the LoFTR module,
docs/original.md#transformer) or `conv`: one residual convolution block per entry of `layer_names`,
each image on its
  own. A block has exactly the parameters of a LoFTR encoder layer (10 C^2 + 4 C), which is
  the "comparable parameter count" of Table 6, row 1.
- `model.coarse.pos_encoding`: `input` (the paper model: the sine encoding is added once to the
  backbone's coarse map, docs/original.md#position-encoding) or `every_layer` (DETR-style, Table 6
  row 3: the encoding is added to the queries and keys of every coarse layer, and not to the
  features).

The other Table 6 rows need no code: `model.resolution: [16, 4]` (row 2) and longer
`layer_names` (row 4, Nc = 8, Nf = 2) are plain config (conf/model/loftr_*.yaml).
`model.variant` names the variant for tables and dashboards; it does not change the model.
The keys are checked in `loftr.model.config`; `loftr.model.parameter_counts` counts a variant.

Example:
    >>> from loftr.model import LoFTR
    >>> cfg = OmegaConf.load("conf/model/loftr.yaml")                # doctest: +SKIP
    >>> cfg.coarse.layer_type = cfg.fine.layer_type = "conv"          # doctest: +SKIP
    >>> LoFTR(cfg)                                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from kornia.feature.loftr.utils.position_encoding import PositionEncodingSine
from torch import nn

from loftr.model.transformer import LocalFeatureTransformer


def build_position_encoding(config: Mapping[str, Any]) -> nn.Module:
    """The encoding added once to the coarse backbone map (docs/original.md#position-encoding), or
    an identity when the coarse layers add it themselves (`model.coarse.pos_encoding: every_layer`).

    The sine encoding grows past 256 x 256 coarse cells when an input needs it
    (docs/differences.md#4); its buffer is not persistent, so neither choice changes the state dict.
    `config` has passed `loftr.model.config.validate_model_config` (the variant keys included).
    """
    if (config["coarse"].get("pos_encoding") or "input") == "every_layer":
        return nn.Identity()
    return PositionEncodingSine(
        config["coarse"]["d_model"], temp_bug_fix=config["coarse"]["temp_bug_fix"]
    )


def build_feature_transform(config: Mapping[str, Any], level: str) -> nn.Module:
    """The module that transforms the `level` ("coarse" or "fine") features of both images.

    Returns the LoFTR transformer (docs/original.md#transformer) for the paper model,
    `ConvFeatureStack` for `layer_type: conv`, and `EveryLayerPositionTransformer` for the coarse
    level with `pos_encoding: every_layer`. All take `(feat0, feat1, mask0, mask1)` token sequences
    `(N, L, C)`, `(N, S, C)` and return the transformed pair; those with `takes_shapes = True`
    also need the maps' `(h, w)` as `hw0=`, `hw1=` (see `shape_kwargs`).
    """
    node = config[level]
    if (node.get("layer_type") or "transformer") == "conv":
        return ConvFeatureStack(node)
    if level == "coarse" and (node.get("pos_encoding") or "input") == "every_layer":
        return EveryLayerPositionTransformer(node)
    return LocalFeatureTransformer(node)


def shape_kwargs(module: nn.Module, hw0: Any, hw1: Any) -> dict[str, Any]:
    """`{"hw0": hw0, "hw1": hw1}` for a module that needs the maps' shapes, else `{}`."""
    return {"hw0": tuple(hw0), "hw1": tuple(hw1)} if getattr(module, "takes_shapes", False) else {}


# --------------------------------------------------------------------------------------------
# Table 6, row 1: convolutions instead of the LoFTR module
# --------------------------------------------------------------------------------------------


def _channel_layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the channels of an `(N, C, h, w)` map, as a transformer normalises tokens."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvBlock(nn.Module):
    """`x + norm2(conv1x1(relu(norm1(conv3x3(x)))))` on one image's `(N, C, h, w)` map.

    Parameters: 9 C^2 (3x3) + C^2 (1x1) + 4 C (two LayerNorms) = 10 C^2 + 4 C, exactly those of a
    LoFTR encoder layer (4 C^2 projections + 6 C^2 MLP + 4 C norms, docs/original.md#transformer).
    Padded cells (mask False) are zeroed before the 3x3 convolution, so they never reach valid
    cells, as masked keys never reach valid queries in attention.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(d_model, d_model, 3, padding=1, bias=False)
        self.norm1 = nn.LayerNorm(d_model)
        self.conv1 = nn.Conv2d(d_model, d_model, 1, bias=False)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x `(N, C, h, w)`; mask `(N, 1, h, w)` bool, True where valid, or None."""
        inp = x if mask is None else x * mask.to(x.dtype)
        y = F.relu(_channel_layer_norm(self.conv3(inp), self.norm1))
        return x + _channel_layer_norm(self.conv1(y), self.norm2)


class ConvFeatureStack(nn.Module):
    """One `ConvBlock` per entry of `layer_names`, shared by both images, no cross-image step.

    The Table 6 row-1 ablation (docs/original.md#ablation): the same parameter count as the LoFTR
    module it replaces, but a local receptive field and no attention between the two images.

    Args:
        config: the level's node (`d_model`, `layer_names`); `self`/`cross` only count blocks.
    """

    takes_shapes = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.d_model = int(config["d_model"])
        self.layers = nn.ModuleList(ConvBlock(self.d_model) for _ in config["layer_names"])
        # the transformer's initialisation (docs/original.md#transformer)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @staticmethod
    def _shape(tokens: torch.Tensor, hw: tuple[int, int] | None) -> tuple[int, int]:
        if hw is not None:
            return int(hw[0]), int(hw[1])
        side = math.isqrt(tokens.shape[1])  # fine windows are square (W x W)
        if side * side != tokens.shape[1]:
            raise ValueError(
                f"{tokens.shape[1]} tokens are not a square window; pass hw0= and hw1="
            )
        return side, side

    def _run(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def forward(
        self,
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        mask0: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
        hw0: tuple[int, int] | None = None,
        hw1: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform each image's tokens with the shared convolution stack.

        Args:
            feat0: `(N, L, C)` tokens of image 0, row-major over an `(h0, w0)` map.
            feat1: `(N, S, C)` tokens of image 1.
            mask0: `(N, L)` bool, True where valid, or None.
            mask1: `(N, S)` bool or None.
            hw0: `(h0, w0)`; None for a square window (the fine level, `W x W`).
            hw1: `(h1, w1)`; None for a square window.

        Returns:
            The transformed `(N, L, C)` and `(N, S, C)` tokens.
        """
        if feat0.shape[2] != self.d_model:
            raise ValueError(f"features have {feat0.shape[2]} channels; expected {self.d_model}")
        (h0, w0), (h1, w1) = self._shape(feat0, hw0), self._shape(feat1, hw1)

        def to_map(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
            return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)

        def to_mask(m: torch.Tensor | None, h: int, w: int) -> torch.Tensor | None:
            return None if m is None else m.reshape(m.shape[0], 1, h, w)

        n = feat0.shape[0]
        if (h0, w0) == (h1, w1) and (mask0 is None) == (mask1 is None):
            # one pass for both images: every operation is per image, so this is exact
            masks = None if mask0 is None else torch.cat([mask0, mask1])
            out = self._run(
                to_map(torch.cat([feat0, feat1]), h0, w0), to_mask(masks, h0, w0)
            ).flatten(2)
            out0, out1 = out[:n], out[n:]
        else:
            out0 = self._run(to_map(feat0, h0, w0), to_mask(mask0, h0, w0)).flatten(2)
            out1 = self._run(to_map(feat1, h1, w1), to_mask(mask1, h1, w1)).flatten(2)
        return out0.transpose(1, 2).contiguous(), out1.transpose(1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Table 6, row 3: positional encoding at every layer (DETR-style)
# --------------------------------------------------------------------------------------------


def _attend_with_positions(
    layer: nn.Module,
    x: torch.Tensor,
    source: torch.Tensor,
    x_pos: torch.Tensor,
    source_pos: torch.Tensor,
    x_mask: torch.Tensor | None,
    source_mask: torch.Tensor | None,
) -> torch.Tensor:
    """A LoFTR encoder layer (docs/original.md#transformer) whose queries and keys carry the
    positions.

    Queries read `x + x_pos`, keys `source + source_pos`, values `source`; the MLP and the
    residual read `x` without positions, as in DETR's encoder. Same weights as the layer.
    """
    n, nhead, dim = x.shape[0], layer.nhead, layer.dim
    query = layer.q_proj(x + x_pos).view(n, -1, nhead, dim)
    key = layer.k_proj(source + source_pos).view(n, -1, nhead, dim)
    value = layer.v_proj(source).view(n, -1, nhead, dim)
    message = layer.attention(query, key, value, q_mask=x_mask, kv_mask=source_mask)
    message = layer.norm1(layer.merge(message.reshape(n, -1, nhead * dim)))
    message = layer.norm2(layer.mlp(torch.cat([x, message], dim=2)))
    return x + message


class EveryLayerPositionTransformer(LocalFeatureTransformer):
    """The coarse LoFTR module with the sine encoding in every layer's queries and keys.

    Table 6 row 3 (docs/original.md#ablation); the paper model adds the encoding once, to the
    backbone output (docs/original.md#position-encoding). Parameters and state-dict keys are those
    of the paper's coarse transformer.

    Args:
        config: the coarse node (`d_model`, `nhead`, `layer_names`, `attention`,
            `temp_bug_fix`).
    """

    takes_shapes = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(dict(config))
        self.position = PositionEncodingSine(config["d_model"], temp_bug_fix=config["temp_bug_fix"])

    def _positions(self, feat: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """`(1, h*w, C)` encodings of a row-major `(h, w)` token grid."""
        zeros = feat.new_zeros(1, feat.shape[2], int(hw[0]), int(hw[1]))
        return self.position(zeros).flatten(2).transpose(1, 2)

    def forward(  # type: ignore[override]
        self,
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        mask0: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
        hw0: tuple[int, int] | None = None,
        hw1: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Self and cross layers as in the paper model, feat1's cross update reading the updated
        feat0 (docs/original.md#transformer), with positions in every query and key.

        Args:
            feat0: `(N, L, C)` coarse tokens of image 0, without positional encoding.
            feat1: `(N, S, C)` coarse tokens of image 1.
            mask0: `(N, L)` bool, True where valid, or None.
            mask1: `(N, S)` bool or None.
            hw0: the coarse map shape `(h0, w0)` of image 0 (required).
            hw1: the coarse map shape `(h1, w1)` of image 1 (required).

        Returns:
            The transformed `(N, L, C)` and `(N, S, C)` tokens.
        """
        if hw0 is None or hw1 is None:
            raise ValueError("EveryLayerPositionTransformer needs the coarse shapes hw0=, hw1=")
        pos0, pos1 = self._positions(feat0, hw0), self._positions(feat1, hw1)
        for layer, name in zip(self.layers, self.layer_names, strict=True):
            if name == "self":
                feat0 = _attend_with_positions(layer, feat0, feat0, pos0, pos0, mask0, mask0)
                feat1 = _attend_with_positions(layer, feat1, feat1, pos1, pos1, mask1, mask1)
            else:  # cross
                feat0 = _attend_with_positions(layer, feat0, feat1, pos0, pos1, mask0, mask1)
                feat1 = _attend_with_positions(layer, feat1, feat0, pos1, pos0, mask1, mask0)
        return feat0, feat1
