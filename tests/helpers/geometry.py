"""Analytic scene geometry for the supervision and loss tests: poses, rotations, plane depths."""

from __future__ import annotations

import math

import numpy as np
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
