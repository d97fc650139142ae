"""Tests of the coarse and fine ground truth (docs/original.md#coarse-gt, #fine-gt) on hand-worked
and planar scenes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from loftr.errors import DataError
from loftr.supervision import (
    coarse_mask,
    compute_supervision_coarse,
    compute_supervision_fine,
)
from tests.helpers.geometry import plane_depth, rotation, translation

CONFIG = {"resolution": [8, 2], "fine_window_size": 5}
# f = 8 px, principal point (12, 8) at the network input resolution.
K_IN = torch.tensor([[8.0, 0.0, 12.0], [0.0, 8.0, 8.0], [0.0, 0.0, 1.0]])
E = 2.0001  # Z + 1e-4 with Z = 2 m everywhere: the projection quirk of docs/original.md#warp-kpts


def _translation_item(
    t: tuple[float, float], h: int = 16, w: int = 24, scale: tuple[float, float] | None = None
) -> dict:
    """Constant depth 2 m, camera 1 translated by t (metres) in x and y.

    At the input resolution, image-0 pixel (x, y) lands at
    ((2x + 8 tx) / 2.0001, (2y + 8 ty) / 2.0001) in image 1 (f = 8, Z = 2: 4 px per metre).
    """
    sx, sy = scale if scale is not None else (1.0, 1.0)
    K = torch.diag(torch.tensor([sx, sy, 1.0])) @ K_IN  # intrinsics at original resolution
    depth = torch.full((1, int(h * sy) + 8, int(w * sx) + 8), 2.0)  # padded, like MegaDepth
    T = translation(*t)
    item = {
        "image0": torch.zeros(1, 1, h, w),
        "image1": torch.zeros(1, 1, h, w),
        "depth0": depth,
        "depth1": depth.clone(),
        "K0": K[None],
        "K1": K[None].clone(),
        "T_0to1": T[None],
        "T_1to0": torch.linalg.inv(T)[None],
        "dataset_name": ["ScanNet"] if scale is None else ["MegaDepth"],
    }
    if scale is not None:
        item["scale0"] = torch.tensor([[sx, sy]])
        item["scale1"] = torch.tensor([[sx, sy]])
    return item


def _positives(conf_matrix_gt: torch.Tensor) -> list[tuple[int, int, int]]:
    return [tuple(x) for x in torch.nonzero(conf_matrix_gt).tolist()]


# --------------------------------------------------------------------------- hand-worked case
def test_hand_worked_translation() -> None:
    # 24x16 images: 3x2 coarse cells, corners (0,0) (8,0) (16,0) (0,8) (8,8) (16,8).
    # t = (-1.5, 0.5): image 0 -> 1 is (x, y) -> ((2x - 12) / E, (2y + 4) / E), i.e. in cells
    # x: {-0.75, 0.25, 1.25} -> {off, 0, 1}, y: {0.25, 1.25} -> {0, 1}
    #   nn1 = [0(off), 0, 1, 0(off), 3, 4]
    # image 1 -> 0 is (x, y) -> ((2x + 12) / E, (2y - 4) / E):
    # x: {0.75, 1.75, 2.75} -> {1, 2, off}, y: {-0.25, 0.75} -> {0, 1}
    #   nn0 = [1, 2, 0(off), 4, 5, 0(off)]
    # cycle nn0[nn1[i]] == i: i = 1, 2, 4, 5 (i = 3 loops to 1; i = 0 is excluded).
    data = _translation_item((-1.5, 0.5))
    compute_supervision_coarse(data, CONFIG)

    expected = torch.zeros(1, 6, 6)
    for i, j in [(1, 0), (2, 1), (4, 3), (5, 4)]:
        expected[0, i, j] = 1.0
    assert torch.equal(data["conf_matrix_gt"], expected)
    assert data["spv_b_ids"].tolist() == [0, 0, 0, 0]
    assert data["spv_i_ids"].tolist() == [1, 2, 4, 5]
    assert data["spv_j_ids"].tolist() == [0, 1, 3, 4]

    w_pt0 = torch.tensor(
        [[-12.0, 4.0], [4.0, 4.0], [20.0, 4.0], [-12.0, 20.0], [4.0, 20.0], [20.0, 20.0]]
    )
    torch.testing.assert_close(data["spv_w_pt0_i"], w_pt0[None] / E, rtol=0, atol=1e-5)
    grid = torch.tensor([[0.0, 0.0], [8.0, 0.0], [16.0, 0.0], [0.0, 8.0], [8.0, 8.0], [16.0, 8.0]])
    assert torch.equal(data["spv_pt1_i"], grid[None])

    # Fine: windows = the positives plus a far one (0, 0, 5); (w_pt0_i - pt1_i) / 2 / 2.
    data["b_ids"] = torch.tensor([0, 0, 0, 0, 0])
    data["i_ids"] = torch.tensor([1, 2, 4, 5, 0])
    data["j_ids"] = torch.tensor([0, 1, 3, 4, 5])
    compute_supervision_fine(data, CONFIG)
    a, b = (4 / E) / 4, (20 / E - 8) / 4  # 0.499975, 0.4999
    expected_f = torch.tensor(
        [[a, a], [b, a], [a, b], [b, b], [(-12 / E - 16) / 4, (4 / E - 8) / 4]]
    )
    torch.testing.assert_close(data["expec_f_gt"], expected_f, rtol=0, atol=1e-5)
    assert data["expec_f_gt"][:4].abs().max() < 1.0  # the matches fall inside their windows


def test_batch_is_vectorised_and_reverse_direction() -> None:
    # Item 1 is the same pair seen the other way round, t = (+1.5, -0.5):
    # nn1 = [1, 2, 0(off), 4, 5, 0(off)], nn0 = [0(off), 0, 1, 0(off), 3, 4]
    # -> positives (1, 2), (3, 4), (4, 5); (0, 1) is the transpose of (1, 0) but cell 0 of image 0
    # is always excluded.
    a, b = _translation_item((-1.5, 0.5)), _translation_item((1.5, -0.5))
    data = {k: torch.cat([a[k], b[k]]) for k in a if k != "dataset_name"}
    data["dataset_name"] = ["ScanNet", "ScanNet"]
    compute_supervision_coarse(data, CONFIG)
    assert _positives(data["conf_matrix_gt"]) == [
        (0, 1, 0),
        (0, 2, 1),
        (0, 4, 3),
        (0, 5, 4),
        (1, 1, 2),
        (1, 3, 4),
        (1, 4, 5),
    ]
    assert data["spv_b_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert data["spv_i_ids"].tolist() == [1, 2, 4, 5, 1, 3, 4]
    assert data["spv_j_ids"].tolist() == [0, 1, 3, 4, 2, 4, 5]


def test_no_match_gives_dummy_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    data = _translation_item((-20.0, 0.0))  # 80 px shift: nothing is covisible
    with caplog.at_level(logging.WARNING, logger="loftr.supervision"):
        compute_supervision_coarse(data, CONFIG)
    assert "No ground-truth coarse match" in caplog.text
    assert data["conf_matrix_gt"].sum() == 0
    assert (data["spv_b_ids"].tolist(), data["spv_i_ids"].tolist()) == ([0], [0])
    assert data["spv_j_ids"].tolist() == [0]


def test_mixed_datasets_rejected() -> None:
    data = _translation_item((-1.5, 0.5))
    data["dataset_name"] = ["ScanNet", "MegaDepth"]
    with pytest.raises(DataError, match="mixes datasets"):
        compute_supervision_coarse(data, CONFIG)


# --------------------------------------------------------------------- MegaDepth-style padding
def test_per_axis_scale_and_padding_never_positive() -> None:
    # A 24x24 padded input (3x3 cells) of an original at per-axis scale (2, 3); depth exists
    # everywhere (even under the padding) so that only the masks keep padded cells out.
    # t = (+1.5, -0.5): in cells x: {0.75, 1.75, 2.75} -> {1, 2, off},
    # y: {-0.25, 0.75, 1.75} -> {0, 1, 2}; back: x {off, 0, 1}, y {0, 1, 2}.
    data = _translation_item((1.5, -0.5), h=24, w=24, scale=(2.0, 3.0))
    compute_supervision_coarse(data, CONFIG)
    unmasked = _positives(data["conf_matrix_gt"])
    assert unmasked == [(0, 1, 2), (0, 3, 4), (0, 4, 5), (0, 6, 7), (0, 7, 8)]

    # Image 0: bottom row padded (cells 6, 7, 8); image 1: right column padded (2, 5, 8).
    data = _translation_item((1.5, -0.5), h=24, w=24, scale=(2.0, 3.0))
    data["mask0"] = torch.tensor([[[True, True, True], [True, True, True], [False] * 3]])
    data["mask1"] = torch.tensor([[[True, True, False]] * 3])
    compute_supervision_coarse(data, CONFIG)
    assert _positives(data["conf_matrix_gt"]) == [(0, 3, 4)]
    # Padded grid points are (0, 0); valid ones are 8 * scale * (x, y) in original pixels.
    assert data["spv_pt1_i"][0, [1, 2, 3, 4]].tolist() == [[16, 0], [0, 0], [0, 24], [16, 24]]

    # Fine ground truth of (3, 4): w_pt0_i[3] = (2 * 12 / E, 3 * 12 / E), pt1_i[4] = (16, 24),
    # divided by 2 * scale1 (per axis) and by the radius 2.
    data.update(b_ids=torch.tensor([0]), i_ids=torch.tensor([3]), j_ids=torch.tensor([4]))
    compute_supervision_fine(data, CONFIG)
    expected = torch.tensor([[(24 / E - 16) / 4 / 2, (36 / E - 24) / 6 / 2]])
    torch.testing.assert_close(data["expec_f_gt"], expected, rtol=0, atol=1e-5)


def test_coincidental_loop_through_padding_is_rejected() -> None:
    # Hand case t = (-1.5, 0.5) (positives (1, 0), (2, 1), (4, 3), (5, 4)).
    # Image 0 with cell 1 padded: its grid point moves to (0, 0), warps off image 1 -> index 0,
    # and nn0[0] = 1, so the cycle passes by coincidence; the padded cell is still rejected.
    data = _translation_item((-1.5, 0.5))
    data["mask0"] = torch.tensor([[[True, False, True], [True, True, True]]])
    compute_supervision_coarse(data, CONFIG)
    assert _positives(data["conf_matrix_gt"]) == [(0, 2, 1), (0, 4, 3), (0, 5, 4)]
    # Image 1 with cell 0 padded: its grid point is (0, 0) anyway, so (1, 0) passes the cycle
    # geometrically; only the mask removes it.
    data = _translation_item((-1.5, 0.5))
    data["mask1"] = torch.tensor([[[False, True, True], [True, True, True]]])
    compute_supervision_coarse(data, CONFIG)
    assert _positives(data["conf_matrix_gt"]) == [(0, 2, 1), (0, 4, 3), (0, 5, 4)]


def test_coarse_mask_accepts_image_resolution() -> None:
    mask = torch.zeros(1, 16, 24, dtype=torch.bool)
    mask[:, :8, :16] = True
    assert coarse_mask(mask, 2, 3).tolist() == [[True, True, False, False, False, False]]
    assert coarse_mask(mask[:, ::8, ::8], 2, 3).tolist() == coarse_mask(mask, 2, 3).tolist()
    with pytest.raises(DataError, match="mask0"):
        coarse_mask(torch.ones(1, 5, 7, dtype=torch.bool), 2, 3)


# -------------------------------------------------------------------------------- planar scene
def _planar_item(scale: float) -> tuple[dict, np.ndarray]:
    """Image 0 64x48, image 1 56x40 (network input); original pixels = input * scale."""
    K0 = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]) * [[scale], [scale], [1]]
    K1 = np.array([[55.0, 0, 28], [0, 58.0, 20], [0, 0, 1]]) * [[scale], [scale], [1]]
    R = rotation(0.05, -0.12, 0.04)
    t = np.array([0.35, -0.05, 0.1])
    n = np.array([0.15, -0.25, -1.0])
    n /= np.linalg.norm(n)
    d = 4.0  # plane n.X + d = 0 in camera 0: about 4 m in front
    depth0 = plane_depth(K0, n, d, int(48 * scale), int(64 * scale))
    # Camera-1 frame: X1 = R X + t, so the plane is (R n).X1 + d - (R n).t = 0.
    n1 = R @ n
    depth1 = plane_depth(K1, n1, d - n1 @ t, int(40 * scale), int(56 * scale))
    assert depth0.min() > 2 and depth1.min() > 2
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    H = K1 @ (R - np.outer(t, n) / d) @ np.linalg.inv(K0)  # plane-induced homography, 0 -> 1

    def f32(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32)[None]

    item = {
        "image0": torch.zeros(1, 1, 48, 64),
        "image1": torch.zeros(1, 1, 40, 56),
        "depth0": f32(depth0),
        "depth1": f32(depth1),
        "K0": f32(K0),
        "K1": f32(K1),
        "T_0to1": f32(T),
        "T_1to0": f32(np.linalg.inv(T)),
        "dataset_name": ["MegaDepth"],
    }
    if scale != 1.0:
        item["scale0"] = item["scale1"] = torch.tensor([[scale, scale]])
    return item, H


def _homography_gt(H: np.ndarray, scale: float) -> set[tuple[int, int]]:
    """Mutual-nearest coarse cells under the homography (cell 0 of image 0 excluded)."""

    def nearest(Hm: np.ndarray, w_src: int, h_src: int, w_dst: int, h_dst: int) -> list[int]:
        out = []
        for k in range(w_src * h_src):
            p = Hm @ np.array([8 * scale * (k % w_src), 8 * scale * (k // w_src), 1.0])
            x, y = np.round(p[:2] / p[2] / (8 * scale))
            out.append(int(x + y * w_dst) if 0 <= x < w_dst and 0 <= y < h_dst else 0)
        return out

    nn1 = nearest(H, 8, 6, 7, 5)
    nn0 = nearest(np.linalg.inv(H), 7, 5, 8, 6)
    return {(i, nn1[i]) for i in range(1, 48) if nn0[nn1[i]] == i}


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_planar_scene_matches_homography(scale: float) -> None:
    data, H = _planar_item(scale)
    compute_supervision_coarse(data, CONFIG)
    got = {(i, j) for _, i, j in _positives(data["conf_matrix_gt"])}
    expected = _homography_gt(H, scale)
    assert len(expected) >= 20
    assert got == expected

    # Fine ground truth: the homography's sub-cell offset, in window radii of fine pixels.
    data.update(b_ids=data["spv_b_ids"], i_ids=data["spv_i_ids"], j_ids=data["spv_j_ids"])
    compute_supervision_fine(data, CONFIG)
    i, j = data["i_ids"].numpy(), data["j_ids"].numpy()
    p0 = np.stack([8 * scale * (i % 8), 8 * scale * (i // 8), np.ones(len(i))])
    p1 = H @ p0
    p1 = (p1[:2] / p1[2]).T
    c1 = 8 * scale * np.stack([j % 7, j // 7], 1)
    expected_f = (p1 - c1) / (2 * scale) / 2
    np.testing.assert_allclose(data["expec_f_gt"].numpy(), expected_f, atol=2e-3)
    assert np.abs(expected_f).max() < 1.0


def test_planar_scene_swap_transposes() -> None:
    data, _ = _planar_item(1.0)
    swapped = {
        "image0": data["image1"],
        "image1": data["image0"],
        "depth0": data["depth1"],
        "depth1": data["depth0"],
        "K0": data["K1"],
        "K1": data["K0"],
        "T_0to1": data["T_1to0"],
        "T_1to0": data["T_0to1"],
    }
    compute_supervision_coarse(data, CONFIG)
    compute_supervision_coarse(swapped, CONFIG)
    gt, gt_swapped = data["conf_matrix_gt"], swapped["conf_matrix_gt"]
    assert gt.shape == (1, 48, 35) and gt_swapped.shape == (1, 35, 48)
    assert gt.sum() >= 20
    # Each direction excludes cell 0 of its own image 0 only; elsewhere the relation is symmetric.
    assert torch.equal(gt_swapped[:, 1:, 1:], gt.transpose(1, 2)[:, 1:, 1:])
    assert gt[:, 0].sum() == 0 and gt_swapped[:, 0].sum() == 0
