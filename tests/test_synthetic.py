"""Tests of loftr.data.synthetic: exact geometry, the real on-disk formats, caching and the CLI.

Generated sets are tiny (a scene or two, a handful of frames) and written into tmp_path. The
geometry checks read the files back with plain numpy / cv2 / h5py / pickle, independently of the
generator and of the loaders, and then once more through the project's loaders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from loftr.data import synthetic as syn
from loftr.data.synthetic import __main__ as synthetic_cli
from loftr.errors import ConfigError, DataError
from tests.helpers.geometry import reprojection_agreement

TINY_SCANNET = {
    "train_scenes": 1,
    "frames_per_scene": 6,
    "test_scenes": 1,
    "test_frames_per_scene": 6,
    "test_pairs_per_scene": 3,
}
TINY_MEGADEPTH = {
    "train_scenes": 1,
    "frames_per_scene": 6,
    "test_scenes": 1,
    "test_frames_per_scene": 6,
    "test_pairs_per_scene": 3,
}
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# helpers: an independent reprojection check on arrays read from disk
# --------------------------------------------------------------------------------------------


def assert_item_reprojects(item: dict) -> None:
    """A loader item's depths, intrinsics and pose agree as `reprojection_agreement` checks."""
    agreement, covisible = reprojection_agreement(
        item["depth0"].numpy(),
        item["depth1"].numpy(),
        item["K0"].numpy(),
        item["K1"].numpy(),
        item["T_0to1"].double().numpy(),
    )
    assert covisible > 0 and agreement >= 0.95


def rotation_y(deg: float) -> np.ndarray:
    """(4, 4) rotation by ``deg`` degrees about the camera y axis."""
    a = np.deg2rad(deg)
    m = np.eye(4)
    m[0, 0], m[0, 2], m[2, 0], m[2, 2] = np.cos(a), np.sin(a), -np.sin(a), np.cos(a)
    return m


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by relative path."""
    return {
        str(rel): hashlib.sha256((folder / rel).read_bytes()).hexdigest()
        for rel in syn.iter_files(folder)
    }


def read_scannet_frame(scene_dir: Path, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth in metres (480, 640), world-to-camera (4, 4)) of a ScanNet-format frame."""
    depth = cv2.imread(str(scene_dir / "depth" / f"{frame}.png"), cv2.IMREAD_UNCHANGED)
    assert depth is not None and depth.dtype == np.uint16
    cam_to_world = np.loadtxt(scene_dir / "pose" / f"{frame}.txt")
    return depth.astype(np.float64) / 1000.0, np.linalg.inv(cam_to_world)


