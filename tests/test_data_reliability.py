"""Data faults in long runs: equal epochs on every rank, broken pairs skipped and counted."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset

from loftr.data.datamodule import LoFTRDataModule
from loftr.data.sampler import RandomConcatSampler
from loftr.data.skipping import SKIPPED_KEY, SkipBrokenPairs
from loftr.errors import DataError
from loftr.lightning.fit import train
from tests.helpers import ROOT
from tests.helpers.compose import compose_fast
from tests.helpers.datasets import SCENE, SYNTHETIC, scannet_copy
from tests.helpers.runs import assert_nothing_half_written, train_command

pytestmark = pytest.mark.usefixtures("in_repo")


def run_to_end(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; on timeout kill the whole group and fail."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"no end after {timeout} s (a rank waits for ever?):\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


# ------------------------------------------------------------- equal epochs on every rank
def test_scenes_without_pairs_still_count_in_the_epoch_length():
    # three scenes listed, one of them left out for having no usable pair
    sampler = RandomConcatSampler(ConcatDataset([range(4), range(3)]), 5, seed=1, n_scenes=3)
    indices = list(sampler)
    assert len(sampler) == len(indices) == 15
    assert all(0 <= i < 7 for i in indices)
    again = RandomConcatSampler(ConcatDataset([range(4), range(3)]), 5, seed=1, n_scenes=3)
    assert list(again) == indices  # the stand-in scene is drawn from the seeded generator


def synthetic_index_with_an_empty_scene(tmp_path: Path) -> tuple[Path, Path]:
    """4 synthetic training scenes, the last one with every pair below the overlap threshold."""
    npz_root = tmp_path / "index"
    npz_root.mkdir()
    names = [f"scene000{i}_00.npz" for i in range(4)]
    for name in names[:3]:
        shutil.copy(SYNTHETIC / "index/scene_data/train" / name, npz_root)
    with np.load(SYNTHETIC / "index/scene_data/train" / names[3]) as index:
        np.savez(npz_root / names[3], name=index["name"], score=np.zeros_like(index["score"]))
    listing = tmp_path / "train_list.txt"
    listing.write_text("".join(f"{n}\n" for n in names))
    return npz_root, listing


def test_ddp_ranks_run_the_same_steps_when_a_scene_has_no_usable_pair(tmp_path):
    npz_root, listing = synthetic_index_with_an_empty_scene(tmp_path)
    run_dir = tmp_path / "run"
    result = run_to_end(
        train_command(
            "hardware=cpu2",
            f"dataset.train_npz_root={npz_root}",
            f"dataset.train_list_path={listing}",
            "dataset.n_samples_per_subset=2",
            "trainer.limit_train_batches=1.0",
            "trainer.limit_val_batches=1",
            f"hydra.run.dir={run_dir}",
        ),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # both ranks: 2 scenes of the list (one of them empty on one rank), 2 draws each
    output = result.stdout + result.stderr
    shares = re.findall(r"rank (\d)/2: (\d) training scenes, \d+ pairs, (\d+) samples", output)
    assert sorted(shares) in (
        [("0", "2", "4"), ("1", "1", "4")],
        [("0", "1", "4"), ("1", "2", "4")],
    ), output[-3000:]
    assert "have no pair above min_overlap_score_train" in output
    metrics = (run_dir / "metrics.json").read_text()
    assert '"global_step": 4' in metrics


# ------------------------------------------------------ unusable pairs during training
class Pairs(torch.utils.data.Dataset):
    """``n`` items ``{"pair": i}``; those in ``broken`` raise what a failing read raises."""

    def __init__(self, name: str, n: int, broken: dict[int, Exception]) -> None:
        self.npz_path, self.n, self.broken = Path(name), n, broken

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> dict:
        if idx in self.broken:
            raise self.broken[idx]
        return {"pair": idx}


def test_a_failing_pair_is_replaced_by_the_next_readable_one():
    scenes = ConcatDataset(
        [
            Pairs("a.npz", 3, {2: DataError("image a/2.jpg is truncated")}),
            Pairs("b.npz", 2, {0: OSError(5, "Input/output error", "b/0.jpg")}),
        ]
    )
    items = SkipBrokenPairs(scenes, max_recorded=10)
    assert items[1] == {"pair": 1, SKIPPED_KEY: ""}
    assert items[2] == {
        "pair": 1,  # of scene b: global index 4
        SKIPPED_KEY: "pair 2 of a.npz: image a/2.jpg is truncated\n"
        "pair 0 of b.npz: [Errno 5] Input/output error: 'b/0.jpg'",
    }
    everything_broken = ConcatDataset([Pairs("c.npz", 2, {0: DataError("x"), 1: DataError("y")})])
    with pytest.raises(DataError, match=r"none of the 2 training pairs .*pair 0 of c.npz: x"):
        SkipBrokenPairs(everything_broken, max_recorded=10)[1]


def one_scene_run(tmp_path: Path):
    """A copy of one synthetic scene, its training config and the run's first draws."""
    paths = scannet_copy(tmp_path)
    cfg = compose_fast(
        f"run_dir={tmp_path / 'run'}",
        "logger=csv",
        f"dataset.train_data_root={paths['root']}",
        f"dataset.train_npz_root={paths['npz']}",
        f"dataset.train_list_path={paths['list']}",
        "dataset.n_samples_per_subset=6",  # pairs enough for every step from the one scene
    )
    datamodule = LoFTRDataModule(cfg.dataset, seed=cfg.seed)
    datamodule.setup("fit")
    draws = datamodule.train_sampler.epoch_indices().tolist()
    return paths, cfg, datamodule.train_dataset, draws


