"""The LoFTR transformer (SPEC §2.4): kornia's layers, with a mask-safe full attention."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from kornia.feature.loftr.loftr_module.transformer import (
    LocalFeatureTransformer as _KorniaLocalFeatureTransformer,
)
from torch import nn


class MaskedFullAttention(nn.Module):
    """Softmax attention over the source axis through `scaled_dot_product_attention`.

    Pairs where the query or the key is padded get the dtype's lowest finite score instead of
    -inf (DESIGN "differs" 3): a padded query row then stays finite in fp16/bf16 instead of
    turning into NaN, and valid queries never attend to padded keys.
    """

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        q_mask: torch.Tensor | None = None,
        kv_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            queries: (N, L, H, D).
            keys: (N, S, H, D).
            values: (N, S, H, D).
            q_mask: (N, L) bool, True for valid positions, or None.
            kv_mask: (N, S) bool, True for valid positions, or None.

        Returns:
            (N, L, H, D) messages.
        """
        q, k, v = (x.transpose(1, 2) for x in (queries, keys, values))  # (N, H, *, D)
        bias = None
        if q_mask is not None and kv_mask is not None:
            valid = q_mask.bool()[:, None, :, None] & kv_mask.bool()[:, None, None, :]
            bias = torch.zeros(valid.shape, dtype=q.dtype, device=q.device)
            bias.masked_fill_(~valid, torch.finfo(q.dtype).min)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return out.transpose(1, 2).contiguous()


class LocalFeatureTransformer(_KorniaLocalFeatureTransformer):
    """Self/cross attention layers, the cross update of feat1 reading the updated feat0 (SPEC §2.4).

    kornia's layers compute the original's maths and state-dict layout; `attention: full` uses
    `MaskedFullAttention`, which has no parameters, so checkpoints are unaffected.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        if config["attention"] == "full":
            for layer in self.layers:
                layer.attention = MaskedFullAttention()
