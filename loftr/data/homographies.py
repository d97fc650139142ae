"""``dataset=homographies``: image pairs made on the fly from photographs by random homographies
(docs/homographies.md).

Image 0 is a random crop of a photograph, resized to the training size; image 1 shows the same
photograph through a random homography ``H_0to1`` of image 0's pixel frame (rotation, scale,
translation and bounded perspective), sampled from the photograph itself, so that it shows real
content wherever the photograph reaches. Both images then get photometric changes (brightness,
contrast, gamma, blur, noise; image 0 more lightly). A draw whose warp folds the image or leaves
less than ``min_visible`` of image 0 inside image 1 is replaced by the next draw of the same
generator.

A pair is a pure function of ``(seed, stream, photograph name, item index)``: its generator is
``numpy.random.default_rng`` of those numbers, and nothing else is random. Training uses one
:class:`HomographyPairs` per photograph with a large pool of item indices, drawn by the
DataModule's :class:`~loftr.data.sampler.RandomConcatSampler`, which turns (seed, epoch, rank)
into the epoch's item indices and resumes mid-epoch from its checkpointed position; validation
uses the first ``val_pairs_per_photo`` items of each held-out photograph, with a fixed seed.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from loftr.checks import check_range
from loftr.data.io import check_dir, read_gray
from loftr.data.photos import HELDOUT_PHOTOS, TRAIN_PHOTOS, load_photo
from loftr.data.source import Source, required
from loftr.errors import ConfigError, DataError

#: Distinct training pairs per photograph and run seed: the sampler draws item indices from it.
TRAIN_POOL = 1 << 20
#: Draws tried for one pair before it falls back to the identity warp (never met in practice).
MAX_DRAWS = 100
#: Image files a folder of photographs may hold.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
# generator streams: training and validation pairs of one photograph never coincide
TRAIN_STREAM, VAL_STREAM = 0, 1
NODE = "dataset.homographies"


@dataclass(frozen=True)
class WarpLimits:
    """The bounds of a random homography (``dataset.homographies.warp``).

    Attributes:
        max_angle: in-plane rotation in degrees, drawn in ``[-max_angle, max_angle]``.
        scale: ``(min, max)`` zoom, drawn log-uniformly.
        max_perspective: the two projective terms, each in ``[-p, p]``, in units of the half
            of the longer image side (0.25 tilts the far edge of the image to about 0.6 to 1.7
            times its size).
        max_translation: shift of the image centre, per axis, as a share of half the image size.
        min_visible: the share of image 0's pixels that must land inside image 1.
    """

    max_angle: float = 25.0
    scale: tuple[float, float] = (0.75, 1.33)
    max_perspective: float = 0.25
    max_translation: float = 0.15
    min_visible: float = 0.3

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> WarpLimits:
        key = f"{NODE}.warp"
        check_range(f"{key}.max_angle", node["max_angle"], "non_negative")
        check_range(f"{key}.max_perspective", node["max_perspective"], "non_negative")
        check_range(f"{key}.max_translation", node["max_translation"], "non_negative")
        check_range(f"{key}.min_visible", node["min_visible"], "fraction")
        return cls(
            max_angle=float(node["max_angle"]),
            scale=_interval(node["scale"], f"{key}.scale"),
            max_perspective=float(node["max_perspective"]),
            max_translation=float(node["max_translation"]),
            min_visible=float(node["min_visible"]),
        )


@dataclass(frozen=True)
class PhotometricLimits:
    """The bounds of the photometric changes (``dataset.homographies.photometric``).

    An image's intensities ``x`` in [0, 1] become ``clip(blur((x^g - m) c + m + b) + n)``, with
    ``m`` the mean of ``x^g``, gamma ``g`` and contrast ``c`` drawn log-uniformly in their
    ranges, brightness ``b`` in ``[-brightness, brightness]``, a Gaussian blur of sigma in
    ``[0, blur]`` px and Gaussian noise ``n`` of standard deviation in ``[0, noise]``. Image 0's
    limits are these scaled by ``image0`` (0: unchanged, 1: as image 1).
    """

    brightness: float = 0.15
    contrast: tuple[float, float] = (0.7, 1.4)
    gamma: tuple[float, float] = (0.7, 1.4)
    noise: float = 0.02
    blur: float = 1.0
    image0: float = 0.3

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> PhotometricLimits:
        key = f"{NODE}.photometric"
        for name in ("brightness", "noise", "blur"):
            check_range(f"{key}.{name}", node[name], "non_negative")
        check_range(f"{key}.image0", node["image0"], "fraction")
        return cls(
            brightness=float(node["brightness"]),
            contrast=_interval(node["contrast"], f"{key}.contrast"),
            gamma=_interval(node["gamma"], f"{key}.gamma"),
            noise=float(node["noise"]),
            blur=float(node["blur"]),
            image0=float(node["image0"]),
        )

    def scaled(self, share: float) -> PhotometricLimits:
        """These limits moved towards no change: additive ones times ``share``, factors' logs
        times ``share``."""
        return PhotometricLimits(
            brightness=self.brightness * share,
            contrast=(self.contrast[0] ** share, self.contrast[1] ** share),
            gamma=(self.gamma[0] ** share, self.gamma[1] ** share),
            noise=self.noise * share,
            blur=self.blur * share,
            image0=share,
        )


def _interval(value: Any, key: str) -> tuple[float, float]:
    """``[min, max]`` of positive numbers with ``min <= max``, else ConfigError naming ``key``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{key}={value!r} must be [min, max]")
    for v in value:
        check_range(key, v, "positive")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ConfigError(f"{key}={list(value)!r}: min is above max")
    return low, high


