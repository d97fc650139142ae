"""The LoFTR transformer (docs/original.md#transformer): kornia's layers, a mask-safe full
attention, a fast eval path.

The layers are kornia's `LoFTREncoderLayer`s, so parameters and state-dict keys are the
original's. Training (or any forward that autograd records) runs kornia's layer code, the linear
attention recomputing its intermediates in backward instead of keeping them
(`RecomputedLinearAttention`). Eval without autograd runs the same maths with less work:

- a 'self' layer transforms both images in one batch when their token counts agree (the layer's
  weights are shared, docs/original.md#transformer, and every operation is per sample);
- many short sequences (the M fine windows) go through all layers a cache-sized group at a
  time, samples being independent;
- the q, k, v projections of a self layer are one matrix product (k, v of a cross layer another),
  with the concatenated weights cached until a parameter changes;
- linear attention reduces over the sequence per head with batched products of the true
  `D x D` blocks, instead of a dense `(H D) x (H D)` product whose off-diagonal blocks are thrown
  away.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from kornia.feature.loftr.loftr_module.linear_attention import LinearAttention
from kornia.feature.loftr.loftr_module.transformer import (
    LocalFeatureTransformer as _KorniaLocalFeatureTransformer,
)
from kornia.feature.loftr.loftr_module.transformer import LoFTREncoderLayer
from torch import nn

from loftr.model.activation_checkpointing import checkpointed, checkpoints_apply

# docs/original.md#transformer: Z = 1 / (phi(Q) . sum_s phi(K_s) + eps)
LINEAR_ATTENTION_EPS = 1e-6
# Tokens per group when many short sequences (the fine windows) go through the layers: small
# enough that a group's activations stay in cache through all layers (and below glibc's 32 MB
# mmap threshold, above which every temporary costs fresh zeroed pages).
TOKENS_PER_CHUNK = 2048


class MaskedFullAttention(nn.Module):
    """Softmax attention over the source axis through `scaled_dot_product_attention`.

    Pairs where the query or the key is padded get the dtype's lowest finite score instead of
    -inf (docs/differences.md#3): a padded query row then stays finite in fp16/bf16 instead of
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


def linear_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    q_mask: torch.Tensor | None = None,
    kv_mask: torch.Tensor | None = None,
    eps: float = LINEAR_ATTENTION_EPS,
) -> torch.Tensor:
    """Linear attention with phi(u) = elu(u) + 1, per head (docs/original.md#transformer).

    `out = phi(Q) (phi(K)^T V/S) / (phi(Q) . sum_s phi(K_s) + eps) * S`, with padded queries
    (`q_mask` False) giving 0 and padded keys and values (`kv_mask` False) left out.

    Args:
        queries: `(N, L, H, D)`.
        keys: `(N, S, H, D)`.
        values: `(N, S, H, V)`.
        q_mask: `(N, L)` bool, True for valid queries, or None.
        kv_mask: `(N, S)` bool, True for valid keys, or None.
        eps: the normaliser's epsilon.

    Returns:
        `(N, L, H, V)` messages, contiguous.
    """
    n, length, heads, dim = queries.shape
    s_len, dim_v = keys.shape[1], values.shape[3]
    # head-major copies, (N H, L, D) and (N H, D, S), made first so that phi runs on contiguous
    # memory (on the strided slices of a fused projection it is several times slower)
    q_h = queries.permute(0, 2, 1, 3).clone(memory_format=torch.contiguous_format)
    k_h = keys.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)
    F.elu(q_h, inplace=True).add_(1)
    F.elu(k_h, inplace=True).add_(1)
    if q_mask is not None:
        q_h.mul_(q_mask[:, None, :, None].to(q_h.dtype))
    if kv_mask is not None:
        k_h.mul_(kv_mask[:, None, None, :].to(k_h.dtype))
        values = values * kv_mask[:, :, None, None].to(values.dtype)
    values = values / s_len  # the original's fp16 guard, kept for identical rounding
    q_h = q_h.view(n * heads, length, dim)
    k_h = k_h.view(n * heads, dim, s_len)
    v_h = values.permute(0, 2, 1, 3).reshape(n * heads, s_len, dim_v)
    kv = torch.bmm(k_h, v_h)  # (N H, D, V)
    denominator = torch.bmm(q_h, k_h.sum(dim=2, keepdim=True)).add_(eps)  # (N H, L, 1)
    if q_mask is not None:
        # a padded query has Q = 0: divide by 1, not eps, so fp16 gives 0 rather than nan
        valid = q_mask.bool()[:, None, :].expand(n, heads, length).reshape(n * heads, length, 1)
        denominator = torch.where(valid, denominator, torch.ones_like(denominator))
    out = torch.bmm(q_h, kv).div_(denominator).mul_(s_len)  # (N H, L, V)
    return out.view(n, heads, length, dim_v).transpose(1, 2).contiguous()


