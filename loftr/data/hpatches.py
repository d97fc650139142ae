"""HPatches sequences: the homography benchmark of the LoFTR paper's Table 1
(docs/hpatches.md).

The release's layout is ``<root>/hpatches-sequences-release/<sequence>/``, one folder per planar
scene: ``i_*`` sequences change the illumination (a fixed camera), ``v_*`` sequences the viewpoint.
Each folder holds ``1.ppm`` .. ``6.ppm`` and ``H_1_2`` .. ``H_1_6``, text files of a 3x3 matrix that
maps pixel coordinates ``(x, y, 1)`` of image 1 to those of image k (pixel centres at integer
coordinates). One item per ``(sequence, k)`` pairs image 1 with image k.

Each image is resized so that its shorter side is ``shorter_side`` (480, the paper's setting) and
both sides are multiples of ``df`` (8): both sides are scaled by ``shorter_side / min(w, h)``,
rounded to the nearest pixel and floored to a multiple of ``df`` (:func:`input_size`). The two
axes may end up with slightly different factors; ``scale0``/``scale1`` carry them exactly
(``[w / w', h / h']``, ``x_stored = x_input * scale``), so the stored homography and the scales
together give the input-frame homography without any approximation of the resize itself.

:data:`SOURCE` serves the ``test_data_source: HPatches`` sets to the DataModule
(:mod:`loftr.data.sources`): one test set named by the dataset; training refuses it.

Example:
    >>> dataset = HPatchesDataset("data/hpatches")  # doctest: +SKIP
    >>> item = dataset[0]; item["image0"].shape, item["kind"]  # doctest: +SKIP
    (torch.Size([1, 480, 640]), 'illumination')
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from loftr.data.io import check_dir, read_gray, read_homography
from loftr.data.layout import setup_hint
from loftr.data.source import Config, Source, required
from loftr.errors import ConfigError, DataError

#: The folder of the release under the dataset root.
RELEASE_FOLDER = "hpatches-sequences-release"
#: The sequence kinds, by the prefix of their folder name.
KINDS = {"i": "illumination", "v": "viewpoint"}
#: Image 1 is the reference; images 2..6 are paired with it.
TARGETS = (2, 3, 4, 5, 6)
#: Sequences per kind in the full release, and what the paper's protocol keeps of them.
FULL_RELEASE = {"illumination": 57, "viewpoint": 59}
PROTOCOL_COUNTS = {"illumination": 52, "viewpoint": 56}


def protocol_exclude() -> list[str]:
    """The sequences the paper's protocol leaves out: ``dataset.hpatches.exclude`` of
    ``conf/dataset/hpatches.yaml`` (the set-up command's check reads them from there)."""
    import yaml

    from loftr.config.schema import CONF_DIR

    config = yaml.safe_load((CONF_DIR / "dataset" / "hpatches.yaml").read_text())
    return list(config["hpatches"]["exclude"])


def image_name(k: int) -> str:
    """The file of image ``k`` of a sequence (``1.ppm`` .. ``6.ppm``)."""
    return f"{k}.ppm"


def homography_name(k: int) -> str:
    """The file of the homography from image 1 to image ``k`` (``H_1_2`` .. ``H_1_6``)."""
    return f"H_1_{k}"


def sequence_kind(name: str) -> str | None:
    """``illumination`` or ``viewpoint`` from a sequence's prefix; None for another name."""
    prefix, _, rest = name.partition("_")
    return KINDS.get(prefix) if rest else None


def input_size(w: int, h: int, shorter_side: int = 480, df: int = 8) -> tuple[int, int]:
    """The network input ``(w', h')`` of a ``w`` x ``h`` image (docs/hpatches.md#input-size).

    Both sides are scaled by ``shorter_side / min(w, h)``, rounded to the nearest integer, then
    floored to a multiple of ``df``.

    Example:
        >>> input_size(800, 600)
        (640, 480)
        >>> input_size(451, 300)  # 721.6 -> 722 -> 720
        (720, 480)
    """
    scale = shorter_side / min(w, h)
    w_new, h_new = int(round(w * scale)), int(round(h * scale))
    return w_new // df * df, h_new // df * df


def release_folder(root: str | os.PathLike, hint: str | None = None) -> Path:
    """``<root>/hpatches-sequences-release``, checked to be a folder."""
    return check_dir(Path(root) / RELEASE_FOLDER, "HPatches sequences folder", hint)


def list_sequences(
    root: str | os.PathLike, exclude: Iterable[str] = (), hint: str | None = None
) -> list[str]:
    """The sequences of the protocol: every ``i_*`` / ``v_*`` folder of the release but ``exclude``.

    When the folder holds the full release (57 illumination and 59 viewpoint sequences), the kept
    counts must be the protocol's 52 and 56, so that a wrong ``exclude`` list cannot go unnoticed.

    Raises:
        DataError: the release folder is missing, holds no sequence, or a full release is not cut
            to the protocol's counts by ``exclude``.
    """
    folder = release_folder(root, hint)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and sequence_kind(p.name))
    if not names:
        raise DataError(f"HPatches sequences folder {folder} holds no i_* or v_* sequence folder")
    excluded = set(exclude)
    kept = [name for name in names if name not in excluded]
    if kind_counts(names) == FULL_RELEASE and kind_counts(kept) != PROTOCOL_COUNTS:
        raise DataError(
            f"{folder} is the full HPatches release, but leaving out dataset.hpatches.exclude "
            f"keeps {kind_counts(kept)} sequences instead of the protocol's {PROTOCOL_COUNTS}; "
            "the list names the 8 high-resolution sequences (docs/hpatches.md#sequences)"
        )
    return kept


