"""Validation of homography sets through the real LightningModule (docs/homography.md#validation):
homography metrics per set, the top-level keys the checkpoint monitor and the objective read, the
figures coloured by reprojection error; a pose set beside it is unchanged."""

from __future__ import annotations

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from experiments.dashboard import build_dashboard
from loftr import viz
from loftr.errors import ConfigError
from loftr.lightning import fit
from loftr.lightning.callbacks import ValidationReport
from loftr.lightning.module import LoFTRModule
from tests.helpers.compose import compose_fast

SIZE = 64
POSE_KEYS = {"auc@5", "auc@10", "auc@20", "prec@5e-04"}
HOMOGRAPHY_KEYS = {"auc@3", "auc@5", "auc@10", "prec@3px"}


def texture(rng: np.random.Generator) -> np.ndarray:
    noise = rng.random((SIZE, SIZE)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 1.5) * 2.0 - 0.5


def homography_item(index: int) -> dict:
    rng = np.random.default_rng(index)
    angle = np.deg2rad(5.0 * (index + 1))
    c, s = np.cos(angle), np.sin(angle)
    H = np.array([[c, -s, 3.0 + index], [s, c, -2.0], [1e-4, 0.0, 1.0]])
    image0 = np.clip(texture(rng), 0, 1)
    image1 = cv2.warpPerspective(image0, H, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
    return {
        "image0": torch.from_numpy(image0)[None],
        "image1": torch.from_numpy(image1)[None],
        "H_0to1": torch.tensor(H, dtype=torch.float32),
        "H_1to0": torch.tensor(np.linalg.inv(H), dtype=torch.float32),
        "dataset_name": "Homographies",
        "scene_id": f"photo{index}",
        "pair_id": index,
        "pair_names": (f"photo{index}/0.png", f"photo{index}/1.png"),
    }


def pose_item(index: int) -> dict:
    """A fronto-parallel wall 2 m away, camera 1 moved 0.1 m sideways (the ScanNet format)."""
    rng = np.random.default_rng(100 + index)
    K = torch.tensor([[50.0, 0, 31.5], [0, 50.0, 31.5], [0, 0, 1]])
    T = torch.eye(4)
    T[0, 3] = -0.1
    image0 = np.clip(texture(rng), 0, 1)
    image1 = np.roll(image0, -2, axis=1)  # 50 px x 0.1 m / 2 m = 2.5 px
    depth = torch.full((SIZE, SIZE), 2.0)
    return {
        "image0": torch.from_numpy(image0)[None],
        "image1": torch.from_numpy(np.ascontiguousarray(image1))[None],
        "depth0": depth,
        "depth1": depth.clone(),
        "K0": K,
        "K1": K.clone(),
        "T_0to1": T,
        "T_1to0": torch.linalg.inv(T),
        "dataset_name": "ScanNet",
        "scene_id": f"scene{index}",
        "pair_id": index,
        "pair_names": (f"scene{index}/0.jpg", f"scene{index}/1.jpg"),
    }


def loader(make) -> DataLoader:
    return DataLoader([make(i) for i in range(3)], batch_size=1)


@pytest.fixture(scope="module")
def module() -> LoFTRModule:
    # the tiny model untrained; a low threshold and no border removal so that it matches at
    # all on 8x8 coarse grids (its features already match some cells of a smooth texture)
    torch.manual_seed(0)
    cfg = compose_fast("model.match_coarse.thr=0.01", "model.match_coarse.border_rm=0")
    module = LoFTRModule(OmegaConf.to_container(cfg, resolve=True)).eval()
    module.monitor = cfg.checkpoint.monitor  # what the top-k checkpoint reads: auc@10
    return module


def validate(module: LoFTRModule, loaders: list[DataLoader], names, callbacks=()) -> dict:
    module.val_set_names = list(names)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.validate(module, dataloaders=loaders, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_a_homography_set_logs_corner_auc_precision_and_the_monitor_key(module, tmp_path):
    report = ValidationReport(tmp_path, n_pairs_to_plot=1, epi_err_thr=5e-4, precision_thr=3.0)
    logged = validate(module, [loader(homography_item)], ["homographies"], [report])
    per_set = {k.split("/", 1)[1] for k in logged if k.startswith("metrics_homographies/")}
    assert per_set == HOMOGRAPHY_KEYS
    assert {"auc@3", "auc@5", "auc@10", module.monitor} <= set(logged) and "auc@20" not in logged
    for key in ("auc@3", "auc@5", "auc@10"):  # one set: the top level is its AUC
        assert logged[key] == pytest.approx(logged[f"metrics_homographies/{key}"])
    assert all(0.0 <= logged[f"metrics_homographies/{k}"] <= 1.0 for k in HOMOGRAPHY_KEYS)
    assert "val_homographies/avg_loss" in logged
    results = module.validation_results["homographies"]
    assert results["n_pairs"] == 3 and HOMOGRAPHY_KEYS <= set(results)
    # a validation outside fit is the one before training (validate_before_training)
    assert (tmp_path / "figures" / "before_training" / "homographies" / "pair-0.png").is_file()


def test_a_pose_set_beside_a_homography_set_is_unchanged(module):
    alone = validate(module, [loader(pose_item)], ["poses"])
    both = validate(module, [loader(homography_item), loader(pose_item)], ["homographies", "poses"])
    pose_keys = {k.split("/", 1)[1] for k in alone if k.startswith("metrics_poses/")}
    assert pose_keys == POSE_KEYS
    for key in POSE_KEYS:
        assert both[f"metrics_poses/{key}"] == alone[f"metrics_poses/{key}"]
    assert alone["auc@10"] == alone["metrics_poses/auc@10"] and "auc@3" not in alone
    assert both["metrics_poses/prec@5e-04"] > 0 and both["metrics_homographies/auc@10"] > 0
    # two sets: each top-level AUC is the mean over the sets that have it
    for key in ("auc@5", "auc@10"):
        mean = (both[f"metrics_homographies/{key}"] + both[f"metrics_poses/{key}"]) / 2
        assert both[key] == pytest.approx(mean)
    assert both["auc@3"] == pytest.approx(both["metrics_homographies/auc@3"])
    assert both["auc@20"] == pytest.approx(both["metrics_poses/auc@20"])


def test_the_homography_figure_colours_by_reprojection_error_and_names_the_corner_error(
    monkeypatch,
):
    drawn = {}

    def capture(img0, img1, kpts0, kpts1, colours, text=()):
        drawn.update(colours=colours, text=list(text), kpts0=kpts0)

    monkeypatch.setattr(viz, "make_matching_figure", capture)
    data = {
        "image0": torch.zeros(1, 1, 16, 16),
        "image1": torch.zeros(1, 1, 16, 16),
        "mkpts0_f": torch.tensor([[2.0, 2.0], [4.0, 4.0], [6.0, 6.0]]),
        "mkpts1_f": torch.tensor([[2.0, 2.0], [4.0, 4.0], [6.0, 6.0]]),
        "m_bids": torch.tensor([0, 0, 0]),
        "reproj_errs": np.array([0.0, 3.0, 6.0]),
        "H_errs": [1.5],
    }
    viz.make_homography_figure(data, 0, precision_thr=3.0, alpha=1.0)
    # green below the threshold, yellow at it, red at twice it
    np.testing.assert_allclose(drawn["colours"][:, :3], [[0, 1, 0], [1, 1, 0], [1, 0, 0]])
    assert drawn["text"][:3] == [
        "Corner error 1.50 px",
        "#Matches 3",
        "Precision(3px) (33.3%): 1/3",
    ]
    data["H_errs"] = [float("inf")]
    viz.make_homography_figure(data, 0, precision_thr=3.0)
    assert drawn["text"][0] == "Corner error: no homography"


def test_the_objective_is_the_mean_over_the_sets_that_report_it(monkeypatch):
    metrics = {
        "homographies": {"auc@10": 0.6, "auc@3": 0.2},
        "poses": {"auc@10": 0.2, "auc@20": 0.5},
    }
    monkeypatch.setattr(fit, "train", lambda cfg: {"stopped_by": None, "metrics": metrics})
    objective = {
        key: fit.train_command(OmegaConf.create({"objective": key}))
        for key in ("auc@10", "auc@3", "auc@20")
    }
    assert objective == pytest.approx({"auc@10": 0.4, "auc@3": 0.2, "auc@20": 0.5})
    with pytest.raises(ConfigError, match=r"objective=auc@11 is no validation metric"):
        fit.train_command(OmegaConf.create({"objective": "auc@11"}))


def test_the_dashboard_plots_the_homography_keys():
    keys = build_dashboard(val_sets=["homographies"]).panel_keys()
    assert {"auc@3", "metrics_homographies/prec@3px", "metrics_homographies/auc@10"} <= set(keys)
