"""The LoFTR model against kornia's, the spec's numbers and hand-worked matching cases."""

from __future__ import annotations

import copy
import math

import kornia.feature as KF
import numpy as np
import pytest
import skimage.data
import torch
from kornia.feature.loftr.loftr import default_cfg as kornia_default_cfg
from omegaconf import OmegaConf

from loftr.errors import CheckpointError, ConfigError
from loftr.model import LoFTR, count_parameters
from loftr.model.coarse_matching import CoarseMatching, log_optimal_transport
from loftr.model.transformer import LocalFeatureTransformer

MODEL_YAML = "conf/model/loftr.yaml"


def paper_config(**match_coarse):
    cfg = OmegaConf.to_container(OmegaConf.load(MODEL_YAML))
    cfg["match_coarse"].update(match_coarse)
    return cfg


def textured_pair(shift=(10, 14), size=(240, 320)):
    img = skimage.data.camera().astype(np.float32) / 255.0
    h, w = size
    dy, dx = shift
    i0 = torch.from_numpy(img[:h, :w].copy())[None, None]
    i1 = torch.from_numpy(img[dy : dy + h, dx : dx + w].copy())[None, None]
    return i0, i1


@pytest.fixture(scope="module")
def kornia_and_ours():
    """kornia's random-weight LoFTR and ours holding its weights, both in eval mode.

    The threshold is 0 on both sides: random weights give low confidences, and the mutual
    nearest neighbour still selects a few dozen matches to compare.
    """
    kcfg = copy.deepcopy(kornia_default_cfg)
    kcfg["match_coarse"]["thr"] = 0.0
    torch.manual_seed(0)
    kornia_model = KF.LoFTR(pretrained=None, config=kcfg).eval()
    cfg = paper_config(thr=0.0)
    cfg["coarse"]["temp_bug_fix"] = False  # kornia's default_cfg, the released checkpoints'
    ours = LoFTR(cfg).eval()
    ours.load_state_dict(kornia_model.state_dict())
    return kornia_model, ours


def _match_both(kornia_model, ours, i0, i1):
    with torch.no_grad():
        ref = kornia_model({"image0": i0, "image1": i1})
        data = {"image0": i0, "image1": i1}
        ours(data)
    return ref, data


def test_paper_model_parameter_count():
    assert count_parameters(LoFTR(paper_config())) == 11_561_456  # docs/original.md#state-dict
    assert count_parameters(LoFTR(paper_config(match_type="sinkhorn"))) == 11_561_457


def test_same_matches_as_kornia_on_its_weights(kornia_and_ours):
    kornia_model, ours = kornia_and_ours
    i0, i1 = textured_pair()
    ref, data = _match_both(kornia_model, ours, i0, i1)
    assert len(ref["keypoints0"]) >= 10
    assert data["mkpts0_f"].shape == ref["keypoints0"].shape
    assert torch.allclose(data["mkpts0_f"], ref["keypoints0"], atol=1e-4)
    assert torch.allclose(data["mkpts1_f"], ref["keypoints1"], atol=1e-4)
    assert torch.allclose(data["mconf"], ref["confidence"], atol=1e-6)
    assert torch.equal(data["m_bids"], ref["batch_indexes"])


def test_state_dicts_load_both_ways_with_and_without_prefix(kornia_and_ours):
    kornia_model, ours = kornia_and_ours
    cfg = paper_config(thr=0.0)
    cfg["coarse"]["temp_bug_fix"] = False
    prefixed = {f"matcher.{k}": v for k, v in kornia_model.state_dict().items()}
    reloaded = LoFTR(cfg).eval()
    reloaded.load_state_dict(prefixed)
    for key, value in ours.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value)
    # kornia loads ours strictly
    fresh_kornia = KF.LoFTR(pretrained=None).eval()
    fresh_kornia.load_state_dict(ours.state_dict(), strict=True)
    i0, i1 = textured_pair()
    ref, data = _match_both(kornia_model, reloaded, i0, i1)
    assert torch.allclose(data["mkpts1_f"], ref["keypoints1"], atol=1e-4)


