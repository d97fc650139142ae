"""Homography metrics (loftr/evaluation/homography.py): corner error, its AUC, reprojection
errors and the input frame, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loftr.config.validate import validate
from loftr.errors import ConfigError
from loftr.evaluation.homography import (
    CORNER_THRESHOLDS,
    aggregate_homography_metrics,
    collect_homography_pair_metrics,
    compute_homography_errors,
    corner_error,
    estimate_homography,
    input_frame_homography,
    precision_key,
    reprojection_errors,
)
from tests.helpers.compose import compose_cfg

EVAL_CFG = {
    "homography": {
        "ransac_thr": 3.0,
        "ransac_conf": 0.995,
        "ransac_max_iters": 2000,
        "max_matches": 1000,
        "precision_thr": 3.0,
    }
}
# a homography with perspective: corner errors must not depend on H_gt being affine
H_GT = np.array([[0.9, 0.05, 4.0], [-0.03, 1.1, 2.0], [2e-4, -1e-4, 1.0]])


def shift(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def apply(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ H.T
    return p[:, :2] / p[:, 2:]


# ----------------------------------------------------------------------------- corner error
def test_a_translation_of_3_4_px_after_the_true_homography_is_a_5_px_corner_error():
    assert corner_error(shift(3, 4) @ H_GT, H_GT, 640, 480) == pytest.approx(5.0, abs=1e-9)


def test_a_scale_about_the_centre_moves_every_corner_by_the_scale_change_times_its_radius():
    # 65 x 49: corners (0, 0) .. (64, 48), centre (32, 24), each corner 40 px from it; scaled by
    # 1.1 about the centre, each moves 0.1 * 40 = 4 px
    c = np.array([[1.0, 0, -32], [0, 1, -24], [0, 0, 1]])
    scale = np.linalg.inv(c) @ np.diag([1.1, 1.1, 1.0]) @ c
    assert corner_error(scale, np.eye(3), 65, 49) == pytest.approx(4.0, abs=1e-9)
    # the same scale about the origin: (0, 0) stays, (64, 0) moves 6.4, (64, 48) 8, (0, 48) 4.8
    origin = np.diag([1.1, 1.1, 1.0])
    expected = (0.0 + 6.4 + 8.0 + 4.8) / 4
    assert corner_error(origin, np.eye(3), 65, 49) == pytest.approx(expected, abs=1e-9)


def test_a_failed_or_unseeable_estimate_is_an_infinite_corner_error():
    assert corner_error(None, H_GT, 64, 48) == np.inf
    behind = np.array([[1.0, 0, 0], [0, 1, 0], [-1.0, 0, 1]])  # w = 1 - x <= 0 right of x = 1
    assert corner_error(behind, np.eye(3), 64, 48) == np.inf


# ------------------------------------------------------------------------------ estimation
def _grid(n: int = 10, w: float = 600, h: float = 440) -> np.ndarray:
    xs, ys = np.meshgrid(np.linspace(20, w, n), np.linspace(20, h, n))
    return np.c_[xs.ravel(), ys.ravel()]


def test_ransac_recovers_an_exact_homography_and_flags_outliers():
    kpts0 = _grid()
    kpts1 = apply(H_GT, kpts0)
    kpts1[:10] += 50.0  # ten outliers
    H, inliers = estimate_homography(kpts0, kpts1, 3.0, 0.995, 2000)
    assert H is not None
    assert corner_error(H, H_GT, 640, 480) < 1e-4
    assert inliers.tolist() == [False] * 10 + [True] * 90


@pytest.mark.parametrize(
    "kpts0",
    [
        np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]),  # fewer than 4 matches
        np.c_[np.arange(8.0), 2 * np.arange(8.0)],  # collinear: degenerate
        np.zeros((0, 2)),  # none
    ],
    ids=["three", "collinear", "none"],
)
def test_too_few_or_degenerate_matches_are_a_failure_not_a_crash(kpts0):
    H, inliers = estimate_homography(kpts0, kpts0 + 1.0, 3.0, 0.995, 2000)
    assert H is None
    assert inliers.shape == (len(kpts0),) and not inliers.any()


# ------------------------------------------------------------------- reprojection, frames
def test_reprojection_errors_by_hand():
    H = np.array([[2.0, 0, 1], [0, 2.0, 0], [0, 0, 1]])  # (1, 1) -> (3, 2)
    assert reprojection_errors([[1.0, 1.0]], [[6.0, 6.0]], H) == pytest.approx([5.0])
    # perspective: (100, 50) has w = 1 + 0.01 * 100 = 2 -> (50, 25); 3-4-5 from (53, 29);
    # (-200, 0) has w = -1: behind, never a correct match
    P = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.01, 0, 1]])
    errors = reprojection_errors([[100.0, 50.0], [-200.0, 0.0]], [[53.0, 29.0], [0.0, 0.0]], P)
    assert errors[0] == pytest.approx(5.0)
    assert errors[1] == np.inf


def test_input_frame_homography_with_non_uniform_scales_by_hand():
    H = np.array([[1.0, 0, 10], [0, 1.0, 20], [0.01, 0, 1]])
    # S1^-1 H S0, S0 = diag(2, 4, 1), S1 = diag(0.5, 3, 1): H[r, c] * s0[c] / s1[r]
    expected = np.array([[4.0, 0, 20], [0, 4 / 3, 20 / 3], [0.02, 0, 1]])
    H_in = input_frame_homography(H, [2.0, 4.0], [0.5, 3.0])
    np.testing.assert_allclose(H_in, expected)
    # the input pixel (1, 1) is the stored pixel (2, 4), which H sends to (12, 24) / 1.02, i.e.
    # the input pixel (12 / 1.02 / 0.5, 24 / 1.02 / 3)
    np.testing.assert_allclose(apply(H_in, np.array([[1.0, 1.0]])), [[24 / 1.02, 8 / 1.02]])
    # batched, and no scale: unchanged
    batch = input_frame_homography(np.stack([H, H]), np.array([[2.0, 4.0]] * 2), None)
    np.testing.assert_allclose(batch[1], H * np.array([2.0, 4.0, 1.0])[None])
    np.testing.assert_allclose(input_frame_homography(torch.tensor(H)), H)


# -------------------------------------------------------------------------- a whole batch
def _batch(shifts, counts, size=(48, 64), scale=None):
    """One pair per shift: exact matches of `H_GT` followed by the shift (stored pixels);
    `counts[b]` matches for pair b."""
    h, w = size
    mk0, mk1, bids = [], [], []
    for b, ((tx, ty), count) in enumerate(zip(shifts, counts, strict=True)):
        k0 = _grid(10, w - 8, h - 8)[:count] * (scale or 1.0)
        mk0.append(k0)
        mk1.append(apply(shift(tx, ty) @ H_GT, k0))
        bids.append(np.full(len(k0), b))
    n = len(shifts)
    data = {
        "image0": torch.zeros(n, 1, h, w),
        "mkpts0_f": torch.tensor(np.concatenate(mk0), dtype=torch.float32),
        "mkpts1_f": torch.tensor(np.concatenate(mk1), dtype=torch.float32),
        "m_bids": torch.tensor(np.concatenate(bids)),
        "mconf": torch.ones(sum(counts)),
        "H_0to1": torch.tensor(np.stack([H_GT] * n), dtype=torch.float32),
        "pair_names": ([f"a{b}.png" for b in range(n)], [f"b{b}.png" for b in range(n)]),
    }
    if scale is not None:
        data["scale0"] = data["scale1"] = torch.full((n, 2), float(scale))
    return data


def test_a_batch_gives_the_hand_computed_corner_errors_auc_and_precision():
    # corner errors 1, 2, 6 px (shifts (0.6, 0.8), (1.2, 1.6), (3.6, 4.8)) and a failure
    # (3 matches). Sorted with 0 in front, recall 0, 1/4, 2/4, 3/4 at 0, 1, 2, 6 px:
    # AUC@3 = (0.125 + 0.375 + 0.5) / 3 = 1/3; AUC@5 = (0.125 + 0.375 + 1.5) / 5 = 0.4;
    # AUC@10 = (0.125 + 0.375 + 4 * 0.625 + 4 * 0.75) / 10 = 0.6
    data = _batch([(0.6, 0.8), (1.2, 1.6), (3.6, 4.8), (0.0, 0.0)], [100, 100, 100, 3])
    compute_homography_errors(data, EVAL_CFG)
    np.testing.assert_allclose(data["H_errs"][:3], [1.0, 2.0, 6.0], atol=1e-3)
    assert data["H_errs"][3] == np.inf and data["H_est"][3] is None
    # every match of pair b is off by the shift's length: precision at 3 px is 1, 1, 0, 1
    np.testing.assert_allclose(data["reproj_errs"][:100], 1.0, atol=1e-3)
    pairs = collect_homography_pair_metrics(data)
    assert pairs["identifiers"] == [f"a{b}.png#b{b}.png" for b in range(4)]
    result = aggregate_homography_metrics(pairs, precision_thr=3.0)
    assert set(result) == {"auc@3", "auc@5", "auc@10", "prec@3px"}
    assert result["auc@3"] == pytest.approx(1 / 3, abs=1e-3)
    assert result["auc@5"] == pytest.approx(0.4, abs=1e-3)
    assert result["auc@10"] == pytest.approx(0.6, abs=1e-3)
    assert result["prec@3px"] == pytest.approx(0.75)
    assert CORNER_THRESHOLDS == (3, 5, 10) and precision_key(3.0) == "prec@3px"


def test_a_pair_seen_twice_counts_once():
    pairs = {
        "identifiers": ["a#b", "a#b", "c#d"],
        "H_errs": [np.inf, 1.0, 1.0],
        "reproj_errs": [np.array([9.0]), np.array([1.0]), np.array([1.0])],
    }
    assert aggregate_homography_metrics(pairs, 3.0)["prec@3px"] == 1.0


def test_errors_are_measured_in_the_network_input_frame():
    # stored images twice the input: a (6, 8) px stored shift is a (3, 4) px = 5 px input shift
    data = _batch([(6.0, 8.0)], [100], scale=2.0)
    compute_homography_errors(data, EVAL_CFG)
    assert data["H_errs"][0] == pytest.approx(5.0, abs=1e-3)
    np.testing.assert_allclose(data["reproj_errs"], 5.0, atol=1e-3)


def test_only_the_top_matches_by_confidence_are_used_for_the_estimate():
    data = _batch([(0.0, 0.0)], [100])
    mk1 = data["mkpts1_f"].clone()
    mk1[60:] = torch.rand(40, 2) * 40  # 40 outliers of low confidence
    data["mkpts1_f"] = mk1
    data["mconf"] = torch.cat([torch.full((60,), 0.9), torch.full((40,), 0.1)])
    compute_homography_errors(data, {"homography": {**EVAL_CFG["homography"], "max_matches": 60}})
    assert data["inliers"][0].shape == (60,) and data["inliers"][0].all()
    assert data["H_errs"][0] < 1e-3


def test_a_padded_item_measures_the_corners_of_its_valid_extent():
    data = _batch([(0.0, 0.0)], [100])
    scale = np.diag([1.01, 1.01, 1.0])
    data["mkpts1_f"] = torch.tensor(
        apply(scale @ H_GT, data["mkpts0_f"].double().numpy()), dtype=torch.float32
    )
    mask0 = torch.zeros(1, 6, 8, dtype=torch.bool)  # coarse mask of the 48 x 64 input
    mask0[:, :4, :6] = True  # valid: 48 x 32 pixels
    data["mask0"] = mask0
    compute_homography_errors(data, EVAL_CFG)
    assert data["H_errs"][0] == pytest.approx(corner_error(scale @ H_GT, H_GT, 48, 32), rel=1e-3)


def test_missing_settings_are_named():
    with pytest.raises(ConfigError, match=r"eval\.homography"):
        compute_homography_errors(_batch([(0.0, 0.0)], [10]), {"ransac_conf": 0.99})


# ---------------------------------------------------------------------------------- config
def test_the_homography_settings_compose_with_their_defaults():
    cfg = compose_cfg("train")
    assert dict(cfg.eval.homography) == EVAL_CFG["homography"]


@pytest.mark.parametrize(
    "override, named",
    [
        ("eval.homography.ransac_thr=0", r"eval\.homography\.ransac_thr=0 must be a number > 0"),
        ("eval.homography.ransac_conf=1", r"eval\.homography\.ransac_conf=1 must be"),
        ("eval.homography.max_matches=0", r"eval\.homography\.max_matches=0 must be an integer"),
    ],
)
def test_homography_settings_out_of_range_are_named(override, named):
    with pytest.raises(ConfigError, match=named):
        validate(compose_cfg("train", override))
