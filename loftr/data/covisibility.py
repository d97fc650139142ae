"""Co-visibility of two views with depth: where image 0's pixels land in image 1, which of them
image 1 sees (the occlusion test against its depth), and the symmetric overlap score pairs are
indexed by.

The synthetic writers (``loftr.data.synthetic.writers``) and the RGB-D converter
(``loftr.data.prepare``) score their pairs with it. Conventions: pixel centres at integer
coordinates, depth is the camera-frame z (0 = unknown), ``T_0to1`` maps camera-0 points to
camera 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_OVERLAP_STRIDE = 8  # pixels between the depth samples the overlap score uses
_OVERLAP_REL_TOL = 0.05  # relative depth agreement that counts a pixel as co-visible


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


@dataclass(frozen=True)
class Reprojection:
    """Image-0 pixels with depth carried into image 1 (``reproject``).

    Attributes:
        xs, ys: (M,) the image-0 pixels that have depth.
        u, v: (M,) where they land in image 1 (sub-pixel; meaningless where not ``ok``).
        ok: (M,) bool: in front of camera 1, inside image 1, and agreeing with image 1's depth
            at the nearest pixel (not occluded).
    """

    xs: np.ndarray
    ys: np.ndarray
    u: np.ndarray
    v: np.ndarray
    ok: np.ndarray


def reproject(
    depth0: np.ndarray,
    depth1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    T_0to1: np.ndarray,
    *,
    stride: int = 1,
    rel_tol: float = _OVERLAP_REL_TOL,
) -> Reprojection:
    """Carry image 0's pixels (every ``stride``-th, depth > 0) into image 1 through the depth and
    ``T_0to1``, and mark those image 1 sees (the exact ground-truth correspondences).

    Args:
        depth0: (H0, W0) camera-0 z in metres, 0 = unknown.
        depth1: (H1, W1) camera-1 z in metres, 0 = unknown.
        K0: (3, 3) intrinsics of image 0 in pixels.
        K1: (3, 3) intrinsics of image 1 in pixels.
        T_0to1: (4, 4) maps camera-0 points to camera 1.
        stride: sampling step in pixels.
        rel_tol: relative depth tolerance of the occlusion test.
    """
    h1, w1 = depth1.shape
    ys, xs = np.mgrid[0 : depth0.shape[0] : stride, 0 : depth0.shape[1] : stride]
    z0 = depth0[ys, xs].astype(np.float64)
    valid = z0 > 0
    xs, ys, z0 = xs[valid], ys[valid], z0[valid]
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
    return Reprojection(xs, ys, u, v, ok)


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

    A pixel of image 0 (sampled every ``stride`` pixels, depth > 0) is co-visible when
    ``reproject`` marks it; see there for the arguments.

    Returns:
        The ``Covisibility`` of this direction.
    """
    r = reproject(depth0, depth1, K0, K1, T_0to1, stride=stride, rel_tol=rel_tol)
    if len(r.xs) == 0:
        return Covisibility(0.0, np.full(4, np.nan))
    fraction = float(r.ok.sum()) / float(len(r.xs))
    if not r.ok.any():
        return Covisibility(fraction, np.full(4, np.nan))
    xs, ys = r.xs[r.ok], r.ys[r.ok]
    best = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    match = np.array([xs[best], ys[best], r.u[r.ok][best], r.v[r.ok][best]], np.float64)
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
