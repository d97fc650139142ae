"""Tests of LoFTRLoss (docs/original.md#losses) against the spec's formulas evaluated by hand."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from loftr.errors import ConfigError
from loftr.losses import LoFTRLoss, _NegativeFocalSum, check_loss_config
from loftr.supervision import compute_supervision_coarse, compute_supervision_fine
from tests.helpers.geometry import textured_plane_pair

MODEL_YAML = Path(__file__).resolve().parents[1] / "conf" / "model" / "loftr.yaml"

BASE = {
    "match_coarse": {"match_type": "dual_softmax", "sparse_spvs": False},
    "loss": {
        "coarse_type": "focal",
        "coarse_weight": 1.0,
        "focal_alpha": 0.25,
        "focal_gamma": 2.0,
        "pos_weight": 1.0,
        "neg_weight": 1.0,
        "fine_type": "l2_with_std",
        "fine_weight": 1.0,
        "fine_correct_thr": 1.0,
    },
}


def _config(match_type: str = "dual_softmax", sparse: bool = False, **loss: object) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg["match_coarse"].update(match_type=match_type, sparse_spvs=sparse)
    cfg["loss"].update(loss)
    return cfg


# The spec's focal terms (alpha = 0.25, gamma = 2), docs/original.md#coarse-loss.
def fpos(p: float) -> float:
    """-alpha (1 - p)^gamma log p"""
    return -0.25 * (1 - p) ** 2 * math.log(p)


def fneg(p: float) -> float:
    """-alpha p^gamma log(1 - p): alpha, not 1 - alpha (docs/original.md#quirk-7)"""
    return -0.25 * p**2 * math.log(1 - p)


# One pair, L = 2 (image 0 is 1x2 cells), S = 2; the ground truth matches (0, 0) only.
# Dustbin column S = 2 and row L = 2 of the OT matrix: row 1 and column 1 are unmatched.
WITH_BIN = [[0.8, 0.1, 0.05], [0.3, 0.6, 0.2], [0.02, 0.15, 0.5]]
GT = [[1.0, 0.0], [0.0, 0.0]]
MASK0 = [[[True, False]]]  # cell 1 of image 0 is padding
MASK1 = [[[True, True]]]


def _data(masks: bool = False, gt: list | None = None) -> dict:
    with_bin = torch.tensor([WITH_BIN])
    data = {
        "conf_matrix_with_bin": with_bin,
        "conf_matrix": with_bin[:, :-1, :-1],
        "conf_matrix_gt": torch.tensor([gt if gt is not None else GT]),
        # fine: all three samples correct-looking except the last, see test_fine_losses
        "expec_f": torch.tensor([[0.1, 0.2, 0.5], [0.5, -0.5, 1.0], [0.0, 0.0, 2.0]]),
        "expec_f_gt": torch.tensor([[0.0, 0.0], [0.9, 0.1], [1.5, 0.0]]),
    }
    if masks:
        data["mask0"] = torch.tensor(MASK0)
        data["mask1"] = torch.tensor(MASK1)
    return data


def test_hand_numbers_of_the_terms() -> None:
    # 0.25 * 0.04 * 0.22314 and 0.25 * 0.01 * 0.10536: the helpers are the spec's formula.
    assert fpos(0.8) == pytest.approx(0.0022314, abs=1e-7)
    assert fneg(0.1) == pytest.approx(0.00026340, abs=1e-8)


# ------------------------------------------------------------------------------------ coarse
CASES = [
    # (match_type, sparse, masks, expected L_c)
    ("dual_softmax", False, False, fpos(0.8) + (fneg(0.1) + fneg(0.3) + fneg(0.6)) / 3),
    # padded row 1 has weight 0 but still counts in the mean's denominator
    ("dual_softmax", False, True, fpos(0.8) + (fneg(0.1) + 0 + 0) / 3),
    # OT dense: the dustbins are not supervised, same numbers as DS
    ("sinkhorn", False, False, fpos(0.8) + (fneg(0.1) + fneg(0.3) + fneg(0.6)) / 3),
    ("sinkhorn", False, True, fpos(0.8) + fneg(0.1) / 3),
    # sparse DS: positives only
    ("dual_softmax", True, False, fpos(0.8)),
    ("dual_softmax", True, True, fpos(0.8)),
    # sparse OT: positive + dustbins of unmatched row 1 (0.2) and column 1 (0.15)
    ("sinkhorn", True, False, fpos(0.8) + (fpos(0.2) + fpos(0.15)) / 2),
    # ... row 1 is all padding -> only column 1's dustbin
    ("sinkhorn", True, True, fpos(0.8) + fpos(0.15)),
]


@pytest.mark.parametrize(("match_type", "sparse", "masks", "expected"), CASES)
def test_focal_coarse_loss(match_type: str, sparse: bool, masks: bool, expected: float) -> None:
    loss = LoFTRLoss(_config(match_type, sparse))
    data = loss(_data(masks))
    assert data["loss_scalars"]["loss_c"].item() == pytest.approx(expected, rel=1e-5)


def test_pos_and_neg_weights() -> None:
    loss = LoFTRLoss(_config(pos_weight=2.0, neg_weight=0.5))
    got = loss(_data())["loss_scalars"]["loss_c"].item()
    assert got == pytest.approx(2 * fpos(0.8) + 0.5 * (fneg(0.1) + fneg(0.3) + fneg(0.6)) / 3)
    loss = LoFTRLoss(_config("sinkhorn", True, pos_weight=2.0, neg_weight=0.5))
    got = loss(_data())["loss_scalars"]["loss_c"].item()
    assert got == pytest.approx(2 * fpos(0.8) + 0.5 * (fpos(0.2) + fpos(0.15)) / 2)


@pytest.mark.parametrize("match_type", ["dual_softmax", "sinkhorn"])
def test_cross_entropy_dense(match_type: str) -> None:
    loss = LoFTRLoss(_config(match_type, False, coarse_type="cross_entropy"))
    ln = math.log
    got = loss(_data())["loss_scalars"]["loss_c"].item()
    assert got == pytest.approx(-ln(0.8) + (-ln(0.9) - ln(0.7) - ln(0.4)) / 3, rel=1e-5)
    got = loss(_data(masks=True))["loss_scalars"]["loss_c"].item()
    assert got == pytest.approx(-ln(0.8) - ln(0.9) / 3, rel=1e-5)


def test_confidence_is_clamped() -> None:
    data = _data()
    # log 0 without the clamp; float64 so that 1 - 1e-6 is exact enough for the hand value
    data["conf_matrix"] = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    got = LoFTRLoss(_config(coarse_type="cross_entropy"))(data)["loss_scalars"]["loss_c"]
    eps = 1e-6
    expected = -math.log(1 - eps) + (-math.log(1 - eps) * 2 - math.log(eps)) / 3
    assert got.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_the_float32_loss(dtype: torch.dtype) -> None:
    """CPU autocast hands the loss bf16/fp16 confidences and expectations; the loss still
    clamps and takes its logs in float32, so a confidence of 1 and a zero std stay finite."""
    data = _data()
    data["conf_matrix"] = torch.tensor([[[0.8, 1.0], [0.3, 0.6]]])
    data["expec_f"][0, 2] = 0.0
    half = {k: v.to(dtype) if v.is_floating_point() else v for k, v in data.items()}
    widened = {k: v.float() if v.is_floating_point() else v for k, v in half.items()}
    loss = LoFTRLoss(_config())
    got, expected = loss(half)["loss_scalars"], loss(widened)["loss_scalars"]
    for key in ("loss_c", "loss_f"):
        assert torch.isfinite(got[key]) and got[key].item() == pytest.approx(expected[key].item())


# ------------------------------------------------------------------------------ corner cases
ZERO_GT = [[0.0, 0.0], [0.0, 0.0]]


def test_no_positive_dense() -> None:
    loss = LoFTRLoss(_config())
    got = loss(_data(gt=ZERO_GT))["loss_scalars"]["loss_c"].item()
    # positive factor 0; every element is a negative, including the stand-in [0, 0, 0]
    assert got == pytest.approx((fneg(0.8) + fneg(0.1) + fneg(0.3) + fneg(0.6)) / 4, rel=1e-5)
    # with masks, the stand-in's weight 0 also removes its negative term
    # (docs/original.md#coarse-loss)
    got = loss(_data(masks=True, gt=ZERO_GT))["loss_scalars"]["loss_c"].item()
    assert got == pytest.approx(fneg(0.1) / 4, rel=1e-5)


def test_no_negative_dense() -> None:
    data = {
        "conf_matrix": torch.tensor([[[0.7]]]),
        "conf_matrix_gt": torch.tensor([[[1.0]]]),
        "expec_f": torch.zeros(1, 3) + 0.5,
        "expec_f_gt": torch.zeros(1, 2),
    }
    loss = LoFTRLoss(_config())
    assert loss(dict(data))["loss_scalars"]["loss_c"].item() == pytest.approx(fpos(0.7))
    # with masks, the stand-in [0, 0, 0] is the only positive too: its weight 0 zeroes it
    data.update(mask0=torch.ones(1, 1, 1, dtype=torch.bool), mask1=torch.ones(1, 1, 1).bool())
    assert loss(data)["loss_scalars"]["loss_c"].item() == 0.0


def test_no_positive_sparse() -> None:
    conf = torch.tensor([WITH_BIN], requires_grad=True)
    data = _data(gt=ZERO_GT)
    data.update(conf_matrix=conf[:, :-1, :-1], conf_matrix_with_bin=conf)
    out = LoFTRLoss(_config("dual_softmax", True))(dict(data))
    assert out["loss_scalars"]["loss_c"].item() == 0.0
    out["loss"].backward()  # still on the graph (identical DDP graphs)
    assert conf.grad is not None
    # sparse OT: every row and column is unmatched -> four dustbin entries
    out = LoFTRLoss(_config("sinkhorn", True))(dict(data))
    expected = (fpos(0.05) + fpos(0.2) + fpos(0.02) + fpos(0.15)) / 4
    assert out["loss_scalars"]["loss_c"].item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------------- gradients
def _random_problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """N=2, image 0 2x3 cells (L=6), image 1 2x2 (S=4), masks, a few positives."""
    g = torch.Generator().manual_seed(seed)
    with_bin = (0.05 + 0.9 * torch.rand(2, 7, 5, generator=g)).requires_grad_(True)
    gt = torch.zeros(2, 6, 4)
    for b, i, j in [(0, 1, 0), (0, 4, 3), (1, 2, 1), (1, 3, 0), (1, 5, 3)]:
        gt[b, i, j] = 1.0
    mask0 = torch.ones(2, 2, 3, dtype=torch.bool)
    mask0[1, :, 2] = False  # item 1: right column of image 0 padded (cells 2 and 5)
    mask1 = torch.ones(2, 2, 2, dtype=torch.bool)
    mask1[0, 1, :] = False  # item 0: bottom row of image 1 padded (cells 2 and 3)
    weight = mask0.flatten(1)[:, :, None] & mask1.flatten(1)[:, None, :]
    data = {
        "conf_matrix_with_bin": with_bin,
        "conf_matrix": with_bin[:, :-1, :-1],
        "conf_matrix_gt": gt,
        "mask0": mask0,
        "mask1": mask1,
        "expec_f": torch.zeros(1, 3) + 0.5,
        "expec_f_gt": torch.zeros(1, 2),
    }
    return with_bin, gt, weight, data


def test_dense_gradient_reaches_every_valid_entry_and_no_dustbin() -> None:
    for match_type in ("dual_softmax", "sinkhorn"):
        with_bin, _, weight, data = _random_problem()
        LoFTRLoss(_config(match_type, False))(data)["loss"].backward()
        reached = with_bin.grad != 0
        assert torch.equal(reached[:, :-1, :-1], weight)
        assert not reached[:, -1, :].any() and not reached[:, :, -1].any()


def _written_out_negative_sum(
    conf: torch.Tensor, weight: torch.Tensor | None, neg: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """The dense negative term as plain autograd operations (what _NegativeFocalSum fuses)."""
    c = conf.clamp(1e-6, 1 - 1e-6)
    term = -alpha * c.pow(gamma) * (1 - c).log()
    if weight is not None:
        term = term * weight
    return torch.where(neg, term, 0.0).sum()


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (1.0, 0.0), (0.5, 1.5)])
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_negative_term_equals_the_written_out_one(
    alpha: float, gamma: float, weighted: bool
) -> None:
    g = torch.Generator().manual_seed(3)
    conf = torch.rand(2, 30, 40, generator=g, dtype=torch.float64)
    conf[0, 0, :4] = torch.tensor([0.0, 1.0, 1e-9, 1 - 1e-9], dtype=torch.float64)  # clamped
    neg = torch.rand(2, 30, 40, generator=g) > 0.1
    weight = (torch.rand(2, 30, 40, generator=g) > 0.2).double() if weighted else None
    fused_in = conf.clone().requires_grad_(True)
    plain_in = conf.clone().requires_grad_(True)
    fused = _NegativeFocalSum.apply(fused_in, weight, neg, alpha, gamma)
    plain = _written_out_negative_sum(plain_in, weight, neg, alpha, gamma)
    assert torch.equal(fused, plain)  # same operations in the same order
    (fused * 3.0).backward()
    (plain * 3.0).backward()
    torch.testing.assert_close(fused_in.grad, plain_in.grad, rtol=1e-12, atol=1e-15)
    assert (fused_in.grad[0, 0, :4] == 0).all()  # the clamp's zero gradient outside its range


