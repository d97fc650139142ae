"""Evaluation metrics: epipolar error per match, relative pose per pair, pose AUC and precision.

The building blocks keep the original LoFTR names (`src/utils/metrics.py`) so that numbers can
be checked against it; the maths is docs/original.md#metrics. Geometry comes from kornia
(docs/differences.md#8): the essential matrix, the symmetric epipolar distance and the angular
pose errors. The paper's pose protocol uses OpenCV's RANSAC; USAC_MAGSAC and poselib are offered as
named estimators, and every number carries a `loftr.evaluation.protocol.Protocol`
(docs/differences.md#7) so that numbers made differently are never compared.

Conventions: keypoints are ``(N, 2)`` pixel ``(x, y)`` in the original images; ``K0``, ``K1`` are
``(3, 3)`` pinhole intrinsics; ``T_0to1`` is ``(4, 4)`` and maps camera-0 points to camera 1;
angles are in degrees; epipolar errors are squared distances in normalised camera coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from kornia.geometry.epipolar import essential_from_Rt, symmetrical_epipolar_distance
from kornia.metrics import angle_error_mat, angle_error_vec

from loftr.errors import ConfigError
from loftr.evaluation.aggregate import ArrayLike, epidist_prec, error_auc, to_numpy, unique_pairs

__all__ = [
    "ESTIMATORS",
    "aggregate_metrics",
    "collect_pair_metrics",
    "compute_pose_errors",
    "compute_symmetrical_epipolar_errors",
    "estimate_pose",
    "relative_pose_error",
    "symmetric_epipolar_distance",
]

PoseEstimate = tuple[np.ndarray, np.ndarray, np.ndarray]


def _to_tensor(x: ArrayLike | Sequence[float]) -> torch.Tensor:
    """A float64 CPU tensor of a tensor or array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# Epipolar error per match
# --------------------------------------------------------------------------------------------


