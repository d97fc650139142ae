"""Camera paths and intrinsics: walks inside a room, arcs around a plaza's landmark, and the
MegaDepth-like photo sizes with their pinhole intrinsics.

Poses are world-to-camera ``T_w2c`` (4, 4) with the OpenCV camera frame (x right, y down,
z forward).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loftr.data.synthetic.scenes import PLAZA_CAMERA_RADII, ROOM_CAMERA_MARGIN, Room

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


def _path_steps(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` increasing positions in [0, 1] along a path: even steps, each stretched or shrunk
    by up to 70 %, so a path holds both close and distant neighbours."""
    if count < 2:
        return np.zeros(1)
    steps = rng.uniform(0.3, 1.7, size=count - 1)
    return np.concatenate([[0.0], np.cumsum(steps) / steps.sum()])


def _n_walks(n_frames: int, min_length: int) -> int:
    """Trajectories per scene: up to 3, each at least ``min_length`` frames long so that
    neighbours overlap."""
    return max(1, min(3, n_frames // min_length))


def indoor_trajectories(rng: np.random.Generator, room: Room, n_frames: int) -> list[np.ndarray]:
    """Camera poses along a few smooth walks with turning heads inside ``room``.

    One walk per 12 frames, at most 3, so that even a tiny set has overlapping neighbours; the
    frames are unevenly spaced along a walk (``_path_steps``). Each walk moves 1-3 m (less where
    a wall stops it) while the heading turns by 50-150 degrees, with slow pitch and roll changes,
    so neighbouring frames overlap strongly and distant ones weakly.

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
    for count in _split_counts(n_frames, _n_walks(n_frames, 12)):
        start = rng.uniform(lo, hi)
        heading = rng.uniform(0, 2 * np.pi)
        end = np.clip(start + rng.uniform(1.0, 3.0) * _direction(heading, 0.0)[:2], lo, hi)
        z0, z1 = rng.uniform(1.1, 1.8, size=2)
        yaw0 = rng.uniform(0, 2 * np.pi)
        yaw_span = rng.choice([-1.0, 1.0]) * np.deg2rad(rng.uniform(50, 150))
        pitch0 = np.deg2rad(rng.uniform(-30, 0))
        roll0 = np.deg2rad(rng.uniform(-6, 6))
        ph1, ph2 = rng.uniform(0, 2 * np.pi, size=2)
        for s in _path_steps(rng, count):
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

    One arc per 6 frames, at most 3, its frames unevenly spaced (``_path_steps``).
    The arcs start within 80 degrees of each other, so that frames of different arcs overlap a
    little. Each arc sweeps 25-70 degrees around the centre between radii
    ``PLAZA_CAMERA_RADII``, at eye height or raised (up to 6 m), aiming near the landmark with
    jitter and a small roll. Each arc has its own zoom: a field of view of 50-70 degrees, +-4
    degrees per photo.

    Args:
        rng: drives the arcs.
        n_frames: total number of poses.

    Returns:
        ``(poses, fovs)``: ``n_frames`` world-to-camera poses (4, 4), arc after arc, and the field
        of view of each photo across its long side, degrees.
    """
    poses, fovs = [], []
    centre = rng.uniform(0, 2 * np.pi)  # the arcs start within 80 degrees of it, so they meet
    for count in _split_counts(n_frames, _n_walks(n_frames, 6)):
        fov = rng.uniform(50, 70)
        phi0 = centre + np.deg2rad(rng.uniform(-80, 80))
        span = rng.choice([-1.0, 1.0]) * np.deg2rad(rng.uniform(25, 70))
        r0, r1 = rng.uniform(*PLAZA_CAMERA_RADII, size=2)
        z0 = 1.6 if rng.random() < 0.6 else rng.uniform(2.0, 6.0)
        target0 = np.array([*rng.uniform(-3, 3, size=2), rng.uniform(3, 8)])
        for s in _path_steps(rng, count):
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
