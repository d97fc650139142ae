"""The ScanNet and MegaDepth format writers: render every scene of a split, score its frame
pairs and write images, depths, poses and index files in the real on-disk layouts
(docs/original.md#scannet, #megadepth, #test-sets).

Every scene, camera path and frame's noise draws from its own generator seeded by
``(seed, format, split, scene, purpose)``, so the bytes do not depend on the number of threads
the frames are rendered on (``RENDER_THREADS``).
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from loftr.data.covisibility import covisibility, overlap_score, relative_pose
from loftr.data.io import write_megadepth_depth
from loftr.data.scene_info import OVERLAP_BINS, bin_stem
from loftr.data.synthetic.cameras import (
    _split_counts,
    indoor_trajectories,
    megadepth_intrinsics,
    outdoor_trajectories,
)
from loftr.data.synthetic.render import RenderedView, render_view
from loftr.data.synthetic.scenes import Scene, indoor_scene, outdoor_scene, random_room
from loftr.data.synthetic.textures import TextureBank, make_texture_bank
from loftr.errors import DataError

# ScanNet: 640x480 frames with the depth intrinsics of the real set (docs/original.md#scannet: fx =
# fy = 577.87, cx = 319.5, cy = 239.5); the focal length varies a little per scene (the real file
# has 14 distinct values; these five are made up around 577.87).
SCANNET_WIDTH, SCANNET_HEIGHT = 640, 480
SCANNET_FOCALS = (571.62, 574.54, 577.87, 581.07, 583.52)
SCANNET_FRAME_STEP = 10  # python SensReader export with frame_skip=10: ids 0, 10, 20, ... unpadded
SCANNET_TEST_SCENE_OFFSET = 707  # ScanNet-1500 test scenes are scene0707_00 ... scene0806_00
SCANNET_TRAIN_OVERLAP = (0.1, 0.9)  # pairs kept in the training index
SCANNET_TEST_OVERLAP = (0.2, 0.8)  # range the test pairs are spread over
SCANNET_TRAIN_LIST = "synthetic_train.txt"
SCANNET_TEST_LIST = "synthetic_test.txt"

MEGADEPTH_BINS = OVERLAP_BINS  # sub-scene overlap bins of the real index
MEGADEPTH_TEST_SCENE_OFFSET = 5000
MEGADEPTH_DEPTH_ROOT = Path("phoenix/S6/zl548/MegaDepth_v1")

_FORMAT_CODE = {"scannet": 1, "megadepth": 2}
_SPLIT_CODE = {"train": 1, "test": 2}


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` with fixed zip timestamps, so the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            zf.writestr(
                zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue()
            )


def _write_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise DataError(f"could not write {path}: check that the folder is writable")


def _write_matrix(path: Path, matrix: np.ndarray) -> None:
    """Write a matrix as space-delimited text rows (SensReader pose/intrinsic files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(f"{x:.9f}" for x in row) for row in np.asarray(matrix, np.float64)]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class _RenderedScene:
    name: str
    intrinsics: list[np.ndarray]  # (3, 3) per frame
    poses: list[np.ndarray]  # (4, 4) world-to-camera per frame
    views: list[RenderedView]


def _scene_rng(seed: int, fmt: str, split: str, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, _FORMAT_CODE[fmt], _SPLIT_CODE[split], index, purpose])


def _pair_overlaps(scene: _RenderedScene) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Overlap score and central match of every frame pair (i < j) of a rendered scene.

    Returns:
        ``(pairs, scores (P,), central_matches (P, 4))``.
    """
    pairs, scores, centrals = [], [], []
    n = len(scene.views)
    for i in range(n):
        for j in range(i + 1, n):
            t_0to1 = relative_pose(scene.poses[i], scene.poses[j])
            d0, d1 = scene.views[i].depth, scene.views[j].depth
            k0, k1 = scene.intrinsics[i], scene.intrinsics[j]
            pairs.append((i, j))
            scores.append(overlap_score(d0, d1, k0, k1, t_0to1))
            centrals.append(covisibility(d0, d1, k0, k1, t_0to1).central_match)
    return pairs, np.asarray(scores, np.float64), np.asarray(centrals).reshape(-1, 4)


def _spread_pairs(scores: np.ndarray, n: int, lo: float, hi: float) -> list[int]:
    """Pick up to ``n`` pair indices whose scores spread evenly over [lo, hi] (deterministic)."""
    candidates = [i for i in np.argsort(scores, kind="stable") if lo <= scores[i] <= hi]
    if len(candidates) <= n:
        return sorted(candidates)
    chosen: list[int] = []
    for target in np.linspace(lo, hi, n):
        free = [i for i in candidates if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(scores[i] - target), i)))
    return sorted(chosen)


class _Progress:
    """A tqdm bar over rendered frames, or nothing."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="frame", file=sys.stderr)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _start(
    fmt: str, seed: int, sizes: Mapping[str, int], progress: bool
) -> tuple[TextureBank, _Progress]:
    """The texture bank of ``seed`` and a progress bar over every frame a set renders."""
    total = sizes["train_scenes"] * sizes["frames_per_scene"]
    total += sizes["test_scenes"] * sizes["test_frames_per_scene"]
    return make_texture_bank(seed), _Progress(total, progress, f"synthetic {fmt}")


