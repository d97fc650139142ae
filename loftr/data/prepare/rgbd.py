"""RGB-D sequences become a prepared scene: ``python -m loftr.data.prepare rgbd``.

Two layouts are read (docs/prepare.md#rgb-d-sequences):

- ``--format tum``: the TUM RGB-D benchmark's folders: ``rgb.txt`` and ``depth.txt`` (lines
  ``timestamp filename``), ``groundtruth.txt`` (lines ``timestamp tx ty tz qx qy qz qw``: the
  colour camera's centre and orientation in the world, i.e. camera-to-world, the quaternion in the
  order x y z w, where COLMAP writes w x y z), 16-bit PNG depth in units of 1/5000 m.
- ``--format folder``: ``color/<stem>.png|jpg``, ``depth/<stem>.png`` (16-bit, ``--depth-scale``
  units per metre) or ``depth/<stem>.npy`` (float metres), ``poses.txt`` (``stem`` and a row-major
  camera-to-world 4x4 per line), ``K.txt`` (one 3x3 matrix, or ``stem fx fy cx cy`` per line).

Both share everything after parsing: lens undistortion, the depth check, the keyframe choice and
the pair scores by depth reprojection (``loftr.data.covisibility``), written through
``loftr.data.prepare.scene.SceneWriter``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from loftr.data.covisibility import covisibility, overlap_score, relative_pose
from loftr.data.io import check_dir, check_file, check_matrix, image_size
from loftr.data.prepare.scene import (
    PreparedFrame,
    PreparedPair,
    SceneWriter,
    fit_size,
    resize_frame,
)
from loftr.errors import ConfigError, DataError, LoFTRError

FORMATS = ("tum", "folder")
#: Depth units per metre of each layout's 16-bit PNGs (TUM: 5000; folder: millimetres).
DEFAULT_DEPTH_SCALE = {"tum": 5000.0, "folder": 1000.0}
#: TUM's Freiburg 1 and 2 cameras have noticeable lens distortion: their folders are refused
#: without --distortion (docs/prepare.md#lens-distortion).
DISTORTED_TUM_PREFIXES = ("rgbd_dataset_freiburg1", "rgbd_dataset_freiburg2")
CALIBRATION_SOURCE = (
    "the TUM RGB-D camera-calibration page (the dataset's 'File Formats' page, section "
    "'Intrinsic Camera Calibration of the Kinect')"
)
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


# -- option strings ---------------------------------------------------------------------------


def parse_floats(text: str, option: str, counts: Sequence[int]) -> np.ndarray:
    """The comma-separated numbers of ``option``'s value, finite and ``counts`` many.

    Raises:
        ConfigError: not numbers, not finite, or a count not in ``counts``.
    """
    try:
        values = np.array([float(v) for v in str(text).split(",")], np.float64)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a comma-separated list of numbers") from None
    if len(values) not in counts or not np.isfinite(values).all():
        want = " or ".join(str(c) for c in counts)
        raise ConfigError(f"{option} {text!r}: expected {want} finite comma-separated numbers")
    return values


def intrinsics_matrix(
    fx: float, fy: float, cx: float, cy: float, what: str, error: type[LoFTRError] = ConfigError
) -> np.ndarray:
    """The 3x3 pinhole matrix; ``error`` naming ``what`` when a focal length is not positive."""
    if not (fx > 0 and fy > 0):
        raise error(f"{what}: focal lengths fx={fx}, fy={fy} must be positive")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def parse_intrinsics(text: str) -> np.ndarray:
    """``--intrinsics fx,fy,cx,cy`` (pixels, pixel centres at integers) as a 3x3 matrix."""
    return intrinsics_matrix(*parse_floats(text, "--intrinsics", (4,)), what="--intrinsics")


def parse_distortion(text: str | None) -> np.ndarray | None:
    """``--distortion k1,k2,p1,p2[,k3]`` (OpenCV's order) as an array, or None."""
    if text is None:
        return None
    return parse_floats(text, "--distortion", (4, 5))


def parse_baseline(text: str) -> tuple[float, float]:
    """``--keyframe-baseline METRES,DEGREES``: both positive."""
    metres, degrees = parse_floats(text, "--keyframe-baseline", (2,))
    if metres <= 0 or degrees <= 0:
        raise ConfigError(f"--keyframe-baseline {text!r}: metres and degrees must be positive")
    return float(metres), float(degrees)


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


# -- frames -----------------------------------------------------------------------------------


def read_depth(path: Path, scale: float) -> np.ndarray:
    """A depth map in metres, float32, 0 = unknown: a 16-bit PNG divided by ``scale``, or an
    ``.npy`` of metres (non-finite and negative values become 0).

    Raises:
        DataError: unreadable, not 2-D, or a PNG that is not 16-bit single-channel.
    """
    if path.suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"depth map {path} is not a readable .npy array ({err})") from err
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
            raise DataError(f"depth map {path} holds {depth.dtype} {depth.shape}; expected (h, w)")
        depth = np.asarray(depth, np.float32)
        return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise DataError(f"depth map {path} is corrupt or not an image OpenCV can decode")
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise DataError(
            f"depth map {path} has dtype {depth.dtype} and shape {depth.shape}; expected a "
            "single-channel 16-bit PNG"
        )
    return (depth.astype(np.float32) / np.float32(scale)).astype(np.float32)


