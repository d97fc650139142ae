"""MegaDepth scene infos: the pickled dicts of docs/original.md#megadepth, or a pickle-free
``.npz`` of the same arrays.

Pickles are loaded with a restricted unpickler that admits only what numpy arrays and plain
containers need and refuses every other global *before* it is looked up, so a crafted file cannot
run code (docs/differences.md#5).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from loftr.data.io import PathLike, check_file
from loftr.errors import DataError

# Keys of a MegaDepth scene-info dict (docs/original.md#megadepth).
SCENE_INFO_KEYS = ("image_paths", "depth_paths", "intrinsics", "poses", "pair_infos")

# The sub-scene overlap bins of the original training index, [lo, hi): one scene info per bin
# (docs/original.md#megadepth).
OVERLAP_BINS = ((0.1, 0.3), (0.3, 0.5), (0.5, 0.7))


def bin_stem(scene: str, lo: float, hi: float) -> str:
    """The stem of ``scene``'s scene info for the overlap bin ``[lo, hi)``: ``0015_0.1_0.3``."""
    return f"{scene}_{lo:.1f}_{hi:.1f}"


# Header bytes that tell the two scene-info encodings apart.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"

# numpy moved its internals from numpy.core to numpy._core in 2.0; pickles name either.
_NUMPY_CORE = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
}

# The globals a pickle of numpy arrays and plain containers refers to. Nothing here can reach
# the file system, the interpreter or an arbitrary class.
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),  # ndarray.__reduce__
    ("numpy._core.multiarray", "scalar"),  # numpy scalar __reduce__
    ("numpy._core.numeric", "_frombuffer"),  # ndarray.__reduce_ex__ with protocol 5
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes pickled with protocol 2 under Python 3
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("builtins", "bytearray"),
    ("builtins", "bytes"),
    ("collections", "OrderedDict"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :data:`_ALLOWED_GLOBALS`."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        key = (_NUMPY_CORE.get(module, module), name)
        if key not in _ALLOWED_GLOBALS:
            raise DataError(
                f"scene info {self._path} refers to the global {module}.{name}, which is not a "
                "numpy array or plain container; refusing to load it (only trusted index files "
                "may be used)"
            )
        try:
            return super().find_class(*key)
        except ModuleNotFoundError:  # numpy < 2 has no numpy._core
            return super().find_class(key[0].replace("numpy._core", "numpy.core"), name)


def _normalise_npz_scene_info(data: Mapping[str, np.ndarray], path: Path) -> dict[str, Any]:
    """Turn a pickle-free npz scene info (see :func:`save_scene_info_npz`) into the dict form."""
    info: dict[str, Any] = {}
    for key in ("image_paths", "depth_paths"):
        if key in data:
            # Empty strings stand for the original's None slots.
            info[key] = np.array([str(v) or None for v in data[key]], dtype=object)
    for key in ("intrinsics", "poses"):
        if key in data:
            info[key] = np.asarray(data[key])
    if "pair_infos" not in data and "pairs" in data and "overlap_scores" in data:
        pairs = np.asarray(data["pairs"])
        scores = np.asarray(data["overlap_scores"])
        central = (
            np.asarray(data["central_matches"])
            if "central_matches" in data
            else np.zeros((len(pairs), 4), dtype=np.float64)
        )
        if pairs.ndim != 2 or pairs.shape[1] != 2 or scores.shape != (len(pairs),):
            raise DataError(
                f"scene info {path}: 'pairs' must be (P, 2) and 'overlap_scores' (P,); got "
                f"{pairs.shape} and {scores.shape}"
            )
        info["pair_infos"] = [
            ((int(i0), int(i1)), float(s), c)
            for (i0, i1), s, c in zip(pairs, scores, central, strict=True)
        ]
    return info


def load_scene_info(path: PathLike, hint: str | None = None) -> dict[str, Any]:
    """Load a MegaDepth scene info safely (docs/original.md#megadepth;
    docs/differences.md#5).

    The original files are pickled dicts despite their ``.npz`` suffix. They are read with an
    unpickler that admits only numpy arrays and plain containers; any other global is refused
    before it is resolved, so the file's code never runs. A real ``.npz`` zip (as written by
    :func:`save_scene_info_npz`) is read with ``allow_pickle=False``.

    Args:
        path: the scene-info file.
        hint: the set-up step that makes the file, appended to a "missing" message.

    Returns:
        A dict with ``image_paths`` ``(N,)`` object (relative paths or None), ``depth_paths``
        ``(N,)``, ``intrinsics`` ``(N, 3, 3)`` at original resolution, ``poses`` ``(N, 4, 4)``
        world-to-camera and ``pair_infos``: a list of ``((idx0, idx1), overlap, central_matches)``.

    Raises:
        DataError: the file is missing, corrupt, refers to a forbidden global, or lacks keys.
    """
    p = check_file(path, "scene info", hint)
    with open(p, "rb") as f:
        head = f.read(4)
    try:
        if head.startswith(_ZIP_MAGIC):
            with np.load(p, allow_pickle=False) as data:
                info = _normalise_npz_scene_info(data, p)
        elif head.startswith(_PICKLE_MAGIC):
            with open(p, "rb") as f:
                info = _ArrayOnlyUnpickler(f, p).load()
        else:
            raise DataError(
                f"scene info {p} is neither a pickled dict nor an npz zip (starts with {head!r})"
            )
    except DataError:
        raise
    except Exception as err:  # any unpickling/zip failure means a corrupt file
        raise DataError(f"scene info {p} is corrupt ({type(err).__name__}: {err})") from err
    if not isinstance(info, dict):
        raise DataError(f"scene info {p} holds a {type(info).__name__}; expected a dict")
    missing = [k for k in SCENE_INFO_KEYS if k not in info]
    if missing:
        raise DataError(f"scene info {p} lacks the key(s) {missing} (has {sorted(info)})")
    return info


def save_scene_info_npz(info: Mapping[str, Any], path: PathLike) -> Path:
    """Write a scene-info dict as a pickle-free ``.npz`` that :func:`load_scene_info` reads.

    ``image_paths``/``depth_paths`` become unicode arrays (None -> ""), and ``pair_infos`` is
    split into ``pairs`` ``(P, 2)`` int64, ``overlap_scores`` ``(P,)`` float64 and
    ``central_matches`` ``(P, 4)`` float64.

    Args:
        info: a dict as returned by :func:`load_scene_info`.
        path: the output file; numpy appends ``.npz`` if missing.

    Returns:
        The written path.
    """
    pairs = np.array([pi[0] for pi in info["pair_infos"]], dtype=np.int64).reshape(-1, 2)
    scores = np.array([pi[1] for pi in info["pair_infos"]], dtype=np.float64)
    central = np.array(
        [np.asarray(pi[2], dtype=np.float64).reshape(4) for pi in info["pair_infos"]]
    ).reshape(-1, 4)
    p = Path(path)
    np.savez(
        p,
        image_paths=np.array(["" if v is None else str(v) for v in info["image_paths"]]),
        depth_paths=np.array(["" if v is None else str(v) for v in info["depth_paths"]]),
        intrinsics=np.asarray(info["intrinsics"], dtype=np.float64),
        poses=np.asarray(info["poses"], dtype=np.float64),
        pairs=pairs,
        overlap_scores=scores,
        central_matches=central,
    )
    return p if p.suffix == ".npz" else p.with_name(p.name + ".npz")