#: Frames are rendered on this many threads (numpy releases the GIL in the array work); each
#: frame has its own noise generator, so the output does not depend on the thread count.
RENDER_THREADS = max(1, min(2, os.cpu_count() or 1))


def _render_frames(
    scene: Scene,
    cameras: Sequence[tuple[np.ndarray, np.ndarray, int, int]],
    key: tuple[int, str, str, int],
    progress: _Progress,
) -> list[RenderedView]:
    """Render ``(K, T_w2c, width, height)`` cameras of one scene, frame ``i`` with noise seeded
    by ``(seed, format, split, scene index)`` = ``key`` and ``i``."""
    seed, fmt, split, index = key

    def render(i: int) -> RenderedView:
        k, pose, width, height = cameras[i]
        noise = _scene_rng(seed, fmt, split, index, 1000 + i)
        return render_view(scene, k, pose, width, height, rng=noise)

    views: list[RenderedView] = []
    with ThreadPoolExecutor(max_workers=RENDER_THREADS) as pool:
        for view in pool.map(render, range(len(cameras))):
            views.append(view)
            progress.update()
    return views


def _render_scannet_scene(
    bank: TextureBank, seed: int, split: str, index: int, n_frames: int, progress: _Progress
) -> _RenderedScene:
    rng = _scene_rng(seed, "scannet", split, index, 0)
    room = random_room(rng)
    poses = indoor_trajectories(rng, room, n_frames)  # first, so the occluders avoid the cameras
    scene = indoor_scene(rng, bank, room, poses)
    focal = SCANNET_FOCALS[int(rng.integers(len(SCANNET_FOCALS)))]
    k = np.array(
        [
            [focal, 0.0, (SCANNET_WIDTH - 1) / 2],
            [0.0, focal, (SCANNET_HEIGHT - 1) / 2],
            [0.0, 0.0, 1.0],
        ]
    )
    cameras = [(k, pose, SCANNET_WIDTH, SCANNET_HEIGHT) for pose in poses]
    views = _render_frames(scene, cameras, (seed, "scannet", split, index), progress)
    offset = SCANNET_TEST_SCENE_OFFSET if split == "test" else 0
    name = f"scene{offset + index:04d}_00"
    return _RenderedScene(name, [k] * n_frames, poses, views)


def _write_scannet_frames(folder: Path, scene: _RenderedScene, frames: Sequence[int]) -> None:
    """Write color/depth/pose files (docs/original.md#scannet) of the given frame indices of
    ``scene``."""
    for i in frames:
        fid = i * SCANNET_FRAME_STEP
        view = scene.views[i]
        _write_jpg(folder / "color" / f"{fid}.jpg", view.image)
        depth_mm = np.clip(np.rint(view.depth.astype(np.float64) * 1000.0), 0, 65535)
        (folder / "depth").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "depth" / f"{fid}.png"), depth_mm.astype(np.uint16))
        _write_matrix(folder / "pose" / f"{fid}.txt", np.linalg.inv(scene.poses[i]))  # cam-to-world


