"""A synthetic scene written as a COLMAP workspace: the sparse model through pycolmap's own writer
and the dense depth maps in COLMAP's binary layout.

Shared by the COLMAP converter's tests (tests/test_prepare_colmap.py) and the end-to-end one
(tests/test_prepare_e2e.py); it holds no tests. The scene is an outdoor plaza of
``loftr.data.synthetic``, rendered small, seen by two cameras of different intrinsics (a PINHOLE
and a SIMPLE_PINHOLE one) whose images lie in one sub-folder per camera. The model's 3D points are
sampled from the rendered surfaces (a pixel grid of every frame, back-projected) and observed by
every frame that sees them unoccluded (depth agreement), as a reconstruction's tracks would be;
points seen by one frame only are left out, as COLMAP's mapper leaves them out. The layout is the
one ``colmap image_undistorter`` and ``colmap patch_match_stereo`` write
(docs/prepare.md#colmap-reconstructions):

    <root>/sparse/{cameras,images,points3D,rigs,frames}.{bin,txt}
    <root>/images/<camera folder>/<frame>.jpg
    <root>/stereo/depth_maps/<image name>.<kind>.bin
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from loftr.data.covisibility import reproject
from loftr.data.synthetic import make_texture_bank, outdoor_scene, render_view
from loftr.data.synthetic.cameras import outdoor_trajectories

# (model, width, height, params in the project's convention: fx, fy, cx, cy with pixel centres at
# integer coordinates); the model file stores cx + 0.5, cy + 0.5 (COLMAP's pixel centres at .5).
CAMERAS = (
    ("PINHOLE", 160, 120, (112.0, 110.0, 80.3, 58.6)),
    ("SIMPLE_PINHOLE", 128, 96, (96.0, 96.0, 63.1, 47.9)),
)
POINT_STRIDE = 6  # pixels between the grid samples every frame back-projects into 3D points
TRACK_REL_TOL = 0.01  # depth agreement that counts a point as seen (unoccluded) by a frame


@dataclass
class ColmapScene:
    """What ``write_colmap_scene`` wrote and the renderer's own values to check a conversion.

    Attributes:
        root: the dense workspace (``sparse/``, ``images/``, ``stereo/``).
        names: the model's image names (``cam1/0000.jpg``...), in frame order.
        K: per frame, the renderer's (3, 3) intrinsics at the size of its depth map (pixel
            centres at integer coordinates).
        poses: per frame, the renderer's (4, 4) world-to-camera pose.
        depths: per frame, the renderer's (H, W) float32 depth at its depth map's size.
        downscaled: the frames whose depth map is half the image's size.
    """

    root: Path
    names: list[str] = field(default_factory=list)
    K: list[np.ndarray] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)
    depths: list[np.ndarray] = field(default_factory=list)
    downscaled: tuple[int, ...] = ()

    @property
    def model(self) -> Path:
        return self.root / "sparse"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def depth_maps(self) -> Path:
        return self.root / "stereo" / "depth_maps"


def write_colmap_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (H, W) or (H, W, C) in COLMAP's dense binary layout: the ASCII header
    ``width&height&channels&``, then little-endian float32 values, x fastest, row after row,
    channel after channel."""
    data = np.asarray(array, np.float32)
    if data.ndim == 2:
        data = data[..., None]
    h, w, c = data.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(f"{w}&{h}&{c}&".encode("ascii"))
        f.write(np.ascontiguousarray(data.transpose(2, 0, 1)).astype("<f4").tobytes())


def _half(K: np.ndarray) -> np.ndarray:
    """Intrinsics of the image downscaled by 2 (pixel centres at integers:
    x' = (x + 0.5) / 2 - 0.5)."""
    out = K.copy()
    out[:2, :2] /= 2
    out[:2, 2] = (K[:2, 2] + 0.5) / 2 - 0.5
    return out


