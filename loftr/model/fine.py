"""Fine-level windows (docs/original.md#fine-preprocess), optionally computed only where the coarse
matches need them.

`FinePreprocess` crops a `W x W` window (W = 5) of the 1/2-resolution map around every selected
coarse cell of each image and merges it with the cell's transformed coarse feature. In eval the
backbone can hand over `LazyFineMaps` instead of the fine maps: the last FPN branch
(`layer1_outconv2`: a 3x3 conv 196->196, BatchNorm, LeakyReLU, a 3x3 conv 196->128, over the
whole H/2 x W/2 map) is then evaluated only on the pixels the windows read, and on the pixels
those depend on, as im2col matrix products. The result equals the full computation up to float
rounding; where the windows cover most of the map the dense convolution is cheaper and is used.

In training `TrainFineMaps` does the same for the part of that branch that comes after its
BatchNorm (the LeakyReLU and the last 3x3 conv), with gradients (docs/differences.md#15).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from kornia.feature.loftr.loftr_module.fine_preprocess import (
    FinePreprocess as _KorniaFinePreprocess,
)
from kornia.feature.loftr.loftr_module.fine_preprocess import _unfold_at
from torch import nn

# Above this share of the map's pixels, a convolution runs densely (oneDNN over the whole map)
# rather than as gathered matrix products: the products run at about 85 % of the dense
# convolution's speed and gathering the 3x3 neighbourhoods adds about 15 % (measured at
# 640x480 on this project's CPUs), so the sparse form pays below about 0.75 of the map.
MAX_SPARSE_COVERAGE = 0.7
# In training, above this share of the map's pixels in the windows (repeats included) the last
# fine conv runs densely: the windows' (W + 2)^2 patches convolved as a batch cost about as much,
# forward and backward, as the dense conv at a share of 0.45-0.6 (paper widths, 640x480, these
# CPUs).
TRAIN_MAX_SPARSE_COVERAGE = 0.5
# pixels per gathered im2col block: small enough to stay in cache, large enough for the GEMM
SPARSE_CHUNK = 4096


class _BatchViews(abc.ABC):
    """Views of one backbone batch, for fine maps computed on demand (`LazyFineMaps`,
    `TrainFineMaps`): each subclass is a dataclass with `offset`, `size` and `_cache` fields, a
    `_source` tensor (one per backbone batch) and `_windows_of_batch`."""

    offset: int
    size: int | None
    _cache: dict[str, Any]

    @property
    @abc.abstractmethod
    def _source(self) -> torch.Tensor:
        """The tensor the views are computed from (one per backbone batch)."""

    @abc.abstractmethod
    def _windows_of_batch(
        self, b_ids: torch.Tensor, ids: torch.Tensor, window: int, stride: int
    ) -> torch.Tensor:
        """The `(n, window * window, C)` windows of cells `ids` in batch entries `b_ids`."""

    def split(self, size: int) -> tuple[Any, Any]:
        """Views of the first `size` and the remaining batch entries, sharing the computation."""
        total = self._source.shape[0]
        first = dataclasses.replace(self, offset=0, size=size)  # type: ignore[type-var]
        second = dataclasses.replace(self, offset=size, size=total - size)  # type: ignore[type-var]
        first._cache = second._cache = self._cache  # one dense map or plan for both views
        return first, second

    def shares_source(self, other: object) -> bool:
        """Whether `other` is a view of the same backbone batch."""
        return isinstance(other, _BatchViews) and other._source is self._source

    def windows(
        self, b_ids: torch.Tensor, ids: torch.Tensor, window: int, stride: int
    ) -> torch.Tensor:
        """Windows of this view, as `_unfold_at` of the dense maps would give them.

        Args:
            b_ids: `(M,)` batch index within this view.
            ids: `(M,)` coarse cell index (row-major on the coarse grid).
            window: window side W (odd).
            stride: fine pixels per coarse cell.

        Returns:
            `(M, W*W, C)` window features, row-major within the window, zero outside the image.
        """
        return self._windows_of_batch(b_ids + self.offset, ids, window, stride)

    def windows_pair(
        self,
        other: _BatchViews,
        b_ids: torch.Tensor,
        ids0: torch.Tensor,
        ids1: torch.Tensor,
        window: int,
        stride: int,
    ) -> torch.Tensor:
        """Windows `ids0` of this view and `ids1` of `other` (same source) in one pass.

        Returns:
            `(2M, W*W, C)`: this view's M windows, then `other`'s.
        """
        batch = torch.cat([b_ids + self.offset, b_ids + other.offset])
        return self._windows_of_batch(batch, torch.cat([ids0, ids1]), window, stride)


def _window_origins(
    ids: torch.Tensor, window: int, stride: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left pixels `(top, left)` of the windows of coarse cells `ids` on a fine map of
    `width` columns, in coordinates padded by W // 2."""
    cells_w = (width + 2 * (window // 2) - window) // stride + 1
    top = torch.div(ids, cells_w, rounding_mode="floor") * stride
    return top, (ids % cells_w) * stride


@dataclasses.dataclass
class LazyFineMaps(_BatchViews):
    """The fine maps of a batch, `layer1_outconv2(layer1_outconv(x1) + up(x2_out))`, on demand.

    One object can stand for a slice of the backbone's batch (`offset`, `size`): when both images
    ran through the backbone together, `split` gives each image its view and `windows_pair`
    evaluates both images' windows in one pass.

    Attributes:
        x1: `(B, C1, H/2, W/2)` output of the backbone's layer1 (channels-last).
        x2_out: `(B, C2, H/4, W/4)` 1/4-resolution FPN output.
        lateral: the 1x1 `layer1_outconv`.
        conv1: `layer1_outconv2[0]` with `[1]` (BatchNorm) folded in.
        conv2: `layer1_outconv2[3]`.
        leaky_slope: the LeakyReLU slope between them.
        offset: first batch index of this view.
        size: batch size of this view (None: the whole batch).
        max_sparse_coverage: coverage above which a convolution runs densely.
    """

    x1: torch.Tensor
    x2_out: torch.Tensor
    lateral: Any
    conv1: Any
    conv2: Any
    leaky_slope: float
    offset: int = 0
    size: int | None = None
    max_sparse_coverage: float = MAX_SPARSE_COVERAGE
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict)
    last_plan: dict[str, Any] = dataclasses.field(default_factory=dict)

    # ----------------------------------------------------------------------- shapes
    @property
    def shape(self) -> torch.Size:
        """`(N, C, H/2, W/2)` of the maps this object stands for."""
        n = self.x1.shape[0] if self.size is None else self.size
        return torch.Size((n, self.conv2.weight.shape[0], *self.x1.shape[2:]))

    @property
    def _source(self) -> torch.Tensor:
        return self.x1

    # ---------------------------------------------------------------------- compute
    def _sum_map(self) -> torch.Tensor:
        """`layer1_outconv(x1) + up(x2_out)`: the input of `layer1_outconv2`, `(B, C2, h, w)`."""
        out = self.lateral(self.x1)
        up = F.interpolate(self.x2_out, scale_factor=2.0, mode="bilinear", align_corners=True)
        return out.add_(up[..., : out.shape[2], : out.shape[3]])

    def dense(self) -> torch.Tensor:
        """The full fine maps `(N, C, H/2, W/2)` of this view (computed once per batch)."""
        if "dense" not in self._cache:
            hidden = F.leaky_relu_(self.conv1(self._sum_map()), self.leaky_slope)
            self._cache["dense"] = self.conv2(hidden)
        full = self._cache["dense"]
        return full if self.size is None else full[self.offset : self.offset + self.size]

    def _windows_of_batch(
        self, b_ids: torch.Tensor, ids: torch.Tensor, window: int, stride: int
    ) -> torch.Tensor:
        batch, _, height, width = self.x1.shape
        channels = self.conv2.weight.shape[0]
        pad = window // 2
        if ids.numel() == 0:
            return self.x1.new_zeros(0, window * window, channels)
        top, left = _window_origins(ids, window, stride, width)
        offsets = torch.arange(window, device=ids.device)

        # the pixels the windows read (inside the image), and those their 3x3 conv reads
        need2 = torch.zeros(
            batch, height + 2 * pad, width + 2 * pad, dtype=torch.bool, device=ids.device
        )
        need2[
            b_ids[:, None, None],
            top[:, None, None] + offsets[None, :, None],
            left[:, None, None] + offsets[None, None, :],
        ] = True
        need2 = need2[:, pad : pad + height, pad : pad + width]
        need1 = F.max_pool2d(need2[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
        cover1, cover2 = float(need1.float().mean()), float(need2.float().mean())
        limit = self.max_sparse_coverage
        self.last_plan = {
            "coverage_conv1": cover1,
            "coverage_conv2": cover2,
            "conv1": "dense" if cover1 > limit else "sparse",
            "conv2": "dense" if cover2 > limit else "sparse",
        }

        summed = self._sum_map()
        if cover1 > limit:
            hidden = F.leaky_relu_(self.conv1(summed), self.leaky_slope)
            if cover2 > limit:
                out = self.conv2(hidden)
                self._cache.setdefault("dense", out)
                return _gather_windows(_pad_nhwc(out, pad), b_ids, top, left, window)
            hidden_pad = _pad_nhwc(hidden, 1)
        else:
            pixels1 = need1.nonzero()
            values = sparse_conv3x3(_pad_nhwc(summed, 1), pixels1, self.conv1)
            values = F.leaky_relu_(values, self.leaky_slope)
            hidden_pad = _scatter_nhwc(values, pixels1, 1, need1.shape)
        pixels2 = need2.nonzero()
        values = sparse_conv3x3(hidden_pad, pixels2, self.conv2)
        out_pad = _scatter_nhwc(values, pixels2, pad, need2.shape)
        return _gather_windows(out_pad, b_ids, top, left, window)


def _pad_nhwc(x: torch.Tensor, pad: int) -> torch.Tensor:
    """`(B, C, H, W)` -> zero-padded `(B, H + 2 pad, W + 2 pad, C)` contiguous."""
    b, c, h, w = x.shape
    out = x.new_zeros(b, h + 2 * pad, w + 2 * pad, c)
    out[:, pad : pad + h, pad : pad + w] = x.permute(0, 2, 3, 1)
    return out


def _scatter_nhwc(
    values: torch.Tensor, pixels: torch.Tensor, pad: int, shape: torch.Size
) -> torch.Tensor:
    """Zero `(B, H + 2 pad, W + 2 pad, C)` map holding `values` `(P, C)` at `pixels` `(P, 3)`."""
    b, h, w = shape
    hp, wp = h + 2 * pad, w + 2 * pad
    out = values.new_zeros(b * hp * wp, values.shape[1])
    flat = (pixels[:, 0] * hp + pixels[:, 1] + pad) * wp + pixels[:, 2] + pad
    out.index_copy_(0, flat, values)
    return out.view(b, hp, wp, values.shape[1])


def _gather_windows(
    padded: torch.Tensor, b_ids: torch.Tensor, top: torch.Tensor, left: torch.Tensor, window: int
) -> torch.Tensor:
    """`(M, W*W, C)` windows with top-left `(top, left)` of a padded `(B, Hp, Wp, C)` map."""
    _, hp, wp, c = padded.shape
    offsets = torch.arange(window, device=top.device)
    rows = (b_ids * hp + top)[:, None, None] + offsets[None, :, None]
    flat = (rows * wp + left[:, None, None] + offsets[None, None, :]).reshape(-1)
    return padded.reshape(-1, c).index_select(0, flat).view(-1, window * window, c)


def sparse_conv3x3(
    padded: torch.Tensor, pixels: torch.Tensor, conv: Any, chunk: int = SPARSE_CHUNK
) -> torch.Tensor:
    """A 3x3, stride-1 convolution evaluated only at `pixels`, as im2col matrix products.

    Args:
        padded: `(B, H + 2, W + 2, C)` contiguous input, zero-padded by one pixel.
        pixels: `(P, 3)` long `(b, y, x)` output pixels, unpadded coordinates.
        conv: has `weight` `(C_out, C, 3, 3)` and `bias` `(C_out,)` or None.
        chunk: output pixels per gathered block.

    Returns:
        `(P, C_out)` outputs, in the order of `pixels`.
    """
    batch, hp, wp, channels = padded.shape
    weight = conv.weight.to(padded.dtype)
    c_out = weight.shape[0]
    # rows (dy, dx, c) of the im2col block against weight[o, c, dy, dx]
    matrix = weight.permute(2, 3, 1, 0).reshape(9 * channels, c_out)
    bias = None if conv.bias is None else conv.bias.to(padded.dtype)
    # three horizontally adjacent pixels are contiguous in NHWC: one gathered row each
    runs = padded.reshape(-1).as_strided((batch * hp * wp - 2, 3 * channels), (channels, 1))
    top_left = (pixels[:, 0] * hp + pixels[:, 1]) * wp + pixels[:, 2]
    index = torch.stack([top_left, top_left + wp, top_left + 2 * wp], 1).reshape(-1)
    n_pix = pixels.shape[0]
    out = padded.new_empty(n_pix, c_out)
    block = padded.new_empty(3 * min(chunk, max(n_pix, 1)), 3 * channels)
    with torch.autocast(padded.device.type, enabled=False):
        for start in range(0, n_pix, chunk):
            stop = min(start + chunk, n_pix)
            cols = block[: 3 * (stop - start)]
            torch.index_select(runs, 0, index[3 * start : 3 * stop], out=cols)
            cols = cols.view(stop - start, 9 * channels)
            if bias is None:
                torch.mm(cols, matrix, out=out[start:stop])
            else:
                torch.addmm(bias, cols, matrix, out=out[start:stop])
    return out


@dataclasses.dataclass
class TrainFineMaps(_BatchViews):
    """The fine maps of a training batch, `conv(activation(normed))`, evaluated where read.

    `normed` is the output of the fine branch's BatchNorm, computed densely (its batch statistics
    span the whole map); the LeakyReLU and the last 3x3 conv then run only on the pixels the
    windows read, with gradients, unless those cover more than `max_sparse_coverage` of the map,
    where the dense convolution is used (docs/differences.md#15).

    Attributes:
        normed: `(B, C, H/2, W/2)` `layer1_outconv2[1]` output.
        activation: `layer1_outconv2[2]` (the LeakyReLU).
        conv: `layer1_outconv2[3]` (the last 3x3 conv).
        offset: first batch index of this view.
        size: batch size of this view (None: the whole batch).
        max_sparse_coverage: share of the map's pixels above which the conv runs densely.
    """

    normed: torch.Tensor
    activation: nn.Module
    conv: nn.Conv2d
    max_sparse_coverage: float
    offset: int = 0
    size: int | None = None
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict)
    last_plan: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def _source(self) -> torch.Tensor:
        return self.normed

    @property
    def shape(self) -> torch.Size:
        """`(N, C, H/2, W/2)` of the maps this object stands for."""
        n = self.normed.shape[0] if self.size is None else self.size
        return torch.Size((n, self.conv.weight.shape[0], *self.normed.shape[2:]))

    def _windows_of_batch(
        self, b_ids: torch.Tensor, ids: torch.Tensor, window: int, stride: int
    ) -> torch.Tensor:
        batch, channels, height, width = self.normed.shape
        pad, n = window // 2, ids.shape[0]
        top, left = _window_origins(ids, window, stride, width)
        # the windows' pixels, repeats included, against the map's: the work of each path
        share = n * window * window / (batch * height * width)
        sparse = share <= self.max_sparse_coverage
        self.last_plan = {"window_share": share, "conv2": "sparse" if sparse else "dense"}
        if not sparse:
            out = self.conv(self.activation(self.normed))
            return _gather_windows(_pad_nhwc(out, pad), b_ids, top, left, window)
        # each window's (W + 2)^2 input patch; the map is zero-padded by one more pixel for the
        # conv's own padding, so the patch's top-left has the window's padded coordinates
        side = window + 2
        patches = _gather_windows(_pad_nhwc(self.normed, pad + 1), b_ids, top, left, side)
        patches = patches.view(n, side, side, channels).permute(0, 3, 1, 2).contiguous()
        out = F.conv2d(self.activation(patches), self.conv.weight, self.conv.bias)
        # window pixels outside the image read zeros, as `_unfold_at` of the padded map gives
        offsets = torch.arange(window, device=ids.device) - pad
        rows, cols = top[:, None] + offsets, left[:, None] + offsets
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
            :, None, :
        ]
        out = out * inside[:, None].to(out.dtype)
        return out.flatten(2).transpose(1, 2).contiguous()


def gather_windows(
    feat_f0: torch.Tensor | _BatchViews,
    feat_f1: torch.Tensor | _BatchViews,
    b_ids: torch.Tensor,
    i_ids: torch.Tensor,
    j_ids: torch.Tensor,
    window: int,
    stride: int,
) -> torch.Tensor:
    """Windows of cells `i_ids` in image 0 and `j_ids` in image 1, stacked: `(2M, W*W, C)`.

    Args:
        feat_f0: `(N, C, h, w)` fine maps of image 0, or their lazy `_BatchViews`.
        feat_f1: the same for image 1.
        b_ids: `(M,)` batch indices.
        i_ids: `(M,)` coarse cells of image 0.
        j_ids: `(M,)` coarse cells of image 1.
        window: window side W.
        stride: fine pixels per coarse cell.
    """
    if isinstance(feat_f0, _BatchViews) and feat_f0.shares_source(feat_f1):
        return feat_f0.windows_pair(feat_f1, b_ids, i_ids, j_ids, window, stride)  # type: ignore[arg-type]
    parts = []
    for feat, ids in ((feat_f0, i_ids), (feat_f1, j_ids)):
        if isinstance(feat, _BatchViews):
            parts.append(feat.windows(b_ids, ids, window, stride))
        else:
            parts.append(_unfold_at(feat, b_ids, ids, window, stride))
    return torch.cat(parts, 0)


class FinePreprocess(_KorniaFinePreprocess):
    """Fine windows merged with their coarse features (docs/original.md#fine-preprocess), kornia's
    parameters and keys.

    Accepts the fine maps as tensors, `LazyFineMaps` or `TrainFineMaps`. The merge
    `merge_feat([window, down_proj(coarse)])` is computed as `window @ A^T + (down_proj(coarse) @
    B^T + bias)` with `merge_feat.weight = [A | B]`: the same linear map, without broadcasting the
    coarse half to all W*W positions and concatenating.
    """

    def forward(  # type: ignore[override]
        self,
        feat_f0: torch.Tensor | _BatchViews,
        feat_f1: torch.Tensor | _BatchViews,
        feat_c0: torch.Tensor,
        feat_c1: torch.Tensor,
        data: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows of the selected matches.

        Args:
            feat_f0: `(N, C_f, h_f, w_f)` fine maps of image 0 or their lazy `_BatchViews`.
            feat_f1: the same for image 1.
            feat_c0: `(N, L, C_c)` transformed coarse features of image 0.
            feat_c1: `(N, S, C_c)` of image 1.
            data: reads `b_ids`, `i_ids`, `j_ids` `(M',)`, `stride_c`, `stride_f`; writes `W`.

        Returns:
            `(M', W*W, C_f)` windows of image 0 and of image 1.
        """
        window = self.W
        stride = data["stride_c"] // data["stride_f"]
        data["W"] = window
        b_ids, i_ids, j_ids = data["b_ids"], data["i_ids"], data["j_ids"]
        if b_ids.shape[0] == 0:
            empty = feat_c0.new_empty(0, window * window, self.d_model_f)
            return empty, empty.clone()
        windows = gather_windows(feat_f0, feat_f1, b_ids, i_ids, j_ids, window, stride)
        if self.cat_c_feat:
            coarse = torch.cat([feat_c0[b_ids, i_ids], feat_c1[b_ids, j_ids]], 0)
            coarse = self.down_proj(coarse)  # (2M', C_f)
            d_f = self.d_model_f
            weight, bias = self.merge_feat.weight, self.merge_feat.bias
            per_window = F.linear(coarse, weight[:, d_f:], bias)  # (2M', C_f)
            windows = F.linear(windows, weight[:, :d_f]) + per_window[:, None, :]
        feat0, feat1 = windows.chunk(2, dim=0)
        return feat0, feat1
