"""MegaDepthDataset: docs/original.md#megadepth resize/pad/mask/scale by hand, and item keys, shapes
and dtypes."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loftr.data.megadepth import (
    MegaDepthDataset,
    coarse_mask,
    pad_bottom_right,
    read_megadepth_depth_padded,
    read_megadepth_gray,
    resized_wh,
)
from loftr.errors import ConfigError, DataError
from tests.helpers.datasets import (
    NAME_KEYS,
    PAIR_KEYS,
    megadepth_K,
    write_image,
    write_megadepth_scene,
)

ITEM_KEYS = [*PAIR_KEYS, "scale0", "scale1", *NAME_KEYS, "mask0", "mask1"]

# Hand-worked docs/original.md#megadepth numbers: s = resize / max(h, w); w' = round(w s), h' =
# round(h s); floor both to a multiple of 8; scale = [w / w', h / h']; pad to max(h', w') square;
# coarse mask cell (i, j) = pixel (8i, 8j) of the padded mask.
#   (w, h, resize): (w', h'), scale, padded side, coarse side, valid coarse rows x cols
HAND = [
    # 1000x750 @640: s = 0.64 -> 640 x 480 (already multiples of 8); 8i < 480 -> 60 rows.
    (1000, 750, 640, (640, 480), (1000 / 640, 750 / 480), 640, 80, (60, 80)),
    # 1000x750 @840: s = 0.84 -> 840 x 630 -> floor8 840 x 624; 8i < 624 -> 78 rows.
    (1000, 750, 840, (840, 624), (1000 / 840, 750 / 624), 840, 105, (78, 105)),
    # 600x900 @640: s = 640/900 -> w' = round(426.67) = 427 -> floor8 424, h' = 640; 8j < 424
    # -> 53 cols.
    (600, 900, 640, (424, 640), (600 / 424, 900 / 640), 640, 80, (80, 53)),
    # 600x900 @840: s = 840/900 -> 560 x 840; 8j < 560 -> 70 cols.
    (600, 900, 840, (560, 840), (600 / 560, 900 / 840), 840, 105, (105, 70)),
]


def test_hand_scale_values() -> None:
    assert HAND[0][4] == (1.5625, 1.5625)
    np.testing.assert_allclose(HAND[1][4], (1.1904762, 1.2019231), rtol=1e-6)
    np.testing.assert_allclose(HAND[2][4], (1.4150943, 1.40625), rtol=1e-6)
    np.testing.assert_allclose(HAND[3][4], (1.0714286, 1.0714286), rtol=1e-6)


@pytest.mark.parametrize(("w", "h", "resize", "wh_new", "scale", "side", "coarse", "valid"), HAND)
def test_resize_pad_mask_scale_by_hand(
    tmp_path: Path,
    w: int,
    h: int,
    resize: int,
    wh_new: tuple[int, int],
    scale: tuple[float, float],
    side: int,
    coarse: int,
    valid: tuple[int, int],
) -> None:
    assert resized_wh(w, h, resize, 8) == wh_new
    path = tmp_path / "img.jpg"
    write_image(path, w, h)
    image, mask, scale_t = read_megadepth_gray(path, resize, 8, padding=True)
    assert image.shape == (1, side, side) and image.dtype == torch.float32
    assert mask.shape == (side, side) and mask.dtype == torch.bool
    w_new, h_new = wh_new
    assert bool(mask[:h_new, :w_new].all()) and int(mask.sum()) == w_new * h_new
    assert float(image[0, h_new:].abs().sum() + image[0, :, w_new:].abs().sum()) == 0.0
    expected = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (w_new, h_new)) / 255.0
    np.testing.assert_allclose(image[0, :h_new, :w_new].numpy(), expected, atol=1e-6)
    assert scale_t.dtype == torch.float32 and scale_t.shape == (2,)
    np.testing.assert_allclose(scale_t.numpy(), scale, rtol=1e-6)
    c = coarse_mask(mask)
    assert c.shape == (coarse, coarse) and c.dtype == torch.bool
    rows, cols = valid
    assert bool(c[:rows, :cols].all()) and int(c.sum()) == rows * cols


def test_resize_uses_pythons_round_then_floors() -> None:
    # 1001 * 0.5 = 500.5: Python's round gives 500 (half to even), as the original.
    assert resized_wh(1280, 1001, 640, None) == (640, 500)
    assert resized_wh(1280, 1001, 640, 8) == (640, 496)
    assert resized_wh(70, 50, None, 8) == (64, 48)
    assert resized_wh(70, 50, None, None) == (70, 50)


def test_coarse_mask_takes_every_eighth_pixel() -> None:
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[8, 0] = True  # pixel (x=0, y=8) -> cell (i=1, j=0)
    mask[3, 3] = True  # not on the 8-grid: dropped
    assert coarse_mask(mask).nonzero().tolist() == [[1, 0]]


def test_pad_bottom_right() -> None:
    padded, mask = pad_bottom_right(np.ones((2, 3), dtype=np.float32), 4, return_mask=True)
    assert padded.tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert mask.sum() == 6 and mask.dtype == bool
    with pytest.raises(ValueError, match=r"\(2, 5\) to 4x4"):
        pad_bottom_right(np.ones((2, 5)), 4)


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    """Images 100x75, 60x90, 80x80; pairs (0,1) 0.5, (1,2) 0.2, (0,2) 0.0; depth 2.0."""
    root = tmp_path / "train"
    npz = tmp_path / "index" / "scene_info_0.1_0.7" / "0015_0.1_0.3.npz"
    write_megadepth_scene(root, npz, scene="0015")
    return {"root": root, "npz": npz}


def test_item_keys_shapes_dtypes_and_values(scene: dict[str, Path]) -> None:
    ds = MegaDepthDataset(
        scene["root"], scene["npz"], mode="train", min_overlap_score=0.0, img_resize=64
    )
    assert len(ds) == 2  # overlap 0.0 fails the strict > 0.0
    item = ds[0]
    assert list(item) == ITEM_KEYS
    assert item["image0"].shape == (1, 64, 64) and item["image0"].dtype == torch.float32
    assert item["depth0"].shape == (2000, 2000) and item["depth0"].dtype == torch.float32
    assert (
        float(item["depth0"][:75, :100].min()) == 2.0 and float(item["depth0"].sum()) == 2.0 * 7500
    )
    # 100x75 @64: s = 0.64 -> 64 x 48; 60x90 @64: w' = round(42.67) = 43 -> 40, h' = 64.
    assert item["scale0"].tolist() == [1.5625, 1.5625]
    assert item["scale1"].tolist() == [1.5, 1.40625]
    assert item["mask0"].shape == (8, 8) and item["mask0"].dtype == torch.bool
    assert int(item["mask0"].sum()) == 6 * 8 and bool(item["mask0"][:6].all())  # 8i < 48
    assert int(item["mask1"].sum()) == 8 * 5 and bool(item["mask1"][:, :5].all())  # 8j < 40
    # T_i = inv(translation(i)) world-to-camera: T_0to1 = T1 @ inv(T0) = translation(-1).
    expected = np.eye(4)
    expected[0, 3] = -1.0
    assert item["T_0to1"].dtype == torch.float32 and item["T_0to1"].shape == (4, 4)
    np.testing.assert_allclose(item["T_0to1"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(item["T_1to0"].numpy(), np.linalg.inv(expected), atol=1e-6)
    np.testing.assert_allclose(item["K0"].numpy(), megadepth_K(100, 75), rtol=1e-6)
    np.testing.assert_allclose(item["K1"].numpy(), megadepth_K(60, 90), rtol=1e-6)
    assert item["K0"].dtype == torch.float32
    assert item["dataset_name"] == "MegaDepth"
    assert item["scene_id"] == "0015_0.1_0.3"
    assert item["pair_id"] == 0
    assert item["pair_names"] == (
        "Undistorted_SfM/0015/images/0000.jpg",
        "Undistorted_SfM/0015/images/0001.jpg",
    )
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image1"].shape == (2, 1, 64, 64) and batch["depth1"].shape == (2, 2000, 2000)
    assert batch["mask0"].shape == (2, 8, 8) and batch["scale0"].shape == (2, 2)


def test_overlap_filter_and_test_mode(scene: dict[str, Path]) -> None:
    kwargs = {"img_resize": 64}
    assert len(MegaDepthDataset(scene["root"], scene["npz"], "train", 0.3, **kwargs)) == 1
    test = MegaDepthDataset(scene["root"], scene["npz"], "test", 0.3, **kwargs)
    assert len(test) == 2  # test mode forces min_overlap_score = 0 (still strict)
    item = test[1]
    assert item["depth0"].shape == (0,) and item["depth1"].numel() == 0
    assert list(item) == ITEM_KEYS


def test_unpadded_val_items_collate_in_batches_of_one(scene: dict[str, Path]) -> None:
    ds = MegaDepthDataset(
        scene["root"],
        scene["npz"],
        "val",
        0.0,
        img_resize=64,
        img_padding=False,
        depth_padding=False,
    )
    item = ds[0]
    assert "mask0" not in item and "mask1" not in item
    assert item["image0"].shape == (1, 48, 64) and item["image1"].shape == (1, 64, 40)
    assert item["depth0"].shape == (75, 100) and item["depth1"].shape == (90, 60)
    batches = list(DataLoader(ds, batch_size=1))
    assert [b["depth0"].shape for b in batches] == [(1, 75, 100), (1, 90, 60)]


def test_training_requires_resize_and_padding(scene: dict[str, Path]) -> None:
    args = (scene["root"], scene["npz"], "train")
    with pytest.raises(ConfigError, match="dataset.mgdpt_img_resize"):
        MegaDepthDataset(*args, img_resize=None)
    with pytest.raises(ConfigError, match="dataset.mgdpt_img_pad"):
        MegaDepthDataset(*args, img_padding=False)
    with pytest.raises(ConfigError, match="dataset.mgdpt_depth_pad"):
        MegaDepthDataset(*args, depth_padding=False)


def test_missing_depth_file_is_named(scene: dict[str, Path]) -> None:
    ds = MegaDepthDataset(scene["root"], scene["npz"], "train", 0.0, img_resize=64)
    (scene["root"] / "phoenix/S6/zl548/MegaDepth_v1/0015/dense0/depths/0002.h5").unlink()
    with pytest.raises(DataError, match=r"depth map .*depths/0002\.h5 does not exist"):
        ds[1]


def test_training_pair_that_cannot_supervise_is_named(tmp_path: Path) -> None:
    root, npz = tmp_path / "train", tmp_path / "index" / "0015_0.1_0.3.npz"
    write_megadepth_scene(root, npz, scene="0015", depth_value=0.0)
    with pytest.raises(DataError, match=r"depth map .*depths/0000\.h5 has no valid pixel"):
        MegaDepthDataset(root, npz, "train", 0.0, img_resize=64)[0]
    assert MegaDepthDataset(root, npz, "val", 0.0, img_resize=64)[0]["depth0"].max() == 0
    info = write_megadepth_scene(root, npz, scene="0015")
    for key, slot, broken, what in (
        ("intrinsics", 1, np.diag([60.0, 60.0, 0.0]), "intrinsics"),
        ("poses", 0, np.zeros((4, 4)), "pose"),
    ):
        bad = {**info, key: info[key].copy()}
        bad[key][slot] = broken
        npz.write_bytes(pickle.dumps(bad))
        with pytest.raises(DataError, match=rf"{what} of image slot {slot} in .*3.npz is a sing"):
            MegaDepthDataset(root, npz, "train", 0.0, img_resize=64)[0]


def test_missing_root_and_wrongly_linked_root(scene: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"MegaDepth train root .*absent does not exist; .*phoenix"):
        MegaDepthDataset(tmp_path / "absent", scene["npz"], "train", img_resize=64)
    # TRAINING.md's literal `ln -s .../Undistorted_SfM/* data/megadepth/train` puts scene folders
    # at the top: the first image is then not found, and the message says what to link.
    wrong = tmp_path / "wrong"
    (scene["root"] / "Undistorted_SfM").rename(wrong)
    with pytest.raises(DataError, match=r"image .*Undistorted_SfM/0015/images/0000\.jpg does not"):
        MegaDepthDataset(scene["root"], scene["npz"], "train", img_resize=64)


def test_setup_replaces_the_megadepth_hint(scene: dict[str, Path], tmp_path: Path) -> None:
    """``setup`` (a prepared set's command) is the hint for a missing root, index or file."""
    step = "run the converter again"
    with pytest.raises(DataError, match=r"train root .*absent does not exist; run the converter"):
        MegaDepthDataset(tmp_path / "absent", scene["npz"], "train", img_resize=64, setup=step)
    with pytest.raises(DataError, match=r"none\.npz does not exist; run the converter again$"):
        MegaDepthDataset(scene["root"], tmp_path / "none.npz", "val", setup=step)
    (scene["root"] / "Undistorted_SfM").rename(tmp_path / "moved")
    with pytest.raises(DataError, match=r"0000\.jpg does not exist; run the converter again$"):
        MegaDepthDataset(scene["root"], scene["npz"], "train", img_resize=64, setup=step)


def test_depth_larger_than_pad_is_an_error(tmp_path: Path) -> None:
    import h5py

    with h5py.File(tmp_path / "big.h5", "w") as f:
        f.create_dataset("depth", data=np.zeros((3, 5), dtype=np.float32))
    assert read_megadepth_depth_padded(tmp_path / "big.h5", 8).shape == (8, 8)
    with pytest.raises(DataError, match=r"big\.h5 has shape \(3, 5\), larger than 4"):
        read_megadepth_depth_padded(tmp_path / "big.h5", 4)
