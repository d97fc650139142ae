"""What both RGB-D layouts share after parsing (docs/prepare.md#rgb-d-sequences): reading a
frame's colour and depth (with ``loftr.data.io``'s readers), the size check, lens undistortion,
the keyframe rule and the pair scores by depth reprojection (``loftr.data.covisibility``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from loftr.data.covisibility import covisibility, overlap_score, relative_pose
from loftr.data.io import image_size, read_image, read_png_depth
from loftr.data.prepare.frames import PreparedFrame, fit_size, resize_frame
from loftr.data.prepare.rgbd_layouts import SourceFrame
from loftr.data.prepare.scene import PreparedPair
from loftr.errors import DataError


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
    return read_png_depth(path, scale)


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


def _depth_size(path: Path) -> tuple[int, int]:
    """``(w, h)`` of a depth map from its header (PNG) or its array header (``.npy``)."""
    if path.suffix != ".npy":
        return image_size(path, "depth map")
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


def prepare_frame(
    frame: SourceFrame, scale: float, undistort: Undistorter | None, max_size: int
) -> tuple[PreparedFrame, float]:
    """A source frame read, undistorted and fitted to ``max_size``, and its share of pixels with
    depth."""
    image = read_image(frame.image)
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
