"""Experiments, sweeps, model variants, the results collector and the dashboard definition."""

from __future__ import annotations

import copy
import csv
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

import loftr.config  # noqa: F401  (registers the schemas and resolvers)
from experiments import collect as collector
from experiments import dashboard
from experiments.parameters import parameter_table
from loftr.errors import ConfigError, DataError
from loftr.evaluation.export import SCHEMA_VERSION, protocol_fields, write_metrics
from loftr.evaluation.protocol import Protocol, hash_index, validation_protocols
from loftr.model import LoFTR, count_parameters, parameter_counts
from loftr.model.config import model_config
from loftr.model.transformer import LocalFeatureTransformer
from loftr.model.variants import ConvBlock, ConvFeatureStack, EveryLayerPositionTransformer
from tests.helpers import ROOT
from tests.helpers.compose import CONF, compose_cfg
from tests.helpers.wandb_records import offline_run_file, read_records, run_record

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
HARDWARE = sorted(p.stem for p in (CONF / "hardware").glob("*.yaml"))
LOGGERS = sorted(p.stem for p in (CONF / "logger").glob("*.yaml"))


def compose_experiment(name: str, *overrides: str, hydra_node: bool = False):
    """Training experiments compose with `train`, evaluation ones (`eval_*`) with `evaluate`."""
    if name.startswith("eval_"):
        return compose_cfg("evaluate", f"experiment={name}", *overrides, hydra_node=hydra_node)
    return compose_cfg("train", f"experiment={name}", *overrides, hydra_node=hydra_node)


# --------------------------------------------------------------------------------------------
# Experiment configs
# --------------------------------------------------------------------------------------------


def test_the_issue_s_experiments_exist():
    expected = {"indoor_ds", "indoor_ot", "outdoor_ds", "outdoor_ot", "outdoor_ds_840"}
    expected |= {"outdoor_ot_840", "eval_indoor_ds", "eval_indoor_ot", "eval_outdoor_ds"}
    expected |= {"ablation_supervision", "ablation_table6", "ablation_attention"}
    expected |= {"ablation_batch_size"}
    assert expected <= set(EXPERIMENTS)


def check_composes(experiment: str, hardware: str, logger: str) -> None:
    cfg = compose_experiment(experiment, f"hardware={hardware}", f"logger={logger}")
    plain = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    model_config(cfg.model)  # and the model config is valid
    chosen = OmegaConf.load(CONF / "hardware" / f"{hardware}.yaml")
    assert cfg.hardware.accelerator == chosen.get("accelerator", "cpu"), hardware
    assert cfg.hardware.devices == chosen.get("devices", 1), hardware
    assert cfg.logger.kind == logger
    assert cfg.name == experiment
    if "optim" in plain:  # training: the LR follows the true batch (docs/original.md#lr-scaling)
        hw = cfg.hardware
        true_batch = hw.devices * hw.num_nodes * hw.batch_size * cfg.accumulate
        expected = plain["optim"]["canonical_lr"] * true_batch / plain["optim"]["canonical_bs"]
        assert plain["optim"]["lr"] == pytest.approx(expected)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_every_hardware_and_logger(experiment):
    """Every hardware choice, each with a logger in turn, so every logger is used too."""
    assert len(HARDWARE) >= len(LOGGERS)
    for i, hardware in enumerate(HARDWARE):
        check_composes(experiment, hardware, LOGGERS[i % len(LOGGERS)])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_every_hardware_logger_pair(experiment):
    for hardware in HARDWARE:
        for logger in LOGGERS:
            check_composes(experiment, hardware, logger)


def test_indoor_recipes_are_the_original_training_scripts():
    for name, match_type in (("indoor_ds", "dual_softmax"), ("indoor_ot", "sinkhorn")):
        cfg = OmegaConf.to_container(compose_experiment(name), resolve=True)
        assert cfg["dataset"]["name"] == "scannet"
        assert cfg["model"]["match_coarse"]["match_type"] == match_type
        assert cfg["model"]["match_coarse"]["sparse_spvs"] is False  # the *_dense configs
        assert cfg["model"]["match_coarse"]["train_coarse_percent"] == 0.2
        hw = cfg["hardware"]
        assert (hw["devices"], hw["num_nodes"], hw["batch_size"], hw["num_workers"]) == (4, 1, 1, 4)
        assert hw["sync_batchnorm"] and hw["benchmark"] and hw["pin_memory"]
        assert cfg["trainer"]["max_epochs"] == 30
        assert cfg["trainer"]["num_sanity_val_steps"] == 10
        assert cfg["trainer"]["check_val_every_n_epoch"] == 1
        assert cfg["trainer"]["limit_val_batches"] == 1.0
        assert cfg["logger"]["log_every_n_steps"] == 100
        assert cfg["checkpoint"]["monitor"] == "auc@10" and cfg["checkpoint"]["save_top_k"] == 5
        # docs/original.md#lr-scaling worked values: 4 x 1 -> 6e-3 x 4 / 64 and floor(4800 x 64 / 4)
        assert cfg["optim"]["lr"] == pytest.approx(3.75e-4)
        assert cfg["optim"]["warmup_steps"] == 76_800
        assert cfg["optim"]["milestones"] == [3, 6, 9, 12, 17, 20, 23, 26, 29]


