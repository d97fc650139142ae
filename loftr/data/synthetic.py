"""Synthetic ScanNet- and MegaDepth-format datasets: piecewise-planar scenes with exact depth.

No real dataset can be downloaded on these machines, so the embedded default dataset is rendered
here: rooms (floor, ceiling, four walls, furniture boxes, posters) and outdoor plazas (a ground
plane, a landmark of boxes with facades at several depths, a ring of buildings), textured with the
photographs scikit-image ships and with procedural patterns. Every pixel's depth is the exact
ray-plane intersection, so ground truth built from depth, intrinsics and poses is exact up to the
storage precision of the real formats (millimetres for ScanNet, float32 for MegaDepth).

The files are written in the real on-disk formats (docs/original.md#data-layout to #test-sets)
and are read by the same loaders as the real data:

- ``<root>/scannet/``: ``train/<scene>/{color/<i>.jpg, depth/<i>.png, pose/<i>.txt}``,
  ``test/<scene>/{color,depth,pose,intrinsic}/``, ``index/scene_data/{train,test}/*.npz``,
  ``index/scene_data/{train_list/synthetic_train.txt, test_list/synthetic_test.txt}``,
  ``index/intrinsics.npz`` (9-vectors) and ``index/intrinsics_test.npz`` (3x3).
- ``<root>/megadepth/``: ``{train,test}/Undistorted_SfM/<scene>/images/<name>.jpg``,
  ``{train,test}/phoenix/S6/zl548/MegaDepth_v1/<scene>/dense0/depths/<name>.h5``,
  ``index/scene_info_0.1_0.7/<scene>_<lo>_<hi>.npz`` and ``index/scene_info_val_1500/*.npz``
  (pickled dicts, docs/original.md#megadepth), ``index/trainvaltest_list/{train,val}_list.txt``.

Conventions used throughout: world frame z-up, metres; camera frame x right, y down, z forward
(OpenCV); pixel ``(x, y)`` with integer values at pixel centres, so ``K = [[f, 0, cx], [0, f, cy],
[0, 0, 1]]`` maps a camera point to its pixel; ``T_w2c`` (4, 4) maps world points to the camera
and ``T_0to1 = T_w2c1 @ inv(T_w2c0)`` maps camera-0 points to camera 1. Depth is the camera-frame
z in metres, 0 where nothing was hit (sky).

Example:
    >>> root = ensure_synthetic("data/synthetic", format="scannet", seed=0)  # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())  # doctest: +SKIP
    ['index', 'synthetic_manifest.json', 'test', 'train']

CLI: ``python -m loftr.data.synthetic --help``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import pickle
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from loftr.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Bump when the generated content changes, so that cached sets are regenerated.
GENERATOR_VERSION = 4
MANIFEST_NAME = "synthetic_manifest.json"
FORMATS = ("scannet", "megadepth")

#: Default sizes per format: enough variety for the default CPU training run, generated in well
#: under a minute on two cores. Tests pass tinier sizes.
DEFAULT_SIZES: dict[str, dict[str, int]] = {
    "scannet": {
        "train_scenes": 6,
        "frames_per_scene": 30,
        "test_scenes": 2,
        "test_frames_per_scene": 20,
        "test_pairs_per_scene": 15,
    },
    "megadepth": {
        "train_scenes": 6,
        "frames_per_scene": 24,
        "test_scenes": 2,
        "test_frames_per_scene": 20,
        "test_pairs_per_scene": 15,
    },
}
_MIN_SIZES = {
    "train_scenes": 1,
    "frames_per_scene": 2,
    "test_scenes": 1,
    "test_frames_per_scene": 2,
    "test_pairs_per_scene": 1,
}

# ScanNet: 640x480 frames with the depth intrinsics of the real set (docs/original.md#scannet: fx =
# fy = 577.87, cx = 319.5, cy = 239.5); the focal length varies a little per scene (the real file
# has 14 distinct values; these five are made up around 577.87).
SCANNET_WIDTH, SCANNET_HEIGHT = 640, 480
SCANNET_FOCALS = (571.62, 574.54, 577.87, 581.07, 583.52)
SCANNET_FRAME_STEP = 10  # python SensReader export with frame_skip=10: ids 0, 10, 20, ... unpadded
SCANNET_TEST_SCENE_OFFSET = 707  # ScanNet-1500 test scenes are scene0707_00 ... scene0806_00
SCANNET_TRAIN_OVERLAP = (0.1, 0.9)  # pairs kept in the training index
SCANNET_TEST_OVERLAP = (0.2, 0.8)  # range the test pairs are spread over
SCANNET_TRAIN_LIST = "synthetic_train.txt"
SCANNET_TEST_LIST = "synthetic_test.txt"

# MegaDepth: photos of several sizes in both orientations, (width, height) in pixels.
MEGADEPTH_IMAGE_SIZES = (
    (800, 600),
    (600, 800),
    (1000, 750),
    (750, 1000),
    (960, 720),
    (720, 960),
    (640, 480),
    (480, 640),
)
MEGADEPTH_BINS = ((0.1, 0.3), (0.3, 0.5), (0.5, 0.7))  # sub-scene overlap bins of the real index
MEGADEPTH_TEST_SCENE_OFFSET = 5000
MEGADEPTH_DEPTH_ROOT = Path("phoenix/S6/zl548/MegaDepth_v1")

_FORMAT_CODE = {"scannet": 1, "megadepth": 2}
_SPLIT_CODE = {"train": 1, "test": 2}
_OVERLAP_STRIDE = 8  # pixels between the depth samples the overlap score uses
_OVERLAP_REL_TOL = 0.05  # relative depth agreement that counts a pixel as co-visible

# --------------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------------

#: scikit-image sample photographs that ship with the package (no download needed).
TEXTURE_PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "text",
    "page",
    "moon",
    "coins",
    "clock",
    "hubble_deep_field",
    "immunohistochemistry",
    "cell",
)
TEXTURE_SIZE = 512
N_PROCEDURAL_TEXTURES = 14


@dataclass(frozen=True)
class TextureBank:
    """Square grey textures with their mip-map pyramids.

    Attributes:
        levels: level ``l`` is a float32 array (T, S / 2**l, S / 2**l) in [0, 1]; level 0 is the
            full resolution S = ``TEXTURE_SIZE``, each next level the 2x2 mean of the previous.
        names: (T,) a name per texture (photo name or procedural kind).
    """

    levels: tuple[np.ndarray, ...]
    names: tuple[str, ...]

    @property
    def count(self) -> int:
        """Number of textures T."""
        return len(self.names)


def _normalise_contrast(tex: np.ndarray, mean: float = 0.5, std: float = 0.2) -> np.ndarray:
    """Shift and scale ``tex`` (H, W) to a common mean and standard deviation, clipped to [0, 1]."""
    tex = tex.astype(np.float64)
    sd = tex.std()
    tex = (tex - tex.mean()) / (sd if sd > 1e-8 else 1.0) * std + mean
    return np.clip(tex, 0.0, 1.0).astype(np.float32)


def _load_photo(name: str, size: int) -> np.ndarray:
    """A scikit-image sample photo as a grey (size, size) float32 texture, centre-cropped."""
    from skimage import data as skdata

    img = np.asarray(getattr(skdata, name)()).astype(np.float64)
    if img.ndim == 3:  # RGB(A) -> luma
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    if img.max() > 1.0:
        img = img / 255.0
    h, w = img.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    img = img[y0 : y0 + side, x0 : x0 + side]
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return _normalise_contrast(img)


def _periodic_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Tileable value noise (size, size): a random ``cells`` x ``cells`` grid, bicubic, wrapped."""
    grid = rng.random((cells, cells))
    pad = np.pad(grid, 2, mode="wrap")  # wrap so the texture tiles without a seam
    step = size / cells
    big = cv2.resize(
        pad, (int(round(step * (cells + 4))),) * 2, interpolation=cv2.INTER_CUBIC
    ).astype(np.float64)
    off = int(round(2 * step))
    return big[off : off + size, off : off + size]


def _fractal_noise(rng: np.random.Generator, size: int, octaves: Sequence[int]) -> np.ndarray:
    """Sum of tileable noise octaves (size, size) with amplitude falling as 1/sqrt(frequency)."""
    out = np.zeros((size, size))
    for cells in octaves:
        out += _periodic_noise(rng, size, cells) / np.sqrt(cells)
    return out


