"""The one place that reads dataset files: images, depth maps, poses, indices and list files.

Every reader raises :class:`~loftr.errors.DataError` naming the file when it is missing, a broken
symlink or unreadable, so a half-built data layout fails with a message that says what to fix.
Callers may pass ``hint`` (the set-up step that makes the file) to be appended to that message.

MegaDepth scene infos are read by :mod:`loftr.data.scene_info`.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from loftr.errors import DataError

PathLike = str | os.PathLike


def _with_hint(message: str, hint: str | None) -> str:
    return f"{message}; {hint}" if hint else message


def check_file(path: PathLike, what: str = "file", hint: str | None = None) -> Path:
    """Return ``path`` as a Path if it is an existing regular file, else raise DataError.

    Args:
        path: the file to check.
        what: a short name for the file in the message (``"image"``, ``"depth map"``...).
        hint: the set-up step that makes the file, appended to the message.

    Returns:
        ``Path(path)``.

    Raises:
        DataError: the path is missing, a broken symlink or a directory.
    """
    return _existing(Path(path), Path.is_file, "a regular file", what, hint)


def check_dir(path: PathLike, what: str = "directory", hint: str | None = None) -> Path:
    """Return ``path`` as a Path if it is an existing directory, else raise DataError.

    Args:
        path: the directory to check.
        what: a short name for the directory in the message (``"ScanNet train root"``...).
        hint: the set-up step that makes the directory, appended to the message.

    Returns:
        ``Path(path)``.

    Raises:
        DataError: the path is missing, a broken symlink or not a directory.
    """
    return _existing(Path(path), Path.is_dir, "a directory", what, hint)


def _existing(
    p: Path, is_kind: Callable[[Path], bool], kind: str, what: str, hint: str | None
) -> Path:
    """``p`` when ``is_kind(p)``, else DataError saying whether it is a broken symlink, something
    other than ``kind`` or absent."""
    if is_kind(p):
        return p
    if p.is_symlink():
        target = os.readlink(p)
        raise DataError(_with_hint(f"{what} {p} is a broken symlink (-> {target})", hint))
    if p.exists():
        raise DataError(_with_hint(f"{what} {p} is not {kind}", hint))
    raise DataError(_with_hint(f"{what} {p} does not exist", hint))


def read_gray(path: PathLike, resize: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as 8-bit grey, optionally resized with OpenCV's default bilinear filter.

    Args:
        path: an image file OpenCV can decode (jpg, png...).
        resize: ``(w, h)`` target size in pixels (OpenCV order), or None to keep the stored size.

    Returns:
        ``(h, w)`` uint8 array.

    Raises:
        DataError: the file is missing, truncated or cannot be decoded.

    Example:
        >>> img = read_gray("data/scannet/train/scene0000_00/color/0.jpg", resize=(640, 480))
        >>> img.shape, img.dtype
        ((480, 640), dtype('uint8'))
    """
    image = _decode(path, cv2.IMREAD_GRAYSCALE)
    if resize is not None:
        image = cv2.resize(image, (int(resize[0]), int(resize[1])))
    return image


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as 8-bit, keeping its colours: grey stays grey, colour is BGR.

    An alpha channel is dropped and 16-bit samples are scaled to 8 bits (OpenCV's
    ``IMREAD_ANYCOLOR``), so a converter that resamples a frame writes what its source holds
    (docs/prepare.md).

    Returns:
        ``(h, w)`` or ``(h, w, 3)`` uint8 array.

    Raises:
        DataError: the file is missing, truncated or cannot be decoded.
    """
    return _decode(path, cv2.IMREAD_ANYCOLOR)


def _decode(path: PathLike, flags: int) -> np.ndarray:
    """An image file decoded with OpenCV's ``flags``; DataError naming the file when it is
    missing, truncated or not decodable."""
    p = check_file(path, "image")
    data = p.read_bytes()
    if _truncated(data):
        raise DataError(f"image {p} is truncated (its end-of-image marker is missing)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise DataError(f"image {p} is corrupt or not an image OpenCV can decode")
    return image


def _truncated(data: bytes) -> bool:
    """Whether a JPEG or PNG file was cut short: OpenCV 4 decodes such a file, grey-filled.

    A complete JPEG ends its last scan (SOS marker) with an EOI marker (a thumbnail's EOI comes
    before the main image's scan); a complete PNG has an IEND chunk.
    """
    if data[:2] == b"\xff\xd8":
        return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data.rfind(b"IEND") < 0
    return False


def image_size(path: PathLike, what: str = "image") -> tuple[int, int]:
    """Stored ``(w, h)`` of an image in pixels, from the PNG header when possible (no decoding).

    Args:
        path: an image file (PNG headers are parsed directly; other formats are decoded).
        what: what the file is, for the error message (a depth map PNG is ``"depth map"``).

    Returns:
        ``(w, h)`` in pixels.

    Raises:
        DataError: the file is missing or cannot be decoded.
    """
    p = check_file(path, what)
    with open(p, "rb") as f:
        head = f.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return int(w), int(h)
    image = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{what} {p} is corrupt or not an image OpenCV can decode")
    return int(image.shape[1]), int(image.shape[0])


def read_scannet_depth(path: PathLike) -> np.ndarray:
    """Read a ScanNet depth PNG (uint16 millimetres) as metres (docs/original.md#scannet).

    Args:
        path: a 16-bit single-channel PNG as written by ScanNet's python SensReader.

    Returns:
        ``(h, w)`` float32 depth in metres at the stored resolution; 0 means no depth.

    Raises:
        DataError: the file is missing, corrupt, or not a 16-bit single-channel image.
    """
    return read_png_depth(
        path, 1000.0, "ScanNet depth must be a single-channel uint16 PNG in millimetres"
    )


def read_png_depth(
    path: PathLike, scale: float, expected: str = "expected a single-channel 16-bit PNG"
) -> np.ndarray:
    """Read a 16-bit depth PNG as metres: its values divided by ``scale`` (units per metre).

    Returns:
        ``(h, w)`` float32 depth in metres at the stored resolution; 0 means no depth.

    Raises:
        DataError: the file is missing, corrupt, or not a 16-bit single-channel image (the
            message ends with ``expected``).
    """
    p = check_file(path, "depth map")
    depth = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise DataError(f"depth map {p} is corrupt or not an image OpenCV can decode")
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise DataError(
            f"depth map {p} has dtype {depth.dtype} and shape {depth.shape}; {expected}"
        )
    return depth.astype(np.float32) / np.float32(scale)


def read_megadepth_depth(path: PathLike) -> np.ndarray:
    """Read a MegaDepth depth map: the ``depth`` dataset of an HDF5 file
    (docs/original.md#megadepth).

    Args:
        path: a MegaDepth_v1 ``.h5`` depth file.

    Returns:
        ``(h, w)`` float32 depth at the image's original resolution; 0 means no depth.

    Raises:
        DataError: the file is missing, not HDF5, or has no 2-D ``depth`` dataset.
    """
    import h5py  # local: only MegaDepth needs it

    p = check_file(path, "depth map")
    try:
        with h5py.File(p, "r") as f:
            if "depth" not in f:
                raise DataError(f"depth map {p} has no 'depth' dataset (keys: {list(f.keys())})")
            depth = np.asarray(f["depth"], dtype=np.float32)
    except OSError as err:
        raise DataError(f"depth map {p} is corrupt or not an HDF5 file ({err})") from err
    if depth.ndim != 2:
        raise DataError(f"depth map {p} has shape {depth.shape}; expected a 2-D (h, w) map")
    return depth


def write_megadepth_depth(path: PathLike, depth: np.ndarray) -> None:
    """Write a depth map as :func:`read_megadepth_depth` reads it: float32 metres in the ``depth``
    dataset of an HDF5 file (gzip level 1 with shuffle: a few times smaller, any HDF5 reader opens
    it; no timestamps, so the same map gives the same bytes). Parent folders are created."""
    import h5py  # local: only MegaDepth needs it

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(p, "w") as f:
        f.create_dataset(
            "depth",
            data=np.asarray(depth, dtype=np.float32),
            compression="gzip",
            compression_opts=1,
            shuffle=True,
            track_times=False,
        )


def check_matrix(matrix: Any, what: str, shape: tuple[int, int] = (3, 3)) -> np.ndarray:
    """``matrix`` as a float64 array of ``shape`` if it is finite and invertible.

    Intrinsics and poses are inverted on the way to the ground truth; one that is not finite or
    singular cannot supervise and must be named, not trained on.

    Args:
        matrix: the values (any array-like with ``prod(shape)`` entries).
        what: the matrix and its file for the message (``"pose file x.txt"``).
        shape: the expected shape.

    Raises:
        DataError: wrong size, inf or nan, or singular (condition number above 1e12).
    """
    values = np.asarray(matrix, dtype=np.float64)
    if values.size != shape[0] * shape[1]:
        raise DataError(
            f"{what} holds {values.size} numbers; expected a {shape[0]}x{shape[1]} matrix"
        )
    values = values.reshape(shape)
    if not np.isfinite(values).all():
        raise DataError(f"{what} contains inf or nan")
    if not np.linalg.cond(values) < 1e12:
        raise DataError(f"{what} is a singular matrix: it cannot be inverted")
    return values


def check_depth(depth: np.ndarray, path: PathLike) -> np.ndarray:
    """``depth`` if it has at least one valid (finite, positive) pixel, else DataError naming it.

    A depth map without any gives no ground-truth match at all: the pair cannot supervise.
    """
    if not (np.isfinite(depth) & (depth > 0)).any():
        raise DataError(f"depth map {path} has no valid pixel (every depth is 0 or not finite)")
    return depth


def read_matrix_file(
    path: PathLike, what: str, shape: tuple[int, int] = (3, 3), where: str | None = None
) -> np.ndarray:
    """A matrix stored as whitespace-delimited text (``#`` comments allowed), checked.

    Args:
        path: the text file.
        what: what it holds, for the messages (``"pose file"``, ``"homography file"``).
        shape: the expected shape.
        where: a prefix naming what pointed to the file (a list file and line), if anything.

    Returns:
        The ``shape`` float64 array, as stored (no inversion).

    Raises:
        DataError: the file is missing, is not a text matrix, or does not hold ``prod(shape)``
            finite numbers of an invertible matrix.
    """
    label = f"{where}: {what}" if where else what
    p = check_file(path, label)
    try:
        values = np.loadtxt(p, dtype=np.float64, comments="#", ndmin=1)
    except ValueError as err:
        raise DataError(f"{label} {p} is not a text matrix ({err})") from err
    return check_matrix(values, f"{label} {p}", shape)


def read_pose(path: PathLike) -> np.ndarray:
    """A 4x4 pose matrix from a text file (ScanNet: camera-to-world), as stored."""
    return read_matrix_file(path, "pose file", (4, 4))


def read_homography(path: PathLike, where: str | None = None) -> np.ndarray:
    """A 3x3 homography from a text file (HPatches' ``H_1_k``, a user's pair list), as stored."""
    return read_matrix_file(path, "homography file", (3, 3), where)


def read_list(path: PathLike, hint: str | None = None) -> list[str]:
    """Read a dataset list file: the first whitespace token of every non-empty line
    (docs/original.md#datamodule).

    Args:
        path: the list file (e.g. ``scannet_all.txt``, ``train_list.txt``).
        hint: the set-up step that makes the file, appended to the message.

    Returns:
        The entries in file order.

    Raises:
        DataError: the file is missing or lists nothing.
    """
    p = check_file(path, "list file", hint)
    entries = [line.split()[0] for line in p.read_text().splitlines() if line.split()]
    if not entries:
        raise DataError(_with_hint(f"list file {p} is empty", hint))
    return entries


def load_scannet_pairs(
    path: PathLike, hint: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a ScanNet scene index: pair rows and, when present, overlap scores
    (docs/original.md#scannet).

    Args:
        path: a real ``.npz`` (zip) with ``name`` ``(P, 4)`` rows
            ``[scene_id, sub_scene_id, frame_id0, frame_id1]`` and optionally ``score`` ``(P,)``.
            The test index (``test.npz``, docs/original.md#test-sets) has no ``score``.
        hint: the set-up step that makes the file, appended to a "missing" message.

    Returns:
        ``(names, scores)``: ``names`` ``(P, 4)`` integer array as stored, ``scores`` ``(P,)`` or
        None when the file has no ``score``.

    Raises:
        DataError: the file is missing, not an npz, lacks ``name``, or has mismatched shapes.
    """
    p = check_file(path, "ScanNet scene index", hint)
    try:
        with np.load(p, allow_pickle=False) as data:
            keys = list(data.keys())
            if "name" not in keys:
                raise DataError(f"ScanNet scene index {p} has no 'name' array (keys: {keys})")
            names = np.asarray(data["name"])
            scores = np.asarray(data["score"]) if "score" in keys else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"ScanNet scene index {p} is corrupt or not an npz file ({err})") from err
    if names.ndim != 2 or names.shape[1] != 4:
        raise DataError(
            f"ScanNet scene index {p}: 'name' has shape {names.shape}; expected (P, 4) rows "
            "[scene_id, sub_scene_id, frame_id0, frame_id1]"
        )
    if scores is not None and scores.shape != (names.shape[0],):
        raise DataError(
            f"ScanNet scene index {p}: 'score' has shape {scores.shape}; expected "
            f"({names.shape[0]},) to match 'name'"
        )
    return names, scores


def load_intrinsics(path: PathLike, hint: str | None = None) -> dict[str, np.ndarray]:
    """Load a ScanNet intrinsics npz: one 3x3 (or 9-vector) matrix per scene name
    (docs/original.md#scannet).

    Args:
        path: ``intrinsics.npz`` keyed by scene name (``scene0000_00``).
        hint: the set-up step that makes the file, appended to a "missing" message.

    Returns:
        ``{scene_name: (3, 3) float64}``.

    Raises:
        DataError: the file is missing, not an npz, or holds a matrix that is not 3x3.
    """
    p = check_file(path, "intrinsics file", hint)
    try:
        with np.load(p, allow_pickle=False) as data:
            raw = {k: np.asarray(data[k]) for k in data.keys()}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"intrinsics file {p} is corrupt or not an npz file ({err})") from err
    out = {}
    for name, value in raw.items():
        if value.size != 9:
            raise DataError(f"intrinsics file {p}: '{name}' has {value.size} values; expected 9")
        out[name] = value.astype(np.float64).reshape(3, 3)
    return out
