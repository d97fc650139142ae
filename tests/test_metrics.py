"""Tests of loftr.evaluation.metrics against hand-worked numbers (docs/original.md#metrics)."""

from __future__ import annotations

import importlib.util
import math

import cv2
import numpy as np
import pytest
import torch
from kornia.metrics import auc_from_errors

from loftr.errors import ConfigError
from loftr.evaluation.aggregate import epidist_prec, error_auc
from loftr.evaluation.metrics import (
    ESTIMATORS,
    aggregate_metrics,
    collect_pair_metrics,
    compute_pose_errors,
    compute_symmetrical_epipolar_errors,
    estimate_pose,
    relative_pose_error,
    symmetric_epipolar_distance,
)
from loftr.evaluation.protocol import Protocol, check_comparable, hash_index

K_SIMPLE = torch.tensor(
    [[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]], dtype=torch.float64
)
# E = [t]x R for R = I, t = (1, 0, 0): epipolar lines are horizontal.
E_X = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
EVAL_CFG = {"ransac_pixel_thr": 0.5, "ransac_conf": 0.99999, "pose_estimator": "RANSAC"}


def _rotation(axis: str, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _synthetic_pair(
    n: int = 200, noise_px: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random 3D points seen by two pinhole cameras with a known T_0to1."""
    rng = np.random.default_rng(seed)
    K0 = np.array([[500.0, 0, 320], [0, 510.0, 240], [0, 0, 1]])
    K1 = np.array([[480.0, 0, 330], [0, 490.0, 235], [0, 0, 1]])
    R = _rotation("y", 8.0) @ _rotation("x", -4.0)
    t = np.array([0.6, -0.1, 0.15])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    X0 = rng.uniform([-2.0, -1.5, 4.0], [2.0, 1.5, 9.0], size=(n, 3))
    X1 = X0 @ R.T + t
    x0 = (X0 @ K0.T)[:, :2] / X0[:, 2:]
    x1 = (X1 @ K1.T)[:, :2] / X1[:, 2:]
    x0 = x0 + rng.normal(0.0, noise_px, x0.shape)
    x1 = x1 + rng.normal(0.0, noise_px, x1.shape)
    return x0, x1, K0, K1, T


# --------------------------------------------------------------------------- epipolar distance


def test_symmetric_epipolar_distance_hand_value() -> None:
    # p0 = (60, 40) px -> (0.1, 0); its epipolar line in image 1 is y = 0 (normalised).
    # p1 = (60, 50) px -> (0.1, 0.1): p1^T E p0 = -0.1, both line normals have unit length,
    # so d = 0.1^2 * (1 + 1) = 0.02.
    pts0 = torch.tensor([[60.0, 40.0], [60.0, 40.0]], dtype=torch.float64)
    pts1 = torch.tensor([[60.0, 50.0], [90.0, 40.0]], dtype=torch.float64)
    d = symmetric_epipolar_distance(pts0, pts1, E_X, K_SIMPLE, K_SIMPLE)
    assert d.shape == (2,)
    assert d[0].item() == pytest.approx(0.02, rel=1e-12)
    assert d[1].item() == pytest.approx(0.0, abs=1e-15)  # moved along the epipolar line


def test_symmetric_epipolar_distance_uses_each_images_intrinsics() -> None:
    # In image 1 a focal of 200 halves the normalised offset: (0.05)^2 * 2 = 0.005.
    K1 = K_SIMPLE.clone()
    K1[0, 0] = K1[1, 1] = 200.0
    pts0 = torch.tensor([[60.0, 40.0]], dtype=torch.float64)
    pts1 = torch.tensor([[60.0, 50.0]], dtype=torch.float64)
    d = symmetric_epipolar_distance(pts0, pts1, E_X, K_SIMPLE, K1)
    assert d.item() == pytest.approx(0.005, rel=1e-12)


def test_compute_symmetrical_epipolar_errors_batch() -> None:
    x0, x1, K0, K1, T = _synthetic_pair(n=20)
    # Pair 1 is pair 0 with image-1 points moved by 5 px in y: non-zero errors there only.
    x1_off = x1 + np.array([0.0, 5.0])
    data = {
        "mkpts0_f": torch.tensor(np.concatenate([x0, x0]), dtype=torch.float32),
        "mkpts1_f": torch.tensor(np.concatenate([x1, x1_off]), dtype=torch.float32),
        "m_bids": torch.tensor([0] * 20 + [1] * 20),
        "T_0to1": torch.tensor(np.stack([T, T]), dtype=torch.float32),
        "K0": torch.tensor(np.stack([K0, K0]), dtype=torch.float32),
        "K1": torch.tensor(np.stack([K1, K1]), dtype=torch.float32),
    }
    compute_symmetrical_epipolar_errors(data)
    errs = data["epi_errs"]
    assert errs.shape == (40,) and errs.dtype == torch.float32
    assert errs[:20].abs().max().item() < 1e-8
    assert errs[20:].min().item() > 1e-6
    expected = symmetric_epipolar_distance(
        torch.tensor(x0),
        torch.tensor(x1_off),
        torch.tensor(_essential(T)),
        torch.tensor(K0),
        torch.tensor(K1),
    )
    torch.testing.assert_close(errs[20:].double(), expected, rtol=1e-3, atol=1e-9)


def _essential(T: np.ndarray) -> np.ndarray:
    t = T[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return tx @ T[:3, :3]


# ------------------------------------------------------------------------------ pose errors


def test_relative_pose_error_hand_values() -> None:
    T = np.eye(4)
    T[:3, 3] = [1.0, 0.0, 0.0]
    # 30 degrees of rotation error; t pointing backwards is folded to 0 (sign ambiguity).
    t_err, R_err = relative_pose_error(T, _rotation("z", 30.0), np.array([-2.0, 0.0, 0.0]))
    assert R_err == pytest.approx(30.0, abs=1e-9)
    assert t_err == pytest.approx(0.0, abs=1e-9)
    # t at 100 degrees from t_gt folds to 80; at 60 degrees stays 60.
    t100 = np.array([math.cos(math.radians(100)), math.sin(math.radians(100)), 0.0])
    t60 = np.array([math.cos(math.radians(60)), 0.0, math.sin(math.radians(60))])
    assert relative_pose_error(T, np.eye(3), t100)[0] == pytest.approx(80.0, abs=1e-9)
    assert relative_pose_error(T, np.eye(3), t60)[0] == pytest.approx(60.0, abs=1e-9)
    # ignore_gt_t_thr above |t_gt| = 1 zeroes the translation error.
    assert relative_pose_error(T, np.eye(3), t60, ignore_gt_t_thr=2.0)[0] == 0.0


@pytest.mark.parametrize("method", ["RANSAC", "USAC_MAGSAC"])
def test_estimate_pose_recovers_synthetic_pose(method: str) -> None:
    cv2.setRNGSeed(0)
    x0, x1, K0, K1, T = _synthetic_pair(n=200, noise_px=0.2)
    result = estimate_pose(x0, x1, K0, K1, thresh=0.5, conf=0.99999, method=method)
    assert result is not None
    R, t, inliers = result
    assert R.shape == (3, 3) and t.shape == (3,) and inliers.shape == (200,)
    assert inliers.dtype == bool and inliers.sum() > 150
    assert np.linalg.norm(t) == pytest.approx(1.0)
    t_err, R_err = relative_pose_error(T, R, t)
    assert R_err < 0.5
    assert t_err < 3.0


def test_estimate_pose_accepts_tensors_and_needs_five_matches() -> None:
    x0, x1, K0, K1, _ = _synthetic_pair(n=4)
    assert estimate_pose(x0, x1, K0, K1, 0.5) is None
    x0, x1, K0, K1, _ = _synthetic_pair(n=30)
    cv2.setRNGSeed(0)
    assert estimate_pose(torch.tensor(x0), torch.tensor(x1), torch.tensor(K0), K1, 0.5) is not None


def test_estimate_pose_unknown_estimator_names_it() -> None:
    x0, x1, K0, K1, _ = _synthetic_pair(n=10)
    with pytest.raises(ConfigError, match="LMEDS.*pose_estimator"):
        estimate_pose(x0, x1, K0, K1, 0.5, method="LMEDS")


@pytest.mark.skipif(importlib.util.find_spec("poselib") is not None, reason="poselib installed")
def test_poselib_missing_says_how_to_install() -> None:
    x0, x1, K0, K1, _ = _synthetic_pair(n=10)
    with pytest.raises(ConfigError, match="pip install poselib"):
        estimate_pose(x0, x1, K0, K1, 0.5, method="poselib")


def test_compute_pose_errors_and_collect_pair_metrics() -> None:
    cv2.setRNGSeed(0)
    x0, x1, K0, K1, T = _synthetic_pair(n=100, noise_px=0.1)
    # Pair 0: 100 good matches; pair 1: 3 matches -> failure (inf errors, empty inliers).
    data = {
        "mkpts0_f": torch.tensor(np.concatenate([x0, x0[:3]]), dtype=torch.float32),
        "mkpts1_f": torch.tensor(np.concatenate([x1, x1[:3]]), dtype=torch.float32),
        "m_bids": torch.tensor([0] * 100 + [1] * 3),
        "T_0to1": torch.tensor(np.stack([T, T]), dtype=torch.float32),
        "K0": torch.tensor(np.stack([K0, K0]), dtype=torch.float32),
        "K1": torch.tensor(np.stack([K1, K1]), dtype=torch.float32),
        "pair_names": (["s/a.jpg", "s/c.jpg"], ["s/b.jpg", "s/d.jpg"]),
    }
    compute_symmetrical_epipolar_errors(data)
    compute_pose_errors(data, {"eval": EVAL_CFG})  # a whole config holding `eval` works too
    assert data["R_errs"][0] < 1.0 and data["t_errs"][0] < 5.0
    assert data["R_errs"][1] == math.inf and data["t_errs"][1] == math.inf
    assert data["inliers"][0].shape == (100,) and data["inliers"][1].size == 0
    metrics = collect_pair_metrics(data)
    assert metrics["identifiers"] == ["s/a.jpg#s/b.jpg", "s/c.jpg#s/d.jpg"]
    assert [len(e) for e in metrics["epi_errs"]] == [100, 3]
    out = aggregate_metrics(metrics)
    assert set(out) == {"auc@5", "auc@10", "auc@20", "prec@5e-04"}
    assert out["prec@5e-04"] == pytest.approx(1.0)  # every match is exact up to 0.1 px noise
    assert 0.0 < out["auc@5"] < out["auc@10"] < out["auc@20"] <= 0.5  # one of two pairs failed


def test_compute_pose_errors_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="eval.ransac_conf"):
        compute_pose_errors({}, {"ransac_pixel_thr": 0.5, "pose_estimator": "RANSAC"})


# ------------------------------------------------------------------------------- aggregation


def test_error_auc_hand_computed_trapezoids() -> None:
    # errors [1, 3, 7, inf] -> x = [0, 1, 3, 7, inf], recall = [0, .25, .5, .75, 1].
    # @5:  x = [0, 1, 3, 5],      y = [0, .25, .5, .5]:        .125 + .75 + 1.0 = 1.875 -> /5
    # @10: x = [0, 1, 3, 7, 10],  y = [0, .25, .5, .75, .75]: .125 + .75 + 2.5 + 2.25 = 5.625
    # @20: as @10 but the last segment is .75 * 13 = 9.75:    13.125 -> /20
    aucs = error_auc([7.0, 1.0, math.inf, 3.0])
    assert aucs == {
        "auc@5": pytest.approx(0.375, abs=1e-15),
        "auc@10": pytest.approx(0.5625, abs=1e-15),
        "auc@20": pytest.approx(0.65625, abs=1e-15),
    }
    assert list(aucs) == ["auc@5", "auc@10", "auc@20"]


def test_error_auc_honours_thresholds() -> None:
    # @2: x = [0, 1, 2], y = [0, .25, .25]: .125 + .25 = .375 -> /2 = .1875.
    assert error_auc([7.0, 1.0, math.inf, 3.0], thresholds=(2,)) == {"auc@2": 0.1875}
    # @2.5 on [1]: x = [0, 1, 2.5], y = [0, 1, 1]: .5 + 1.5 = 2 -> /2.5 = .8.
    assert error_auc([1.0], thresholds=(2.5,)) == {"auc@2.5": pytest.approx(0.8)}
    with pytest.raises(ConfigError):
        error_auc([1.0], thresholds=(0,))


def test_error_auc_matches_kornia() -> None:
    rng = np.random.default_rng(3)
    errors = np.concatenate([rng.exponential(8.0, 300), [np.inf] * 7, [5.0, 10.0]])
    ours = error_auc(errors)
    theirs = auc_from_errors(torch.tensor(errors), thresholds=(5, 10, 20))
    for thr in (5, 10, 20):
        assert ours[f"auc@{thr}"] == pytest.approx(theirs[float(thr)] / 100.0, rel=1e-12)


def test_epidist_prec_hand_values() -> None:
    errs = [
        np.array([1e-4, 4e-4, 6e-4, 1e-3]),  # 2 of 4 below 5e-4
        torch.tensor([1e-5]),  # 1 of 1
        np.array([]),  # no matches -> 0
    ]
    assert epidist_prec(errs, 5e-4) == pytest.approx(0.5)
    assert epidist_prec(errs, 1e-4) == pytest.approx((0.0 + 1.0 + 0.0) / 3)
    assert epidist_prec([], 5e-4) == 0.0


def test_aggregate_metrics_dedups_keeping_last_occurrence() -> None:
    metrics = {
        "identifiers": ["a#b", "c#d", "a#b"],
        "R_errs": [100.0, 2.0, 1.0],
        "t_errs": [100.0, 3.0, 0.5],
        "epi_errs": [np.array([1.0, 1.0]), np.array([1e-4]), np.array([1e-4, 1.0])],
    }
    out = aggregate_metrics(metrics)
    # Kept pose errors [1, 3] -> x = [0, 1, 3], recall [0, .5, 1].
    # @5: .25 + 1.5 + 2 = 3.75 -> .75; @10: .25 + 1.5 + 7 = 8.75 -> .875; @20: 18.75 / 20.
    assert out["auc@5"] == pytest.approx(0.75)
    assert out["auc@10"] == pytest.approx(0.875)
    assert out["auc@20"] == pytest.approx(0.9375)
    # Kept precisions: a#b (last) 1/2, c#d 1 -> 0.75 (keeping the first would give 0.5).
    assert out["prec@5e-04"] == pytest.approx(0.75)
    assert "prec@1e-04" in aggregate_metrics(metrics, epi_err_thr=1e-4)


# ---------------------------------------------------------------------------------- protocol


def test_protocol_key_dict_and_comparison(tmp_path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    (index / "test.npz").write_bytes(b"pairs")
    digest = hash_index(index)
    assert digest == hash_index([index / "test.npz"]) and len(digest) == 12
    (index / "test.npz").write_bytes(b"other pairs")
    assert hash_index(index) != digest

    scannet = Protocol("scannet_test_1500", digest, (640, 480), border_rm=0)
    assert scannet.key() == (
        f"scannet_test_1500@{digest}|resize=640x480|RANSAC|thr=0.5px|conf=0.99999|border_rm=0"
    )
    assert Protocol.from_dict(scannet.to_dict()) == scannet
    assert scannet.to_dict()["resize"] == [640, 480]
    check_comparable(scannet, Protocol.from_dict(scannet.to_dict()))

    magsac = Protocol("scannet_test_1500", digest, (640, 480), estimator="USAC_MAGSAC")
    with pytest.raises(ConfigError, match="estimator: 'RANSAC' != 'USAC_MAGSAC'.*border_rm: 0"):
        check_comparable(scannet, magsac)
    with pytest.raises(ConfigError, match="unknown"):
        Protocol("x", "y", 640, estimator="LMEDS")
    with pytest.raises(ConfigError, match="Unknown protocol field"):
        Protocol.from_dict({**scannet.to_dict(), "seed": 1})
    assert set(ESTIMATORS) == {"RANSAC", "USAC_MAGSAC", "poselib"}
