"""The ``data/`` layout of the original LoFTR (docs/original.md#data-layout,
docs/original.md#data-configs) and the set-up step each part of it needs.

The datasets, the DataModule and the pre-flight check read the paths from here and quote
:func:`setup_hint` when something is missing; ``python -m loftr.data.setup`` makes the layout.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

# A ScanNet scene folder: scene<4 digits>_<2 digits>.
SCANNET_SCENE = re.compile(r"^scene\d{4}_\d{2}$")

# What the python -m loftr.data.setup command takes for each part.
_STEPS = {
    "scannet_train": (
        "link the python-exported ScanNet train scenes: ln -s /path/to/scannet_train/* {path} "
        "(TRAINING.md; or python -m loftr.data.setup scannet --train /path/to/scannet_train)"
    ),
    "scannet_test": (
        "link the ScanNet test scenes: ln -s /path/to/scannet_test/* {path} (TRAINING.md; or "
        "tar xf testdata/scannet_test_1500.tar, or python -m loftr.data.setup scannet "
        "--test /path/to/scannet_test)"
    ),
    "scannet_index": (
        "extract scannet_indices.tar (tar xf train-data/scannet_indices.tar) and "
        "ln -s /path/to/scannet_indices/* {path} (TRAINING.md; or python -m loftr.data.setup "
        "scannet --indices scannet_indices.tar)"
    ),
    "scannet_test_index": (
        "copy assets/scannet_test_1500 (test.npz, intrinsics.npz, scannet_test.txt) from the "
        "original LoFTR repository to {path} (or python -m loftr.data.setup scannet "
        "--assets /path/to/LoFTR/assets)"
    ),
    "megadepth_root": (
        "link MegaDepth's phoenix/ and Undistorted_SfM/ folders: ln -s /path/to/megadepth/phoenix "
        "/path/to/megadepth/Undistorted_SfM {path}/ (TRAINING.md, docs/original.md#data-layout; "
        "or python -m loftr.data.setup megadepth --train /path/to/megadepth)"
    ),
    "megadepth_index": (
        "extract megadepth_indices.tar (tar xf train-data/megadepth_indices.tar) and "
        "ln -s /path/to/megadepth_indices/* {path} (TRAINING.md; or python -m loftr.data.setup "
        "megadepth --indices megadepth_indices.tar)"
    ),
    "megadepth_test_index": (
        "copy assets/megadepth_test_1500_scene_info from the original LoFTR repository to {path} "
        "(or python -m loftr.data.setup megadepth --assets /path/to/LoFTR/assets)"
    ),
    "prepared": (
        "a prepared set is made by python -m loftr.data.prepare colmap|rgbd --out {path} "
        "--split train|val|test, one scene per run (docs/prepare.md)"
    ),
    "hpatches": (
        "download hpatches-sequences-release.tar.gz (the HPatches sequences) and run python -m "
        "loftr.data.setup hpatches --testdata hpatches-sequences-release.tar.gz (or --test "
        "/path/to/folder/holding/hpatches-sequences-release) to make {path}/"
        "hpatches-sequences-release (docs/hpatches.md#set-up)"
    ),
    "hpatches_heldout": (
        "the held-out HPatches-layout set is generated on first use by "
        "loftr.data.synthetic.hpatches.ensure_hpatches_heldout (LoFTRDataModule.prepare_data, "
        "or python -m loftr.evaluate dataset=hpatches_heldout); delete {path} and rerun to "
        "regenerate it"
    ),
}

_SYNTHETIC = (
    "the synthetic set is generated on first use by loftr.data.synthetic.ensure_synthetic "
    "(LoFTRDataModule.prepare_data, or python -m loftr.train); delete {path} and rerun to "
    "regenerate it"
)


def setup_hint(part: str, path: str | os.PathLike | None = None) -> str:
    """The set-up step that makes ``part`` of the layout, mentioning ``path``.

    Args:
        part: one of ``scannet_train``, ``scannet_test``, ``scannet_index``,
            ``scannet_test_index``, ``megadepth_root``, ``megadepth_index``,
            ``megadepth_test_index``, ``prepared`` (a set of loftr.data.prepare), ``hpatches``,
            ``hpatches_heldout``.
        path: the path the step should create (shown in the message); a path under a
            ``synthetic`` folder gets the synthetic generator's step instead.

    Returns:
        A one-line instruction.
    """
    shown = str(path) if path is not None else f"data/{part.split('_')[0]}/..."
    if path is not None and "synthetic" in Path(path).parts:
        return _SYNTHETIC.format(path=shown)
    if path is not None and part in ("scannet_index", "megadepth_index"):
        shown = str(_index_root(Path(path)))
    return _STEPS[part].format(path=shown)


def list_names(paths: str | os.PathLike | list | tuple | None) -> list[str]:
    """A name per list file: its stem, made unique by its position where stems repeat.

    The DataModule names its validation loaders so, and every metric and protocol of a
    validation set carries the name; empty for no list (``None``).
    """
    if paths is None:
        return []
    paths = list(paths) if isinstance(paths, (list, tuple)) else [paths]
    stems = [Path(str(p)).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(stems)]


def _index_root(path: Path) -> Path:
    """The folder the index archive's contents are linked into, from a path inside it.

    ``data/scannet/index/scene_data/train_list`` -> ``data/scannet/index``;
    ``data/megadepth/index/scene_info_0.1_0.7`` -> ``data/megadepth/index``.
    """
    for candidate in (path, *path.parents):
        name = candidate.name
        if name in ("scene_data", "trainvaltest_list") or name.startswith("scene_info_"):
            return candidate.parent
    return path


# --- the layout (docs/original.md#data-configs, #data-layout): paths relative to the data folder or
# the assets folder -----

LAYOUT = {
    "scannet": {
        "train_root": "scannet/train",
        "test_root": "scannet/test",
        "index": "scannet/index",
        "train_npz_root": "scannet/index/scene_data/train",
        "train_list": "scannet/index/scene_data/train_list/scannet_all.txt",
        "train_intrinsics": "scannet/index/intrinsics.npz",
    },
    "megadepth": {
        "train_root": "megadepth/train",
        "test_root": "megadepth/test",
        "index": "megadepth/index",
        "train_npz_root": "megadepth/index/scene_info_0.1_0.7",
        "train_list": "megadepth/index/trainvaltest_list/train_list.txt",
        "val_npz_root": "megadepth/index/scene_info_val_1500",
        "val_list": "megadepth/index/trainvaltest_list/val_list.txt",
    },
    # the folder that holds hpatches-sequences-release/ (docs/hpatches.md#set-up)
    "hpatches": {"root": "hpatches"},
}
ASSETS = {
    "scannet": {
        "folder": "scannet_test_1500",
        "list": "scannet_test_1500/scannet_test.txt",
        "intrinsics": "scannet_test_1500/intrinsics.npz",
    },
    "megadepth": {
        "folder": "megadepth_test_1500_scene_info",
        "list": "megadepth_test_1500_scene_info/megadepth_test_1500.txt",
    },
}

# The setup_hint parts that make the train and the test image roots.
_ROOT_PARTS = {
    "scannet": ("scannet_train", "scannet_test"),
    "megadepth": ("megadepth_root", "megadepth_root"),
}


@dataclass(frozen=True)
class IndexSplit:
    """One split of a dataset's indices: where its list, scene indices and images are, how
    training reads it (``mode``: ``train``, ``val`` or ``test``) and the set-up steps
    (:func:`setup_hint` parts) that make its image root and its index."""

    label: str
    list_file: Path
    npz_root: Path
    root: Path
    mode: str
    root_part: str
    index_part: str
    intrinsics: Path | None = None


def index_splits(dataset: str, data_dir: Path, assets_dir: Path) -> list[IndexSplit]:
    """The splits of ``dataset`` (ScanNet: train, test; MegaDepth: train, val, test) under
    ``data_dir`` and ``assets_dir`` (docs/original.md#data-configs, #data-layout)."""
    layout, assets = LAYOUT[dataset], ASSETS[dataset]
    train_part, test_part = _ROOT_PARTS[dataset]
    train = IndexSplit(
        "train",
        data_dir / layout["train_list"],
        data_dir / layout["train_npz_root"],
        data_dir / layout["train_root"],
        "train",
        train_part,
        f"{dataset}_index",
    )
    test = IndexSplit(
        "test",
        assets_dir / assets["list"],
        assets_dir / assets["folder"],
        data_dir / layout["test_root"],
        "test",
        test_part,
        f"{dataset}_test_index",
    )
    if dataset == "scannet":
        # the ScanNet-1500 pairs validate training, so they are read as val items (with depth)
        return [
            replace(train, intrinsics=data_dir / layout["train_intrinsics"]),
            replace(test, mode="val", intrinsics=assets_dir / assets["intrinsics"]),
        ]
    val = replace(
        train,
        label="val",
        list_file=data_dir / layout["val_list"],
        npz_root=data_dir / layout["val_npz_root"],
        root=test.root,
        mode="val",
    )
    return [train, val, test]
