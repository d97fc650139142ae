"""Training runs end to end: four matcher x supervision runs, exact resume, W&B, evaluation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import loftr.config  # noqa: F401  (registers the schemas and resolvers)
from loftr.errors import ConfigError
from loftr.evaluation.export import SCHEMA_VERSION
from loftr.evaluation.protocol import Protocol
from loftr.lightning.fit import train
from tests.helpers import ROOT
from tests.helpers.compose import compose_cfg
from tests.helpers.runs import SINGLE_THREAD, train_command, train_fast, wait_for_last_checkpoint
from tests.helpers.wandb_records import config_keys, history_rows, offline_run_file

pytestmark = pytest.mark.usefixtures("in_repo")


@pytest.mark.parametrize("matcher", ["ds", "ot"])
@pytest.mark.parametrize("supervision", ["dense", "sparse"])
def test_fast_run_for_every_matcher_and_supervision(tmp_path, matcher, supervision):
    result = train_fast(tmp_path, f"matcher={matcher}", f"supervision={supervision}", "logger=csv")
    trainer = result["trainer"]
    assert trainer.global_step == 4
    logged = trainer.logged_metrics
    assert torch.isfinite(logged["train/loss"]) and float(logged["train/loss"]) > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["schema_version"] == SCHEMA_VERSION and metrics["kind"] == "train"
    protocol = metrics["val_sets"]["synthetic_test"]
    assert protocol["protocol_key"] == Protocol.from_dict(protocol["protocol"]).key()
    assert set(metrics["last"]["sets"]["synthetic_test"]) == {
        "auc@5",
        "auc@10",
        "auc@20",
        "prec@5e-04",
        "loss",
        "loss_c",
        "loss_f",
        "n_pairs",
    }
    assert metrics["last"]["sets"]["synthetic_test"]["n_pairs"] == 4
    assert metrics["config"]["matcher"] == {"ds": "dual_softmax", "ot": "sinkhorn"}[matcher]
    assert metrics["config"]["sparse_spvs"] is (supervision == "sparse")
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert result["best_ckpt"] and Path(result["best_ckpt"]).is_file()
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["config"]["model"]["match_coarse"]["sparse_spvs"] is (
        supervision == "sparse"
    )
    if matcher == "ot":
        assert "train/skh_bin_score" in logged


def _final_state(run_dir: Path) -> tuple[dict, float, int]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    lr = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    return ckpt["state_dict"], lr, ckpt["global_step"]


TRAIN = train_command(
    "trainer.limit_train_batches=6",
    "trainer.max_epochs=2",
    "checkpoint.every_n_train_steps=2",
    "trainer.limit_val_batches=2",
)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run = dict(cwd=ROOT, env=SINGLE_THREAD, check=True, capture_output=True)
    subprocess.run([*TRAIN, f"hydra.run.dir={reference}"], **run)
    proc = subprocess.Popen(
        [*TRAIN, f"hydra.run.dir={killed}"],
        cwd=ROOT,
        env=SINGLE_THREAD,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_last_checkpoint(proc, killed)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, _, step_at_kill = _final_state(killed)
    assert 0 < step_at_kill < 12, "the kill must land before the run ends"
    subprocess.run([*TRAIN, f"hydra.run.dir={killed}", "ckpt_path=last"], **run)
    ref_weights, ref_lr, ref_step = _final_state(reference)
    weights, lr, step = _final_state(killed)
    assert step == ref_step == 12
    assert lr == pytest.approx(ref_lr, rel=1e-12)
    for key, value in ref_weights.items():
        assert torch.allclose(weights[key].float(), value.float(), atol=1e-6), key


def test_offline_wandb_run_holds_metrics_figures_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    train_fast(tmp_path, "logger=wandb", "matcher=ot")
    run_file = offline_run_file(tmp_path)
    rows = history_rows(run_file)
    keys = set().union(*rows)
    for key in (
        "train/loss",
        "train/loss_c",
        "train/loss_f",
        "lr",
        "train/skh_bin_score",
        "metrics_synthetic_test/auc@5",
        "metrics_synthetic_test/auc@10",
        "metrics_synthetic_test/auc@20",
        "metrics_synthetic_test/prec@5e-04",
        "val_synthetic_test/avg_loss",
        "auc@10",
    ):
        assert key in keys, key
    # W&B flattens media entries into leaves: <key>/_type, <key>/count, ...
    figures = "val_match_synthetic_test/evaluation"
    images = [r for r in rows if r.get(f"{figures}/_type") == "images/separated"]
    assert images and images[0][f"{figures}/count"] == 2
    table = "val_pairs_synthetic_test"
    tables = [r for r in rows if r.get(f"{table}/_type") == "table-file"]
    assert tables and tables[0][f"{table}/ncols"] == 7 and tables[0][f"{table}/nrows"] == 4
    assert {"config", "parameters"} <= config_keys(run_file)


def test_evaluate_writes_metrics_and_reuses_cached_predictions(tmp_path):
    from loftr.evaluation.testing import evaluate

    train_fast(tmp_path / "run", "logger=none")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    overrides = [
        f"ckpt_path={ckpt}",
        "dataset=synthetic",
        "logger=none",
        "debug=fast",
        f"cache_dir={tmp_path / 'dump'}",
    ]
    first = evaluate(compose_cfg("evaluate", *overrides, f"run_dir={tmp_path / 'e1'}"))
    second = evaluate(compose_cfg("evaluate", *overrides, f"run_dir={tmp_path / 'e2'}"))
    assert not first["cached"] and second["cached"]
    assert first["metrics"] == second["metrics"]
    assert first["n_pairs"] == 30
    written = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION and written["kind"] == "eval"
    assert set(written["metrics"]) == {"auc@5", "auc@10", "auc@20", "prec@5e-04"}
    assert written["protocol"]["estimator"] == "RANSAC"
    assert "resize=160x120" in written["protocol_key"]


def test_cross_entropy_with_sparse_supervision_fails_before_training(tmp_path):
    cfg = compose_cfg(
        "train", "supervision=sparse", "model.loss.coarse_type=cross_entropy", f"run_dir={tmp_path}"
    )
    with pytest.raises(ConfigError, match="model.loss.coarse_type.*sparse_spvs"):
        train(cfg)
    assert not any(tmp_path.iterdir())


def test_cfg_job_prints_the_composed_config():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "loftr.train",
            "matcher=ot",
            "supervision=sparse",
            "--cfg",
            "job",
            "--resolve",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "match_type: sinkhorn" in out and "sparse_spvs: true" in out
    assert "lr: 0.001" in out  # optim=small: 1e-3 x 1 / 1 on one CPU


def test_unknown_group_option_names_the_group():
    proc = subprocess.run(
        [sys.executable, "-m", "loftr.train", "matcher=hungarian"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "matcher" in proc.stderr and "hungarian" in proc.stderr
