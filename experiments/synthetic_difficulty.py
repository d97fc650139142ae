"""`python -m experiments.synthetic_difficulty`: what the held-out synthetic pairs allow.

For every held-out (test) pair of a generated synthetic set, sample co-visible image-0 pixels,
carry them into image 1 through the stored depth, intrinsics and poses (their exact
ground-truth correspondences), add Gaussian noise of 0, 1 and 2 px to the image-1 points (a
matcher's error lies in where it puts the match in image 1), and estimate the relative pose with
the evaluation's estimator (`loftr.evaluation.metrics.estimate_pose` with the paper protocol of
conf/eval/ransac.yaml) at the stored resolution. The pose AUC@5/10/20 of these estimates is what
a perfect matcher with that much localisation error would score: an upper bound that shows
whether the held-out set is neither degenerate nor trivial.

It also plots the pairs' relative rotation, baseline-to-depth ratio (camera distance over the
median depth of image 0) and overlap score, and writes the numbers to a JSON file.

    python -m experiments.synthetic_difficulty --root data/synthetic --out outputs/difficulty
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
from omegaconf import OmegaConf

from loftr.data.covisibility import relative_pose, reproject
from loftr.data.scene_info import load_scene_info
from loftr.data.synthetic import FORMATS, ensure_synthetic, read_manifest
from loftr.evaluation.aggregate import error_auc
from loftr.evaluation.metrics import estimate_pose, relative_pose_error

EVAL_PROTOCOL = Path(__file__).resolve().parents[1] / "conf" / "eval" / "ransac.yaml"
NOISE_PX = (0.0, 1.0, 2.0)
THRESHOLDS = (5, 10, 20)


@dataclass(frozen=True)
class Pair:
    """A held-out pair as stored: depths (m, 0 = none), intrinsics, camera-0-to-1 pose, score."""

    depth0: np.ndarray
    depth1: np.ndarray
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray
    score: float


def _scannet_pairs(root: Path) -> Iterator[Pair]:
    """The test pairs of a ScanNet-format synthetic set (``index/scene_data/test/test.npz``)."""
    index = np.load(root / "index" / "scene_data" / "test" / "test.npz")
    intrinsics = np.load(root / "index" / "intrinsics_test.npz")

    def frame(scene: str, fid: int) -> tuple[np.ndarray, np.ndarray]:
        folder = root / "test" / scene
        depth = cv2.imread(str(folder / "depth" / f"{fid}.png"), cv2.IMREAD_UNCHANGED)
        return depth.astype(np.float64) / 1000.0, np.linalg.inv(
            np.loadtxt(folder / "pose" / f"{fid}.txt")
        )

    for (scene_id, sub, f0, f1), score in zip(index["name"], index["score"], strict=True):
        scene = f"scene{int(scene_id):04d}_{int(sub):02d}"
        k = intrinsics[scene].reshape(3, 3)
        (d0, w2c0), (d1, w2c1) = frame(scene, int(f0)), frame(scene, int(f1))
        yield Pair(d0, d1, k, k, relative_pose(w2c0, w2c1), float(score))


def _megadepth_pairs(root: Path) -> Iterator[Pair]:
    """The validation/test pairs of a MegaDepth-format synthetic set (``scene_info_val_1500``)."""
    for path in sorted((root / "index" / "scene_info_val_1500").glob("*.npz")):
        info = load_scene_info(path)
        for (i0, i1), score, _ in info["pair_infos"]:
            depths = []
            for i in (i0, i1):
                with h5py.File(root / "test" / info["depth_paths"][i], "r") as f:
                    depths.append(f["depth"][()].astype(np.float64))
            poses = info["poses"]
            t_0to1 = relative_pose(poses[i0], poses[i1])
            k0, k1 = info["intrinsics"][i0], info["intrinsics"][i1]
            yield Pair(depths[0], depths[1], k0, k1, t_0to1, float(score))


def heldout_pairs(root: Path, fmt: str) -> list[Pair]:
    """Every held-out pair of the ``fmt`` set in ``root`` (the ``<root>/<format>`` folder)."""
    return list(_scannet_pairs(root) if fmt == "scannet" else _megadepth_pairs(root))


def ground_truth_matches(
    pair: Pair, n: int, rng: np.random.Generator, rel_tol: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` exact correspondences ``(kpts0, kpts1)`` (each (M, 2) pixels) of a pair.

    Image-0 pixels with depth are moved into camera 1; those in front of it, inside image 1 and
    agreeing within ``rel_tol`` with image 1's depth at the nearest pixel (not occluded) are the
    co-visible ones, of which ``n`` are drawn without replacement.
    """
    r = reproject(pair.depth0, pair.depth1, pair.K0, pair.K1, pair.T_0to1, rel_tol=rel_tol)
    idx = np.flatnonzero(r.ok)
    idx = rng.choice(idx, size=min(n, len(idx)), replace=False)
    kpts0 = np.stack([r.xs[idx], r.ys[idx]], axis=1).astype(np.float64)
    return kpts0, np.stack([r.u[idx], r.v[idx]], axis=1)


