"""An HPatches-layout set made from the held-out photographs (docs/hpatches.md#held-out-set).

For each photograph of ``HELDOUT_PHOTOS`` (``loftr.data.photos``; never a synthetic texture nor a
training image) two sequences are written exactly as the real release stores them (``1.ppm`` ..
``6.ppm``, ``H_1_2`` .. ``H_1_6``, :mod:`loftr.data.hpatches`):

- ``i_<photo>``: illumination changes of growing strength (gamma, contrast and brightness, a
  colour cast, a brightness ramp across the image) under shifts of at most a pixel, as the fixed
  camera of a real illumination sequence gives;
- ``v_<photo>``: viewpoint changes: five homographies of growing strength (rotation up to 25
  degrees, zoom up to 1.4x either way, a tilt and a shift), with mild photometric changes.

The warps and the photometric changes are those of ``dataset=homographies``
(:func:`loftr.data.homographies.draw_homography`, ``photometric_change``), with the limits
above. Image k is image 1 (the photograph) changed and warped by ``H_1_k`` with OpenCV's
``warpPerspective`` (black outside the photograph), the size of image 1, with sensor noise; no
warp folds the image and each keeps at least half of image 1 inside image k. Everything is
drawn from ``seed``, each sequence from its own stream; the set is generated once by
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

from loftr.data.homographies import (
    PhotometricLimits,
    WarpLimits,
    draw_homography,
    photometric_change,
)
from loftr.data.hpatches import RELEASE_FOLDER, TARGETS, homography_name, image_name
from loftr.data.photos import HELDOUT_PHOTOS, load_photo
from loftr.data.synthetic.cache import MANIFEST_NAME, ensure_generated
from loftr.errors import DataError

GENERATOR = "loftr.data.synthetic.hpatches"
#: Bump when the generated content changes, so that cached sets are regenerated.
VERSION = 2
#: The least share of image 1 that must land inside image k.
MIN_VISIBLE = 0.5


def viewpoint_limits(grade: float) -> WarpLimits:
    """The warp of a viewpoint pair of ``grade`` in (0, 1]: every range grows with it."""
    return WarpLimits(
        max_angle=25.0 * grade,
        scale=(1.4**-grade, 1.4**grade),
        max_perspective=0.1 * grade,
        max_translation=0.1 * grade,
        min_visible=MIN_VISIBLE,
    )


def illumination_limits(w: int, h: int) -> WarpLimits:
    """The warp of an illumination pair: a shift of at most a pixel per axis."""
    return WarpLimits(
        max_angle=0.0,
        scale=(1.0, 1.0),
        max_perspective=0.0,
        max_translation=2.0 / max(w, h),
        min_visible=MIN_VISIBLE,
    )


def relight(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """``image`` (float32 RGB in [0, 1]) under another illumination of ``strength`` (0..1): the
    gamma, contrast and brightness changes of :func:`loftr.data.homographies.photometric_change`
    (gamma and contrast up to 1.8x either way at full strength), then what a change of light
    adds: a colour cast and a brightness ramp across the image."""
    limits = PhotometricLimits(
        brightness=0.15 * strength,
        contrast=(1.8**-strength, 1.8**strength),
        gamma=(1.8**-strength, 1.8**strength),
        noise=0.0,
        blur=0.0,
        image0=0.0,
    )
    h, w = image.shape[:2]
    cast = 1.0 + 0.15 * strength * rng.uniform(-1, 1, 3)
    direction = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xs / max(w - 1, 1) - 0.5) * math.cos(direction)
    ramp += (ys / max(h - 1, 1) - 0.5) * math.sin(direction)
    lit = photometric_change(image, rng, limits) * cast.astype(np.float32)
    return np.clip(lit * (1.0 + 0.6 * strength * ramp)[..., None], 0.0, 1.0)


#: The mild photometric change of a viewpoint pair.
VIEWPOINT_PHOTOMETRIC = PhotometricLimits(
    brightness=0.05, contrast=(0.9, 1.1), gamma=(0.9, 1.1), noise=0.0, blur=0.0, image0=0.0
)
#: The standard deviation of the sensor noise added to images 2..6 (intensities in [0, 1]).
NOISE = 2.0 / 255.0


def _sequence(
    photo: np.ndarray, rng: np.random.Generator, kind: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images 2..6 (uint8 RGB) and the homographies ``H_1_k`` of one sequence of ``kind``."""
    h, w = photo.shape[:2]
    image = photo.astype(np.float32) / 255.0
    images, homographies = [], []
    for k in TARGETS:
        grade = (k - 1) / len(TARGETS)  # 0.2 .. 1.0
        if kind == "i":
            H, _ = draw_homography(rng, w, h, illumination_limits(w, h))
            lit = relight(image, rng, 0.5 + 0.5 * grade)
        else:
            H, _ = draw_homography(rng, w, h, viewpoint_limits(grade))
            lit = photometric_change(image, rng, VIEWPOINT_PHOTOMETRIC)
        warped = cv2.warpPerspective(lit, H, (w, h), flags=cv2.INTER_LINEAR)
        noisy = warped + rng.normal(0.0, NOISE, warped.shape).astype(np.float32)
        images.append(np.round(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8))
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