def test_negative_term_gradient_by_hand() -> None:
    """d/dp of -alpha p^2 log(1 - p) at p = 0.3: -0.25 (2 0.3 ln 0.7 - 0.09 / 0.7) = 0.0856440,
    divided by the 3 negatives of the 2x2 matrix whose (0, 0) is the positive."""
    conf = torch.tensor([[[0.8, 0.3], [0.1, 0.6]]], requires_grad=True)
    data = {
        "conf_matrix": conf,
        "conf_matrix_gt": torch.tensor([GT]),
        "expec_f": torch.zeros(1, 3) + 0.5,
        "expec_f_gt": torch.zeros(1, 2),
    }
    LoFTRLoss(_config())(data)["loss"].backward()
    assert conf.grad[0, 0, 1].item() == pytest.approx(0.0856440 / 3, rel=1e-5)
    # the positive's: d/dp of -0.25 (1 - p)^2 log p at 0.8 = 0.25 (2 0.2 ln 0.8 - 0.04 / 0.8)
    assert conf.grad[0, 0, 0].item() == pytest.approx(-0.0348144, rel=1e-5)


def test_sparse_ds_gradient_reaches_positives_only() -> None:
    _, gt, weight, data = _random_problem()
    conf = data["conf_matrix"].detach().clone().requires_grad_(True)
    data["conf_matrix"] = conf
    LoFTRLoss(_config("dual_softmax", True))(data)["loss"].backward()
    # positives (0, 4, 3), (1, 2, 1) and (1, 5, 3) touch padding: weight 0, no gradient
    expected = (gt == 1) & weight
    assert torch.equal(conf.grad != 0, expected)
    assert torch.nonzero(expected).tolist() == [[0, 1, 0], [1, 3, 0]]