def _sample_points(
    depths: Sequence[np.ndarray], Ks: Sequence[np.ndarray], poses: Sequence[np.ndarray]
) -> tuple[np.ndarray, list[list[tuple[int, float, float]]]]:
    """3D points from every frame's pixel grid and, per point, its track: ``(frame, x, y)`` for
    every frame that sees it unoccluded (pixels with integer centres). Single-frame tracks are
    dropped."""
    xyz, tracks = [], []
    for k, (depth, K, pose) in enumerate(zip(depths, Ks, poses, strict=True)):
        grid = np.zeros_like(depth)
        grid[POINT_STRIDE // 2 :: POINT_STRIDE, POINT_STRIDE // 2 :: POINT_STRIDE] = 1
        sampled = depth * grid
        ys, xs = np.nonzero(sampled)
        pix = np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64)
        cam = np.linalg.inv(K) @ pix * depth[ys, xs].astype(np.float64)
        world = np.linalg.inv(pose) @ np.vstack([cam, np.ones(len(xs))])
        seen = []
        for m in range(len(depths)):
            if m == k:
                seen.append((np.ones(len(xs), bool), xs.astype(np.float64), ys.astype(np.float64)))
                continue
            r = reproject(
                sampled, depths[m], K, Ks[m], poses[m] @ np.linalg.inv(pose), rel_tol=TRACK_REL_TOL
            )
            seen.append((r.ok, r.u, r.v))  # reproject keeps sampled's pixels in nonzero order
        for p in range(len(xs)):
            track = [(m, float(u[p]), float(v[p])) for m, (ok, u, v) in enumerate(seen) if ok[p]]
            if len(track) >= 2:
                xyz.append(world[:3, p])
                tracks.append(track)
    return np.asarray(xyz, np.float64).reshape(-1, 3), tracks


def write_colmap_scene(
    root: Path,
    *,
    n_frames: int = 8,
    seed: int = 7,
    text: bool = False,
    downscaled: tuple[int, ...] = (1,),
    kind: str = "geometric",
) -> ColmapScene:
    """Render a plaza and write it as a COLMAP dense workspace under ``root``.

    Frames alternate between the two ``CAMERAS`` (folders ``cam1/``, ``cam2/``).

    Args:
        root: the workspace folder (created).
        n_frames: frames to render.
        seed: drives the scene and the camera arcs.
        text: write the sparse model as text files (else binary).
        downscaled: frames whose depth map is written at half the image's size (as
            ``patch_match_stereo --PatchMatchStereo.max_image_size`` writes them).
        kind: ``geometric`` or ``photometric``: the depth maps' suffix.
    """
    import pycolmap  # the [colmap] extra; the tests that use this module skip without it

    rng = np.random.default_rng(seed)
    poses, _ = outdoor_trajectories(rng, n_frames)
    plaza = outdoor_scene(rng, make_texture_bank(seed, size=128), poses)
    out = ColmapScene(root=root, downscaled=tuple(downscaled))
    rec = pycolmap.Reconstruction()
    for cam_id, (model, w, h, (fx, fy, cx, cy)) in enumerate(CAMERAS, start=1):
        params = [fx, fy, cx + 0.5, cy + 0.5]
        if model == "SIMPLE_PINHOLE":
            params = [fx, cx + 0.5, cy + 0.5]
        camera = pycolmap.Camera(camera_id=cam_id, model=model, width=w, height=h, params=params)
        rec.add_camera_with_trivial_rig(camera)
    frames = []
    for i, pose in enumerate(poses):
        _, w, h, (fx, fy, cx, cy) = CAMERAS[i % 2]
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        view = render_view(plaza, K, pose, w, h)
        name = f"cam{i % 2 + 1}/{i:04d}.jpg"
        (out.images / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(out.images / name), view.image)
        depth_K, depth = K, view.depth
        if i in out.downscaled:
            depth_K = _half(K)
            depth = render_view(plaza, depth_K, pose, w // 2, h // 2).depth
        write_colmap_array(out.depth_maps / f"{name}.{kind}.bin", depth)
        frames.append((name, K, view.depth))
        out.names.append(name)
        out.K.append(depth_K)
        out.poses.append(pose)
        out.depths.append(depth)
    xyz, tracks = _sample_points([d for _, _, d in frames], [k for _, k, _ in frames], poses)
    keypoints: list[list[tuple[float, float]]] = [[] for _ in poses]
    elements = []
    for track in tracks:  # COLMAP's keypoints: pixel centres at .5
        elements.append([(m, len(keypoints[m])) for m, _, _ in track])
        for m, u, v in track:
            keypoints[m].append((u + 0.5, v + 0.5))
    for i, (name, pose) in enumerate(zip(out.names, poses, strict=True)):
        image = pycolmap.Image(
            name=name,
            keypoints=np.asarray(keypoints[i], np.float64).reshape(-1, 2),
            camera_id=i % 2 + 1,
            image_id=i + 1,
        )
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pose[:3, :4]))
    for point, element in zip(xyz, elements, strict=True):
        track = pycolmap.Track()
        for m, idx in element:
            track.add_element(m + 1, idx)
        rec.add_point3D(point, track)
    out.model.mkdir(parents=True, exist_ok=True)
    (rec.write_text if text else rec.write_binary)(str(out.model))
    return out
