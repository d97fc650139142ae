"""Tests of loftr.geometry.warp_kpts (docs/original.md#warp-kpts) on hand-worked numbers."""

from __future__ import annotations

import pytest
import torch
from kornia.geometry.camera.perspective import project_points

from loftr.geometry import lookup_depth, warp_kpts
from tests.helpers.geometry import translation

# f = 8 px, principal point (12, 8): pixel (x, y) at depth Z is
# X = (x - 12) Z / 8, Y = (y - 8) Z / 8.
K = torch.tensor([[8.0, 0.0, 12.0], [0.0, 8.0, 8.0], [0.0, 0.0, 1.0]])


def test_identity_pose_shows_the_eps_quirk() -> None:
    depth = torch.full((1, 16, 24), 2.0)
    kpts = torch.tensor([[[4.0, 4.0], [12.0, 8.0], [20.0, 12.0]]])
    valid, w = warp_kpts(kpts, depth, depth, torch.eye(4)[None], K[None], K[None])
    # u = (8 X + 12 Z) / (Z + 1e-4) = x Z / (Z + 1e-4) with Z = 2: pixels shrink by 2 / 2.0001.
    expected = kpts * 2.0 / 2.0001
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-6)
    assert valid.tolist() == [[True, True, True]]


def test_translation_hand_worked() -> None:
    # Z = 2, t = (-1.5, 0.5, 0) m: u = (2x - 12) / 2.0001, v = (2y + 4) / 2.0001.
    depth = torch.full((1, 16, 24), 2.0)
    kpts = torch.tensor([[[0.0, 0.0], [8.0, 0.0], [16.0, 8.0]]])
    T = translation(-1.5, 0.5, 0.0)[None]
    _, w = warp_kpts(kpts, depth, depth, T, K[None], K[None])
    expected = torch.tensor([[[-12.0, 4.0], [4.0, 4.0], [20.0, 20.0]]]) / 2.0001
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-6)


def test_eps_differs_from_kornia_projection() -> None:
    # kornia divides by exactly z; the original (kept) divides K X by z + 1e-4 (cx included).
    X = torch.tensor([[[1.0, -1.0, 0.5]]])
    ours = warp_kpts(
        torch.tensor([[[20.0, 0.0]]]),
        torch.full((1, 16, 24), 0.5),
        torch.full((1, 16, 24), 0.5),
        torch.eye(4)[None],
        K[None],
        K[None],
    )[1]
    kornia_uv = project_points(X, K[None])  # (8 * 2 + 12, -16 + 8) = (28, -8)
    torch.testing.assert_close(kornia_uv, torch.tensor([[[28.0, -8.0]]]))
    # pixel (20, 0) at Z = 0.5 is X = (0.5, -0.5, 0.5); K X = (10, 0, 0.5); / 0.5001.
    torch.testing.assert_close(ours, torch.tensor([[[10.0 / 0.5001, 0.0]]]), rtol=0, atol=1e-6)


def test_valid_mask_nonzero_covisible_consistent() -> None:
    depth0 = torch.full((1, 16, 24), 2.0)
    depth0[0, 4, 4] = 0.0  # unknown depth at the first point
    depth1 = torch.full((1, 16, 24), 2.0)
    depth1[0, 3, 7] = 3.0  # inconsistent depth where the third point lands (50 % off)
    # identity pose: (x, y) -> (x, y) * 2 / 2.0001
    kpts = torch.tensor(
        [[[4.0, 4.0], [0.0, 5.0], [7.0, 3.9], [23.2, 5.0], [22.9, 5.0], [10.0, 10.0]]]
    )
    valid, _ = warp_kpts(kpts, depth0, depth1, torch.eye(4)[None], K[None], K[None])
    # 0: zero depth; 1: u = 0 is not > 0; 2: lands at (6.9997, 3.8998), truncated to (6, 3)
    # where depth1 = 2 agrees; 3: u = 23.1988 is not < 23 = W - 1; 4: u = 22.8989; 5: inside.
    assert valid.tolist() == [[False, False, True, False, True, True]]
    # A point that lands at (7.x, 3.x) reads depth1[3, 7] = 3 vs z = 2: |3 - 2| / 3 > 0.2.
    valid, w = warp_kpts(
        torch.tensor([[[7.6, 3.6]]]), depth0, depth1, torch.eye(4)[None], K[None], K[None]
    )
    assert w[0, 0].long().tolist() == [7, 3]
    assert valid.tolist() == [[False]]
    # 10 % off is still consistent.
    depth1[0, 3, 7] = 2.2
    valid, _ = warp_kpts(
        torch.tensor([[[7.6, 3.6]]]), depth0, depth1, torch.eye(4)[None], K[None], K[None]
    )
    assert valid.tolist() == [[True]]


