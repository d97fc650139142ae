"""Homography metrics: corner error per pair, its AUC, and match precision by reprojection error
(docs/homography.md#metrics).

A pair of images related by a homography (``H_0to1``, stored-image pixels, pixel centres at
integer coordinates) is evaluated in the pixel frame of the network input, the resolution the
matcher saw (docs/homography.md#frame): the matches and the true homography are taken there, a
homography is estimated from the top ``max_matches`` matches by confidence with OpenCV's RANSAC,
and its error is the mean distance of image 0's four corners mapped by the estimate and by the
truth. Failures (fewer than 4 matches, a degenerate or non-finite estimate) get an infinite error,
which the AUC counts as never recalled. The AUC is :func:`loftr.evaluation.aggregate.error_auc`, the
same recall-curve area as the pose AUC, at :data:`CORNER_THRESHOLDS` pixels.

Conventions: keypoints are ``(N, 2)`` pixel ``(x, y)``; homographies are ``(3, 3)`` and map
homogeneous pixels of image 0 to image 1; scales are ``[w_orig / w_in, h_orig / h_in]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from loftr.evaluation.aggregate import ArrayLike, epidist_prec, error_auc, to_numpy, unique_pairs
from loftr.evaluation.metrics import _eval_value, _to_tensor
from loftr.geometry import warp_points_homography

__all__ = [
    "CORNER_THRESHOLDS",
    "aggregate_homography_metrics",
    "collect_homography_pair_metrics",
    "compute_homography_errors",
    "corner_error",
    "estimate_homography",
    "input_frame_homography",
    "precision_key",
    "reprojection_errors",
]

CORNER_THRESHOLDS = (3, 5, 10)
"""Corner-error thresholds of the AUC, pixels (the paper's Table 1, docs/homography.md#metrics)."""
MIN_MATCHES = 4  # a homography has 8 degrees of freedom: 4 point pairs


def _project(points: ArrayLike, H: ArrayLike) -> np.ndarray:
    """``(N, 2)`` float64 pixels mapped by ``H``; ``inf`` where the homography sends a point to
    ``w <= 0`` (it cannot be seen there)."""
    valid, warped = warp_points_homography(_to_tensor(points).reshape(-1, 2), _to_tensor(H))
    warped_np = warped.numpy()
    warped_np[~valid.numpy()] = np.inf
    return warped_np


def corner_error(H_est: ArrayLike | None, H_gt: ArrayLike, w: int, h: int) -> float:
    """Mean distance of image 0's corners mapped by the estimate and by the true homography.

    The corners are the outer pixel centres ``(0, 0)``, ``(w - 1, 0)``, ``(w - 1, h - 1)``,
    ``(0, h - 1)`` (docs/homography.md#metrics).

    Args:
        H_est: ``(3, 3)`` estimated homography, or None for a failed estimate.
        H_gt: ``(3, 3)`` true homography, in the same pixel frame.
        w: width of image 0 in that frame, pixels.
        h: height of image 0 in that frame, pixels.

    Returns:
        The mean corner distance in pixels; ``inf`` when ``H_est`` is None or sends a corner to
        ``w <= 0``.

    Example:
        >>> shift = np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]])
        >>> corner_error(shift, np.eye(3), 64, 48)
        5.0
    """
    if H_est is None:
        return float("inf")
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf: an unseen corner, an infinite error
        distances = np.linalg.norm(_project(corners, H_est) - _project(corners, H_gt), axis=1)
    error = float(np.mean(distances))
    return error if np.isfinite(error) else float("inf")


def estimate_homography(
    kpts0: ArrayLike,
    kpts1: ArrayLike,
    ransac_thr: float,
    confidence: float,
    max_iters: int,
) -> tuple[np.ndarray | None, np.ndarray]:
    """A homography from matches by OpenCV's RANSAC (``cv2.findHomography``).

    Args:
        kpts0: ``(N, 2)`` pixels of image 0.
        kpts1: ``(N, 2)`` pixels of image 1.
        ransac_thr: inlier threshold on the reprojection error in image 1, pixels.
        confidence: RANSAC confidence, in (0, 1).
        max_iters: the most RANSAC iterations.

    Returns:
        ``(H, inliers)``: the ``(3, 3)`` float64 homography or None (fewer than 4 matches, or
        OpenCV finds none or a non-finite one: a failure, counted as an infinite error), and the
        ``(N,)`` boolean inlier mask (all False on failure).
    """
    kpts0_np, kpts1_np = to_numpy(kpts0).reshape(-1, 2), to_numpy(kpts1).reshape(-1, 2)
    no_inliers = np.zeros(len(kpts0_np), dtype=bool)
    if len(kpts0_np) < MIN_MATCHES:
        return None, no_inliers
    H, mask = cv2.findHomography(
        kpts0_np,
        kpts1_np,
        cv2.RANSAC,
        ransacReprojThreshold=float(ransac_thr),
        maxIters=int(max_iters),
        confidence=float(confidence),
    )
    if H is None or H.shape != (3, 3) or not np.isfinite(H).all():
        return None, no_inliers
    return H.astype(np.float64), mask.ravel() > 0


def reprojection_errors(kpts0: ArrayLike, kpts1: ArrayLike, H: ArrayLike) -> np.ndarray:
    """Distance of each match's image-1 point from its image-0 point mapped by ``H``.

    Args:
        kpts0: ``(N, 2)`` pixels of image 0.
        kpts1: ``(N, 2)`` pixels of image 1.
        H: ``(3, 3)`` homography from image 0 to image 1, same pixel frames.

    Returns:
        ``(N,)`` float64 distances in pixels of image 1; ``inf`` where ``H`` sends the image-0
        point to ``w <= 0``.

    Example:
        >>> reprojection_errors(np.array([[1.0, 1.0]]), np.array([[4.0, 5.0]]), np.eye(3))
        array([5.])
    """
    kpts1_np = to_numpy(kpts1).reshape(-1, 2)
    with np.errstate(invalid="ignore"):
        errors = np.linalg.norm(_project(kpts0, H) - kpts1_np, axis=1)
    return np.where(np.isfinite(errors), errors, np.inf)


def input_frame_homography(
    H_0to1: ArrayLike, scale0: ArrayLike | None = None, scale1: ArrayLike | None = None
) -> np.ndarray:
    """The homography between network-input pixels of two resized images.

    With ``x_orig = S x_in``, ``S = diag(sx, sy, 1)`` (the batch's ``scale0``/``scale1``), the
    input-frame homography is ``S1^-1 H_0to1 S0`` (docs/homography.md#frame).

    Args:
        H_0to1: ``(..., 3, 3)`` homography between stored-image pixels.
        scale0: ``(..., 2)`` ``[w_orig / w_in, h_orig / h_in]`` of image 0; None: not resized.
        scale1: the same for image 1.

    Returns:
        ``(..., 3, 3)`` float64 homography between network-input pixels.

    Example:
        >>> input_frame_homography(np.eye(3), [2.0, 4.0], [1.0, 1.0])
        array([[2., 0., 0.],
               [0., 4., 0.],
               [0., 0., 1.]])
    """
    H = to_numpy(H_0to1)
    ones = np.ones(H.shape[:-2] + (1,))
    s0 = np.concatenate([to_numpy(scale0), ones], -1) if scale0 is not None else ones
    s1 = np.concatenate([to_numpy(scale1), ones], -1) if scale1 is not None else ones
    # (S1^-1 H S0)[r, c] = H[r, c] * s0[c] / s1[r]
    return H * s0[..., None, :] / s1[..., :, None]


def _input_size(data: Mapping[str, Any], b: int) -> tuple[int, int]:
    """``(w, h)`` of image 0 of item ``b`` in network-input pixels: the image's size, or the
    valid (unpadded) extent of ``mask0`` when the item is padded."""
    h_in, w_in = data["image0"].shape[-2:]
    if "mask0" not in data:
        return int(w_in), int(h_in)
    mask = data["mask0"][b]
    mask = mask[0] if mask.dim() == 3 else mask
    step = w_in // mask.shape[-1]  # the mask is at coarse or at image resolution
    rows, cols = mask.any(1), mask.any(0)
    return int(cols.sum()) * step, int(rows.sum()) * step


def _per_item(data: Mapping[str, Any], key: str, b: int) -> np.ndarray | None:
    return to_numpy(data[key][b]) if key in data else None


def compute_homography_errors(data: dict[str, Any], eval_cfg: Mapping[str, Any]) -> None:
    """Estimate the homography of every pair in the batch and write its errors
    (docs/homography.md#metrics).

    Everything is measured in network-input pixels (docs/homography.md#frame): the matches
    ``mkpts0_f``/``mkpts1_f`` (stored-image pixels) are divided by ``scale0``/``scale1`` and the
    true ``H_0to1`` is taken to that frame by :func:`input_frame_homography`. The estimate uses
    the pair's top ``max_matches`` matches by ``mconf``; the precision, all its matches.

    Reads ``mkpts0_f``, ``mkpts1_f``, ``m_bids``, ``mconf``, ``H_0to1`` ``(N, 3, 3)``,
    ``image0`` (its size) and the optional ``scale0``, ``scale1``, ``mask0``. Writes the
    per-pair lists ``H_errs`` (mean corner error, px, ``inf`` on failure), ``H_est`` (the
    estimate or None) and ``inliers`` (boolean masks over the matches used), and ``reproj_errs``
    ``(M,)`` float64: each match's reprojection error under the true homography, px.

    Args:
        data: the batch dict, updated in place.
        eval_cfg: the ``eval`` node (or a config holding it) with ``homography.ransac_thr``,
            ``ransac_conf``, ``ransac_max_iters`` and ``max_matches``.
    """
    settings = _eval_value(eval_cfg, "homography")
    m_bids = to_numpy(data["m_bids"]).astype(np.int64)
    mkpts0, mkpts1 = to_numpy(data["mkpts0_f"]), to_numpy(data["mkpts1_f"])
    mconf = to_numpy(data["mconf"]) if "mconf" in data else np.ones(len(m_bids))
    H_in = input_frame_homography(data["H_0to1"], data.get("scale0"), data.get("scale1"))
    reproj_errs = np.full(len(m_bids), np.inf)
    data.update({"H_errs": [], "H_est": [], "inliers": []})
    for b in range(len(H_in)):
        index = np.flatnonzero(m_bids == b)
        scale0, scale1 = _per_item(data, "scale0", b), _per_item(data, "scale1", b)
        kpts0 = mkpts0[index] / (scale0 if scale0 is not None else 1.0)
        kpts1 = mkpts1[index] / (scale1 if scale1 is not None else 1.0)
        reproj_errs[index] = reprojection_errors(kpts0, kpts1, H_in[b])
        top = np.argsort(-mconf[index], kind="stable")[: int(settings["max_matches"])]
        H_est, inliers = estimate_homography(
            kpts0[top],
            kpts1[top],
            float(settings["ransac_thr"]),
            float(settings["ransac_conf"]),
            int(settings["ransac_max_iters"]),
        )
        data["H_errs"].append(corner_error(H_est, H_in[b], *_input_size(data, b)))
        data["H_est"].append(H_est)
        data["inliers"].append(inliers)
    data["reproj_errs"] = reproj_errs


def collect_homography_pair_metrics(data: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The per-pair lists of a batch after :func:`compute_homography_errors`, in the form
    :func:`aggregate_homography_metrics` takes.

    Returns:
        ``{"identifiers", "reproj_errs", "H_errs", "inliers"}``, one entry per pair, the
        identifier ``"name0#name1"`` as for the pose metrics.
    """
    names0, names1 = data["pair_names"]
    m_bids = to_numpy(data["m_bids"])
    return {
        "identifiers": [f"{n0}#{n1}" for n0, n1 in zip(names0, names1, strict=True)],
        "reproj_errs": [data["reproj_errs"][m_bids == b] for b in range(len(names0))],
        "H_errs": [float(e) for e in data["H_errs"]],
        "inliers": list(data["inliers"]),
    }


def precision_key(precision_thr: float) -> str:
    """The metric name of the precision at ``precision_thr`` pixels, e.g. ``prec@3px``."""
    return f"prec@{precision_thr:g}px"


def aggregate_homography_metrics(
    metrics: Mapping[str, Sequence[Any]],
    precision_thr: float,
    thresholds: Sequence[float] = CORNER_THRESHOLDS,
) -> dict[str, float]:
    """Set numbers from per-pair homography metrics: corner-error AUC and match precision.

    Pairs are deduplicated by identifier as for the pose metrics
    (:func:`loftr.evaluation.aggregate.unique_pairs`).

    Args:
        metrics: lists over pairs: ``identifiers``, ``H_errs`` (px, ``inf`` for failures),
            ``reproj_errs`` (arrays, px); e.g. :func:`collect_homography_pair_metrics` outputs
            concatenated.
        precision_thr: a match is correct below this reprojection error, pixels.
        thresholds: AUC thresholds, pixels.

    Returns:
        ``{"auc@3", "auc@5", "auc@10", "prec@<thr>px"}`` as fractions: the AUC of the corner
        error and the mean over pairs of each pair's share of correct matches (0 for a pair
        without matches).
    """
    keep = unique_pairs(metrics["identifiers"])
    result = error_auc([metrics["H_errs"][i] for i in keep], thresholds)
    result[precision_key(precision_thr)] = epidist_prec(
        [metrics["reproj_errs"][i] for i in keep], precision_thr
    )
    return result
