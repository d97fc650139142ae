"""LoFTRDataModule: loaders from a dataset config, per-rank scenes, errors, and exact resume."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DistributedSampler

from loftr.data.datamodule import LoFTRDataModule
from loftr.data.layout import LAYOUT
from loftr.errors import ConfigError, DataError
from tests.helpers.datasets import (
    write_megadepth_dataset,
    write_scannet_dataset,
    write_scannet_index,
)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _scannet_config(paths: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    split = {
        "data_root": str(paths["root"]),
        "pose_root": None,
        "npz_root": str(paths["npz_root"]),
        "list_path": str(paths["list_path"]),
        "intrinsic_path": str(paths["intrinsic_path"]),
    }
    config = {
        "trainval_data_source": "ScanNet",
        "test_data_source": "ScanNet",
        **{f"{s}_{k}": v for s in ("train", "val", "test") for k, v in split.items()},
        "min_overlap_score_train": 0.4,
        "min_overlap_score_test": 0.0,
        "augmentation_type": None,
        "mgdpt_img_resize": 640,
        "mgdpt_img_pad": True,
        "mgdpt_depth_pad": True,
        "mgdpt_df": 8,
        "n_samples_per_subset": 2,
        "sb_subset_sample_replacement": True,
        "sb_subset_shuffle": True,
        "sb_repeat": 1,
        "scannet_img_resize": [64, 48],
        "synthetic": None,
    }
    config.update(overrides)
    return config


@pytest.fixture
def scannet(tmp_path: Path) -> dict[str, Path]:
    """4 scenes of 3 frames (64x48), pairs scored 0.3, 0.5, 0.9 -> 2 training pairs each."""
    return write_scannet_dataset(tmp_path / "scannet", scenes=((0, 0), (1, 0), (2, 0), (3, 1)))


def _fake_trainer(world_size: int, rank: int, **kwargs: Any) -> SimpleNamespace:
    return SimpleNamespace(
        world_size=world_size,
        global_rank=rank,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=False),
        fit_loop=SimpleNamespace(
            epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=0))
        ),
        **kwargs,
    )


def test_train_val_test_loaders(scannet: dict[str, Path]) -> None:
    config = _scannet_config(scannet, min_overlap_score_test=0.4)
    dm = LoFTRDataModule(config, batch_size=2, seed=66)
    dm.setup("fit")
    assert len(dm.train_dataset.datasets) == 4 and len(dm.train_dataset) == 8
    assert len(dm.train_sampler) == 8  # 4 scenes x 2 samples
    loader = dm.train_dataloader()
    assert loader.sampler is dm.train_sampler
    batches = list(loader)
    assert len(batches) == 4
    assert batches[0]["image0"].shape == (2, 1, 48, 64)
    # a 64x48 input of 640x480 depth: the scale keys of our resize extension
    assert batches[0]["scale0"].tolist() == [[10.0, 10.0], [10.0, 10.0]]
    val = dm.val_dataloader()
    assert val.batch_size == 1 and len(val.dataset) == 12  # val keeps every pair
    # (docs/original.md#scannet)
    assert dm.val_set_names == ["scannet_all"]
    dm.setup("test")
    test = dm.test_dataloader()
    assert test.batch_size == 1 and len(test.dataset) == 8  # test filters by score > 0.4


def test_several_validation_sets(scannet: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other_list.txt"
    other.write_text("scene0001_00.npz\n")
    config = _scannet_config(scannet, val_list_path=[str(scannet["list_path"]), str(other)])
    dm = LoFTRDataModule(config)
    assert dm.val_set_names == ["scannet_all", "other_list"]
    loaders = dm.val_dataloader()
    assert isinstance(loaders, list) and [len(dl.dataset) for dl in loaders] == [12, 3]


def test_each_rank_builds_only_its_scenes(scannet: dict[str, Path]) -> None:
    scenes = []
    for rank in range(2):
        dm = LoFTRDataModule(_scannet_config(scannet), seed=66)
        dm.trainer = _fake_trainer(2, rank)
        dm.setup("fit")
        scenes.append({ds.scene_names()[0] for ds in dm.train_dataset.datasets})
        assert dm.train_sampler.rank == rank
        val = dm.val_dataloader()
        assert isinstance(val.sampler, DistributedSampler) and not val.sampler.shuffle
        assert val.sampler.num_replicas == 2 and val.sampler.rank == rank
    assert scenes[0].isdisjoint(scenes[1])
    assert scenes[0] | scenes[1] == {"scene0000_00", "scene0001_00", "scene0002_00", "scene0003_01"}


def test_every_rank_draws_as_many_samples_when_a_scene_has_no_usable_pair(
    scannet: dict[str, Path],
) -> None:
    rows = [(2, 0, 0, 1), (2, 0, 0, 2), (2, 0, 1, 2)]
    write_scannet_index(scannet["npz_root"] / "scene0002_00.npz", rows, [0.1, 0.2, 0.3])
    shares = []
    for rank in range(2):
        dm = LoFTRDataModule(_scannet_config(scannet), seed=66)
        dm.trainer = _fake_trainer(2, rank)
        dm.setup("fit")
        samples = list(dm.train_sampler)
        assert max(samples) < len(dm.train_dataset)
        shares.append((len(dm.train_dataset.datasets), len(dm.train_sampler), len(samples)))
    assert sorted(shares) == [(1, 4, 4), (2, 4, 4)]  # 2 listed scenes x 2 samples on each rank


def test_distributed_sampler_replacement_is_refused(scannet: dict[str, Path]) -> None:
    dm = LoFTRDataModule(_scannet_config(scannet))
    dm.trainer = _fake_trainer(2, 0)
    dm.trainer._accelerator_connector.use_distributed_sampler = True
    dm.setup("fit")
    with pytest.raises(ConfigError, match="use_distributed_sampler=False"):
        dm.train_dataloader()


def test_augmentation_and_source_are_checked(scannet: dict[str, Path]) -> None:
    with pytest.raises(
        ConfigError, match=r"dataset.augmentation_type='dark'.*docs/original.md#augmentation"
    ):
        LoFTRDataModule(_scannet_config(scannet, augmentation_type="dark"))
    with pytest.raises(ConfigError, match=r"dataset.trainval_data_source='HPatches'"):
        LoFTRDataModule(_scannet_config(scannet, trainval_data_source="HPatches"))
    dm = LoFTRDataModule(_scannet_config(scannet, train_list_path=None))
    with pytest.raises(ConfigError, match=r"dataset.train_list_path is null"):
        dm.setup("fit")


def test_missing_list_and_absent_scenes_are_named(scannet: dict[str, Path], tmp_path: Path) -> None:
    dm = LoFTRDataModule(_scannet_config(scannet, train_list_path=str(tmp_path / "none.txt")))
    with pytest.raises(
        DataError, match=r"list file .*none\.txt does not exist; extract scannet_indices"
    ):
        dm.setup("fit")
    listing = tmp_path / "list.txt"
    listing.write_text("scene0000_00.npz\nscene0100_00.npz\nscene0200_00.npz\n")
    dm = LoFTRDataModule(_scannet_config(scannet, train_list_path=str(listing)))
    with pytest.raises(
        DataError,
        match=r"2 scene index file\(s\) listed in .*list\.txt are not there:"
        r".*scene0100_00\.npz.*scene0200_00\.npz",
    ):
        dm.setup("fit")
    dm = LoFTRDataModule(_scannet_config(scannet, train_data_root=str(tmp_path / "nope")))
    with pytest.raises(
        DataError, match=r"ScanNet train root .*nope does not exist; .*scannet_train"
    ):
        dm.setup("fit")


def test_megadepth_source(tmp_path: Path) -> None:
    paths = write_megadepth_dataset(tmp_path / "megadepth")
    config = _scannet_config(
        {**paths, "intrinsic_path": "unused"},
        trainval_data_source="MegaDepth",
        min_overlap_score_train=0.0,
        mgdpt_img_resize=64,
        val_list_path=None,
        test_list_path=None,
    )
    dm = LoFTRDataModule(config, batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image0"].shape == (2, 1, 64, 64) and batch["mask0"].shape == (2, 8, 8)
    assert batch["depth0"].shape == (2, 2000, 2000)
    assert dm.val_dataloader() == [] and dm.val_set_names == []


def test_prepare_data_generates_synthetic(monkeypatch: pytest.MonkeyPatch, scannet) -> None:
    import loftr.data.synthetic as synthetic

    calls = []
    monkeypatch.setattr(synthetic, "ensure_synthetic", lambda **kw: calls.append(kw) or Path("x"))
    spec = {"root": "data/synthetic", "format": "scannet", "seed": 0}
    LoFTRDataModule(_scannet_config(scannet, synthetic=spec)).prepare_data()
    assert calls == [spec]
    LoFTRDataModule(_scannet_config(scannet)).prepare_data()
    assert len(calls) == 1


def test_state_dict_roundtrip_before_and_after_setup(scannet: dict[str, Path]) -> None:
    dm = LoFTRDataModule(_scannet_config(scannet), seed=3)
    assert dm.state_dict() == {}
    dm.setup("fit")
    dm.train_sampler.set_epoch(2)
    dm.train_sampler.consumed = 5
    state = dm.state_dict()
    assert state == {"train_sampler": {"seed": 3, "epoch": 2, "rank": 0, "consumed": 5}}
    fresh = LoFTRDataModule(_scannet_config(scannet), seed=3)
    fresh.load_state_dict(state)  # before setup: kept until the sampler exists
    assert fresh.state_dict() == state
    fresh.setup("fit")
    assert list(fresh.train_sampler) == dm.train_sampler.epoch_indices(2).tolist()[5:]


def test_dataset_configs_compose_with_the_layout() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name, layout in (("scannet", LAYOUT["scannet"]), ("megadepth", LAYOUT["megadepth"])):
            ds = compose(config_name="train", overrides=[f"dataset={name}"]).dataset
            assert ds.train_data_root == f"data/{layout['train_root']}"
            assert ds.train_npz_root == f"data/{layout['train_npz_root']}"
            assert ds.train_list_path == f"data/{layout['train_list']}"
            assert ds.augmentation_type is None and ds.synthetic is None
        md = compose(config_name="train", overrides=["dataset=megadepth_840"]).dataset
        assert md.mgdpt_img_resize == 840 and md.n_samples_per_subset == 100
        md = compose(config_name="train", overrides=["dataset=megadepth_test_1500"]).dataset
        assert md.test_npz_root == "assets/megadepth_test_1500_scene_info"
        sn = compose(config_name="train", overrides=["dataset=scannet_test_1500"]).dataset
        assert sn.test_list_path == "assets/scannet_test_1500/scannet_test.txt"
        syn = compose(config_name="train", overrides=["dataset=synthetic"]).dataset
        assert list(syn.scannet_img_resize) == [320, 240]
        assert dict(syn.synthetic) == {"root": "data/synthetic", "format": "scannet", "seed": 0}
        assert syn.train_npz_root == "data/synthetic/scannet/index/scene_data/train"
        out = compose(config_name="train", overrides=["dataset=synthetic_outdoor"]).dataset
        assert out.mgdpt_img_resize == 320 and out.synthetic.format == "megadepth"
        assert out.val_npz_root == "data/synthetic/megadepth/index/scene_info_val_1500"


# --- exact resume through Lightning ----------------------------------------------------------


class _Recorder(L.LightningModule):
    """Records which pairs each training step saw."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, tuple[tuple[str, int], ...]]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        pairs = tuple(zip(batch["scene_id"], batch["pair_id"].tolist(), strict=True))
        self.seen.append((self.current_epoch, pairs))
        return (self.weight - 1.0).pow(2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(config: dict, root: Path, num_workers: int, ckpt: str | None = None, **trainer_kw):
    dm = LoFTRDataModule(config, batch_size=2, num_workers=num_workers, seed=66)
    module = _Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=str(root),
        callbacks=[
            ModelCheckpoint(dirpath=root, filename="{step}", every_n_train_steps=1, save_top_k=-1)
        ],
        **trainer_kw,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return module.seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_lightning_resume_mid_epoch_continues_the_same_pairs(
    scannet: dict[str, Path], tmp_path: Path, num_workers: int
) -> None:
    config = _scannet_config(scannet, n_samples_per_subset=3)  # 12 samples, 6 steps per epoch
    reference = _fit(config, tmp_path / "a", num_workers)
    assert [epoch for epoch, _ in reference] == [0] * 6 + [1] * 6
    assert reference[:6] != [(0, p) for _, p in reference[6:]]  # a new draw each epoch

    interrupted = _fit(config, tmp_path / "b", num_workers, max_steps=8)  # 2 steps into epoch 1
    assert interrupted == reference[:8]
    ckpt = tmp_path / "b" / "step=8.ckpt"
    state = torch.load(ckpt, weights_only=True)["LoFTRDataModule"]["train_sampler"]
    assert state == {"seed": 66, "epoch": 1, "rank": 0, "consumed": 4}
    resumed = _fit(config, tmp_path / "c", num_workers, ckpt=str(ckpt))
    assert resumed == reference[8:]


def test_dataset_config_paths_are_relative_to_working_directory() -> None:
    for name in ("scannet", "megadepth", "synthetic", "synthetic_outdoor"):
        text = (CONF_DIR / "dataset" / f"{name}.yaml").read_text()
        assert not any(line.split(":", 1)[-1].strip().startswith("/") for line in text.splitlines())
    assert os.sep == "/"
