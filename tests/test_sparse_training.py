"""The training fine branch over the windows' support only (docs/differences.md#15) gives the
dense branch's loss and gradients."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from kornia.feature.loftr.loftr_module.fine_preprocess import _unfold_at
from omegaconf import OmegaConf

from loftr.errors import ConfigError
from loftr.losses import LoFTRLoss
from loftr.model import LoFTR
from loftr.supervision import compute_supervision_coarse, compute_supervision_fine
from tests.helpers.geometry import textured_plane_pair

MODEL_YAML = Path(__file__).resolve().parents[1] / "conf" / "model" / "loftr.yaml"
# relative difference allowed between the sparse and the dense branch (fp32)
RTOL = 1e-5


def _config(match_type: str, sparse_spvs: bool) -> dict:
    """A reduced paper model; a 64x48 pair has 6 x 8 coarse cells and int(0.3 x 48) = 14 fine
    windows."""
    cfg = OmegaConf.to_container(OmegaConf.load(MODEL_YAML))
    cfg["resnetfpn"] = {"initial_dim": 16, "block_dims": [16, 24, 32]}
    cfg["coarse"].update(d_model=32, nhead=4, layer_names=["self", "cross"])
    cfg["fine"].update(d_model=16, nhead=4)
    cfg["match_coarse"].update(
        match_type=match_type, sparse_spvs=sparse_spvs, train_coarse_percent=0.3,
        train_pad_num_gt_min=8,
    )  # fmt: skip
    return cfg


@functools.cache
def _scannet_batch() -> dict:
    """Two 64x48 ScanNet-style pairs (the second with noise on its images)."""
    pair = textured_plane_pair(48, 64)
    batch = {k: torch.cat([v, v]) for k, v in pair.items() if torch.is_tensor(v)}
    noise = torch.Generator().manual_seed(1)
    for key in ("image0", "image1"):
        batch[key][1] = batch[key][1] + 0.1 * torch.rand(batch[key][1].shape, generator=noise)
    batch["dataset_name"] = ["ScanNet", "ScanNet"]
    return batch


@functools.cache
def _megadepth_batch() -> dict:
    """One 64x48 pair padded to 64x64 as MegaDepth items are: zero images and depths below,
    padding masks, scales."""
    pair = textured_plane_pair(48, 64)
    batch = {}
    for key, value in pair.items():
        if key.startswith(("image", "depth")):
            value = F.pad(value, (0, 0, 0, 16))
        batch[key] = value
    valid = torch.zeros(1, 64, 64, dtype=torch.bool)
    valid[:, :48] = True
    batch.update(
        mask0=valid.clone(), mask1=valid.clone(), scale0=torch.ones(1, 2),
        scale1=torch.ones(1, 2), dataset_name=["MegaDepth"],
    )  # fmt: skip
    return batch


def _step(model: LoFTR, loss_fn: LoFTRLoss, cfg: dict, batch: dict, coverage: float):
    """Loss, gradients and fine plan of one training step with the given coverage threshold."""
    model.backbone.train_max_sparse_coverage = coverage
    model.zero_grad(set_to_none=True)
    data = copy.deepcopy(batch)
    torch.manual_seed(0)  # the ground-truth pads are drawn at random
    compute_supervision_coarse(data, cfg)
    model(data)
    compute_supervision_fine(data, cfg)
    loss_fn(data)
    data["loss"].backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return data["loss"].detach(), grads, dict(model.last_fine_plan)


@pytest.mark.parametrize(
    "batch_fn", [_scannet_batch, _megadepth_batch], ids=["scannet", "megadepth"]
)
@pytest.mark.parametrize("match_type", ["dual_softmax", "sinkhorn"])
@pytest.mark.parametrize("sparse_spvs", [False, True], ids=["dense_spv", "sparse_spv"])
def test_sparse_branch_gives_the_dense_loss_and_every_gradient(batch_fn, match_type, sparse_spvs):
    cfg = _config(match_type, sparse_spvs)
    torch.manual_seed(0)
    model, loss_fn = LoFTR(cfg).train(), LoFTRLoss(cfg)
    batch = batch_fn()
    loss_d, grads_d, plan_d = _step(model, loss_fn, cfg, batch, coverage=0.0)
    loss_s, grads_s, plan_s = _step(model, loss_fn, cfg, batch, coverage=1.0)
    assert plan_d["conv2"] == "dense" and plan_s["conv2"] == "sparse"
    assert 0 < plan_s["window_share"] < 0.9
    assert torch.isfinite(loss_d) and abs(loss_s - loss_d) <= RTOL * abs(loss_d)
    # every parameter has a gradient, in both branches, and they agree
    assert set(grads_s) == set(grads_d) == {n for n, _ in model.named_parameters()}
    for name, grad in grads_d.items():
        diff = (grads_s[name] - grad).norm()
        assert diff <= RTOL * grad.norm(), f"{name}: {diff / grad.norm():.2e}"


@pytest.mark.parametrize(
    ("batch_fn", "share"),
    [
        # 2 pairs x 2 images x 28 windows x 25 pixels over 4 maps of 24 x 32:
        # int(0.3 x 2 x 48) = 28 windows an image, both images' windows read
        (_scannet_batch, 2 * 28 * 25 / (4 * 24 * 32)),
        # 1 pair: int(0.3 x 6 x 8 valid cells) = 14 windows an image, over 2 maps of 32 x 32
        (_megadepth_batch, 2 * 14 * 25 / (2 * 32 * 32)),
    ],
    ids=["scannet", "megadepth"],
)
def test_the_coverage_threshold_picks_the_path_both_ways(batch_fn, share):
    cfg = _config("dual_softmax", False)
    model, loss_fn = LoFTR(cfg).train(), LoFTRLoss(cfg)
    for threshold, path in ((share, "sparse"), (share - 1e-3, "dense")):
        _, _, plan = _step(model, loss_fn, cfg, batch_fn(), coverage=threshold)
        assert plan == {"window_share": pytest.approx(share, abs=1e-12), "conv2": path}


def test_the_config_key_sets_the_threshold_and_is_checked():
    cfg = _config("dual_softmax", False)
    assert cfg["fine_train_max_coverage"] == 0.5  # conf/model/loftr.yaml
    assert LoFTR(dict(cfg, fine_train_max_coverage=0.0)).backbone.train_max_sparse_coverage == 0
    older = {k: v for k, v in cfg.items() if k != "fine_train_max_coverage"}
    assert LoFTR(older).backbone.train_max_sparse_coverage == 0.5
    with pytest.raises(ConfigError, match=r"model\.fine_train_max_coverage=1\.5"):
        LoFTR(dict(cfg, fine_train_max_coverage=1.5))


def test_windows_equal_kornias_whole_fine_map_in_both_paths():
    """The backbone's windowed forward against kornia's forward (the whole map, then unfold)."""
    cfg = _config("dual_softmax", False)
    backbone = LoFTR(cfg).backbone.train()
    images = torch.rand(2, 1, 48, 64)
    b_ids = torch.tensor([0, 0, 1, 1, 1])
    ids = torch.tensor([0, 7, 40, 47, 20])  # corners (windows partly outside) and the middle
    state = copy.deepcopy(backbone.state_dict())
    _, reference = super(type(backbone), backbone).forward(images)
    running = backbone.layer1_outconv2[1].running_var.clone()
    expected = _unfold_at(reference, b_ids, ids, 5, 4)
    for threshold in (0.0, 1.0):
        backbone.load_state_dict(state)
        backbone.train_max_sparse_coverage = threshold
        _, fine = backbone.forward_windowed(images)
        assert fine.shape == reference.shape
        windows = fine.windows(b_ids, ids, 5, 4)
        torch.testing.assert_close(windows, expected, rtol=1e-6, atol=1e-6)
        # cell 0's window: two rows and two columns outside the image, read as zeros
        assert windows[0, :12].abs().sum() == 0 and windows[0, 12].abs().sum() > 0
        # the BatchNorm statistics move as in kornia's forward
        assert torch.equal(backbone.layer1_outconv2[1].running_var, running)
