"""ScanNetDataset: docs/original.md#scannet keys, shapes, dtypes and values on a tiny set in the
real format."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loftr.data.scannet import ScanNetDataset
from loftr.errors import ConfigError, DataError
from tests.helpers.datasets import (
    NAME_KEYS,
    PAIR_KEYS,
    SCANNET_K,
    translation,
    write_scannet_dataset,
    write_scannet_index,
    write_scannet_scene,
)

ITEM_KEYS = [*PAIR_KEYS, *NAME_KEYS]

# camera-to-world of frame 1: rotation by 90 degrees about z, then translation (1, 2, 3).
C2W_1 = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0, 0, 0, 1]])
# By hand: T_0to1 = W2C1 @ inv(W2C0) = inv(C2W_1) @ C2W_0 with C2W_0 = I, so [R^T | -R^T t]:
# R^T = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], -R^T (1, 2, 3) = (-2, 1, -3).
T_0TO1 = np.array(
    [[0.0, 1.0, 0.0, -2.0], [-1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, -3.0], [0, 0, 0, 1]]
)


@pytest.fixture
def real_format(tmp_path: Path) -> dict[str, Path]:
    """Real ScanNet sizes: 1296x968 colour, 640x480 depth (mm), 3 frames, 3 pairs."""
    paths = write_scannet_dataset(
        tmp_path, scenes=((0, 0),), color_size=(1296, 968), depth_size=(640, 480)
    )
    write_scannet_scene(
        paths["root"],
        "scene0000_00",
        n_frames=3,
        color_size=(1296, 968),
        depth_size=(640, 480),
        camera_to_world=[np.eye(4), C2W_1, translation(5.0)],
    )
    # scores 0.45, 0.3, 0.9 for (0, 1), (0, 2), (1, 2)
    write_scannet_index(paths["npz"], [(0, 0, 0, 1), (0, 0, 0, 2), (0, 0, 1, 2)], [0.45, 0.3, 0.9])
    return paths


def _dataset(paths: dict[str, Path], **kwargs) -> ScanNetDataset:
    return ScanNetDataset(paths["root"], paths["npz"], paths["intrinsic_path"], **kwargs)


def test_item_keys_shapes_dtypes_and_values(real_format: dict[str, Path]) -> None:
    ds = _dataset(real_format, mode="train", min_overlap_score=0.4)
    assert len(ds) == 2  # 0.3 is dropped
    item = ds[0]
    assert list(item) == ITEM_KEYS  # no mask, no scale (docs/original.md#scannet)
    assert item["image0"].shape == (1, 480, 640) and item["image0"].dtype == torch.float32
    assert 0.0 <= float(item["image0"].min()) and float(item["image0"].max()) <= 1.0
    assert item["depth0"].shape == (480, 640) and item["depth0"].dtype == torch.float32
    assert torch.all(item["depth0"] == 1.5)  # 1500 mm
    for key in ("T_0to1", "T_1to0"):
        assert item[key].shape == (4, 4) and item[key].dtype == torch.float32
    np.testing.assert_allclose(item["T_0to1"].numpy(), T_0TO1, atol=1e-6)
    np.testing.assert_allclose(item["T_1to0"].numpy(), np.linalg.inv(T_0TO1), atol=1e-6)
    assert item["K0"].dtype == torch.float32 and item["K0"].shape == (3, 3)
    np.testing.assert_allclose(item["K0"].numpy(), SCANNET_K, rtol=1e-6)
    np.testing.assert_allclose(item["K1"].numpy(), SCANNET_K, rtol=1e-6)
    assert item["dataset_name"] == "ScanNet"
    assert item["scene_id"] == "scene0000_00"
    assert item["pair_id"] == 0
    assert item["pair_names"] == ("scene0000_00/color/0.jpg", "scene0000_00/color/1.jpg")
    # The camera-0 origin lands at -R^T t in camera 1.
    origin = item["T_0to1"] @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(origin[:3].numpy(), [-2.0, 1.0, -3.0], atol=1e-6)


def test_batch_collates(real_format: dict[str, Path]) -> None:
    batch = next(iter(DataLoader(_dataset(real_format), batch_size=2)))
    assert batch["image0"].shape == (2, 1, 480, 640)
    assert batch["depth1"].shape == (2, 480, 640)
    assert batch["dataset_name"] == ["ScanNet", "ScanNet"]
    # pair_names become two sequences: the first images of both pairs, then the second images.
    assert list(batch["pair_names"][0]) == ["scene0000_00/color/0.jpg", "scene0000_00/color/1.jpg"]
    assert list(batch["pair_names"][1]) == ["scene0000_00/color/1.jpg", "scene0000_00/color/2.jpg"]


def test_overlap_filter_is_strict_and_skipped_in_val(tmp_path: Path) -> None:
    paths = write_scannet_dataset(tmp_path, scenes=((0, 0),), scores=(0.3, 0.5, 0.9))
    # score > 0.5 is strict: 0.5 itself (exact in float16) is dropped.
    assert len(_dataset(paths, mode="train", min_overlap_score=0.5)) == 1
    assert len(_dataset(paths, mode="test", min_overlap_score=0.5)) == 1
    # docs/original.md#scannet: `mode not in ['val' or 'test']` means val keeps everything.
    assert len(_dataset(paths, mode="val", min_overlap_score=0.5)) == 3
    assert len(_dataset(paths, mode="train", min_overlap_score=0.0)) == 3


def test_test_mode_has_empty_depth(real_format: dict[str, Path]) -> None:
    item = _dataset(real_format, mode="test", min_overlap_score=0.0)[0]
    assert item["depth0"].shape == (0,) and item["depth1"].numel() == 0
    assert list(item) == ITEM_KEYS


def test_resized_input_adds_scale_and_keeps_depth_and_K(tmp_path: Path) -> None:
    paths = write_scannet_dataset(
        tmp_path, scenes=((0, 0),), color_size=(640, 480), depth_size=(640, 480)
    )
    item = _dataset(paths, img_resize=(320, 240))[0]
    assert list(item) == [*ITEM_KEYS, "scale0", "scale1"]
    assert item["image0"].shape == (1, 240, 320)
    assert item["depth0"].shape == (480, 640)  # stored resolution
    np.testing.assert_allclose(item["K0"].numpy(), SCANNET_K, rtol=1e-6)  # not rescaled
    for key in ("scale0", "scale1"):
        assert item[key].dtype == torch.float32 and item[key].shape == (2,)
        assert item[key].tolist() == [2.0, 2.0]  # [640 / 320, 480 / 240]
    test_item = _dataset(paths, mode="test", min_overlap_score=0.0, img_resize=(160, 160))[0]
    assert test_item["scale0"].tolist() == [4.0, 3.0]  # depth size from the PNG header


def test_pose_dir_replaces_root_for_poses(tmp_path: Path) -> None:
    paths = write_scannet_dataset(tmp_path, scenes=((0, 0),), scores=(0.9, 0.9, 0.9))
    pose_root = tmp_path / "poses"
    shutil.copytree(paths["root"] / "scene0000_00" / "pose", pose_root / "scene0000_00" / "pose")
    np.savetxt(pose_root / "scene0000_00" / "pose" / "1.txt", C2W_1)
    shutil.rmtree(paths["root"] / "scene0000_00" / "pose")
    item = _dataset(paths, pose_dir=pose_root)[0]
    np.testing.assert_allclose(item["T_0to1"].numpy(), T_0TO1, atol=1e-6)


def test_missing_root_names_path_and_step(tmp_path: Path) -> None:
    paths = write_scannet_dataset(tmp_path, scenes=((0, 0),))
    with pytest.raises(
        DataError,
        match=r"ScanNet train root .*nowhere does not exist; .*ln -s /path/to/scannet_train/\*",
    ):
        ScanNetDataset(tmp_path / "nowhere", paths["npz"], paths["intrinsic_path"])
    link = tmp_path / "dangling"
    os.symlink(tmp_path / "gone", link)
    with pytest.raises(DataError, match=r"ScanNet val root .*dangling is a broken symlink"):
        ScanNetDataset(link, paths["npz"], paths["intrinsic_path"], mode="val")


def test_missing_index_and_intrinsics_name_the_step(tmp_path: Path) -> None:
    paths = write_scannet_dataset(tmp_path, scenes=((0, 0),))
    with pytest.raises(
        DataError, match=r"absent\.npz does not exist; extract scannet_indices\.tar"
    ):
        ScanNetDataset(paths["root"], tmp_path / "absent.npz", paths["intrinsic_path"])
    with pytest.raises(DataError, match=r"intrinsics file .*k\.npz does not exist"):
        ScanNetDataset(paths["root"], paths["npz"], tmp_path / "k.npz")
    np.savez(tmp_path / "other_k.npz", scene0042_00=np.eye(3))
    with pytest.raises(
        DataError, match=r"other_k\.npz has no entry for scene\(s\) \['scene0000_00'\]"
    ):
        ScanNetDataset(paths["root"], paths["npz"], tmp_path / "other_k.npz")


def test_index_naming_absent_scene_names_it(tmp_path: Path) -> None:
    paths = write_scannet_dataset(tmp_path, scenes=((0, 0),))
    np.savez(paths["intrinsic_path"], scene0000_00=SCANNET_K, scene0007_01=SCANNET_K)
    write_scannet_index(paths["npz"], [(0, 0, 0, 1), (7, 1, 0, 1)], [0.9, 0.9])
    with pytest.raises(DataError, match=r"scene folder\(s\) \[.*scene0007_01'\] named by"):
        _dataset(paths)


def test_missing_depth_file_of_a_pair_is_named(tmp_path: Path) -> None:
    paths = write_scannet_dataset(tmp_path, scenes=((0, 0),), scores=(0.9, 0.9, 0.9))
    (paths["root"] / "scene0000_00" / "depth" / "1.png").unlink()
    ds = _dataset(paths)
    with pytest.raises(DataError, match=r"depth map .*scene0000_00/depth/1\.png does not exist"):
        ds[0]


def test_cpp_sensreader_export_is_recognised(tmp_path: Path) -> None:
    paths = write_scannet_dataset(tmp_path, scenes=((0, 0),), scores=(0.9, 0.9, 0.9))
    color = paths["root"] / "scene0000_00" / "color"
    for i in range(3):
        (color / f"{i}.jpg").rename(color / f"frame-{i:06d}.color.jpg")
    with pytest.raises(
        DataError, match=r"C\+\+ SensReader frames such as frame-00000\d\.color\.jpg.*python"
    ):
        _dataset(paths)[0]


def test_bad_mode_and_resize(real_format: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="mode='eval'"):
        _dataset(real_format, mode="eval")
    with pytest.raises(ConfigError, match="scannet_img_resize"):
        _dataset(real_format, img_resize=(0, 480))