def _normalise_points(pts: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixels to normalised camera coordinates, ``((x - cx) / fx, (y - cy) / fy)``.

    Only fx, fy, cx, cy are read (no skew), as in the original (docs/original.md#metrics).

    Args:
        pts: ``(..., N, 2)`` pixel coordinates.
        K: ``(..., 3, 3)`` intrinsics.

    Returns:
        ``(..., N, 2)`` normalised coordinates.
    """
    principal = torch.stack([K[..., 0, 2], K[..., 1, 2]], dim=-1).unsqueeze(-2)
    focal = torch.stack([K[..., 0, 0], K[..., 1, 1]], dim=-1).unsqueeze(-2)
    return (pts - principal) / focal


def symmetric_epipolar_distance(
    pts0: torch.Tensor, pts1: torch.Tensor, E: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor
) -> torch.Tensor:
    """Squared symmetric epipolar distance of matches, in normalised camera coordinates
    (docs/original.md#metrics).

    With ``p0``, ``p1`` the normalised homogeneous points,
    ``d = (p1^T E p0)^2 * (1 / ((E p0)_1^2 + (E p0)_2^2) + 1 / ((E^T p1)_1^2 + (E^T p1)_2^2))``.
    kornia's ``symmetrical_epipolar_distance(..., squared=True)`` computes exactly this once the
    points are normalised, so it is used with ``E`` in place of a fundamental matrix.

    Args:
        pts0: ``(N, 2)`` pixel ``(x, y)`` in image 0.
        pts1: ``(N, 2)`` pixel ``(x, y)`` in image 1.
        E: ``(3, 3)`` essential matrix with ``p1^T E p0 = 0`` (``E = [t]x R`` of ``T_0to1``).
        K0: ``(3, 3)`` intrinsics of image 0.
        K1: ``(3, 3)`` intrinsics of image 1.

    Returns:
        ``(N,)`` squared distances (dimensionless, normalised coordinates). A match whose epipolar
        line is degenerate gets ``inf``.

    Example:
        >>> K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
        >>> E = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # t = (1, 0, 0), R = I
        >>> pts = torch.tensor([[60.0, 40.0]])
        >>> symmetric_epipolar_distance(pts, pts + torch.tensor([[0.0, 10.0]]), E, K, K)
        tensor([0.0200])
    """
    p0 = _normalise_points(pts0, K0)
    p1 = _normalise_points(pts1, K1)
    return symmetrical_epipolar_distance(p0, p1, E, squared=True)


def _essential_from_T(T_0to1: torch.Tensor) -> torch.Tensor:
    """``E = [t]x R`` of relative poses ``(..., 4, 4)`` (camera 0 at the origin), via kornia."""
    R = T_0to1[..., :3, :3]
    t = T_0to1[..., :3, 3:4]
    eye = torch.eye(3, dtype=T_0to1.dtype, device=T_0to1.device).expand_as(R)
    return essential_from_Rt(eye, torch.zeros_like(t), R, t)


def compute_symmetrical_epipolar_errors(data: dict[str, Any]) -> None:
    """Write ``data["epi_errs"]``: the squared symmetric epipolar error of every match
    (docs/original.md#metrics).

    Reads ``mkpts0_f``, ``mkpts1_f`` (``(M, 2)`` pixels of the original images), ``m_bids``
    (``(M,)`` batch index of each match), ``T_0to1`` (``(B, 4, 4)``), ``K0``, ``K1``
    (``(B, 3, 3)``). The ground-truth ``E`` of each pair comes from ``T_0to1``.

    Args:
        data: the batch dict, updated in place with ``epi_errs`` of shape ``(M,)`` (the dtype and
            device of ``mkpts0_f``), in the order of the matches.
    """
    mkpts0, mkpts1, m_bids = data["mkpts0_f"], data["mkpts1_f"], data["m_bids"]
    E = _essential_from_T(data["T_0to1"].to(mkpts0.dtype))
    # every match at once, each with its own pair's E, K0, K1: (M, 1, 2) points, (M, 3, 3)
    b = m_bids.long()
    errs = symmetric_epipolar_distance(
        mkpts0[:, None, :],
        mkpts1[:, None, :],
        E[b],
        data["K0"].to(mkpts0.dtype)[b],
        data["K1"].to(mkpts0.dtype)[b],
    )
    data["epi_errs"] = errs[:, 0]


# --------------------------------------------------------------------------------------------
# Relative pose per pair
# --------------------------------------------------------------------------------------------


def _normalised_keypoints(kpts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels to normalised coordinates with fx, fy, cx, cy (docs/original.md#metrics), ``(N, 2)``
    float64."""
    return (kpts - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def _estimate_pose_opencv(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    thresh: float,
    conf: float,
    method: int,
) -> PoseEstimate | None:
    """findEssentialMat on normalised points, then recoverPose on every candidate
    (docs/original.md#metrics)."""
    # The threshold is converted with the mean of (fx0, fy1, fx0, fy1): docs/original.md#metrics
    # keeps the original's choice of focal lengths on purpose, so numbers match.
    norm_thresh = thresh / np.mean([K0[0, 0], K1[1, 1], K0[0, 0], K1[1, 1]])
    p0 = _normalised_keypoints(kpts0, K0)
    p1 = _normalised_keypoints(kpts1, K1)
    E, mask = cv2.findEssentialMat(
        p0, p1, np.eye(3), threshold=norm_thresh, prob=conf, method=method
    )
    if E is None:
        return None
    best_num_inliers = 0
    result: PoseEstimate | None = None
    # findEssentialMat may stack several 3x3 solutions; the one with the most cheirality
    # inliers wins. The same `mask` is passed to every recoverPose call, which updates it in
    # place, exactly as the original does (docs/original.md#metrics): the inliers are that mask.
    for E_candidate in np.split(E, len(E) // 3):
        num_inliers, R, t, _ = cv2.recoverPose(E_candidate, p0, p1, np.eye(3), 1e9, mask=mask)
        if num_inliers > best_num_inliers:
            best_num_inliers = num_inliers
            result = (R, t[:, 0], mask.ravel() > 0)
    return result


def _estimate_pose_poselib(
    kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, thresh: float, conf: float
) -> PoseEstimate | None:
    """poselib's LO-RANSAC on pixel keypoints with pinhole cameras; thresh is in pixels."""
    try:
        import poselib  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConfigError(
            "eval.pose_estimator='poselib' needs the optional poselib package: "
            "`pip install poselib`, or choose pose_estimator=RANSAC (the paper protocol) or "
            "USAC_MAGSAC."
        ) from exc

    def camera(K: np.ndarray) -> dict[str, Any]:
        return {
            "model": "PINHOLE",
            "width": int(round(2 * K[0, 2])),
            "height": int(round(2 * K[1, 2])),
            "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
        }

    pose, info = poselib.estimate_relative_pose(
        kpts0,
        kpts1,
        camera(K0),
        camera(K1),
        {"max_epipolar_error": float(thresh), "success_prob": float(conf)},
        {},
    )
    inliers = np.asarray(info.get("inliers", []), dtype=bool)
    if pose is None or inliers.sum() < 5:
        return None
    t = np.asarray(pose.t, dtype=np.float64)
    return np.asarray(pose.R, dtype=np.float64), t / np.linalg.norm(t), inliers


ESTIMATORS: dict[str, str] = {
    "RANSAC": (
        "OpenCV findEssentialMat RANSAC + recoverPose "
        "(the paper protocol, docs/original.md#metrics)"
    ),
    "USAC_MAGSAC": "OpenCV findEssentialMat USAC_MAGSAC + recoverPose",
    "poselib": "poselib.estimate_relative_pose LO-RANSAC (optional: pip install poselib)",
}
"""The named pose estimators, each with what it runs; the name is part of the `Protocol`."""


def check_pose_estimator(method: str) -> None:
    """Raise ConfigError unless `method` is one of :data:`ESTIMATORS`."""
    if method not in ESTIMATORS:
        raise ConfigError(
            f"Unknown pose estimator {method!r} (eval.pose_estimator); choose one of "
            f"{sorted(ESTIMATORS)}."
        )


def estimate_pose(
    kpts0: ArrayLike,
    kpts1: ArrayLike,
    K0: ArrayLike,
    K1: ArrayLike,
    thresh: float,
    conf: float = 0.99999,
    method: str = "RANSAC",
) -> PoseEstimate | None:
    """Relative pose from matches, by an essential matrix and a cheirality check
    (docs/original.md#metrics).

    Args:
        kpts0: ``(N, 2)`` pixel ``(x, y)`` in image 0 (original resolution).
        kpts1: ``(N, 2)`` pixel ``(x, y)`` in image 1.
        K0: ``(3, 3)`` intrinsics of image 0.
        K1: ``(3, 3)`` intrinsics of image 1.
        thresh: inlier threshold in pixels (0.5 in the paper protocol); the OpenCV estimators
            divide it by the mean focal length, poselib takes pixels.
        conf: RANSAC confidence.
        method: one of :data:`ESTIMATORS`: ``"RANSAC"`` (the paper), ``"USAC_MAGSAC"``,
            ``"poselib"``.

    Returns:
        ``(R, t, inliers)``: ``(3, 3)`` rotation and ``(3,)`` unit translation of ``T_0to1``
        (camera 0 to camera 1, up to scale), and the ``(N,)`` boolean inlier mask; or None when
        there are fewer than 5 matches or no pose is found (a failure, counted as an infinite
        error).

    Raises:
        ConfigError: an unknown estimator name, or poselib asked for but not installed.
    """
    check_pose_estimator(method)
    kpts0_np, kpts1_np = to_numpy(kpts0), to_numpy(kpts1)
    if len(kpts0_np) < 5:
        return None
    K0_np, K1_np = to_numpy(K0), to_numpy(K1)
    if method == "poselib":
        return _estimate_pose_poselib(kpts0_np, kpts1_np, K0_np, K1_np, thresh, conf)
    cv_method = cv2.RANSAC if method == "RANSAC" else cv2.USAC_MAGSAC
    return _estimate_pose_opencv(kpts0_np, kpts1_np, K0_np, K1_np, thresh, conf, cv_method)


def relative_pose_error(
    T_0to1: ArrayLike, R: ArrayLike, t: ArrayLike, ignore_gt_t_thr: float = 0.0
) -> tuple[float, float]:
    """Angular errors of an estimated relative pose against the ground truth
    (docs/original.md#metrics).

    The translation error is the angle between ``t`` and the ground-truth translation, folded as
    ``min(e, 180 - e)`` because an essential matrix fixes t only up to sign; it is set to 0 when
    the ground-truth translation is shorter than ``ignore_gt_t_thr`` (0, so never, in the
    original). The rotation error is the geodesic angle of ``R^T R_gt``. Both come from
    ``kornia.metrics`` (atan2 forms, equal to the original's arccos forms up to rounding).

    Args:
        T_0to1: ``(4, 4)`` ground-truth pose, camera 0 to camera 1.
        R: ``(3, 3)`` estimated rotation.
        t: ``(3,)`` estimated translation (any length).
        ignore_gt_t_thr: ground-truth translation norm under which t_err is 0 (scene units).

    Returns:
        ``(t_err, R_err)`` in degrees.
    """
    T = _to_tensor(T_0to1)
    R_t, t_t = _to_tensor(R), _to_tensor(t).reshape(3)
    t_gt = T[:3, 3]
    t_err = float(angle_error_vec(t_t, t_gt))
    t_err = min(t_err, 180.0 - t_err)  # the sign of t is ambiguous (docs/original.md#metrics)
    if float(torch.linalg.norm(t_gt)) < ignore_gt_t_thr:
        t_err = 0.0
    R_err = float(angle_error_mat(R_t, T[:3, :3]))
    return t_err, R_err


def _eval_value(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]`` from the ``eval`` node (or a config holding one), or a ConfigError."""
    node = config["eval"] if "eval" in config else config
    if key not in node:
        raise ConfigError(f"Missing evaluation key eval.{key} (set it in conf/train.yaml).")
    return node[key]


def compute_pose_errors(data: dict[str, Any], config: Mapping[str, Any]) -> None:
    """Estimate the pose of every pair in the batch and write its errors (docs/original.md#metrics).

    Reads ``mkpts0_f``, ``mkpts1_f``, ``m_bids``, ``K0``, ``K1``, ``T_0to1`` and writes the
    per-pair lists ``R_errs``, ``t_errs`` (degrees, ``inf`` on failure) and ``inliers`` (boolean
    arrays, empty on failure).

    Args:
        data: the batch dict, updated in place.
        config: the ``eval`` node (or a config holding it) with ``ransac_pixel_thr``,
            ``ransac_conf`` and ``pose_estimator``.
    """
    thresh = float(_eval_value(config, "ransac_pixel_thr"))
    conf = float(_eval_value(config, "ransac_conf"))
    method = str(_eval_value(config, "pose_estimator"))
    m_bids = data["m_bids"]
    mkpts0 = to_numpy(data["mkpts0_f"])
    mkpts1 = to_numpy(data["mkpts1_f"])
    m_bids_np = m_bids.detach().cpu().numpy() if isinstance(m_bids, torch.Tensor) else m_bids
    K0, K1, T_0to1 = to_numpy(data["K0"]), to_numpy(data["K1"]), to_numpy(data["T_0to1"])
    data.update({"R_errs": [], "t_errs": [], "inliers": []})
    for b in range(K0.shape[0]):
        mask = m_bids_np == b
        estimate = estimate_pose(mkpts0[mask], mkpts1[mask], K0[b], K1[b], thresh, conf, method)
        if estimate is None:
            data["R_errs"].append(np.inf)
            data["t_errs"].append(np.inf)
            data["inliers"].append(np.array([], dtype=bool))
            continue
        R, t, inliers = estimate
        t_err, R_err = relative_pose_error(T_0to1[b], R, t)
        data["R_errs"].append(R_err)
        data["t_errs"].append(t_err)
        data["inliers"].append(inliers)


def collect_pair_metrics(data: dict[str, Any]) -> dict[str, list[Any]]:
    """The per-pair metric lists of a batch, in the form :func:`aggregate_metrics` takes.

    Call after :func:`compute_symmetrical_epipolar_errors` and :func:`compute_pose_errors`.
    The identifier of a pair is ``"name0#name1"`` from the collated ``pair_names`` (a pair of
    lists, docs/original.md#datamodule).

    Args:
        data: the batch dict with ``pair_names``, ``m_bids``, ``epi_errs``, ``R_errs``,
            ``t_errs``, ``inliers``.

    Returns:
        ``{"identifiers", "epi_errs", "R_errs", "t_errs", "inliers"}``, one entry per pair;
        ``epi_errs`` holds a float64 numpy array of the pair's matches.
    """
    names0, names1 = data["pair_names"]
    m_bids = data["m_bids"]
    epi_errs = data["epi_errs"]
    return {
        "identifiers": [f"{n0}#{n1}" for n0, n1 in zip(names0, names1, strict=True)],
        "epi_errs": [to_numpy(epi_errs[m_bids == b]) for b in range(len(names0))],
        "R_errs": list(data["R_errs"]),
        "t_errs": list(data["t_errs"]),
        "inliers": list(data["inliers"]),
    }


# --------------------------------------------------------------------------------------------
# Aggregation over a test set
# --------------------------------------------------------------------------------------------


def aggregate_metrics(
    metrics: Mapping[str, Sequence[Any]],
    epi_err_thr: float = 5e-4,
    thresholds: Sequence[float] = (5, 10, 20),
) -> dict[str, float]:
    """Test-set numbers from per-pair metrics: pose AUC and epipolar precision
    (docs/original.md#metrics).

    Pairs are deduplicated by identifier (``name0#name1``): a pair seen several times (e.g. the
    padding of a distributed sampler) counts once, with its last occurrence, in the position of
    its first one (as the original does).

    Args:
        metrics: lists over pairs: ``identifiers``, ``epi_errs`` (arrays), ``R_errs``,
            ``t_errs`` (degrees); e.g. :func:`collect_pair_metrics` outputs concatenated.
        epi_err_thr: precision threshold on the squared normalised epipolar error.
        thresholds: AUC thresholds in degrees.

    Returns:
        ``{"auc@5", "auc@10", "auc@20", f"prec@{epi_err_thr:.0e}"}`` (``prec@5e-04`` by
        default), as fractions.
    """
    keep = unique_pairs(metrics["identifiers"])
    R_errs = np.asarray(metrics["R_errs"], dtype=np.float64)[keep]
    t_errs = np.asarray(metrics["t_errs"], dtype=np.float64)[keep]
    pose_errors = np.maximum(R_errs, t_errs)
    result = error_auc(pose_errors, thresholds)
    result[f"prec@{epi_err_thr:.0e}"] = epidist_prec(
        [metrics["epi_errs"][i] for i in keep], epi_err_thr
    )
    return result