def test_zero_depth_lands_on_camera_centre_projection() -> None:
    # X = 0 in camera 0 becomes t in camera 1: t = (1, 0, 2) projects to (8 + 24, 16) / 2.0001.
    depth = torch.zeros(1, 16, 24)
    T = translation(1.0, 0.0, 2.0)[None]
    valid, w = warp_kpts(torch.tensor([[[5.0, 5.0]]]), depth, depth, T, K[None], K[None])
    torch.testing.assert_close(w, torch.tensor([[[32.0, 16.0]]]) / 2.0001, rtol=0, atol=1e-6)
    assert valid.tolist() == [[False]]


def test_depth_lookup_rounds_and_reads_zero_outside() -> None:
    depth = torch.arange(12.0).reshape(1, 3, 4)
    kpts = torch.tensor([[[1.4, 0.6], [2.5, 1.5], [3.6, 0.0], [-1.0, 0.0], [0.0, 3.0]]])
    # round half to even: (2.5, 1.5) -> (2, 2); (3.6, 0) -> (4, 0) is outside (W = 4).
    got = lookup_depth(depth, kpts.round().long())
    assert got.tolist() == [[5.0, 10.0, 0.0, 0.0, 0.0]]


def test_batched_equals_per_item_and_accepts_3x4() -> None:
    g = torch.Generator().manual_seed(1)
    kpts = torch.rand(2, 7, 2, generator=g) * torch.tensor([23.0, 15.0])
    depth0 = 1 + torch.rand(2, 16, 24, generator=g)
    depth1 = 1 + torch.rand(2, 16, 24, generator=g)
    T = torch.stack([translation(0.1, -0.2, 0.3), translation(-0.3, 0.0, 0.1)])
    K1 = torch.stack([K, K * torch.tensor([[1.1], [1.1], [1.0]])])
    valid, w = warp_kpts(kpts, depth0, depth1, T[:, :3], K.expand(2, 3, 3), K1)
    for b in range(2):
        vb, wb = warp_kpts(kpts[b : b + 1], depth0[b : b + 1], depth1[b : b + 1], T[b : b + 1],
                           K[None], K1[b : b + 1])  # fmt: skip
        torch.testing.assert_close(w[b : b + 1], wb)
        assert torch.equal(valid[b : b + 1], vb)


@pytest.mark.parametrize("angle", [0.0, 0.2])
def test_round_trip_through_both_depths(angle: float) -> None:
    # A fronto-parallel plane seen by two cameras: warping 0 -> 1 -> 0 returns the pixel (up to the
    # eps quirk, applied twice).
    c, s = torch.cos(torch.tensor(angle)), torch.sin(torch.tensor(angle))
    T = torch.eye(4)
    T[:3, :3] = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    T[:3, 3] = torch.tensor([0.2, 0.0, 0.0])
    depth0 = torch.full((1, 16, 24), 4.0)
    kpts = torch.tensor([[[12.0, 8.0]]])
    _, w = warp_kpts(kpts, depth0, depth0, T[None], K[None], K[None])
    z1 = (T[:3, :3] @ torch.tensor([0.0, 0.0, 4.0]) + T[:3, 3])[2]
    depth1 = torch.full((1, 16, 24), float(z1))
    _, back = warp_kpts(w, depth1, depth0, torch.linalg.inv(T)[None], K[None], K[None])
    torch.testing.assert_close(back, kpts, rtol=0, atol=2e-3)
