"""Hardware groups and scale-out: LR scaling per group, two-process DDP on the CPU, SLURM."""

from __future__ import annotations

import json
import math
import subprocess

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

import loftr.config  # noqa: F401  (registers the schemas and resolvers)
from loftr.data.datamodule import LoFTRDataModule
from loftr.lightning.module import LoFTRModule
from tests.helpers import ROOT
from tests.helpers.compose import compose_cfg
from tests.helpers.runs import train_command

# processes per group, written out from the group files' intent
# (docs/original.md#training-scripts, #lr-scaling)
WORLD_SIZE = {"cpu": 1, "cpu2": 2, "gpus4": 4, "gpus8": 8, "gpus16": 16, "gpus32": 32, "gpus64": 64}
CANONICAL = {"indoor": (6e-3, 4800, 0.0), "outdoor": (8e-3, 1875, 0.1)}


@pytest.mark.parametrize("hardware", sorted(WORLD_SIZE))
@pytest.mark.parametrize("optim", ["indoor", "outdoor"])
@pytest.mark.parametrize("accumulate", [1, 4])
def test_lr_and_warmup_follow_the_true_batch(hardware, optim, accumulate):
    cfg = compose_cfg("train", f"hardware={hardware}", f"optim={optim}", f"accumulate={accumulate}")
    true_bs = WORLD_SIZE[hardware] * accumulate  # per-device batch 1 in every group
    assert cfg.hardware.devices * cfg.hardware.num_nodes == WORLD_SIZE[hardware]
    assert cfg.hardware.batch_size == 1
    lr, warmup, ratio = CANONICAL[optim]
    assert cfg.optim.lr == pytest.approx(lr * true_bs / 64, rel=1e-12)
    assert cfg.optim.warmup_steps == math.floor(warmup / (true_bs / 64))
    assert cfg.optim.warmup_ratio == ratio


@pytest.mark.parametrize(
    "overrides, lr, warmup_steps, start_lr",
    # docs/original.md#lr-scaling's table, and the 4-GPU script brought to batch 64 by accumulation
    [
        (["optim=indoor", "hardware=gpus64"], 6e-3, 4800, 0.0),
        (["optim=indoor", "hardware=gpus4"], 3.75e-4, 76_800, 0.0),
        (["optim=outdoor", "hardware=gpus64"], 8e-3, 1875, 8e-4),
        (["optim=outdoor", "hardware=gpus4"], 5e-4, 30_000, 5e-5),
        (["optim=indoor", "hardware=gpus4", "accumulate=16"], 6e-3, 4800, 0.0),
    ],
)
def test_spec_lr_table(overrides, lr, warmup_steps, start_lr):
    cfg = compose_cfg("train", *overrides)
    assert cfg.optim.lr == pytest.approx(lr, rel=1e-12)
    assert cfg.optim.warmup_steps == warmup_steps
    assert cfg.optim.warmup_ratio * cfg.optim.lr == pytest.approx(start_lr, rel=1e-12)


def test_gpu_groups_synchronise_batchnorm_and_cpu_groups_do_not():
    for hardware in WORLD_SIZE:
        cfg = compose_cfg("train", f"hardware={hardware}")
        assert cfg.hardware.sync_batchnorm is (cfg.hardware.accelerator == "gpu"), hardware
        assert cfg.hardware.strategy == ("auto" if hardware == "cpu" else "ddp")
    assert compose_cfg("train").precision == "32-true"  # fp32, the paper recipe
    assert compose_cfg("train", "precision=bf16-mixed").precision == "bf16-mixed"


def test_slurm_launcher_takes_its_size_from_the_hardware_group():
    cfg = compose_cfg(
        "train",
        "hydra/launcher=slurm",
        "hardware=gpus32",
        "hydra.launcher.partition=gpu",
        hydra_node=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (4, 8, 8)
    assert launcher.partition == "gpu" and launcher.max_num_timeout > 0


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A real two-process DDP run over gloo (hardware=cpu2), validated on all 30 pairs."""
    run_dir = tmp_path_factory.mktemp("cpu2")
    subprocess.run(
        train_command("hardware=cpu2", "trainer.limit_val_batches=1.0", f"hydra.run.dir={run_dir}"),
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return run_dir


def test_two_ranks_train_disjoint_scenes_and_end_with_identical_weights(ddp_run):
    metrics = json.loads((ddp_run / "metrics.json").read_text())
    ranks = metrics["per_rank"]
    assert metrics["world_size"] == len(ranks) == 2
    assert ranks[0]["parameter_checksum"] == ranks[1]["parameter_checksum"]
    scenes0, scenes1 = (set(r["train_scenes"]) for r in ranks)
    listed = ROOT / "data/synthetic/scannet/index/scene_data/train_list/synthetic_train.txt"
    assert not scenes0 & scenes1
    assert scenes0 | scenes1 == {line.split()[0] for line in listed.read_text().splitlines()}
    assert metrics["global_step"] == 4  # 4 batches per rank, one optimizer step each


@pytest.mark.usefixtures("in_repo")
def test_a_batch_without_ground_truth_still_reaches_every_parameter():
    """DDP (find_unused_parameters=False) hangs if one rank's step skips a parameter."""
    cfg = compose_cfg("train", "debug=fast", "matcher=ot", "supervision=sparse")
    datamodule = LoFTRDataModule(cfg.dataset, seed=cfg.seed)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    # no depth, and each camera centre projects far outside the other image: no match at all
    for side in ("0", "1"):
        batch[f"depth{side}"].zero_()
    for key in ("T_0to1", "T_1to0"):
        batch[key][:, :3, 3] = torch.tensor([1e3, 0.0, 1.0])
    module = LoFTRModule(OmegaConf.to_container(cfg, resolve=True))
    module._supervised_forward(batch)
    assert batch["conf_matrix_gt"].sum() == 0
    loss = batch["loss"]
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing and torch.isfinite(loss)


@pytest.mark.usefixtures("in_repo")
def test_validation_metrics_are_the_same_on_one_process(ddp_run):
    cfg = compose_cfg("train", "debug=fast", "trainer.limit_val_batches=1.0")
    module = LoFTRModule.load_from_checkpoint(
        ddp_run / "checkpoints" / "last.ckpt", weights_only=True
    )
    datamodule = LoFTRDataModule(cfg.dataset, seed=cfg.seed)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.validate(module, datamodule=datamodule)
    single = module.validation_results["synthetic_test"]
    distributed = json.loads((ddp_run / "metrics.json").read_text())["last"]["sets"][
        "synthetic_test"
    ]
    assert single["n_pairs"] == distributed["n_pairs"] == 30
    for key in ("auc@5", "auc@10", "auc@20", "prec@5e-04", "loss", "loss_c", "loss_f"):
        assert single[key] == pytest.approx(distributed[key], rel=1e-5, abs=1e-7), key