def test_outdoor_recipes_are_the_original_training_scripts():
    for name, match_type, size in (
        ("outdoor_ds", "dual_softmax", 640),
        ("outdoor_ot", "sinkhorn", 640),
        ("outdoor_ds_840", "dual_softmax", 840),
        ("outdoor_ot_840", "sinkhorn", 840),
    ):
        cfg = OmegaConf.to_container(compose_experiment(name), resolve=True)
        assert cfg["dataset"]["trainval_data_source"] == "MegaDepth"
        assert cfg["dataset"]["mgdpt_img_resize"] == size
        assert cfg["dataset"]["n_samples_per_subset"] == 100
        assert cfg["model"]["match_coarse"]["match_type"] == match_type
        assert cfg["model"]["match_coarse"]["sparse_spvs"] is False
        assert cfg["model"]["match_coarse"]["train_coarse_percent"] == 0.3
        assert cfg["hardware"]["devices"] == 4
        assert cfg["trainer"]["max_epochs"] == 30
        assert cfg["logger"]["log_every_n_steps"] == 1
        # docs/original.md#lr-scaling worked values: 8e-3 x 4 / 64, floor(1875 x 16), warm-up from
        # 0.1 x lr
        assert cfg["optim"]["lr"] == pytest.approx(5e-4)
        assert cfg["optim"]["warmup_steps"] == 30_000
        assert cfg["optim"]["warmup_ratio"] == 0.1
        assert cfg["optim"]["milestones"] == [8, 12, 16, 20, 24]


def test_evaluation_experiments_are_the_original_test_scripts():
    # docs/original.md#test-scripts pairings and docs/original.md#model-configs eval configs
    expected = {
        "eval_indoor_ds": ("scannet_test_1500", "dual_softmax", False, 0, "indoor_ds"),
        "eval_indoor_ds_new": ("scannet_test_1500", "dual_softmax", True, 0, "indoor_ds_new"),
        "eval_indoor_ot": ("scannet_test_1500", "sinkhorn", False, 2, "indoor_ot"),
        "eval_outdoor_ds": ("megadepth_test_1500", "dual_softmax", False, 2, "outdoor_ds"),
        "eval_outdoor_ot": ("megadepth_test_1500", "sinkhorn", False, 2, "outdoor_ot"),
    }
    for name, (dataset, match_type, bug_fix, border_rm, ckpt) in expected.items():
        cfg = compose_experiment(name)
        assert cfg.dataset.name == dataset
        assert cfg.model.match_coarse.match_type == match_type
        assert cfg.model.coarse.temp_bug_fix is bug_fix
        assert cfg.model.match_coarse.border_rm == border_rm
        assert cfg.ckpt_path == f"weights/{ckpt}.ckpt" and cfg.model_from_ckpt is False
    assert compose_experiment("eval_outdoor_ds").dataset.mgdpt_img_resize == 840
    assert compose_experiment("eval_indoor_ds", "ckpt_path=mine.ckpt").ckpt_path == "mine.ckpt"


def test_sweeps_state_their_parameters():
    def params(name: str) -> dict:
        return dict(compose_experiment(name, hydra_node=True).hydra.sweeper.params)

    assert params("ablation_supervision") == {"matcher": "ds,ot", "supervision": "dense,sparse"}
    assert params("ablation_attention") == {"model": "loftr,loftr_full_attention"}
    assert params("ablation_batch_size") == {"accumulate": "1,8,16"}
    table6 = params("ablation_table6")["model"].split(",")
    assert table6 == ["loftr_conv", "loftr_16_4", "loftr_pe_every_layer", "loftr_large", "loftr"]
    cfg = compose_experiment("ablation_table6")
    assert cfg.model.match_coarse.match_type == "sinkhorn"  # Table 6 is OT on ScanNet
    assert cfg.dataset.name == "scannet"


def test_batch_size_sweep_follows_the_linear_lr_rule():
    seen = {}
    for accumulate in (1, 8, 16):
        cfg = compose_experiment("ablation_batch_size", f"accumulate={accumulate}")
        optim = OmegaConf.to_container(cfg.optim, resolve=True)
        seen[4 * accumulate] = (optim["lr"], optim["warmup_steps"])
    # true batch B = 4 GPUs x 1 x accumulate: lr = 6e-3 x B / 64, warm-up = 4800 x 64 / B
    assert seen[4] == (pytest.approx(3.75e-4), 76_800)
    assert seen[32] == (pytest.approx(3e-3), 9_600)
    assert seen[64] == (pytest.approx(6e-3), 4_800)


