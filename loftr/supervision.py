"""Coarse and fine ground truth from depth, intrinsics and relative pose
(docs/original.md#supervision), or from a homography (docs/homography.md#ground-truth).

Training and validation steps call :func:`compute_supervision_coarse` before the model's forward
(the model pads its fine-level samples with ground-truth matches) and
:func:`compute_supervision_fine` after it (docs/original.md#lightning-module). Both read and write
the batch dict in place, with the original's keys, and are vectorised over the batch. What the
batch carries chooses the warp of the coarse grids: ``H_0to1``/``H_1to0`` a homography (ours, not
the original's), else depth and pose; every other step is the same for both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from kornia.geometry import create_meshgrid

from loftr.errors import DataError
from loftr.geometry import warp_kpts, warp_points_homography

logger = logging.getLogger(__name__)


def coarse_mask(mask: torch.Tensor, h: int, w: int, key: str = "mask0") -> torch.Tensor:
    """Return a padding mask at coarse resolution, flattened.

    Args:
        mask: ``(N, h, w)`` coarse mask as the datasets produce it, or ``(N, 8h, 8w)`` /
            ``(N, 1, 8h, 8w)`` image-resolution mask (kornia's convention), True = valid.
        h: coarse height of the network input.
        w: coarse width of the network input.
        key: name of the mask in the batch, for the error message.

    Returns:
        ``(N, h * w)`` bool, True for valid (non-padded) cells.

    Raises:
        DataError: if the mask has neither the coarse nor a multiple of the coarse size.
    """
    if mask.dim() == 4:  # (N, 1, H, W)
        mask = mask[:, 0]
    mh, mw = mask.shape[-2:]
    if (mh, mw) != (h, w):
        if mh % h or mw % w or mh // h != mw // w:
            raise DataError(
                f"`{key}` has shape {tuple(mask.shape)}, expected (N, {h}, {w}) at coarse "
                f"resolution (or a whole multiple of it); the dataset must produce masks "
                f"nearest-downsampled by the coarse stride (docs/original.md#megadepth)."
            )
        step = mh // h
        mask = mask[:, ::step, ::step]  # nearest downsampling, as F.interpolate(nearest)
    return mask.reshape(mask.shape[0], h * w).bool()


def _out_of_bound(pt: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """``(N, L)`` True where the rounded coarse point ``pt`` ``(N, L, 2)`` is outside the grid."""
    return (pt[..., 0] < 0) | (pt[..., 0] >= w) | (pt[..., 1] < 0) | (pt[..., 1] >= h)


def _nearest_cell(w_pt_c: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Linear index ``x + y * w`` of the nearest coarse cell, 0 when off the grid
    (docs/original.md#coarse-gt-5, steps 5-6).

    Args:
        w_pt_c: ``(N, L, 2)`` warped points in coarse-cell units of the other image.
        w: coarse width of the other image.
        h: coarse height of the other image.

    Returns:
        ``(N, L)`` long indices in ``[0, h * w)``.
    """
    finite = torch.isfinite(w_pt_c).all(-1)
    rounded = torch.nan_to_num(w_pt_c, nan=-1.0, posinf=-1.0, neginf=-1.0).round()
    inside = finite & ~_out_of_bound(rounded, w, h)
    rounded = rounded.long()
    index = rounded[..., 0] + rounded[..., 1] * w
    return torch.where(inside, index, torch.zeros_like(index))


def _check_single_dataset(data: Mapping[str, Any]) -> None:
    names = data.get("dataset_name")
    if names is not None and not isinstance(names, str) and len(set(names)) > 1:
        raise DataError(
            f"A batch mixes datasets {sorted(set(names))}; ground truth needs one dataset per "
            f"batch (docs/original.md#supervision): build separate dataloaders for them."
        )


# what a depth-and-pose batch carries that a homography batch must not (docs/homography.md#contract)
_DEPTH_POSE_KEYS = ("depth0", "depth1", "T_0to1", "T_1to0")


def carries_homography(data: Mapping[str, Any]) -> bool:
    """Whether the batch's ground truth comes from ``H_0to1``/``H_1to0`` rather than depth and
    pose; a batch that carries both kinds is refused (docs/homography.md#ground-truth)."""
    if "H_0to1" not in data:
        return False
    both = [key for key in _DEPTH_POSE_KEYS if key in data]
    if both:
        raise DataError(
            f"A batch carries a homography (H_0to1) and depth or pose ({', '.join(both)}) of pairs "
            f"{data.get('pair_names')}; ground truth needs one kind per batch "
            f"(docs/homography.md#ground-truth): build separate dataloaders for them."
        )
    return True


def _warp_grids(
    data: Mapping[str, Any], grid_pt0_i: torch.Tensor, grid_pt1_i: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both grids (original pixels) warped into the other image: by the homographies, or by
    depth and pose; only the coordinates are used (docs/original.md#coarse-gt-4)."""
    if carries_homography(data):
        # points the homography sends to w <= 0 land at OFF_IMAGE, off every grid
        # (docs/homography.md#warp)
        H_0to1 = data["H_0to1"].to(grid_pt0_i.dtype)
        H_1to0 = data["H_1to0"].to(grid_pt1_i.dtype)
        return (
            warp_points_homography(grid_pt0_i, H_0to1)[1],
            warp_points_homography(grid_pt1_i, H_1to0)[1],
        )
    _, w_pt0_i = warp_kpts(
        grid_pt0_i, data["depth0"], data["depth1"], data["T_0to1"], data["K0"], data["K1"]
    )
    _, w_pt1_i = warp_kpts(
        grid_pt1_i, data["depth1"], data["depth0"], data["T_1to0"], data["K1"], data["K0"]
    )
    return w_pt0_i, w_pt1_i


def compute_supervision_coarse(data: dict[str, Any], config: Mapping[str, Any]) -> None:
    """Coarse ground-truth matches from depth and pose (docs/original.md#coarse-gt) or from a
    homography (docs/homography.md#ground-truth), written into ``data``.

    Every coarse cell's corner ``(8x, 8y)`` is taken to original image pixels (per-axis
    ``scale0``/``scale1`` when present), padded cells are moved to pixel (0, 0), both grids are
    warped into the other image (by ``H_0to1``/``H_1to0`` when the batch carries them, else by
    depth and pose), rounded to the nearest coarse cell (off-grid -> cell 0), and a cell pair
    ``(i, j)`` is a match when the warps agree both ways (mutual cycle check). Cell 0 of image 0
    is never a match. The warp's validity mask is ignored on purpose
    (docs/original.md#coarse-gt-4).

    Reads ``image0`` ``(N, 1, H0, W0)``, ``image1`` ``(N, 1, H1, W1)`` (only their sizes),
    ``depth0`` ``(N, H0', W0')`` / ``depth1`` metres at original resolution, ``K0``/``K1``
    ``(N, 3, 3)``, ``T_0to1``/``T_1to0`` ``(N, 4, 4)`` (or, instead of depth, intrinsics and
    pose, ``H_0to1``/``H_1to0`` ``(N, 3, 3)`` between original pixels, docs/homography.md#contract)
    and the optional ``scale0``/``scale1`` ``(N, 2)`` = ``[w_orig / w_in, h_orig / h_in]`` and
    ``mask0``/``mask1`` ``(N, H0/8, W0/8)`` bool (True = valid).

    Writes:
        - ``conf_matrix_gt``: ``(N, L, S)`` float, 1 at ground-truth matches.
        - ``spv_b_ids``, ``spv_i_ids``, ``spv_j_ids``: ``(M,)`` long indices of the matches; a
          single dummy ``(0, 0, 0)`` (and a logged warning) when there is none, so that the
          model's ground-truth padding still works (docs/original.md#coarse-gt-9).
        - ``spv_w_pt0_i``: ``(N, L, 2)`` image-0 grid warped into image 1, original pixels of
          image 1.
        - ``spv_pt1_i``: ``(N, S, 2)`` image-1 grid, original pixels, padded cells at (0, 0).

    Args:
        data: the batch dict; modified in place.
        config: the ``model`` config node (plain dict or DictConfig); reads ``resolution``.

    Raises:
        DataError: a batch that mixes datasets, or carries a homography and depth or pose.
    """
    _check_single_dataset(data)
    device = data["image0"].device
    n, _, h0_i, w0_i = data["image0"].shape
    _, _, h1_i, w1_i = data["image1"].shape
    stride = int(config["resolution"][0])
    h0, w0, h1, w1 = h0_i // stride, w0_i // stride, h1_i // stride, w1_i // stride

    # Input pixel -> original pixel, per axis (docs/original.md#coarse-gt-1). (N, 1, 2) or a float.
    scale0 = stride * data["scale0"][:, None] if "scale0" in data else stride
    scale1 = stride * data["scale1"][:, None] if "scale1" in data else stride

    # Grid corners (x, y) of every coarse cell, in original pixels
    # (docs/original.md#coarse-gt-2, #quirk-4).
    grid_pt0_c = create_meshgrid(h0, w0, False, device).reshape(1, h0 * w0, 2).repeat(n, 1, 1)
    grid_pt1_c = create_meshgrid(h1, w1, False, device).reshape(1, h1 * w1, 2).repeat(n, 1, 1)
    grid_pt0_i = scale0 * grid_pt0_c
    grid_pt1_i = scale1 * grid_pt1_c

    # Padded cells go to pixel (0, 0) (docs/original.md#coarse-gt-3).
    valid0 = valid1 = None
    if "mask0" in data:
        valid0 = coarse_mask(data["mask0"], h0, w0, "mask0")
        grid_pt0_i = grid_pt0_i * valid0[..., None]
    if "mask1" in data:
        valid1 = coarse_mask(data["mask1"], h1, w1, "mask1")
        grid_pt1_i = grid_pt1_i * valid1[..., None]

    # Warp both ways; only the coordinates are used (docs/original.md#coarse-gt-4).
    w_pt0_i, w_pt1_i = _warp_grids(data, grid_pt0_i, grid_pt1_i)

    # Nearest cell of the other image, off-grid -> 0 (docs/original.md#coarse-gt-5, steps 5-6).
    nearest_index1 = _nearest_cell(w_pt0_i / scale1, w1, h1)  # (N, L)
    nearest_index0 = _nearest_cell(w_pt1_i / scale0, w0, h0)  # (N, S)

    # Mutual cycle check; cell 0 of image 0 excluded (docs/original.md#coarse-gt-7).
    loop_back = torch.gather(nearest_index0, 1, nearest_index1)
    correct_0to1 = loop_back == torch.arange(h0 * w0, device=device)[None]
    correct_0to1[:, 0] = False
    # Padded cells already warp from pixel (0, 0), so the original relies on the cycle check to
    # reject them; a coincidental loop through a padded cell is also rejected here, explicitly.
    if valid0 is not None:
        correct_0to1 &= valid0
    if valid1 is not None:
        correct_0to1 &= torch.gather(valid1, 1, nearest_index1)

    b_ids, i_ids = torch.where(correct_0to1)
    j_ids = nearest_index1[b_ids, i_ids]
    conf_matrix_gt = torch.zeros(n, h0 * w0, h1 * w1, device=device)
    conf_matrix_gt[b_ids, i_ids, j_ids] = 1

    # docs/original.md#coarse-gt-9: a dummy match keeps the ground-truth padding working
    if b_ids.numel() == 0:
        logger.warning(
            "No ground-truth coarse match in this batch (pair names: %s); using a dummy (0, 0, 0).",
            data.get("pair_names"),
        )
        b_ids = i_ids = j_ids = torch.zeros(1, dtype=torch.long, device=device)

    data.update(
        {
            "conf_matrix_gt": conf_matrix_gt,
            "spv_b_ids": b_ids,
            "spv_i_ids": i_ids,
            "spv_j_ids": j_ids,
            "spv_w_pt0_i": w_pt0_i,
            "spv_pt1_i": grid_pt1_i,
        }
    )


def compute_supervision_fine(data: dict[str, Any], config: Mapping[str, Any]) -> None:
    """Fine ground truth of every window sent to the fine level (docs/original.md#fine-gt), written
    into ``data``.

    ``expec_f_gt = (w_pt0_i[b, i] - pt1_i[b, j]) / (fine_stride * scale1[b]) / (W // 2)``: the
    offset of the warped image-0 cell corner from the image-1 window centre, in window radii of
    fine pixels of the network input. ``|value| > 1`` lies outside the window.

    Reads ``spv_w_pt0_i``, ``spv_pt1_i`` (from :func:`compute_supervision_coarse`), the model's
    ``b_ids``, ``i_ids``, ``j_ids`` ``(M',)`` and, when present, ``scale1`` ``(N, 2)``.

    Writes:
        ``expec_f_gt``: ``(M', 2)`` float, normalised ``(x, y)`` offsets.

    Args:
        data: the batch dict; modified in place.
        config: the ``model`` node; reads ``resolution`` and ``fine_window_size``.
    """
    w_pt0_i, pt1_i = data["spv_w_pt0_i"], data["spv_pt1_i"]
    fine_stride = int(config["resolution"][1])
    radius = int(config["fine_window_size"]) // 2
    b_ids, i_ids, j_ids = data["b_ids"], data["i_ids"], data["j_ids"]

    # docs/original.md#fine-gt: scale1 (not scale0, fixed upstream in db08bc9) only for
    # MegaDepth-style items.
    scale = fine_stride * data["scale1"][b_ids] if "scale1" in data else fine_stride
    expec_f_gt = (w_pt0_i[b_ids, i_ids] - pt1_i[b_ids, j_ids]) / scale / radius
    data["expec_f_gt"] = expec_f_gt