def read_scene_info(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scannet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn.ensure_synthetic(tmp_path_factory.mktemp("syn"), "scannet", seed=0, **TINY_SCANNET)


@pytest.fixture(scope="module")
def megadepth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    return syn.ensure_synthetic(root, "megadepth", seed=0, **TINY_MEGADEPTH)


@pytest.fixture(scope="module")
def grey_bank() -> syn.TextureBank:
    """A single flat grey texture: fast, and the image content does not matter for depth."""
    return syn.TextureBank(levels=(np.full((1, 8, 8), 0.5, np.float32),), names=("grey",))


def single_quad_scene(
    bank: syn.TextureBank, origin, axis_u, axis_v, size, outward=(0.0, 0.0, 0.0)
) -> syn.Scene:
    return syn.Scene(
        kind="outdoor",
        origin=np.asarray([origin], np.float64),
        axis_u=np.asarray([axis_u], np.float64),
        axis_v=np.asarray([axis_v], np.float64),
        size=np.asarray([size], np.float64),
        texture=np.zeros(1, np.int64),
        texels_per_metre=np.ones(1),
        tex_offset=np.zeros((1, 2)),
        albedo=np.ones(1),
        outward=np.asarray([outward], np.float64),
        light=np.array([0.0, 0.0, 1.0]),
        bank=bank,
    )


# --------------------------------------------------------------------------------------------
# renderer and cameras: hand-worked numbers
# --------------------------------------------------------------------------------------------

K_TOY = np.array([[100.0, 0.0, 100.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])


def test_fronto_parallel_rectangle_has_exact_depth_and_footprint(grey_bank):
    # x in [-1, 1], y in [-0.5, 0.5] at z = 2 m, identity pose: pixels x = 100 + 50 X, so the
    # rectangle covers columns 50..150 and rows 25..75 (inclusive), 101 x 51 pixels.
    scene = single_quad_scene(grey_bank, (-1.0, -0.5, 2.0), (1, 0, 0), (0, 1, 0), (2.0, 1.0))
    view = syn.render_view(scene, K_TOY, np.eye(4), 201, 101)
    assert view.depth.shape == (101, 201) and view.depth.dtype == np.float32
    assert view.image.shape == (101, 201) and view.image.dtype == np.uint8
    hit = view.depth > 0
    assert hit.sum() == 101 * 51
    assert hit[25:76, 50:151].all()
    np.testing.assert_array_equal(view.depth[hit], np.float32(2.0))
    # without a texture or light the grey value is 0.5 * shade; the sky elsewhere is different
    assert view.image[50, 100] != view.image[0, 0]


def test_slanted_plane_depth_follows_the_ray_plane_intersection(grey_bank):
    # Plane z = 2 + 0.5 X through (0, 0, 2); the ray (rx, ry, 1) hits it at z = 2 / (1 - 0.5 rx).
    u = np.array([1.0, 0.0, 0.5]) / np.sqrt(1.25)
    # X in [-3, 5] (z from 0.5 to 4.5), Y in [-3, 3]: covers the whole 201 x 101 view, whose
    # rays have rx in [-1, 1] and so hit it at z in [1.33, 4] and X = rx z in [-1.33, 4]
    scene = single_quad_scene(grey_bank, (-3.0, -3.0, 0.5), u, (0, 1, 0), (8 * np.sqrt(1.25), 6))
    view = syn.render_view(scene, K_TOY, np.eye(4), 201, 101)
    ys, xs = np.nonzero(view.depth > 0)
    assert len(xs) == 201 * 101
    rx = (xs - 100.0) / 100.0
    np.testing.assert_allclose(view.depth[ys, xs], 2.0 / (1.0 - 0.5 * rx), rtol=1e-6)
    # column 100 (rx = 0) is at exactly 2 m; column 180 (rx = 0.8) at 2 / 0.6 = 3.333 m
    assert view.depth[50, 100] == pytest.approx(2.0, rel=1e-6)
    assert view.depth[50, 180] == pytest.approx(2.0 / 0.6, rel=1e-6)


def test_nearest_surface_wins_and_back_faces_are_culled(grey_bank):
    near = single_quad_scene(grey_bank, (-1.0, -0.5, 2.0), (1, 0, 0), (0, 1, 0), (2.0, 1.0))
    scene = dataclasses.replace(
        near,
        origin=np.array([[-1.0, -0.5, 2.0], [-3.0, -3.0, 5.0]]),
        axis_u=np.array([[1.0, 0, 0], [1.0, 0, 0]]),
        axis_v=np.array([[0, 1.0, 0], [0, 1.0, 0]]),
        size=np.array([[2.0, 1.0], [6.0, 6.0]]),
        texture=np.zeros(2, np.int64),
        texels_per_metre=np.ones(2),
        tex_offset=np.zeros((2, 2)),
        albedo=np.ones(2),
        # the near rectangle is one-sided and faces away from the camera at first
        outward=np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
    )
    view = syn.render_view(scene, K_TOY, np.eye(4), 201, 101)
    assert view.depth[50, 100] == pytest.approx(5.0)  # culled: the far wall shows through
    facing = dataclasses.replace(scene, outward=np.array([[0, 0, -1.0], [0, 0, 0.0]]))
    view = syn.render_view(facing, K_TOY, np.eye(4), 201, 101)
    assert view.depth[50, 100] == pytest.approx(2.0)
    assert view.depth[50, 45] == pytest.approx(5.0)  # beside the near one: X = -0.55 * 5 m


def test_camera_pose_axes_follow_opencv_in_a_z_up_world():
    # At (0, 0, 1) looking along +x: right is -y, down is -z.
    pose = syn.camera_pose((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), roll=0.0)

    def to_cam(p):
        return (pose @ np.array([*p, 1.0]))[:3]

    np.testing.assert_allclose(to_cam((5.0, 0.0, 1.0)), (0.0, 0.0, 5.0), atol=1e-12)
    np.testing.assert_allclose(to_cam((5.0, -1.0, 1.0)), (1.0, 0.0, 5.0), atol=1e-12)
    np.testing.assert_allclose(to_cam((5.0, 0.0, 0.0)), (0.0, 1.0, 5.0), atol=1e-12)
    np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-12)
    # a 90 degree roll turns the right axis into the down axis
    rolled = syn.camera_pose((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), roll=np.pi / 2)
    np.testing.assert_allclose((rolled @ [5.0, -1.0, 1.0, 1.0])[:3], (0.0, -1.0, 5.0), atol=1e-12)


def test_overlap_score_of_identical_and_disjoint_views(grey_bank):
    scene = single_quad_scene(grey_bank, (-10.0, -10.0, 3.0), (1, 0, 0), (0, 1, 0), (20.0, 20.0))
    view = syn.render_view(scene, K_TOY, np.eye(4), 201, 101)
    assert syn.overlap_score(view.depth, view.depth, K_TOY, K_TOY, np.eye(4)) == 1.0
    # camera 1 turned 180 degrees: nothing of image 0 is in front of it
    assert syn.overlap_score(view.depth, view.depth, K_TOY, K_TOY, rotation_y(180.0)) == 0.0
    # camera 1 shifted right by half the view width at 3 m (3 m * 100 px / 100 px = 3 m):
    # image 0's right half is co-visible, i.e. about half of the pixels
    shift = np.eye(4)
    shift[0, 3] = -3.0
    score = syn.overlap_score(view.depth, view.depth, K_TOY, K_TOY, shift, stride=1)
    assert score == pytest.approx(101 / 201, abs=0.01)


def test_megadepth_intrinsics_cover_several_sizes_and_both_orientations():
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(200):
        k, w, h = syn.megadepth_intrinsics(rng, fov=60.0)
        sizes.add((w, h))
        # fov across the long side: f = (long / 2) / tan(30 deg)
        assert k[0, 0] == pytest.approx(0.5 * max(w, h) / np.tan(np.deg2rad(30.0)))
        assert abs(k[0, 2] - (w - 1) / 2) <= 0.02 * w and abs(k[1, 2] - (h - 1) / 2) <= 0.02 * h
    assert sizes == set(syn.MEGADEPTH_IMAGE_SIZES)
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)


# --------------------------------------------------------------------------------------------
# on-disk formats
# --------------------------------------------------------------------------------------------