def _procedural_texture(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A procedural grey texture (size, size) in [0, 1]; every kind carries fine-scale detail."""
    if kind == "noise":
        return _normalise_contrast(_fractal_noise(rng, size, (4, 8, 16, 32, 64, 128, 256)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    fine = _fractal_noise(rng, size, (32, 64, 128, 256))
    if kind == "checker":
        period = size // int(rng.choice([4, 8, 16]))
        pattern = (((xx // period) + (yy // period)) % 2).astype(np.float64)
        weight = 0.6
    elif kind == "stripes":
        # integer wave numbers keep the pattern tileable
        kx, ky = (int(v) for v in rng.integers(-12, 13, size=2))
        kx = kx if (kx or ky) else 6
        pattern = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * (kx * xx + ky * yy) / size))
        weight = 0.5
    elif kind == "tiles":
        period = size // int(rng.choice([4, 8]))
        grout = ((xx % period) < 3) | ((yy % period) < 3)
        shade = _periodic_noise(rng, size, size // period)
        pattern = np.where(grout, 0.0, 0.4 + 0.6 * shade)
        weight = 0.6
    elif kind == "blobs":
        base = _fractal_noise(rng, size, (8, 16, 32))
        pattern = (base > np.median(base)).astype(np.float64)
        weight = 0.5
    else:  # pragma: no cover - internal kinds only
        raise ValueError(kind)
    tex = weight * _normalise_contrast(pattern) + (1.0 - weight) * _normalise_contrast(fine)
    return _normalise_contrast(tex)


def _mip_levels(textures: np.ndarray, min_size: int = 8) -> tuple[np.ndarray, ...]:
    """Mip-map pyramid of ``textures`` (T, S, S): each level the 2x2 block mean of the previous."""
    levels = [textures.astype(np.float32)]
    while levels[-1].shape[-1] // 2 >= min_size:
        prev = levels[-1]
        t, s, _ = prev.shape
        levels.append(prev.reshape(t, s // 2, 2, s // 2, 2).mean(axis=(2, 4), dtype=np.float32))
    return tuple(np.ascontiguousarray(lv) for lv in levels)


def make_texture_bank(seed: int, size: int = TEXTURE_SIZE) -> TextureBank:
    """Build the texture bank: scikit-image photos plus seeded procedural patterns.

    Args:
        seed: seeds the procedural textures (the photos are fixed).
        size: side S of every texture in texels, a power of two.

    Returns:
        A ``TextureBank`` with ``len(TEXTURE_PHOTOS) + N_PROCEDURAL_TEXTURES`` textures.
    """
    rng = np.random.default_rng([seed, 77])
    textures, names = [], []
    for name in TEXTURE_PHOTOS:
        # fine noise on top, so that flat regions of a photo still have something to match
        fine = _normalise_contrast(_fractal_noise(rng, size, (64, 128, 256)))
        textures.append(_normalise_contrast(0.8 * _load_photo(name, size) + 0.2 * fine))
        names.append(name)
    kinds = ("noise", "checker", "stripes", "tiles", "blobs")
    for i in range(N_PROCEDURAL_TEXTURES):
        kind = kinds[i % len(kinds)]
        textures.append(_procedural_texture(rng, kind, size))
        names.append(f"{kind}{i}")
    return TextureBank(levels=_mip_levels(np.stack(textures)), names=tuple(names))


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """A piecewise-planar scene: Q textured rectangles in the world frame (z up, metres).

    Rectangle q spans ``origin[q] + a * axis_u[q] + b * axis_v[q]`` for ``0 <= a <= size[q, 0]``
    and ``0 <= b <= size[q, 1]``; its texel is ``(a, b) * texels_per_metre[q] + tex_offset[q]``
    (texture wraps around).

    Attributes:
        kind: "indoor" or "outdoor".
        origin: (Q, 3) a corner, metres.
        axis_u: (Q, 3) unit edge direction.
        axis_v: (Q, 3) unit edge direction, orthogonal to ``axis_u``.
        size: (Q, 2) edge lengths along u and v, metres.
        texture: (Q,) index into the texture bank.
        texels_per_metre: (Q,) texture scale.
        tex_offset: (Q, 2) texel offset.
        albedo: (Q,) brightness factor.
        outward: (Q, 3) unit normal of the visible side of a one-sided rectangle (a closed box's
            face: culled when the camera is behind it), or zeros for a two-sided one.
        light: (3,) world position of the point light (indoor) or unit direction towards the sun
            (outdoor).
        bank: the textures.
    """

    kind: str
    origin: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    size: np.ndarray
    texture: np.ndarray
    texels_per_metre: np.ndarray
    tex_offset: np.ndarray
    albedo: np.ndarray
    outward: np.ndarray
    light: np.ndarray
    bank: TextureBank

    @property
    def num_quads(self) -> int:
        """Number of rectangles Q."""
        return int(self.origin.shape[0])


class _QuadList:
    """Accumulates textured rectangles while a scene is built."""

    def __init__(self, rng: np.random.Generator, bank: TextureBank) -> None:
        self.rng = rng
        self.bank = bank
        self.cols: dict[str, list[Any]] = {
            k: [] for k in ("origin", "u", "v", "size", "tex", "tpm", "albedo", "outward")
        }

    def add(
        self,
        origin: Sequence[float],
        axis_u: Sequence[float],
        axis_v: Sequence[float],
        width: float,
        height: float,
        *,
        period: tuple[float, float] = (1.0, 3.0),
        outward: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> None:
        """Add a rectangle; the texture repeats every ``period`` metres (drawn uniformly).

        ``outward`` is the normal of the side that can be seen (a closed box's face), or zero for a
        rectangle seen from both sides.
        """
        u = np.asarray(axis_u, np.float64)
        v = np.asarray(axis_v, np.float64)
        self.cols["origin"].append(np.asarray(origin, np.float64))
        self.cols["u"].append(u / np.linalg.norm(u))
        self.cols["v"].append(v / np.linalg.norm(v))
        self.cols["size"].append((float(width), float(height)))
        self.cols["tex"].append(int(self.rng.integers(self.bank.count)))
        self.cols["tpm"].append(TEXTURE_SIZE / self.rng.uniform(*period))
        self.cols["albedo"].append(self.rng.uniform(0.75, 1.0))
        self.cols["outward"].append(np.asarray(outward, np.float64))

    def add_box(
        self,
        centre: Sequence[float],
        half: Sequence[float],
        yaw: float,
        *,
        period: tuple[float, float] = (1.0, 3.0),
    ) -> None:
        """Add the four sides and the top of a box rotated by ``yaw`` about the vertical.

        The box spans ``centre +- half`` in its own axes (metres); its faces are one-sided.
        """
        c = np.asarray(centre, np.float64)
        hx, hy, hz = half
        ex = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        ey = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
        ez = np.array([0.0, 0.0, 1.0])
        base = c - hx * ex - hy * ey - hz * ez  # corner (-, -, -)
        kw: dict[str, Any] = {"period": period}
        self.add(base, ex, ez, 2 * hx, 2 * hz, outward=-ey, **kw)
        self.add(base + 2 * hy * ey, ex, ez, 2 * hx, 2 * hz, outward=ey, **kw)
        self.add(base, ey, ez, 2 * hy, 2 * hz, outward=-ex, **kw)
        self.add(base + 2 * hx * ex, ey, ez, 2 * hy, 2 * hz, outward=ex, **kw)
        self.add(base + 2 * hz * ez, ex, ey, 2 * hx, 2 * hy, outward=ez, **kw)

    def build(self, kind: str, light: np.ndarray) -> Scene:
        """Freeze the rectangles into a ``Scene``."""
        c = self.cols
        n = len(c["origin"])
        return Scene(
            kind=kind,
            origin=np.stack(c["origin"]),
            axis_u=np.stack(c["u"]),
            axis_v=np.stack(c["v"]),
            size=np.asarray(c["size"], np.float64),
            texture=np.asarray(c["tex"], np.int64),
            texels_per_metre=np.asarray(c["tpm"], np.float64),
            tex_offset=self.rng.uniform(0, TEXTURE_SIZE, size=(n, 2)),
            albedo=np.asarray(c["albedo"], np.float64),
            outward=np.stack(c["outward"]),
            light=np.asarray(light, np.float64),
            bank=self.bank,
        )


@dataclass(frozen=True)
class Room:
    """Extents of an indoor room: x in [0, width], y in [0, depth], z in [0, height], metres."""

    width: float
    depth: float
    height: float


#: Cameras keep this distance (metres) from the walls; furniture stays closer to the walls.
ROOM_CAMERA_MARGIN = 1.2
ROOM_FURNITURE_DEPTH = 1.0


def indoor_scene(rng: np.random.Generator, bank: TextureBank) -> tuple[Scene, Room]:
    """A room: floor, ceiling, 4 walls, posters and furniture boxes against the walls.

    Args:
        rng: drives every random choice.
        bank: textures to draw from.

    Returns:
        The scene and the room extents (cameras are placed inside ``ROOM_CAMERA_MARGIN``).
    """
    room = Room(rng.uniform(4.0, 7.0), rng.uniform(4.0, 7.0), rng.uniform(2.5, 3.2))
    w, d, h = room.width, room.depth, room.height
    quads = _QuadList(rng, bank)
    quads.add((0, 0, 0), (1, 0, 0), (0, 1, 0), w, d)  # floor
    quads.add((0, 0, h), (1, 0, 0), (0, 1, 0), w, d)  # ceiling
    quads.add((0, 0, 0), (1, 0, 0), (0, 0, 1), w, h)  # wall y = 0
    quads.add((0, d, 0), (1, 0, 0), (0, 0, 1), w, h)  # wall y = d
    quads.add((0, 0, 0), (0, 1, 0), (0, 0, 1), d, h)  # wall x = 0
    quads.add((w, 0, 0), (0, 1, 0), (0, 0, 1), d, h)  # wall x = w
    walls = (  # (origin of the wall's u axis, u direction, inward normal, wall length)
        (np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), w),
        (np.array([0.0, d]), np.array([1.0, 0.0]), np.array([0.0, -1.0]), w),
        (np.array([0.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 0.0]), d),
        (np.array([w, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), d),
    )
    # Posters 2 cm off the walls: more photographs at eye height.
    for _ in range(int(rng.integers(2, 5))):
        start, along, inward, length = walls[int(rng.integers(4))]
        pw, ph = rng.uniform(0.5, 1.4), rng.uniform(0.4, 1.0)
        a0 = rng.uniform(0.1, max(0.2, length - pw - 0.1))
        xy = start + a0 * along + 0.02 * inward
        z0 = rng.uniform(0.9, max(1.0, h - ph - 0.2))
        quads.add((xy[0], xy[1], z0), (along[0], along[1], 0), (0, 0, 1), pw, ph, period=(pw, pw))
    # Furniture: boxes against the walls, never deeper than ROOM_FURNITURE_DEPTH.
    for _ in range(int(rng.integers(3, 6))):
        start, along, inward, length = walls[int(rng.integers(4))]
        half_len = rng.uniform(0.25, min(1.0, length / 2 - 0.1))
        half_dep = rng.uniform(0.2, ROOM_FURNITURE_DEPTH / 2)
        half_hgt = rng.uniform(0.2, 1.0)
        a0 = rng.uniform(half_len + 0.05, length - half_len - 0.05)
        xy = start + a0 * along + (half_dep + rng.uniform(0.0, 0.03)) * inward
        yaw = float(np.arctan2(along[1], along[0]))
        quads.add_box((xy[0], xy[1], half_hgt), (half_len, half_dep, half_hgt), yaw)
    light = np.array([w * rng.uniform(0.3, 0.7), d * rng.uniform(0.3, 0.7), h - 0.3])
    return quads.build("indoor", light), room


#: Outdoor plaza radii (metres from the landmark's centre).
PLAZA_LANDMARK_REACH = 11.0
PLAZA_CAMERA_RADII = (14.0, 26.0)
PLAZA_RING_RADII = (36.0, 46.0)
PLAZA_GROUND_HALF = 60.0


def outdoor_scene(rng: np.random.Generator, bank: TextureBank) -> Scene:
    """An outdoor plaza: ground plane, a central landmark, a ring of buildings, sky above.

    The landmark is a few boxes of different heights with facades at several depths (boxes
    within ``PLAZA_LANDMARK_REACH`` m of the origin, plus columns in front); the ring of buildings
    stands between ``PLAZA_RING_RADII`` m, so seen from the camera ring the depth spans about
    5-60 m.

    Args:
        rng: drives every random choice.
        bank: textures to draw from.

    Returns:
        The scene; ``light`` is the unit direction towards the sun.
    """
    quads = _QuadList(rng, bank)
    g = PLAZA_GROUND_HALF
    quads.add((-g, -g, 0.0), (1, 0, 0), (0, 1, 0), 2 * g, 2 * g, period=(3.0, 6.0))
    # Landmark: boxes whose corners stay within PLAZA_LANDMARK_REACH of the origin.
    for _ in range(int(rng.integers(2, 5))):
        r, phi = rng.uniform(0.0, 3.0), rng.uniform(0, 2 * np.pi)
        hx, hy = rng.uniform(2.0, 5.5, size=2)
        hz = rng.uniform(3.0, 12.0)
        quads.add_box(
            (r * np.cos(phi), r * np.sin(phi), hz),
            (hx, hy, hz),
            rng.uniform(0, np.pi),
            period=(4.0, 12.0),
        )
    for _ in range(int(rng.integers(2, 6))):  # columns: depth steps in front of the facades
        r, phi = rng.uniform(7.5, 9.5), rng.uniform(0, 2 * np.pi)
        hz = rng.uniform(2.0, 7.0)
        quads.add_box(
            (r * np.cos(phi), r * np.sin(phi), hz),
            (0.5, 0.5, hz),
            rng.uniform(0, np.pi),
            period=(1.0, 3.0),
        )
    # Ring of buildings facing the centre, with gaps.
    n_ring = int(rng.integers(9, 14))
    for k in range(n_ring):
        phi = 2 * np.pi * (k + rng.uniform(-0.2, 0.2)) / n_ring
        r = rng.uniform(*PLAZA_RING_RADII)
        hx = rng.uniform(0.35, 0.5) * 2 * np.pi * r / n_ring  # along the ring
        hy = rng.uniform(3.0, 5.0)
        hz = rng.uniform(4.0, 12.0)
        quads.add_box(
            (r * np.cos(phi), r * np.sin(phi), hz),
            (hx, hy, hz),
            phi + np.pi / 2,
            period=(6.0, 16.0),
        )
    sun = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.6, 1.5)])
    return quads.build("outdoor", sun / np.linalg.norm(sun))


# --------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------


def camera_pose(position: Sequence[float], forward: Sequence[float], roll: float) -> np.ndarray:
    """World-to-camera pose of a camera at ``position`` looking along ``forward``.

    Args:
        position: (3,) camera centre in the world frame, metres.
        forward: (3,) viewing direction in the world frame (not vertical).
        roll: rotation about the viewing direction, radians.

    Returns:
        ``T_w2c`` (4, 4) float64 mapping world points to the camera frame (x right, y down,
        z forward).
    """
    f = np.asarray(forward, np.float64)
    f = f / np.linalg.norm(f)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    r_w2c = np.stack([right, down, f])  # rows: camera axes in world coordinates
    pose = np.eye(4)
    pose[:3, :3] = r_w2c
    pose[:3, 3] = -r_w2c @ np.asarray(position, np.float64)
    return pose


def _direction(yaw: float, pitch: float) -> np.ndarray:
    """Unit world vector with heading ``yaw`` (from +x towards +y) and elevation ``pitch``."""
    return np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])


def _split_counts(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal positive counts (fewer parts if total is small)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _n_walks(n_frames: int) -> int:
    """Trajectories per scene: up to 3, each at least 8 frames long so that neighbours overlap."""
    return max(1, min(3, n_frames // 8))


def indoor_trajectories(rng: np.random.Generator, room: Room, n_frames: int) -> list[np.ndarray]:
    """Camera poses along a few smooth walks with turning heads inside ``room``.

    One walk per 8 frames, at most 3, so that even a tiny set has overlapping neighbours.
    Each walk moves 0.5-2 m while the heading turns by 50-150 degrees, with slow pitch and roll
    changes, so neighbouring frames overlap strongly and distant ones weakly.

    Args:
        rng: drives the walks.
        room: the room; cameras stay ``ROOM_CAMERA_MARGIN`` m from the walls.
        n_frames: total number of poses.

    Returns:
        ``n_frames`` world-to-camera poses (4, 4), walk after walk.
    """
    m = ROOM_CAMERA_MARGIN
    lo = np.array([m, m])
    hi = np.array([room.width - m, room.depth - m])
    poses = []
    for count in _split_counts(n_frames, _n_walks(n_frames)):
        start = rng.uniform(lo, hi)
        heading = rng.uniform(0, 2 * np.pi)
        end = np.clip(start + rng.uniform(0.5, 2.0) * _direction(heading, 0.0)[:2], lo, hi)
        z0, z1 = rng.uniform(1.1, 1.8, size=2)
        yaw0 = rng.uniform(0, 2 * np.pi)
        yaw_span = rng.choice([-1.0, 1.0]) * np.deg2rad(rng.uniform(50, 150))
        pitch0 = np.deg2rad(rng.uniform(-30, 0))
        roll0 = np.deg2rad(rng.uniform(-6, 6))
        ph1, ph2 = rng.uniform(0, 2 * np.pi, size=2)
        for s in np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(1):
            xy = np.clip(start + s * (end - start), lo, hi)
            pos = np.array([xy[0], xy[1], z0 + s * (z1 - z0)])
            yaw = yaw0 + s * yaw_span
            pitch = pitch0 + np.deg2rad(8) * np.sin(2 * np.pi * s + ph1)
            roll = roll0 + np.deg2rad(3) * np.sin(2 * np.pi * s + ph2)
            poses.append(camera_pose(pos, _direction(yaw, pitch), roll))
    return poses


def outdoor_trajectories(
    rng: np.random.Generator, n_frames: int
) -> tuple[list[np.ndarray], list[float]]:
    """Camera poses along a few arcs around the plaza's landmark, looking at it.

    One arc per 8 frames, at most 3.
    Each arc sweeps 30-80 degrees around the centre between radii ``PLAZA_CAMERA_RADII``, at eye
    height or raised (up to 6 m), aiming near the landmark with jitter and a small roll. Each arc
    has its own zoom: a field of view of 50-70 degrees, +-4 degrees per photo.

    Args:
        rng: drives the arcs.
        n_frames: total number of poses.

    Returns:
        ``(poses, fovs)``: ``n_frames`` world-to-camera poses (4, 4), arc after arc, and the field
        of view of each photo across its long side, degrees.
    """
    poses, fovs = [], []
    for count in _split_counts(n_frames, _n_walks(n_frames)):
        fov = rng.uniform(50, 70)
        phi0 = rng.uniform(0, 2 * np.pi)
        span = rng.choice([-1.0, 1.0]) * np.deg2rad(rng.uniform(30, 80))
        r0, r1 = rng.uniform(*PLAZA_CAMERA_RADII, size=2)
        z0 = 1.6 if rng.random() < 0.6 else rng.uniform(2.0, 6.0)
        target0 = np.array([*rng.uniform(-3, 3, size=2), rng.uniform(3, 8)])
        for s in np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(1):
            phi = phi0 + s * span
            r = r0 + s * (r1 - r0)
            pos = np.array([r * np.cos(phi), r * np.sin(phi), z0 + rng.uniform(-0.15, 0.15)])
            target = target0 + rng.uniform(-0.7, 0.7, size=3)
            roll = np.deg2rad(rng.uniform(-3, 3))
            poses.append(camera_pose(pos, target - pos, roll))
            fovs.append(fov + rng.uniform(-4, 4))
    return poses, fovs


def megadepth_intrinsics(rng: np.random.Generator, fov: float) -> tuple[np.ndarray, int, int]:
    """Draw a MegaDepth-like image size (either orientation) and its pinhole intrinsics.

    Args:
        rng: draws the size and the principal point.
        fov: field of view across the long side, degrees.

    Returns:
        ``(K, width, height)``: K (3, 3) float64 in pixels at that original resolution, with a
        principal point up to 2 % off the centre.
    """
    width, height = MEGADEPTH_IMAGE_SIZES[int(rng.integers(len(MEGADEPTH_IMAGE_SIZES)))]
    f = 0.5 * max(width, height) / np.tan(np.deg2rad(fov) / 2)
    cx = (width - 1) / 2 + rng.uniform(-0.02, 0.02) * width
    cy = (height - 1) / 2 + rng.uniform(-0.02, 0.02) * height
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]), width, height


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedView:
    """One rendered view.

    Attributes:
        image: (H, W) uint8 grey image.
        depth: (H, W) float32 camera-frame z in metres; 0 where no surface was hit (sky).
    """

    image: np.ndarray
    depth: np.ndarray


_NEAR = 0.05  # metres: surfaces closer to the camera plane are clipped


def _clip_near(corners: np.ndarray, near: float) -> np.ndarray:
    """Clip a convex polygon (N, 3) in the camera frame to the half-space z >= ``near``."""
    out = []
    n = len(corners)
    for i in range(n):
        p, q = corners[i], corners[(i + 1) % n]
        p_in, q_in = p[2] >= near, q[2] >= near
        if p_in:
            out.append(p)
        if p_in != q_in:
            s = (near - p[2]) / (q[2] - p[2])
            out.append(p + s * (q - p))
    return np.asarray(out).reshape(-1, 3)


def _screen_bbox(
    corners: np.ndarray, k: np.ndarray, width: int, height: int, near: float
) -> tuple[int, int, int, int] | None:
    """Pixel bounding box ``(x0, x1, y0, y1)`` (inclusive) of a polygon (N, 3) in the camera frame.

    Returns None when the polygon lies behind the near plane or outside the image.
    """
    poly = _clip_near(corners, near)
    if len(poly) == 0:
        return None
    x = k[0, 0] * poly[:, 0] / poly[:, 2] + k[0, 2]
    y = k[1, 1] * poly[:, 1] / poly[:, 2] + k[1, 2]
    x0, x1 = max(0, int(np.floor(x.min())) - 1), min(width - 1, int(np.ceil(x.max())) + 1)
    y0, y1 = max(0, int(np.floor(y.min())) - 1), min(height - 1, int(np.ceil(y.max())) + 1)
    if x0 > x1 or y0 > y1:
        return None
    return x0, x1, y0, y1


def _sample_textures(
    bank: TextureBank, tex: np.ndarray, s: np.ndarray, t: np.ndarray, level: np.ndarray
) -> np.ndarray:
    """Bilinear, wrapping texture look-up at texel coordinates of level 0.

    Args:
        bank: the textures.
        tex: (M,) texture index per sample.
        s: (M,) column coordinate in level-0 texels (texel centres at integer + 0.5).
        t: (M,) row coordinate in level-0 texels.
        level: (M,) mip level per sample.

    Returns:
        (M,) float32 values in [0, 1].
    """
    out = np.empty(s.shape, np.float32)
    for lv in np.flatnonzero(np.bincount(level)):
        sel = level == lv
        data = bank.levels[int(lv)]
        size = data.shape[-1]
        flat = data.reshape(-1)
        scale = 0.5**lv
        x = s[sel] * scale - 0.5
        y = t[sel] * scale - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
        x0 = x0.astype(np.int64) % size
        y0 = y0.astype(np.int64) % size
        x1, y1 = (x0 + 1) % size, (y0 + 1) % size
        base = tex[sel] * size * size
        v00 = flat[base + y0 * size + x0]
        v01 = flat[base + y0 * size + x1]
        v10 = flat[base + y1 * size + x0]
        v11 = flat[base + y1 * size + x1]
        top = v00 + fx * (v01 - v00)
        bot = v10 + fx * (v11 - v10)
        out[sel] = top + fy * (bot - top)
    return out


def render_view(
    scene: Scene,
    K: np.ndarray,
    T_w2c: np.ndarray,
    width: int,
    height: int,
    *,
    rng: np.random.Generator | None = None,
) -> RenderedView:
    """Ray-cast ``scene`` into a pinhole camera with exact depth.

    Every pixel centre ``(x, y)`` (integers) casts the ray ``K^-1 [x, y, 1]``; the depth is the
    camera-frame z of the nearest rectangle hit in front of the camera (z-buffer over exact
    ray-plane intersections). The grey value is the rectangle's mip-mapped, bilinearly sampled
    texture times a Lambertian shade (point light indoors, sun outdoors); rays that hit nothing see
    a sky gradient with depth 0.

    Args:
        scene: the scene.
        K: (3, 3) intrinsics in pixels (no skew).
        T_w2c: (4, 4) world-to-camera pose.
        width: image width W in pixels.
        height: image height H in pixels.
        rng: if given, adds a small per-image gain, offset and sensor noise (photometric only; the
            depth is unaffected).

    Returns:
        A ``RenderedView`` with the (H, W) uint8 image and (H, W) float32 depth in metres.

    Example:
        >>> bank = make_texture_bank(0)  # doctest: +SKIP
        >>> scene, room = indoor_scene(np.random.default_rng(0), bank)  # doctest: +SKIP
    """
    k = np.asarray(K, np.float64)
    pose = np.asarray(T_w2c, np.float64)
    rot, trans = pose[:3, :3], pose[:3, 3]
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    ray_x = (np.arange(width, dtype=np.float64) - cx) / fx  # ray (ray_x, ray_y, 1)
    ray_y = (np.arange(height, dtype=np.float64) - cy) / fy

    origin = scene.origin @ rot.T + trans  # everything in the camera frame
    axis_u = scene.axis_u @ rot.T
    axis_v = scene.axis_v @ rot.T
    normal = np.cross(axis_u, axis_v)
    # a box face whose outer side points away from the camera (centre at the origin) is hidden
    front = np.einsum("ij,ij->i", scene.outward @ rot.T, -origin) > 0
    front |= ~scene.outward.any(axis=1)
    size = scene.size
    corners = np.stack(
        [
            origin,
            origin + axis_u * size[:, :1],
            origin + axis_u * size[:, :1] + axis_v * size[:, 1:],
            origin + axis_v * size[:, 1:],
        ],
        axis=1,
    )  # (Q, 4, 3)

    zbuf = np.full((height, width), np.inf)
    quad_id = np.full((height, width), -1, np.int64)
    coord_a = np.zeros((height, width))
    coord_b = np.zeros((height, width))
    eps = 1e-6  # metres: closes cracks where rectangles share an edge
    for q in np.flatnonzero(front):
        box = _screen_bbox(corners[q], k, width, height, _NEAR)
        if box is None:
            continue
        x0, x1, y0, y1 = box
        rx = ray_x[None, x0 : x1 + 1]
        ry = ray_y[y0 : y1 + 1, None]
        n, o, u, v = normal[q], origin[q], axis_u[q], axis_v[q]
        denom = n[0] * rx + n[1] * ry + n[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = float(n @ o) / denom  # ray parameter = camera z, since the ray has z = 1
        a = u[0] * rx + u[1] * ry + u[2]  # in place from here: fewer temporaries
        a *= z
        a -= float(u @ o)
        b = v[0] * rx + v[1] * ry + v[2]
        b *= z
        b -= float(v @ o)
        zb = zbuf[y0 : y1 + 1, x0 : x1 + 1]
        with np.errstate(invalid="ignore"):
            hit = z > _NEAR
            hit &= z < zb
            hit &= a >= -eps
            hit &= a <= size[q, 0] + eps
            hit &= b >= -eps
            hit &= b <= size[q, 1] + eps
        np.copyto(zb, z, where=hit)
        np.copyto(quad_id[y0 : y1 + 1, x0 : x1 + 1], q, where=hit)
        np.copyto(coord_a[y0 : y1 + 1, x0 : x1 + 1], a, where=hit)
        np.copyto(coord_b[y0 : y1 + 1, x0 : x1 + 1], b, where=hit)

    image = np.empty((height, width), np.float32)
    idx = np.flatnonzero(quad_id >= 0)
    rows, cols = np.divmod(idx, width)
    q = quad_id.reshape(-1)[idx]
    z = zbuf.reshape(-1)[idx]
    if len(idx):
        rays = np.stack([ray_x[cols], ray_y[rows], np.ones(len(idx))], axis=1)
        ray_len = np.linalg.norm(rays, axis=1)
        n = normal[q]
        n_dot_d = np.einsum("ij,ij->i", n, rays)
        n = n * -np.sign(n_dot_d)[:, None]  # two-sided: the normal facing the camera
        cos_view = np.abs(n_dot_d) / ray_len
        tpm = scene.texels_per_metre[q]
        # texels covered by one pixel (geometric mean of the anisotropic footprint)
        footprint = tpm * z / (np.sqrt(fx * fy) * np.sqrt(np.maximum(cos_view, 0.02)))
        level = np.clip(np.floor(np.log2(np.maximum(footprint, 1.0)) + 0.5), 0, None)
        level = np.minimum(level, len(scene.bank.levels) - 1).astype(np.int64)
        s = coord_a.reshape(-1)[idx] * tpm + scene.tex_offset[q, 0]
        t = coord_b.reshape(-1)[idx] * tpm + scene.tex_offset[q, 1]
        value = _sample_textures(scene.bank, scene.texture[q], s, t, level)
        if scene.kind == "indoor":
            light = rot @ scene.light + trans
            to_light = light[None, :] - rays * z[:, None]
            dist = np.linalg.norm(to_light, axis=1)
            lambert = np.maximum(np.einsum("ij,ij->i", n, to_light) / dist, 0.0)
            shade = 0.55 + 0.9 * lambert / (1.0 + (dist / 4.0) ** 2)
        else:
            sun = rot @ scene.light
            shade = 0.7 + 0.5 * np.maximum(n @ sun, 0.0)
        image.reshape(-1)[idx] = value * scene.albedo[q] * shade
    # Sky: brighter towards the zenith; no depth there.
    sky = quad_id < 0
    if sky.any():
        up = rot @ np.array([0.0, 0.0, 1.0])
        rx = np.broadcast_to(ray_x[None, :], sky.shape)[sky]
        ry = np.broadcast_to(ray_y[:, None], sky.shape)[sky]
        elevation = (up[0] * rx + up[1] * ry + up[2]) / np.sqrt(rx**2 + ry**2 + 1.0)
        image[sky] = 0.7 + 0.25 * elevation
    if rng is not None:
        gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-0.04, 0.04)
        image = image * gain + offset + rng.normal(0.0, 1.5 / 255, size=image.shape)
    image_u8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    depth = np.where(quad_id >= 0, zbuf, 0.0).astype(np.float32)
    return RenderedView(image=image_u8, depth=depth)


# --------------------------------------------------------------------------------------------
# Overlap
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Covisibility:
    """One direction of a pair's co-visibility (image 0 -> image 1).

    Attributes:
        fraction: co-visible share of the sampled image-0 pixels that have depth.
        central_match: (4,) float64 ``[x0, y0, x1, y1]`` pixels: the co-visible image-0 sample
            nearest the centroid of the co-visible ones and where it lands in image 1; NaN if
            none.
    """

    fraction: float
    central_match: np.ndarray


def covisibility(
    depth0: np.ndarray,
    depth1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    T_0to1: np.ndarray,
    *,
    stride: int = _OVERLAP_STRIDE,
    rel_tol: float = _OVERLAP_REL_TOL,
) -> Covisibility:
    """Share of image-0 pixels that reproject into image 1 with consistent depth.

    A pixel of image 0 (sampled every ``stride`` pixels, depth > 0) is co-visible when its 3D
    point, moved into camera 1 by ``T_0to1``, lies in front of camera 1, projects inside image 1
    and the depth of image 1 at the nearest pixel agrees with its z within ``rel_tol`` (relative).

    Args:
        depth0: (H0, W0) camera-0 z in metres, 0 = unknown.
        depth1: (H1, W1) camera-1 z in metres, 0 = unknown.
        K0: (3, 3) intrinsics of image 0 in pixels.
        K1: (3, 3) intrinsics of image 1 in pixels.
        T_0to1: (4, 4) maps camera-0 points to camera 1.
        stride: sampling step in pixels.
        rel_tol: relative depth tolerance.

    Returns:
        The ``Covisibility`` of this direction.
    """
    h1, w1 = depth1.shape
    ys, xs = np.mgrid[0 : depth0.shape[0] : stride, 0 : depth0.shape[1] : stride]
    z0 = depth0[ys, xs].astype(np.float64)
    valid = z0 > 0
    xs, ys, z0 = xs[valid], ys[valid], z0[valid]
    if len(z0) == 0:
        return Covisibility(0.0, np.full(4, np.nan))
    pix = np.stack([xs, ys, np.ones_like(xs)], axis=0).astype(np.float64)
    pts0 = np.linalg.inv(np.asarray(K0, np.float64)) @ pix * z0
    pts1 = np.asarray(T_0to1, np.float64)[:3, :3] @ pts0 + np.asarray(T_0to1, np.float64)[:3, 3:]
    z1 = pts1[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = np.asarray(K1, np.float64) @ (pts1 / z1)
    u, v = proj[0], proj[1]
    ui, vi = np.rint(u), np.rint(v)
    inside = (z1 > 0) & (ui >= 0) & (ui <= w1 - 1) & (vi >= 0) & (vi <= h1 - 1)
    d1 = np.zeros_like(z1)
    d1[inside] = depth1[vi[inside].astype(np.int64), ui[inside].astype(np.int64)]
    ok = inside & (d1 > 0) & (np.abs(z1 - d1) <= rel_tol * d1)
    fraction = float(ok.sum()) / float(len(z0))
    if not ok.any():
        return Covisibility(fraction, np.full(4, np.nan))
    cx, cy = xs[ok].mean(), ys[ok].mean()
    best = np.argmin((xs[ok] - cx) ** 2 + (ys[ok] - cy) ** 2)
    match = np.array([xs[ok][best], ys[ok][best], u[ok][best], v[ok][best]], np.float64)
    return Covisibility(fraction, match)


def relative_pose(T_w2c0: np.ndarray, T_w2c1: np.ndarray) -> np.ndarray:
    """``T_0to1`` (4, 4) = ``T_w2c1 @ inv(T_w2c0)``: maps camera-0 points to camera 1."""
    return np.asarray(T_w2c1, np.float64) @ np.linalg.inv(np.asarray(T_w2c0, np.float64))


def overlap_score(
    depth0: np.ndarray,
    depth1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    T_0to1: np.ndarray,
    *,
    stride: int = _OVERLAP_STRIDE,
) -> float:
    """Symmetric overlap of a pair: the smaller of both directions' co-visible fractions.

    SuperGlue/ScanNet-style score in [0, 1]; see ``covisibility`` for the arguments.
    """
    fwd = covisibility(depth0, depth1, K0, K1, T_0to1, stride=stride).fraction
    bwd = covisibility(depth1, depth0, K1, K0, np.linalg.inv(T_0to1), stride=stride).fraction
    return min(fwd, bwd)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` with fixed zip timestamps, so the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            zf.writestr(
                zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue()
            )


def _write_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise DataError(f"could not write {path}: check that the folder is writable")


def _write_matrix(path: Path, matrix: np.ndarray) -> None:
    """Write a matrix as space-delimited text rows (SensReader pose/intrinsic files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(f"{x:.9f}" for x in row) for row in np.asarray(matrix, np.float64)]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class _RenderedScene:
    name: str
    intrinsics: list[np.ndarray]  # (3, 3) per frame
    poses: list[np.ndarray]  # (4, 4) world-to-camera per frame
    views: list[RenderedView]


def _scene_rng(seed: int, fmt: str, split: str, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, _FORMAT_CODE[fmt], _SPLIT_CODE[split], index, purpose])


def _pair_overlaps(scene: _RenderedScene) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Overlap score and central match of every frame pair (i < j) of a rendered scene.

    Returns:
        ``(pairs, scores (P,), central_matches (P, 4))``.
    """
    pairs, scores, centrals = [], [], []
    n = len(scene.views)
    for i in range(n):
        for j in range(i + 1, n):
            t_0to1 = relative_pose(scene.poses[i], scene.poses[j])
            d0, d1 = scene.views[i].depth, scene.views[j].depth
            k0, k1 = scene.intrinsics[i], scene.intrinsics[j]
            fwd = covisibility(d0, d1, k0, k1, t_0to1)
            bwd = covisibility(d1, d0, k1, k0, np.linalg.inv(t_0to1))
            pairs.append((i, j))
            scores.append(min(fwd.fraction, bwd.fraction))
            centrals.append(fwd.central_match)
    return pairs, np.asarray(scores, np.float64), np.asarray(centrals).reshape(-1, 4)


def _spread_pairs(scores: np.ndarray, n: int, lo: float, hi: float) -> list[int]:
    """Pick up to ``n`` pair indices whose scores spread evenly over [lo, hi] (deterministic)."""
    candidates = [i for i in np.argsort(scores, kind="stable") if lo <= scores[i] <= hi]
    if len(candidates) <= n:
        return sorted(candidates)
    chosen: list[int] = []
    for target in np.linspace(lo, hi, n):
        free = [i for i in candidates if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(scores[i] - target), i)))
    return sorted(chosen)


class _Progress:
    """A tqdm bar over rendered frames, or nothing."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="frame", file=sys.stderr)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


#: Frames are rendered on this many threads (numpy releases the GIL in the array work); each
#: frame has its own noise generator, so the output does not depend on the thread count.
RENDER_THREADS = max(1, min(2, os.cpu_count() or 1))


def _render_frames(
    scene: Scene,
    cameras: Sequence[tuple[np.ndarray, np.ndarray, int, int]],
    key: tuple[int, str, str, int],
    progress: _Progress,
) -> list[RenderedView]:
    """Render ``(K, T_w2c, width, height)`` cameras of one scene, frame ``i`` with noise seeded
    by ``(seed, format, split, scene index)`` = ``key`` and ``i``."""
    seed, fmt, split, index = key

    def render(i: int) -> RenderedView:
        k, pose, width, height = cameras[i]
        noise = _scene_rng(seed, fmt, split, index, 1000 + i)
        return render_view(scene, k, pose, width, height, rng=noise)

    views: list[RenderedView] = []
    with ThreadPoolExecutor(max_workers=RENDER_THREADS) as pool:
        for view in pool.map(render, range(len(cameras))):
            views.append(view)
            progress.update()
    return views


def _render_scannet_scene(
    bank: TextureBank, seed: int, split: str, index: int, n_frames: int, progress: _Progress
) -> _RenderedScene:
    rng = _scene_rng(seed, "scannet", split, index, 0)
    scene, room = indoor_scene(rng, bank)
    focal = SCANNET_FOCALS[int(rng.integers(len(SCANNET_FOCALS)))]
    k = np.array(
        [
            [focal, 0.0, (SCANNET_WIDTH - 1) / 2],
            [0.0, focal, (SCANNET_HEIGHT - 1) / 2],
            [0.0, 0.0, 1.0],
        ]
    )
    poses = indoor_trajectories(rng, room, n_frames)
    cameras = [(k, pose, SCANNET_WIDTH, SCANNET_HEIGHT) for pose in poses]
    views = _render_frames(scene, cameras, (seed, "scannet", split, index), progress)
    offset = SCANNET_TEST_SCENE_OFFSET if split == "test" else 0
    name = f"scene{offset + index:04d}_00"
    return _RenderedScene(name, [k] * n_frames, poses, views)


def _write_scannet_frames(folder: Path, scene: _RenderedScene, frames: Sequence[int]) -> None:
    """Write color/depth/pose files (docs/original.md#scannet) of the given frame indices of
    ``scene``."""
    for i in frames:
        fid = i * SCANNET_FRAME_STEP
        view = scene.views[i]
        _write_jpg(folder / "color" / f"{fid}.jpg", view.image)
        depth_mm = np.clip(np.rint(view.depth.astype(np.float64) * 1000.0), 0, 65535)
        (folder / "depth").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "depth" / f"{fid}.png"), depth_mm.astype(np.uint16))
        _write_matrix(folder / "pose" / f"{fid}.txt", np.linalg.inv(scene.poses[i]))  # cam-to-world