def write_scannet(out: Path, seed: int, sizes: Mapping[str, int], progress: bool = False) -> dict:
    """Render and write a ScanNet-format set (docs/original.md#scannet, #test-sets) into ``out``.

    Args:
        out: the format folder (``<root>/scannet``), created if needed.
        seed: seeds everything.
        sizes: resolved sizes (see ``DEFAULT_SIZES``).
        progress: show a progress bar.

    Returns:
        A summary: scenes, frames and pairs written per split and the score range.
    """
    bank, bar = _start("scannet", seed, sizes, progress)
    index = out / "index"
    (index / "scene_data" / "train").mkdir(parents=True, exist_ok=True)
    (index / "scene_data" / "train_list").mkdir(parents=True, exist_ok=True)
    (index / "scene_data" / "test").mkdir(parents=True, exist_ok=True)
    (index / "scene_data" / "test_list").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    try:
        intrinsics, names, all_scores = {}, [], []
        n_frames = sizes["frames_per_scene"]
        for s in range(sizes["train_scenes"]):
            scene = _render_scannet_scene(bank, seed, "train", s, n_frames, bar)
            _write_scannet_frames(out / "train" / scene.name, scene, range(n_frames))
            pairs, scores, _ = _pair_overlaps(scene)
            lo, hi = SCANNET_TRAIN_OVERLAP
            keep = [p for p in range(len(pairs)) if lo <= scores[p] <= hi]
            scene_id = int(scene.name[5:9])
            rows = [
                (scene_id, 0, pairs[p][0] * SCANNET_FRAME_STEP, pairs[p][1] * SCANNET_FRAME_STEP)
                for p in keep
            ]
            _save_npz(
                index / "scene_data" / "train" / f"{scene.name}.npz",
                {
                    "name": np.asarray(rows, np.uint16).reshape(-1, 4),
                    "score": scores[keep].astype(np.float16),
                },
            )
            intrinsics[scene.name] = scene.intrinsics[0].reshape(9).astype(np.float64)
            names.append(f"{scene.name}.npz")
            all_scores.extend(scores[keep].tolist())
        _save_npz(index / "intrinsics.npz", intrinsics)
        (index / "scene_data" / "train_list" / SCANNET_TRAIN_LIST).write_text(
            "\n".join(names) + "\n"
        )
        summary["train"] = _summary(len(names), sizes["train_scenes"] * n_frames, all_scores)

        test_rows, test_scores, test_rel, test_k, n_written = [], [], [], {}, 0
        n_test = sizes["test_frames_per_scene"]
        for s in range(sizes["test_scenes"]):
            scene = _render_scannet_scene(bank, seed, "test", s, n_test, bar)
            pairs, scores, _ = _pair_overlaps(scene)
            chosen = _spread_pairs(scores, sizes["test_pairs_per_scene"], *SCANNET_TEST_OVERLAP)
            used = sorted({f for p in chosen for f in pairs[p]})
            folder = out / "test" / scene.name
            _write_scannet_frames(folder, scene, used)
            n_written += len(used)
            k4 = np.eye(4)
            k4[:3, :3] = scene.intrinsics[0]
            for name in ("intrinsic_depth", "intrinsic_color"):
                _write_matrix(folder / "intrinsic" / f"{name}.txt", k4)
            for name in ("extrinsic_depth", "extrinsic_color"):
                _write_matrix(folder / "intrinsic" / f"{name}.txt", np.eye(4))
            scene_id = int(scene.name[5:9])
            for p in chosen:
                i, j = pairs[p]
                test_rows.append((scene_id, 0, i * SCANNET_FRAME_STEP, j * SCANNET_FRAME_STEP))
                test_scores.append(scores[p])
                rel = relative_pose(scene.poses[i], scene.poses[j])
                test_rel.append(rel[:3, :4].reshape(12))
            test_k[scene.name] = scene.intrinsics[0].astype(np.float64)
        _save_npz(
            index / "scene_data" / "test" / "test.npz",
            {
                "name": np.asarray(test_rows, np.uint16).reshape(-1, 4),
                "score": np.asarray(test_scores, np.float16),
                "rel_pose": np.asarray(test_rel, np.float32).reshape(-1, 12),
            },
        )
        _save_npz(index / "intrinsics_test.npz", test_k)
        (index / "scene_data" / "test_list" / SCANNET_TEST_LIST).write_text("test.npz\n")
        summary["test"] = _summary(sizes["test_scenes"], n_written, test_scores)
    finally:
        bar.close()
    return summary