def test_sparse_ot_gradient_reaches_positives_and_unmatched_dustbins() -> None:
    with_bin, gt, weight, data = _random_problem()
    LoFTRLoss(_config("sinkhorn", True))(data)["loss"].backward()
    expected = torch.zeros(2, 7, 5, dtype=torch.bool)
    expected[:, :-1, :-1] = (gt == 1) & weight
    # rows without a match and with some valid element -> dustbin column 4
    rows = (gt.sum(-1) == 0) & weight.any(-1)
    expected[:, :-1, -1] = rows
    cols = (gt.sum(1) == 0) & weight.any(1)
    expected[:, -1, :-1] = cols
    assert torch.equal(with_bin.grad != 0, expected)
    # item 0: unmatched rows 0, 2, 3, 5; columns 1, 2 unmatched but 2 is padding (3 is matched)
    assert rows[0].tolist() == [True, False, True, True, False, True]
    assert cols[0].tolist() == [False, True, False, False]
    # item 1: row 5 is matched (to padding), rows 2 and 5 are padding; column 2 unmatched
    assert rows[1].tolist() == [True, True, False, False, True, False]
    assert cols[1].tolist() == [False, False, True, False]


# --------------------------------------------------------------------------------------- fine
# inverse std = (2, 1, 0.5), mean 7/6 -> weights (12/7, 6/7, 3/7); sample 2 is out (|1.5| >= 1).
# squared errors: 0.1^2 + 0.2^2 = 0.05, 0.4^2 + 0.6^2 = 0.52.
@pytest.mark.parametrize(
    ("fine_type", "expected"),
    [("l2", (0.05 + 0.52) / 2), ("l2_with_std", (0.05 * 12 / 7 + 0.52 * 6 / 7) / 2)],
)
def test_fine_losses(fine_type: str, expected: float) -> None:
    loss = LoFTRLoss(_config(fine_type=fine_type))
    data = loss(_data())
    assert data["loss_scalars"]["loss_f"].item() == pytest.approx(expected, rel=1e-5)


