"""The scene writer of prepared sets (loftr.data.prepare.scene and .frames, docs/prepare.md) on
hand-made frames: bins, the overlap and per-image limits, reading back through the MegaDepth loader,
replacing and combining scenes, cleanup, bad names; and the command's shared options."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from loftr.data.io import read_megadepth_depth
from loftr.data.megadepth import MegaDepthDataset
from loftr.data.prepare import __main__ as cli
from loftr.data.prepare.frames import PreparedFrame, resize_frame
from loftr.data.prepare.scene import OVERLAP_BINS, PreparedPair, SceneWriter, list_path
from loftr.data.scene_info import load_scene_info
from loftr.errors import ConfigError, DataError

NAN4 = np.full(4, np.nan)


def frame(i: int, w: int = 40, h: int = 30, rel: str | None = None) -> PreparedFrame:
    """Frame ``i``: a random grey image, f = 50 px, camera at x = i, depth 2 + i/10 m with a
    hole in the top-left pixel."""
    rng = np.random.default_rng(i)
    K = np.array([[50.0, 0.0, (w - 1) / 2], [0.0, 50.0, (h - 1) / 2], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[0, 3] = -float(i)  # world-to-camera of a camera at x = i
    depth = np.full((h, w), 2.0 + i / 10, np.float32)
    depth[0, 0] = 0.0
    image = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return PreparedFrame(rel or f"seq/{i:04d}.png", image, K, T, depth)


def pair(i: int, j: int, overlap: float) -> PreparedPair:
    return PreparedPair(i, j, overlap, np.array([1.0, 2.0, 3.0, 4.0]))


def prepare(out: Path, name: str, pairs, n: int = 4, split: str = "train", **finish) -> dict:
    with SceneWriter(out, name, split, "hand-made") as writer:
        for i in range(n):
            writer.add_frame(frame(i))
        return writer.finish([pair(*p) for p in pairs], **finish)


def listed(out: Path, split: str) -> list[str]:
    return list_path(out, split).read_text().split()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_bins_hold_their_pairs_and_the_limits_are_counted(tmp_path: Path) -> None:
    overlaps = [0.05, 0.15, 0.25, 0.35, 0.55, 0.69, 0.7, 0.9]
    pairs = [
        (i, j, o)
        for (i, j), o in zip(
            ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (0, 4), (1, 4)), overlaps, strict=True
        )
    ]
    report = prepare(tmp_path, "s", pairs, n=5, min_overlap=0.2)
    # 0.05 and 0.15 are below 0.2; 0.7 and 0.9 are at or above the top bin's end
    assert report["below_min_overlap"] == 2
    assert report["above_max_overlap"] == 2
    assert report["pairs_per_bin"] == {"0.1-0.3": 1, "0.3-0.5": 1, "0.5-0.7": 2}
    assert report["pairs_considered"] == 8 and report["pairs_written"] == 4
    assert report["images"] == 5 and report["over_max_pairs_per_image"] == 0
    # every frame lacks depth in one pixel of 40 x 30
    assert report["depth_coverage"] == {"mean": 0.9992, "min": 0.9992, "max": 0.9992}
    assert listed(tmp_path, "train") == ["s_0.1_0.3", "s_0.3_0.5", "s_0.5_0.7"]
    assert listed(tmp_path, "val") == [] and listed(tmp_path, "test") == []
    expected = {(0.1, 0.3): [((0, 3), 0.25)], (0.3, 0.5): [((1, 2), 0.35)]}
    expected[(0.5, 0.7)] = [((1, 3), 0.55), ((2, 3), 0.69)]
    for lo, hi in OVERLAP_BINS:
        info = load_scene_info(tmp_path / "index" / "scene_info" / f"s_{lo}_{hi}.npz")
        got = [((int(a), int(b)), round(float(o), 6)) for (a, b), o, _ in info["pair_infos"]]
        assert got == expected[(lo, hi)]
        assert all(lo <= o < hi for _, o in got)
        np.testing.assert_array_equal(info["pair_infos"][0][2], [1.0, 2.0, 3.0, 4.0])
    assert json.loads((tmp_path / "reports" / "s.json").read_text()) == report


def test_max_pairs_per_image_visits_the_bins_in_turn(tmp_path: Path) -> None:
    pairs = [(0, 1, 0.6), (0, 2, 0.55), (0, 3, 0.4), (1, 2, 0.2), (2, 3, 0.15), (1, 3, 0.35)]
    # bins, best first: [(1,2) .2, (2,3) .15], [(0,3) .4, (1,3) .35], [(0,1) .6, (0,2) .55].
    # cap 1, first round: (1,2) in, (0,3) in, (0,1) out (0 and 1 are full); then all out.
    report = prepare(tmp_path / "one", "s", pairs, max_pairs_per_image=1)
    assert report["pairs_per_bin"] == {"0.1-0.3": 1, "0.3-0.5": 1, "0.5-0.7": 0}
    assert report["over_max_pairs_per_image"] == 4
    assert listed(tmp_path / "one", "train") == ["s_0.1_0.3", "s_0.3_0.5"]
    # cap 2, first round: all three in (0 and 1 reach 2); second: (2,3) in, (1,3), (0,2) out
    report = prepare(tmp_path / "two", "s", pairs, max_pairs_per_image=2)
    assert report["pairs_per_bin"] == {"0.1-0.3": 2, "0.3-0.5": 1, "0.5-0.7": 1}
    assert report["over_max_pairs_per_image"] == 2
    info = load_scene_info(tmp_path / "two" / "index" / "scene_info" / "s_0.1_0.3.npz")
    assert [tuple(map(int, p[0])) for p in info["pair_infos"]] == [(1, 2), (2, 3)]


def test_the_megadepth_loader_reads_back_what_was_added(tmp_path: Path) -> None:
    source = tmp_path / "source.jpg"
    big = frame(1, w=80, h=60, rel="b/big.jpg")
    assert cv2.imwrite(str(source), big.image)
    frames = [frame(0), PreparedFrame("b/copied.jpg", source, big.K, big.T_w2c, big.depth)]
    with SceneWriter(tmp_path / "set", "s", "val", "hand-made", max_size=80) as writer:
        assert [writer.add_frame(f) for f in frames] == [0, 1]
        writer.finish([pair(0, 1, 0.4)])
    out = tmp_path / "set"
    scene = out / "scenes" / "s"
    assert (scene / "images" / "b" / "copied.jpg").read_bytes() == source.read_bytes()
    npz = out / "index" / "scene_info" / "s_0.3_0.5.npz"
    ds = MegaDepthDataset(out, npz, "val", 0.0, None, None, img_padding=False, depth_padding=False)
    item = ds[0]
    assert item["pair_names"] == ("scenes/s/images/seq/0000.png", "scenes/s/images/b/copied.jpg")
    np.testing.assert_array_equal((item["image0"][0].numpy() * 255).round(), frames[0].image)
    np.testing.assert_array_equal(item["depth0"].numpy(), frames[0].depth)
    np.testing.assert_array_equal(item["depth1"].numpy(), big.depth)
    np.testing.assert_allclose(item["K0"].numpy(), frames[0].K)
    np.testing.assert_allclose(item["K1"].numpy(), big.K)
    # cameras at x = 0 and x = 1: camera 0's points sit 1 m to the left of camera 1
    np.testing.assert_allclose(item["T_0to1"].numpy()[:3, 3], [-1.0, 0.0, 0.0])
    depth_file = scene / "depths" / "b" / "copied.h5"
    np.testing.assert_array_equal(read_megadepth_depth(depth_file), big.depth)


def test_frames_above_max_size_are_downscaled_by_the_pixel_centre_rule(tmp_path: Path) -> None:
    f = frame(0, w=80, h=60)
    f.depth = np.arange(80 * 60, dtype=np.float32).reshape(60, 80) + 1
    small = resize_frame(f, (40, 30))
    # s = 1/2: fx 50 -> 25, cx 39.5 -> (39.5 + 0.5) / 2 - 0.5 = 19.5; likewise cy 29.5 -> 14.5
    np.testing.assert_allclose(small.K, [[25.0, 0, 19.5], [0, 25.0, 14.5], [0, 0, 1]])
    # the new pixel x' covers old pixels 2x' and 2x' + 1; its centre falls on 2x' + 1
    np.testing.assert_array_equal(small.depth, f.depth[1::2, 1::2])
    assert small.image.shape == (30, 40)
    np.testing.assert_allclose(
        small.image, cv2.resize(f.image, (40, 30), interpolation=cv2.INTER_AREA)
    )
    with SceneWriter(tmp_path, "s", "train", "hand-made", max_size=40) as writer:
        writer.add_frame(f)
        writer.add_frame(frame(1))  # 40 x 30 already: kept as it is
        writer.finish([pair(0, 1, 0.2)])
    info = load_scene_info(tmp_path / "index" / "scene_info" / "s_0.1_0.3.npz")
    np.testing.assert_allclose(info["intrinsics"][0], small.K)
    np.testing.assert_allclose(info["intrinsics"][1], frame(1).K)
    depth = read_megadepth_depth(tmp_path / "scenes" / "s" / "depths" / "seq" / "0000.h5")
    np.testing.assert_array_equal(depth, small.depth)


def test_preparing_a_name_again_replaces_it_and_scenes_combine(tmp_path: Path) -> None:
    prepare(tmp_path, "a", [(0, 1, 0.2), (1, 2, 0.4), (2, 3, 0.6)])
    prepare(tmp_path, "a_1", [(0, 1, 0.2)])  # its stems start with "a_" too
    prepare(tmp_path, "b", [(0, 1, 0.4)], split="test")
    assert listed(tmp_path, "train") == ["a_0.1_0.3", "a_0.3_0.5", "a_0.5_0.7", "a_1_0.1_0.3"]
    assert listed(tmp_path, "test") == ["b_0.3_0.5"]
    (tmp_path / "scenes" / "a" / "images" / "stale.png").write_bytes(b"old")

    prepare(tmp_path, "a", [(0, 1, 0.45)], n=2, split="val")
    assert listed(tmp_path, "train") == ["a_1_0.1_0.3"]
    assert listed(tmp_path, "val") == ["a_0.3_0.5"]
    assert listed(tmp_path, "test") == ["b_0.3_0.5"]
    infos = sorted(p.name for p in (tmp_path / "index" / "scene_info").iterdir())
    assert infos == ["a_0.3_0.5.npz", "a_1_0.1_0.3.npz", "b_0.3_0.5.npz"]
    assert not (tmp_path / "scenes" / "a" / "images" / "stale.png").exists()
    assert sorted(p.name for p in (tmp_path / "scenes" / "a" / "images" / "seq").iterdir()) == [
        "0000.png",
        "0001.png",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "reports", "scenes"]
    assert json.loads((tmp_path / "reports" / "a.json").read_text())["split"] == "val"


def test_an_exception_leaves_out_as_it_was(tmp_path: Path) -> None:
    prepare(tmp_path, "a", [(0, 1, 0.2)])
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="converter broke"):
        with SceneWriter(tmp_path, "a", "val", "hand-made") as writer:
            writer.add_frame(frame(0))
            writer.add_frame(frame(1))
            raise RuntimeError("converter broke")
    # no pair in the bins: finish refuses, inside the block, so nothing moves either
    with pytest.raises(DataError, match=r"scene a: no pair to write \(1 considered, 1 below"):
        prepare(tmp_path, "a", [(0, 1, 0.05)], split="test")
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "reports", "scenes"]
    # an out that did not exist is not left behind
    with pytest.raises(DataError):
        prepare(tmp_path / "new" / "set", "a", [(0, 1, 0.9)])
    assert not (tmp_path / "new").exists()


def test_a_crash_while_replacing_leaves_no_list_naming_a_missing_scene(tmp_path, monkeypatch):
    prepare(tmp_path, "a", [(0, 1, 0.2)])
    prepare(tmp_path, "b", [(0, 1, 0.4)])
    rename = os.rename

    def crash_on_the_new_folder(src, dst):
        if Path(dst) == tmp_path / "scenes" / "a":
            raise OSError("the machine went down")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_on_the_new_folder)
    with pytest.raises(OSError, match="went down"):
        prepare(tmp_path, "a", [(0, 1, 0.6)])
    assert listed(tmp_path, "train") == ["b_0.3_0.5"]  # "a" left the lists first
    assert (tmp_path / "index" / "scene_info" / "b_0.3_0.5.npz").is_file()
    assert (tmp_path / "scenes" / "b").is_dir() and not (tmp_path / "scenes" / "a").exists()
    assert [p.name for p in tmp_path.glob(".outgoing-a-*")] == [f".outgoing-a-{os.getpid()}"]
    monkeypatch.setattr(os, "rename", rename)
    (tmp_path / ".outgoing-a-b-1").mkdir()  # scene "a-b"'s, not "a"'s
    prepare(tmp_path, "a", [(0, 1, 0.6)])  # preparing it again repairs it
    assert listed(tmp_path, "train") == ["b_0.3_0.5", "a_0.5_0.7"]
    assert sorted(p.name for p in tmp_path.glob(".*")) == [".outgoing-a-b-1"]


@pytest.mark.parametrize(
    ("name", "split", "message"),
    [
        ("a/b", "train", "--name 'a/b': a scene name is one folder name"),
        ("..", "train", "--name '..'"),
        ("", "train", "--name ''"),
        ("a", "dev", "--split 'dev'; use one of train, val, test"),
    ],
)
def test_bad_name_or_split_is_refused_before_any_work(
    tmp_path: Path, name: str, split: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        with SceneWriter(tmp_path / "out", name, split, "hand-made"):
            pass
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_bad_frames_and_pairs_name_the_culprit(tmp_path: Path) -> None:
    with SceneWriter(tmp_path, "s", "train", "hand-made") as writer:
        bad = frame(0)
        bad.depth = bad.depth[:, :-1]
        with pytest.raises(DataError, match=r"frame seq/0000.png: depth map is \(39, 30\)"):
            writer.add_frame(bad)
        with pytest.raises(DataError, match="frame '../x.png': an image path must be relative"):
            writer.add_frame(frame(0, rel="../x.png"))
        writer.add_frame(frame(0))
        with pytest.raises(DataError, match="frame 'seq/0000.png' is added twice"):
            writer.add_frame(frame(0))
        with pytest.raises(DataError, match=r"pair \(0, 1\) of scene s: needs 0 <= i < j < 1"):
            writer.finish([pair(0, 1, 0.3)])


# --- the command: shared options, one-line errors, the printed report ----------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A stand-in converter (this module), so the command is tested without a real one."""
    parser.add_argument("--fail", action="store_true")


