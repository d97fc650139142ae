"""Ground truth from a homography (docs/homography.md#ground-truth): equal to the depth path's on a
plane, within the tolerance the depth format's quantisation needs, and hand-computed cells for
identity and translations, with scales and padding."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from loftr.data.synthetic.cameras import megadepth_intrinsics
from loftr.data.synthetic.writers import SCANNET_FOCALS, SCANNET_HEIGHT, SCANNET_WIDTH
from loftr.errors import DataError
from loftr.geometry import OFF_IMAGE, PROJECTION_EPS
from loftr.supervision import compute_supervision_coarse, compute_supervision_fine
from tests.helpers.geometry import plane_depth, rotation

CONFIG = {"resolution": [8, 2], "fine_window_size": 5}
RADIUS = 2  # fine_window_size // 2
# float32 arithmetic of the two warps (coordinates up to 1000 px, relative error ~1e-7 per
# operation): an allowance on top of the quantisation bound, px of the stored image
FLOAT32_SLACK = 1e-3
SPV_KEYS = ("spv_b_ids", "spv_i_ids", "spv_j_ids")


def f32(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)[None]


# ------------------------------------------------------------------------ the plane, two ways
class Plane:
    """A plane ``n.X + d = 0`` (camera-0 frame) seen by two cameras ``X1 = R X0 + t``, with the
    stored depth of a format: ScanNet's uint16 millimetres or MegaDepth's float32."""

    def __init__(self, K0, K1, R, t, n, d, size_orig, size_in, depth_format):
        self.K0, self.K1, self.R, self.t = K0, K1, R, np.asarray(t, dtype=np.float64)
        n = np.asarray(n, dtype=np.float64)
        self.n, self.d = n / np.linalg.norm(n), d
        (self.w, self.h), (self.w_in, self.h_in) = size_orig, size_in
        self.scale = np.array([self.w / self.w_in, self.h / self.h_in])
        self.format = depth_format
        self.H = K1 @ (R - np.outer(self.t, self.n) / d) @ np.linalg.inv(K0)  # 0 -> 1
        # camera 1 sees the plane (R n).X1 + d - (R n).t = 0
        self.n1, self.d1 = R @ self.n, d - (R @ self.n) @ self.t
        self.depth0 = plane_depth(K0, self.n, self.d, self.h, self.w)
        self.depth1 = plane_depth(K1, self.n1, self.d1, self.h, self.w)
        assert self.depth0.min() > 0.5 and self.depth1.min() > 0.5  # in front everywhere

    def stored(self, depth: np.ndarray) -> np.ndarray:
        if self.format == "scannet":  # what the writer stores: rint(metres * 1000) as uint16
            return np.rint(depth * 1000.0).astype(np.uint16).astype(np.float64) / 1000.0
        return depth.astype(np.float32).astype(np.float64)

    def quantum(self, depth: np.ndarray) -> np.ndarray:
        """The largest depth error of the format at `depth`, metres: half a millimetre, or half
        a float32 step."""
        if self.format == "scannet":
            return np.full_like(depth, 0.5e-3)
        return 0.5 * np.spacing(depth.astype(np.float32)).astype(np.float64)

    def items(self) -> tuple[dict, dict]:
        common = {
            "image0": torch.zeros(1, 1, self.h_in, self.w_in),
            "image1": torch.zeros(1, 1, self.h_in, self.w_in),
            "scale0": f32(self.scale),
            "scale1": f32(self.scale),
        }
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R, self.t
        depth = {
            **common,
            "depth0": f32(self.stored(self.depth0)),
            "depth1": f32(self.stored(self.depth1)),
            "K0": f32(self.K0),
            "K1": f32(self.K1),
            "T_0to1": f32(T),
            "T_1to0": f32(np.linalg.inv(T)),
        }
        homography = {
            **{k: v.clone() for k, v in common.items()},
            "H_0to1": f32(self.H),
            "H_1to0": f32(np.linalg.inv(self.H)),
        }
        return depth, homography

    def grid(self) -> np.ndarray:
        """The coarse grid corners in stored pixels, ``(L, 2)``, as the supervision makes them."""
        ys, xs = np.mgrid[0 : self.h_in // 8, 0 : self.w_in // 8]
        return np.stack([xs.ravel(), ys.ravel()], 1) * 8 * self.scale

    def depth_warp_error(self, K_a, K_b, R, t, n, d) -> np.ndarray:
        """Per grid point, the largest distance between the exact warp and the depth path's
        (its depth off by up to one quantum, its division by z + 1e-4), px of the other image."""
        grid = self.grid()
        rays = np.linalg.inv(K_a) @ np.c_[grid, np.ones(len(grid))].T  # (3, L), z = 1
        Z = -d / (n @ rays)
        exact = K_b @ (R @ (rays * Z) + t[:, None])
        exact = exact[:2] / exact[2]
        worst = np.zeros(len(grid))
        for sign in (-1.0, 1.0):
            Zq = Z + sign * self.quantum(Z)
            p = K_b @ (R @ (rays * Zq) + t[:, None])
            warped = p[:2] / (p[2] + PROJECTION_EPS)
            worst = np.maximum(worst, np.linalg.norm(warped - exact, axis=0))
        return worst + FLOAT32_SLACK

    def tolerances(self) -> tuple[np.ndarray, np.ndarray]:
        """The tolerance of image 0's warped grid (into image 1) and of image 1's (into image 0)."""
        R_inv = self.R.T
        t_inv = -R_inv @ self.t
        return (
            self.depth_warp_error(self.K0, self.K1, self.R, self.t, self.n, self.d),
            self.depth_warp_error(self.K1, self.K0, R_inv, t_inv, self.n1, self.d1),
        )


def scannet_plane() -> Plane:
    """ScanNet's frames and depth intrinsics (the synthetic writer's), resized to 160x120 input,
    a wall about 2.5 m away, a pair 0.3 m and ~9 degrees apart."""
    f = SCANNET_FOCALS[2]
    K = np.array([[f, 0, (SCANNET_WIDTH - 1) / 2], [0, f, (SCANNET_HEIGHT - 1) / 2], [0, 0, 1]])
    R = rotation(0.05, -0.14, 0.03)
    return Plane(
        K, K, R, [0.3, -0.05, 0.08], [0.2, -0.1, -1.0], 2.5,
        (SCANNET_WIDTH, SCANNET_HEIGHT), (160, 120), "scannet",
    )  # fmt: skip


def megadepth_plane() -> Plane:
    """A MegaDepth-like 1000x750 photo's intrinsics (the synthetic writer's draw, 60 degrees),
    resized to 200x120 input (per-axis scales 5 and 6.25), a facade about 25 m away seen from
    3 m apart and ~14 degrees."""
    K, w, h = megadepth_intrinsics(np.random.default_rng(21), 60.0)
    assert (w, h) == (1000, 750)
    R = rotation(0.04, 0.22, -0.05)
    return Plane(
        K, K, R, [-3.0, 0.2, 0.5], [-0.3, 0.05, -1.0], 25.0, (w, h), (200, 120), "megadepth"
    )


def near_boundary(points: np.ndarray, tolerance: np.ndarray, stride: np.ndarray) -> np.ndarray:
    """Points whose nearest coarse cell could change within `tolerance` px: a coordinate within
    it of a rounding boundary (half-integer cell units, the grid's edges included)."""
    cells = points / stride
    gap = np.abs(cells - np.floor(cells) - 0.5) * stride  # px from the nearest half-integer
    return (gap < tolerance[:, None]).any(1)


@pytest.mark.parametrize(
    "make_plane", [scannet_plane, megadepth_plane], ids=["scannet", "megadepth"]
)
def test_on_a_plane_the_homography_gives_the_depth_ground_truth(make_plane):
    plane = make_plane()
    by_depth, by_h = plane.items()
    compute_supervision_coarse(by_depth, CONFIG)
    compute_supervision_coarse(by_h, CONFIG)
    tol0, tol1 = plane.tolerances()
    # the quantisation's pixel error at this geometry: what the agreement below needs
    assert tol0.max() < (0.05 if plane.format == "scannet" else 0.01)

    # warped grids within the tolerance, point by point; the image-1 grid identical
    w_depth, w_h = by_depth["spv_w_pt0_i"][0].double(), by_h["spv_w_pt0_i"][0].double()
    assert ((w_depth - w_h).norm(dim=-1).numpy() <= tol0).all()
    assert torch.equal(by_depth["spv_pt1_i"], by_h["spv_pt1_i"])

    # cells: equal wherever neither image's warped point sits within the tolerance of a
    # rounding boundary
    stride = 8 * plane.scale
    H_inv = np.linalg.inv(plane.H)
    grid = plane.grid()
    back = np.c_[grid, np.ones(len(grid))] @ H_inv.T
    sure0 = ~near_boundary(w_h.numpy(), tol0, stride)
    sure1 = ~near_boundary(back[:, :2] / back[:, 2:], tol1, stride)
    assert sure0.mean() > 0.9 and sure1.mean() > 0.9  # the comparison covers most cells
    gt_depth, gt_h = by_depth["conf_matrix_gt"][0], by_h["conf_matrix_gt"][0]
    block = np.ix_(sure0, sure1)
    assert torch.equal(gt_depth[block], gt_h[block])
    assert gt_h[block].sum() >= 100
    ids_depth = {tuple(r) for r in torch.stack([by_depth[k] for k in SPV_KEYS], 1).tolist()}
    ids_h = {tuple(r) for r in torch.stack([by_h[k] for k in SPV_KEYS], 1).tolist()}
    assert {m for m in ids_depth if sure0[m[1]] and sure1[m[2]]} == {
        m for m in ids_h if sure0[m[1]] and sure1[m[2]]
    }

    # fine ground truth of the same windows: within the tolerance in window radii
    for data in (by_depth, by_h):
        data.update(b_ids=by_h["spv_b_ids"], i_ids=by_h["spv_i_ids"], j_ids=by_h["spv_j_ids"])
        compute_supervision_fine(data, CONFIG)
    limit = tol0[by_h["i_ids"].numpy(), None] / (2 * plane.scale) / RADIUS
    diff = (by_depth["expec_f_gt"] - by_h["expec_f_gt"]).abs().double().numpy()
    assert (diff <= limit).all()
    assert by_h["expec_f_gt"].abs().max() < 1.0  # every match inside its window


# ----------------------------------------------------------------------- hand-computed cells
def homography_item(H: np.ndarray, h: int = 48, w: int = 64, scale=None) -> dict:
    item = {
        "image0": torch.zeros(1, 1, h, w),
        "image1": torch.zeros(1, 1, h, w),
        "H_0to1": f32(H),
        "H_1to0": f32(np.linalg.inv(H)),
        "dataset_name": ["Homographies"],
    }
    if scale is not None:
        item["scale0"] = item["scale1"] = f32(np.asarray(scale, dtype=np.float64))
    return item


def shift(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


def matches(data: dict) -> list[tuple[int, int]]:
    return [(i, j) for _, i, j in torch.nonzero(data["conf_matrix_gt"]).tolist()]


def test_identity_matches_every_cell_to_itself_but_cell_0():
    data = homography_item(np.eye(3))  # 64x48: 8x6 cells
    compute_supervision_coarse(data, CONFIG)
    assert matches(data) == [(i, i) for i in range(1, 48)]
    assert data["spv_i_ids"].tolist() == data["spv_j_ids"].tolist() == list(range(1, 48))
    assert data["spv_b_ids"].tolist() == [0] * 47
    torch.testing.assert_close(data["spv_w_pt0_i"], data["spv_pt1_i"])


def test_a_one_cell_translation_moves_every_cell_one_column_right():
    # (+8, 0) px: cell (x, y) -> (x + 1, y); the last column (x = 7) lands off the grid
    data = homography_item(shift(8.0, 0.0))
    compute_supervision_coarse(data, CONFIG)
    expected = [(x + 8 * y, x + 1 + 8 * y) for y in range(6) for x in range(7) if x + 8 * y]
    assert matches(data) == expected and len(expected) == 41


def test_a_sub_cell_translation_keeps_the_cells_and_gives_the_offsets_by_hand():
    # (+2, +1) px: (8x, 8y) -> (8x + 2, 8y + 1), 0.25 and 0.125 cells: the same cell; back,
    # (8x - 2, 8y - 1) rounds to the same cell too (x = 0: -0.25 rounds to 0)
    data = homography_item(shift(2.0, 1.0))
    compute_supervision_coarse(data, CONFIG)
    assert matches(data) == [(i, i) for i in range(1, 48)]
    # expec_f_gt = (w_pt0 - pt1) / fine stride 2 / radius 2 = (2, 1) / 4
    data.update(b_ids=data["spv_b_ids"], i_ids=data["spv_i_ids"], j_ids=data["spv_j_ids"])
    compute_supervision_fine(data, CONFIG)
    torch.testing.assert_close(
        data["expec_f_gt"], torch.tensor([[0.5, 0.25]]).expand(47, 2), rtol=0, atol=1e-6
    )


def test_translations_in_stored_pixels_follow_per_axis_scales():
    # stored images (128, 144) for a 64x48 input: scale (2, 3). A stored shift of (16, 0) is
    # one input cell: the one-column pattern again
    data = homography_item(shift(16.0, 0.0), scale=(2.0, 3.0))
    compute_supervision_coarse(data, CONFIG)
    assert len(matches(data)) == 41 and (9, 10) in matches(data)
    assert data["spv_pt1_i"][0, 9].tolist() == [16.0, 24.0]  # cell (1, 1): 8 * (2, 3)
    # a stored shift of (4, 3) is (2, 1) input px: offsets (4 / (2 * 2), 3 / (2 * 3)) / 2
    data = homography_item(shift(4.0, 3.0), scale=(2.0, 3.0))
    compute_supervision_coarse(data, CONFIG)
    assert matches(data) == [(i, i) for i in range(1, 48)]
    data.update(b_ids=data["spv_b_ids"], i_ids=data["spv_i_ids"], j_ids=data["spv_j_ids"])
    compute_supervision_fine(data, CONFIG)
    torch.testing.assert_close(
        data["expec_f_gt"], torch.tensor([[0.5, 0.25]]).expand(47, 2), rtol=0, atol=1e-6
    )


def test_padded_cells_never_match():
    # identity; image 0's last two columns and image 1's last row are padding
    data = homography_item(np.eye(3))
    data["mask0"] = torch.ones(1, 6, 8, dtype=torch.bool)
    data["mask0"][:, :, 6:] = False
    data["mask1"] = torch.ones(1, 6, 8, dtype=torch.bool)
    data["mask1"][:, 5, :] = False
    compute_supervision_coarse(data, CONFIG)
    expected = [(i, i) for i in range(1, 40) if i % 8 < 6]
    assert matches(data) == expected
    assert data["spv_pt1_i"][0, 40:].abs().sum() == 0  # image 1's padded grid points at (0, 0)


def test_points_sent_behind_the_camera_are_off_the_grid_not_nan():
    # w = 1 - x / 32: image-0 points from x = 32 on map to w <= 0
    H = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1 / 32, 0, 1.0]])
    data = homography_item(H)
    compute_supervision_coarse(data, CONFIG)
    w_pt0 = data["spv_w_pt0_i"][0]
    assert torch.isfinite(w_pt0).all()
    behind = torch.tensor([8 * (i % 8) >= 32 for i in range(48)])
    assert (w_pt0[behind] == OFF_IMAGE).all() and not (w_pt0[~behind] == OFF_IMAGE).any()
    assert not any(i % 8 >= 4 for i, _ in matches(data))
    data.update(b_ids=torch.tensor([0]), i_ids=torch.tensor([5]), j_ids=torch.tensor([5]))
    compute_supervision_fine(data, CONFIG)
    assert torch.isfinite(data["expec_f_gt"]).all()