def test_fine_correct_threshold_is_strict() -> None:
    loss = LoFTRLoss(_config(fine_type="l2"))
    got = loss.compute_fine_loss(torch.zeros(2, 3), torch.tensor([[1.0, 0.0], [0.5, -0.5]]))
    assert got.item() == pytest.approx(0.5)  # only sample 1: 0.25 + 0.25


def test_std_weight_is_detached() -> None:
    expec_f = torch.tensor([[0.1, 0.2, 0.5], [0.5, -0.5, 1.0]], requires_grad=True)
    LoFTRLoss(_config()).compute_fine_loss(expec_f, torch.zeros(2, 2)).backward()
    assert expec_f.grad[:, 2].abs().sum() == 0
    assert expec_f.grad[:, :2].abs().sum() > 0


@pytest.mark.parametrize("fine_type", ["l2", "l2_with_std"])
def test_no_correct_fine_sample(fine_type: str) -> None:
    loss = LoFTRLoss(_config(fine_type=fine_type))
    expec_f = torch.tensor([[0.1, 0.2, 0.5], [0.5, -0.5, 1.0]], requires_grad=True)
    gt = torch.tensor([[1.2, 0.0], [0.0, -3.0]])
    # training: sample 0 stands in; its std weight is 0, plain l2 keeps its error
    # (docs/original.md#fine-loss)
    loss.train()
    got = loss.compute_fine_loss(expec_f, gt)
    expected = (1.1**2 + 0.2**2) if fine_type == "l2" else 0.0
    assert got.item() == pytest.approx(expected)
    got.backward()
    assert expec_f.grad is not None
    # eval: None, logged as 1.0, total = coarse
    loss.eval()
    data = _data()
    data.update(expec_f=expec_f.detach(), expec_f_gt=gt)
    out = loss(data)
    assert out["loss_scalars"]["loss_f"].item() == 1.0
    assert out["loss"].item() == pytest.approx(out["loss_scalars"]["loss_c"].item())