def kind_counts(names: Iterable[str]) -> dict[str, int]:
    """How many of ``names`` are illumination and viewpoint sequences."""
    counts = dict.fromkeys(FULL_RELEASE, 0)
    for name in names:
        counts[str(sequence_kind(name))] += 1
    return counts


def hash_sequences(root: str | os.PathLike, sequences: Sequence[str], length: int = 12) -> str:
    """A short sha256 of the protocol's sequence list and ground truth: each sequence's name and
    the bytes of its homography files, in order (the protocol's ``index_hash``)."""
    folder = Path(root) / RELEASE_FOLDER
    digest = hashlib.sha256()
    for name in sequences:
        for k in TARGETS:
            digest.update(f"{name}/{homography_name(k)}\n".encode())
            path = folder / name / homography_name(k)
            digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:length]


class HPatchesDataset(Dataset):
    """The ``(sequence, k)`` pairs of an HPatches-layout folder, as homography batches.

    Items carry ``image0`` (image 1), ``image1`` (image k), ``(1, h', w')`` float32 grey in
    [0, 1]; ``H_0to1`` (the stored ``H_1_k``) and ``H_1to0``, float32, in stored pixels;
    ``scale0``/``scale1`` ``[w / w', h / h']``; ``dataset_name`` ``"HPatches"``, ``scene_id``
    (the sequence), ``kind`` (``illumination`` / ``viewpoint``), ``pair_id`` (``k``) and
    ``pair_names`` (the two image paths relative to the release folder).

    Args:
        root: the folder holding ``hpatches-sequences-release/``.
        exclude: sequences left out (the protocol's 8 high-resolution ones).
        shorter_side: the shorter side of the network input (480).
        df: both input sides are multiples of it (8).
        hint: the set-up step quoted when the folder is missing.

    Raises:
        DataError: the folder or its sequences are missing (:func:`list_sequences`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        exclude: Iterable[str] = (),
        shorter_side: int = 480,
        df: int = 8,
        hint: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.folder = self.root / RELEASE_FOLDER
        self.sequences = list_sequences(root, exclude, hint)
        self.shorter_side = int(shorter_side)
        self.df = int(df)
        self.pairs = [(name, k) for name in self.sequences for k in TARGETS]

    def __len__(self) -> int:
        return len(self.pairs)

    def file_checks(self) -> Iterator[tuple[str, Callable[[], object]]]:
        """``(file, check)`` for every image and homography file of the sequences."""
        for name in self.sequences:
            for k in (1, *TARGETS):
                path = self.folder / name / image_name(k)
                yield str(path), lambda path=path: read_gray(path)
            for k in TARGETS:
                path = self.folder / name / homography_name(k)
                yield str(path), lambda path=path: read_homography(path)

    def _image(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_gray(path)
        h, w = image.shape
        w_new, h_new = input_size(w, h, self.shorter_side, self.df)
        image = cv2.resize(image, (w_new, h_new))  # bilinear, as every resize here
        scale = torch.tensor([w / w_new, h / h_new], dtype=torch.float32)
        return torch.from_numpy(image).float()[None] / 255.0, scale

    def __getitem__(self, idx: int) -> dict[str, Any]:
        name, k = self.pairs[idx]
        image0, scale0 = self._image(self.folder / name / image_name(1))
        image1, scale1 = self._image(self.folder / name / image_name(k))
        H = read_homography(self.folder / name / homography_name(k))
        return {
            "image0": image0,
            "image1": image1,
            "H_0to1": torch.from_numpy(H).float(),
            "H_1to0": torch.from_numpy(np.linalg.inv(H)).float(),
            "scale0": scale0,
            "scale1": scale1,
            "dataset_name": "HPatches",
            "scene_id": name,
            "kind": str(sequence_kind(name)),
            "pair_id": k,
            "pair_names": (f"{name}/{image_name(1)}", f"{name}/{image_name(k)}"),
        }


# --- the data source (loftr.data.sources): one test set, named by the dataset ---------------------


def setup_step(node: Config, root: str | os.PathLike) -> str:
    """The step that makes the folder of a ``dataset.hpatches`` node: the set-up command for the
    real release, the generator for a generated set (``generate_seed``)."""
    return setup_hint("hpatches" if node.get("generate_seed") is None else "hpatches_heldout", root)


def _not_for_training(config: Config, *args: Any) -> Any:
    raise ConfigError(
        f"dataset {config.get('name')} (HPatches) is a test set for python -m loftr.evaluate; "
        "training cannot read it"
    )


def _check(config: Config) -> None:
    """HPatches is a test set: ``trainval_data_source`` may not name it."""
    if config.get("trainval_data_source") == "HPatches":
        raise ConfigError(
            "dataset.trainval_data_source='HPatches' is a test set (test_data_source only); train "
            "on another source and test with python -m loftr.evaluate dataset=hpatches"
        )


def _eval_sets(config: Config, split: str, seed: int) -> list[Dataset]:
    if split != "test":
        _not_for_training(config)
    node = required(config, "hpatches")
    dataset = HPatchesDataset(
        node["root"],
        node["exclude"],
        int(node["shorter_side"]),
        int(node["df"]),
        hint=setup_step(node, node["root"]),
    )
    return [dataset]


def _set_names(config: Config, split: str) -> list[str]:
    return [str(config.get("name"))] if split == "test" else []


SOURCE = Source(_not_for_training, _not_for_training, _eval_sets, _set_names, check=_check)
