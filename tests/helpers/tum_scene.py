"""A short synthetic RGB-D sequence written in the TUM RGB-D layout and in the generic folder
layout, for the RGB-D converter's tests and the end-to-end one (docs/prepare.md#rgb-d-sequences).

The frames are rendered by the synthetic generator (``loftr.data.synthetic``) at 160x120 along an
indoor walk, so their exact depth and poses are known. The TUM writer jitters and offsets the
depth and pose timestamps against the rgb ones, so the converter's association is exercised,
and can write the faults the tests must catch: the quaternion in COLMAP's order, the inverted
(world-to-camera) pose, a lens distortion applied to the images and depth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from loftr.data.synthetic import indoor_scene, make_texture_bank, render_view
from loftr.data.synthetic.cameras import indoor_trajectories
from loftr.data.synthetic.scenes import random_room

WIDTH, HEIGHT = 160, 120
K = np.array([[120.0, 0.0, 79.2], [0.0, 121.0, 59.7], [0.0, 0.0, 1.0]])
TUM_DEPTH_SCALE = 5000.0
FRAME_DT = 1.0 / 30.0  # seconds between rgb frames (the Kinect's 30 Hz)
START = 1305031102.0  # a Unix time like TUM's


@dataclass(frozen=True)
class RenderedSequence:
    """The rendered truth: per frame the grey image, depth (metres) and world-to-camera pose."""

    images: list[np.ndarray]
    depths: list[np.ndarray]
    poses: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


def render_sequence(n_frames: int = 8, seed: int = 0) -> RenderedSequence:
    """Render ``n_frames`` views along one indoor walk (one walk up to 11 frames)."""
    rng = np.random.default_rng(seed)
    bank = make_texture_bank(seed, size=64)
    room = random_room(rng)
    poses = indoor_trajectories(rng, room, n_frames)
    scene = indoor_scene(rng, bank, room, poses)
    views = [render_view(scene, K, p, WIDTH, HEIGHT) for p in poses]
    return RenderedSequence([v.image for v in views], [v.depth for v in views], poses)


def rotation_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(x, y, z, w)`` of a rotation matrix, ``w >= 0``."""
    w = np.sqrt(max(0.0, 1.0 + np.trace(R))) / 2.0
    x = np.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2.0
    y = np.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2.0
    z = np.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2.0
    x = np.copysign(x, R[2, 1] - R[1, 2])
    y = np.copysign(y, R[0, 2] - R[2, 0])
    z = np.copysign(z, R[1, 0] - R[0, 1])
    q = np.array([x, y, z, w])
    return q / np.linalg.norm(q)


def distort_view(
    image: np.ndarray, depth: np.ndarray, coefficients: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """What a camera with ``K`` and OpenCV lens ``coefficients`` would have seen of a pinhole
    view: every distorted pixel samples the pinhole image where its ray goes (bilinear; depth
    nearest)."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)[:, None, :]
    dist = np.asarray(coefficients, np.float64)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9)
    ideal = cv2.undistortPoints(pts, K, dist, R=None, P=K, criteria=criteria)
    ideal = ideal.reshape(HEIGHT, WIDTH, 2)
    mx, my = ideal[..., 0].astype(np.float32), ideal[..., 1].astype(np.float32)
    out_image = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out_depth = cv2.remap(depth, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return out_image, out_depth


def _bgr(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path


def write_tum(
    root: Path,
    seq: RenderedSequence,
    *,
    quaternion_order: str = "xyzw",
    invert_pose: bool = False,
    distortion: Sequence[float] | None = None,
    depth_offsets: Mapping[int, float] | None = None,
    seed: int = 0,
) -> Path:
    """Write ``seq`` as a TUM RGB-D folder ``root`` and return it.

    rgb frame ``i`` is stamped ``START + i / 30``; its depth frame ``+-8 ms`` from it (or
    ``depth_offsets[i]`` seconds exactly) and its pose 4 ms later +-3 ms, so each associates with
    the default 0.02 s tolerance. ``quaternion_order="wxyz"`` writes COLMAP's order by mistake;
    ``invert_pose`` writes world-to-camera poses instead of camera-to-world; ``distortion`` bends
    the images and depth through those OpenCV coefficients.
    """
    rng = np.random.default_rng(seed)
    offsets = dict(depth_offsets or {})
    rgb_lines, depth_lines, pose_lines = [], [], []
    for i in range(len(seq)):
        t = START + i * FRAME_DT
        td = t + offsets.get(i, rng.uniform(-0.008, 0.008))
        tp = t + 0.004 + rng.uniform(-0.003, 0.003)
        image, depth = seq.images[i], seq.depths[i]
        if distortion is not None:
            image, depth = distort_view(image, depth, distortion)
        _write_png(root / "rgb" / f"{t:.6f}.png", _bgr(image))
        _write_png(root / "depth" / f"{td:.6f}.png", _depth_u16(depth, TUM_DEPTH_SCALE))
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{td:.6f} depth/{td:.6f}.png")
        pose = seq.poses[i] if invert_pose else np.linalg.inv(seq.poses[i])
        x, y, z, w = rotation_quaternion(pose[:3, :3])
        q = (x, y, z, w) if quaternion_order == "xyzw" else (w, x, y, z)
        values = [*pose[:3, 3], *q]
        pose_lines.append(f"{tp:.4f} " + " ".join(f"{v:.9f}" for v in values))
    header = "# synthetic sequence\n# timestamp filename\n"
    (root / "rgb.txt").write_text(header + "\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text(header + "\n".join(depth_lines) + "\n")
    (root / "groundtruth.txt").write_text(
        "# ground truth trajectory\n# timestamp tx ty tz qx qy qz qw\n"
        + "\n".join(pose_lines)
        + "\n"
    )
    return root


def _depth_u16(depth: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(depth * scale), 0, 65535).astype(np.uint16)


def write_folder(
    root: Path, seq: RenderedSequence, *, npy_depth: bool = False, per_frame_k: bool = False
) -> Path:
    """Write ``seq`` in the folder layout: ``color/<i>.png``, ``depth/<i>.png`` (millimetres) or
    ``.npy`` (metres), ``poses.txt`` (camera-to-world, row-major), ``K.txt`` (one matrix, or a
    ``stem fx fy cx cy`` line per frame)."""
    pose_lines, k_lines = [], []
    for i in range(len(seq)):
        stem = f"{i:04d}"
        _write_png(root / "color" / f"{stem}.png", _bgr(seq.images[i]))
        if npy_depth:
            (root / "depth").mkdir(parents=True, exist_ok=True)
            np.save(root / "depth" / f"{stem}.npy", seq.depths[i].astype(np.float32))
        else:
            _write_png(root / "depth" / f"{stem}.png", _depth_u16(seq.depths[i], 1000.0))
        c2w = np.linalg.inv(seq.poses[i])
        pose_lines.append(stem + " " + " ".join(f"{v:.12g}" for v in c2w.ravel()))
        k_lines.append(f"{stem} {K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}")
    (root / "poses.txt").write_text("\n".join(pose_lines) + "\n")
    if per_frame_k:
        (root / "K.txt").write_text("# stem fx fy cx cy\n" + "\n".join(k_lines) + "\n")
    else:
        (root / "K.txt").write_text("\n".join(" ".join(f"{v:g}" for v in row) for row in K) + "\n")
    return root


def intrinsics_option() -> str:
    """``--intrinsics`` of the fixture's camera."""
    return f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"