def _log_uniform(rng: np.random.Generator, interval: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(interval[0]), np.log(interval[1]))))


# --- geometry -------------------------------------------------------------------------------


def corners(w: int, h: int) -> np.ndarray:
    """Image 0's corner pixels ``(4, 2)``: (0, 0), (w-1, 0), (w-1, h-1), (0, h-1), clockwise
    on screen (y points down)."""
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)


def _project(H: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(xy, w)``: ``points`` ``(N, 2)`` mapped by ``H``, and their homogeneous ``w``."""
    mapped = points @ H[:, :2].T + H[:, 2]
    return mapped[:, :2] / mapped[:, 2:], mapped[:, 2]


def folds(H: np.ndarray, w: int, h: int) -> bool:
    """Whether ``H`` folds image 0: a corner maps with ``w <= 0`` (then part of the image goes
    through infinity; ``w`` is affine in the pixel, so positive corners make it positive
    everywhere), or the mapped corners are not a convex quadrilateral of the same orientation."""
    xy, hw = _project(H, corners(w, h))
    if (hw <= 0).any():
        return True
    edges = np.roll(xy, -1, axis=0) - xy
    following = np.roll(edges, -1, axis=0)
    turns = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]
    return bool((turns <= 0).any())


def visible_share(H: np.ndarray, w: int, h: int) -> float:
    """The share of image 0's pixel centres that ``H`` maps inside image 1's ``[0, w-1] x
    [0, h-1]`` (the same size)."""
    ys, xs = np.mgrid[0:h, 0:w]
    xy, hw = _project(H, np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64))
    inside = (hw > 0) & (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0)
    inside &= xy[:, 1] <= h - 1
    return float(inside.mean())


def random_homography(rng: np.random.Generator, w: int, h: int, limits: WarpLimits) -> np.ndarray:
    """One draw of a homography of image 0's pixel frame (not checked for folding).

    About the image centre, in units ``r`` of half the longer side: a projective tilt
    ``[[1, 0, 0], [0, 1, 0], [a, b, 1]]``, then the zoom, the rotation and the shift. The result
    is scaled so that the centre maps with ``w = 1``.
    """
    r = max(w, h) / 2.0
    to_pixels = np.array([[r, 0, (w - 1) / 2.0], [0, r, (h - 1) / 2.0], [0, 0, 1]])
    a, b = rng.uniform(-limits.max_perspective, limits.max_perspective, 2)
    angle = math.radians(rng.uniform(-limits.max_angle, limits.max_angle))
    zoom = _log_uniform(rng, limits.scale)
    tx, ty = rng.uniform(-limits.max_translation, limits.max_translation, 2)
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    similarity = np.array([[cos, -sin, tx * w / (2 * r)], [sin, cos, ty * h / (2 * r)], [0, 0, 1]])
    tilt = np.array([[1.0, 0, 0], [0, 1.0, 0], [a, b, 1.0]])
    H = to_pixels @ similarity @ tilt @ np.linalg.inv(to_pixels)
    return H / H[2, 2]


def draw_homography(
    rng: np.random.Generator, w: int, h: int, limits: WarpLimits
) -> tuple[np.ndarray, int]:
    """``(H, draws)``: the first draw that neither folds nor leaves less than
    ``limits.min_visible`` of image 0 visible, and how many draws it took; the identity after
    :data:`MAX_DRAWS` rejected draws."""
    for draw in range(1, MAX_DRAWS + 1):
        H = random_homography(rng, w, h, limits)
        if not folds(H, w, h) and visible_share(H, w, h) >= limits.min_visible:
            return H, draw
    return np.eye(3), MAX_DRAWS


def random_crop(rng: np.random.Generator, photo_wh: tuple[int, int], w: int, h: int) -> np.ndarray:
    """A map from image 0's pixels to the photograph's: a window of image 0's aspect ratio, 50 to
    100 % of the largest one the photograph holds, at a random place inside it."""
    photo_w, photo_h = photo_wh
    largest = min(photo_w / w, photo_h / h)  # photograph pixels per image pixel
    k = largest * rng.uniform(0.5, 1.0)
    ox = rng.uniform(0, photo_w - k * w)
    oy = rng.uniform(0, photo_h - k * h)
    # pixel centres at integers: image pixel x covers [x - 0.5, x + 0.5], i.e. photograph
    # [ox + k x, ox + k (x + 1)], whose centre is ox + k (x + 0.5) - 0.5
    return np.array([[k, 0, ox + k / 2 - 0.5], [0, k, oy + k / 2 - 0.5], [0, 0, 1]])


# --- photometry -----------------------------------------------------------------------------


def photometric_change(
    image: np.ndarray, rng: np.random.Generator, limits: PhotometricLimits
) -> np.ndarray:
    """``image`` (float32 in [0, 1]) with one draw of the changes of ``limits``, clipped to
    [0, 1] (the formula: :class:`PhotometricLimits`)."""
    gamma = _log_uniform(rng, limits.gamma)
    contrast = _log_uniform(rng, limits.contrast)
    brightness = rng.uniform(-limits.brightness, limits.brightness)
    sigma = rng.uniform(0.0, limits.blur)
    noise = rng.uniform(0.0, limits.noise)
    out = np.power(image, gamma, dtype=np.float32)
    mean = float(out.mean())
    out = (out - mean) * np.float32(contrast) + np.float32(mean + brightness)
    if sigma > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    if noise > 0:
        out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --- pairs ----------------------------------------------------------------------------------


def photo_seed(name: str) -> int:
    """A photograph's number in the generator's seed: stable across processes (not ``hash``)."""
    return zlib.crc32(name.encode("utf-8"))


def make_pair(
    photo: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    warp: WarpLimits,
    photometric: PhotometricLimits,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image0, image1, H_0to1)`` from a grey photograph: images ``(h, w)`` float32 in [0, 1],
    ``H_0to1`` ``(3, 3)`` float64 mapping image 0's pixels to image 1's.

    Image 1 at ``x1`` shows the photograph at ``A H^-1 x1`` (``A``: image 0's crop), i.e. what
    image 0 shows at ``H^-1 x1``; black where that falls outside the photograph.
    """
    w, h = size
    crop = random_crop(rng, (photo.shape[1], photo.shape[0]), w, h)
    H, _ = draw_homography(rng, w, h, warp)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    image0 = cv2.warpPerspective(photo, crop, (w, h), flags=flags)
    image1 = cv2.warpPerspective(photo, crop @ np.linalg.inv(H), (w, h), flags=flags)
    image1 = photometric_change(image1.astype(np.float32) / 255.0, rng, photometric)
    image0 = photometric_change(
        image0.astype(np.float32) / 255.0, rng, photometric.scaled(photometric.image0)
    )
    return image0, image1, H


class HomographyPairs(Dataset):
    """``length`` pairs of one photograph; item ``i`` is drawn by the generator of
    ``(seed, stream, photo_seed(name), i)`` (module docstring).

    Items follow the homography batch contract (docs/homography.md#contract): ``image0``,
    ``image1`` ``(1, h, w)`` float32 in [0, 1]; ``H_0to1`` ``(3, 3)`` float32 and ``H_1to0``;
    ``dataset_name`` ``"Homographies"``, ``scene_id`` (the photograph's name), ``pair_id``
    (``i``) and ``pair_names``.

    Args:
        photo: ``(H, W)`` uint8 grey photograph.
        name: its name (the packaged name, or the file name in a folder).
        length: the number of items.
        seed: the run seed (training) or ``val_seed`` (validation).
        stream: :data:`TRAIN_STREAM` or :data:`VAL_STREAM`.
        size: ``(w, h)`` of both images.
        warp, photometric: the limits.
    """

    def __init__(
        self,
        photo: np.ndarray,
        name: str,
        length: int,
        seed: int,
        stream: int,
        size: tuple[int, int],
        warp: WarpLimits,
        photometric: PhotometricLimits,
    ) -> None:
        super().__init__()
        self.photo = photo
        self.name = name
        self.length = int(length)
        self.seed, self.stream = int(seed), int(stream)
        self.size = (int(size[0]), int(size[1]))
        self.warp, self.photometric = warp, photometric

    def __len__(self) -> int:
        return self.length

    def generator(self, index: int) -> np.random.Generator:
        """The generator of item ``index``."""
        return np.random.default_rng([self.seed, self.stream, photo_seed(self.name), int(index)])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"{self.name}: item {index} outside [0, {self.length})")
        image0, image1, H = make_pair(
            self.photo, self.generator(index), self.size, self.warp, self.photometric
        )
        return {
            "image0": torch.from_numpy(image0)[None],
            "image1": torch.from_numpy(image1)[None],
            "H_0to1": torch.from_numpy(H.astype(np.float32)),
            "H_1to0": torch.from_numpy(np.linalg.inv(H).astype(np.float32)),
            "dataset_name": "Homographies",
            "scene_id": self.name,
            "pair_id": int(index),
            "pair_names": (f"{self.name}#{index}/0", f"{self.name}#{index}/1"),
        }