def test_lightning_checkpoint_file_loads_and_mismatches_name_keys(tmp_path, kornia_and_ours):
    _, ours = kornia_and_ours
    ckpt = tmp_path / "model.ckpt"
    sd = {f"matcher.{k}": v for k, v in ours.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, ckpt)
    cfg = paper_config()
    cfg["coarse"]["temp_bug_fix"] = False
    loaded = LoFTR(cfg).load_weights(ckpt)
    for key, value in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    # another architecture: OT has a bin score the DS checkpoint lacks
    with pytest.raises(CheckpointError, match="coarse_matching.bin_score"):
        LoFTR(paper_config(match_type="sinkhorn")).load_weights(ckpt)
    # a truncated file names the file
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="broken.ckpt"):
        LoFTR(cfg).load_weights(broken)


def reference_log_ot(scores: np.ndarray, alpha: float, iters: int) -> np.ndarray:
    """docs/original.md#sinkhorn in plain numpy, one matrix at a time, with scipy-free
    log-sum-exp."""

    def lse(x, axis):
        m = x.max(axis=axis, keepdims=True)
        return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)

    rows, cols = scores.shape
    z = np.full((rows + 1, cols + 1), alpha, dtype=np.float64)
    z[:rows, :cols] = scores
    norm = -math.log(rows + cols)
    log_mu = np.array([norm] * rows + [math.log(cols) + norm])
    log_nu = np.array([norm] * cols + [math.log(rows) + norm])
    u, v = np.zeros(rows + 1), np.zeros(cols + 1)
    for _ in range(iters):
        u = log_mu - lse(z + v[None, :], axis=1)
        v = log_nu - lse(z + u[:, None], axis=0)
    return z + u[:, None] + v[None, :] - norm


def test_sinkhorn_matches_reference_and_reaches_marginals():
    torch.manual_seed(1)
    scores = torch.randn(2, 5, 7, dtype=torch.float64)
    alpha = torch.tensor(1.0, dtype=torch.float64)
    plan = log_optimal_transport(scores, alpha, iters=3)
    assert plan.shape == (2, 6, 8)
    for b in range(2):
        expected = reference_log_ot(scores[b].numpy(), 1.0, 3)
        np.testing.assert_allclose(plan[b].numpy(), expected, atol=1e-10)
    converged = log_optimal_transport(scores, alpha, iters=500).exp()
    rows, cols = 5, 7
    # marginals x (L + S): every real row and column carries 1, the dustbins S and L
    torch.testing.assert_close(converged.sum(2)[:, :rows], torch.ones(2, rows, dtype=torch.float64))
    torch.testing.assert_close(
        converged.sum(2)[:, rows], torch.full((2,), float(cols), dtype=torch.float64)
    )
    torch.testing.assert_close(converged.sum(1)[:, :cols], torch.ones(2, cols, dtype=torch.float64))
    torch.testing.assert_close(
        converged.sum(1)[:, cols], torch.full((2,), float(rows), dtype=torch.float64)
    )


def diagonal_features(h: int, w: int, strength: float = 8.0) -> torch.Tensor:
    """(1, h*w, C) one-hot features: cell k is most similar to cell k of the other image."""
    n = h * w
    return (torch.eye(n) * strength * math.sqrt(n))[None]


def _matching(match_type="dual_softmax", border_rm=1, **extra):
    cfg = paper_config(match_type=match_type, border_rm=border_rm, thr=0.1, **extra)["match_coarse"]
    return CoarseMatching(cfg)


