"""Scene-balanced sampling (docs/original.md#sampler) and the per-rank scene split
(docs/original.md#datamodule).

Unlike the original, which reseeds torch's global generator, :class:`RandomConcatSampler` draws
from its own ``torch.Generator`` seeded by (seed, epoch, rank) (docs/differences.md#2),
and its position in the epoch is part of its state, so a resumed run continues the identical
sequence (docs/differences.md#1).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Sampler

from loftr.errors import ConfigError, DataError

log = logging.getLogger(__name__)

T = TypeVar("T")


def get_local_split(items: Sequence[T], world_size: int, rank: int, seed: int = 66) -> list[T]:
    """The share of ``items`` (scene index files) that rank ``rank`` loads
    (docs/original.md#datamodule).

    The list is permuted with ``np.random.RandomState(seed)``; when its length is not divisible
    by ``world_size`` it is padded with ``RandomState(seed).choice(items, k, replace=True)``
    (a fresh generator, drawing from the original order); rank ``r`` takes the r-th of
    ``world_size`` equal contiguous chunks. Every rank therefore gets the same number of scenes.

    Args:
        items: the entries of the training list file.
        world_size: number of ranks.
        rank: this rank, ``0 <= rank < world_size``.
        seed: the run seed (66 in the original).

    Returns:
        ``ceil(len(items) / world_size)`` entries.

    Example:
        >>> get_local_split(["a", "b", "c", "d", "e"], world_size=2, rank=1, seed=66)
        ['a', 'e', 'e']
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"get_local_split: rank {rank} is outside world size {world_size}")
    n_items = len(items)
    if n_items == 0:
        raise DataError("get_local_split: the training list is empty")
    pool = np.empty(n_items, dtype=object)
    pool[:] = list(items)
    permuted = np.random.RandomState(seed).permutation(pool)
    remainder = n_items % world_size
    if remainder:
        padding = np.random.RandomState(seed).choice(pool, world_size - remainder, replace=True)
        permuted = np.concatenate([permuted, padding])
    per_rank = len(permuted) // world_size
    return list(permuted[rank * per_rank : (rank + 1) * per_rank])


def _generator_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 63-bit seed from (seed, epoch, rank), stable across platforms."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