# --------------------------------------------------------------------------------------------
# Model variants (Table 6)
# --------------------------------------------------------------------------------------------


def _encoder_layer(c: int) -> int:
    """A LoFTR encoder layer (docs/original.md#transformer): q, k, v, merge 4C^2; MLP 2C x 2C + 2C x
    C; 2 norms."""
    return 4 * c * c + 6 * c * c + 4 * c


# ResNetFPN_16_4 with block dims [128, 128, 196, 256] (docs/original.md#backbone layout), by hand:
# stem 7x7x128 + BN 256 = 6,528; layer1 2 x (2 x 147,456 + 512) = 590,848;
# layer2 (294,912 + 512 + 16,384 + 256) + 295,424 = 607,488;
# layer3 (225,792 + 345,744 + 784 + 25,088 + 392) + (2 x 345,744 + 784) = 1,290,072;
# layer4 (451,584 + 589,824 + 1,024 + 50,176 + 512) + (2 x 589,824 + 1,024) = 2,273,792;
# FPN 65,536 + 50,176 + (589,824 + 512 + 451,584) + 25,088 + (345,744 + 392 + 225,792)
#     = 1,754,648.  Sum 6,523,376.
BACKBONE_16_4 = 6_523_376
BACKBONE_8_2 = 5_915_888  # docs/original.md#state-dict


@pytest.mark.parametrize(
    ("model", "backbone", "coarse", "fine"),
    [
        ("loftr", BACKBONE_8_2, 8 * _encoder_layer(256), 2 * _encoder_layer(128)),
        ("loftr_conv", BACKBONE_8_2, 8 * _encoder_layer(256), 2 * _encoder_layer(128)),
        ("loftr_16_4", BACKBONE_16_4, 8 * _encoder_layer(256), 2 * _encoder_layer(128)),
        ("loftr_pe_every_layer", BACKBONE_8_2, 8 * _encoder_layer(256), 2 * _encoder_layer(128)),
        ("loftr_large", BACKBONE_8_2, 16 * _encoder_layer(256), 4 * _encoder_layer(128)),
        ("loftr_full_attention", BACKBONE_8_2, 8 * _encoder_layer(256), 2 * _encoder_layer(128)),
    ],
)
def test_table6_variants_build_with_their_parameter_counts(model, backbone, coarse, fine):
    cfg = compose_cfg("train", f"model={model}", "matcher=ot")
    counts = parameter_counts(cfg.model)
    assert counts["backbone"] == backbone
    assert counts["loftr_coarse"] == coarse
    assert counts["loftr_fine"] == fine
    assert counts["fine_preprocess"] == 65_792  # docs/original.md#state-dict
    assert counts["coarse_matching"] == 1  # the OT dustbin score
    assert counts["total"] == backbone + coarse + fine + 65_792 + 1
    if model == "loftr":
        assert counts["total"] == 11_561_457  # docs/original.md#state-dict: 11,561,456 + bin_score


def test_the_default_model_is_the_paper_layout_at_half_width():
    cfg = compose_cfg("train", "matcher=ot")
    assert cfg.model == compose_cfg("train", "model=loftr_small", "matcher=ot").model
    counts = parameter_counts(cfg.model)
    assert counts["loftr_coarse"] == 8 * _encoder_layer(128)
    assert counts["loftr_fine"] == 2 * _encoder_layer(64)
    # the coarse feature projected 128 -> 64, then [fine, coarse] 2 x 64 -> 64, each with a bias
    assert counts["fine_preprocess"] == 2 * (128 * 64 + 64)
    assert counts["total"] == 2_874_305  # experiments/README.md's table
    # the paper model stays one override away, and its recipes name it
    paper = parameter_counts(compose_cfg("train", "model=loftr", "matcher=ot").model)
    assert paper["total"] == 11_561_457
    for name in ("indoor_ds", "outdoor_ot", "ablation_supervision", "ablation_batch_size"):
        model = compose_experiment(name).model
        assert (model.resnetfpn.block_dims, model.coarse.d_model) == ([128, 196, 256], 256), name


def test_conv_block_has_exactly_a_loftr_layer_s_parameters():
    from kornia.feature.loftr.loftr_module.transformer import LoFTREncoderLayer

    for c in (8, 64, 256):
        assert count_parameters(ConvBlock(c)) == _encoder_layer(c)
        assert count_parameters(LoFTREncoderLayer(c, 8)) == _encoder_layer(c)


