"""`dataset=homographies` (pairs from photographs by random homographies) and the data-source
registry that serves it: determinism, resume, the warp bounds, exactness, the photograph split."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from loftr.config import plain
from loftr.config.schema import DataSource
from loftr.config.validate import validate
from loftr.data.datamodule import LoFTRDataModule, check_dataset_config
from loftr.data.homographies import (
    HomographyPairs,
    PhotometricLimits,
    WarpLimits,
    draw_homography,
    folds,
    make_pair,
    photometric_change,
    visible_share,
)
from loftr.data.photos import HELDOUT_PHOTOS, TRAIN_PHOTOS
from loftr.data.sources import SOURCES
from loftr.errors import ConfigError, DataError
from loftr.lightning.fit import evaluate_command
from tests.helpers import ROOT
from tests.helpers.compose import compose_cfg, compose_fast
from tests.helpers.runs import train_fast

CONTRACT_KEYS = {"image0", "image1", "H_0to1", "H_1to0", "dataset_name", "scene_id", "pair_id"}
NO_PHOTOMETRY = PhotometricLimits(
    brightness=0, contrast=(1, 1), gamma=(1, 1), noise=0, blur=0, image0=0
)
EXTREME = WarpLimits(
    max_angle=180, scale=(0.3, 3.0), max_perspective=1.5, max_translation=1.0, min_visible=0.5
)


def _dataset_config(**homographies: Any) -> dict[str, Any]:
    """The composed `dataset=homographies` node, plain, with `homographies` keys replaced."""
    node = OmegaConf.to_container(compose_fast("dataset=homographies").dataset, resolve=True)
    node = OmegaConf.to_container(OmegaConf.create(node), enum_to_str=True)
    node["homographies"].update(homographies)
    return node


def _datamodule(**kw: Any) -> LoFTRDataModule:
    config = _dataset_config(image_size=[64, 48])
    config["n_samples_per_subset"] = kw.pop("n_samples_per_subset", 1)
    dm = LoFTRDataModule(config, seed=kw.pop("seed", 5), **kw)
    dm.setup("fit")
    return dm


def _digest(batches: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for batch in batches:
        for name in ("image0", "image1", "H_0to1"):
            h.update(batch[name].numpy().tobytes())
    return h.hexdigest()


def _smooth_photo(w: int = 400, h: int = 300) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    value = 0.5 + 0.2 * np.sin(xs / 23.0 + 0.3) * np.cos(ys / 17.0) + 0.15 * np.sin((xs + ys) / 31)
    return np.round(value * 255).astype(np.uint8)


# --- the generator --------------------------------------------------------------------------


def test_the_schema_knows_every_registered_source():
    assert {m.value for m in DataSource} == set(SOURCES)


def _resampling_error(image0: np.ndarray, image1: np.ndarray, H: np.ndarray) -> float:
    """Mean |image1(x1) - image0(H^-1 x1)| over the integer pixels x1 whose H^-1 x1 lies inside
    image 0 (bilinear sampling of image 0)."""
    h, w = image0.shape
    ys, xs = np.mgrid[0:h, 0:w]
    x0 = np.linalg.inv(H) @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    x0 = (x0[:2] / x0[2]).astype(np.float32)
    inside = (x0[0] > 1) & (x0[0] < w - 2) & (x0[1] > 1) & (x0[1] < h - 2)
    assert inside.mean() > 0.25
    sampled = cv2.remap(image0, x0[0].reshape(h, w), x0[1].reshape(h, w), cv2.INTER_LINEAR)
    return float(np.abs(sampled.ravel() - image1.ravel())[inside].mean())


def test_h_maps_each_pixel_to_where_its_content_went():
    """Image 1 at an integer pixel x1 shows what image 0 shows at H^-1 x1 (a smooth photograph,
    so bilinear resampling adds < 1 grey level); H off by one pixel is far worse."""
    photo = _smooth_photo()
    one_pixel = np.array([[1, 0, 1.0], [0, 1, 0], [0, 0, 1]])
    for index in range(5):
        rng = np.random.default_rng([3, index])
        image0, image1, H = make_pair(photo, rng, (160, 120), WarpLimits(), NO_PHOTOMETRY)
        error = _resampling_error(image0, image1, H)
        assert error < 1.0 / 255
        assert _resampling_error(image0, image1, one_pixel @ H) > 5 * error


def test_no_fold_and_enough_of_image_0_visible_over_2000_extreme_draws():
    w, h = 64, 48
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    corners = np.array([[0, w - 1, w - 1, 0], [0, 0, h - 1, h - 1], [1, 1, 1, 1]], np.float64)
    redrawn = 0
    for index in range(2000):
        H, draws = draw_homography(np.random.default_rng([11, index]), w, h, EXTREME)
        redrawn += draws > 1
        mapped = H @ grid
        assert (mapped[2] > 0).all(), index  # every pixel of image 0 maps with w > 0
        q = (H @ corners)[:2] / (H @ corners)[2]
        edges = np.roll(q, -1, axis=1) - q
        turns = edges[0] * np.roll(edges[1], -1) - edges[1] * np.roll(edges[0], -1)
        assert (turns > 0).all(), index  # convex, clockwise on screen like image 0
        x, y = mapped[0] / mapped[2], mapped[1] / mapped[2]
        share = np.mean((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1))
        assert share >= EXTREME.min_visible, index
    assert redrawn > 200  # the limits are extreme: many first draws were refused


def test_the_fold_and_visibility_checks_catch_bad_warps():
    w, h = 64, 48
    assert not folds(np.eye(3), w, h) and visible_share(np.eye(3), w, h) == 1.0
    mirror = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]])  # reverses the orientation
    assert folds(mirror, w, h) and visible_share(mirror, w, h) == 1.0
    horizon = np.array([[1.0, 0, 0], [0, 1, 0], [-1.5 / w, 0, 1]])  # w <= 0 beyond x = w / 1.5
    assert folds(horizon, w, h)
    half_out = np.array([[1.0, 0, w / 2], [0, 1, 0], [0, 0, 1]])
    assert visible_share(half_out, w, h) == pytest.approx(0.5, abs=0.02)


def test_photometric_changes_stay_in_their_bounds():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.3, 0.7, (48, 64)).astype(np.float32)
    assert np.array_equal(photometric_change(image, rng, NO_PHOTOMETRY), image)
    only_brightness = PhotometricLimits(0.1, (1, 1), (1, 1), 0, 0, 0)
    for _ in range(50):
        shift = photometric_change(image, rng, only_brightness) - image
        assert np.ptp(shift) < 1e-6 and abs(shift.mean()) <= 0.1 + 1e-6
    only_noise = PhotometricLimits(0, (1, 1), (1, 1), 0.05, 0, 0)
    stds = [np.std(photometric_change(image, rng, only_noise) - image) for _ in range(50)]
    assert max(stds) <= 0.05 * 1.1 and min(stds) < 0.05 * 0.5
    everything = PhotometricLimits(0.5, (0.2, 5), (0.2, 5), 0.3, 3, 1)
    for _ in range(20):
        out = photometric_change(image, rng, everything)
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    lighter = PhotometricLimits().scaled(0.3)
    assert lighter.brightness == pytest.approx(0.045) and lighter.noise == pytest.approx(0.006)
    assert lighter.gamma[1] == pytest.approx(1.4**0.3) and lighter.contrast[0] == 0.7**0.3


def test_image_0_is_unchanged_when_its_share_is_zero():
    photo = _smooth_photo()
    limits = PhotometricLimits(image0=0.0)
    plain0, _, _ = make_pair(photo, np.random.default_rng(1), (64, 48), WarpLimits(), NO_PHOTOMETRY)
    image0, image1, _ = make_pair(photo, np.random.default_rng(1), (64, 48), WarpLimits(), limits)
    assert np.array_equal(image0, plain0)


# --- determinism and resume ---------------------------------------------------------------

DIGEST_SCRIPT = """
import hashlib, sys
from tests.test_homographies import _datamodule, _digest
dm = _datamodule()
print(_digest([dm.train_dataset[i] for i in (0, 7, 123456)]))
"""


def test_a_pair_is_the_same_in_another_process():
    dm = _datamodule()
    here = _digest([dm.train_dataset[i] for i in (0, 7, 123456)])
    there = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    assert here == there
    other_seed = _datamodule(seed=6)
    assert _digest([other_seed.train_dataset[i] for i in (0, 7, 123456)]) != here


def test_an_epoch_is_the_same_with_any_worker_count_and_epochs_differ():
    def epoch(num_workers: int, epoch: int) -> list[dict[str, Any]]:
        dm = _datamodule(batch_size=3, num_workers=num_workers)
        dm.train_sampler.set_epoch(epoch)
        return list(dm.train_dataloader())

    first = epoch(0, 0)
    assert len(first) == 5  # 14 photographs x 1 sample, batches of 3
    assert _digest(epoch(2, 0)) == _digest(first)
    assert _digest(epoch(0, 1)) != _digest(first)


def test_a_state_dict_taken_mid_epoch_reproduces_the_remaining_batches():
    dm = _datamodule(batch_size=2, n_samples_per_subset=2)
    dm.train_sampler.set_epoch(3)
    batches, state = [], None
    for i, batch in enumerate(dm.train_dataloader()):
        batches.append(batch)
        if i == 4:
            state = dm.state_dict()
    assert state["train_sampler"]["consumed"] == 10 and len(batches) == 14
    resumed = _datamodule(batch_size=2, n_samples_per_subset=2)
    resumed.load_state_dict(state)
    rest = list(resumed.train_dataloader())
    assert len(rest) == 9 and _digest(rest) == _digest(batches[5:])


# --- the split of the photographs, a folder of them, the config ----------------------------


def test_training_uses_only_training_photographs_and_validation_only_held_out_ones():
    assert not set(TRAIN_PHOTOS) & set(HELDOUT_PHOTOS)
    dm = _datamodule()
    assert set(dm.train_scenes) == set(TRAIN_PHOTOS)
    dm.setup("validate")
    (val,) = dm.val_datasets
    assert {d.name for d in val.datasets} == set(HELDOUT_PHOTOS)
    assert dm.val_set_names == ["heldout_photos"] and len(val) == 10 * len(HELDOUT_PHOTOS)
    first = [val[i]["image1"] for i in (0, 13)]
    assert all(torch.equal(a, val[i]["image1"]) for a, i in zip(first, (0, 13), strict=True))


def test_a_folder_of_photographs_replaces_the_packaged_ones(tmp_path: Path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    config = _dataset_config(image_size=[64, 48], train_root=str(tmp_path))
    dm = LoFTRDataModule(config, seed=0)
    dm.setup("fit")
    assert sorted(dm.train_scenes) == ["a.png", "b.jpg"]
    assert {dm.train_dataset[i]["scene_id"] for i in (0, len(dm.train_dataset) - 1)} == {
        "a.png",
        "b.jpg",
    }


def test_an_empty_or_unreadable_folder_is_refused_in_one_line(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    config = _dataset_config(train_root=str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"dataset.homographies.train_root: .*empty holds no image"):
        LoFTRDataModule(config).setup("fit")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage IEND")
    config = _dataset_config(train_root=str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"broken.png") as err:
        LoFTRDataModule(config).setup("fit")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("image_size", [100, 48], "dataset.homographies.image_size"),
        ("warp", {**WarpLimits().__dict__, "min_visible": 1.5}, "warp.min_visible"),
        ("warp", {**WarpLimits().__dict__, "scale": [2, 1]}, "warp.scale"),
        ("photometric", {**PhotometricLimits().__dict__, "noise": -1}, "photometric.noise"),
    ],
)
def test_bad_settings_are_named(key: str, value: Any, named: str):
    with pytest.raises(ConfigError, match=named):
        check_dataset_config(_dataset_config(**{key: value}))


def test_a_training_config_composes_validates_and_its_batches_follow_the_contract():
    cfg = compose_fast("dataset=homographies")
    validate(cfg)
    with pytest.raises(ConfigError, match="image_size.*coarse stride 16"):
        validate(
            compose_fast(
                "dataset=homographies",
                "model=loftr_16_4",
                "dataset.homographies.image_size=[320,248]",
            )
        )
    dm = LoFTRDataModule(cfg.dataset, batch_size=2, seed=0, validated=True)
    batch = next(iter(dm.train_dataloader()))
    assert CONTRACT_KEYS | {"pair_names"} <= set(batch)
    assert batch["image0"].shape == batch["image1"].shape == (2, 1, 240, 320)
    assert batch["image0"].dtype == torch.float32 and batch["H_0to1"].shape == (2, 3, 3)
    assert torch.allclose(
        batch["H_0to1"] @ batch["H_1to0"], torch.eye(3).expand(2, 3, 3), atol=1e-4
    )
    assert batch["dataset_name"] == ["Homographies"] * 2
    assert not {"depth0", "K0", "T_0to1", "mask0", "scale0"} & set(batch)
    val = next(iter(dm.val_dataloader()))
    assert val["image0"].shape == (1, 1, 240, 320) and CONTRACT_KEYS <= set(val)


def test_evaluating_on_homographies_is_refused_pointing_to_hpatches():
    cfg = compose_cfg("evaluate", "dataset=homographies", "ckpt_path=model.ckpt")
    with pytest.raises(ConfigError, match="has no test set.*dataset=hpatches_heldout") as err:
        validate(cfg)
    assert "\n" not in str(err.value)


def test_items_of_one_photograph_collate(tmp_path: Path):
    photo = _smooth_photo()
    ds = HomographyPairs(photo, "smooth", 4, 0, 0, (64, 48), WarpLimits(), PhotometricLimits())
    batch = default_collate([ds[i] for i in range(4)])
    assert batch["image1"].shape == (4, 1, 48, 64) and batch["pair_id"].tolist() == [0, 1, 2, 3]
    with pytest.raises(IndexError):
        ds[4]


@pytest.mark.usefixtures("in_repo")
def test_a_fast_training_run_on_homographies_validates_with_homography_metrics(tmp_path: Path):
    pytest.importorskip(
        "loftr.evaluation.homography", reason="needs the homography ground truth and metrics"
    )
    result = train_fast(
        tmp_path,
        "dataset=homographies",
        "logger=csv",
        "dataset.homographies.image_size=[160,120]",
        "dataset.homographies.val_pairs_per_photo=1",
    )
    trainer = result["trainer"]
    assert trainer.global_step == 4
    logged = set(trainer.logged_metrics)
    for name in ("auc@3", "auc@5", "auc@10"):
        assert f"metrics_heldout_photos/{name}" in logged
    assert {"auc@5", "auc@10"} <= logged
    # the top-k checkpoints are named by the AUCs a homography validation reports
    names = [p.name for p in (result["run_dir"] / "checkpoints").glob("epoch*.ckpt")]
    assert names and all(
        re.fullmatch(r"epoch0-auc3_[\d.]+-auc5_[\d.]+-auc10_[\d.]+\.ckpt", n) for n in names
    )
    # and the printed evaluate command tests them where this source is tested
    command = evaluate_command(
        "run/last.ckpt", plain(compose_cfg("train", "dataset=homographies").dataset)
    )
    assert "dataset=hpatches_heldout" in command and "dataset=homographies" not in command