class RandomConcatSampler(Sampler[int]):
    """Draw ``n_samples_per_subset`` pairs from every scene of a ConcatDataset each epoch.

    Each epoch (docs/original.md#sampler): for every sub-dataset draw ``n_samples_per_subset``
    indices in its global range, uniformly with replacement (or a truncated random permutation,
    padded with replacement draws when the scene is smaller); concatenate; shuffle globally when
    ``shuffle``; append ``repeat - 1`` copies (each shuffled when ``shuffle``). The length is
    ``n_scenes * n_samples_per_subset * repeat`` and does not depend on the epoch.

    ``n_scenes`` (default: the number of sub-datasets) counts the scenes of this rank's share,
    including those left out of ``data_source`` for having no usable pair: each missing scene's
    draws come from a sub-dataset picked by the generator each epoch. Every rank thus runs the
    same number of steps whatever its scenes hold (unequal epochs would hang DDP's all-reduce).

    Randomness comes from a private generator seeded by (seed, epoch, rank): torch's global
    generator is neither reseeded nor advanced. ``set_epoch`` (called by Lightning before each
    epoch) selects the epoch; ``consumed`` counts the indices handed out in the current epoch and
    may be overwritten by the caller (DataLoader workers prefetch ahead of what was trained on).
    After ``load_state_dict`` the next iteration of that epoch skips the first ``consumed``
    indices, so an interrupted epoch resumes with the identical remaining sequence.

    Args:
        data_source: one sub-dataset per scene.
        n_samples_per_subset: pairs drawn per scene per epoch (200 ScanNet, 100 MegaDepth).
        subset_replacement: draw with replacement within a scene.
        shuffle: shuffle the concatenated draws (and each repeat).
        repeat: how many times the epoch's draws are repeated.
        seed: the run seed.
        rank: this process's global rank (ranks hold different scenes, docs/original.md#datamodule).
        n_scenes: the scenes the epoch length counts, at least the number of sub-datasets.

    Example:
        >>> sampler = RandomConcatSampler(ConcatDataset([range(5), range(3)]), 4, seed=66)
        >>> len(sampler)
        8
    """

    def __init__(
        self,
        data_source: ConcatDataset,
        n_samples_per_subset: int,
        subset_replacement: bool = True,
        shuffle: bool = True,
        repeat: int = 1,
        seed: int = 66,
        rank: int = 0,
        n_scenes: int | None = None,
    ) -> None:
        if not isinstance(data_source, ConcatDataset):
            raise ConfigError(
                f"RandomConcatSampler needs a ConcatDataset, got {type(data_source).__name__}"
            )
        if n_samples_per_subset < 1:
            raise ConfigError(f"n_samples_per_subset={n_samples_per_subset}; must be >= 1")
        if repeat < 1:
            raise ConfigError(f"sb_repeat={repeat}; must be >= 1")
        empty = [i for i, ds in enumerate(data_source.datasets) if len(ds) == 0]
        if empty:
            raise DataError(f"RandomConcatSampler: sub-dataset(s) {empty} have no pairs to draw")
        self.data_source = data_source
        self.n_subset = len(data_source.datasets)
        self.n_scenes = self.n_subset if n_scenes is None else int(n_scenes)
        if self.n_scenes < self.n_subset:
            raise ConfigError(
                f"RandomConcatSampler: n_scenes={self.n_scenes} is below the {self.n_subset} "
                "sub-datasets"
            )
        self.n_samples_per_subset = int(n_samples_per_subset)
        self.n_samples = self.n_scenes * self.n_samples_per_subset * int(repeat)
        self.subset_replacement = subset_replacement
        self.shuffle = shuffle
        self.repeat = int(repeat)
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch = 0
        self.consumed = 0
        self._resume_from = 0

    def __len__(self) -> int:
        return self.n_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose sequence the next iteration yields.

        A different epoch starts from its beginning; the current epoch keeps a resume position
        set by :meth:`load_state_dict` (Lightning calls this after restoring a checkpoint).
        """
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0
            self._resume_from = 0

    def epoch_indices(self, epoch: int | None = None) -> torch.Tensor:
        """The full index sequence of an epoch, ``(len(self),)`` int64; pure (no state change).

        Args:
            epoch: the epoch, or None for the current one.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        generator = torch.Generator().manual_seed(_generator_seed(self.seed, epoch, self.rank))
        n = self.n_samples_per_subset
        ends = self.data_source.cumulative_sizes
        bounds = list(zip([0, *ends[:-1]], ends, strict=True))
        if self.n_scenes > self.n_subset:
            stand_ins = torch.randint(
                0, self.n_subset, (self.n_scenes - self.n_subset,), generator=generator
            )
            bounds += [bounds[i] for i in stand_ins.tolist()]
        draws = []
        for low, high in bounds:
            size = high - low
            if self.subset_replacement:
                draw = torch.randint(low, high, (n,), generator=generator)
            else:
                draw = torch.randperm(size, generator=generator)[:n] + low
                if size < n:
                    extra = torch.randint(low, high, (n - size,), generator=generator)
                    draw = torch.cat([draw, extra])
            draws.append(draw)
        indices = torch.cat(draws)
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=generator)]
        if self.repeat > 1:
            copies = [indices.clone() for _ in range(self.repeat - 1)]
            if self.shuffle:
                copies = [c[torch.randperm(len(c), generator=generator)] for c in copies]
            indices = torch.cat([indices, *copies])
        return indices

    def __iter__(self) -> Iterator[int]:
        start, self._resume_from = self._resume_from, 0
        self.consumed = start
        indices = self.epoch_indices().tolist()
        for position in range(start, len(indices)):
            self.consumed = position + 1
            yield indices[position]

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch", "rank", "consumed"}``: where the sampler is (plain ints)."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "rank": self.rank,
            "consumed": int(self.consumed),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state``: the next iteration of ``state["epoch"]`` skips ``consumed`` indices.

        The saved seed wins over the constructor's, so a resumed run draws what the interrupted
        one would have. The saved rank is informative only: the checkpoint is written by rank 0
        and every rank keeps its own scenes; all ranks share the epoch length
        (docs/original.md#datamodule pads the scene list), hence the same position.
        """
        missing = [k for k in ("seed", "epoch", "consumed") if k not in state]
        if missing:
            raise DataError(f"RandomConcatSampler state lacks {missing}: {dict(state)}")
        if int(state["seed"]) != self.seed:
            log.warning(
                "RandomConcatSampler: resuming with the checkpoint's seed %d instead of %d",
                int(state["seed"]),
                self.seed,
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self.n_samples:
            raise DataError(
                f"RandomConcatSampler state consumed={consumed} is outside this epoch's "
                f"{self.n_samples} samples (was the dataset or world size changed?)"
            )
        self.consumed = consumed
        self._resume_from = consumed