def frame_of(dataset, idx: int) -> int:
    """The first frame of pair ``idx``."""
    return int(dataset[idx]["pair_names"][0].split("/")[-1].split(".")[0])


def truncate_image(scene: Path, frame: int) -> str:
    path = scene / "color" / f"{frame}.jpg"
    path.write_bytes(path.read_bytes()[:-200])
    return rf"image {re.escape(str(path))} is truncated"


def zero_depth(scene: Path, frame: int) -> str:
    path = scene / "depth" / f"{frame}.png"
    cv2.imwrite(str(path), np.zeros((480, 640), np.uint16))
    return rf"depth map {re.escape(str(path))} has no valid pixel"


def singular_pose(scene: Path, frame: int) -> str:
    path = scene / "pose" / f"{frame}.txt"
    np.savetxt(path, np.diag([1.0, 1.0, 0.0, 1.0]))
    return rf"pose file {re.escape(str(path))} is a singular matrix"


@pytest.mark.parametrize("breaker", [truncate_image, zero_depth, singular_pose])
def test_an_unusable_pair_mid_epoch_is_skipped_counted_and_training_goes_on(tmp_path, breaker):
    paths, cfg, dataset, draws = one_scene_run(tmp_path)
    message = breaker(paths["root"] / SCENE, frame_of(dataset, draws[1]))  # hit at step 2
    train(cfg)
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4  # every batch trained, on a stand-in pair
    (skipped,) = ckpt["skipped_pairs"]  # one rank
    assert skipped and all(re.search(rf"pair \d+ of .*{SCENE}.npz: {message}", s) for s in skipped)
    rows = list(csv.DictReader((tmp_path / "run/csv/metrics.csv").open()))
    counts = [float(r["train/skipped_pairs"]) for r in rows if r.get("train/skipped_pairs")]
    assert counts[0] == 0 and counts[-1] == len(skipped)


def test_more_unusable_pairs_than_the_cap_stop_the_run_naming_them(tmp_path):
    paths, cfg, dataset, draws = one_scene_run(tmp_path)
    # every image but those of the pair 5 after the first draw: 5 pairs fail before it loads
    good = dataset[(draws[0] + 5) % len(dataset)]["pair_names"]
    for image in (paths["root"] / SCENE / "color").iterdir():
        if f"{SCENE}/color/{image.name}" not in good:
            truncate_image(paths["root"] / SCENE, int(image.stem))
    cfg.trainer.max_skipped_pairs = 2
    pattern = r"3 training pairs could not be used \(trainer.max_skipped_pairs=2\): pair \d+ of "
    with pytest.raises(DataError, match=pattern + rf".*{SCENE}/color/\d+\.jpg is truncated"):
        train(cfg)
    assert not (tmp_path / "run/checkpoints").exists()
    assert_nothing_half_written(tmp_path / "run")


def test_past_the_cap_every_ddp_rank_stops_at_once(tmp_path):
    paths = scannet_copy(tmp_path)
    # both ranks hold the one listed scene; only the images of one pair stay readable
    first_pair = np.load(paths["npz"] / f"{SCENE}.npz")["name"][0]
    keep = {f"{int(first_pair[2])}.jpg", f"{int(first_pair[3])}.jpg"}
    for image in (paths["root"] / SCENE / "color").iterdir():
        if image.name not in keep:
            truncate_image(paths["root"] / SCENE, int(image.stem))
    result = run_to_end(
        train_command(
            "hardware=cpu2",
            f"dataset.train_data_root={paths['root']}",
            f"dataset.train_npz_root={paths['npz']}",
            f"dataset.train_list_path={paths['list']}",
            "dataset.min_overlap_score_train=0",
            "trainer.max_skipped_pairs=2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ),
        timeout=600,
    )
    assert result.returncode != 0
    stopped = "training pairs could not be used (trainer.max_skipped_pairs=2)"
    assert stopped in result.stderr
    assert not (tmp_path / "run/checkpoints").exists()