def read_color(path: Path) -> np.ndarray:
    """A colour or grey image as uint8 (BGR or grey), as OpenCV decodes it."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise DataError(f"image {path} is corrupt or not an 8-bit image OpenCV can decode")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class Undistorter:
    """Removes lens distortion from an image and its registered depth, keeping the same K.

    The image is resampled bilinearly; the depth by nearest neighbour, so every output depth is
    one the sensor measured (none is blended across an edge); pixels that map outside the source
    get depth 0. Maps are computed once per (K, size).
    """

    def __init__(self, coefficients: np.ndarray) -> None:
        self.coefficients = np.asarray(coefficients, np.float64)
        self._maps: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def maps(self, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(map_x, map_y)``: where each undistorted pixel samples the distorted image."""
        key = K.tobytes() + np.array(size).tobytes()
        if key not in self._maps:
            self._maps[key] = cv2.initUndistortRectifyMap(
                K, self.coefficients, None, K, size, cv2.CV_32FC1
            )
        return self._maps[key]

    def __call__(
        self, image: np.ndarray, depth: np.ndarray, K: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        mx, my = self.maps(K, (depth.shape[1], depth.shape[0]))
        border = cv2.BORDER_CONSTANT
        image = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=border, borderValue=0)
        depth = cv2.remap(depth, mx, my, cv2.INTER_NEAREST, borderMode=border, borderValue=0)
        return image, depth


