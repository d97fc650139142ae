"""ResNet-FPN backbone (docs/original.md#backbone) with a fast inference path.

The modules, and so the state-dict keys, are kornia's `ResNetFPN_8_2` (the original's layout).
In training, or whenever autograd records, the forward is kornia's, unchanged. In eval mode
without autograd it runs the same maths faster:

- every BatchNorm is folded into the convolution before it (weights and a bias computed from the
  running statistics, cached and recomputed when a parameter or buffer changes); the module's own
  parameters are never modified, so `state_dict()` stays the original's;
- the maps are channels-last, the layout oneDNN's convolutions run fastest in on CPUs, and the
  coarse map then flattens to `(N, hw, C)` tokens without a copy;
- activations and residual additions are in place;
- the fine (1/2-resolution) output branch, `layer1_outconv2`, can be left to `LazyFineMaps`,
  which computes it only around the fine windows the coarse matches select
  (docs/original.md#fine-preprocess).

In training, `forward_windowed` runs kornia's layers up to the fine branch's BatchNorm and leaves
the rest of that branch (LeakyReLU, last 3x3 conv) to `TrainFineMaps`, which evaluates it only
where the fine windows read it (docs/differences.md#15).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from kornia.feature.loftr.backbone import resnet_fpn
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from loftr.model.activation_checkpointing import CheckpointedStage
from loftr.model.fine import (
    MAX_SPARSE_COVERAGE,
    TRAIN_MAX_SPARSE_COVERAGE,
    LazyFineMaps,
    TrainFineMaps,
)

# nn.LeakyReLU's default slope, used by the FPN output branches (docs/original.md#backbone)
LEAKY_SLOPE = 0.01


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Channels-last weight and bias of `conv` followed by eval-mode `bn` (or of `conv` alone)."""
    if bn is None:
        weight, bias = conv.weight.detach(), conv.bias
        bias = None if bias is None else bias.detach()
    else:
        weight, bias = fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            bn.running_mean,
            bn.running_var,
            bn.eps,
            bn.weight,
            bn.bias,
        )
        weight, bias = weight.detach(), bias.detach()
    return weight.contiguous(memory_format=torch.channels_last), bias


