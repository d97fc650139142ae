"""The two RGB-D layouts ``python -m loftr.data.prepare rgbd`` reads, parsed into frames with
their files, intrinsics and camera-to-world poses (docs/prepare.md#rgb-d-sequences).

- ``--format tum`` (:func:`read_tum`): the TUM RGB-D benchmark's folders: ``rgb.txt`` and
  ``depth.txt`` (lines ``timestamp filename``), ``groundtruth.txt`` (lines
  ``timestamp tx ty tz qx qy qz qw``: the colour camera's centre and orientation in the world,
  i.e. camera-to-world, the quaternion in the order x y z w, where COLMAP writes w x y z),
  associated by nearest timestamps (:func:`associate`, docs/prepare.md#association).
- ``--format folder`` (:func:`read_folder`): ``color/<stem>.png|jpg``, ``depth/<stem>.png|npy``,
  ``poses.txt`` (``stem`` and a row-major camera-to-world 4x4 per line), ``K.txt`` (one 3x3
  matrix, or ``stem fx fy cx cy`` per line).

Nothing here reads pixels: the frames' images and depth maps are read by
``loftr.data.prepare.rgbd_frames``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loftr.data.io import check_dir, check_file, check_matrix
from loftr.errors import ConfigError, DataError, LoFTRError

COLOR_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_SUFFIXES = (".png", ".npy")


@dataclass(frozen=True)
class SourceFrame:
    """One frame of a sequence after parsing: its files, camera and pose.

    Attributes:
        rel: the image's name inside the prepared scene (posix, relative to ``images/``).
        image: the colour image file.
        depth: the depth file.
        K: (3, 3) float64 intrinsics of the source image (pixel centres at integers).
        T_c2w: (4, 4) float64 camera-to-world pose.
    """

    rel: str
    image: Path
    depth: Path
    K: np.ndarray
    T_c2w: np.ndarray


@dataclass
class ParsedSequence:
    """A parsed sequence: the frames to convert, in time order, and those refused on the way."""

    frames: list[SourceFrame]
    refused: list[tuple[str, str]]  # (name, reason)


def intrinsics_matrix(
    fx: float, fy: float, cx: float, cy: float, what: str, error: type[LoFTRError] = ConfigError
) -> np.ndarray:
    """The 3x3 pinhole matrix; ``error`` naming ``what`` when a focal length is not positive."""
    if not (fx > 0 and fy > 0):
        raise error(f"{what}: focal lengths fx={fx}, fy={fy} must be positive")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# -- TUM layout -------------------------------------------------------------------------------


def quaternion_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Rotation matrix of the quaternion given in TUM's order x y z w (COLMAP's is w x y z).

    The quaternion is normalised first; a zero quaternion is refused by the caller.
    """
    q = np.array([qx, qy, qz, qw], np.float64)
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _text_rows(path: Path, what: str) -> list[tuple[int, list[str]]]:
    """``(line number, tokens)`` of the non-empty, non-comment (``#``) lines of a text file."""
    check_file(path, what)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{what} {path} cannot be read as text ({err})") from err
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        tokens = line.split("#", 1)[0].split()
        if tokens:
            rows.append((n, tokens))
    return rows


def _timestamp(token: str, path: Path, n: int) -> float:
    try:
        t = float(token)
    except ValueError:
        raise DataError(f"{path} line {n}: {token!r} is not a timestamp") from None
    if not np.isfinite(t):
        raise DataError(f"{path} line {n}: timestamp {token!r} is not finite")
    return t


def read_file_list(path: Path, what: str) -> tuple[np.ndarray, list[str]]:
    """A TUM ``rgb.txt``/``depth.txt``: ``(timestamps (N,), file names)`` in file order.

    Raises:
        DataError: the file is missing, a line is not ``timestamp filename``, or it lists nothing.
    """
    times, names = [], []
    for n, tokens in _text_rows(path, what):
        if len(tokens) < 2:
            raise DataError(f"{path} line {n}: expected 'timestamp filename'")
        times.append(_timestamp(tokens[0], path, n))
        names.append(tokens[1])
    if not names:
        raise DataError(f"{what} {path} lists no frame")
    return np.array(times), names


