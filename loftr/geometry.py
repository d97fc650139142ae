"""Warping keypoints between two views: with depth, intrinsics and relative pose
(docs/original.md#warp-kpts), or with a homography (docs/homography.md#warp).

The geometric steps come from ``kornia.geometry`` (docs/differences.md#8); only the
final perspective division is written here, because the original divides by ``z + 1e-4`` after
applying the intrinsics, which kornia's projection does not do (it divides by exactly ``z``).
"""

from __future__ import annotations

import torch
from kornia.geometry.camera.perspective import unproject_points
from kornia.geometry.linalg import transform_points

# docs/original.md#warp-kpts: the projected point is divided by (p_z + PROJECTION_EPS), a quirk kept
# on purpose so that ground truth (and thus checkpoints trained on it) match the original to the
# last bit.
PROJECTION_EPS = 1e-4
# docs/original.md#warp-kpts: relative depth error below which a warped point counts as consistent.
DEPTH_CONSISTENCY_THR = 0.2
# docs/homography.md#warp: where a homography sends a point it maps to w <= 0 (behind the camera,
# or to the line at infinity): finite, so that no loss term becomes NaN, and far outside any image,
# so that it rounds off every coarse grid.
OFF_IMAGE = -1.0e6


def lookup_depth(depth: torch.Tensor, kpts_long: torch.Tensor) -> torch.Tensor:
    """Read depth maps at integer pixel positions, batched.

    Args:
        depth: ``(N, H, W)`` depth maps in metres.
        kpts_long: ``(N, L, 2)`` integer pixel positions ``(x, y)``.

    Returns:
        ``(N, L)`` depths. Positions outside the map read 0, i.e. "no depth" (the original would
        raise an index error there; with the datasets' padded depth this never happens).
    """
    n, h, w = depth.shape
    x, y = kpts_long[..., 0], kpts_long[..., 1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    b = torch.arange(n, device=depth.device)[:, None].expand_as(x)
    values = depth[b, y.clamp(0, h - 1), x.clamp(0, w - 1)]
    return torch.where(inside, values, torch.zeros_like(values))


def warp_kpts(
    kpts0: torch.Tensor,
    depth0: torch.Tensor,
    depth1: torch.Tensor,
    T_0to1: torch.Tensor,
    K0: torch.Tensor,
    K1: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp pixels of image 0 into image 1 through depth0, the relative pose and the intrinsics.

    Steps (docs/original.md#warp-kpts): depth is read in ``depth0`` at ``round(kpts0)``; the
    (unrounded) pixel is unprojected with ``K0`` to camera-0 coordinates, moved to camera 1 with
    ``T_0to1`` and projected with ``K1`` as ``p_xy / (p_z + 1e-4)``.

    Intrinsics are read with zero skew (kornia's pinhole model; true of every LoFTR dataset).

    Args:
        kpts0: ``(N, L, 2)`` pixel coordinates ``(x, y)`` in image 0 at the resolution of
            ``depth0`` (original image pixels).
        depth0: ``(N, H0, W0)`` depth of image 0 in metres; 0 means unknown.
        depth1: ``(N, H1, W1)`` depth of image 1 in metres; its size defines the covisibility
            bounds.
        T_0to1: ``(N, 4, 4)`` (or ``(N, 3, 4)``) rigid transform that maps camera-0 points to
            camera 1 (world-to-camera relative pose).
        K0: ``(N, 3, 3)`` intrinsics of image 0, pixels.
        K1: ``(N, 3, 3)`` intrinsics of image 1, pixels.

    Returns:
        ``(valid_mask, w_kpts0)``: ``valid_mask`` ``(N, L)`` bool, True where the depth is
        non-zero, the warped point lies strictly inside image 1 (``0 < u < W1 - 1``,
        ``0 < v < H1 - 1``) and its depth agrees with ``depth1`` to 20 % (the coarse ground truth
        ignores it, docs/original.md#coarse-gt); ``w_kpts0`` ``(N, L, 2)`` warped pixel coordinates
        in image 1.

    Example:
        >>> K = torch.eye(3)[None]
        >>> T = torch.eye(4)[None]
        >>> depth = torch.ones(1, 4, 4)
        >>> warp_kpts(torch.tensor([[[1.0, 2.0]]]), depth, depth, T, K, K)[1]
        tensor([[[0.9999, 1.9998]]])
    """
    if T_0to1.shape[-2] == 3:  # (N, 3, 4) -> (N, 4, 4)
        bottom = T_0to1.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(T_0to1.shape[0], 1, 4)
        T_0to1 = torch.cat([T_0to1, bottom], dim=-2)

    # Depth at the nearest pixel; the unprojected pixel itself is not rounded
    # (docs/original.md#warp-kpts).
    kpts0_depth = lookup_depth(depth0, kpts0.round().long())  # (N, L)
    nonzero_mask = kpts0_depth != 0

    # Unproject to camera 0, move to camera 1 (kornia), project with the original's eps.
    kpts0_cam = unproject_points(kpts0, kpts0_depth[..., None], K0[:, None])  # (N, L, 3)
    w_kpts0_cam = transform_points(T_0to1, kpts0_cam)  # (N, L, 3), camera-1 frame, metres
    w_kpts0_depth_computed = w_kpts0_cam[..., 2]
    w_kpts0_h = (K1[:, None] @ w_kpts0_cam[..., None]).squeeze(-1)  # (N, L, 3)
    # the + 1e-4 quirk (docs/original.md#warp-kpts)
    w_kpts0 = w_kpts0_h[..., :2] / (w_kpts0_h[..., 2:] + PROJECTION_EPS)

    # Covisibility in image 1 (strict inequalities, depth1's possibly padded size).
    h1, w1 = depth1.shape[-2:]
    covisible_mask = (
        (w_kpts0[..., 0] > 0)
        & (w_kpts0[..., 0] < w1 - 1)
        & (w_kpts0[..., 1] > 0)
        & (w_kpts0[..., 1] < h1 - 1)
    )

    # Depth consistency: depth1 read at the truncated warped pixel (0, 0 when not covisible).
    w_kpts0_long = torch.where(
        covisible_mask[..., None],
        torch.nan_to_num(w_kpts0).long(),
        torch.zeros_like(w_kpts0, dtype=torch.long),
    )
    w_kpts0_depth = lookup_depth(depth1, w_kpts0_long)
    consistent_mask = (
        (w_kpts0_depth - w_kpts0_depth_computed) / w_kpts0_depth
    ).abs() < DEPTH_CONSISTENCY_THR

    valid_mask = nonzero_mask & covisible_mask & consistent_mask
    return valid_mask, w_kpts0


def warp_points_homography(
    points: torch.Tensor, H: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map pixels by homographies, ``(x, y, 1) -> H (x, y, 1)`` divided by its third coordinate
    (docs/homography.md#warp).

    Args:
        points: ``(..., L, 2)`` pixel coordinates ``(x, y)``.
        H: ``(..., 3, 3)`` homographies, broadcast against ``points``' leading dimensions.

    Returns:
        ``(valid, warped)``: ``valid`` ``(..., L)`` bool, True where the third coordinate is
        positive and the result finite; ``warped`` ``(..., L, 2)`` the mapped pixels, and
        :data:`OFF_IMAGE` in both coordinates where not valid.

    Example:
        >>> H = torch.tensor([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]])
        >>> warp_points_homography(torch.tensor([[1.0, 2.0]]), H)[1]
        tensor([[4., 6.]])
    """
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    mapped = homogeneous @ H.transpose(-1, -2)  # (..., L, 3)
    w = mapped[..., 2:]
    warped = mapped[..., :2] / w
    valid = (w[..., 0] > 0) & torch.isfinite(warped).all(-1)
    return valid, torch.where(valid[..., None], warped, torch.full_like(warped, OFF_IMAGE))
