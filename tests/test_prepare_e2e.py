"""A prepared set end to end (docs/prepare.md): frames rendered from a synthetic plaza go through
the SceneWriter into train, val and test scenes; `python -m loftr.train dataset=custom` trains on
them and `python -m loftr.evaluate dataset=custom_test` evaluates the checkpoint. A missing
prepared set is one line that names the command which makes it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loftr.config.validate import validate
from loftr.data.covisibility import covisibility, overlap_score, relative_pose
from loftr.data.datamodule import LoFTRDataModule
from loftr.data.prepare.frames import PreparedFrame
from loftr.data.prepare.scene import PreparedPair, SceneWriter
from loftr.data.synthetic import make_texture_bank, outdoor_scene, render_view
from loftr.data.synthetic.cameras import outdoor_trajectories
from loftr.errors import ConfigError, DataError
from tests.helpers import ROOT
from tests.helpers.compose import compose_cfg
from tests.helpers.runs import SINGLE_THREAD, train_command

WIDTH, HEIGHT = 160, 120  # debug=fast's input size: the network sees the images as written
# the frames of one plaza (8 on arcs around its landmark, overlaps 0.37-0.9) each scene takes:
# 3 of plaza_a's 6 pairs are below 0.7; plaza_b's pair scores 0.5, plaza_c's 0.56-0.62
SCENES = {"plaza_a": ("train", (0, 1, 2, 3)), "plaza_b": ("val", (4, 7))}
SCENES["plaza_c"] = ("test", (3, 4, 5))


def _frames() -> list[PreparedFrame]:
    rng = np.random.default_rng(3)
    poses, fovs = outdoor_trajectories(rng, 8)
    scene = outdoor_scene(rng, make_texture_bank(0), poses)
    frames = []
    for i, (pose, fov) in enumerate(zip(poses, fovs, strict=True)):
        f = 0.5 * WIDTH / np.tan(np.deg2rad(fov) / 2)
        K = np.array([[f, 0.0, (WIDTH - 1) / 2], [0.0, f, (HEIGHT - 1) / 2], [0.0, 0.0, 1.0]])
        view = render_view(scene, K, pose, WIDTH, HEIGHT, rng=rng)
        frames.append(PreparedFrame(f"{i:04d}.png", view.image, K, pose, view.depth))
    return frames


def _scored_pairs(frames: list[PreparedFrame]) -> list[PreparedPair]:
    pairs = []
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            a, b = frames[i], frames[j]
            t_0to1 = relative_pose(a.T_w2c, b.T_w2c)
            overlap = overlap_score(a.depth, b.depth, a.K, b.K, t_0to1)
            central = covisibility(a.depth, b.depth, a.K, b.K, t_0to1).central_match
            pairs.append(PreparedPair(i, j, overlap, central))
    return pairs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    frames = _frames()
    for name, (split, indices) in SCENES.items():
        with SceneWriter(out, name, split, "synthetic plaza") as writer:
            chosen = [frames[i] for i in indices]
            for f in chosen:
                writer.add_frame(f)
            writer.finish(_scored_pairs(chosen))
    return out


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=SINGLE_THREAD, capture_output=True, text=True)


@pytest.mark.slow  # a training and an evaluation in subprocesses (~60 s on the shared machine)
def test_train_on_a_prepared_set_then_evaluate_it(prepared: Path, tmp_path: Path) -> None:
    for name in SCENES:
        report = json.loads((prepared / "reports" / f"{name}.json").read_text())
        assert report["depth_coverage"]["min"] > 0.5
    assert json.loads((prepared / "reports" / "plaza_a.json").read_text())["pairs_written"] == 3
    run = tmp_path / "run"
    trained = _run(
        *train_command(
            "dataset=custom",
            f"dataset.root={prepared}",
            "trainer.limit_train_batches=2",
            f"hydra.run.dir={run}",
        )
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["last"]["sets"]["val_list"]["n_pairs"] == 1  # plaza_b: frames 4 and 7
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    evaluated = _run(
        sys.executable,
        "-m",
        "loftr.evaluate",
        "dataset=custom_test",
        f"dataset.root={prepared}",
        f"ckpt_path={ckpt}",
        "debug=fast",
        "logger=none",
        f"cache_dir={tmp_path / 'dump'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "auc@5" in evaluated.stdout
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["n_pairs"] == 3  # plaza_c: frames 3-5, all three pairs in the bins
    assert set(written["metrics"]) >= {"auc@5", "auc@10", "auc@20"}


@pytest.mark.parametrize(
    ("split", "entry", "dataset", "stage"),
    [
        ("train", "train", "custom", "fit"),
        ("val", "train", "custom", "validate"),
        ("test", "evaluate", "custom_test", "test"),
    ],
)
def test_a_missing_prepared_set_names_the_command_that_makes_it(
    tmp_path: Path, split: str, entry: str, dataset: str, stage: str
) -> None:
    cfg = compose_cfg(entry, f"dataset={dataset}", f"dataset.root={tmp_path / 'none'}")
    data = LoFTRDataModule(cfg.dataset)
    with pytest.raises(DataError) as err:
        data.setup(stage)
    message = str(err.value)
    assert f"{tmp_path / 'none'}/index/{split}_list.txt does not exist" in message
    assert f"python -m loftr.data.prepare colmap|rgbd --out {tmp_path / 'none'}" in message
    assert "\n" not in message


def test_custom_points_into_the_prepared_set_and_custom_test_only_evaluates() -> None:
    cfg = compose_cfg("train", "dataset=custom", "dataset.root=/sets/mine")
    assert cfg.dataset.train_data_root == cfg.dataset.val_data_root == "/sets/mine"
    assert cfg.dataset.train_npz_root == "/sets/mine/index/scene_info"
    assert cfg.dataset.val_list_path == "/sets/mine/index/val_list.txt"
    assert cfg.dataset.trainval_data_source == "MegaDepth"
    assert cfg.dataset.mgdpt_img_resize == 640 and cfg.dataset.min_overlap_score_train == 0.0
    test = compose_cfg("evaluate", "dataset=custom_test", "dataset.root=/sets/mine")
    assert test.dataset.test_list_path == "/sets/mine/index/test_list.txt"
    with pytest.raises(ConfigError, match=r"loftr\.evaluate ckpt_path=PATH dataset=custom_test"):
        validate(compose_cfg("train", "dataset=custom_test"))


@pytest.mark.parametrize(
    ("entry", "dataset", "stage", "missing"),
    [
        ("train", "custom", "fit", "scenes/plaza_a/depths/0000.h5"),
        ("evaluate", "custom_test", "test", "scenes/plaza_c/images/0003.png"),
    ],
)
def test_a_prepared_scene_missing_files_names_the_command_not_megadepth(
    prepared: Path, tmp_path: Path, entry: str, dataset: str, stage: str, missing: str
) -> None:
    """A scene's image or depth deleted after preparation: the hint is to prepare it again, not
    to link MegaDepth's folders."""
    out = tmp_path / "set"
    shutil.copytree(prepared, out)
    (out / missing).unlink()
    cfg = compose_cfg(entry, f"dataset={dataset}", f"dataset.root={out}")
    with pytest.raises(DataError) as err:
        LoFTRDataModule(cfg.dataset).setup(stage)
    message = str(err.value)
    assert f"{out / missing} does not exist" in message
    assert f"python -m loftr.data.prepare colmap|rgbd --out {out}" in message
    assert "phoenix" not in message and "\n" not in message
