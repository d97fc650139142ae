"""LoFTR's training loss: focal (or cross-entropy) coarse loss plus the fine L2 loss
(docs/original.md#losses).

``loss = coarse_weight * L_c + fine_weight * L_f``. The coarse term supervises the whole
confidence matrix ("dense", ``match_coarse.sparse_spvs: false``) or only the ground-truth
positives (plus, for Sinkhorn, the dustbins of unmatched rows and columns: "sparse"); the fine
term is an L2 loss on the expected sub-pixel offset, optionally weighted by inverse uncertainty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from loftr.errors import ConfigError
from loftr.supervision import coarse_mask

logger = logging.getLogger(__name__)

COARSE_TYPES = ("focal", "cross_entropy")
FINE_TYPES = ("l2_with_std", "l2")
MATCH_TYPES = ("dual_softmax", "sinkhorn")
# docs/original.md#coarse-loss: confidences are clamped to [CONF_EPS, 1 - CONF_EPS] before the
# logarithms.
CONF_EPS = 1e-6
# docs/original.md#fine-loss: standard deviations are clamped from below before inversion.
STD_EPS = 1e-10


def check_loss_config(config: Mapping[str, Any]) -> None:
    """Reject loss settings the loss cannot compute, naming the keys at fault.

    Args:
        config: the ``model`` config node (plain dict or DictConfig).

    Raises:
        ConfigError: on an unknown ``model.loss.coarse_type`` / ``model.loss.fine_type`` /
            ``model.match_coarse.match_type``, or cross-entropy with sparse supervision
            (docs/original.md#coarse-loss: the original implements cross-entropy for dense
            supervision only).
    """
    coarse_type = config["loss"]["coarse_type"]
    fine_type = config["loss"]["fine_type"]
    match_type = config["match_coarse"]["match_type"]
    sparse = bool(config["match_coarse"]["sparse_spvs"])
    if coarse_type not in COARSE_TYPES:
        raise ConfigError(
            f"model.loss.coarse_type={coarse_type!r} is unknown; use one of {COARSE_TYPES}."
        )
    if fine_type not in FINE_TYPES:
        raise ConfigError(
            f"model.loss.fine_type={fine_type!r} is unknown; use one of {FINE_TYPES}."
        )
    if match_type not in MATCH_TYPES:
        raise ConfigError(
            f"model.match_coarse.match_type={match_type!r} is unknown; use one of {MATCH_TYPES} "
            f"(the `matcher=ds|ot` group sets it)."
        )
    if coarse_type == "cross_entropy" and sparse:
        raise ConfigError(
            "model.loss.coarse_type=cross_entropy needs dense supervision, but "
            "model.match_coarse.sparse_spvs=true (docs/original.md#coarse-loss: sparse "
            "cross-entropy is not implemented). Use `supervision=dense` or "
            "model.loss.coarse_type=focal."
        )


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 if it is a 16-bit float, as CPU autocast leaves the confidences and the
    fine expectations: there 1 - CONF_EPS rounds to 1 and (float16) STD_EPS to 0."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _mean(x: torch.Tensor) -> torch.Tensor:
    """Mean that is 0 (still attached to the graph) for an empty tensor instead of NaN."""
    return x.mean() if x.numel() > 0 else x.sum()


class LoFTRLoss(nn.Module):
    """The LoFTR loss (docs/original.md#losses).

    Args:
        config: the ``model`` config node (plain dict or DictConfig): reads ``loss.*``,
            ``match_coarse.match_type`` and ``match_coarse.sparse_spvs``.
        validated: `config` has passed :func:`check_loss_config` already (a training run's
            `loftr.config.validate.validate`), so it is not checked again.

    Raises:
        ConfigError: see :func:`check_loss_config` (unless `validated`).

    Example:
        >>> cfg = {"loss": {"coarse_type": "focal", "coarse_weight": 1.0, "focal_alpha": 0.25,
        ...     "focal_gamma": 2.0, "pos_weight": 1.0, "neg_weight": 1.0,
        ...     "fine_type": "l2", "fine_weight": 1.0, "fine_correct_thr": 1.0},
        ...     "match_coarse": {"match_type": "dual_softmax", "sparse_spvs": False}}
        >>> data = {"conf_matrix": torch.full((1, 2, 2), 0.5), "conf_matrix_gt": torch.eye(2)[None],
        ...     "expec_f": torch.zeros(1, 3), "expec_f_gt": torch.zeros(1, 2)}
        >>> LoFTRLoss(cfg)(data)["loss_scalars"]["loss_c"]
        tensor(0.0866)
    """

    def __init__(self, config: Mapping[str, Any], *, validated: bool = False) -> None:
        super().__init__()
        if not validated:  # a training run has checked it once already (`validated=True`)
            check_loss_config(config)
        loss = config["loss"]
        self.match_type: str = str(config["match_coarse"]["match_type"])
        self.sparse_spvs: bool = bool(config["match_coarse"]["sparse_spvs"])
        self.coarse_type: str = str(loss["coarse_type"])
        self.fine_type: str = str(loss["fine_type"])
        self.coarse_weight = float(loss["coarse_weight"])
        self.fine_weight = float(loss["fine_weight"])
        self.focal_alpha = float(loss["focal_alpha"])
        self.focal_gamma = float(loss["focal_gamma"])
        self.pos_weight = float(loss["pos_weight"])
        self.neg_weight = float(loss["neg_weight"])
        self.fine_correct_thr = float(loss["fine_correct_thr"])

    # ----------------------------------------------------------------------------------- coarse
    def compute_coarse_loss(
        self,
        conf: torch.Tensor,
        conf_gt: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Coarse loss (docs/original.md#coarse-loss).

        Args:
            conf: ``(N, L, S)`` confidence matrix, or ``(N, L+1, S+1)`` with the dustbins for
                Sinkhorn with sparse supervision.
            conf_gt: ``(N, L, S)`` ground truth, 1 at matches.
            weight: optional ``(N, L, S)`` element weights (``mask0[b, i] * mask1[b, j]``).

        Returns:
            Scalar loss.
        """
        pos_mask, neg_mask = conf_gt == 1, conf_gt == 0
        pos_w, neg_w = self.pos_weight, self.neg_weight
        if weight is not None:
            weight = weight.clone()
        # Corner cases (docs/original.md#coarse-loss): a stand-in element [0, 0, 0] with weight 0
        # and factor 0 keeps the computation (and the DDP graph) the same shape.
        if not pos_mask.any():
            pos_mask[0, 0, 0] = True
            if weight is not None:
                weight[0, 0, 0] = 0.0
            pos_w = 0.0
        if not neg_mask.any():
            neg_mask[0, 0, 0] = True
            if weight is not None:
                weight[0, 0, 0] = 0.0
            neg_w = 0.0

        conf = _at_least_float32(conf)
        alpha, gamma = self.focal_alpha, self.focal_gamma

        if self.coarse_type == "cross_entropy" or not self.sparse_spvs:
            # Dense supervision (cross-entropy is dense only, check_loss_config). The few
            # positives are gathered; the negatives, nearly all L x S elements, are summed in
            # place over the whole matrix under their mask and divided by their count: the mean
            # over them without gathering them (a copy of the matrix, and a scatter back in the
            # backward pass).
            pos_index = pos_mask.nonzero(as_tuple=True)
            pos_conf = conf[pos_index].clamp(CONF_EPS, 1 - CONF_EPS)
            if self.coarse_type == "cross_entropy":
                loss_pos = -pos_conf.log()
                alpha, gamma = 1.0, 0.0  # -(1 - c).log(), as the focal form with these
            else:
                # Dense focal: alpha on the negatives too (docs/original.md#coarse-loss, #quirk-7).
                loss_pos = -alpha * (1 - pos_conf).pow(gamma) * pos_conf.log()
            if weight is not None:
                loss_pos = loss_pos * weight[pos_index]
            # means over all elements of each kind, zero-weight ones included
            # (docs/original.md#coarse-loss)
            sum_neg = _NegativeFocalSum.apply(conf, weight, neg_mask, alpha, gamma)
            mean_neg = sum_neg / neg_mask.sum().clamp(min=1)
            return pos_w * _mean(loss_pos) + neg_w * mean_neg

        conf = conf.clamp(CONF_EPS, 1 - CONF_EPS)

        sinkhorn = self.match_type == "sinkhorn"
        inner = conf[:, :-1, :-1] if sinkhorn else conf
        pos_conf = inner[pos_mask]
        loss_pos = -alpha * (1 - pos_conf).pow(gamma) * pos_conf.log()
        if weight is not None:
            loss_pos = loss_pos * weight[pos_mask]
        if not sinkhorn:  # sparse DS: positives only
            return pos_w * _mean(loss_pos)

        # Sparse OT: the dustbin entries of unmatched rows and columns, with the positive-style
        # focal term pushing them up (docs/original.md#coarse-loss, issue #53).
        neg0 = conf_gt.sum(-1) == 0  # (N, L) rows without a match
        neg1 = conf_gt.sum(1) == 0  # (N, S) columns without a match
        neg_conf = torch.cat([conf[:, :-1, -1][neg0], conf[:, -1, :-1][neg1]], 0)
        loss_neg = -alpha * (1 - neg_conf).pow(gamma) * neg_conf.log()
        if weight is not None:  # keep rows / columns that have some valid element
            keep = torch.cat([(weight.sum(-1) != 0)[neg0], (weight.sum(1) != 0)[neg1]], 0)
            loss_neg = loss_neg[keep]
        return pos_w * _mean(loss_pos) + neg_w * _mean(loss_neg)

    @staticmethod
    def compute_c_weight(data: Mapping[str, Any]) -> torch.Tensor | None:
        """``(N, L, S)`` element weights ``mask0[b, i] * mask1[b, j]``, or None without masks."""
        if "mask0" not in data:
            return None
        n, l_, s_ = data["conf_matrix_gt"].shape
        m0, m1 = data["mask0"], data["mask1"]
        # The masks' own coarse shape is kept; image-resolution masks are reduced to it.
        h0, w0 = _coarse_hw(m0, l_)
        h1, w1 = _coarse_hw(m1, s_)
        valid0 = coarse_mask(m0, h0, w0, "mask0").float()
        valid1 = coarse_mask(m1, h1, w1, "mask1").float()
        return valid0[:, :, None] * valid1[:, None, :]

    # ------------------------------------------------------------------------------------- fine
    def compute_fine_loss(
        self, expec_f: torch.Tensor, expec_f_gt: torch.Tensor
    ) -> torch.Tensor | None:
        """Fine loss (docs/original.md#fine-loss).

        Args:
            expec_f: ``(M', 3)`` predicted ``[x, y, std]``, ``x, y`` in window radii.
            expec_f_gt: ``(M', 2)`` ground-truth ``[x, y]`` in window radii.

        Returns:
            Scalar loss, or None in eval mode when no sample is correct.
        """
        expec_f = _at_least_float32(expec_f)
        # L-inf norm below the threshold: the target lies inside the window
        # (docs/original.md#fine-loss).
        correct_mask = expec_f_gt.abs().amax(-1) < self.fine_correct_thr
        weight = None
        if self.fine_type == "l2_with_std":
            inverse_std = 1.0 / expec_f[:, 2].clamp(min=STD_EPS)
            # Normalised over ALL samples and detached, so raising std cannot lower the loss.
            weight = (inverse_std / inverse_std.mean()).detach()

        if not correct_mask.any():
            if not self.training:
                return None
            if len(expec_f) == 0:  # nothing to supervise at all: a zero still on the graph
                return expec_f.sum() * 0.0
            # docs/original.md#fine-loss: a false sample 0 keeps every DDP rank's graph identical.
            logger.warning("No correct fine sample: supervising sample 0 to avoid a DDP deadlock.")
            correct_mask = correct_mask.clone()
            correct_mask[0] = True
            if weight is not None:
                weight = weight.clone()
                weight[0] = 0.0

        offset_l2 = ((expec_f_gt[correct_mask] - expec_f[correct_mask, :2]) ** 2).sum(-1)
        if weight is None:
            return offset_l2.mean()
        return (offset_l2 * weight[correct_mask]).mean()

    # ---------------------------------------------------------------------------------- forward
    def forward(self, data: dict[str, Any]) -> dict[str, Any]:
        """Compute the loss and write ``loss`` and ``loss_scalars`` into ``data``.

        Reads ``conf_matrix`` ``(N, L, S)`` (or ``conf_matrix_with_bin`` ``(N, L+1, S+1)`` for
        Sinkhorn with sparse supervision), ``conf_matrix_gt``, optional ``mask0``/``mask1``,
        ``expec_f`` ``(M', 3)`` and ``expec_f_gt`` ``(M', 2)``.

        Writes:
            - ``loss``: scalar tensor with gradient.
            - ``loss_scalars``: ``{"loss_c", "loss_f", "loss"}`` detached CPU scalars;
              ``loss_f`` is 1.0 in eval when no fine sample is correct.

        Returns:
            ``data``, updated.
        """
        loss_scalars: dict[str, torch.Tensor] = {}
        c_weight = self.compute_c_weight(data)
        conf = (
            data["conf_matrix_with_bin"]
            if self.sparse_spvs and self.match_type == "sinkhorn"
            else data["conf_matrix"]
        )
        loss_c = self.compute_coarse_loss(conf, data["conf_matrix_gt"], weight=c_weight)
        loss = loss_c * self.coarse_weight
        loss_scalars["loss_c"] = loss_c.detach().clone().cpu()

        loss_f = self.compute_fine_loss(data["expec_f"], data["expec_f_gt"])
        if loss_f is not None:
            loss = loss + loss_f * self.fine_weight
            loss_scalars["loss_f"] = loss_f.detach().clone().cpu()
        else:  # eval only (docs/original.md#fine-loss)
            loss_scalars["loss_f"] = torch.tensor(1.0)
        loss_scalars["loss"] = loss.detach().clone().cpu()
        data.update({"loss": loss, "loss_scalars": loss_scalars})
        return data


class _NegativeFocalSum(torch.autograd.Function):
    """``sum over neg_mask of -alpha * c^gamma * log(1 - c) * weight``, c = conf clamped to
    [CONF_EPS, 1 - CONF_EPS]: the dense coarse loss's negative term over the whole ``(N, L, S)``
    matrix (cross-entropy's is alpha = 1, gamma = 0).

    Written out by autograd, the term keeps five matrix-sized tensors for backward (the clamped
    matrix, its power, ``1 - c``, the logarithm, the weighted product), 440 MiB at 640x480. This
    function keeps none of its own: backward recomputes the derivative
    ``-alpha * c^(gamma - 1) * (gamma * log(1 - c) - c / (1 - c))`` from ``conf`` (which the
    batch holds anyway), with the clamp's zero gradient outside its range. The forward value is
    computed with the same operations in the same order as the written-out term, so it is
    bit-identical; the gradient agrees to float rounding.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        conf: torch.Tensor,
        weight: torch.Tensor | None,
        neg_mask: torch.Tensor,
        alpha: float,
        gamma: float,
    ) -> torch.Tensor:
        ctx.save_for_backward(conf, weight, neg_mask)
        ctx.alpha, ctx.gamma = alpha, gamma
        clamped = conf.clamp(CONF_EPS, 1 - CONF_EPS)
        log_rest = torch.rsub(clamped, 1).log_()
        term = clamped.pow_(gamma).mul_(-alpha).mul_(log_rest)
        del log_rest
        if weight is not None:
            term.mul_(weight)
        return term.masked_fill_(~neg_mask, 0.0).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        conf, weight, neg_mask = ctx.saved_tensors
        alpha, gamma = ctx.alpha, ctx.gamma
        clamped = conf.clamp(CONF_EPS, 1 - CONF_EPS)
        rest = torch.rsub(clamped, 1)
        ratio = clamped / rest
        inner = rest.log_().mul_(gamma).sub_(ratio)  # gamma * log(1 - c) - c / (1 - c)
        del ratio
        out = clamped.pow_(gamma - 1).mul_(inner).mul_(-alpha * grad)
        del inner
        if weight is not None:
            out.mul_(weight)
        keep = neg_mask & (conf >= CONF_EPS) & (conf <= 1 - CONF_EPS)
        return out.masked_fill_(~keep, 0.0), None, None, None, None


def _coarse_hw(mask: torch.Tensor, n_cells: int) -> tuple[int, int]:
    """Coarse ``(h, w)`` for a mask whose grid has ``n_cells`` cells (same aspect as the mask)."""
    mh, mw = mask.shape[-2:]
    if mh * mw == n_cells:
        return mh, mw
    step = round((mh * mw / n_cells) ** 0.5)
    return mh // max(step, 1), mw // max(step, 1)