def run(args: argparse.Namespace) -> dict:
    if args.fail:
        raise DataError("model folder x/sparse does not exist")
    with SceneWriter(args.out, args.name or "stand-in", args.split, "stand-in", args.max_size) as w:
        w.refuse("seq/9999.png", "no depth")
        for i in range(3):
            w.add_frame(frame(i))
        pairs = [pair(0, 1, 0.2), pair(0, 2, 0.4), pair(1, 2, 0.6)]
        return w.finish(pairs, args.min_overlap, args.max_pairs_per_image, {"stand_in": 1})


def test_command_prints_the_report_and_errors_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(cli.COMMANDS, "colmap", (__name__, "stand-in"))
    out = tmp_path / "set"
    assert cli.main(["colmap", "--out", str(out), "--max-pairs-per-image", "1"]) == 0
    printed = capsys.readouterr().out
    assert "pairs     1 written of 3 considered" in printed
    assert "refused   no depth: 1" in printed
    report = json.loads((out / "reports" / "stand-in.json").read_text())
    assert report["refused_examples"] == {"no depth": ["seq/9999.png"]}
    assert report["stand_in"] == 1 and report["over_max_pairs_per_image"] == 2

    assert cli.main(["colmap", "--out", str(out), "--fail"]) == 2
    assert capsys.readouterr().err == "error: model folder x/sparse does not exist\n"
    for option in (["--min-overlap", "0.05"], ["--max-pairs-per-image", "0"], ["--split", "x"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["colmap", "--out", str(out), *option])
        assert exit_.value.code == 2