@pytest.mark.parametrize("match_type", ["dual_softmax", "sinkhorn"])
def test_padded_cells_never_match_and_border_uses_valid_extent(match_type):
    h = w = 8
    feat = diagonal_features(h, w)
    matcher = _matching(match_type).eval()
    if match_type == "sinkhorn":
        with torch.no_grad():
            matcher.bin_score.fill_(-5.0)
    # without masks: border 1 on an 8x8 grid keeps rows and columns 1..6 -> 36 matches
    data = {"hw0_c": (h, w), "hw1_c": (h, w), "stride_c": 8, "bs": 1}
    with torch.no_grad():
        matcher(feat, feat, data)
    assert len(data["mconf"]) == 36
    # valid extent 6 rows x 5 columns: border 1 keeps rows 1..4 and columns 1..3 -> 12 matches
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[:, :6, :5] = True
    data = {"hw0_c": (h, w), "hw1_c": (h, w), "stride_c": 8, "bs": 1, "mask0": mask, "mask1": mask}
    with torch.no_grad():
        matcher(feat, feat, data, mask.flatten(1), mask.flatten(1))
    kept = {(int(x) // 8, int(y) // 8) for x, y in data["mkpts0_c"]}
    assert kept == {(x, y) for y in range(1, 5) for x in range(1, 4)}
    assert (data["conf_matrix"][0][~mask.flatten()] == 0).all()
    assert (data["conf_matrix"][0][:, ~mask.flatten()] == 0).all()


def test_whole_model_never_matches_padded_cells():
    torch.manual_seed(0)
    model = LoFTR(paper_config(thr=0.0, border_rm=0)).eval()
    img = torch.from_numpy(skimage.data.camera()[:64, :64].astype(np.float32) / 255)[None, None]
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :5, :6] = True
    data = {
        "image0": img * mask.repeat_interleave(8, 1).repeat_interleave(8, 2),
        "image1": img.clone(),
        "mask0": mask,
        "mask1": torch.ones(1, 8, 8, dtype=torch.bool),
    }
    with torch.no_grad():
        model(data)
    assert len(data["mkpts0_c"]) > 0
    assert (data["mkpts0_c"][:, 0] < 6 * 8).all() and (data["mkpts0_c"][:, 1] < 5 * 8).all()


@pytest.mark.parametrize(
    "size, percent, masked, expected",
    # the examples of docs/original.md#coarse-padding
    [((480, 640), 0.2, False, 960), ((640, 640), 0.3, True, 1440)],
)
def test_training_pads_to_exactly_the_train_share(size, percent, masked, expected):
    h, w = size[0] // 8, size[1] // 8
    torch.manual_seed(0)
    feat0, feat1 = torch.randn(1, h * w, 8), torch.randn(1, h * w, 8)
    matcher = CoarseMatching(paper_config(train_coarse_percent=percent)["match_coarse"]).train()
    n_gt = 50
    data = {
        "hw0_c": (h, w),
        "hw1_c": (h, w),
        "stride_c": 8,
        "bs": 1,
        "spv_b_ids": torch.zeros(n_gt, dtype=torch.long),
        "spv_i_ids": torch.arange(n_gt) + 100,
        "spv_j_ids": torch.arange(n_gt) + 200,
    }
    m0 = m1 = None
    if masked:  # a 640x480 landscape image padded to 640x640: 60 valid rows of 80
        mask = torch.zeros(1, h, w, dtype=torch.bool)
        mask[:, :60] = True
        data.update(mask0=mask, mask1=mask)
        m0 = m1 = mask.flatten(1)
    matcher(feat0, feat1, data, m0, m1)
    assert len(data["b_ids"]) == expected
    n_pred = int((~data["gt_mask"]).sum())
    n_pad = int(data["gt_mask"].sum())
    assert n_pred + n_pad == expected and n_pad >= 200
    assert len(data["mconf"]) == n_pred
    pads_i = data["i_ids"][data["gt_mask"]]
    assert ((pads_i >= 100) & (pads_i < 100 + n_gt)).all()
    assert torch.equal(data["j_ids"][data["gt_mask"]], pads_i + 100)


def test_too_small_training_input_names_the_keys():
    matcher = CoarseMatching(paper_config()["match_coarse"]).train()
    feat = torch.randn(1, 64, 8)
    data = {"hw0_c": (8, 8), "hw1_c": (8, 8), "stride_c": 8, "bs": 1}
    with pytest.raises(ConfigError, match="train_pad_num_gt_min"):
        matcher(feat, feat, data)


def test_bf16_autocast_forward_is_finite():
    cfg = paper_config(thr=0.0, border_rm=0, match_type="sinkhorn", sparse_spvs=True)
    model = LoFTR(cfg).eval()
    i0, i1 = textured_pair(shift=(2, 3), size=(32, 32))
    data = {"image0": i0, "image1": i1}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(data)
    for key in ("conf_matrix", "conf_matrix_with_bin", "mkpts0_f", "mkpts1_f", "mconf"):
        assert torch.isfinite(data[key].float()).all(), key
    assert len(data["mconf"]) > 0


@pytest.mark.parametrize("attention", ["linear", "full"])
def test_attention_ignores_padded_tokens(attention):
    cfg = paper_config()["coarse"] | {"attention": attention, "d_model": 32, "nhead": 4}
    torch.manual_seed(0)
    transformer = LocalFeatureTransformer(cfg).eval()
    feat0, feat1 = torch.randn(2, 12, 32), torch.randn(2, 10, 32)
    mask0 = torch.ones(2, 12, dtype=torch.bool)
    mask1 = torch.ones(2, 10, dtype=torch.bool)
    mask0[1, 8:] = False
    mask1[0, 6:] = False
    out0, out1 = transformer(feat0, feat1, mask0, mask1)
    scrambled0, scrambled1 = feat0.clone(), feat1.clone()
    scrambled0[~mask0] = torch.randn(int((~mask0).sum()), 32) * 100
    scrambled1[~mask1] = torch.randn(int((~mask1).sum()), 32) * 100
    again0, again1 = transformer(scrambled0, scrambled1, mask0, mask1)
    assert torch.isfinite(out0).all() and torch.isfinite(again0).all()
    torch.testing.assert_close(again0[mask0], out0[mask0])
    torch.testing.assert_close(again1[mask1], out1[mask1])


def test_coarse_16_4_variant_runs():
    cfg = paper_config(thr=0.0, border_rm=0)
    cfg["resolution"] = [16, 4]
    cfg["resnetfpn"]["block_dims"] = [128, 128, 196, 256]  # coarse 256, fine 128 channels
    model = LoFTR(cfg).eval()
    i0, i1 = textured_pair(size=(64, 64))
    data = {"image0": i0, "image1": i1}
    with torch.no_grad():
        model(data)
    assert data["conf_matrix"].shape == (1, 16, 16)
    assert data["hw0_f"] == (16, 16)


@pytest.mark.parametrize(
    "path, value, key",
    [
        ("fine_window_size", 4, "model.fine_window_size"),
        ("resolution", [8, 4], "model.resolution"),
        ("match_coarse.match_type", "hungarian", "model.match_coarse.match_type"),
        ("coarse.attention", "sparse", "model.coarse.attention"),
        ("fine.d_model", 64, "model.fine.d_model"),
    ],
)
def test_invalid_model_values_name_the_key(path, value, key):
    cfg = OmegaConf.create(paper_config())
    OmegaConf.update(cfg, path, value)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        LoFTR(cfg)


def test_image_not_divisible_by_8_is_refused():
    model = LoFTR(paper_config()).eval()
    with pytest.raises(ValueError, match="multiples of 8"):
        model({"image0": torch.rand(1, 1, 60, 64), "image1": torch.rand(1, 1, 64, 64)})


# ------------------------------------------------------------------------------------------
# The fast inference path: folded BatchNorm, channels-last, fine windows only, fused layers
# ------------------------------------------------------------------------------------------


def _run(model, data, reference=False):
    """Forward on a copy of `data`; `reference=True` takes the training-style module path.

    The fast path applies in eval mode without autograd; with autograd recording, the same eval
    model runs kornia's module-by-module forward, which is the reference.
    """
    data = dict(data)
    if reference:
        with torch.enable_grad():
            model(data)
    else:
        with torch.no_grad():
            model(data)
    return data


def _assert_same_matches(fast, ref, atol=1e-4):
    assert torch.equal(fast["b_ids"], ref["b_ids"])
    assert torch.equal(fast["i_ids"], ref["i_ids"])
    assert torch.equal(fast["j_ids"], ref["j_ids"])
    torch.testing.assert_close(fast["mkpts0_f"], ref["mkpts0_f"].detach(), atol=atol, rtol=0)
    torch.testing.assert_close(fast["mkpts1_f"], ref["mkpts1_f"].detach(), atol=atol, rtol=0)
    torch.testing.assert_close(fast["mconf"], ref["mconf"].detach(), atol=1e-5, rtol=1e-4)


def _realistic_fine_scale(model):
    """Scale the fine merge down to unit-size outputs, as a trained model's are.

    With raw random weights the fine features are ~50x larger than the LayerNorm outputs the
    fine transformer adds, so the 5x5 heatmaps are one-hot with logits in the thousands and a
    float rounding difference of 1e-6 moves a keypoint by 1e-4 px; a trained model's heatmaps
    are far softer (and so are these after the scaling).
    """
    with torch.no_grad():
        model.fine_preprocess.merge_feat.weight.mul_(0.02)
        model.fine_preprocess.merge_feat.bias.mul_(0.02)
    return model


@pytest.fixture(scope="module")
def eval_model():
    torch.manual_seed(0)
    return _realistic_fine_scale(LoFTR(paper_config(thr=0.0, border_rm=0)).eval())


@pytest.mark.parametrize("coverage", [1.0, 0.0, 0.5], ids=["sparse", "dense", "auto"])
def test_fine_windows_only_equal_full_computation(eval_model, coverage):
    """The fine branch around the selected windows gives the full computation's keypoints."""
    eval_model.backbone.max_sparse_coverage = coverage
    i0, i1 = textured_pair(shift=(5, 9), size=(96, 128))
    data = {"image0": i0, "image1": i1}
    try:
        fast = _run(eval_model, data)
        ref = _run(eval_model, data, reference=True)
        eval_model.fine_windows_only = False
        whole_map = _run(eval_model, data)
    finally:
        eval_model.fine_windows_only = True
        eval_model.backbone.max_sparse_coverage = 0.5
    assert len(fast["mconf"]) >= 20
    # border_rm=0: windows at the image border, partly outside it, are among them
    assert (fast["mkpts0_c"] == 0).any() or (fast["mkpts1_c"] == 0).any()
    _assert_same_matches(fast, whole_map)
    _assert_same_matches(fast, ref)


def test_fast_path_with_masks_batches_and_unequal_sizes(eval_model):
    eval_model.backbone.max_sparse_coverage = 1.0
    i0, i1 = textured_pair(shift=(3, 4), size=(64, 96))
    mask = torch.ones(2, 8, 12, dtype=torch.bool)
    mask[1, 6:] = False
    mask[0, :, 10:] = False
    batch = {
        "image0": torch.cat([i0, i0.flip(-1)]),
        "image1": torch.cat([i1, i1.flip(-1)]),
        "mask0": mask,
        "mask1": mask.clone(),
    }
    unequal = {"image0": i0, "image1": textured_pair(size=(80, 96))[1]}
    try:
        for data in (batch, unequal):
            _assert_same_matches(_run(eval_model, data), _run(eval_model, data, reference=True))
    finally:
        eval_model.backbone.max_sparse_coverage = 0.5


def test_lazy_windows_equal_unfold_of_the_dense_map(eval_model):
    from kornia.feature.loftr.loftr_module.fine_preprocess import _unfold_at

    images = torch.cat(textured_pair(size=(64, 96)))
    with torch.no_grad():
        _, lazy = eval_model.backbone.forward_lazy(images)
        dense = lazy.dense()
        b_ids = torch.tensor([0, 0, 1, 1, 1, 0])
        ids = torch.tensor([0, 11, 95, 50, 51, 84])  # corners, neighbours (shared pixels)
        for coverage in (1.0, 0.0):
            lazy.max_sparse_coverage = coverage
            lazy._cache.clear()
            windows = lazy.windows(b_ids, ids, 5, 4)
            torch.testing.assert_close(windows, _unfold_at(dense, b_ids, ids, 5, 4))
            assert lazy.last_plan["conv2"] == ("sparse" if coverage == 1.0 else "dense")


def test_sparse_conv3x3_equals_conv2d_at_the_pixels():
    from loftr.model.fine import _pad_nhwc, sparse_conv3x3

    conv = torch.nn.Conv2d(6, 5, 3, padding=1)
    x = torch.randn(2, 6, 7, 9)
    pixels = torch.tensor([[0, 0, 0], [0, 6, 8], [1, 3, 4], [1, 0, 8], [0, 2, 1]])
    with torch.no_grad():
        expected = conv(x).permute(0, 2, 3, 1)[pixels[:, 0], pixels[:, 1], pixels[:, 2]]
        got = sparse_conv3x3(_pad_nhwc(x, 1), pixels, conv, chunk=2)
    torch.testing.assert_close(got, expected)


def test_folded_batchnorm_keeps_the_parameters_and_follows_their_changes():
    torch.manual_seed(0)
    model = _realistic_fine_scale(LoFTR(paper_config(thr=0.0, border_rm=0)).eval())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    i0, i1 = textured_pair(size=(64, 96))
    data = {"image0": i0, "image1": i1}
    _run(model, data)
    after = model.state_dict()
    assert set(after) == set(before)  # no cache in the state dict
    assert all(torch.equal(before[k], after[k]) for k in before)
    KF.LoFTR(pretrained=None).load_state_dict(after, strict=True)
    # a changed BatchNorm statistic reaches the folded copy
    with torch.no_grad():
        model.backbone.layer1[0].bn1.running_var.mul_(4.0)
        model.backbone.layer2_outconv2[1].running_mean.add_(0.5)
    changed = _run(model, data)
    _assert_same_matches(changed, _run(model, data, reference=True))
    model.load_state_dict(before)
    _assert_same_matches(_run(model, data), _run(model, data, reference=True))


@pytest.mark.parametrize("attention", ["linear", "full"])
def test_fast_transformer_equals_the_layer_by_layer_one(attention):
    cfg = paper_config()["coarse"] | {"attention": attention, "d_model": 32, "nhead": 4}
    transformer = LocalFeatureTransformer(cfg).eval()
    feat0, feat1 = torch.randn(2, 12, 32), torch.randn(2, 12, 32)
    other = torch.randn(2, 10, 32)
    mask0 = torch.ones(2, 12, dtype=torch.bool)
    mask0[1, 9:] = False
    for args in ((feat0, feat1), (feat0, other), (feat0, feat1, mask0, mask0.flip(0))):
        with torch.no_grad():
            fast = transformer(*args)
        with torch.enable_grad():
            ref = transformer(*args)
        for a, b in zip(fast, ref, strict=True):
            torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=1e-5)