class RecomputedLinearAttention(LinearAttention):
    """kornia's linear attention, whose intermediates are recomputed in backward, not kept.

    Between the projections and the merge, the attention keeps about seven token-sized tensors
    for backward (phi(Q), phi(K), the scaled values, their products, the normaliser); it has no
    parameters and costs a few elementwise passes and small products, so backward recomputes them
    from its three inputs instead (activation checkpointing of this part alone). The recomputation
    runs the same operations on the same inputs, so loss and gradients are bit-identical; at
    640x480 it keeps 0.45 GiB less for a training step (docs/differences.md#16). `recompute` is
    off while `model.checkpoint_activations` checkpoints whole layers. Under `torch.compile`
    (`model.compile=true`) the attention is traced as it is: the compiler chooses itself what to
    keep and what to recompute for backward, and dynamo cannot trace this nested checkpoint.
    """

    recompute = True

    def forward(  # type: ignore[override]
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        q_mask: torch.Tensor | None = None,
        kv_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if checkpoints_apply(self.recompute) and not torch.compiler.is_compiling():
            return checkpointed(self, super().forward, queries, keys, values, q_mask, kv_mask)
        return super().forward(queries, keys, values, q_mask, kv_mask)


class LocalFeatureTransformer(_KorniaLocalFeatureTransformer):
    """Self/cross attention layers, the cross update of feat1 reading the updated feat0
    (docs/original.md#transformer).

    kornia's layers compute the original's maths and state-dict layout; `attention: full` uses
    `MaskedFullAttention`, which has no parameters, so checkpoints are unaffected. In eval
    without autograd the layers run through `_fast_layer` (module docstring).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        for layer in self.layers:
            if config["attention"] == "full":
                layer.attention = MaskedFullAttention()
            else:
                layer.attention = RecomputedLinearAttention(layer.attention.eps)
        # set by LoFTR from `model.checkpoint_activations`: each layer keeps only its inputs
        self.checkpoint_activations = False
        # plain attributes: the fused weights are a cache, not state
        self._fused: list[dict[str, torch.Tensor]] | None = None
        self._fused_key: tuple | None = None

    @property
    def checkpoint_activations(self) -> bool:
        """Whether every layer call is checkpointed (`model.checkpoint_activations`)."""
        return self._checkpoint_layers

    @checkpoint_activations.setter
    def checkpoint_activations(self, enabled: bool) -> None:
        self._checkpoint_layers = bool(enabled)
        for layer in self.layers:
            if isinstance(layer.attention, RecomputedLinearAttention):
                # a checkpointed layer recomputes its attention anyway
                layer.attention.recompute = not enabled

    def forward(
        self,
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        mask0: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform both images' tokens.

        Args:
            feat0: `(N, L, C)` tokens of image 0.
            feat1: `(N, S, C)` tokens of image 1.
            mask0: `(N, L)` bool, True where valid, or None.
            mask1: `(N, S)` bool or None.

        Returns:
            The transformed `(N, L, C)` and `(N, S, C)` tokens.
        """
        if checkpoints_apply(self.checkpoint_activations):
            return self._checkpointed_stack(feat0, feat1, mask0, mask1)
        if self.training or torch.is_grad_enabled():
            return super().forward(feat0, feat1, mask0, mask1)
        if self.d_model != feat0.shape[2]:
            raise ValueError(
                f"tokens have {feat0.shape[2]} channels; this transformer has d_model "
                f"{self.d_model}"
            )
        fused = self._fused_weights()
        batch, length = feat0.shape[:2]
        per_chunk = max(1, TOKENS_PER_CHUNK // max(length, feat1.shape[1]))
        if batch > per_chunk:
            # samples never interact: run the whole stack on cache-sized groups of them
            outputs = [
                self._fast_stack(
                    fused,
                    feat0[start : start + per_chunk],
                    feat1[start : start + per_chunk],
                    None if mask0 is None else mask0[start : start + per_chunk],
                    None if mask1 is None else mask1[start : start + per_chunk],
                )
                for start in range(0, batch, per_chunk)
            ]
            return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])
        return self._fast_stack(fused, feat0, feat1, mask0, mask1)

    def _checkpointed_stack(
        self,
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        mask0: torch.Tensor | None,
        mask1: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """kornia's layer loop, every layer call checkpointed (autograd recording)."""
        if self.d_model != feat0.shape[2]:
            raise ValueError(
                f"tokens have {feat0.shape[2]} channels; this transformer has d_model "
                f"{self.d_model}"
            )
        for layer, name in zip(self.layers, self.layer_names, strict=True):
            if name == "self":
                feat0 = checkpointed(layer, layer, feat0, feat0, mask0, mask0)
                feat1 = checkpointed(layer, layer, feat1, feat1, mask1, mask1)
            elif name == "cross":
                feat0 = checkpointed(layer, layer, feat0, feat1, mask0, mask1)
                feat1 = checkpointed(layer, layer, feat1, feat0, mask1, mask0)
            else:
                raise KeyError(f"layer name {name!r}: use 'self' or 'cross'")
        return feat0, feat1

    def _fast_stack(
        self,
        fused: list[dict[str, torch.Tensor]],
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        mask0: torch.Tensor | None,
        mask1: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer on one group of samples (eval, no autograd)."""
        batch = feat0.shape[0]
        joint = feat0.shape == feat1.shape and (mask0 is None) == (mask1 is None)
        for layer, name, weights in zip(self.layers, self.layer_names, fused, strict=True):
            if name == "self" and joint:
                both = torch.cat([feat0, feat1])
                mask = None if mask0 is None else torch.cat([mask0, mask1])  # type: ignore[list-item]
                feat0, feat1 = _fast_layer(layer, weights, both, None, mask, mask).split(batch)
            elif name == "self":
                feat0 = _fast_layer(layer, weights, feat0, None, mask0, mask0)
                feat1 = _fast_layer(layer, weights, feat1, None, mask1, mask1)
            elif name == "cross":
                feat0 = _fast_layer(layer, weights, feat0, feat1, mask0, mask1)
                feat1 = _fast_layer(layer, weights, feat1, feat0, mask1, mask0)
            else:
                raise KeyError(f"layer name {name!r}: use 'self' or 'cross'")
        return feat0, feat1

    @torch.compiler.disable  # a cache keyed by tensor versions: plain Python, not traced
    def _fused_weights(self) -> list[dict[str, torch.Tensor]]:
        """Per layer: `qkv` `(3C, C)` and `kv` `(2C, C)` projection weights, rebuilt on change."""
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())
        if self._fused is None or key != self._fused_key:
            with torch.no_grad():
                fused = []
                for layer in self.layers:
                    q, k, v = layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight
                    fused.append(
                        {"qkv": torch.cat([q, k, v]).detach(), "kv": torch.cat([k, v]).detach()}
                    )
            self._fused, self._fused_key = fused, key
        return self._fused


def _fast_layer(
    layer: LoFTREncoderLayer,
    weights: dict[str, torch.Tensor],
    x: torch.Tensor,
    source: torch.Tensor | None,
    x_mask: torch.Tensor | None,
    source_mask: torch.Tensor | None,
) -> torch.Tensor:
    """One encoder layer, `x + norm2(mlp([x, norm1(merge(attention))]))`
    (docs/original.md#transformer).

    Args:
        layer: the kornia layer holding the parameters.
        weights: its `_fused_weights` entry.
        x: `(N, L, C)` queries' tokens.
        source: `(N, S, C)` keys' and values' tokens, or None for a self layer (`x`).
        x_mask: `(N, L)` bool or None.
        source_mask: `(N, S)` bool or None.
    """
    n, length, channels = x.shape
    heads, dim = layer.nhead, layer.dim
    if source is None:
        q, k, v = F.linear(x, weights["qkv"]).split(channels, dim=2)
        source_len = length
    else:
        q = F.linear(x, layer.q_proj.weight)
        k, v = F.linear(source, weights["kv"]).split(channels, dim=2)
        source_len = source.shape[1]
    q = q.reshape(n, length, heads, dim)
    k = k.reshape(n, source_len, heads, dim)
    v = v.reshape(n, source_len, heads, dim)
    if isinstance(layer.attention, LinearAttention):
        message = linear_attention(q, k, v, x_mask, source_mask, eps=layer.attention.eps)
    else:
        message = layer.attention(q, k, v, q_mask=x_mask, kv_mask=source_mask)
    message = layer.norm1(F.linear(message.reshape(n, length, channels), layer.merge.weight))
    hidden = F.linear(torch.cat([x, message.to(x.dtype)], dim=2), layer.mlp[0].weight).relu_()
    out = layer.norm2(F.linear(hidden, layer.mlp[2].weight))
    return out.add_(x) if out.dtype == torch.promote_types(out.dtype, x.dtype) else out + x