def _summary(scenes: int, frames: int, scores: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(scores, np.float64)
    return {
        "scenes": scenes,
        "frames": frames,
        "pairs": len(arr),
        "score_min": round(float(arr.min()), 4) if len(arr) else None,
        "score_max": round(float(arr.max()), 4) if len(arr) else None,
    }


def _render_megadepth_scene(
    bank: TextureBank, seed: int, split: str, index: int, n_frames: int, progress: _Progress
) -> _RenderedScene:
    rng = _scene_rng(seed, "megadepth", split, index, 0)
    poses, fovs = outdoor_trajectories(rng, n_frames)  # first, so the occluders avoid the cameras
    scene = outdoor_scene(rng, bank, poses)
    cam_rng = _scene_rng(seed, "megadepth", split, index, 2)
    cameras = [
        (*megadepth_intrinsics(cam_rng, fov), pose) for pose, fov in zip(poses, fovs, strict=True)
    ]
    cameras = [(k, pose, width, height) for k, width, height, pose in cameras]
    views = _render_frames(scene, cameras, (seed, "megadepth", split, index), progress)
    intrinsics = [camera[0] for camera in cameras]
    offset = MEGADEPTH_TEST_SCENE_OFFSET if split == "test" else 0
    return _RenderedScene(f"{offset + index:04d}", intrinsics, poses, views)


def _megadepth_paths(scene: str, i: int) -> tuple[str, str]:
    """Relative image and depth paths of frame ``i`` of ``scene`` (docs/original.md#megadepth)."""
    stem = f"{scene}_{i:04d}"
    image = f"Undistorted_SfM/{scene}/images/{stem}.jpg"
    depth = f"{MEGADEPTH_DEPTH_ROOT.as_posix()}/{scene}/dense0/depths/{stem}.h5"
    return image, depth


def _write_megadepth_frames(data_root: Path, scene: _RenderedScene, frames: Sequence[int]) -> None:
    for i in frames:
        image_rel, depth_rel = _megadepth_paths(scene.name, i)
        _write_jpg(data_root / image_rel, scene.views[i].image)
        write_megadepth_depth(data_root / depth_rel, scene.views[i].depth)


def _scene_info(
    scene: _RenderedScene,
    pair_infos: list[tuple[tuple[int, int], float, np.ndarray]],
) -> dict[str, Any]:
    """A MegaDepth scene-info dict (docs/original.md#megadepth); slots not used by any pair have
    None paths."""
    n = len(scene.views)
    used = {i for (pair, _, _) in pair_infos for i in pair}
    image_paths = np.empty(n, dtype=object)
    depth_paths = np.empty(n, dtype=object)
    for i in range(n):
        if i in used:
            image_paths[i], depth_paths[i] = _megadepth_paths(scene.name, i)
    return {
        "image_paths": image_paths,
        "depth_paths": depth_paths,
        "intrinsics": np.stack(scene.intrinsics).astype(np.float64),
        "poses": np.stack(scene.poses).astype(np.float64),
        "pair_infos": pair_infos,
    }


def _write_pickle(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def write_megadepth(out: Path, seed: int, sizes: Mapping[str, int], progress: bool = False) -> dict:
    """Render and write a MegaDepth-format set (docs/original.md#megadepth, #test-sets) into
    ``out``.

    Train scenes go to ``train/`` with one scene-info file per non-empty overlap bin in
    ``index/scene_info_0.1_0.7``; validation/test scenes go to ``test/`` with
    ``index/scene_info_val_1500`` files holding up to ``test_pairs_per_scene`` pairs spread over
    the bins. Arguments and summary as in ``write_scannet`` (``out`` is ``<root>/megadepth``).
    """
    bank, bar = _start("megadepth", seed, sizes, progress)
    index = out / "index"
    lists = index / "trainvaltest_list"
    lists.mkdir(parents=True, exist_ok=True)
    # validation/test pairs per bin, e.g. 15 pairs -> 5 + 5 + 5
    per_bin = _split_counts(sizes["test_pairs_per_scene"], len(MEGADEPTH_BINS))
    per_bin += [0] * (len(MEGADEPTH_BINS) - len(per_bin))
    summary: dict[str, Any] = {}
    try:
        for split, info_dir, list_name in (
            ("train", "scene_info_0.1_0.7", "train_list.txt"),
            ("test", "scene_info_val_1500", "val_list.txt"),
        ):
            n_scenes = sizes["train_scenes" if split == "train" else "test_scenes"]
            n_frames = sizes["frames_per_scene" if split == "train" else "test_frames_per_scene"]
            (index / info_dir).mkdir(parents=True, exist_ok=True)
            stems, all_scores, frames_written = [], [], 0
            for s in range(n_scenes):
                scene = _render_megadepth_scene(bank, seed, split, s, n_frames, bar)
                pairs, scores, centrals = _pair_overlaps(scene)
                used: set[int] = set()
                for (lo, hi), quota in zip(MEGADEPTH_BINS, per_bin, strict=True):
                    in_bin = [p for p in range(len(pairs)) if lo <= scores[p] < hi]
                    if split == "test":
                        sub = _spread_pairs(scores[in_bin], quota, lo, hi) if quota else []
                        in_bin = [in_bin[p] for p in sub]
                    if not in_bin:
                        continue
                    infos = [
                        (pairs[p], float(scores[p]), centrals[p].astype(np.float64)) for p in in_bin
                    ]
                    stem = bin_stem(scene.name, lo, hi)
                    _write_pickle(index / info_dir / f"{stem}.npz", _scene_info(scene, infos))
                    stems.append(stem)
                    all_scores.extend(scores[in_bin].tolist())
                    used.update(f for p in in_bin for f in pairs[p])
                frames = range(n_frames) if split == "train" else sorted(used)
                _write_megadepth_frames(out / split, scene, frames)
                frames_written += len(frames)
            (lists / list_name).write_text("".join(f"{stem}\n" for stem in stems))
            summary[split] = _summary(n_scenes, frames_written, all_scores)
            summary[split]["scene_infos"] = len(stems)
    finally:
        bar.close()
    return summary