def write_scannet(out: Path, seed: int, sizes: Mapping[str, int], progress: bool = False) -> dict:
    """Render and write a ScanNet-format set (docs/original.md#scannet, #test-sets) into ``out``.

    Args:
        out: the format folder (``<root>/scannet``), created if needed.
        seed: seeds everything.
        sizes: resolved sizes (see ``DEFAULT_SIZES``).
        progress: show a progress bar.

    Returns:
        A summary: scenes, frames and pairs written per split and the score range.
    """
    bank = make_texture_bank(seed)
    total = sizes["train_scenes"] * sizes["frames_per_scene"]
    total += sizes["test_scenes"] * sizes["test_frames_per_scene"]
    bar = _Progress(total, progress, "synthetic scannet")
    index = out / "index"
    (index / "scene_data" / "train").mkdir(parents=True, exist_ok=True)
    (index / "scene_data" / "train_list").mkdir(parents=True, exist_ok=True)
    (index / "scene_data" / "test").mkdir(parents=True, exist_ok=True)
    (index / "scene_data" / "test_list").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    try:
        intrinsics, names, all_scores = {}, [], []
        n_frames = sizes["frames_per_scene"]
        for s in range(sizes["train_scenes"]):
            scene = _render_scannet_scene(bank, seed, "train", s, n_frames, bar)
            _write_scannet_frames(out / "train" / scene.name, scene, range(n_frames))
            pairs, scores, _ = _pair_overlaps(scene)
            lo, hi = SCANNET_TRAIN_OVERLAP
            keep = [p for p in range(len(pairs)) if lo <= scores[p] <= hi]
            scene_id = int(scene.name[5:9])
            rows = [
                (scene_id, 0, pairs[p][0] * SCANNET_FRAME_STEP, pairs[p][1] * SCANNET_FRAME_STEP)
                for p in keep
            ]
            _save_npz(
                index / "scene_data" / "train" / f"{scene.name}.npz",
                {
                    "name": np.asarray(rows, np.uint16).reshape(-1, 4),
                    "score": scores[keep].astype(np.float16),
                },
            )
            intrinsics[scene.name] = scene.intrinsics[0].reshape(9).astype(np.float64)
            names.append(f"{scene.name}.npz")
            all_scores.extend(scores[keep].tolist())
        _save_npz(index / "intrinsics.npz", intrinsics)
        (index / "scene_data" / "train_list" / SCANNET_TRAIN_LIST).write_text(
            "\n".join(names) + "\n"
        )
        summary["train"] = _summary(len(names), sizes["train_scenes"] * n_frames, all_scores)

        test_rows, test_scores, test_rel, test_k, n_written = [], [], [], {}, 0
        n_test = sizes["test_frames_per_scene"]
        for s in range(sizes["test_scenes"]):
            scene = _render_scannet_scene(bank, seed, "test", s, n_test, bar)
            pairs, scores, _ = _pair_overlaps(scene)
            chosen = _spread_pairs(scores, sizes["test_pairs_per_scene"], *SCANNET_TEST_OVERLAP)
            used = sorted({f for p in chosen for f in pairs[p]})
            folder = out / "test" / scene.name
            _write_scannet_frames(folder, scene, used)
            n_written += len(used)
            k4 = np.eye(4)
            k4[:3, :3] = scene.intrinsics[0]
            for name in ("intrinsic_depth", "intrinsic_color"):
                _write_matrix(folder / "intrinsic" / f"{name}.txt", k4)
            for name in ("extrinsic_depth", "extrinsic_color"):
                _write_matrix(folder / "intrinsic" / f"{name}.txt", np.eye(4))
            scene_id = int(scene.name[5:9])
            for p in chosen:
                i, j = pairs[p]
                test_rows.append((scene_id, 0, i * SCANNET_FRAME_STEP, j * SCANNET_FRAME_STEP))
                test_scores.append(scores[p])
                rel = relative_pose(scene.poses[i], scene.poses[j])
                test_rel.append(rel[:3, :4].reshape(12))
            test_k[scene.name] = scene.intrinsics[0].astype(np.float64)
        _save_npz(
            index / "scene_data" / "test" / "test.npz",
            {
                "name": np.asarray(test_rows, np.uint16).reshape(-1, 4),
                "score": np.asarray(test_scores, np.float16),
                "rel_pose": np.asarray(test_rel, np.float32).reshape(-1, 12),
            },
        )
        _save_npz(index / "intrinsics_test.npz", test_k)
        (index / "scene_data" / "test_list" / SCANNET_TEST_LIST).write_text("test.npz\n")
        summary["test"] = _summary(sizes["test_scenes"], n_written, test_scores)
    finally:
        bar.close()
    return summary


