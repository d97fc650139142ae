"""python -m loftr.data.setup: symlinks, archive extraction and the layout report."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from loftr.data.layout import setup_hint
from loftr.data.setup import main, verify_layout
from tests.helpers.datasets import (
    SCANNET_K,
    write_megadepth_scene,
    write_scannet_index,
    write_scannet_scene,
)


def _tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


@pytest.fixture
def raw_scannet(tmp_path: Path) -> dict[str, Path]:
    """Raw downloads: 2 train scenes, 1 test scene (64x48), the indices tar and the assets."""
    raw = tmp_path / "raw"
    for scene in ("scene0000_00", "scene0001_00"):
        write_scannet_scene(raw / "scannet_train", scene, n_frames=3)
    write_scannet_scene(raw / "scannet_test", "scene0707_00", n_frames=2)
    indices = raw / "build" / "scannet_indices"
    for i, scene in enumerate(("scene0000_00", "scene0001_00")):
        rows = [(i, 0, 0, 1), (i, 0, 0, 2), (i, 0, 1, 2)]
        write_scannet_index(indices / "scene_data" / "train" / f"{scene}.npz", rows, [0.5] * 3)
    (indices / "scene_data" / "train_list").mkdir(parents=True)
    (indices / "scene_data" / "train_list" / "scannet_all.txt").write_text(
        "scene0000_00.npz\nscene0001_00.npz\n"
    )
    np.savez(indices / "intrinsics.npz", scene0000_00=SCANNET_K, scene0001_00=SCANNET_K)
    assets = raw / "LoFTR" / "assets" / "scannet_test_1500"
    write_scannet_index(assets / "test.npz", [(707, 0, 0, 1)], None)
    np.savez(assets / "intrinsics.npz", scene0707_00=SCANNET_K)
    (assets / "scannet_test.txt").write_text("test.npz\n")
    return {
        "train": raw / "scannet_train",
        "test": raw / "scannet_test",
        "indices": _tar(indices, raw / "scannet_indices.tar"),
        "assets": raw / "LoFTR" / "assets",
        "data": tmp_path / "work" / "data",
    }


def test_scannet_good_layout(raw_scannet: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    r = raw_scannet
    argv = ["scannet", "--train", str(r["train"]), "--test", str(r["test"])]
    argv += ["--indices", str(r["indices"]), "--assets", str(r["assets"])]
    argv += ["--data-dir", str(r["data"])]
    assert main(argv) == 0
    out = capsys.readouterr().out
    link = r["data"] / "scannet" / "train" / "scene0000_00"
    assert link.is_symlink() and link.resolve() == (r["train"] / "scene0000_00").resolve()
    assert (r["data"] / "scannet" / "index" / "scene_data").is_symlink()
    assert (r["data"].parent / "assets" / "scannet_test_1500" / "test.npz").is_file()
    assert "train root" in out and "2 scenes (scene0000_00, scene0001_00)" in out
    assert "scannet_all.txt: 2 entries, all in" in out
    assert "sample pairs (train): 5 of 5 have all their files" in out
    assert "sample pairs (test): 1 of 1 have all their files" in out
    assert "complete: every checked path is there" in out and "MISSING" not in out
    # Running it again keeps the links and changes nothing.
    assert main(argv) == 0
    assert "kept   " in capsys.readouterr().out


def test_scannet_half_built_layout_lists_what_is_missing(
    raw_scannet: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    r = raw_scannet
    (r["train"] / "scene0001_00" / "depth" / "2.png").unlink()
    assert main(["scannet", "--train", str(r["train"]), "--data-dir", str(r["data"])]) == 1
    out = capsys.readouterr().out
    assert "incomplete: 5 missing" in out
    index = r["data"] / "scannet" / "index"
    assert "scannet_all.txt does not exist; extract scannet_indices.tar" in out
    assert f"ln -s /path/to/scannet_indices/* {index} (TRAINING.md" in out
    assert "intrinsics.npz does not exist" in out
    assert "test root: " in out and "ln -s /path/to/scannet_test/*" in out
    assert "scannet_test.txt does not exist; copy assets/scannet_test_1500" in out
    # With the indices the pair check runs and names the missing depth map.
    argv = ["scannet", "--indices", str(r["indices"]), "--data-dir", str(r["data"])]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "sample pairs (train): 4 of 5 have all their files" in out
    assert "MISSING  pair scene0001_00 0-2 (train): " in out
    assert str(r["data"] / "scannet" / "train" / "scene0001_00" / "depth" / "2.png") in out


def test_scannet_testdata_archive_is_linked_as_test(raw_scannet: dict[str, Path]) -> None:
    r = raw_scannet
    bundle = r["train"].parent / "build2" / "scannet_test_1500"
    shutil.copytree(r["test"], bundle)
    archive = _tar(bundle, r["train"].parent / "scannet_test_1500.tar")
    assert main(["scannet", "--testdata", str(archive), "--data-dir", str(r["data"])]) == 1
    link = r["data"] / "scannet" / "test" / "scene0707_00"
    assert link.is_symlink() and (link / "color" / "0.jpg").is_file()


def test_cpp_sensreader_export_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scene = tmp_path / "raw" / "scene0000_00"
    scene.mkdir(parents=True)
    for name in ("frame-000000.color.jpg", "frame-000000.depth.pgm", "frame-000000.pose.txt"):
        (scene / name).write_bytes(b"x")
    argv = ["scannet", "--train", str(tmp_path / "raw"), "--data-dir", str(tmp_path / "data")]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "C++ SensReader frames such as frame-000000" in out and "SensReader/python" in out


def test_archive_escaping_its_folder_is_refused(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    argv = ["scannet", "--indices", str(archive), "--data-dir", str(tmp_path / "w" / "data")]
    assert main(argv) == 2
    assert "evil.tar cannot be extracted" in capsys.readouterr().err
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))


@pytest.fixture
def raw_megadepth(tmp_path: Path) -> dict[str, Path]:
    """MegaDepth root (phoenix/, Undistorted_SfM/) with 2 scenes, indices tar, test assets."""
    root = tmp_path / "raw" / "megadepth"
    indices = tmp_path / "raw" / "build" / "megadepth_indices"
    write_megadepth_scene(root, indices / "scene_info_0.1_0.7" / "0015_0.1_0.3.npz", "0015")
    write_megadepth_scene(root, indices / "scene_info_val_1500" / "0022_0.1_0.3.npz", "0022")
    (indices / "trainvaltest_list").mkdir()
    (indices / "trainvaltest_list" / "train_list.txt").write_text("0015_0.1_0.3\n")
    (indices / "trainvaltest_list" / "val_list.txt").write_text("0022_0.1_0.3\n")
    assets = tmp_path / "raw" / "LoFTR" / "assets" / "megadepth_test_1500_scene_info"
    assets.mkdir(parents=True)
    shutil.copy(indices / "scene_info_val_1500" / "0022_0.1_0.3.npz", assets)
    (assets / "megadepth_test_1500.txt").write_text("0022_0.1_0.3\n")
    return {
        "root": root,
        "indices": _tar(indices, tmp_path / "raw" / "megadepth_indices.tar"),
        "assets": assets.parent,
        "data": tmp_path / "work" / "data",
    }


def test_megadepth_layout(raw_megadepth: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    r = raw_megadepth
    argv = ["megadepth", "--train", str(r["root"]), "--indices", str(r["indices"])]
    argv += ["--data-dir", str(r["data"])]
    assert main(argv) == 1  # the MegaDepth-1500 assets are not linked yet
    out = capsys.readouterr().out
    assert "train root" in out and "2 scenes in Undistorted_SfM" in out
    assert (r["data"] / "megadepth" / "test" / "phoenix").is_symlink()  # test defaults to train
    assert "sample pairs (train): 3 of 3 have all their files" in out
    assert "sample pairs (val): 3 of 3" in out
    assert "incomplete: 1 missing" in out
    assert "megadepth_test_1500.txt does not exist; copy assets/megadepth_test_1500" in out
    assert main(["megadepth", "--assets", str(r["assets"]), "--data-dir", str(r["data"])]) == 0
    assert "sample pairs (test): 3 of 3" in capsys.readouterr().out


def test_megadepth_scene_folders_linked_directly_are_explained(
    raw_megadepth: dict[str, Path],
) -> None:
    r = raw_megadepth
    # TRAINING.md's literal `ln -s .../Undistorted_SfM/* data/megadepth/train`.
    train = r["data"] / "megadepth" / "train"
    train.mkdir(parents=True)
    os.symlink(r["root"] / "Undistorted_SfM" / "0015", train / "0015")
    report = verify_layout("megadepth", r["data"])
    assert not report.ok
    assert any("lacks ['phoenix', 'Undistorted_SfM']" in m for m in report.missing)


def test_setup_hint_names_the_step() -> None:
    assert "tar xf train-data/scannet_indices.tar" in setup_hint("scannet_index", "data/x")
    assert "ln -s /path/to/scannet_train/* data/scannet/train" in setup_hint(
        "scannet_train", "data/scannet/train"
    )
    assert "ensure_synthetic" in setup_hint("scannet_train", "data/synthetic/scannet/train")


def test_check_reads_every_file_and_names_each_broken_one(
    raw_scannet: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    r = raw_scannet
    argv = ["scannet", "--train", str(r["train"]), "--test", str(r["test"])]
    argv += ["--indices", str(r["indices"]), "--assets", str(r["assets"])]
    argv += ["--data-dir", str(r["data"]), "--check"]
    assert main(argv) == 0
    out = capsys.readouterr()
    # 2 + 1 scenes' intrinsics; 3 + 3 train frames and 2 test frames, each image, depth, pose
    assert "checked 27 files and cameras: all readable" in out.out and "BAD" not in out.out
    assert "scannet train" in out.err and "scannet test" in out.err  # the progress bars
    train = r["data"] / "scannet" / "train"
    (train / "scene0001_00" / "depth" / "2.png").unlink()
    image = train / "scene0000_00" / "color" / "1.jpg"
    image.write_bytes(image.read_bytes()[:-100])
    cv2.imwrite(str(train / "scene0001_00" / "depth" / "0.png"), np.zeros((480, 640), np.uint16))
    intrinsics = r["data"] / "scannet" / "index" / "intrinsics.npz"
    np.savez(intrinsics, scene0000_00=np.diag([577.87, 577.87, 0.0]), scene0001_00=SCANNET_K)
    assert main(["scannet", "--verify-only", "--check", "--data-dir", str(r["data"])]) == 1
    out = capsys.readouterr().out
    bad = [line for line in out.splitlines() if line.startswith("  BAD")]
    assert len(bad) == 4, out
    assert f"BAD      intrinsics of scene0000_00 in {intrinsics} is a singular matrix" in out
    assert f"BAD      image {image} is truncated" in out
    assert f"depth map {train / 'scene0001_00' / 'depth' / '2.png'} does not exist" in out
    assert f"depth map {train / 'scene0001_00' / 'depth' / '0.png'} has no valid pixel" in out
    assert "checked 27 files and cameras: 4 with a problem" in out


def test_check_megadepth_reads_each_shared_image_once(
    raw_megadepth: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    r = raw_megadepth
    argv = ["megadepth", "--train", str(r["root"]), "--indices", str(r["indices"])]
    argv += ["--assets", str(r["assets"]), "--data-dir", str(r["data"]), "--check"]
    assert main(argv) == 0
    # train 0015 and val 0022: 3 slots x (image, depth, K, pose); test 0022: K and pose only,
    # its images are the val ones
    assert "checked 30 files and cameras: all readable" in capsys.readouterr().out
    depth = r["root"] / "phoenix/S6/zl548/MegaDepth_v1/0015/dense0/depths/0001.h5"
    with h5py.File(depth, "w") as f:
        f.create_dataset("depth", data=np.ones((5, 5), dtype=np.float32))
    assert main(["megadepth", "--verify-only", "--check", "--data-dir", str(r["data"])]) == 1
    out = capsys.readouterr().out
    assert f"BAD      depth map {r['data'] / 'megadepth/train'}" in out and "0001.h5 is 5x5" in out
    assert "checked 30 files and cameras: 1 with a problem" in out
