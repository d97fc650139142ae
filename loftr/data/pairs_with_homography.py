"""``dataset=pairs_with_homography``: a user's image pairs with the homography of each
(docs/homographies.md#your-own-pairs).

A list file holds one pair per line, ``image0 image1 H_file``, paths relative to the split's
``{split}_data_root``; ``#`` starts a comment. ``H_file`` is a text file of a 3x3 matrix mapping
image 0's pixels ``(x, y, 1)`` to image 1's (pixel centres at integers, as OpenCV and HPatches
write them). Every line is checked when the dataset is built, before any work: its column count,
its two images (present) and its matrix (readable, 3x3, finite, invertible); a problem is one
line naming the list file and line.

Images are read like MegaDepth's (:func:`~loftr.data.megadepth.read_megadepth_gray`): the longer
side resized to ``mgdpt_img_resize``, floored to a multiple of ``mgdpt_df``, zero-padded to a
square with coarse masks when ``mgdpt_img_pad``; ``scale0``/``scale1`` give ``[w / w', h / h']``
so that the stored-image ``H_0to1`` applies to network-input pixels through them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from loftr.data.io import check_file, read_homography
from loftr.data.megadepth import coarse_mask, read_megadepth_gray
from loftr.data.source import (
    Source,
    as_list,
    list_set_names,
    required,
    split_lists,
)
from loftr.errors import ConfigError, DataError

DATASET_NAME = "PairsWithHomography"


def read_pair_list(list_path: str | Path, root: str | Path) -> list[tuple[str, str, np.ndarray]]:
    """``(image0, image1, H_0to1)`` per pair of a list file, every line checked.

    Raises:
        DataError: one line naming the list file and line: a missing list file, a line without
            three columns, a missing image, a homography file missing, unreadable, not 3x3,
            not finite or singular, or a list without a pair.
    """
    list_path = check_file(list_path, "pair list")
    root = Path(root)
    pairs = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        columns = line.split("#", 1)[0].split()
        if not columns:
            continue
        where = f"{list_path} line {number}"
        if len(columns) != 3:
            raise DataError(f"{where}: {len(columns)} column(s); expected 3 (image0 image1 H_file)")
        for image in columns[:2]:
            check_file(root / image, f"{where}: image")
        pairs.append((columns[0], columns[1], read_homography(root / columns[2], where)))
    if not pairs:
        raise DataError(f"pair list {list_path} holds no pair")
    return pairs


class PairsWithHomography(Dataset):
    """The pairs of one list file, as homography batch items (docs/homography.md#contract).

    Items: ``image0``/``image1`` ``(1, s, s)`` float32 (``(1, h', w')`` unpadded), ``H_0to1``
    ``(3, 3)`` float32 between the stored images and ``H_1to0``, ``scale0``/``scale1`` ``(2,)``,
    ``dataset_name`` ``"PairsWithHomography"``, ``scene_id`` (the list's stem), ``pair_id`` (the
    pair's position), ``pair_names`` (the two paths as listed); with padding also
    ``mask0``/``mask1`` at 1/8.

    Args:
        list_path: the list file.
        root: the folder its paths start from.
        img_resize: the longer side of the network input (px), or None to keep the stored size.
        df: the size divisibility factor, or None.
        img_padding: zero-pad to a square, with coarse masks.
    """

    def __init__(
        self,
        list_path: str | Path,
        root: str | Path,
        img_resize: int | None = 640,
        df: int | None = 8,
        img_padding: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.scene_id = Path(list_path).stem
        self.pairs = read_pair_list(list_path, root)
        self.img_resize, self.df, self.img_padding = img_resize, df, img_padding

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name0, name1, H = self.pairs[index]
        image0, mask0, scale0 = read_megadepth_gray(
            self.root / name0, self.img_resize, self.df, self.img_padding
        )
        image1, mask1, scale1 = read_megadepth_gray(
            self.root / name1, self.img_resize, self.df, self.img_padding
        )
        data: dict[str, Any] = {
            "image0": image0,
            "image1": image1,
            "H_0to1": torch.from_numpy(H.astype(np.float32)),
            "H_1to0": torch.from_numpy(np.linalg.inv(H).astype(np.float32)),
            "scale0": scale0,
            "scale1": scale1,
            "dataset_name": DATASET_NAME,
            "scene_id": self.scene_id,
            "pair_id": int(index),
            "pair_names": (name0, name1),
        }
        if mask0 is not None:
            data["mask0"] = coarse_mask(mask0)
            data["mask1"] = coarse_mask(mask1)
        return data


def _datasets(
    config: Mapping[str, Any], split: str, list_paths: Sequence[str], roots: Sequence[str]
) -> list[Dataset]:
    resize = config.get("mgdpt_img_resize")
    padding = bool(config.get("mgdpt_img_pad"))
    if split == "train" and (resize is None or not padding):
        # batches of more than one pair collate only at one padded size
        raise ConfigError(
            "dataset.mgdpt_img_resize must be set and dataset.mgdpt_img_pad true for training on "
            "pairs_with_homography"
        )
    return [
        PairsWithHomography(path, root, resize, config.get("mgdpt_df"), padding)
        for path, root in zip(list_paths, roots, strict=True)
    ]


def _lists(config: Mapping[str, Any], split: str) -> list[tuple[str, str]]:
    """``(list file, root)`` per set of ``split`` (``{split}_data_root`` shared or per list)."""
    lists = [str(p) for p in split_lists(config, split)]
    roots = as_list(required(config, f"{split}_data_root"), len(lists), f"{split}_data_root")
    return list(zip(lists, roots, strict=True))


def _train_scenes(config: Mapping[str, Any]) -> tuple[list[str], str]:
    lists = [path for path, _ in _lists(config, "train")]
    return lists, ", ".join(lists)


def _train_datasets(config: Mapping[str, Any], names: Sequence[str], seed: int) -> list[Dataset]:
    roots = dict(_lists(config, "train"))
    return _datasets(config, "train", names, [roots[n] for n in names])


def _eval_sets(config: Mapping[str, Any], split: str, seed: int) -> list[Dataset]:
    lists, roots = zip(*_lists(config, split), strict=True)
    return [ConcatDataset([d]) for d in _datasets(config, split, lists, roots)]


def check_pair_lists(config: Mapping[str, Any]) -> None:
    """Read every list file the node sets (with its root), so that a bad line is refused
    before a run starts (DataError naming the list file and line)."""
    for split in ("train", "val", "test"):
        if config.get(f"{split}_list_path") is not None:
            for list_path, root in _lists(config, split):
                read_pair_list(list_path, root)


SOURCE = Source(_train_scenes, _train_datasets, _eval_sets, list_set_names, check=check_pair_lists)