def _tiny_level(d_model: int, n_layers: int = 2, attention: str = "linear") -> dict:
    return {
        "d_model": d_model,
        "nhead": 2,
        "layer_names": ["self", "cross"] * (n_layers // 2),
        "attention": attention,
        "temp_bug_fix": True,
    }


def test_conv_stack_keeps_the_images_apart_and_ignores_padded_cells():
    stack = ConvFeatureStack(_tiny_level(8)).eval()
    feat0, feat1 = torch.randn(2, 12, 8), torch.randn(2, 20, 8)
    out0, out1 = stack(feat0, feat1, hw0=(3, 4), hw1=(4, 5))
    assert out0.shape == (2, 12, 8) and out1.shape == (2, 20, 8)
    # no cross-image step: image 1 does not change image 0's output
    other0, _ = stack(feat0, torch.randn(2, 20, 8), hw0=(3, 4), hw1=(4, 5))
    assert torch.equal(out0, other0)
    # same-shape images go through in one batch; the result is the per-image one
    same0, same1 = stack(feat0, feat0.flip(0), hw0=(3, 4), hw1=(3, 4))
    assert torch.allclose(same0, out0, atol=1e-6) and torch.allclose(same1, out0.flip(0), atol=1e-6)
    # padded cells (last column of the 3x4 map) never reach valid cells
    mask0 = torch.ones(2, 3, 4, dtype=torch.bool)
    mask0[:, :, 3] = False
    mask0, mask1 = mask0.flatten(1), torch.ones(2, 20, dtype=torch.bool)
    masked, _ = stack(feat0, feat1, mask0, mask1, hw0=(3, 4), hw1=(4, 5))
    changed = feat0.clone()
    changed[:, ~mask0[0]] = 100.0
    masked_changed, _ = stack(changed, feat1, mask0, mask1, hw0=(3, 4), hw1=(4, 5))
    assert torch.allclose(masked_changed[:, mask0[0]], masked[:, mask0[0]], atol=1e-6)
    # fine windows are square: the shape is inferred
    win0, win1 = stack(torch.randn(5, 25, 8), torch.randn(5, 25, 8))
    assert win0.shape == win1.shape == (5, 25, 8)
    with pytest.raises(ValueError, match="not a square"):
        stack(torch.randn(1, 12, 8), torch.randn(1, 12, 8))


def test_every_layer_positions_enter_queries_and_keys_only():
    torch.manual_seed(3)
    level = _tiny_level(8, n_layers=2, attention="full")
    detr = EveryLayerPositionTransformer(level).eval()
    plain = LocalFeatureTransformer(copy.deepcopy(level)).eval()
    plain.load_state_dict(detr.state_dict())
    assert set(detr.state_dict()) == set(plain.state_dict())
    feat0, feat1 = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    hw = (2, 3)

    # with zero positions it is the paper's layer stack
    zero = lambda feat, shape: torch.zeros(1, feat.shape[1], feat.shape[2])  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(detr, "_positions", zero)
        ours = detr(feat0, feat1, hw0=hw, hw1=hw)
    ref = plain(feat0, feat1)
    assert torch.allclose(ours[0], ref[0], atol=1e-6) and torch.allclose(ours[1], ref[1], atol=1e-6)

    # one self layer by hand: softmax((x+p)Wq ((x+p)Wk)^T / sqrt(D)) x Wv, heads of D = 4
    single = EveryLayerPositionTransformer({**level, "layer_names": ["self"]}).eval()
    out0, _ = single(feat0, feat1, hw0=hw, hw1=hw)
    layer = single.layers[0]
    pos = single._positions(feat0, hw)
    # the sine encoding of the 2 x 3 grid: channel 0 is sin(x) with x = 1..3
    # (docs/original.md#position-encoding)
    assert torch.allclose(pos[0, :, 0], torch.sin(torch.tensor([1.0, 2, 3, 1, 2, 3])))
    x = feat0[0]
    q = ((x + pos[0]) @ layer.q_proj.weight.T).view(6, 2, 4).transpose(0, 1)
    k = ((x + pos[0]) @ layer.k_proj.weight.T).view(6, 2, 4).transpose(0, 1)
    v = (x @ layer.v_proj.weight.T).view(6, 2, 4).transpose(0, 1)
    attn = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1) @ v
    message = layer.norm1(layer.merge(attn.transpose(0, 1).reshape(6, 8)))
    expected = x + layer.norm2(layer.mlp(torch.cat([x, message], dim=1)))
    assert torch.allclose(out0[0], expected, atol=1e-5)


TINY_MODEL = [
    "model.resnetfpn.initial_dim=16",
    "model.resnetfpn.block_dims=[16,24,32]",
    "model.coarse.d_model=32",
    "model.coarse.nhead=4",
    "model.fine.d_model=16",
    "model.fine.nhead=4",
]