class FoldedConv:
    """A convolution with its BatchNorm folded in: `conv2d(x, weight, bias, stride, padding)`."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> None:
        self.weight, self.bias = _fold(conv, bn)
        self.stride = conv.stride
        self.padding = conv.padding

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[2:] == (1, 1) and x.is_contiguous(memory_format=torch.channels_last):
            # a 1x1 convolution of a channels-last map is one matrix product over the pixels
            # (oneDNN is not used for it and PyTorch's fallback is several times slower)
            if self.stride != (1, 1):
                x = x[:, :, :: self.stride[0], :: self.stride[1]]
            n, c, h, w = x.shape
            pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
            weight = self.weight.view(self.weight.shape[0], c).to(x.dtype)
            if self.bias is None:
                out = pixels @ weight.t()
            else:
                out = torch.addmm(self.bias.to(x.dtype), pixels, weight.t())
            return out.view(n, h, w, -1).permute(0, 3, 1, 2)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class ResNetFPN_8_2(resnet_fpn.ResNetFPN_8_2):  # noqa: N801 (the original's class name)
    """kornia's ResNetFPN_8_2 (docs/original.md#backbone) with a BatchNorm-folded, channels-last
    eval path.

    Args:
        config: the `resnetfpn` node: `initial_dim`, `block_dims`.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        # plain attributes, not buffers: nothing here reaches the state dict
        self._folded: dict[str, Any] | None = None
        self._folded_key: tuple | None = None
        # share of the fine map above which LazyFineMaps convolves densely (fine.py)
        self.max_sparse_coverage = MAX_SPARSE_COVERAGE
        # the same for TrainFineMaps in training (model.fine_train_max_coverage, set by LoFTR)
        self.train_max_sparse_coverage = TRAIN_MAX_SPARSE_COVERAGE

    # ------------------------------------------------------------------ folding cache
    def _state_key(self) -> tuple:
        """Identity and in-place version of every parameter and buffer: a change refolds."""
        return tuple(
            (t.data_ptr(), t._version, t.dtype, t.device)
            for t in (*self.parameters(), *self.buffers())
        )

    def folded(self) -> dict[str, Any]:
        """The folded convolutions, built on first use and after any parameter change."""
        key = self._state_key()
        if self._folded is None or key != self._folded_key:
            with torch.no_grad():
                self._folded = self._build_folded()
            self._folded_key = key
        return self._folded

    def _build_folded(self) -> dict[str, Any]:
        def blocks(layer: nn.Sequential) -> list[dict[str, FoldedConv | None]]:
            return [
                {
                    "conv1": FoldedConv(block.conv1, block.bn1),
                    "conv2": FoldedConv(block.conv2, block.bn2),
                    "down": None
                    if block.downsample is None
                    else FoldedConv(block.downsample[0], block.downsample[1]),
                }
                for block in layer
            ]

        return {
            "stem": FoldedConv(self.conv1, self.bn1),
            "layer1": blocks(self.layer1),
            "layer2": blocks(self.layer2),
            "layer3": blocks(self.layer3),
            "layer3_outconv": FoldedConv(self.layer3_outconv),
            "layer2_outconv": FoldedConv(self.layer2_outconv),
            "layer2_outconv2": (
                FoldedConv(self.layer2_outconv2[0], self.layer2_outconv2[1]),
                FoldedConv(self.layer2_outconv2[3]),
            ),
            "layer1_outconv": FoldedConv(self.layer1_outconv),
            "layer1_outconv2": (
                FoldedConv(self.layer1_outconv2[0], self.layer1_outconv2[1]),
                FoldedConv(self.layer1_outconv2[3]),
            ),
        }

    def _make_layer(self, block: Any, dim: int, stride: int = 1) -> nn.Sequential:
        """kornia's stage of two blocks, as a `CheckpointedStage` (same keys): with
        `model.checkpoint_activations` it keeps only its input for backward."""
        return CheckpointedStage(*super()._make_layer(block, dim, stride))

    # ---------------------------------------------------------------------- forwards
    def fast_path_applies(self) -> bool:
        """True in eval mode without autograd: the folded path gives the same maps."""
        return not self.training and not torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Coarse `(N, 256, H/8, W/8)` and fine `(N, 128, H/2, W/2)` maps of `(N, 1, H, W)` images.

        Training (or autograd) runs kornia's forward; eval without autograd the folded path.
        """
        if not self.fast_path_applies():
            return super().forward(x)
        coarse, fine = self.forward_lazy(x)
        return [coarse, fine.dense()]

    def forward_windowed(self, x: torch.Tensor) -> tuple[torch.Tensor, TrainFineMaps]:
        """kornia's forward, with the fine output left to `TrainFineMaps` after its BatchNorm.

        The same modules in the same order as `resnet_fpn.ResNetFPN_8_2.forward`; only
        `layer1_outconv2[2:]` (LeakyReLU, 3x3 conv) is deferred until the windows are known.

        Returns:
            The coarse map `(N, 256, H/8, W/8)` and the fine maps `(N, 128, H/2, W/2)` as
            `TrainFineMaps`.
        """
        x0 = self.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(x0)  # 1/2
        x2 = self.layer2(x1)  # 1/4
        x3 = self.layer3(x2)  # 1/8
        x3_out = self.layer3_outconv(x3)
        x2_out = self.layer2_outconv(x2)
        x2_out = self.layer2_outconv2(x2_out + _upsample_to(x3_out, x2_out))
        x1_out = self.layer1_outconv(x1)
        conv, norm, activation, last = self.layer1_outconv2
        normed = norm(conv(x1_out + _upsample_to(x2_out, x1_out)))
        fine = TrainFineMaps(normed, activation, last, self.train_max_sparse_coverage)
        return x3_out, fine

    def forward_lazy(
        self, x: torch.Tensor, trunk: Callable[..., Any] | None = None
    ) -> tuple[torch.Tensor, LazyFineMaps]:
        """The coarse map, and the fine maps as `LazyFineMaps` (computed when asked for).

        Eval only (BatchNorm folded with the running statistics).

        Args:
            x: `(N, 1, H, W)` grey images.
            trunk: a replacement for `backbone_trunk` (e.g. its `torch.compile`), or None.

        Returns:
            The channels-last coarse map `(N, 256, H/8, W/8)` and the lazy fine maps
            `(N, 128, H/2, W/2)`.
        """
        folded = self.folded()
        x1, x2_out, x3_out = (trunk or backbone_trunk)(folded, x)
        fine = LazyFineMaps(
            x1=x1,
            x2_out=x2_out,
            lateral=folded["layer1_outconv"],
            conv1=folded["layer1_outconv2"][0],
            conv2=folded["layer1_outconv2"][1],
            leaky_slope=LEAKY_SLOPE,
            max_sparse_coverage=self.max_sparse_coverage,
        )
        return x3_out, fine


def backbone_trunk(
    folded: dict[str, Any], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Everything but the fine output branch, with folded BatchNorms, channels-last.

    Args:
        folded: `ResNetFPN_8_2.folded()`.
        x: `(N, 1, H, W)` images.

    Returns:
        `x1` `(N, 128, H/2, W/2)` (layer1), `x2_out` `(N, 196, H/4, W/4)` (the 1/4 FPN output)
        and the coarse map `(N, 256, H/8, W/8)`.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    x0 = folded["stem"](x).relu_()
    x1 = _run_layer(folded["layer1"], x0)  # 1/2
    x2 = _run_layer(folded["layer2"], x1)  # 1/4
    x3 = _run_layer(folded["layer3"], x2)  # 1/8

    x3_out = folded["layer3_outconv"](x3)
    x2_out = folded["layer2_outconv"](x2)
    x2_out.add_(_upsample_to(x3_out, x2_out))
    first, second = folded["layer2_outconv2"]
    x2_out = second(F.leaky_relu_(first(x2_out), LEAKY_SLOPE))
    return x1, x2_out, x3_out


def _run_layer(blocks: list[dict[str, FoldedConv | None]], x: torch.Tensor) -> torch.Tensor:
    """BasicBlocks with folded BatchNorms: relu(shortcut + bn2(conv2(relu(bn1(conv1(x))))))."""
    for block in blocks:
        y = block["conv1"](x).relu_()  # type: ignore[misc]
        y = block["conv2"](y)  # type: ignore[misc]
        shortcut = x if block["down"] is None else block["down"](x)
        x = y.add_(shortcut).relu_()
    return x


def _upsample_to(coarser: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """x2 bilinear upsampling (align_corners) cropped to `target`'s size, as kornia's FPN."""
    up = F.interpolate(coarser, scale_factor=2.0, mode="bilinear", align_corners=True)
    return up[..., : target.shape[2], : target.shape[3]]


def build_backbone(config: dict[str, Any]) -> nn.Module:
    """Our `ResNetFPN_8_2` for resolution (8, 2); kornia's `ResNetFPN_16_4` for (16, 4)."""
    if tuple(config["resolution"]) == (8, 2):
        return ResNetFPN_8_2(config["resnetfpn"])
    return resnet_fpn.ResNetFPN_16_4(config["resnetfpn"])