@dataclass(frozen=True)
class KeyframeRule:
    """When a frame becomes a keyframe (the first valid frame always does).

    ``overlap``: when its overlap score with the last keyframe drops below this;
    ``baseline``: when its centre moved at least ``metres`` or its orientation turned at least
    ``degrees`` from the last keyframe's. Exactly one of them is set.
    """

    overlap: float | None = None
    baseline: tuple[float, float] | None = None

    def describe(self) -> str:
        if self.baseline is not None:
            return f"baseline {self.baseline[0]:g} m or {self.baseline[1]:g} deg"
        return f"overlap below {self.overlap:g}"

    def is_new(self, last: KeptFrame, depth: np.ndarray, K: np.ndarray, T_w2c: np.ndarray) -> bool:
        T = relative_pose(last.T_w2c, T_w2c)
        if self.baseline is not None:
            metres, degrees = self.baseline
            moved = np.linalg.norm(T[:3, :3].T @ T[:3, 3])  # distance between the two centres
            cos = np.clip((np.trace(T[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
            return bool(moved >= metres or np.degrees(np.arccos(cos)) >= degrees)
        return overlap_score(last.depth, depth, last.K, K, T) < self.overlap


@dataclass(frozen=True)
class KeptFrame:
    """What pair scoring keeps of a written keyframe (depth at the written size)."""

    depth: np.ndarray
    K: np.ndarray
    T_w2c: np.ndarray


def pair_overlap(
    depth0: np.ndarray,
    depth1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    T_0to1: np.ndarray,
    below: float = 0.0,
) -> tuple[float, np.ndarray]:
    """A pair's overlap score and central match (docs/prepare.md#overlap-score).

    The score is the smaller of the two directions' co-visible fractions
    (``loftr.data.covisibility``); the central match is the forward direction's. When the forward
    fraction is already below ``below`` the backward one is not computed (the score cannot rise
    above it), and the score returned is the forward fraction.
    """
    fwd = covisibility(depth0, depth1, K0, K1, T_0to1)
    if fwd.fraction < below:
        return fwd.fraction, fwd.central_match
    bwd = covisibility(depth1, depth0, K1, K0, np.linalg.inv(T_0to1))
    return min(fwd.fraction, bwd.fraction), fwd.central_match


# -- the command ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m loftr.data.prepare rgbd`` beside the common ones."""
    parser.add_argument("--format", choices=FORMATS, default="tum", help="layout (default: tum)")
    parser.add_argument("--root", type=Path, required=True, help="the sequence's folder")
    parser.add_argument(
        "--intrinsics",
        metavar="FX,FY,CX,CY",
        help="pinhole intrinsics in pixels, pixel centres at integers (tum: required; folder: "
        "replaces K.txt)",
    )
    parser.add_argument(
        "--distortion",
        metavar="K1,K2,P1,P2[,K3]",
        help="lens distortion in OpenCV's order; images and depth are undistorted with it "
        "(a negative first value needs the = form: --distortion=-0.26,0.9,0,0,-1.2)",
    )
    parser.add_argument(
        "--depth-scale",
        type=float,
        help="16-bit depth units per metre (default: 5000 for tum, 1000 for folder)",
    )
    parser.add_argument(
        "--max-dt",
        type=float,
        default=0.02,
        help="tum: seconds within which rgb, depth and pose associate (default: %(default)s)",
    )
    parser.add_argument(
        "--min-depth-fraction",
        type=float,
        default=0.1,
        help="refuse frames with valid depth on a smaller share of pixels (default: %(default)s)",
    )
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument(
        "--keyframe-overlap",
        type=float,
        default=0.7,
        help="a new keyframe when the overlap with the last one drops below this "
        "(default: %(default)s)",
    )
    rule.add_argument(
        "--keyframe-baseline",
        metavar="METRES,DEGREES",
        help="a new keyframe when the camera moved or turned this much from the last one",
    )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Every option of the command checked, before anything is read or written."""
    root = check_dir(args.root, f"--root ({args.format} sequence)")
    if args.intrinsics is None and args.format == "tum":
        raise ConfigError("--intrinsics fx,fy,cx,cy is required with --format tum")
    K = parse_intrinsics(args.intrinsics) if args.intrinsics is not None else None
    distortion = parse_distortion(args.distortion)
    folder_name = root.resolve().name
    if (
        args.format == "tum"
        and distortion is None
        and folder_name.startswith(DISTORTED_TUM_PREFIXES)
    ):
        raise ConfigError(
            f"--root {root} is a TUM Freiburg 1/2 sequence, whose camera is distorted: pass "
            f"--distortion k1,k2,p1,p2,k3 (and --intrinsics) as published on {CALIBRATION_SOURCE}"
        )
    scale = DEFAULT_DEPTH_SCALE[args.format] if args.depth_scale is None else args.depth_scale
    if not (np.isfinite(scale) and scale > 0):
        raise ConfigError(f"--depth-scale {args.depth_scale} must be a positive number")
    if not (np.isfinite(args.max_dt) and args.max_dt >= 0):
        raise ConfigError(f"--max-dt {args.max_dt} must be a non-negative number of seconds")
    if not 0.0 <= args.min_depth_fraction <= 1.0:
        raise ConfigError(f"--min-depth-fraction {args.min_depth_fraction} must lie in [0, 1]")
    if args.keyframe_baseline is not None:
        rule = KeyframeRule(baseline=parse_baseline(args.keyframe_baseline))
    elif 0.0 <= args.keyframe_overlap <= 1.0:
        rule = KeyframeRule(overlap=args.keyframe_overlap)
    else:
        raise ConfigError(f"--keyframe-overlap {args.keyframe_overlap} must lie in [0, 1]")
    return dict(
        root=root,
        K=K,
        undistort=Undistorter(distortion) if distortion is not None else None,
        scale=float(scale),
        rule=rule,
        name=args.name or folder_name,
    )


def _depth_size(path: Path) -> tuple[int, int]:
    """``(w, h)`` of a depth map from its header (PNG) or its array header (``.npy``)."""
    if path.suffix != ".npy":
        return image_size(path)
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError) as err:
        raise DataError(f"depth map {path} is not a readable .npy array ({err})") from err
    if len(shape) != 2:
        raise DataError(f"depth map {path} has shape {shape}; expected (h, w)")
    return int(shape[1]), int(shape[0])


def check_sizes(frames: Sequence[SourceFrame]) -> None:
    """Every image has its depth map's size (read from the file headers, before any writing).

    Raises:
        DataError: naming the first frame whose image and depth differ, or an unreadable header.
    """
    for frame in frames:
        image, depth = image_size(frame.image), _depth_size(frame.depth)
        if image != depth:
            raise DataError(
                f"image {frame.image} is {image[0]}x{image[1]} but its depth map {frame.depth} is "
                f"{depth[0]}x{depth[1]}; they must be registered pixel for pixel"
            )


def _prepare(
    frame: SourceFrame, scale: float, undistort: Undistorter | None, max_size: int
) -> tuple[PreparedFrame, float]:
    """A source frame read, undistorted and fitted to ``max_size``, and its share of pixels with
    depth."""
    image = read_color(frame.image)
    depth = read_depth(frame.depth, scale)
    pixels: np.ndarray | Path = frame.image  # copied byte for byte unless resampled
    if undistort is not None:
        image, depth = undistort(image, depth, frame.K)
        pixels = image
    # the writer's own size rule: the frame arrives at the size it would write, so the depth
    # kept for the pair scores is the written one
    size = fit_size(depth.shape[1], depth.shape[0], max_size)
    prepared = PreparedFrame(
        frame.rel, pixels if size is None else image, frame.K, np.linalg.inv(frame.T_c2w), depth
    )
    if size is not None:
        prepared = resize_frame(prepared, size)
    return prepared, float((prepared.depth > 0).mean())


def score_pairs(kept: Sequence[tuple[int, KeptFrame]], min_overlap: float) -> list[PreparedPair]:
    """Every pair of written keyframes with its overlap score and central match."""
    pairs = []
    for n, (i, a) in enumerate(kept):
        for j, b in kept[n + 1 :]:
            T = relative_pose(a.T_w2c, b.T_w2c)
            overlap, central = pair_overlap(a.depth, b.depth, a.K, b.K, T, below=min_overlap)
            pairs.append(PreparedPair(i, j, overlap, central))
    return pairs


def run(args: argparse.Namespace) -> dict:
    """Convert one RGB-D sequence (``add_arguments``' options and the common ones) and return
    the report. Every option, text file, file's existence and image size is checked before
    ``--out`` is touched."""
    opts = _options(args)
    if args.format == "tum":
        sequence = read_tum(opts["root"], opts["K"], args.max_dt)
    else:
        sequence = read_folder(opts["root"], opts["K"])
    check_sizes(sequence.frames)
    rule: KeyframeRule = opts["rule"]
    kept: list[tuple[int, KeptFrame]] = []
    skipped = 0
    source = f"rgbd ({args.format})"
    with SceneWriter(Path(args.out), opts["name"], args.split, source, args.max_size) as writer:
        for rel, reason in sequence.refused:
            writer.refuse(rel, reason)
        for frame in sequence.frames:
            prepared, share = _prepare(frame, opts["scale"], opts["undistort"], args.max_size)
            if share == 0.0:
                writer.refuse(frame.rel, "no valid depth")
                continue
            if share < args.min_depth_fraction:
                writer.refuse(frame.rel, "valid depth below --min-depth-fraction")
                continue
            entry = KeptFrame(prepared.depth, prepared.K, prepared.T_w2c)
            if kept and not rule.is_new(kept[-1][1], entry.depth, entry.K, entry.T_w2c):
                skipped += 1
                continue
            kept.append((writer.add_frame(prepared), entry))
        pairs = score_pairs(kept, args.min_overlap)
        extra = {
            "format": args.format,
            "root": str(opts["root"]),
            "frames_listed": len(sequence.frames) + len(sequence.refused),
            "keyframes": len(kept),
            "skipped_between_keyframes": skipped,
            "keyframe_rule": rule.describe(),
            "max_dt": args.max_dt,
            "depth_scale": opts["scale"],
            "undistorted": opts["undistort"] is not None,
        }
        return writer.finish(pairs, args.min_overlap, args.max_pairs_per_image, extra)
