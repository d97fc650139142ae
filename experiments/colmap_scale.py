"""`python -m experiments.colmap_scale`: how long and how much memory the COLMAP converter takes
on a large model (docs/prepare.md#colmap-reconstructions).

It generates a COLMAP workspace of ``--images`` cameras (default 1,000) cheaply: one PINHOLE
camera of 64x48 pixels, the cameras on a line 0.1 m apart looking straight at a textured wall
5 m away, so each sees 1 m of it and shares 3D points with its 9 neighbours on either side;
``--points-per-step`` wall points per 0.1 m (default 20, about 200 per image, tracks of about 10
images); constant 5 m depth maps in COLMAP's binary layout; a random grey jpg per image. The
model is written with pycolmap's own writer. The conversion then runs as the user runs it, in a
child process, and the script prints wall time, the child's peak resident memory
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``), the pairs scored per second and the report's counts
as JSON.

    python -m experiments.colmap_scale --work /tmp/colmap_scale --images 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

WIDTH, HEIGHT, FOCAL = 64, 48, 320.0  # 64 px across 1 m at 5 m
WALL = 5.0  # metres from the cameras
STEP = 0.1  # metres between neighbouring cameras


def _write_depth(path: Path, depth: np.ndarray) -> None:
    """COLMAP's dense layout: ``width&height&channels&`` then float32, x fastest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(f"{depth.shape[1]}&{depth.shape[0]}&1&".encode("ascii"))
        f.write(depth.astype("<f4").tobytes())


def generate(root: Path, n_images: int, points_per_step: int, seed: int = 0) -> Path:
    """Write the workspace (``sparse/``, ``images/``, ``stereo/depth_maps/``) under ``root``."""
    import pycolmap

    rng = np.random.default_rng(seed)
    rec = pycolmap.Reconstruction()
    cx, cy = WIDTH / 2, HEIGHT / 2  # COLMAP's principal point: pixel centres at .5
    camera = pycolmap.Camera(
        camera_id=1, model="PINHOLE", width=WIDTH, height=HEIGHT, params=[FOCAL, FOCAL, cx, cy]
    )
    rec.add_camera_with_trivial_rig(camera)
    depth = np.full((HEIGHT, WIDTH), WALL, np.float32)
    centres = np.arange(n_images) * STEP
    # wall points: x along the line of cameras, y within the images' height, z = WALL
    n_points = points_per_step * (n_images + 10)
    xs = rng.uniform(-0.5, centres[-1] + 0.5, n_points)
    ys = rng.uniform(-0.35, 0.35, n_points) * HEIGHT / WIDTH
    observations: list[list[tuple[float, float, int]]] = [[] for _ in range(n_images)]
    for p, (x, y) in enumerate(zip(xs, ys, strict=True)):
        for k in np.flatnonzero(np.abs(centres - x) < 0.5 * WIDTH / FOCAL * WALL):
            u = FOCAL * (x - centres[k]) / WALL + cx
            observations[k].append((u, FOCAL * y / WALL + cy, p))
    tracks: dict[int, list[tuple[int, int]]] = {}
    for k in range(n_images):
        name = f"seq/{k:05d}.jpg"
        keypoints = np.array([(u, v) for u, v, _ in observations[k]], np.float64).reshape(-1, 2)
        image = pycolmap.Image(name=name, keypoints=keypoints, camera_id=1, image_id=k + 1)
        pose = np.hstack([np.eye(3), [[-centres[k]], [0.0], [0.0]]])
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pose))
        for idx, (_, _, p) in enumerate(observations[k]):
            tracks.setdefault(p, []).append((k + 1, idx))
        picture = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / name), picture)
        _write_depth(root / "stereo" / "depth_maps" / f"{name}.geometric.bin", depth)
    for p, elements in tracks.items():
        if len(elements) < 2:
            continue
        track = pycolmap.Track()
        for image_id, idx in elements:
            track.add_element(image_id, idx)
        rec.add_point3D(np.array([xs[p], ys[p], WALL]), track)
    (root / "sparse").mkdir(parents=True, exist_ok=True)
    rec.write_binary(str(root / "sparse"))
    return root


def measure(root: Path, out: Path) -> dict[str, Any]:
    """Convert the workspace in a child process; time, peak memory and the report's counts."""
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable, "-m", "loftr.data.prepare", "colmap",
        "--model", str(root / "sparse"), "--images", str(root / "images"),
        "--out", str(out), "--name", "scale",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    report = json.loads((out / "reports" / "scale.json").read_text())
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {
        "command": " ".join(command),
        "images": report["images"],
        "points3D": report["points3D"],
        "pairs_considered": report["pairs_considered"],
        "pairs_written": report["pairs_written"],
        "pairs_per_bin": report["pairs_per_bin"],
        "wall_seconds": round(seconds, 2),
        "writer_seconds": report["seconds"],
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "pairs_per_second": round(report["pairs_considered"] / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.colmap_scale", description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="folder for the model and set")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--points-per-step", type=int, default=20)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    root = generate(args.work / "workspace", args.images, args.points_per_step)
    generated = time.perf_counter() - started
    result = {"generate_seconds": round(generated, 2), **measure(root, args.work / "prepared")}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