def test_a_batch_of_homographies_is_vectorised():
    a, b = homography_item(np.eye(3)), homography_item(shift(8.0, 0.0))
    data = {k: torch.cat([a[k], b[k]]) for k in a if k != "dataset_name"}
    data["dataset_name"] = ["Homographies", "Homographies"]
    compute_supervision_coarse(data, CONFIG)
    assert (data["spv_b_ids"] == 0).sum() == 47 and (data["spv_b_ids"] == 1).sum() == 41


def test_no_overlap_gives_the_dummy_match(caplog):
    data = homography_item(shift(200.0, 0.0))
    with caplog.at_level(logging.WARNING, logger="loftr.supervision"):
        compute_supervision_coarse(data, CONFIG)
    assert "No ground-truth coarse match" in caplog.text
    assert [data[k].tolist() for k in SPV_KEYS] == [[0], [0], [0]]


def test_a_batch_with_both_kinds_of_ground_truth_is_refused():
    by_depth, by_h = scannet_plane().items()
    with pytest.raises(DataError, match=r"^A batch carries a homography \(H_0to1\) and depth"):
        compute_supervision_coarse({**by_depth, **by_h}, CONFIG)
    mixed = homography_item(np.eye(3))
    mixed["dataset_name"] = ["Homographies", "ScanNet"]
    with pytest.raises(DataError, match="mixes datasets"):
        compute_supervision_coarse(mixed, CONFIG)