def test_scannet_layout_and_index_dtypes(scannet_root):
    index = scannet_root / "index"
    scene = scannet_root / "train" / "scene0000_00"
    # python SensReader export: <int>.jpg, not zero-padded; frame ids step by 10
    frames = sorted(int(p.stem) for p in (scene / "color").glob("*.jpg"))
    assert frames == [0, 10, 20, 30, 40, 50]
    for sub, ext in (("color", "jpg"), ("depth", "png"), ("pose", "txt")):
        assert sorted(p.name for p in (scene / sub).iterdir()) == sorted(
            f"{f}.{ext}" for f in frames
        )
    image = cv2.imread(str(scene / "color" / "10.jpg"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (480, 640)
    depth = cv2.imread(str(scene / "depth" / "10.png"), cv2.IMREAD_UNCHANGED)
    assert depth.shape == (480, 640) and depth.dtype == np.uint16
    assert (depth > 0).all() and depth.max() < 10000  # a closed room, metres -> millimetres
    pose = np.loadtxt(scene / "pose" / "10.txt")
    assert pose.shape == (4, 4)
    np.testing.assert_allclose(pose[3], [0, 0, 0, 1])
    np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-7)

    train_npz = index / "scene_data" / "train" / "scene0000_00.npz"
    assert zipfile.is_zipfile(train_npz)
    with np.load(train_npz, allow_pickle=False) as data:
        assert sorted(data.files) == ["name", "score"]
        name, score = data["name"], data["score"]
    assert name.dtype == np.uint16 and name.ndim == 2 and name.shape[1] == 4
    assert score.dtype == np.float16 and score.shape == (len(name),)
    assert len(name) > 0
    assert (name[:, 0] == 0).all() and (name[:, 1] == 0).all()
    assert set(name[:, 2:].ravel()) <= set(frames)
    assert ((score >= 0.1) & (score <= 0.9)).all()
    assert (index / "scene_data" / "train_list" / "synthetic_train.txt").read_text() == (
        "scene0000_00.npz\n"
    )
    with np.load(index / "intrinsics.npz", allow_pickle=False) as data:
        assert data.files == ["scene0000_00"]
        k = data["scene0000_00"]
    assert k.shape == (9,) and k.dtype == np.float64
    assert k[0] == k[4] and k[0] in syn.SCANNET_FOCALS
    np.testing.assert_allclose(k[[2, 5, 8]], [319.5, 239.5, 1.0])

    # test/val set: ScanNet-1500 layout
    with np.load(index / "scene_data" / "test" / "test.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["name", "rel_pose", "score"]
        tname, tscore, rel = data["name"], data["score"], data["rel_pose"]
    assert tname.dtype == np.uint16 and tname.shape == (3, 4)
    assert tscore.dtype == np.float16 and rel.shape == (3, 12)
    assert (tname[:, 0] == 707).all()
    assert (index / "scene_data" / "test_list" / "synthetic_test.txt").read_text() == "test.npz\n"
    with np.load(index / "intrinsics_test.npz", allow_pickle=False) as data:
        assert data.files == ["scene0707_00"] and data["scene0707_00"].shape == (3, 3)
    test_scene = scannet_root / "test" / "scene0707_00"
    used = set(tname[:, 2:].ravel().tolist())
    assert {int(p.stem) for p in (test_scene / "color").glob("*.jpg")} == used
    assert (test_scene / "intrinsic" / "intrinsic_depth.txt").is_file()
    # rel_pose is T_0to1[:3, :4] of each pair, as read back from the pose files
    for row, rel_row in zip(tname, rel, strict=True):
        _, w2c0 = read_scannet_frame(test_scene, int(row[2]))
        _, w2c1 = read_scannet_frame(test_scene, int(row[3]))
        np.testing.assert_allclose((w2c1 @ np.linalg.inv(w2c0))[:3].ravel(), rel_row, atol=1e-5)


def test_megadepth_layout_and_scene_info(megadepth_root):
    index = megadepth_root / "index"
    infos = sorted((index / "scene_info_0.1_0.7").glob("*.npz"))
    assert infos, "no training scene info written"
    stems = (index / "trainvaltest_list" / "train_list.txt").read_text().split()
    assert stems == [p.stem for p in infos]
    val_stems = (index / "trainvaltest_list" / "val_list.txt").read_text().split()
    assert val_stems == sorted(p.stem for p in (index / "scene_info_val_1500").glob("*.npz"))
    assert not set(s[:4] for s in stems) & set(s[:4] for s in val_stems)  # different scenes
    for path in infos + [index / "scene_info_val_1500" / f"{s}.npz" for s in val_stems]:
        raw = path.read_bytes()
        assert raw[:1] == b"\x80" and not zipfile.is_zipfile(path)  # a pickle,
        # docs/original.md#megadepth
        info = np.load(path, allow_pickle=True)  # what the original does: falls back to pickle
        assert isinstance(info, dict)
        assert sorted(info) == ["depth_paths", "image_paths", "intrinsics", "pair_infos", "poses"]
        n = len(info["image_paths"])
        assert info["image_paths"].dtype == object and info["depth_paths"].dtype == object
        assert info["intrinsics"].shape == (n, 3, 3) and info["poses"].shape == (n, 4, 4)
        assert isinstance(info["pair_infos"], list) and info["pair_infos"]
        scene, lo, hi = path.stem.split("_")
        used = set()
        for (i0, i1), overlap, central in info["pair_infos"]:
            assert isinstance(i0, int) and isinstance(i1, int) and isinstance(overlap, float)
            assert float(lo) <= overlap < float(hi)
            assert isinstance(central, np.ndarray) and central.shape == (4,)
            used |= {i0, i1}
        for i in range(n):
            if i in used:
                assert (
                    info["image_paths"][i] == f"Undistorted_SfM/{scene}/images/{scene}_{i:04d}.jpg"
                )
                assert info["depth_paths"][i] == (
                    f"phoenix/S6/zl548/MegaDepth_v1/{scene}/dense0/depths/{scene}_{i:04d}.h5"
                )
            else:
                assert info["image_paths"][i] is None and info["depth_paths"][i] is None
    # images and depth maps at the same original resolution, K per image
    info = read_scene_info(infos[0])
    (i0, _), _, _ = info["pair_infos"][0]
    split_root = megadepth_root / "train"
    image = cv2.imread(str(split_root / info["image_paths"][i0]), cv2.IMREAD_UNCHANGED)
    with h5py.File(split_root / info["depth_paths"][i0], "r") as f:
        depth = f["depth"][()]
    assert depth.dtype == np.float32 and depth.shape == image.shape
    assert (image.shape[1], image.shape[0]) in syn.MEGADEPTH_IMAGE_SIZES
    k = info["intrinsics"][i0]
    assert abs(k[0, 2] - image.shape[1] / 2) < 0.03 * image.shape[1]
    valid = depth[depth > 0]
    assert 2.0 < valid.min() and valid.max() < 120.0  # outdoor metres; sky has no depth


# --------------------------------------------------------------------------------------------
# exact geometry, read back from disk
# --------------------------------------------------------------------------------------------


def test_scannet_pairs_are_geometrically_exact(scannet_root):
    index = scannet_root / "index"
    k = np.load(index / "intrinsics.npz")["scene0000_00"].reshape(3, 3)
    name = np.load(index / "scene_data" / "train" / "scene0000_00.npz")["name"]
    scene = scannet_root / "train" / "scene0000_00"
    checked = 0
    for _, _, f0, f1 in name:
        d0, w2c0 = read_scannet_frame(scene, int(f0))
        d1, w2c1 = read_scannet_frame(scene, int(f1))
        t_0to1 = w2c1 @ np.linalg.inv(w2c0)
        agreement, covisible = reprojection_agreement(d0, d1, k, k, t_0to1)
        assert covisible > 0.05 * d0.size
        assert agreement >= 0.95, (f0, f1, agreement)
        # the check has teeth: with the usual convention mix-ups far fewer pixels agree
        for wrong_t in (np.linalg.inv(t_0to1), np.linalg.inv(w2c1) @ w2c0):
            wrong, wrong_covisible = reprojection_agreement(d0, d1, k, k, wrong_t)
            assert wrong * wrong_covisible < 0.5 * agreement * covisible
        checked += 1
    assert checked == len(name) > 0


def test_megadepth_pairs_are_geometrically_exact(megadepth_root):
    checked = 0
    for split, folder in (("train", "scene_info_0.1_0.7"), ("test", "scene_info_val_1500")):
        for path in sorted((megadepth_root / "index" / folder).glob("*.npz")):
            info = read_scene_info(path)
            for (i0, i1), _, _ in info["pair_infos"]:
                depths = []
                for i in (i0, i1):
                    with h5py.File(megadepth_root / split / info["depth_paths"][i], "r") as f:
                        depths.append(f["depth"][()])
                k0, k1 = info["intrinsics"][i0], info["intrinsics"][i1]
                t_0to1 = info["poses"][i1] @ np.linalg.inv(info["poses"][i0])
                agreement, covisible = reprojection_agreement(depths[0], depths[1], k0, k1, t_0to1)
                assert covisible > 0.02 * depths[0].size
                assert agreement >= 0.95, (path.name, i0, i1, agreement)
                # with the usual convention mix-ups far fewer pixels agree
                poses = info["poses"]
                for wrong_t in (np.linalg.inv(t_0to1), np.linalg.inv(poses[i1]) @ poses[i0]):
                    wrong = reprojection_agreement(depths[0], depths[1], k0, k1, wrong_t)
                    assert wrong[0] * wrong[1] < 0.5 * agreement * covisible
                checked += 1
    assert checked > 0


def test_scannet_loader_reads_the_synthetic_set(scannet_root):
    scannet = pytest.importorskip("loftr.data.scannet")
    index = scannet_root / "index"
    train = scannet.ScanNetDataset(
        scannet_root / "train",
        index / "scene_data" / "train" / "scene0000_00.npz",
        index / "intrinsics.npz",
        mode="train",
        min_overlap_score=0.0,
    )
    assert len(train) == len(np.load(index / "scene_data" / "train" / "scene0000_00.npz")["name"])
    val = scannet.ScanNetDataset(
        scannet_root / "test",
        index / "scene_data" / "test" / "test.npz",
        index / "intrinsics_test.npz",
        mode="val",
    )
    assert len(val) == 3
    for ds in (train, val):
        for i in range(len(ds)):
            item = ds[i]
            assert item["image0"].shape == (1, 480, 640) and item["depth0"].shape == (480, 640)
            assert_item_reprojects(item)


def test_megadepth_loader_reads_the_synthetic_set(megadepth_root):
    megadepth = pytest.importorskip("loftr.data.megadepth")
    checked = 0
    for split, folder, mode in (
        ("train", "scene_info_0.1_0.7", "train"),
        ("test", "scene_info_val_1500", "val"),
    ):
        for path in sorted((megadepth_root / "index" / folder).glob("*.npz")):
            ds = megadepth.MegaDepthDataset(
                megadepth_root / split, path, mode=mode, min_overlap_score=0.0, img_resize=320
            )
            assert len(ds) == len(read_scene_info(path)["pair_infos"])
            item = ds[0]
            assert item["image0"].shape == (1, 320, 320) and item["depth0"].shape == (2000, 2000)
            assert_item_reprojects(item)
            checked += 1
    assert checked > 0


# --------------------------------------------------------------------------------------------
# overlap spread
# --------------------------------------------------------------------------------------------


def test_overlap_scores_spread_over_a_default_size_scene(tmp_path):
    # One scene of the default length per format: the pairs' overlaps span about 0.1 to 0.9
    # (ScanNet; MegaDepth's index stops at 0.7 like the real one) and fill every bin.
    root = syn.ensure_synthetic(
        tmp_path,
        "scannet",
        train_scenes=1,
        test_scenes=1,
        test_frames_per_scene=2,
        test_pairs_per_scene=1,
    )
    score = np.load(root / "index" / "scene_data" / "train" / "scene0000_00.npz")["score"]
    score = score.astype(np.float64)
    assert score.min() < 0.15 and score.max() > 0.8
    counts = np.histogram(score, bins=[0.1, 0.3, 0.5, 0.7, 0.9])[0]
    assert (counts >= 5).all(), counts
    assert (score > 0.4).sum() >= 20  # what training keeps (min_overlap_score 0.4)

    root = syn.ensure_synthetic(
        tmp_path,
        "megadepth",
        train_scenes=1,
        test_scenes=1,
        test_frames_per_scene=2,
        test_pairs_per_scene=1,
    )
    for lo, hi in syn.MEGADEPTH_BINS:
        info = read_scene_info(root / "index" / "scene_info_0.1_0.7" / f"0000_{lo}_{hi}.npz")
        overlaps = [p[1] for p in info["pair_infos"]]
        assert len(overlaps) >= 5 and lo <= min(overlaps) and max(overlaps) < hi


@pytest.mark.slow
def test_default_sets_generate_quickly_and_span_the_overlap_range(tmp_path):
    """The full default sets (what `python -m loftr.train` generates): spread and wall time."""
    for fmt in syn.FORMATS:
        start = time.perf_counter()
        root = syn.ensure_synthetic(tmp_path, fmt)
        elapsed = time.perf_counter() - start
        written = syn.read_manifest(root)["written"]
        print(f"{fmt}: {elapsed:.1f} s, {written}")
        assert written["train"]["scenes"] == syn.DEFAULT_SIZES[fmt]["train_scenes"]
        assert written["train"]["score_min"] < 0.15
        assert written["train"]["score_max"] > (0.85 if fmt == "scannet" else 0.65)
        assert written["test"]["pairs"] >= 0.8 * (
            syn.DEFAULT_SIZES[fmt]["test_scenes"] * syn.DEFAULT_SIZES[fmt]["test_pairs_per_scene"]
        )
        assert elapsed < 180  # generous for a shared 2-core machine; about 20-40 s alone
        # every 10th training pair is geometrically exact
        pairs = list(iter_pairs(root, fmt))
        assert len(pairs) == written["train"]["pairs"] + written["test"]["pairs"]
        for depth0, depth1, k0, k1, t_0to1 in (load_pair(root, fmt, p) for p in pairs[::10]):
            agreement, covisible = reprojection_agreement(depth0, depth1, k0, k1, t_0to1)
            assert covisible > 0 and agreement >= 0.95


def iter_pairs(root: Path, fmt: str):
    """(split, scene or scene-info path, pair) of every pair of a generated set."""
    if fmt == "scannet":
        for split in ("train", "test"):
            for path in sorted((root / "index" / "scene_data" / split).glob("*.npz")):
                for row in np.load(path)["name"]:
                    yield split, root / "index", tuple(int(v) for v in row)
    else:
        for split, folder in (("train", "scene_info_0.1_0.7"), ("test", "scene_info_val_1500")):
            for path in sorted((root / "index" / folder).glob("*.npz")):
                for pair_info in read_scene_info(path)["pair_infos"]:
                    yield split, path, pair_info[0]


def load_pair(root: Path, fmt: str, pair: tuple) -> tuple[np.ndarray, ...]:
    """(depth0, depth1, K0, K1, T_0to1) of a pair from ``iter_pairs``, read from disk."""
    split, where, ids = pair
    if fmt == "scannet":
        scene_id, sub, f0, f1 = ids
        scene = f"scene{scene_id:04d}_{sub:02d}"
        intr = "intrinsics.npz" if split == "train" else "intrinsics_test.npz"
        k = np.load(where / intr)[scene].reshape(3, 3)
        d0, w2c0 = read_scannet_frame(root / split / scene, f0)
        d1, w2c1 = read_scannet_frame(root / split / scene, f1)
        return d0, d1, k, k, w2c1 @ np.linalg.inv(w2c0)
    info = read_scene_info(where)
    i0, i1 = ids
    depths = []
    for i in (i0, i1):
        with h5py.File(root / split / info["depth_paths"][i], "r") as f:
            depths.append(f["depth"][()])
    k0, k1 = info["intrinsics"][i0], info["intrinsics"][i1]
    return depths[0], depths[1], k0, k1, info["poses"][i1] @ np.linalg.inv(info["poses"][i0])


# --------------------------------------------------------------------------------------------
# determinism and caching
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", syn.FORMATS)
def test_same_seed_same_bytes_other_seed_other_bytes(
    fmt, tmp_path, scannet_root, megadepth_root, monkeypatch
):
    reference = scannet_root if fmt == "scannet" else megadepth_root
    sizes = TINY_SCANNET if fmt == "scannet" else TINY_MEGADEPTH
    # the fixture rendered on RENDER_THREADS threads; one thread gives the same bytes
    monkeypatch.setattr(syn.writers, "RENDER_THREADS", 1 if syn.writers.RENDER_THREADS > 1 else 2)
    again = syn.ensure_synthetic(tmp_path / "again", fmt, seed=0, **sizes)
    other = syn.ensure_synthetic(tmp_path / "other", fmt, seed=1, **sizes)
    ref_hashes = tree_hashes(reference)
    assert len(ref_hashes) > 10
    assert tree_hashes(again) == ref_hashes
    other_hashes = tree_hashes(other)
    images = [p for p in ref_hashes if p.endswith(".jpg")]
    assert images
    differing = [p for p in images if other_hashes.get(p) != ref_hashes[p]]
    assert len(differing) == len(images)


def fake_writer(calls: list):
    def write(out: Path, seed: int, sizes: dict, progress: bool = False) -> dict:
        calls.append((seed, dict(sizes)))
        (out / "marker.txt").write_text(f"seed {seed}\n")
        return {"train": {"scenes": sizes["train_scenes"]}}

    return write


def test_ensure_synthetic_reuses_a_matching_set_and_replaces_a_stale_one(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(syn.cache, "write_scannet", fake_writer(calls))
    path = syn.ensure_synthetic(tmp_path, "scannet", seed=3, train_scenes=2)
    assert path == tmp_path / "scannet" and (path / "marker.txt").read_text() == "seed 3\n"
    manifest = syn.read_manifest(path)
    assert manifest["seed"] == 3 and manifest["sizes"]["train_scenes"] == 2
    assert manifest["sizes"]["frames_per_scene"] == syn.DEFAULT_SIZES["scannet"]["frames_per_scene"]
    assert manifest["version"] == syn.GENERATOR_VERSION
    assert syn.ensure_synthetic(tmp_path, "scannet", seed=3, train_scenes=2) == path
    assert len(calls) == 1  # reused
    syn.ensure_synthetic(tmp_path, "scannet", seed=4, train_scenes=2)
    syn.ensure_synthetic(tmp_path, "scannet", seed=4, train_scenes=3)
    assert [c[0] for c in calls] == [3, 4, 4] and calls[-1][1]["train_scenes"] == 3
    assert (path / "marker.txt").read_text() == "seed 4\n"
    syn.ensure_synthetic(tmp_path, "scannet", seed=4, train_scenes=3, force=True)
    assert len(calls) == 4 and calls[-1] == calls[-2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scannet"]  # no temporary leftovers


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(out: Path, seed: int, sizes: dict, progress: bool = False) -> dict:
        (out / "train").mkdir()
        (out / "train" / "half.jpg").write_bytes(b"...")
        raise KeyboardInterrupt

    monkeypatch.setattr(syn.cache, "write_megadepth", broken)
    with pytest.raises(KeyboardInterrupt):
        syn.ensure_synthetic(tmp_path, "megadepth")
    assert list(tmp_path.iterdir()) == []
    # a previous complete set survives a failed regeneration with other settings
    monkeypatch.setattr(syn.cache, "write_megadepth", fake_writer([]))
    path = syn.ensure_synthetic(tmp_path, "megadepth", seed=0)
    monkeypatch.setattr(syn.cache, "write_megadepth", broken)
    with pytest.raises(KeyboardInterrupt):
        syn.ensure_synthetic(tmp_path, "megadepth", seed=1)
    assert syn.read_manifest(path)["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["megadepth"]


def test_a_folder_that_is_not_a_synthetic_set_is_never_touched(tmp_path):
    real = tmp_path / "scannet"
    (real / "train").mkdir(parents=True)
    (real / "train" / "precious.jpg").write_bytes(b"real data")
    with pytest.raises(DataError, match=r"scannet.*synthetic_manifest\.json"):
        syn.ensure_synthetic(tmp_path, "scannet")
    assert (real / "train" / "precious.jpg").read_bytes() == b"real data"


def test_bad_format_and_sizes_raise_config_errors():
    with pytest.raises(ConfigError, match="format='scanet'"):
        syn.resolve_sizes("scanet")
    with pytest.raises(ConfigError, match="'frames'"):
        syn.resolve_sizes("scannet", {"frames": 3})
    with pytest.raises(ConfigError, match="frames_per_scene=1 .* >= 2"):
        syn.resolve_sizes("megadepth", {"frames_per_scene": 1})
    with pytest.raises(ConfigError, match="train_scenes=2.5"):
        syn.resolve_sizes("megadepth", {"train_scenes": 2.5})
    assert syn.resolve_sizes("scannet", {"train_scenes": None}) == syn.DEFAULT_SIZES["scannet"]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "loftr.data.synthetic", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_help_lists_the_options():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for option in (
        "--root",
        "--format",
        "--seed",
        "--train-scenes",
        "--frames-per-scene",
        "--test-scenes",
        "--test-frames-per-scene",
        "--test-pairs-per-scene",
    ):
        assert option in result.stdout


def test_cli_reports_bad_sizes_without_a_traceback(tmp_path, capsys):
    assert synthetic_cli.main(["--root", str(tmp_path), "--frames-per-scene", "1"]) == 2
    assert "frames_per_scene=1 must be an integer >= 2" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_tiny_set_and_reports_it(tmp_path):
    args = ["--root", str(tmp_path), "--format", "scannet", "--seed", "2", "--train-scenes", "1",
            "--frames-per-scene", "3", "--test-scenes", "1", "--test-frames-per-scene", "3",
            "--test-pairs-per-scene", "1"]  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "scannet"
    assert "scannet: wrote in" in result.stdout and str(root) in result.stdout
    assert "train: 1 scenes, 3 frames" in result.stdout
    assert "synthetic scannet" in result.stderr  # the progress bar
    for rel in (
        "train/scene0000_00/color/20.jpg",
        "train/scene0000_00/depth/20.png",
        "train/scene0000_00/pose/20.txt",
        "index/scene_data/train/scene0000_00.npz",
        "index/scene_data/train_list/synthetic_train.txt",
        "index/scene_data/test/test.npz",
        "index/scene_data/test_list/synthetic_test.txt",
        "index/intrinsics.npz",
        "index/intrinsics_test.npz",
        syn.MANIFEST_NAME,
    ):
        assert (root / rel).is_file(), rel
    assert syn.read_manifest(root)["seed"] == 2
    again = run_cli(*args)
    assert again.returncode == 0 and "scannet: reused" in again.stdout


# --------------------------------------------------------------------------------------------
# what a matcher can learn from: photographs, patterns, occlusion, held-out scenes
# --------------------------------------------------------------------------------------------


def periodicity(texture: np.ndarray, min_shift: float = 16.0, sigma: float = 8.0) -> float:
    """Highest circular autocorrelation of a texture's detail at a shift of ``min_shift`` texels
    or more: about 1 for a pattern that repeats itself inside the tile, near 0 for noise.

    The detail is the texture without its coarse shading (a Gaussian high-pass of ``sigma``
    texels, done in the Fourier domain), so smooth gradients do not count as repetition.
    """
    n = texture.shape[0]
    freq = np.fft.fftfreq(n)
    high_pass = 1.0 - np.exp(-2.0 * (np.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq**2))
    spectrum = np.fft.fft2(texture - texture.mean()) * high_pass
    corr = np.fft.fftshift(np.fft.ifft2(np.abs(spectrum) ** 2).real)
    corr /= corr[n // 2, n // 2]
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    return float(corr[np.hypot(yy, xx) >= min_shift].max())


def test_procedural_textures_do_not_repeat_themselves():
    bank = syn.make_texture_bank(0)
    procedural = [i for i, name in enumerate(bank.names) if "/" not in name]
    assert len(procedural) == syn.textures.N_PROCEDURAL_TEXTURES
    kinds = {bank.names[i].rstrip("0123456789") for i in procedural}
    assert kinds == set(syn.textures.PROCEDURAL_KINDS)
    for i in procedural:
        assert periodicity(bank.levels[0][i]) < 0.3, bank.names[i]
    # the measure has teeth: the checkerboards, stripes and tile grids the bank used to hold
    yy, xx = np.mgrid[0:512, 0:512]
    checker = (((xx // 64) + (yy // 64)) % 2).astype(np.float64)
    stripes = np.sign(np.sin(2 * np.pi * (5 * xx + 3 * yy) / 512))
    tiles = np.where(((xx % 64) < 3) | ((yy % 64) < 3), 0.0, 1.0)
    tiles += 0.3 * np.random.default_rng(0).random(tiles.shape)
    for pattern in (checker, stripes, tiles):
        assert periodicity(pattern) > 0.8
    # photographs dominate the bank
    assert len(bank.names) - len(procedural) >= 4 * len(procedural)


def test_held_out_photographs_never_texture_a_scene(monkeypatch):
    from loftr.data import photos

    assert set(photos.TRAIN_PHOTOS).isdisjoint(photos.HELDOUT_PHOTOS)
    assert set(photos.TRAIN_PHOTOS) | set(photos.HELDOUT_PHOTOS) == set(photos.PHOTO_SOURCES)
    assert len(photos.HELDOUT_PHOTOS) >= 5
    loaded: list[str] = []

    def recording_load(name: str) -> np.ndarray:
        loaded.append(name)
        return photos.load_photo(name)

    monkeypatch.setattr(syn.textures, "load_photo", recording_load)
    bank = syn.make_texture_bank(3, size=64)
    assert sorted(set(loaded)) == sorted(photos.TRAIN_PHOTOS)
    sources = {name.split("/")[0] for name in bank.names if "/" in name}
    assert sources == set(photos.TRAIN_PHOTOS)
    for name in photos.PHOTO_SOURCES:  # every listed photograph ships with an installed package
        image = photos.load_photo(name)
        assert image.dtype == np.uint8 and min(image.shape[:2]) >= 150, name


def occluded_share(depth0, depth1, K0, K1, T_0to1) -> float:
    """Share of the image-0 points that land inside image 1, in front of it, but lie more than
    5 % behind image 1's surface there: hidden by something nearer."""
    ys, xs = np.nonzero(depth0 > 0)
    z0 = depth0[ys, xs].astype(np.float64)
    pts0 = np.linalg.inv(K0) @ np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64) * z0
    pts1 = T_0to1[:3, :3] @ pts0 + T_0to1[:3, 3:]
    front = pts1[2] > 0.05
    proj = K1 @ (pts1[:, front] / pts1[2, front])
    u, v = np.rint(proj[0]).astype(np.int64), np.rint(proj[1]).astype(np.int64)
    h1, w1 = depth1.shape
    inside = (u >= 0) & (u < w1) & (v >= 0) & (v < h1)
    z1 = pts1[2, front][inside]
    d1 = depth1[v[inside], u[inside]]
    seen = d1 > 0
    return float(np.mean(z1[seen] > 1.05 * d1[seen])) if seen.any() else 0.0


@pytest.mark.parametrize("fmt", syn.FORMATS)
def test_depth_warped_pairs_see_real_occlusion(fmt, scannet_root, megadepth_root):
    root = scannet_root if fmt == "scannet" else megadepth_root
    shares = [occluded_share(*load_pair(root, fmt, pair)) for pair in iter_pairs(root, fmt)]
    assert len(shares) >= 3
    # most pairs have part of one view hidden in the other, some of them a good part
    assert np.mean(np.array(shares) > 0.005) >= 0.5, shares
    assert max(shares) > 0.03, shares


def test_occluders_stand_in_view_and_clear_of_every_camera(grey_bank, monkeypatch):
    k = K_TOY.copy()  # 201 x 101 pixels, 90 degrees across: the geometry, not the detail
    coverage = []
    for index in range(4):
        rng = np.random.default_rng([9, index])
        room = syn.scenes.random_room(rng)
        poses = syn.cameras.indoor_trajectories(rng, room, 12)
        centres, _ = syn.scenes.camera_footprints(poses)
        np.testing.assert_allclose(centres, [np.linalg.inv(p)[:2, 3] for p in poses])
        scene = syn.indoor_scene(np.random.default_rng(1), grey_bank, room, poses)
        with monkeypatch.context() as patch:  # the same room without its occluders (drawn last)
            patch.setattr(syn.scenes, "ROOM_OCCLUDERS", (0, 1))
            bare = syn.indoor_scene(np.random.default_rng(1), grey_bank, room, poses)
        n = bare.num_quads
        assert scene.num_quads > n
        np.testing.assert_array_equal(scene.origin[:n], bare.origin[:n])
        for pose in poses:
            depth = syn.render_view(scene, k, pose, 201, 101).depth
            assert (depth > 0).all()  # a closed room, and no camera inside a box
            assert depth.min() > 0.1  # no camera grazes an object
            bare_depth = syn.render_view(bare, k, pose, 201, 101).depth
            coverage.append(np.mean(depth < 0.95 * bare_depth))
    # the occluders stand in the views: they hide a good part of what the cameras would see
    assert np.mean(coverage) > 0.05, coverage
    assert np.mean(np.array(coverage) > 0.01) > 0.5, coverage


def test_held_out_scenes_are_never_seen_in_training(scannet_root, megadepth_root):
    train_sc = {p.name for p in (scannet_root / "train").iterdir()}
    test_sc = {p.name for p in (scannet_root / "test").iterdir()}
    assert train_sc and test_sc and train_sc.isdisjoint(test_sc)
    for root in (scannet_root, megadepth_root):
        hashes = tree_hashes(root)
        train_images = {h for p, h in hashes.items() if p.startswith("train") and p.endswith("jpg")}
        test_images = {h for p, h in hashes.items() if p.startswith("test") and p.endswith("jpg")}
        assert train_images and test_images and train_images.isdisjoint(test_images)
    md_train = (megadepth_root / "index/trainvaltest_list/train_list.txt").read_text().split()
    md_test = (megadepth_root / "index/trainvaltest_list/val_list.txt").read_text().split()
    assert {s[:4] for s in md_train}.isdisjoint({s[:4] for s in md_test})
    # different scenes, not only different names: no test room has a training room's extents
    rooms = {
        split: [
            syn.scenes.random_room(syn.writers._scene_rng(0, "scannet", split, i, 0))
            for i in range(20)
        ]
        for split in ("train", "test")
    }
    assert set(rooms["train"]).isdisjoint(rooms["test"])


@pytest.fixture(scope="module")
def difficulty_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sizes = {"train_scenes": 1, "frames_per_scene": 2, "test_scenes": 3,
             "test_frames_per_scene": 10, "test_pairs_per_scene": 4}  # fmt: skip
    return syn.ensure_synthetic(tmp_path_factory.mktemp("difficulty"), "scannet", **sizes)


def test_held_out_ground_truth_gives_a_high_pose_auc(difficulty_root):
    """The held-out pairs stay solvable: exact correspondences through the evaluation's
    estimator give nearly every pose, and pixel noise makes it harder (not degenerate)."""
    from experiments import synthetic_difficulty as difficulty

    pairs = difficulty.heldout_pairs(difficulty_root, "scannet")
    assert len(pairs) >= 10
    exact = difficulty.pose_aucs(pairs, 0.0, n_points=300)
    noisy = difficulty.pose_aucs(pairs, 2.0, n_points=300)
    assert exact["auc@20"] >= 0.85, exact
    assert noisy["auc@5"] < exact["auc@5"], (noisy, exact)
    geometry = [difficulty.pair_geometry(p) for p in pairs]
    assert np.median([g["rotation_deg"] for g in geometry]) > 5.0
    assert np.median([g["baseline_to_depth"] for g in geometry]) > 0.03
