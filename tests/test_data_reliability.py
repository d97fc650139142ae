"""Data faults in long runs: equal epochs on every rank, broken pairs skipped and counted."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import ConcatDataset

from loftr.data.sampler import RandomConcatSampler

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "data/synthetic/scannet"


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
        [
            sys.executable,
            "-m",
            "loftr.train",
            "hardware=cpu2",
            "debug=fast",
            "logger=none",
            f"dataset.train_npz_root={npz_root}",
            f"dataset.train_list_path={listing}",
            "dataset.n_samples_per_subset=2",
            "trainer.limit_train_batches=1.0",
            "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ],
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