# --- photographs ----------------------------------------------------------------------------


def folder_images(root: str | Path, key: str) -> list[str]:
    """The image files of a folder (sorted names); DataError naming ``key`` when it has none."""
    folder = check_dir(root, key)
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise DataError(f"{key}: {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return names


def photo_names(root: str | None, packaged: Sequence[str], key: str) -> list[str]:
    """The photographs of a split: the packaged names when ``root`` is null, else the folder's
    image files."""
    return list(packaged) if root is None else folder_images(root, key)


def load_grey(root: str | None, name: str) -> np.ndarray:
    """Photograph ``name`` as ``(H, W)`` uint8 grey: packaged (``root`` null) or a file of
    ``root`` (DataError naming it when unreadable)."""
    if root is not None:
        return read_gray(Path(root) / name)
    photo = load_photo(name)
    return cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY) if photo.ndim == 3 else photo


# --- the source -----------------------------------------------------------------------------


def _node(config: Mapping[str, Any]) -> Mapping[str, Any]:
    return required(config, "homographies")


def check_homographies_config(config: Mapping[str, Any]) -> None:
    """ConfigError naming the key for a ``dataset.homographies`` node the pairs cannot follow."""
    node = _node(config)
    size = node["image_size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise ConfigError(f"{NODE}.image_size={size!r} must be [w, h]")
    for v in size:
        check_range(f"{NODE}.image_size", v, "count")
    if size[0] % 8 or size[1] % 8:
        raise ConfigError(f"{NODE}.image_size={list(size)!r}: both sides must be multiples of 8")
    check_range(f"{NODE}.val_pairs_per_photo", node["val_pairs_per_photo"], "count_or_zero")
    WarpLimits.from_config(node["warp"])
    PhotometricLimits.from_config(node["photometric"])


def _datasets(
    config: Mapping[str, Any],
    root_key: str,
    names: Sequence[str],
    length: int,
    seed: int,
    stream: int,
) -> list[Dataset]:
    node = _node(config)
    size = (int(node["image_size"][0]), int(node["image_size"][1]))
    warp = WarpLimits.from_config(node["warp"])
    photometric = PhotometricLimits.from_config(node["photometric"])
    root = node[root_key]
    return [
        HomographyPairs(load_grey(root, n), n, length, seed, stream, size, warp, photometric)
        for n in names
    ]


def _train_scenes(config: Mapping[str, Any]) -> tuple[list[str], str]:
    root = _node(config)["train_root"]
    names = photo_names(root, TRAIN_PHOTOS, f"{NODE}.train_root")
    return names, str(root) if root is not None else "loftr.data.photos.TRAIN_PHOTOS"


def _train_datasets(config: Mapping[str, Any], names: Sequence[str], seed: int) -> list[Dataset]:
    return _datasets(config, "train_root", names, TRAIN_POOL, seed, TRAIN_STREAM)


def _eval_sets(config: Mapping[str, Any], split: str, seed: int) -> list[Dataset]:
    node = _node(config)
    names = photo_names(node["val_root"], HELDOUT_PHOTOS, f"{NODE}.val_root")
    n = int(node["val_pairs_per_photo"])
    return [
        ConcatDataset(_datasets(config, "val_root", names, n, int(node["val_seed"]), VAL_STREAM))
    ]


def _set_names(config: Mapping[str, Any], split: str) -> list[str]:
    node = _node(config)
    if split != "val" or not int(node["val_pairs_per_photo"]):
        return []
    return ["heldout_photos" if node["val_root"] is None else Path(node["val_root"]).name]


SOURCE = Source(
    _train_scenes,
    _train_datasets,
    _eval_sets,
    _set_names,
    test_instead="hpatches_heldout",  # the held-out photographs in the HPatches layout
    check=check_homographies_config,
)