def read_groundtruth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A TUM ``groundtruth.txt``: ``(timestamps (N,), camera-to-world poses (N, 4, 4))``.

    Each line is ``timestamp tx ty tz qx qy qz qw``: the colour camera's optical centre and its
    orientation as a unit quaternion x y z w, both in the world frame.

    Raises:
        DataError: missing, a malformed line (its number named), or no pose.
    """
    times, poses = [], []
    for n, tokens in _text_rows(path, "ground-truth trajectory"):
        if len(tokens) != 8:
            raise DataError(f"{path} line {n}: expected 'timestamp tx ty tz qx qy qz qw'")
        times.append(_timestamp(tokens[0], path, n))
        try:
            values = np.array([float(v) for v in tokens[1:]])
        except ValueError:
            raise DataError(f"{path} line {n}: the pose is not 7 numbers") from None
        if not np.isfinite(values).all() or np.linalg.norm(values[3:]) < 1e-9:
            raise DataError(f"{path} line {n}: the pose is not finite or its quaternion is zero")
        pose = np.eye(4)
        pose[:3, :3] = quaternion_matrix(*values[3:])
        pose[:3, 3] = values[:3]
        poses.append(pose)
    if not poses:
        raise DataError(f"ground-truth trajectory {path} holds no pose")
    return np.array(times), np.stack(poses)


def nearest_within(queries: np.ndarray, times: np.ndarray, max_dt: float) -> np.ndarray:
    """Index of the nearest of ``times`` for each query, or -1 where it is farther than ``max_dt``
    seconds (a tie goes to the earlier one)."""
    order = np.argsort(times, kind="stable")
    sorted_t = times[order]
    right = np.clip(np.searchsorted(sorted_t, queries), 0, len(sorted_t) - 1)
    left = np.clip(right - 1, 0, len(sorted_t) - 1)
    take_left = np.abs(queries - sorted_t[left]) <= np.abs(sorted_t[right] - queries)
    best = np.where(take_left, left, right)
    idx = order[best]
    return np.where(np.abs(times[idx] - queries) <= max_dt, idx, -1)


def associate(
    rgb_t: np.ndarray, depth_t: np.ndarray, pose_t: np.ndarray, max_dt: float
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """The association rule (docs/prepare.md#association).

    Each rgb frame takes the depth frame and the pose nearest to its timestamp, each within
    ``max_dt`` seconds; a depth frame serves one rgb frame only (the nearest of those that chose
    it), a pose may serve several.

    Returns:
        ``(depth index, pose index, refusal reason)`` per rgb frame; the indices are -1 and the
        reason says why where a frame has no depth or no pose.
    """
    depth_idx = nearest_within(rgb_t, depth_t, max_dt)
    pose_idx = nearest_within(rgb_t, pose_t, max_dt)
    reasons: list[str | None] = [None] * len(rgb_t)
    owner: dict[int, int] = {}  # depth frame -> the rgb frame it serves
    for i in range(len(rgb_t)):
        d = int(depth_idx[i])
        if d < 0:
            reasons[i] = f"no depth frame within --max-dt {max_dt:g} s"
            continue
        if pose_idx[i] < 0:
            reasons[i] = f"no pose within --max-dt {max_dt:g} s"
            continue
        j = owner.get(d)
        if j is not None and abs(rgb_t[j] - depth_t[d]) <= abs(rgb_t[i] - depth_t[d]):
            reasons[i] = "depth frame taken by a nearer rgb frame"
            continue
        if j is not None:
            reasons[j] = "depth frame taken by a nearer rgb frame"
        owner[d] = i
    ok = np.array([r is None for r in reasons])
    return np.where(ok, depth_idx, -1), np.where(ok, pose_idx, -1), reasons


def read_tum(root: Path, K: np.ndarray, max_dt: float) -> ParsedSequence:
    """Parse and associate a TUM RGB-D folder (every listed file must exist).

    Raises:
        DataError: a missing or malformed text file, a listed file missing on disk, or
            timestamps that never associate.
    """
    rgb_t, rgb_names = read_file_list(root / "rgb.txt", "rgb list")
    depth_t, depth_names = read_file_list(root / "depth.txt", "depth list")
    pose_t, poses = read_groundtruth(root / "groundtruth.txt")
    depth_idx, pose_idx, reasons = associate(rgb_t, depth_t, pose_t, max_dt)
    if (depth_idx < 0).all():
        raise DataError(
            f"{root}: no rgb frame associates with a depth frame and a pose within --max-dt "
            f"{max_dt:g} s (rgb.txt spans {rgb_t.min():.3f}-{rgb_t.max():.3f}, depth.txt "
            f"{depth_t.min():.3f}-{depth_t.max():.3f}, groundtruth.txt "
            f"{pose_t.min():.3f}-{pose_t.max():.3f})"
        )
    frames, refused = [], []
    for i in np.argsort(rgb_t, kind="stable"):
        reason = reasons[i]
        if reason is not None:
            refused.append((rgb_names[i], reason))
            continue
        image = check_file(root / rgb_names[i], "rgb.txt: image")
        depth = check_file(root / depth_names[depth_idx[i]], "depth.txt: depth map")
        frames.append(SourceFrame(_rel_name(rgb_names[i]), image, depth, K, poses[pose_idx[i]]))
    return ParsedSequence(frames, refused)


def _rel_name(name: str) -> str:
    """A listed file's name inside the prepared scene: its path without a leading ``rgb/``."""
    parts = Path(name).parts
    return Path(*parts[1:]).as_posix() if len(parts) > 1 and parts[0] == "rgb" else name


# -- folder layout ----------------------------------------------------------------------------


def read_poses_file(path: Path) -> dict[str, np.ndarray]:
    """``poses.txt``: ``stem`` and 16 numbers (a row-major camera-to-world 4x4) per line."""
    poses: dict[str, np.ndarray] = {}
    for n, tokens in _text_rows(path, "pose list"):
        if len(tokens) != 17:
            raise DataError(f"{path} line {n}: expected a stem and 16 numbers (a 4x4, row-major)")
        if tokens[0] in poses:
            raise DataError(f"{path} line {n}: frame {tokens[0]!r} has a pose on an earlier line")
        try:
            values = [float(v) for v in tokens[1:]]
        except ValueError:
            raise DataError(f"{path} line {n}: the pose is not 16 numbers") from None
        pose = check_matrix(values, f"{path} line {n}", (4, 4))
        rotation = pose[:3, :3]
        if not np.allclose(pose[3], [0, 0, 0, 1]) or not np.allclose(
            rotation.T @ rotation, np.eye(3), atol=1e-4
        ):
            raise DataError(
                f"{path} line {n}: not a rigid pose (a rotation, a translation, last row 0 0 0 1)"
            )
        poses[tokens[0]] = pose
    if not poses:
        raise DataError(f"pose list {path} holds no pose")
    return poses


def read_k_file(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """``K.txt``: three rows of three numbers (one camera for every frame), or one line
    ``stem fx fy cx cy`` per frame."""
    rows = _text_rows(path, "intrinsics file")
    if rows and all(len(t) == 5 for _, t in rows):
        out = {}
        for n, tokens in rows:
            try:
                fx, fy, cx, cy = (float(v) for v in tokens[1:])
            except ValueError:
                raise DataError(f"{path} line {n}: expected 'stem fx fy cx cy'") from None
            where = f"{path} line {n}"
            out[tokens[0]] = check_matrix(
                intrinsics_matrix(fx, fy, cx, cy, where, DataError), where
            )
        return out
    if len(rows) == 3 and all(len(t) == 3 for _, t in rows):
        try:
            values = [float(v) for _, t in rows for v in t]
        except ValueError:
            raise DataError(f"intrinsics file {path} is not a 3x3 matrix of numbers") from None
        return check_matrix(values, f"intrinsics file {path}")
    raise DataError(
        f"intrinsics file {path}: expected three rows of a 3x3 matrix, or 'stem fx fy cx cy' lines"
    )


def _one_file(folder: Path, stem: str, suffixes: Sequence[str], what: str) -> Path:
    found = [folder / f"{stem}{s}" for s in suffixes if (folder / f"{stem}{s}").is_file()]
    if not found:
        raise DataError(
            f"{what} of frame {stem!r} not found: {folder}/{stem}{{{','.join(suffixes)}}}"
        )
    return found[0]


def read_folder(root: Path, K: np.ndarray | None) -> ParsedSequence:
    """Parse a folder layout; frames in the order of ``poses.txt``.

    ``K`` (from ``--intrinsics``) replaces ``K.txt`` when given. A colour image without a pose
    is refused and counted; a posed frame without an image or depth is an error.
    """
    color = check_dir(root / "color", "colour folder")
    depth = check_dir(root / "depth", "depth folder")
    poses = read_poses_file(root / "poses.txt")
    intrinsics = K if K is not None else read_k_file(root / "K.txt")
    frames = []
    for stem, pose in poses.items():
        if isinstance(intrinsics, dict):
            if stem not in intrinsics:
                raise DataError(f"intrinsics file {root / 'K.txt'} has no line for frame {stem!r}")
            k = intrinsics[stem]
        else:
            k = intrinsics
        image = _one_file(color, stem, COLOR_SUFFIXES, "colour image")
        frames.append(
            SourceFrame(
                image.name, image, _one_file(depth, stem, DEPTH_SUFFIXES, "depth map"), k, pose
            )
        )
    refused = [
        (p.name, "no pose in poses.txt")
        for p in sorted(color.iterdir())
        if p.suffix.lower() in COLOR_SUFFIXES and p.stem not in poses
    ]
    return ParsedSequence(frames, refused)