@pytest.mark.parametrize(
    "model",
    ["loftr_conv", "loftr_16_4", "loftr_pe_every_layer", "loftr_large", "loftr_full_attention"],
)
def test_variant_models_match_and_pass_gradients(model):
    overrides = [f"model={model}", *TINY_MODEL]
    if model == "loftr_16_4":
        overrides[2] = "model.resnetfpn.block_dims=[16,16,24,32]"
    cfg = compose_cfg("train", *overrides)
    matcher = LoFTR(cfg.model).eval()
    torch.manual_seed(0)
    image = torch.rand(1, 1, 64, 96)
    data = {"image0": image, "image1": image.roll(8, dims=3)}
    matcher(data)
    stride = cfg.model.resolution[0]
    assert tuple(data["hw0_c"]) == (64 // stride, 96 // stride)
    assert data["conf_matrix"].shape == (1, 64 * 96 // stride**2, 64 * 96 // stride**2)
    assert data["mkpts0_f"].shape[1] == 2
    # inference without autograd (the fast paths) gives the same confidences
    fast = {"image0": data["image0"], "image1": data["image1"]}
    with torch.inference_mode():
        matcher(fast)
    assert (fast["conf_matrix"] - data["conf_matrix"].detach()).abs().max() < 1e-4
    data["conf_matrix"].sum().backward()
    grads = [p.grad for p in matcher.loftr_coarse.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_pe_every_layer_keeps_the_paper_state_dict():
    paper = LoFTR(compose_cfg("train", *TINY_MODEL).model)
    detr = LoFTR(compose_cfg("train", "model=loftr_pe_every_layer", *TINY_MODEL).model)
    assert isinstance(detr.pos_encoding, torch.nn.Identity)
    detr.load_state_dict(paper.state_dict())  # same keys and shapes


def test_bad_variant_values_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.coarse\.layer_type='mlp'"):
        LoFTR(compose_cfg("train", *TINY_MODEL, "+model.coarse.layer_type=mlp").model)
    with pytest.raises(ConfigError, match=r"model\.coarse\.pos_encoding=every_layer.*conv"):
        LoFTR(
            compose_cfg("train", "model=loftr_conv", "+model.coarse.pos_encoding=every_layer").model
        )


def test_readme_prints_the_parameter_counts():
    readme = (ROOT / "experiments" / "README.md").read_text()
    assert parameter_table() in readme


# --------------------------------------------------------------------------------------------
# The collector
# --------------------------------------------------------------------------------------------


def test_toy_sweep_runs_as_a_hydra_multirun_and_collects_into_a_table(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loftr.train",
            "-m",
            "experiment=ablation_table6",
            "model=loftr,loftr_conv",  # replaces the file's five models for this key
            "dataset=synthetic",
            "optim=synthetic",
            "hardware=cpu",
            "debug=fast",
            "logger=none",
            "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1"]
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert all(m["name"] == "ablation_table6" and m["global_step"] == 4 for m in metrics)

    monkeypatch.chdir(tmp_path)  # relative dataset paths come from the runs' recorded cwd
    assert collector.main([str(sweep), "--wandb", "off"]) == 0
    markdown = (sweep / "results.md").read_text()
    rows = list(csv.DictReader((sweep / "results.csv").open()))

    # one comparison: both runs share the validation protocol, which every row carries
    index = ROOT / "data/synthetic/scannet/index/scene_data"
    files = [index / "test_list/synthetic_test.txt"]
    files += [index / "test" / n.split()[0] for n in files[0].read_text().split("\n") if n]
    key = f"synthetic_test@{hash_index(files)}|resize=160x120|RANSAC|thr=0.5px|conf=0.99999"
    key += "|border_rm=2"
    assert markdown.count("## Protocol") == 1 and f"## Protocol 1: `{key}`" in markdown
    assert [r["protocol"] for r in rows] == [key, key]
    assert [r["comparison"] for r in rows] == ["1", "1"]

    # one row per variant, our numbers (in %) beside the paper's Table 6 numbers
    assert [(r["run"], r["variant"], r["matcher"]) for r in rows] == [
        ("model=loftr", "full", "ot"),
        ("model=loftr_conv", "conv", "ot"),
    ]
    for row, m in zip(rows, metrics, strict=True):
        for t in (5, 10, 20):
            ours = 100 * m["last"]["sets"]["synthetic_test"][f"auc@{t}"]
            assert float(row[f"AUC@{t}"]) == pytest.approx(ours)
    assert [float(rows[1][f"paper AUC@{t}"]) for t in (5, 10, 20)] == [14.98, 32.04, 49.92]
    assert [float(rows[0][f"paper AUC@{t}"]) for t in (5, 10, 20)] == [20.06, 40.8, 57.62]
    assert "| 14.98 | 32.04 | 49.92 | 1) convolution instead of LoFTR (Tab. 6) |" in markdown
    # a toy protocol is not the paper's, and the row says so
    assert rows[0]["paper protocol"] == (
        "differs: test_set synthetic_test vs scannet_test_1500; resize 160x120 vs 640x480"
    )

    # an evaluation of the sweep's first checkpoint, collected with the sweep: its protocol is
    # the one loftr.evaluate wrote, and its row is only ever compared with same-protocol rows
    evaluation = tmp_path / "eval"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loftr.evaluate",
            "experiment=eval_indoor_ot",
            "dataset=synthetic",
            "debug=fast",
            "logger=none",
            "model_from_ckpt=true",
            f"ckpt_path='{jobs[0] / 'checkpoints' / 'last.ckpt'}'",
            f"cache_dir={tmp_path / 'dump'}",
            f"hydra.run.dir={evaluation}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    written = json.loads((evaluation / "metrics.json").read_text())
    result = collector.collect([sweep, evaluation], out_dir=tmp_path / "both", wandb_mode=None)
    (eval_row,) = [r for r in result["rows"] if r.kind == "eval"]
    assert eval_row.protocol == Protocol.from_dict(written["protocol"])
    assert eval_row.auc == tuple(written["metrics"][f"auc@{t}"] for t in (5, 10, 20))
    assert eval_row.paper.label == "LoFTR-OT (Tab. 2)"  # the experiment's paper_table
    keys = [{r.protocol.key() for r in group} for group in result["groups"]]
    assert all(len(k) == 1 for k in keys) and len(result["groups"]) == len(set().union(*keys))


def _fake_run(
    root: Path,
    name: str,
    *,
    estimator: str = "RANSAC",
    resize: tuple[int, int] = (640, 480),
    auc: tuple[float, float, float] = (0.1, 0.2, 0.3),
    overrides: tuple[str, ...] = (),
    variant: str | None = None,
    versioned: bool = False,
) -> Path:
    """A training run directory as `python -m loftr.train` leaves it, with a tiny val index: its
    metrics.json in the current schema when `versioned`, else as written before the schema had a
    version (its protocols are rebuilt from the config and the index files when read)."""
    (root / "index").mkdir(parents=True, exist_ok=True)
    (root / "index" / "val.txt").write_text("a.npz\n")
    (root / "index" / "a.npz").write_bytes(b"pairs")
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {
        "name": name,
        "dataset": {
            "name": "scannet",
            "trainval_data_source": "ScanNet",
            "test_data_source": "ScanNet",
            "val_list_path": "index/val.txt",
            "val_npz_root": "index",
            "scannet_img_resize": list(resize),
            "mgdpt_img_resize": 640,
        },
        "model": {
            "match_coarse": {"match_type": "dual_softmax", "sparse_spvs": False, "border_rm": 2}
        },
        "eval": {
            "epi_err_thr": 5e-4,
            "pose_estimator": estimator,
            "ransac_pixel_thr": 0.5,
            "ransac_conf": 0.99999,
        },
        "logger": {"project": "loftr", "entity": None},
    }
    if variant:
        config["model"]["variant"] = variant
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    hydra = {"hydra": {"runtime": {"cwd": str(root), "choices": {"model": "loftr"}}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    sets = {"val": {"auc@5": auc[0], "auc@10": auc[1], "auc@20": auc[2], "prec@5e-04": 0.5}}
    last = {"epoch": 2, "step": 30, "sets": sets}
    metrics = {"name": name, "config": {"true_batch_size": 4}, "last": last, "best": last}
    if versioned:
        protocols = validation_protocols(config, root)  # as the training callback records them
        val_sets = {set_name: protocol_fields(p) for set_name, p in protocols.items()}
        write_metrics(run, "train", {**metrics, "val_sets": val_sets})
    else:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_collector_never_compares_rows_of_different_protocols(tmp_path):
    _fake_run(tmp_path, "0_a", overrides=("eval=ransac", "x=1"), auc=(0.1, 0.2, 0.3))
    _fake_run(tmp_path, "1_b", estimator="USAC_MAGSAC", overrides=("eval=magsac", "x=1"))
    _fake_run(tmp_path, "2_c", overrides=("eval=ransac", "model=loftr_conv", "x=1"), variant="conv")
    result = collector.collect([tmp_path], wandb_mode=None)

    groups = result["groups"]
    assert [[r.run_dir.name for r in g] for g in groups] == [["0_a", "2_c"], ["1_b"]]
    assert [g[0].protocol.estimator for g in groups] == ["RANSAC", "USAC_MAGSAC"]
    with pytest.raises(ConfigError, match="estimator: 'RANSAC' != 'USAC_MAGSAC'"):
        collector.comparison_table(result["rows"])

    markdown = result["markdown"].read_text()
    sections = markdown.split("## Protocol ")[1:]
    assert len(sections) == 2
    assert "USAC_MAGSAC" not in sections[0] and "eval=magsac" not in sections[0]
    assert "| eval=ransac | full | ds |" in sections[0] and "eval=magsac" in sections[1]
    # labels are the overrides that differ between runs; the common `x=1` is left out
    assert [r.label for r in result["rows"]] == [
        "eval=ransac",
        "eval=magsac",
        "eval=ransac,model=loftr_conv",
    ]
    lines = list(csv.DictReader(result["csv"].open()))
    assert [(r["run"], r["comparison"]) for r in lines] == [
        ("eval=ransac", "1"),
        ("eval=ransac,model=loftr_conv", "1"),
        ("eval=magsac", "2"),
    ]
    assert float(lines[0]["AUC@10"]) == pytest.approx(20.0)
    # the paper's DS number sits beside the full model; Table 2 has no conv row
    assert float(lines[0]["paper AUC@10"]) == 40.8 and lines[1]["paper AUC@10"] == ""


def test_collector_reads_evaluation_runs_and_finds_missing_index_files(tmp_path):
    run = _fake_run(tmp_path, "eval")
    protocol = Protocol("scannet_test_1500", "abc", (640, 480), border_rm=0)
    metrics = {"name": "eval_indoor_ds", "protocol": protocol.to_dict()}
    metrics["metrics"] = {"auc@5": 0.2206, "auc@10": 0.408, "auc@20": 0.5762, "prec@5e-04": 0.9}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (row,) = collector.load_run(run)
    collector.attach_paper([row], collector.load_paper_numbers())
    assert row.kind == "eval" and row.protocol == protocol
    assert row.paper.label == "LoFTR-DS (Tab. 2)"
    assert row.paper_agreement == "same (index_hash not recorded by the paper)"

    other = _fake_run(tmp_path / "moved", "train")
    (tmp_path / "moved" / "index" / "val.txt").unlink()
    with pytest.raises(DataError, match=r"val\.txt.*--root"):
        collector.load_run(other)


def test_collector_reads_the_recorded_protocols_and_the_unversioned_files_alike(tmp_path):
    """A sweep of current files collects without the index files (nothing is rebuilt) into the
    same tables as the same sweep written before the schema had a version."""
    for folder, versioned in (("old", False), ("new", True)):
        _fake_run(tmp_path / folder, "0_a", overrides=("eval=ransac",), versioned=versioned)
        _fake_run(
            tmp_path / folder,
            "1_b",
            estimator="USAC_MAGSAC",
            overrides=("eval=magsac",),
            auc=(0.3, 0.4, 0.5),
            versioned=versioned,
        )
    shutil.rmtree(tmp_path / "new" / "index")
    old = collector.collect([tmp_path / "old"], wandb_mode=None)
    new = collector.collect([tmp_path / "new"], wandb_mode=None)
    recorded = json.loads((tmp_path / "new" / "0_a" / "metrics.json").read_text())
    assert recorded["schema_version"] == SCHEMA_VERSION and recorded["kind"] == "train"
    assert new["rows"][0].protocol == Protocol.from_dict(recorded["val_sets"]["val"]["protocol"])
    fields = ("kind", "name", "label", "facts", "protocol", "auc", "precision", "epoch", "step")
    assert [[getattr(r, f) for f in fields] for r in old["rows"]] == [
        [getattr(r, f) for f in fields] for r in new["rows"]
    ]
    assert old["markdown"].read_text() == new["markdown"].read_text()
    assert [r.protocol.estimator for r in new["rows"]] == ["RANSAC", "USAC_MAGSAC"]


def test_collector_refuses_an_unknown_metrics_schema_in_one_line(tmp_path, capsys):
    run = _fake_run(tmp_path, "0_a", versioned=True)
    future = json.loads((run / "metrics.json").read_text())
    future["schema_version"] = SCHEMA_VERSION + 1
    (run / "metrics.json").write_text(json.dumps(future))
    assert collector.main([str(tmp_path), "--wandb", "off"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {run / 'metrics.json'} has ")
    assert f"schema_version {SCHEMA_VERSION + 1}" in err


def test_collector_builds_no_data_module_nor_network():
    code = "import sys, experiments.collect; print(sorted(m for m in sys.modules if "
    code += "m.startswith(('loftr.data.datamodule', 'loftr.model', 'loftr.lightning'))))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "[]"


def test_paper_entries_fit_runs_by_matcher_variant_and_table():
    entries = collector.load_paper_numbers()

    def auc(**facts):
        entry = collector.paper_entry_for(facts, entries)
        return entry.auc if entry else None

    scannet_ds = {"family": "scannet", "matcher": "dual_softmax", "variant": "full"}
    assert auc(**scannet_ds) == (22.06, 40.8, 57.62)
    assert auc(**scannet_ds, paper_table="issue41") == (22.5, 41.23, 57.77)
    assert auc(family="scannet", matcher="sinkhorn", variant="full") == (21.51, 40.39, 57.96)
    tab6 = {"family": "scannet", "matcher": "sinkhorn", "paper_table": "tab6"}
    assert auc(**tab6, variant="full") == (20.06, 40.8, 57.62)
    assert auc(**tab6, variant="conv") == (14.98, 32.04, 49.92)
    assert auc(**tab6, variant="res16_4") == (16.75, 34.82, 54.0)
    assert auc(**tab6, variant="pe_every_layer") == (18.02, 35.64, 52.77)
    assert auc(**tab6, variant="large") == (20.87, 40.23, 57.56)
    assert auc(family="megadepth", matcher="dual_softmax", variant="full") == (52.8, 69.19, 81.18)
    assert auc(family="megadepth", matcher="sinkhorn", variant="full") == (50.31, 67.14, 79.93)
    assert auc(family="scannet", matcher="dual_softmax", variant="full_attention") is None

    ds = next(e for e in entries if e.label == "LoFTR-DS (Tab. 2)").protocol
    validation = Protocol("scannet_test", "h", (640, 480), border_rm=2)  # the training val set
    assert collector.protocol_agreement(validation, ds) == "differs: border_rm 2 vs 0"
    test = Protocol("scannet_test_1500", "h", (640, 480), border_rm=0)
    assert collector.protocol_agreement(test, ds).startswith("same")
    magsac = Protocol("scannet_test_1500", "h", (640, 480), "USAC_MAGSAC", border_rm=0)
    assert collector.protocol_agreement(magsac, ds) == "differs: estimator USAC_MAGSAC vs RANSAC"


def test_collector_logs_one_wandb_table_per_protocol(tmp_path):
    _fake_run(tmp_path / "runs", "0_a", overrides=("eval=ransac",))
    _fake_run(tmp_path / "runs", "1_b", estimator="USAC_MAGSAC", overrides=("eval=magsac",))
    # `auto` logs only when W&B is online; the tests run offline (conftest)
    assert collector.collect([tmp_path / "runs"], wandb_mode="auto")["wandb_run"] is None
    result = collector.collect([tmp_path / "runs"], out_dir=tmp_path / "out", wandb_mode="offline")
    assert result["wandb_run"]
    run_file = offline_run_file(tmp_path / "out")
    assert run_record(run_file).job_type == "collect"
    logged = set()
    for record in read_records(run_file):
        if record.WhichOneof("record_type") == "history":
            logged |= {item.key or "/".join(item.nested_key) for item in record.history.item}
    assert {"results/protocol_1/_type", "results/protocol_2/_type"} <= logged
    tables = sorted((tmp_path / "out" / "wandb").glob("offline-run-*/files/media/table/**/*.json"))
    contents = [json.loads(t.read_text()) for t in tables]
    assert [c["columns"] for c in contents] == [list(collector.COLUMNS)] * 2
    assert sorted(c["data"][0][-1].split("|")[2] for c in contents) == ["RANSAC", "USAC_MAGSAC"]


# --------------------------------------------------------------------------------------------
# The dashboard
# --------------------------------------------------------------------------------------------


def test_dashboard_dry_run_prints_the_panels_without_network(monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("the dry run opened a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # not needed for a dry run
    assert dashboard.main(["--dry-run", "--val-set", "scannet_test", "--entity", "me"]) == 0
    out = capsys.readouterr().out
    listing, definition = out.split("\n\n", 1)
    for line in (
        "project   : me/loftr",
        "group by  : model.match_coarse.match_type, model.match_coarse.sparse_spvs, model.variant",
        "  line  loss: train/loss, train/loss_c, train/loss_f",
        "  line  learning rate: lr",
        "  line  AUC (scannet_test): metrics_scannet_test/auc@5, metrics_scannet_test/auc@10, "
        "metrics_scannet_test/auc@20",
        "  media match figures (scannet_test): val_match_scannet_test/evaluation",
        "  table per-pair table (scannet_test): val_pairs_scannet_test",
    ):
        assert line in listing.splitlines(), line
    parsed = json.loads(definition)
    assert [s["name"] for s in parsed["sections"]] == [
        "Training",
        "Validation: mean over sets",
        "Validation: scannet_test",
    ]


def test_dashboard_covers_every_dataset_s_validation_set():
    names = dashboard.default_val_sets()
    for dataset in ("scannet", "megadepth", "synthetic", "synthetic_outdoor"):
        from loftr.data.datamodule import LoFTRDataModule

        cfg = compose_cfg("train", f"dataset={dataset}")
        assert set(LoFTRDataModule(cfg.dataset).val_set_names) <= set(names), dataset
    keys = dashboard.build_dashboard(val_sets=names).panel_keys()
    assert all(f"val_pairs_{n}" in keys and f"metrics_{n}/auc@10" in keys for n in names)


def test_saving_the_dashboard_names_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)
    with pytest.raises(ImportError, match="pip install wandb-workspaces"):
        dashboard.to_workspace(dashboard.build_dashboard(val_sets=["x"]))


def test_dashboard_converts_to_a_wandb_workspace():
    pytest.importorskip("wandb_workspaces")
    workspace = dashboard.to_workspace(
        dashboard.build_dashboard(entity="me", val_sets=["scannet_test"])
    )
    assert [s.name for s in workspace.sections] == [
        "Training",
        "Validation: mean over sets",
        "Validation: scannet_test",
    ]
    assert [g.name for g in workspace.runset_settings.groupby] == list(dashboard.GROUP_BY)
    kinds = [type(p).__name__ for p in workspace.sections[2].panels]
    assert kinds == ["LinePlot", "LinePlot", "LinePlot", "MediaBrowser", "WeavePanelSummaryTable"]
    assert len(workspace.sections[0].panels) == 3
