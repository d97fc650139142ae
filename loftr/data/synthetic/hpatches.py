"""An HPatches-layout set made from the held-out photographs (docs/hpatches.md#held-out-set).

For each photograph of ``HELDOUT_PHOTOS`` (``loftr.data.photos``; never a synthetic texture nor a
training image) two sequences are written exactly as the real release stores them (``1.ppm`` ..
``6.ppm``, ``H_1_2`` .. ``H_1_6``, :mod:`loftr.data.hpatches`):

- ``i_<photo>``: illumination changes (gain, gamma, colour cast, a brightness ramp across the
  image, noise) under homographies within a pixel of the identity, as a fixed camera gives;
- ``v_<photo>``: viewpoint changes: five homographies of growing strength (rotation up to 25
  degrees, scale up to 1.4x either way, corners moved by up to 12 % of the shorter side, a
  shift), with mild photometric changes.

Image k is image 1 (the photograph) relit and warped by ``H_1_k`` with OpenCV's
``warpPerspective`` (black outside the photograph), the size of image 1. Every warp keeps its
quadrilateral convex (no folding) and at least half of image k covered by the photograph.
Everything is drawn from ``seed``; the set is generated once by
:func:`loftr.data.synthetic.cache.ensure_generated` and reused while its manifest matches.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from loftr.data.hpatches import RELEASE_FOLDER, TARGETS, homography_name, image_name
from loftr.data.photos import HELDOUT_PHOTOS, load_photo
from loftr.data.synthetic.cache import MANIFEST_NAME, ensure_generated
from loftr.errors import DataError

GENERATOR = "loftr.data.synthetic.hpatches"
#: Bump when the generated content changes, so that cached sets are regenerated.
VERSION = 1
#: The least share of image k that the warped photograph must cover.
MIN_COVERED = 0.5
_MAX_TRIES = 100


def _corners(w: int, h: int) -> np.ndarray:
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)


def _convex(quad: np.ndarray) -> bool:
    """Whether a quadrilateral's corners turn the same way at every corner (no fold)."""
    edges = np.roll(quad, -1, axis=0) - quad
    following = np.roll(edges, -1, axis=0)
    turns = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]
    return bool((turns > 0).all() or (turns < 0).all())


def covered_share(H: np.ndarray, w: int, h: int) -> float:
    """The share of a ``w`` x ``h`` image k that image 1 covers once warped by ``H``."""
    ones = np.ones((h, w), np.uint8)
    return float(cv2.warpPerspective(ones, H, (w, h), flags=cv2.INTER_NEAREST).mean())


