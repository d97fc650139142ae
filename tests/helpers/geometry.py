"""Analytic scene geometry for the supervision and loss tests: poses, rotations, plane depths."""

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
