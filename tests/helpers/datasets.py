"""Writers of tiny ScanNet- and MegaDepth-format datasets in the real on-disk formats.

Shared by the tests/test_data_*.py files; it holds no tests.
Layouts follow docs/original.md#data-layout: ScanNet ``<root>/<scene>/{color/<i>.jpg, depth/<i>.png,
pose/<i>.txt}`` with a ``name``/``score`` scene npz, a list file and ``intrinsics.npz``; MegaDepth
``<root>/Undistorted_SfM/<scene>/images/*.jpg``, ``<root>/phoenix/.../depths/*.h5`` and a pickled
scene-info dict.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import h5py
import numpy as np

from tests.helpers import ROOT

# fx = fy = 577.87, cx = 319.5, cy = 239.5: the real ScanNet depth intrinsics
# (docs/original.md#scannet).
SCANNET_K = np.array([[577.87, 0.0, 319.5], [0.0, 577.87, 239.5], [0.0, 0.0, 1.0]])
# the generated synthetic ScanNet-format set (`data/`) and the scene the fault tests copy
SYNTHETIC = ROOT / "data/synthetic/scannet"
SCENE = "scene0000_00"
# The keys of a dataset item, in the order the datasets build them: the pair's geometry, then its
# names (docs/original.md#scannet); MegaDepth puts its images' scales between the two and its
# masks last (docs/original.md#megadepth).
PAIR_KEYS = ["image0", "depth0", "image1", "depth1", "T_0to1", "T_1to0", "K0", "K1"]
NAME_KEYS = ["dataset_name", "scene_id", "pair_id", "pair_names"]


def translation(x: float, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    """A 4x4 pose that translates by (x, y, z)."""
    pose = np.eye(4)
    pose[:3, 3] = (x, y, z)
    return pose


def write_image(path: Path, w: int, h: int, seed: int = 0, color: bool = True) -> None:
    """A random-texture jpg of ``w x h`` pixels (3-channel like the real exports)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    image = np.repeat(gray[..., None], 3, axis=2) if color else gray
    assert cv2.imwrite(str(path), image)


def write_scannet_scene(
    root: Path,
    scene: str = "scene0000_00",
    n_frames: int = 3,
    color_size: tuple[int, int] = (64, 48),
    depth_size: tuple[int, int] = (640, 480),
    depth_mm: int = 1500,
    camera_to_world: Sequence[np.ndarray] | None = None,
) -> Path:
    """Frames ``0 .. n_frames-1`` of one scene in the python SensReader export layout.

    Frame i's pose (camera-to-world) is ``camera_to_world[i]`` or a translation by ``(i, 0, 0)``;
    its depth is ``depth_mm`` everywhere (uint16 millimetres).
    """
    scene_dir = root / scene
    for i in range(n_frames):
        write_image(scene_dir / "color" / f"{i}.jpg", *color_size, seed=i)
        depth = np.full((depth_size[1], depth_size[0]), depth_mm, dtype=np.uint16)
        (scene_dir / "depth").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(scene_dir / "depth" / f"{i}.png"), depth)
        pose = camera_to_world[i] if camera_to_world is not None else translation(float(i))
        (scene_dir / "pose").mkdir(parents=True, exist_ok=True)
        np.savetxt(scene_dir / "pose" / f"{i}.txt", pose, fmt="%.6f")
    return scene_dir