def sample_homography(rng: np.random.Generator, w: int, h: int, strength: float) -> np.ndarray:
    """A homography of image 1's pixels of the given ``strength`` (0: identity-close, 1: the
    strongest viewpoint change), convex and covering at least ``MIN_COVERED`` of image k.

    The four corners are rotated and scaled about the image centre, moved one by one and shifted;
    ``strength`` scales every range. At ``strength`` 0 the corners move by at most one pixel.
    """
    src = _corners(w, h)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    short = min(w, h)
    for _ in range(_MAX_TRIES):
        angle = math.radians(25.0 * strength * rng.uniform(-1, 1))
        scale = math.exp(math.log(1.4) * strength * rng.uniform(-1, 1))
        rotation = scale * np.array(
            [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
        )
        jitter = rng.uniform(-1, 1, (4, 2)) * max(1.0, 0.12 * strength * short)
        shift = rng.uniform(-1, 1, 2) * 0.06 * strength * short
        dst = (src - centre) @ rotation.T + centre + jitter + shift
        H = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
        H = H / H[2, 2]
        if _convex(dst) and covered_share(H, w, h) >= MIN_COVERED:
            return H
    raise DataError(f"no homography of strength {strength} keeps {MIN_COVERED} of {w}x{h} covered")


def relight(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """``image`` (uint8, RGB) under another illumination: gain, gamma, a colour cast and a
    brightness ramp whose ranges grow with ``strength`` (0..1)."""
    h, w = image.shape[:2]
    gain = math.exp(math.log(1.8) * strength * rng.uniform(-1, 1))
    gamma = math.exp(math.log(1.8) * strength * rng.uniform(-1, 1))
    cast = 1.0 + 0.15 * strength * rng.uniform(-1, 1, 3)
    direction = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = (xs / max(w - 1, 1) - 0.5) * math.cos(direction) + (ys / max(h - 1, 1) - 0.5) * (
        math.sin(direction)
    )
    lit = (image.astype(np.float64) / 255.0) ** gamma
    lit = lit * gain * cast[None, None, :] * (1.0 + 0.6 * strength * ramp)[..., None]
    return np.clip(lit * 255.0, 0, 255).astype(np.uint8)


def _sequence(
    photo: np.ndarray, rng: np.random.Generator, kind: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images 2..6 and the homographies ``H_1_k`` of one sequence of ``kind`` (``i`` / ``v``)."""
    h, w = photo.shape[:2]
    images, homographies = [], []
    for k in TARGETS:
        grade = (k - 1) / len(TARGETS)  # 0.2 .. 1.0
        if kind == "i":
            H = sample_homography(rng, w, h, 0.0)
            lit = relight(photo, rng, 0.5 + 0.5 * grade)
        else:
            H = sample_homography(rng, w, h, grade)
            lit = relight(photo, rng, 0.15)
        warped = cv2.warpPerspective(lit, H, (w, h), flags=cv2.INTER_LINEAR)
        noisy = warped.astype(np.float64) + rng.normal(0.0, 2.0, warped.shape)
        images.append(np.clip(noisy, 0, 255).astype(np.uint8))
        homographies.append(H)
    return images, homographies


def _colour(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def write_hpatches_heldout(
    out: str | os.PathLike, seed: int = 0, photos: Sequence[str] = HELDOUT_PHOTOS
) -> dict[str, Any]:
    """Write the sequences of ``photos`` into ``out/hpatches-sequences-release`` and the manifest.

    Returns:
        The manifest: generator, version, seed, photographs and the sequences written.
    """
    folder = Path(out) / RELEASE_FOLDER
    written = []
    for name in photos:
        photo = _colour(load_photo(name))
        for kind in ("i", "v"):
            sequence = f"{kind}_{name}"
            # each sequence draws from its own stream: the same whatever the other photographs
            rng = np.random.default_rng([int(seed), zlib.crc32(sequence.encode())])
            images, homographies = _sequence(photo, rng, kind)
            target = folder / sequence
            target.mkdir(parents=True, exist_ok=True)
            for k, image in zip((1, *TARGETS), [photo, *images], strict=True):
                if not cv2.imwrite(str(target / image_name(k)), image[..., ::-1]):  # RGB -> BGR
                    raise DataError(f"cannot write {target / image_name(k)}")
            for k, H in zip(TARGETS, homographies, strict=True):
                np.savetxt(target / homography_name(k), H, fmt="%.10e")
            written.append(sequence)
    manifest = {**_key(seed, photos), "written": {"sequences": written}}
    (Path(out) / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _key(seed: int, photos: Sequence[str]) -> dict[str, Any]:
    return {"generator": GENERATOR, "version": VERSION, "seed": int(seed), "photos": list(photos)}


def ensure_hpatches_heldout(
    root: str | os.PathLike = "data/hpatches_heldout", seed: int = 0, *, force: bool = False
) -> Path:
    """Generate the held-out HPatches-layout set into ``root`` on first use; return ``root``.

    Raises:
        DataError: ``root`` exists but was not generated here (it is never deleted).
    """
    return ensure_generated(
        root,
        _key(seed, HELDOUT_PHOTOS),
        lambda tmp: write_hpatches_heldout(tmp, seed),
        force=force,
    )