def test_empty_fine_set() -> None:
    loss = LoFTRLoss(_config())
    loss.eval()
    assert loss.compute_fine_loss(torch.zeros(0, 3), torch.zeros(0, 2)) is None
    loss.train()
    assert loss.compute_fine_loss(torch.zeros(0, 3), torch.zeros(0, 2)).item() == 0.0


# ------------------------------------------------------------------------------ total, config
def test_total_and_scalars() -> None:
    loss = LoFTRLoss(_config(coarse_weight=2.0, fine_weight=0.5, fine_type="l2"))
    data = _data()
    data["conf_matrix"] = data["conf_matrix"].clone().requires_grad_(True)
    out = loss(data)
    loss_c = fpos(0.8) + (fneg(0.1) + fneg(0.3) + fneg(0.6)) / 3
    loss_f = (0.05 + 0.52) / 2
    assert out["loss"].item() == pytest.approx(2 * loss_c + 0.5 * loss_f, rel=1e-5)
    assert out["loss"].requires_grad
    scalars = out["loss_scalars"]
    assert set(scalars) == {"loss_c", "loss_f", "loss"}
    assert scalars["loss_c"].item() == pytest.approx(loss_c, rel=1e-5)  # before coarse_weight
    assert scalars["loss_f"].item() == pytest.approx(loss_f, rel=1e-5)
    for v in scalars.values():
        assert v.device.type == "cpu" and not v.requires_grad and v.dim() == 0


