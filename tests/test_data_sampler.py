"""RandomConcatSampler (docs/original.md#sampler) and get_local_split
(docs/original.md#datamodule)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset

from loftr.data.sampler import RandomConcatSampler, get_local_split
from loftr.errors import DataError

SIZES = (5, 3, 10)  # global index ranges [0, 5), [5, 8), [8, 18)
RANGES = ((0, 5), (5, 8), (8, 18))


def _concat(sizes=SIZES) -> ConcatDataset:
    return ConcatDataset([list(range(n)) for n in sizes])


def _subset_counts(indices: list[int]) -> list[int]:
    return [sum(lo <= i < hi for i in indices) for lo, hi in RANGES]


def test_length_is_subsets_times_samples_times_repeat() -> None:
    assert len(RandomConcatSampler(_concat(), 4)) == 12
    sampler = RandomConcatSampler(_concat(), 4, repeat=2)
    assert len(sampler) == 24 == len(list(sampler))


def test_with_replacement_draws_n_per_subset() -> None:
    indices = list(RandomConcatSampler(_concat(), 50, subset_replacement=True, seed=1))
    assert _subset_counts(indices) == [50, 50, 50]
    # 50 draws from 3 pairs must repeat: with replacement.
    assert len({i for i in indices if 5 <= i < 8}) == 3


def test_without_replacement_truncates_or_pads() -> None:
    sampler = RandomConcatSampler(_concat(), 4, subset_replacement=False, shuffle=False, seed=3)
    indices = list(sampler)
    assert len(set(indices[0:4])) == 4 and all(0 <= i < 5 for i in indices[0:4])
    # subset [5, 8) has only 3 pairs: all 3 once (a permutation), then 1 replacement draw.
    assert sorted(indices[4:7]) == [5, 6, 7] and 5 <= indices[7] < 8
    assert len(set(indices[8:12])) == 4 and all(8 <= i < 18 for i in indices[8:12])


def test_no_shuffle_keeps_subset_order_and_repeat_appends_copies() -> None:
    sampler = RandomConcatSampler(_concat(), 2, shuffle=False, repeat=3, seed=0)
    indices = list(sampler)
    first = indices[:6]
    assert _subset_counts(first[:2]) == [2, 0, 0] and _subset_counts(first[2:4]) == [0, 2, 0]
    assert indices[6:12] == first and indices[12:18] == first  # unshuffled copies
    shuffled = list(RandomConcatSampler(_concat(), 2, shuffle=True, repeat=3, seed=0))
    assert sorted(shuffled[6:12]) == sorted(shuffled[:6]) == sorted(shuffled[12:18])


def test_deterministic_per_seed_epoch_rank() -> None:
    def draw(seed=66, epoch=0, rank=0) -> list[int]:
        sampler = RandomConcatSampler(_concat(), 6, seed=seed, rank=rank)
        sampler.set_epoch(epoch)
        return list(sampler)

    base = draw()
    assert draw() == base
    assert draw(epoch=1) != base and draw(epoch=1) == draw(epoch=1)
    assert draw(rank=1) != base
    assert draw(seed=67) != base
    sampler = RandomConcatSampler(_concat(), 6)
    assert list(sampler) == list(sampler) == base  # re-iterating an epoch repeats it
    assert sampler.epoch_indices(1).tolist() == draw(epoch=1)


def test_global_rng_is_neither_reseeded_nor_advanced() -> None:
    torch.manual_seed(123)
    np.random.seed(7)
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()
    sampler = RandomConcatSampler(_concat(), 8, seed=66)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        list(sampler)
    get_local_split(list("abcdefg"), 3, 1, seed=66)
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)


def test_interrupted_epoch_resumes_with_identical_remaining_indices() -> None:
    sampler = RandomConcatSampler(_concat(), 7, seed=5, rank=2)
    sampler.set_epoch(3)
    full = sampler.epoch_indices().tolist()
    iterator = iter(sampler)
    taken = [next(iterator) for _ in range(9)]
    assert taken == full[:9] and sampler.consumed == 9
    # Workers prefetched 9 but the model trained on 6: the caller overwrites `consumed`.
    sampler.consumed = 6
    state = sampler.state_dict()
    assert state == {"seed": 5, "epoch": 3, "rank": 2, "consumed": 6}

    resumed = RandomConcatSampler(_concat(), 7, seed=5, rank=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # Lightning calls this again with the same epoch: keeps the position
    assert list(resumed) == full[6:]
    assert resumed.consumed == len(full)
    assert list(resumed) == full  # the resume offset applies once
    resumed.set_epoch(4)
    assert list(resumed) == resumed.epoch_indices(4).tolist()


def test_resume_into_a_new_epoch_starts_it_from_the_beginning() -> None:
    sampler = RandomConcatSampler(_concat(), 3, seed=5)
    sampler.load_state_dict({"seed": 5, "epoch": 1, "rank": 0, "consumed": 9})  # epoch 1 done
    sampler.set_epoch(2)
    assert list(sampler) == sampler.epoch_indices(2).tolist()


def test_load_state_dict_takes_the_checkpoints_seed_and_checks_consumed() -> None:
    sampler = RandomConcatSampler(_concat(), 3, seed=1)
    sampler.load_state_dict({"seed": 9, "epoch": 0, "rank": 0, "consumed": 0})
    assert list(sampler) == RandomConcatSampler(_concat(), 3, seed=9).epoch_indices(0).tolist()
    with pytest.raises(DataError, match=r"consumed=10 is outside this epoch's 9 samples"):
        sampler.load_state_dict({"seed": 9, "epoch": 0, "rank": 0, "consumed": 10})
    with pytest.raises(DataError, match=r"lacks \['epoch'\]"):
        sampler.load_state_dict({"seed": 9, "consumed": 0})


def test_empty_subset_is_an_error() -> None:
    with pytest.raises(DataError, match=r"sub-dataset\(s\) \[1\] have no pairs"):
        RandomConcatSampler(_concat((4, 0, 2)), 3)


# --- get_local_split ------------------------------------------------------------------------


def test_local_split_follows_the_spec_procedure() -> None:
    items = [f"scene{i}" for i in range(5)]
    permutation = np.random.RandomState(66).permutation(5)  # docs/original.md#datamodule step 1
    assert permutation.tolist() == [3, 1, 2, 0, 4]
    padding = np.random.RandomState(66).choice(5, 1, replace=True)  # step 2: 5 % 2 = 1 short
    assert padding.tolist() == [4]
    assert get_local_split(items, 2, 0) == ["scene3", "scene1", "scene2"]
    assert get_local_split(items, 2, 1) == ["scene0", "scene4", "scene4"]


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 7])
def test_local_splits_cover_the_list_and_are_disjoint_when_divisible(world_size: int) -> None:
    items = [f"s{i:02d}.npz" for i in range(15)]
    splits = [get_local_split(items, world_size, r, seed=66) for r in range(world_size)]
    per_rank = -(-len(items) // world_size)
    assert all(len(s) == per_rank for s in splits)  # equal epochs on every rank
    assert set().union(*splits) == set(items)
    flat = [x for s in splits for x in s]
    if len(items) % world_size == 0:
        assert sorted(flat) == sorted(items)  # disjoint: every scene exactly once
    else:
        assert len(flat) - len(set(flat)) == world_size - len(items) % world_size  # padding


def test_local_split_depends_on_seed() -> None:
    items = [f"s{i}" for i in range(8)]
    assert get_local_split(items, 2, 0, seed=66) != get_local_split(items, 2, 0, seed=1)
