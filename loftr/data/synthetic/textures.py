"""The texture bank of the synthetic scenes: crops of the training photographs and seeded,
non-periodic procedural patterns, grey, square, each with its mip-map pyramid (sampled by
``render``).

Photographs dominate the bank (``PHOTO_VARIANTS`` per training photograph against
``N_PROCEDURAL_TEXTURES`` patterns): each variant is another crop, scale, orientation and tone
of the photograph. Only ``loftr.data.photos.TRAIN_PHOTOS`` are used, so the held-out photographs
never appear in a synthetic scene. The procedural patterns are noise-based (no checkerboards,
stripes or tile grids), so no texture repeats itself inside its tile: a periodic wall is
ambiguous by construction and unlike a real room.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from loftr.data.photos import TRAIN_PHOTOS, load_photo

TEXTURE_SIZE = 512
#: Textures made from each training photograph (different crops, scales and tones).
PHOTO_VARIANTS = 3
N_PROCEDURAL_TEXTURES = 8
PROCEDURAL_KINDS = ("noise", "blobs", "ridges", "speckle")


@dataclass(frozen=True)
class TextureBank:
    """Square grey textures with their mip-map pyramids.

    Attributes:
        levels: level ``l`` is a float32 array (T, S / 2**l, S / 2**l) in [0, 1]; level 0 is the
            full resolution S = ``TEXTURE_SIZE``, each next level the 2x2 mean of the previous.
        names: (T,) a name per texture (``<photo>/<variant>`` or the procedural kind).
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


def _photo_variant(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    """A grey (size, size) texture from ``photo`` (uint8, grey or RGB): a random square crop
    (half to all of the short side), a random quarter turn and mirror, random channel weights
    (a colour change seen in grey), gamma and contrast."""
    img = photo.astype(np.float64) / 255.0
    if img.ndim == 3:
        weights = np.array([0.299, 0.587, 0.114]) * rng.uniform(0.6, 1.4, size=3)
        img = img @ (weights / weights.sum())
    h, w = img.shape
    side = int(round(min(h, w) * rng.uniform(0.5, 1.0)))
    y0, x0 = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    img = img[y0 : y0 + side, x0 : x0 + side]
    img = np.rot90(img, int(rng.integers(4)))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    img = cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=interp)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    return _normalise_contrast(img, mean=rng.uniform(0.4, 0.6), std=rng.uniform(0.16, 0.24))


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


def _speckle(rng: np.random.Generator, size: int) -> np.ndarray:
    """Discs of random radius and grey at random places (wrapped, so the tile has no seam)."""
    canvas = np.zeros((3 * size, 3 * size))
    n = int(rng.integers(150, 400))
    for x, y, r, g in zip(
        rng.uniform(0, size, n),
        rng.uniform(0, size, n),
        np.exp(rng.uniform(np.log(3.0), np.log(40.0), n)),
        rng.uniform(0.0, 1.0, n),
        strict=True,
    ):
        for dx in (0, size, 2 * size):  # the disc and its wrapped copies
            for dy in (0, size, 2 * size):
                cv2.circle(canvas, (int(x + dx), int(y + dy)), int(r), float(g), -1, cv2.LINE_AA)
    return canvas[size : 2 * size, size : 2 * size]


def _procedural_texture(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A non-periodic procedural grey texture (size, size) in [0, 1] with fine-scale detail."""
    if kind == "noise":
        return _normalise_contrast(_fractal_noise(rng, size, (4, 8, 16, 32, 64, 128, 256)))
    fine = _fractal_noise(rng, size, (32, 64, 128, 256))
    if kind == "blobs":
        base = _fractal_noise(rng, size, (8, 16, 32))
        pattern = (base > np.median(base)).astype(np.float64)
    elif kind == "ridges":  # veins, like marble or cracks
        base = _fractal_noise(rng, size, (4, 8, 16, 32))
        pattern = 1.0 - np.abs(base - np.median(base)) / np.abs(base - np.median(base)).max()
        pattern = pattern**6
    elif kind == "speckle":
        pattern = _speckle(rng, size)
    else:  # pragma: no cover - internal kinds only
        raise ValueError(kind)
    tex = 0.5 * _normalise_contrast(pattern) + 0.5 * _normalise_contrast(fine)
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
    """Build the texture bank: variants of the training photographs plus procedural patterns.

    Args:
        seed: seeds the crops and tones of the photographs and the procedural textures.
        size: side S of every texture in texels, a power of two.

    Returns:
        A ``TextureBank`` with ``len(TRAIN_PHOTOS) * PHOTO_VARIANTS + N_PROCEDURAL_TEXTURES``
        textures, photographs first.
    """
    rng = np.random.default_rng([seed, 77])
    textures, names = [], []
    for name in TRAIN_PHOTOS:
        photo = load_photo(name)
        for v in range(PHOTO_VARIANTS):
            # fine noise on top, so that flat regions of a photo still have something to match
            fine = _normalise_contrast(_fractal_noise(rng, size, (64, 128, 256)))
            textures.append(
                _normalise_contrast(0.85 * _photo_variant(rng, photo, size) + 0.15 * fine)
            )
            names.append(f"{name}/{v}")
    for i in range(N_PROCEDURAL_TEXTURES):
        kind = PROCEDURAL_KINDS[i % len(PROCEDURAL_KINDS)]
        textures.append(_procedural_texture(rng, kind, size))
        names.append(f"{kind}{i}")
    return TextureBank(levels=_mip_levels(np.stack(textures)), names=tuple(names))
