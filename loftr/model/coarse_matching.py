"""Coarse matching (docs/original.md#coarse-matching): dual-softmax or log-space Sinkhorn with a
learnable dustbin.

Match selection (threshold, border removal on each sample's valid extent, mutual nearest
neighbour) and the training-time padding with ground-truth matches are kornia's
`CoarseMatching.get_coarse_match`, which implements them exactly; this module computes the
confidence matrix, including the optimal-transport matcher kornia does not ship.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from kornia.feature.loftr.utils.coarse_matching import CoarseMatching as _KorniaCoarseMatching
from torch import nn

from loftr.errors import ConfigError


def log_optimal_transport(
    scores: torch.Tensor, bin_score: torch.Tensor, iters: int
) -> torch.Tensor:
    """Entropic optimal transport in log space with a dustbin row and column
    (docs/original.md#sinkhorn).

    The (L+1) x (S+1) couplings hold `scores` with `bin_score` in the appended row and column.
    The marginals give every real row and column mass 1/(L+S), the dustbin row S/(L+S) and the
    dustbin column L/(L+S); `iters` alternating log-sum-exp normalisations follow, and the plan
    is shifted by log(L+S) so that a fully matched row sums to about 1.

    Args:
        scores: (N, L, S) similarities.
        bin_score: scalar tensor, the dustbin score.
        iters: Sinkhorn iterations.

    Returns:
        (N, L+1, S+1) log transport plan.
    """
    n, rows, cols = scores.shape
    bin_score = bin_score.to(scores.dtype)
    couplings = torch.cat(
        [
            torch.cat([scores, bin_score.expand(n, rows, 1)], dim=2),
            torch.cat([bin_score.expand(n, 1, cols), bin_score.expand(n, 1, 1)], dim=2),
        ],
        dim=1,
    )
    log_total = math.log(rows + cols)
    log_mu = scores.new_full((rows + 1,), -log_total)
    log_mu[-1] = math.log(cols) - log_total
    log_nu = scores.new_full((cols + 1,), -log_total)
    log_nu[-1] = math.log(rows) - log_total
    u = scores.new_zeros(n, rows + 1)
    v = scores.new_zeros(n, cols + 1)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(couplings + u[:, :, None], dim=1)
    return couplings + u[:, :, None] + v[:, None, :] + log_total


class CoarseMatching(_KorniaCoarseMatching):
    """Confidence matrix and coarse matches.

    Reads `config` (the `match_coarse` node): `thr`, `border_rm`, `match_type`,
    `dsmax_temperature`, `skh_iters`, `skh_init_bin_score`, `skh_prefilter`,
    `train_coarse_percent`, `train_pad_num_gt_min`, `sparse_spvs`.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        nn.Module.__init__(self)  # kornia's __init__ insists on a SuperGlue file for sinkhorn
        self.config = config
        self.thr = config["thr"]
        self.border_rm = config["border_rm"]
        self.train_coarse_percent = config["train_coarse_percent"]
        self.train_pad_num_gt_min = config["train_pad_num_gt_min"]
        self.match_type = config["match_type"]
        self.sparse_spvs = bool(config.get("sparse_spvs", False))
        if self.match_type == "dual_softmax":
            self.temperature = config["dsmax_temperature"]
        elif self.match_type == "sinkhorn":
            self.bin_score = nn.Parameter(torch.tensor(float(config["skh_init_bin_score"])))
            self.skh_iters = config["skh_iters"]
            self.skh_prefilter = config["skh_prefilter"]
        else:
            raise ConfigError(
                f"model.match_coarse.match_type={self.match_type!r}; use dual_softmax or sinkhorn"
            )

    def forward(
        self,
        feat_c0: torch.Tensor,
        feat_c1: torch.Tensor,
        data: dict[str, Any],
        mask_c0: torch.Tensor | None = None,
        mask_c1: torch.Tensor | None = None,
    ) -> None:
        """Write `conf_matrix` (N, L, S), `conf_matrix_with_bin` (sparse OT) and the matches.

        Args:
            feat_c0: (N, L, C) transformed coarse features of image 0.
            feat_c1: (N, S, C) of image 1.
            data: the batch; reads `hw0_c`, `hw1_c`, `stride_c`, optional coarse `mask0/1`,
                `scale0/1` and, in training, `spv_b_ids/i_ids/j_ids`; written in place.
            mask_c0: (N, L) bool, True for valid cells, or None.
            mask_c1: (N, S) bool, or None.
        """
        n_rows, n_cols = feat_c0.shape[1], feat_c1.shape[1]
        if self.training and self.train_pad_num_gt_min >= self._num_train_matches(
            data, n_rows, n_cols
        ):
            raise ConfigError(
                f"model.match_coarse.train_pad_num_gt_min={self.train_pad_num_gt_min} must be "
                f"below int(train_coarse_percent x candidates)="
                f"{self._num_train_matches(data, n_rows, n_cols)} for this input size; lower it "
                "or train on larger images (docs/original.md#coarse-padding)"
            )
        # <f0, f1> / C, as sqrt(C) on each side (docs/original.md#coarse-matching)
        scale = feat_c0.shape[-1] ** 0.5
        sim = torch.einsum("nlc,nsc->nls", feat_c0 / scale, feat_c1 / scale)
        masks = None
        if mask_c0 is not None and mask_c1 is not None:
            masks = (mask_c0.bool(), mask_c1.bool())
        # without autograd the (N, L, S) matrices are updated in place: no extra copies
        in_place = not (torch.is_grad_enabled() and sim.requires_grad)
        lowest = torch.finfo(sim.dtype).min

        if self.match_type == "dual_softmax":
            if in_place:
                sim.div_(self.temperature)
                _fill_padded(sim, masks, lowest, in_place=True)
                conf_matrix = _dual_softmax_inplace(sim)
            else:
                sim = _fill_padded(sim / self.temperature, masks, lowest, in_place=False)
                conf_matrix = F.softmax(sim, 1) * F.softmax(sim, 2)
        else:
            sim = _fill_padded(sim, masks, lowest, in_place=in_place)
            assign = log_optimal_transport(sim, self.bin_score, self.skh_iters).exp()
            conf_matrix = assign[:, :-1, :-1]
            if not self.training and self.skh_prefilter:
                # rows (columns) whose best entry is the dustbin cannot match
                # (docs/original.md#sinkhorn)
                row_to_bin = (assign.argmax(dim=2) == n_cols)[:, :-1]
                col_to_bin = (assign.argmax(dim=1) == n_rows)[:, :-1]
                conf_matrix = conf_matrix.masked_fill(row_to_bin[:, :, None], 0.0)
                conf_matrix = conf_matrix.masked_fill(col_to_bin[:, None, :], 0.0)
            if self.sparse_spvs:
                data["conf_matrix_with_bin"] = assign
        # a fully padded row gets a uniform softmax; padded cells never match
        conf_matrix = _fill_padded(conf_matrix, masks, 0.0, in_place=in_place)
        data["conf_matrix"] = conf_matrix
        data.update(self.get_coarse_match(conf_matrix, data))

    def _num_train_matches(self, data: dict[str, Any], n_rows: int, n_cols: int) -> int:
        """int(train_coarse_percent x candidate cap), the fine windows of a training batch."""
        if "mask0" in data:
            h0, w0 = data["mask0"].sum(1).amax(-1), data["mask0"].sum(-1).amax(-1)
            h1, w1 = data["mask1"].sum(1).amax(-1), data["mask1"].sum(-1).amax(-1)
            cap = int(torch.minimum(h0 * w0, h1 * w1).sum())
        else:
            cap = data["bs"] * max(n_rows, n_cols)
        return int(cap * self.train_coarse_percent)


def _fill_padded(
    x: torch.Tensor,
    masks: tuple[torch.Tensor, torch.Tensor] | None,
    value: float,
    in_place: bool,
) -> torch.Tensor:
    """`x` `(N, L, S)` with `value` wherever row i or column j is padded (`masks` False).

    Two broadcast fills, so no `(N, L, S)` mask is built; in place when asked.
    """
    if masks is None:
        return x
    valid0, valid1 = masks
    if in_place:
        x.masked_fill_(~valid0[:, :, None], value)
        return x.masked_fill_(~valid1[:, None, :], value)
    return x.masked_fill(~valid0[:, :, None], value).masked_fill(~valid1[:, None, :], value)


def _dual_softmax_inplace(sim: torch.Tensor) -> torch.Tensor:
    """softmax(sim, dim 1) * softmax(sim, dim 2) with two (N, L, S) matrices alive.

    Without autograd the similarity matrix is consumed: it becomes the column softmax in
    place, and the row softmax (the one new matrix) is multiplied by it in place. The column
    softmax is written out (max, exp, sum) because PyTorch's softmax over dim 1 of a long
    (L, S) matrix is several times slower than these contiguous passes.

    Args:
        sim: `(N, L, S)` similarities divided by the temperature, overwritten.

    Returns:
        `(N, L, S)` confidences.
    """
    conf = F.softmax(sim, 2)
    col = sim.sub_(sim.amax(dim=1, keepdim=True)).exp_()
    col.div_(col.sum(dim=1, keepdim=True))
    return conf.mul_(col)
