"""The data sources the DataModule serves, each with the builder of its datasets.

``SOURCES`` maps a ``dataset.trainval_data_source`` / ``dataset.test_data_source`` value to a
:class:`Source`: where its training "scenes" are listed, how one dataset per scene is built, its
validation and test sets and their names. The DataModule (``loftr.data.datamodule``) does the
rest the same way for every source: the per-rank split of the scenes, the
:class:`~loftr.data.sampler.RandomConcatSampler` and its checkpointed state, the loaders.

The depth sources (ScanNet, MegaDepth: docs/original.md#datamodule) build one dataset per scene
index; the homography sources (docs/homographies.md) one per photograph or list file. A new source
is a builder module (a :class:`~loftr.data.source.Source`) plus one entry in :data:`BUILDERS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch.utils.data import Dataset

from loftr.data.io import check_dir, read_list
from loftr.data.layout import setup_hint
from loftr.data.source import Config, Source, as_list, key, required, split_lists
from loftr.errors import ConfigError, DataError

# The five per-split keys of the original data configs (docs/original.md#config-defaults).
SPLIT_KEYS = ("data_root", "pose_root", "npz_root", "list_path", "intrinsic_path")
# MegaDepth masks are always downsampled by 1/8: the original never passes coarse_scale through
# (docs/original.md#megadepth).
MEGADEPTH_COARSE_SCALE = 0.125

# --- the depth sources: ScanNet and MegaDepth scene indices (docs/original.md#datamodule) --------


def _index_hint(config: Config, source: str, split: str, path: str | os.PathLike) -> str:
    """The set-up step that makes the index holding ``path``; for a prepared set
    (``dataset.root``, ``dataset=custom``), the converters' command."""
    if config.get("root") is not None:
        return setup_hint("prepared", config["root"])
    part = ("scannet" if source == "ScanNet" else "megadepth") + (
        "_index" if split == "train" else "_test_index"
    )
    return setup_hint(part, Path(path).parent)


def _depth_datasets(
    config: Config,
    source: str,
    split: str,
    data_root: str,
    pose_root: str | None,
    npz_root: str,
    names: Sequence[str],
    intrinsic_path: str | None,
    list_path: str,
) -> list[Dataset]:
    """One dataset per listed scene index; every missing index is named at once."""
    hint = _index_hint(config, source, split, Path(npz_root) / "x")
    check_dir(npz_root, f"{source} {split} index folder", hint)
    # docs/original.md#datamodule: ScanNet list entries include ".npz"; MegaDepth entries are
    # stems.
    files = [Path(npz_root) / (name if source == "ScanNet" else f"{name}.npz") for name in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} scene index file(s) listed in {list_path} are not there: "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''}; {hint}"
        )
    score_key = "min_overlap_score_train" if split == "train" else "min_overlap_score_test"
    min_score = float(config.get(score_key, 0.4 if split == "train" else 0.0))
    if source == "ScanNet":
        from loftr.data.scannet import ScanNetDataset

        if intrinsic_path is None:
            raise ConfigError(f"dataset.{split}_intrinsic_path must be set for ScanNet")
        resize = tuple(config.get("scannet_img_resize") or (640, 480))
        return [
            ScanNetDataset(
                data_root,
                f,
                intrinsic_path,
                mode=split,
                min_overlap_score=min_score,
                pose_dir=pose_root,
                img_resize=resize,
            )
            for f in files
        ]
    from loftr.data.megadepth import MegaDepthDataset

    # a prepared set's images and depths come from the converters' command, as its indices do
    prepared = hint if config.get("root") is not None else None
    return [
        MegaDepthDataset(
            data_root,
            f,
            mode=split,
            min_overlap_score=min_score,
            img_resize=config.get("mgdpt_img_resize", 640),
            df=config.get("mgdpt_df", 8),
            img_padding=bool(config.get("mgdpt_img_pad", True)),
            depth_padding=bool(config.get("mgdpt_depth_pad", True)),
            coarse_scale=MEGADEPTH_COARSE_SCALE,
            setup=prepared,
        )
        for f in files
    ]


def _depth_source(source: str) -> Source:
    """ScanNet or MegaDepth: the scenes are the index files a list names."""

    def train_scenes(config: Config) -> tuple[list[str], str]:
        list_path = required(config, "train_list_path")
        return read_list(list_path, _index_hint(config, source, "train", list_path)), str(list_path)

    def train_datasets(config: Config, names: Sequence[str], seed: int) -> list[Dataset]:
        return _depth_datasets(
            config,
            source,
            "train",
            data_root=required(config, "train_data_root"),
            pose_root=key(config, "train_pose_root"),
            npz_root=required(config, "train_npz_root"),
            names=names,
            intrinsic_path=key(config, "train_intrinsic_path"),
            list_path=required(config, "train_list_path"),
        )

    def eval_sets(config: Config, split: str, seed: int) -> list[Dataset]:
        from torch.utils.data import ConcatDataset

        list_paths = split_lists(config, split)
        n = len(list_paths)
        columns = {k: as_list(key(config, f"{split}_{k}"), n, f"{split}_{k}") for k in SPLIT_KEYS}
        sets: list[Dataset] = []
        for i, list_path in enumerate(list_paths):
            if columns["data_root"][i] is None or columns["npz_root"][i] is None:
                raise ConfigError(f"dataset.{split}_data_root and {split}_npz_root must be set")
            names = read_list(list_path, _index_hint(config, source, split, list_path))
            datasets = _depth_datasets(
                config,
                source,
                split,
                data_root=columns["data_root"][i],
                pose_root=columns["pose_root"][i],
                npz_root=columns["npz_root"][i],
                names=names,
                intrinsic_path=columns["intrinsic_path"][i],
                list_path=list_path,
            )
            sets.append(ConcatDataset(datasets))
        return sets

    return Source(train_scenes, train_datasets, eval_sets)


def _homographies() -> Source:
    from loftr.data import homographies

    return homographies.SOURCE


def _pairs_with_homography() -> Source:
    from loftr.data import pairs_with_homography

    return pairs_with_homography.SOURCE


def _hpatches() -> Source:
    from loftr.data import hpatches

    return hpatches.SOURCE


#: Each source's builder, made when first asked for (a builder module may load heavy packages).
BUILDERS: dict[str, Callable[[], Source]] = {
    "ScanNet": lambda: _depth_source("ScanNet"),
    "MegaDepth": lambda: _depth_source("MegaDepth"),
    "Homographies": _homographies,
    "PairsWithHomography": _pairs_with_homography,
    "HPatches": _hpatches,
}
#: The source names a dataset config may give.
SOURCES = tuple(BUILDERS)


def source(name: str) -> Source:
    """The builder of source ``name``; ConfigError for an unknown one."""
    if name not in BUILDERS:
        raise ConfigError(f"data source {name!r}; use one of {list(SOURCES)}")
    return BUILDERS[name]()
