"""Relative-pose estimation time per pair: OpenCV RANSAC (the paper), USAC_MAGSAC and poselib.

    python -m experiments.bench.bench_pose [--pairs 10] [--matches 1500] [--outliers 0.3]

Each pair is two 640x480 pinhole views of random 3D points with a known relative pose; the
matches are the projections with 0.5 px Gaussian noise, a share of them replaced by random
outliers. `loftr.evaluation.metrics.estimate_pose` runs with the evaluation protocol's settings
(0.5 px, confidence 0.99999); the median time per pair and the median pose error (max of the
rotation and translation angles, degrees) are reported per estimator. poselib is optional
(`pip install poselib`); without it its row says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from loftr.evaluation.metrics import estimate_pose, relative_pose_error

ESTIMATOR_NAMES = ("RANSAC", "USAC_MAGSAC", "poselib")
K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])


def synthetic_pair(
    rng: np.random.Generator, matches: int, outliers: float, noise_px: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(kpts0, kpts1, T_0to1)`: noisy projections of points seen by both cameras, outliers."""
    rotation = Rotation.from_rotvec(rng.normal(0, 0.1, 3)).as_matrix()
    translation = rng.normal(0, 1, 3)
    translation = 0.5 * translation / np.linalg.norm(translation)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, translation
    kpts0, kpts1 = [], []
    while sum(len(k) for k in kpts0) < matches:
        points = np.column_stack(
            [rng.uniform(-2, 2, 4 * matches), rng.uniform(-1.5, 1.5, 4 * matches)]
        )
        depth = rng.uniform(3, 8, (len(points), 1))
        points = np.column_stack([points, np.ones(len(points))]) * depth
        in1 = points @ rotation.T + translation
        p0, p1 = points @ K.T, in1 @ K.T
        p0, p1 = p0[:, :2] / p0[:, 2:], p1[:, :2] / p1[:, 2:]
        inside = (
            (in1[:, 2] > 0.1)
            & (p0[:, 0] >= 0) & (p0[:, 0] < 640) & (p0[:, 1] >= 0) & (p0[:, 1] < 480)
            & (p1[:, 0] >= 0) & (p1[:, 0] < 640) & (p1[:, 1] >= 0) & (p1[:, 1] < 480)
        )  # fmt: skip
        kpts0.append(p0[inside])
        kpts1.append(p1[inside])
    k0 = np.concatenate(kpts0)[:matches] + rng.normal(0, noise_px, (matches, 2))
    k1 = np.concatenate(kpts1)[:matches] + rng.normal(0, noise_px, (matches, 2))
    bad = rng.random(matches) < outliers
    k1[bad] = rng.uniform([0, 0], [640, 480], (int(bad.sum()), 2))
    return k0, k1, pose


def bench_pose(
    pairs: int = 10, matches: int = 1500, outliers: float = 0.3, seed: int = 0
) -> list[dict[str, Any]]:
    """Median seconds per pair and median pose error per estimator."""
    rng = np.random.default_rng(seed)
    data = [synthetic_pair(rng, matches, outliers) for _ in range(pairs)]
    results = []
    for name in ESTIMATOR_NAMES:
        if name == "poselib" and importlib.util.find_spec("poselib") is None:
            results.append({"estimator": name, "available": False, "note": "pip install poselib"})
            continue
        times, errors = [], []
        for k0, k1, pose in data:
            start = time.perf_counter()
            estimate = estimate_pose(k0, k1, K, K, 0.5, 0.99999, method=name)
            times.append(time.perf_counter() - start)
            if estimate is None:
                errors.append(float("inf"))
                continue
            t_err, r_err = relative_pose_error(pose, estimate[0], estimate[1])
            errors.append(max(t_err, r_err))
        results.append(
            {
                "estimator": name,
                "available": True,
                "pairs": pairs,
                "matches": matches,
                "outliers": outliers,
                "median_s_per_pair": round(statistics.median(times), 4),
                "max_s_per_pair": round(max(times), 4),
                "median_pose_error_deg": round(statistics.median(errors), 3),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--matches", type=int, default=1500)
    parser.add_argument("--outliers", type=float, default=0.3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = bench_pose(args.pairs, args.matches, args.outliers)
    for r in results:
        if not r["available"]:
            print(f"{r['estimator']:12s} not installed ({r['note']})")
            continue
        print(
            f"{r['estimator']:12s} {r['median_s_per_pair'] * 1e3:8.1f} ms per pair (median of "
            f"{r['pairs']}, {r['matches']} matches, {r['outliers']:.0%} outliers), median pose "
            f"error {r['median_pose_error_deg']:.2f} deg"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pose": results}, f, indent=2)


if __name__ == "__main__":
    main()
