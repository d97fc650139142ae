"""Smoke test of the benchmarks: `run_all --quick` writes a complete, sane report."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from experiments.bench.common import ROOT
from experiments.bench.run_all import run_all
from loftr.model.loftr import parameter_counts


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("bench")
    report = run_all(out, quick=True, command="run_all.py --quick")
    assert torch.get_num_threads() == threads  # restored
    return out, report


def test_quick_run_writes_json_and_markdown(quick_report):
    out, report = quick_report
    on_disk = json.loads((out / "bench.json").read_text())
    assert on_disk["machine"]["cores"] >= 1
    assert on_disk["machine"]["torch"] == torch.__version__
    assert set(on_disk) >= {
        "machine",
        "inference",
        "roofline",
        "train_step",
        "train_compare",
        "loader",
        "pose",
    }
    text = (out / "bench.md").read_text()
    for heading in ("## Inference", "## Roofline", "## Training step", "## Training loader"):
        assert heading in text
    assert "kornia 0.9" in text and "cores" in text


def test_quick_inference_agrees_with_kornia_and_counts_flops(quick_report):
    _, report = quick_report
    inference = report["inference"][0]
    assert inference["size"] == "128x96" and inference["dtype"] == "fp32"
    assert inference["matches"] > 10
    assert inference["agreement"]["same_matches"] is True
    assert inference["agreement"]["max_keypoint_diff_px"] < 1e-4
    assert inference["ratio"] == pytest.approx(inference["ours_s"] / inference["kornia_s"], 0.01)
    stages = inference["profile"]["stages_s"]
    assert all(t["kornia"] >= 0 and t["ours"] >= 0 for t in stages.values())
    roof = report["roofline"]
    # the paper model at 128x96: 1/25 of the ~770 GFLOP at 640x480; ours skips fine-branch work
    assert 28 < roof["kornia"]["gflop"] < 34
    assert roof["ours"]["gflop"] < roof["kornia"]["gflop"]
    assert 0 < roof["ours"]["fraction_of_matmul"] < 5


def test_quick_training_step_loader_and_pose(quick_report):
    _, report = quick_report
    step = report["train_step"]
    # the paper model's step, not the default run's small model
    paper = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "loftr.yaml"))
    assert step["parameters"] == parameter_counts(paper)["total"]
    assert step["total_s"] == pytest.approx(sum(step["stages_s"].values()), abs=2e-3)
    assert 0 < step["gt_loss_metrics_share"] < 1
    assert step["stages_s"]["backward"] > 0
    loader = report["loader"][0]
    assert loader["workers"] == 0 and loader["pairs_per_s_median"] > 0
    assert loader["memory"]["trace"][-1]["pairs"] >= 8
    pose = {r["estimator"]: r for r in report["pose"]}
    assert pose["RANSAC"]["available"] and pose["RANSAC"]["median_s_per_pair"] > 0
    assert pose["RANSAC"]["median_pose_error_deg"] < 10


def test_quick_training_step_after_and_before_the_sparse_fine_branch(quick_report):
    out, report = quick_report
    (compare,) = report["train_compare"]
    assert compare["size"] == "128x96" and compare["model"] == "loftr"
    assert compare["ratio"] == pytest.approx(compare["after_s"] / compare["before_s"], 0.01)
    # 128x96: int(0.2 x 192) = 38 windows an image, 2 x 38 x 25 pixels of 2 x 48 x 64
    assert compare["fine_windows"] == 38
    assert compare["fine_plan"] == {"window_share": pytest.approx(1900 / 6144), "conv2": "sparse"}
    assert compare["loss_rel_diff"] <= 1e-5 and compare["max_grad_rel_diff"] <= 1e-5
    stages = compare["profile"]["after"]["stages_s"]
    assert stages["backward (all stages)"] > 0 and stages["backbone"] > 0
    text = (out / "bench.md").read_text()
    assert "## Training step after / before the sparse fine branch" in text
    assert "### Where a training step's time goes (128x96" in text
