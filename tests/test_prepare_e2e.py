"""A prepared set end to end (docs/prepare.md): synthetic scenes written in the converters' input
layouts go through `python -m loftr.data.prepare` into one --out, a COLMAP workspace as the train
scene, a TUM RGB-D sequence as the val scene and a folder-layout sequence as the test scene;
`python -m loftr.train dataset=custom` trains on them and `python -m loftr.evaluate
dataset=custom_test` evaluates the checkpoint. A missing prepared set, or a prepared scene's
missing file, is one line that names the command which makes it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loftr.config.validate import validate
from loftr.data.datamodule import LoFTRDataModule
from loftr.data.prepare.__main__ import main
from loftr.data.prepare.scene import SPLITS
from loftr.data.scene_info import OVERLAP_BINS
from loftr.errors import ConfigError, DataError
from tests.helpers import ROOT
from tests.helpers import tum_scene as ts
from tests.helpers.colmap_scene import write_colmap_scene
from tests.helpers.compose import compose_cfg
from tests.helpers.runs import SINGLE_THREAD, train_command

# scene -> (split, source in the report, pairs written); the frames are small (160x120 and
# 128x96, debug=fast's input size or below) and every pair the converters score into the bins is
# kept: the plaza's 8 frames give 23 of 28 pairs (5 above 0.7), the walk of seed 1 gives 2 of 6
# (4 below 0.1) and the walk of seed 0 all 6
SCENES = {
    "plaza": ("train", "colmap", 23),
    "walk_tum": ("val", "rgbd (tum)", 2),
    "walk_folder": ("test", "rgbd (folder)", 6),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, str]:
    """The prepared set made by the converters' command line, and what the commands printed."""
    pytest.importorskip("pycolmap")  # the [colmap] extra writes and reads the workspace
    inputs = tmp_path_factory.mktemp("inputs")
    out = tmp_path_factory.mktemp("prepared")
    colmap = write_colmap_scene(inputs / "colmap", n_frames=8)
    tum = ts.write_tum(inputs / "tum", ts.render_sequence(4, seed=1))
    folder = ts.write_folder(inputs / "folder", ts.render_sequence(4, seed=0))
    every_frame = ("--keyframe-overlap", "1")  # every frame of a walk is a keyframe
    commands = {
        "plaza": ("colmap", "--model", str(colmap.model), "--images", str(colmap.images)),
        "walk_tum": ("rgbd", "--format", "tum", "--root", str(tum), *every_frame)
        + ("--intrinsics", ts.intrinsics_option()),
        "walk_folder": ("rgbd", "--format", "folder", "--root", str(folder), *every_frame),
    }
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for name, argv in commands.items():
            split = SCENES[name][0]
            assert main([*argv, "--out", str(out), "--name", name, "--split", split]) == 0, name
    return out, printed.getvalue()


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=SINGLE_THREAD, capture_output=True, text=True)


@pytest.mark.slow  # a training and an evaluation in subprocesses (~60 s on the shared machine)
def test_train_on_converted_scenes_then_evaluate_them(
    prepared: tuple[Path, str], tmp_path: Path
) -> None:
    root, printed = prepared
    for name, (split, source, pairs) in SCENES.items():
        assert f"{name} ({split}, from {source})" in printed
        assert f"report: {root / 'reports' / name}.json" in printed
        report = json.loads((root / "reports" / f"{name}.json").read_text())
        assert report["pairs_written"] == pairs and report["refused"] == {}
        assert report["depth_coverage"]["min"] > 0.5
    lists = {s: (root / "index" / f"{s}_list.txt").read_text().split() for s in SPLITS}
    assert lists["train"] == [f"plaza_{lo}_{hi}" for lo, hi in OVERLAP_BINS]
    assert lists["val"] == ["walk_tum_0.1_0.3"]  # both of its pairs score below 0.3
    assert len(lists["test"]) == 3
    run = tmp_path / "run"
    trained = _run(
        *train_command(
            "dataset=custom",
            f"dataset.root={root}",
            "trainer.limit_train_batches=2",
            f"hydra.run.dir={run}",
        )
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["last"]["sets"]["val_list"]["n_pairs"] == 2  # walk_tum
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    evaluated = _run(
        sys.executable,
        "-m",
        "loftr.evaluate",
        "dataset=custom_test",
        f"dataset.root={root}",
        f"ckpt_path={ckpt}",
        "debug=fast",
        "logger=none",
        f"cache_dir={tmp_path / 'dump'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "auc@5" in evaluated.stdout
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["n_pairs"] == 6  # walk_folder: its 4 frames' 6 pairs, all in the bins
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
        ("train", "custom", "fit", "scenes/plaza/depths/cam1/0000.h5"),
        ("evaluate", "custom_test", "test", "scenes/walk_folder/images/0000.png"),
    ],
)
def test_a_prepared_scene_missing_files_names_the_command_not_megadepth(
    prepared: tuple[Path, str], tmp_path: Path, entry: str, dataset: str, stage: str, missing: str
) -> None:
    """A scene's image or depth deleted after preparation: the hint is to prepare it again, not
    to link MegaDepth's folders."""
    out = tmp_path / "set"
    shutil.copytree(prepared[0], out)
    (out / missing).unlink()
    cfg = compose_cfg(entry, f"dataset={dataset}", f"dataset.root={out}")
    with pytest.raises(DataError) as err:
        LoFTRDataModule(cfg.dataset).setup(stage)
    message = str(err.value)
    assert f"{out / missing} does not exist" in message
    assert f"python -m loftr.data.prepare colmap|rgbd --out {out}" in message
    assert "phoenix" not in message and "\n" not in message
