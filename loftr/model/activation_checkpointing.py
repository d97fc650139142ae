"""Activation checkpointing for training on large images (`model.checkpoint_activations`).

A checkpointed part keeps only its inputs for backward and runs its forward a second time when
its gradients are needed, trading compute for memory (docs/config.md#model-keys). The
recomputation must not count as a second training step: BatchNorm layers in training mode update
their running statistics on every call, so the recomputation runs with those statistics saved
and put back afterwards. Loss and gradients are the plain forward's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _statistics(norm: nn.modules.batchnorm._BatchNorm) -> list[torch.Tensor]:
    """A BatchNorm's running mean, variance and batch counter (those it has)."""
    buffers = (norm.running_mean, norm.running_var, norm.num_batches_tracked)
    return [b for b in buffers if b is not None]


@contextlib.contextmanager
def kept_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Leave the running statistics (and batch counters) of `module`'s BatchNorms as they were."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [[b.clone() for b in _statistics(m)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved, strict=True):
                for b, old in zip(_statistics(m), buffers, strict=True):
                    b.copy_(old)


def checkpointed(module: nn.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` under non-reentrant activation checkpointing, `module`'s BatchNorm statistics
    untouched by the recomputation.

    Args:
        module: the module whose parameters and buffers `fn` uses.
        fn: the forward to checkpoint.
        args: its inputs.
    """
    return checkpoint(
        fn,
        *args,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), kept_batchnorm_statistics(module)),
    )


def checkpoints_apply(enabled: bool) -> bool:
    """Whether a part checkpoints now: the switch is on and autograd records."""
    return enabled and torch.is_grad_enabled()


class CheckpointedStage(nn.Sequential):
    """A backbone stage (`layer1`..`layer3`) that checkpoints when `checkpoint_activations` is set.

    A plain `nn.Sequential` to the state dict: the keys are the stage's blocks, as before.
    """

    checkpoint_activations = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if checkpoints_apply(self.checkpoint_activations):
            return checkpointed(self, super().forward, x)
        return super().forward(x)