def pair_geometry(pair: Pair) -> dict[str, float]:
    """Relative rotation (degrees), baseline over the median depth of image 0, overlap score."""
    rot = pair.T_0to1[:3, :3]
    angle = np.degrees(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))
    baseline = float(np.linalg.norm(rot.T @ pair.T_0to1[:3, 3]))
    depth = float(np.median(pair.depth0[pair.depth0 > 0]))
    return {
        "rotation_deg": float(angle),
        "baseline_to_depth": baseline / depth,
        "overlap": pair.score,
    }


def pose_aucs(
    pairs: Sequence[Pair],
    noise_px: float,
    *,
    n_points: int = 500,
    seed: int = 0,
    protocol: Any = None,
) -> dict[str, float]:
    """Pose AUC (fractions) of the estimates from each pair's ground-truth matches plus noise.

    Args:
        pairs: the held-out pairs.
        noise_px: standard deviation of the Gaussian noise added to the image-1 points, pixels.
        n_points: correspondences per pair.
        seed: seeds the sampling and the noise (the same points for every noise level).
        protocol: the ``eval`` node (``ransac_pixel_thr``, ``ransac_conf``,
            ``pose_estimator``); conf/eval/ransac.yaml when None.
    """
    protocol = protocol if protocol is not None else OmegaConf.load(EVAL_PROTOCOL)
    errors = []
    for i, pair in enumerate(pairs):
        rng = np.random.default_rng([seed, i])
        kpts0, kpts1 = ground_truth_matches(pair, n_points, rng)
        kpts1 = kpts1 + rng.normal(0.0, 1.0, size=kpts1.shape) * noise_px
        estimate = estimate_pose(
            kpts0,
            kpts1,
            pair.K0,
            pair.K1,
            float(protocol.ransac_pixel_thr),
            float(protocol.ransac_conf),
            str(protocol.pose_estimator),
        )
        if estimate is None:
            errors.append(np.inf)
            continue
        t_err, r_err = relative_pose_error(pair.T_0to1, estimate[0], estimate[1])
        errors.append(max(t_err, r_err))
    return error_auc(errors, THRESHOLDS)


def plot_distributions(geometry: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Histograms of rotation, baseline-to-depth and overlap, one colour per format."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    keys = (
        ("rotation_deg", "relative rotation (deg)"),
        ("baseline_to_depth", "baseline / median depth"),
        ("overlap", "overlap score"),
    )
    for ax, (key, label) in zip(fig.subplots(1, 3), keys, strict=True):
        bins = np.histogram_bin_edges([r[key] for rows in geometry.values() for r in rows], 20)
        for fmt, rows in geometry.items():
            ax.hist([r[key] for r in rows], bins=bins, alpha=0.6, label=f"{fmt} ({len(rows)})")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out pairs")
        ax.legend()
    fig.suptitle("held-out synthetic pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def measure(root: Path, formats: Sequence[str], n_points: int, seed: int) -> dict[str, Any]:
    """AUCs per noise level and pair geometry of the held-out pairs of each format."""
    report: dict[str, Any] = {}
    for fmt in formats:
        pairs = heldout_pairs(root / fmt, fmt)
        geometry = [pair_geometry(p) for p in pairs]
        report[fmt] = {
            "pairs": len(pairs),
            "auc": {
                f"{s:g}px": pose_aucs(pairs, s, n_points=n_points, seed=seed) for s in NOISE_PX
            },
            "geometry": geometry,
        }
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per format and noise level, then the medians of the pair geometry."""
    lines = []
    for fmt, entry in report.items():
        for noise, aucs in entry["auc"].items():
            cells = " / ".join(f"{100 * aucs[f'auc@{t}']:.1f}" for t in THRESHOLDS)
            lines.append(f"{fmt}: {entry['pairs']} pairs, noise {noise}: AUC@5/10/20 = {cells} %")
        for key in ("rotation_deg", "baseline_to_depth", "overlap"):
            values = np.array([g[key] for g in entry["geometry"]])
            q = np.percentile(values, [10, 50, 90])
            lines.append(f"{fmt}: {key} p10 / median / p90 = {q[0]:.3g} / {q[1]:.3g} / {q[2]:.3g}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default="data/synthetic", help="sets folder (default sizes generated if empty)"
    )
    parser.add_argument("--format", choices=[*FORMATS, "both"], default="both")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampling (and a new set)")
    parser.add_argument("--points", type=int, default=500, help="correspondences per pair")
    parser.add_argument("--out", default="outputs/synthetic_difficulty", help="output folder")
    args = parser.parse_args(argv)
    formats = FORMATS if args.format == "both" else (args.format,)
    root = Path(args.root)
    for fmt in formats:
        if read_manifest(root / fmt) is None:  # a set already there is measured as it is
            ensure_synthetic(root, fmt, args.seed)
    report = measure(root, formats, args.points, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "difficulty.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_distributions({f: e["geometry"] for f, e in report.items()}, out / "difficulty.png")
    print("\n".join(summary_lines(report)))
    print(f"wrote {out / 'difficulty.json'} and {out / 'difficulty.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
