"""Aggregation over a test set, shared by the pose and the homography protocols: the AUC of
per-pair errors, the mean precision of per-pair match errors, and the deduplication of pairs seen
twice (docs/original.md#metrics).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from loftr.errors import ConfigError

ArrayLike = np.ndarray | torch.Tensor
# numpy 2 renamed trapz to trapezoid; the rule is the same.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def to_numpy(x: ArrayLike | Sequence[float]) -> np.ndarray:
    """A float64 numpy copy of a tensor or array (the original evaluates in numpy float64)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def error_auc(
    errors: Iterable[float] | np.ndarray, thresholds: Sequence[float] = (5, 10, 20)
) -> dict[str, float]:
    """Area under the recall-vs-error curve up to each threshold: SuperGlue's protocol
    (docs/original.md#metrics).

    The sorted errors, with a 0 prepended, are the x of a curve whose y is the recall
    ``linspace(0, 1, n + 1)``; the curve is cut at the threshold (held flat from the last error
    below it) and its trapezoid area divided by the threshold. Infinite errors (failures) are
    never recalled. Unlike the original, ``thresholds`` is honoured; the default gives its
    numbers.

    Args:
        errors: per-pair pose errors in degrees (``max(R_err, t_err)``), ``inf`` for failures.
        thresholds: positive thresholds in degrees.

    Returns:
        ``{"auc@5": ..., "auc@10": ..., "auc@20": ...}`` as fractions in [0, 1] (the key prints
        the threshold with ``:g``).

    Example:
        >>> error_auc([0.0, 10.0], thresholds=(5,))  # one perfect pair, one beyond 5 degrees
        {'auc@5': 0.5}
    """
    errs = np.sort(np.asarray(list(errors), dtype=np.float64))
    if errs.size == 0:
        return {f"auc@{thr:g}": 0.0 for thr in thresholds}
    errs = np.concatenate([[0.0], errs])
    recall = np.linspace(0.0, 1.0, len(errs))
    aucs: dict[str, float] = {}
    for thr in thresholds:
        if thr <= 0:
            raise ConfigError(f"AUC thresholds must be positive degrees; got {thr}.")
        k = int(np.searchsorted(errs, thr))  # first error >= thr; k >= 1 since errs[0] = 0
        x = np.concatenate([errs[:k], [thr]])
        y = np.concatenate([recall[:k], [recall[k - 1]]])
        aucs[f"auc@{thr:g}"] = float(_trapezoid(y, x) / thr)
    return aucs


def epidist_prec(errors_list: Sequence[ArrayLike], thr: float) -> float:
    """Mean over pairs of the fraction of matches with epipolar error below ``thr``
    (docs/original.md#metrics).

    Args:
        errors_list: per pair, the ``(M_i,)`` squared epipolar errors of its matches.
        thr: threshold on the squared normalised error (5e-4 in the paper protocol).

    Returns:
        The mean precision in [0, 1]; a pair without matches counts as 0, no pairs give 0.

    Example:
        >>> epidist_prec([np.array([1e-4, 1e-3]), np.array([])], 5e-4)
        0.25
    """
    precs = []
    for errs in errors_list:
        errs_np = to_numpy(errs)
        precs.append(float(np.mean(errs_np < thr)) if errs_np.size > 0 else 0.0)
    return float(np.mean(precs)) if precs else 0.0


def unique_pairs(identifiers: Sequence[str]) -> list[int]:
    """The index of each distinct pair's last occurrence, in the order of first occurrences.

    A pair seen several times (e.g. the padding of a distributed sampler) counts once, as the
    original counts it (docs/original.md#metrics).

    Example:
        >>> unique_pairs(["a#b", "c#d", "a#b"])
        [2, 1]
    """
    last_index: dict[str, int] = {}
    for i, identifier in enumerate(identifiers):
        last_index[identifier] = i  # an existing key keeps its first position
    return list(last_index.values())
