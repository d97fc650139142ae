"""How a set of numbers was made: the test set (by its index files' hash), the input size, the
pose estimator and its settings (for homography sets also the RANSAC iterations, the top-k and
the corner convention, docs/hpatches.md#protocol). Numbers of different protocols are never compared
(docs/differences.md#7); evaluation, validation and the results collector share this one
definition, and this one way of finding a set's index files and input size from a run's config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from loftr.data.layout import list_names
from loftr.errors import ConfigError
from loftr.evaluation.metrics import ESTIMATORS

__all__ = [
    "CORNERS",
    "Protocol",
    "check_comparable",
    "evaluation_protocol",
    "hash_index",
    "homography_protocol",
    "hpatches_protocol",
    "index_files",
    "input_size",
    "validation_protocols",
]


#: The corner convention of the homography protocols: image 0's outer pixel centres (0, 0),
#: (w - 1, 0), (w - 1, h - 1), (0, h - 1), in network-input pixels (docs/hpatches.md#protocol).
CORNERS = "pixel-centres"
#: The data sources whose sets are scored by relative pose (the others by homography).
POSE_SOURCES = ("ScanNet", "MegaDepth")
#: The fields only homography protocols set.
HOMOGRAPHY_FIELDS = ("ransac_max_iters", "max_matches", "corners")


def hash_index(paths: str | Path | Iterable[str | Path], length: int = 12) -> str:
    """A short sha256 of a test set's index files (their names and bytes, in sorted order).

    Args:
        paths: one index file, a folder (all files under it) or several of either.
        length: number of hex digits kept.

    Returns:
        The hex digest prefix, identical for identical index contents.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"Test-set index {path} does not exist; cannot hash it.")
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:length]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a set of numbers was made (docs/differences.md#7).

    Numbers with different protocols must not be compared: :func:`check_comparable`.

    Attributes:
        test_set: the test set's name, e.g. ``"scannet_test_1500"``.
        index_hash: :func:`hash_index` of its index files.
        resize: the network input size: the longer side for MegaDepth (e.g. 840, 1200), or
            ``(width, height)`` for ScanNet (``(640, 480)``).
        estimator: one of :data:`ESTIMATORS` (``"RANSAC"`` is the paper protocol).
        ransac_pixel_thr: inlier threshold in pixels (0.5).
        ransac_conf: RANSAC confidence (0.99999).
        border_rm: coarse border removal at test time (0 for the ScanNet paper numbers,
            docs/original.md#model-configs).
        ransac_max_iters: the homography protocol's RANSAC iterations (None for pose sets).
        max_matches: the homography protocol's top matches by confidence (None for pose sets).
        corners: the homography protocol's corner convention (:data:`CORNERS`; None for pose
            sets). A homography protocol's ``resize`` is its input size rule, e.g.
            ``"shorter=480,df=8"`` (docs/hpatches.md#protocol).
    """

    test_set: str
    index_hash: str
    resize: int | tuple[int, int] | str | None
    estimator: str = "RANSAC"
    ransac_pixel_thr: float = 0.5
    ransac_conf: float = 0.99999
    border_rm: int = 2
    ransac_max_iters: int | None = None
    max_matches: int | None = None
    corners: str | None = None

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ConfigError(
                f"Protocol estimator {self.estimator!r} is unknown; choose one of "
                f"{sorted(ESTIMATORS)}."
            )
        if isinstance(self.resize, list):  # from YAML / JSON
            object.__setattr__(self, "resize", tuple(self.resize))

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict of the fields (``resize`` tuples become lists); a pose
        protocol leaves out the homography fields, as it was written before they existed."""
        out = dataclasses.asdict(self)
        if not self.homography:
            for name in HOMOGRAPHY_FIELDS:
                del out[name]
        if isinstance(out["resize"], tuple):
            out["resize"] = list(out["resize"])
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Protocol:
        """The inverse of :meth:`to_dict`; unknown keys are a ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"Unknown protocol field(s) {unknown}; expected {sorted(names)}.")
        return cls(**dict(values))

    def key(self) -> str:
        """A stable, readable string naming the protocol (equal protocols, equal keys).

        Example:
            >>> Protocol("scannet_test_1500", "ab12", (640, 480), border_rm=0).key()
            'scannet_test_1500@ab12|resize=640x480|RANSAC|thr=0.5px|conf=0.99999|border_rm=0'
        """
        if isinstance(self.resize, tuple):
            resize = "x".join(str(v) for v in self.resize)
        else:
            resize = str(self.resize)
        key = (
            f"{self.test_set}@{self.index_hash}|resize={resize}|{self.estimator}"
            f"|thr={self.ransac_pixel_thr:g}px|conf={self.ransac_conf:g}|border_rm={self.border_rm}"
        )
        if self.corners is None:  # a pose protocol
            return key
        return f"{key}|iters={self.ransac_max_iters}|top={self.max_matches}|corners={self.corners}"

    @property
    def homography(self) -> bool:
        """Whether the numbers are homography corner-error AUCs (else pose AUCs)."""
        return self.corners is not None


def check_comparable(protocol_a: Protocol, protocol_b: Protocol) -> None:
    """Raise unless two sets of numbers were made with the same protocol.

    Args:
        protocol_a: the protocol of the first numbers.
        protocol_b: the protocol of the second numbers.

    Raises:
        ConfigError: naming every differing field with both values.
    """
    a, b = protocol_a.to_dict(), protocol_b.to_dict()
    differing = [f"{name}: {a[name]!r} != {b[name]!r}" for name in a if a[name] != b[name]]
    if differing:
        raise ConfigError(
            "Numbers made with different evaluation protocols cannot be compared; differing "
            "field(s): " + "; ".join(differing)
        )


# --------------------------------------------------------------------------------------------
# A run config's evaluation sets
# --------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _source(dataset: Mapping[str, Any], split: str) -> str:
    return dataset["trainval_data_source" if split == "val" else "test_data_source"]


def index_files(
    dataset: Mapping[str, Any], split: str, index: int = 0, root: str | Path = "."
) -> list[Path]:
    """The index files that define evaluation set `index` of `split`: its list file and the npz
    files the list names (what :func:`hash_index` hashes).

    Args:
        dataset: the resolved `dataset` config.
        split: `val` (the training's validation sets) or `test` (`loftr.evaluate`'s set).
        index: the set's position in `dataset.<split>_list_path`.
        root: where relative dataset paths start (the run's working directory).

    Raises:
        FileNotFoundError: the list file is missing.
    """
    list_path = Path(root) / _as_list(dataset[f"{split}_list_path"])[index]
    npz_root = Path(root) / _as_list(dataset[f"{split}_npz_root"])[index]
    if not list_path.is_file():
        raise FileNotFoundError(
            f"{list_path} (dataset.{split}_list_path) is missing, so its protocol's index hash "
            "cannot be made."
        )
    names = [line.split()[0] for line in list_path.read_text().splitlines() if line.strip()]
    suffix = "" if _source(dataset, split) == "ScanNet" else ".npz"
    return [list_path, *(npz_root / f"{name}{suffix}" for name in names)]


def input_size(dataset: Mapping[str, Any], split: str) -> int | tuple[int, int]:
    """The network input size of `split`'s sets: MegaDepth's longer side, ScanNet's
    `(width, height)`."""
    if _source(dataset, split) == "MegaDepth":
        return int(dataset["mgdpt_img_resize"])
    return tuple(dataset.get("scannet_img_resize") or (640, 480))


def _set_protocol(
    config: Mapping[str, Any], split: str, index: int, name: str, root: str | Path
) -> Protocol:
    dataset, evaluation = config["dataset"], config["eval"]
    return Protocol(
        test_set=name,
        index_hash=hash_index(index_files(dataset, split, index, root)),
        resize=input_size(dataset, split),
        estimator=evaluation["pose_estimator"],
        ransac_pixel_thr=float(evaluation["ransac_pixel_thr"]),
        ransac_conf=float(evaluation["ransac_conf"]),
        border_rm=int(config["model"]["match_coarse"]["border_rm"]),
    )


def validation_protocols(config: Mapping[str, Any], root: str | Path = ".") -> dict[str, Protocol]:
    """The protocol of every validation set of a training config, by the set's name (the name
    its metrics carry), in `dataset.val_list_path` order.

    Args:
        config: the resolved run config: its `dataset`, `eval` and `model.match_coarse`.
        root: where relative dataset paths start (the run's working directory).

    Raises:
        FileNotFoundError: an index file is missing.
    """
    dataset = config["dataset"]
    if dataset.get("trainval_data_source") not in (None, *POSE_SOURCES):
        return _homography_validation_protocols(config, root)
    names = list_names(dataset.get("val_list_path"))
    return {name: _set_protocol(config, "val", i, name, root) for i, name in enumerate(names)}


def _homography_validation_protocols(
    config: Mapping[str, Any], root: str | Path
) -> dict[str, Protocol]:
    """The protocols of a homography source's validation sets (docs/hpatches.md#protocol), named
    as the source names them: list-file sets (your own pairs) are identified by their list files
    and sized by ``mgdpt_img_resize``; generated sets by their whole ``dataset.homographies``
    node (photographs, seed, warps) and sized by its ``image_size``."""
    from loftr.data.sources import source  # the source names its sets (loads torch: lazily)

    dataset = config["dataset"]
    names = source(str(dataset["trainval_data_source"])).set_names(dataset, "val")
    lists = dataset.get("val_list_path")
    protocols = {}
    for i, name in enumerate(names):
        if lists is not None:
            digest = hash_index(Path(root) / _as_list(lists)[i])
            resize = f"longer={int(dataset['mgdpt_img_resize'])}"
        else:
            node = dataset.get("homographies") or {}
            blob = json.dumps(node, sort_keys=True, default=str).encode()
            digest = hashlib.sha256(blob).hexdigest()[:12]
            resize = "x".join(str(v) for v in node.get("image_size") or ())
        protocols[name] = homography_protocol(name, digest, resize, config)
    return protocols


def homography_protocol(
    name: str, index_hash: str, resize: str, config: Mapping[str, Any]
) -> Protocol:
    """The protocol of a homography set: its input size rule and the ``eval.homography``
    settings (docs/hpatches.md#protocol).

    Args:
        name: the set's name.
        index_hash: what identifies its pairs and ground truth.
        resize: the input size rule, e.g. ``"shorter=480,df=8"``.
        config: `eval` and the effective `model` config.
    """
    settings = config["eval"]["homography"]
    return Protocol(
        test_set=name,
        index_hash=index_hash,
        resize=resize,
        estimator="RANSAC",
        ransac_pixel_thr=float(settings["ransac_thr"]),
        ransac_conf=float(settings["ransac_conf"]),
        border_rm=int(config["model"]["match_coarse"]["border_rm"]),
        ransac_max_iters=int(settings["ransac_max_iters"]),
        max_matches=int(settings["max_matches"]),
        corners=CORNERS,
    )


def hpatches_protocol(config: Mapping[str, Any], root: str | Path = ".") -> Protocol:
    """The protocol of an HPatches-layout test set: named by the dataset (``hpatches``,
    ``hpatches_heldout``), its hash over the evaluated sequences and their homography files
    (:func:`loftr.data.hpatches.hash_sequences`), the resize rule and the homography settings.
    """
    from loftr.data.hpatches import hash_sequences, list_sequences, setup_step

    node = config["dataset"]["hpatches"]
    folder = Path(root) / node["root"]
    sequences = list_sequences(folder, node["exclude"], setup_step(node, folder))
    digest = hash_sequences(folder, sequences)
    rule = f"shorter={int(node['shorter_side'])},df={int(node['df'])}"
    return homography_protocol(str(config["dataset"]["name"]), digest, rule, config)


def evaluation_protocol(config: Mapping[str, Any], root: str | Path = ".") -> Protocol:
    """The protocol of `loftr.evaluate`'s test set, named like a validation set (its list's
    stem), so that the same files are one protocol whichever command scored them; an HPatches
    set is named by its dataset (:func:`hpatches_protocol`).

    Args:
        config: `dataset`, `eval` and the effective `model` config of the evaluation.
        root: where relative dataset paths start.
    """
    if config["dataset"].get("test_data_source") == "HPatches":
        return hpatches_protocol(config, root)
    name = Path(str(_as_list(config["dataset"]["test_list_path"])[0])).stem
    return _set_protocol(config, "test", 0, name, root)
