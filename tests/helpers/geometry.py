"""Analytic scene geometry for the supervision and loss tests: poses, rotations, plane depths; and
the reprojection check of depth, intrinsics and pose read from disk (synthetic and converted
scenes)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import skimage.data
import torch


def translation(tx: float, ty: float, tz: float = 0.0) -> torch.Tensor:
    """A 4x4 pose that translates by (tx, ty, tz) metres."""
    T = torch.eye(4)
    T[:3, 3] = torch.tensor([tx, ty, tz])
    return T


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rz @ Ry @ Rx for angles (radians) about the x, y and z axes."""
    cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay),
                              math.cos(az), math.sin(az))  # fmt: skip
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def plane_depth(K: np.ndarray, n: np.ndarray, d: float, h: int, w: int) -> np.ndarray:
    """The (h, w) depth map, in metres, of the plane {X : n.X + d = 0} seen by a camera with
    intrinsics K."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.linalg.inv(K) @ np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])  # z = 1
    return (-d / (n @ rays)).reshape(h, w)


def reprojection_agreement(
    depth0: np.ndarray,
    depth1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    T_0to1: np.ndarray,
    tol: float = 0.01,
) -> tuple[float, int]:
    """Share of co-visible image-0 pixels whose reprojected depth agrees with image 1's.

    Every image-0 pixel with depth is moved into camera 1; where it lands in front of camera 1,
    inside the image, its z is compared with image 1's depth at the nearest pixel. Co-visible
    means: not occluded (a point farther than image 1's surface is hidden behind it) and landing
    where image 1's surface is resolved, i.e. its depth varies by at most 5 % over the 3x3
    neighbourhood (no depth edge, no surface seen edge-on, where the nearest pixel may show
    another surface). A co-visible point nearer than image 1's surface cannot exist if the
    geometry is exact (it would be seen instead), so the agreement is ``agree / (agree + nearer)``.

    Returns:
        ``(agreement, number of co-visible pixels)``.
    """
    depth0 = np.asarray(depth0, np.float64)
    depth1 = np.asarray(depth1, np.float64)
    K0, K1, T_0to1 = (np.asarray(m, np.float64) for m in (K0, K1, T_0to1))
    kernel = np.ones((3, 3), np.uint8)
    hi = cv2.dilate(depth1.astype(np.float32), kernel).astype(np.float64)
    lo = cv2.erode(depth1.astype(np.float32), kernel).astype(np.float64)
    resolved = (lo > 0) & (hi - lo <= 0.05 * lo)
    ys, xs = np.nonzero(depth0 > 0)
    z0 = depth0[ys, xs]
    pts0 = np.linalg.inv(K0) @ np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64) * z0
    pts1 = T_0to1[:3, :3] @ pts0 + T_0to1[:3, 3:]
    front = pts1[2] > 1e-6
    pts1 = pts1[:, front]
    proj = K1 @ (pts1 / pts1[2])
    u, v = np.rint(proj[0]).astype(np.int64), np.rint(proj[1]).astype(np.int64)
    h1, w1 = depth1.shape
    inside = (u >= 0) & (u < w1) & (v >= 0) & (v < h1)
    z1, u, v = pts1[2, inside], u[inside], v[inside]
    keep = resolved[v, u]
    d1 = depth1[v[keep], u[keep]]
    rel = (z1[keep] - d1) / d1
    agree = np.abs(rel) <= tol
    nearer = rel < -tol
    covisible = int(agree.sum() + nearer.sum())
    return (float(agree.sum()) / covisible if covisible else 0.0), covisible


def textured_plane_pair(h: int = 96, w: int = 128) -> dict:
    """A photo on a tilted plane 3 m away, seen by two cameras; depth and pose analytic.

    Image 1 is image 0 warped by the plane-induced homography K (R - t n^T / d) K^-1, so the
    pixels, depths, intrinsics and pose agree exactly.
    """
    K = np.array([[100.0, 0.0, w / 2], [0.0, 100.0, h / 2], [0.0, 0.0, 1.0]])
    R = rotation(0.03, -0.08, 0.05)
    t = np.array([0.25, -0.05, 0.05])
    n = np.array([0.1, -0.2, -1.0])
    n /= np.linalg.norm(n)
    d = 3.0
    H = K @ (R - np.outer(t, n) / d) @ np.linalg.inv(K)
    photo = skimage.data.astronaut()[..., 1].astype(np.float32) / 255.0
    img0 = cv2.resize(photo, (2 * w, 2 * h))[40 : 40 + h, 60 : 60 + w].copy()
    img1 = cv2.warpPerspective(img0, H, (w, h), flags=cv2.INTER_LINEAR)
    n1 = R @ n  # the plane in camera 1: (R n).X1 + d - (R n).t = 0
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t

    def f32(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32)[None]

    return {
        "image0": f32(img0)[None],
        "image1": f32(img1)[None],
        "depth0": f32(plane_depth(K, n, d, h, w)),
        "depth1": f32(plane_depth(K, n1, d - n1 @ t, h, w)),
        "K0": f32(K),
        "K1": f32(K),
        "T_0to1": f32(T),
        "T_1to0": f32(np.linalg.inv(T)),
        "dataset_name": ["ScanNet"],
    }