def test_image_resolution_masks_give_the_same_weights() -> None:
    loss = LoFTRLoss(_config())
    coarse = loss(_data(masks=True))["loss_scalars"]["loss_c"]
    data = _data()
    data["mask0"] = torch.tensor(MASK0).repeat_interleave(8, 1).repeat_interleave(8, 2)
    data["mask1"] = torch.tensor(MASK1).repeat_interleave(8, 1).repeat_interleave(8, 2)
    assert loss(data)["loss_scalars"]["loss_c"].item() == pytest.approx(coarse.item())


def test_cross_entropy_with_sparse_is_rejected() -> None:
    with pytest.raises(ConfigError) as err:
        check_loss_config(_config(sparse=True, coarse_type="cross_entropy"))
    assert "model.loss.coarse_type" in str(err.value)
    assert "model.match_coarse.sparse_spvs" in str(err.value)
    with pytest.raises(ConfigError, match="sparse_spvs"):
        LoFTRLoss(_config("sinkhorn", True, coarse_type="cross_entropy"))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("loss", "coarse_type", "dice"),
        ("loss", "fine_type", "l1"),
        ("match_coarse", "match_type", "softmax"),
    ],
)
def test_unknown_types_rejected(section: str, key: str, value: str) -> None:
    cfg = _config()
    cfg[section][key] = value
    with pytest.raises(ConfigError, match=f"model.{section}.{key}={value!r}"):
        check_loss_config(cfg)


def test_accepts_the_model_yaml_as_dictconfig() -> None:
    cfg = OmegaConf.load(MODEL_YAML)
    loss = LoFTRLoss(cfg)
    assert loss.sparse_spvs is bool(cfg.match_coarse.sparse_spvs)
    assert loss(_data())["loss_scalars"]["loss_c"].item() > 0


# ------------------------------------------------------------------------------------ learning
def test_small_model_overfits_one_pair() -> None:
    """Supervision + model + loss learn: a reduced LoFTR overfits one 128x96 pair on CPU.

    Dual-softmax with dense supervision (the released recipe). 100 steps take about 10 s on two
    idle CPU cores; over seeds 0-7 the loss falls from 3-4 to 0.15-0.75 and every final coarse
    match agrees with the ground truth.
    """
    from loftr.model import LoFTR

    cfg = OmegaConf.to_container(OmegaConf.load(MODEL_YAML))
    cfg["resnetfpn"] = {"initial_dim": 32, "block_dims": [32, 48, 64]}
    cfg["coarse"].update(d_model=64, nhead=4, layer_names=["self", "cross"])
    cfg["fine"].update(d_model=32, nhead=4)
    # 12 x 16 = 192 coarse cells: int(0.3 * 192) = 57 fine windows, 20 of them ground truth
    cfg["match_coarse"].update(
        match_type="dual_softmax", sparse_spvs=False, train_coarse_percent=0.3,
        train_pad_num_gt_min=20,
    )  # fmt: skip
    pair = textured_plane_pair()
    model, loss_fn = LoFTR(cfg), LoFTRLoss(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    losses = []
    model.train()
    for _ in range(100):
        data = dict(pair)
        compute_supervision_coarse(data, cfg)
        model(data)
        compute_supervision_fine(data, cfg)
        loss_fn(data)
        optimizer.zero_grad()
        data["loss"].backward()
        optimizer.step()
        losses.append(data["loss"].item())
    assert data["conf_matrix_gt"].sum() >= 150  # the pair has plenty of ground truth
    # Medians: the l2_with_std fine loss spikes now and then (its weights are 1/std normalised
    # over the batch), and CPU backward passes are not bit-reproducible, so trajectories vary.
    first, last = np.median(losses[:5]), np.median(losses[-10:])
    assert last <= 0.5 * first, f"loss {first:.3f} -> {last:.3f}: {np.round(losses, 3)}"

    model.eval()
    data = dict(pair)
    with torch.no_grad():
        compute_supervision_coarse(data, cfg)
        model(data)
    b, i, j = data["b_ids"], data["i_ids"], data["j_ids"]
    assert len(b) >= 30
    assert data["conf_matrix_gt"][b, i, j].mean().item() >= 0.8