def write_scannet_index(
    path: Path, rows: Sequence[Sequence[int]], scores: Sequence[float] | None
) -> Path:
    """A scene npz: ``name`` (P, 4) uint16 and, unless None, ``score`` (P,) float16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"name": np.asarray(rows, dtype=np.uint16).reshape(-1, 4)}
    if scores is not None:
        arrays["score"] = np.asarray(scores, dtype=np.float16)
    np.savez(path, **arrays)
    return path


def write_scannet_dataset(
    base: Path,
    scenes: Sequence[tuple[int, int]] = ((0, 0), (1, 0)),
    n_frames: int = 3,
    color_size: tuple[int, int] = (64, 48),
    depth_size: tuple[int, int] = (640, 480),
    scores: Sequence[float] = (0.3, 0.5, 0.9),
) -> dict[str, Path]:
    """A ScanNet-format set: scenes, one index npz per scene, a list file and intrinsics.

    Each scene's index holds the pairs (0, 1), (0, 2), (1, 2) with ``scores``.

    Returns:
        ``root``, ``npz_root``, ``list_path``, ``intrinsic_path`` and ``npz`` (the first index).
    """
    root = base / "train"
    npz_root = base / "index" / "scene_data" / "train"
    list_path = base / "index" / "scene_data" / "train_list" / "scannet_all.txt"
    intrinsics = {}
    names = []
    for scene_id, sub in scenes:
        scene = f"scene{scene_id:04d}_{sub:02d}"
        write_scannet_scene(root, scene, n_frames, color_size, depth_size)
        rows = [(scene_id, sub, a, b) for a, b in ((0, 1), (0, 2), (1, 2))]
        write_scannet_index(npz_root / f"{scene}.npz", rows, scores)
        intrinsics[scene] = SCANNET_K.reshape(9)  # stored as 9-vectors, like the real file
        names.append(f"{scene}.npz")
    list_path.parent.mkdir(parents=True, exist_ok=True)
    list_path.write_text("".join(f"{n} extra-token\n" for n in names))
    intrinsic_path = base / "index" / "intrinsics.npz"
    np.savez(intrinsic_path, **intrinsics)
    return {
        "root": root,
        "npz_root": npz_root,
        "list_path": list_path,
        "intrinsic_path": intrinsic_path,
        "npz": npz_root / names[0],
    }


def megadepth_K(w: int, h: int) -> np.ndarray:
    """Intrinsics at the original resolution: f = max(w, h), principal point at the centre."""
    f = float(max(w, h))
    return np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])


def write_megadepth_scene(
    root: Path,
    info_path: Path,
    scene: str = "0015",
    image_sizes: Sequence[tuple[int, int]] = ((100, 75), (60, 90), (80, 80)),
    pairs: Sequence[tuple[int, int, float]] = ((0, 1, 0.5), (1, 2, 0.2), (0, 2, 0.0)),
    depth_value: float = 2.0,
    protocol: int = 4,
) -> dict:
    """One MegaDepth scene (images, h5 depth) and its pickled scene-info dict.

    Image i has size ``image_sizes[i]`` (w, h), pose a translation by ``(i, 0, 0)`` and
    intrinsics :func:`megadepth_K`. A slot ``None`` is appended (unused image, as in real files).

    Returns:
        The scene-info dict that was pickled to ``info_path``.
    """
    image_paths, depth_paths, intrinsics, poses = [], [], [], []
    for i, (w, h) in enumerate(image_sizes):
        image_rel = f"Undistorted_SfM/{scene}/images/{i:04d}.jpg"
        depth_rel = f"phoenix/S6/zl548/MegaDepth_v1/{scene}/dense0/depths/{i:04d}.h5"
        write_image(root / image_rel, w, h, seed=i)
        (root / depth_rel).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(root / depth_rel, "w") as f:
            f.create_dataset("depth", data=np.full((h, w), depth_value, dtype=np.float32))
        image_paths.append(image_rel)
        depth_paths.append(depth_rel)
        intrinsics.append(megadepth_K(w, h))
        poses.append(np.linalg.inv(translation(float(i))))  # world-to-camera
    image_paths.append(None)
    depth_paths.append(None)
    intrinsics.append(np.eye(3))
    poses.append(np.eye(4))
    info = {
        "image_paths": np.array(image_paths, dtype=object),
        "depth_paths": np.array(depth_paths, dtype=object),
        "intrinsics": np.stack(intrinsics),
        "poses": np.stack(poses),
        "pair_infos": [((a, b), np.float64(score), np.zeros(4)) for a, b, score in pairs],
    }
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info_path.write_bytes(pickle.dumps(info, protocol=protocol))
    return info


def write_megadepth_dataset(base: Path, scenes: Sequence[str] = ("0015_0.1_0.3", "0022_0.1_0.3")):
    """A MegaDepth-format set: a root with phoenix/ and Undistorted_SfM/, scene infos, lists.

    Returns:
        ``root``, ``npz_root``, ``list_path`` and ``npz`` (the first scene info).
    """
    root = base / "train"
    npz_root = base / "index" / "scene_info_0.1_0.7"
    for stem in scenes:
        write_megadepth_scene(root, npz_root / f"{stem}.npz", scene=stem.split("_")[0])
    list_path = base / "index" / "trainvaltest_list" / "train_list.txt"
    list_path.parent.mkdir(parents=True, exist_ok=True)
    list_path.write_text("\n".join(scenes) + "\n")
    return {
        "root": root,
        "npz_root": npz_root,
        "list_path": list_path,
        "npz": npz_root / f"{scenes[0]}.npz",
    }


def scannet_copy(tmp_path: Path) -> dict[str, Path]:
    """A one-scene ScanNet-format training set: a real copy of a synthetic scene to break."""
    root = tmp_path / "train"
    shutil.copytree(SYNTHETIC / "train" / SCENE, root / SCENE)
    index = tmp_path / "index"
    (index / "train").mkdir(parents=True)
    shutil.copy(SYNTHETIC / "index/scene_data/train" / f"{SCENE}.npz", index / "train")
    listing = index / "train_list.txt"
    listing.write_text(f"{SCENE}.npz\n")
    return {"root": root, "npz": index / "train", "list": listing}