def test_in_place_dual_softmax_equals_the_autograd_one():
    cfg = paper_config(border_rm=0, thr=0.0)["match_coarse"]
    matcher = CoarseMatching(cfg).eval()
    feat0, feat1 = torch.randn(1, 48, 16), torch.randn(1, 48, 16)
    mask = torch.ones(1, 6, 8, dtype=torch.bool)
    mask[:, 5:] = False
    base = {"hw0_c": (6, 8), "hw1_c": (6, 8), "stride_c": 8, "bs": 1, "mask0": mask, "mask1": mask}
    fast, ref = dict(base), dict(base)
    with torch.no_grad():
        matcher(feat0, feat1, fast, mask.flatten(1), mask.flatten(1))
    matcher(feat0.requires_grad_(), feat1, ref, mask.flatten(1), mask.flatten(1))
    torch.testing.assert_close(fast["conf_matrix"], ref["conf_matrix"].detach())
    assert (fast["conf_matrix"][0, 40:] == 0).all()
    assert torch.equal(fast["j_ids"], ref["j_ids"])


@pytest.mark.slow  # compiling with inductor takes about a minute on a cold cache
def test_compile_switch_gives_the_same_matches():
    torch.manual_seed(0)
    cfg = paper_config(thr=0.0, border_rm=0)
    eager = _realistic_fine_scale(LoFTR(cfg).eval())
    compiled = LoFTR(cfg | {"compile": True}).eval()
    compiled.load_state_dict(eager.state_dict())
    assert compiled.compile and set(compiled.state_dict()) == set(eager.state_dict())
    i0, i1 = textured_pair(shift=(4, 6), size=(64, 96))
    data = {"image0": i0, "image1": i1}
    ref = _run(eager, data)
    for _ in range(2):  # the second call reuses the compiled graphs
        got = _run(compiled, data)
    assert set(compiled._compiled) == {"backbone_trunk", "loftr_coarse", "loftr_fine"}
    assert set(compiled.state_dict()) == set(eager.state_dict())  # nothing compiled is saved
    _assert_same_matches(got, ref, atol=1e-3)