def _summary(scenes: int, frames: int, scores: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(scores, np.float64)
    return {
        "scenes": scenes,
        "frames": frames,
        "pairs": len(arr),
        "score_min": round(float(arr.min()), 4) if len(arr) else None,
        "score_max": round(float(arr.max()), 4) if len(arr) else None,
    }


def _render_megadepth_scene(
    bank: TextureBank, seed: int, split: str, index: int, n_frames: int, progress: _Progress
) -> _RenderedScene:
    rng = _scene_rng(seed, "megadepth", split, index, 0)
    scene = outdoor_scene(rng, bank)
    poses, fovs = outdoor_trajectories(rng, n_frames)
    cam_rng = _scene_rng(seed, "megadepth", split, index, 2)
    cameras = [
        (*megadepth_intrinsics(cam_rng, fov), pose) for pose, fov in zip(poses, fovs, strict=True)
    ]
    cameras = [(k, pose, width, height) for k, width, height, pose in cameras]
    views = _render_frames(scene, cameras, (seed, "megadepth", split, index), progress)
    intrinsics = [camera[0] for camera in cameras]
    offset = MEGADEPTH_TEST_SCENE_OFFSET if split == "test" else 0
    return _RenderedScene(f"{offset + index:04d}", intrinsics, poses, views)


def _megadepth_paths(scene: str, i: int) -> tuple[str, str]:
    """Relative image and depth paths of frame ``i`` of ``scene`` (docs/original.md#megadepth)."""
    stem = f"{scene}_{i:04d}"
    image = f"Undistorted_SfM/{scene}/images/{stem}.jpg"
    depth = f"{MEGADEPTH_DEPTH_ROOT.as_posix()}/{scene}/dense0/depths/{stem}.h5"
    return image, depth


def _write_megadepth_frames(data_root: Path, scene: _RenderedScene, frames: Sequence[int]) -> None:
    for i in frames:
        image_rel, depth_rel = _megadepth_paths(scene.name, i)
        _write_jpg(data_root / image_rel, scene.views[i].image)
        depth_path = data_root / depth_rel
        depth_path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(depth_path, "w") as f:
            # gzip + shuffle: 2.6x smaller, any HDF5 reader opens it
            f.create_dataset(
                "depth",
                data=scene.views[i].depth,
                compression="gzip",
                compression_opts=1,
                shuffle=True,
                track_times=False,
            )


def _scene_info(
    scene: _RenderedScene,
    pair_infos: list[tuple[tuple[int, int], float, np.ndarray]],
) -> dict[str, Any]:
    """A MegaDepth scene-info dict (docs/original.md#megadepth); slots not used by any pair have
    None paths."""
    n = len(scene.views)
    used = {i for (pair, _, _) in pair_infos for i in pair}
    image_paths = np.empty(n, dtype=object)
    depth_paths = np.empty(n, dtype=object)
    for i in range(n):
        if i in used:
            image_paths[i], depth_paths[i] = _megadepth_paths(scene.name, i)
    return {
        "image_paths": image_paths,
        "depth_paths": depth_paths,
        "intrinsics": np.stack(scene.intrinsics).astype(np.float64),
        "poses": np.stack(scene.poses).astype(np.float64),
        "pair_infos": pair_infos,
    }


def _write_pickle(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _bin_name(scene: str, lo: float, hi: float) -> str:
    return f"{scene}_{lo:.1f}_{hi:.1f}"


def write_megadepth(out: Path, seed: int, sizes: Mapping[str, int], progress: bool = False) -> dict:
    """Render and write a MegaDepth-format set (docs/original.md#megadepth, #test-sets) into
    ``out``.

    Train scenes go to ``train/`` with one scene-info file per non-empty overlap bin in
    ``index/scene_info_0.1_0.7``; validation/test scenes go to ``test/`` with
    ``index/scene_info_val_1500`` files holding up to ``test_pairs_per_scene`` pairs spread over
    the bins.

    Args:
        out: the format folder (``<root>/megadepth``), created if needed.
        seed: seeds everything.
        sizes: resolved sizes (see ``DEFAULT_SIZES``).
        progress: show a progress bar.

    Returns:
        A summary: scenes, frames and pairs written per split and the score range.
    """
    bank = make_texture_bank(seed)
    total = sizes["train_scenes"] * sizes["frames_per_scene"]
    total += sizes["test_scenes"] * sizes["test_frames_per_scene"]
    bar = _Progress(total, progress, "synthetic megadepth")
    index = out / "index"
    lists = index / "trainvaltest_list"
    lists.mkdir(parents=True, exist_ok=True)
    # validation/test pairs per bin, e.g. 15 pairs -> 5 + 5 + 5
    per_bin = _split_counts(sizes["test_pairs_per_scene"], len(MEGADEPTH_BINS))
    per_bin += [0] * (len(MEGADEPTH_BINS) - len(per_bin))
    summary: dict[str, Any] = {}
    try:
        for split, info_dir, list_name in (
            ("train", "scene_info_0.1_0.7", "train_list.txt"),
            ("test", "scene_info_val_1500", "val_list.txt"),
        ):
            n_scenes = sizes["train_scenes" if split == "train" else "test_scenes"]
            n_frames = sizes["frames_per_scene" if split == "train" else "test_frames_per_scene"]
            (index / info_dir).mkdir(parents=True, exist_ok=True)
            stems, all_scores, frames_written = [], [], 0
            for s in range(n_scenes):
                scene = _render_megadepth_scene(bank, seed, split, s, n_frames, bar)
                pairs, scores, centrals = _pair_overlaps(scene)
                used: set[int] = set()
                for (lo, hi), quota in zip(MEGADEPTH_BINS, per_bin, strict=True):
                    in_bin = [p for p in range(len(pairs)) if lo <= scores[p] < hi]
                    if split == "test":
                        sub = _spread_pairs(scores[in_bin], quota, lo, hi) if quota else []
                        in_bin = [in_bin[p] for p in sub]
                    if not in_bin:
                        continue
                    infos = [
                        (pairs[p], float(scores[p]), centrals[p].astype(np.float64)) for p in in_bin
                    ]
                    stem = _bin_name(scene.name, lo, hi)
                    _write_pickle(index / info_dir / f"{stem}.npz", _scene_info(scene, infos))
                    stems.append(stem)
                    all_scores.extend(scores[in_bin].tolist())
                    used.update(f for p in in_bin for f in pairs[p])
                frames = range(n_frames) if split == "train" else sorted(used)
                _write_megadepth_frames(out / split, scene, frames)
                frames_written += len(frames)
            (lists / list_name).write_text("".join(f"{stem}\n" for stem in stems))
            summary[split] = _summary(n_scenes, frames_written, all_scores)
            summary[split]["scene_infos"] = len(stems)
    finally:
        bar.close()
    return summary


# --------------------------------------------------------------------------------------------
# Cache and CLI
# --------------------------------------------------------------------------------------------


def resolve_sizes(format: str, sizes: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The format's ``DEFAULT_SIZES`` updated with ``sizes`` (None values keep the default).

    Raises:
        ConfigError: unknown format, unknown size key or a value below its minimum.
    """
    if format not in FORMATS:
        raise ConfigError(f"synthetic format={format!r} is not one of {list(FORMATS)}")
    resolved = dict(DEFAULT_SIZES[format])
    for key, value in (sizes or {}).items():
        if key not in resolved:
            raise ConfigError(
                f"unknown synthetic size {key!r}={value!r}; known sizes: {sorted(resolved)}"
            )
        if value is None:
            continue
        if isinstance(value, bool) or int(value) != value or int(value) < _MIN_SIZES[key]:
            raise ConfigError(
                f"synthetic size {key}={value!r} must be an integer >= {_MIN_SIZES[key]}"
            )
        resolved[key] = int(value)
    return resolved


def generate_synthetic(
    out: str | os.PathLike[str],
    format: str = "scannet",
    seed: int = 0,
    *,
    progress: bool = False,
    **sizes: int,
) -> dict[str, Any]:
    """Write one synthetic set into ``out`` (no caching; see ``ensure_synthetic``).

    Returns:
        The manifest written to ``out/synthetic_manifest.json``: generator version, format, seed,
        sizes and a summary of what was written.
    """
    resolved = resolve_sizes(format, sizes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = write_scannet if format == "scannet" else write_megadepth
    summary = writer(out, seed, resolved, progress)
    manifest = _manifest_key(format, seed, resolved)
    manifest["written"] = summary
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _manifest_key(format: str, seed: int, sizes: Mapping[str, int]) -> dict[str, Any]:
    return {
        "generator": "loftr.data.synthetic",
        "version": GENERATOR_VERSION,
        "format": format,
        "seed": int(seed),
        "sizes": dict(sizes),
    }


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a generated set, or None if ``folder`` holds none (or an unreadable one)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _matches(manifest: dict[str, Any] | None, key: dict[str, Any]) -> bool:
    return manifest is not None and all(manifest.get(k) == v for k, v in key.items())


def ensure_synthetic(
    root: str | os.PathLike[str] = "data/synthetic",
    format: str = "scannet",
    seed: int = 0,
    *,
    progress: bool = False,
    force: bool = False,
    **sizes: int,
) -> Path:
    """Generate the synthetic set on first use and return its folder ``root/<format>``.

    The set is deterministic from ``seed`` and ``sizes``; a manifest records both, and a set
    whose manifest matches is reused. Otherwise the set is written into a temporary folder beside
    it and renamed into place, so an interrupted run never leaves a half-built set and concurrent
    callers (e.g. DDP ranks) end up sharing one complete set.

    Args:
        root: parent folder; the set goes to ``root/<format>``.
        format: "scannet" or "megadepth".
        seed: seeds the scenes, textures, cameras and noise.
        progress: show a progress bar while rendering.
        force: regenerate even if a matching set exists (it is replaced once the new one is
            complete).
        **sizes: overrides of ``DEFAULT_SIZES[format]`` (``train_scenes``, ``frames_per_scene``,
            ``test_scenes``, ``test_frames_per_scene``, ``test_pairs_per_scene``).

    Returns:
        ``Path(root) / format``.

    Raises:
        ConfigError: unknown format or size.
        DataError: ``root/<format>`` exists but is not a synthetic set (it is never deleted).

    Example:
        >>> ensure_synthetic("/tmp/syn", "scannet", train_scenes=1)  # doctest: +SKIP
        PosixPath('/tmp/syn/scannet')
    """
    resolved = resolve_sizes(format, sizes)
    key = _manifest_key(format, seed, resolved)
    root = Path(root)
    target = root / format
    if not force and _matches(read_manifest(target), key):
        return target
    if target.exists() and read_manifest(target) is None:
        raise DataError(
            f"{target} exists but has no {MANIFEST_NAME}, so it is not a synthetic set made by "
            "loftr.data.synthetic; it is left untouched. Move it away or pick another root "
            "(ensure_synthetic(root=...), `python -m loftr.data.synthetic --root ...`)."
        )
    root.mkdir(parents=True, exist_ok=True)
    log.info(
        "generating the synthetic %s set (seed %d, %s) into %s", format, seed, resolved, target
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{format}.tmp-", dir=root))
    try:
        generate_synthetic(tmp, format, seed, progress=progress, **resolved)
        os.chmod(tmp, 0o755)
        if target.exists():
            if not force and _matches(read_manifest(target), key):  # another process was faster
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            stale = root / f".{format}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, stale)  # a synthetic set with other settings (or forced): replace
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _matches(read_manifest(target), key):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race against an identical set
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def iter_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Files under ``folder`` in sorted order (relative paths); used to hash a generated set."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path.relative_to(folder)


_SIZE_HELP = {
    "train_scenes": "training scenes",
    "frames_per_scene": "frames rendered per training scene",
    "test_scenes": "validation/test scenes (different from the training scenes)",
    "test_frames_per_scene": "frames rendered per validation/test scene",
    "test_pairs_per_scene": "validation/test pairs per scene (MegaDepth: spread over the bins)",
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loftr.data.synthetic",
        description=(
            "Render the synthetic LoFTR dataset (piecewise-planar scenes with exact depth) in the "
            "real ScanNet and/or MegaDepth on-disk formats. A set whose manifest matches the "
            "seed and sizes is reused."
        ),
    )
    parser.add_argument(
        "--root", default="data/synthetic", help="parent folder (default: %(default)s)"
    )
    parser.add_argument(
        "--format",
        choices=[*FORMATS, "both"],
        default="both",
        help="which format(s) to write into ROOT/<format> (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    for key, what in _SIZE_HELP.items():
        defaults = ", ".join(f"{f} {DEFAULT_SIZES[f][key]}" for f in FORMATS)
        parser.add_argument(
            "--" + key.replace("_", "-"),
            type=int,
            default=None,
            dest=key,
            metavar="N",
            help=f"{what} (default: {defaults})",
        )
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if a matching set exists"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m loftr.data.synthetic [--root R] [--format F] [--seed S] [sizes]``."""
    args = _build_parser().parse_args(argv)
    formats = FORMATS if args.format == "both" else (args.format,)
    sizes = {k: getattr(args, k) for k in DEFAULT_SIZES["scannet"]}
    for fmt in formats:
        start = time.perf_counter()
        try:
            key = _manifest_key(fmt, args.seed, resolve_sizes(fmt, sizes))
            reused = not args.force and _matches(read_manifest(Path(args.root) / fmt), key)
            path = ensure_synthetic(
                args.root, fmt, args.seed, progress=not args.no_progress, force=args.force, **sizes
            )
        except (ConfigError, DataError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        elapsed = time.perf_counter() - start
        manifest = read_manifest(path) or {}
        n_files, n_bytes = _folder_size(path)
        verb = "reused" if reused else f"wrote in {elapsed:.1f} s"
        print(f"{fmt}: {verb}: {path} ({n_files} files, {n_bytes / 2**20:.1f} MiB)")
        for split, info in (manifest.get("written") or {}).items():
            print(
                f"  {split}: {info['scenes']} scenes, {info['frames']} frames, {info['pairs']} "
                f"pairs, overlap {info['score_min']}-{info['score_max']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
