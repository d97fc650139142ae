"""The texture bank of the synthetic scenes: scikit-image photographs and seeded procedural
patterns, grey, square and tileable, each with its mip-map pyramid (sampled by ``render``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

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
