"""`python -m loftr.data.prepare rgbd`: TUM RGB-D and folder sequences become prepared scenes
(docs/prepare.md#rgb-d-sequences).

A synthetic walk (tests/helpers/tum_scene.py) is written in both layouts, converted, and read back
with the MegaDepth loader: its warps must reproduce the rendered views' co-visibility, so a wrong
quaternion order or pose direction fails; depth keeps TUM's 1/5000 m; lens distortion is removed;
bad input is one line and leaves `--out` as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from loftr.data.covisibility import overlap_score, relative_pose, reproject
from loftr.data.io import read_gray, read_megadepth_depth
from loftr.data.megadepth import DEPTH_PAD_SIZE, MegaDepthDataset, pad_bottom_right
from loftr.data.prepare import rgbd, rgbd_frames, rgbd_layouts
from loftr.data.prepare.__main__ import build_parser, main
from loftr.data.scene_info import load_scene_info
from loftr.errors import ConfigError
from loftr.supervision import compute_supervision_coarse
from tests.helpers import tum_scene as ts

N_FRAMES = 8
DISTORTION = (-0.25, 0.08, 0.001, -0.0015, 0.0)  # k1, k2, p1, p2, k3 (OpenCV's order)


@pytest.fixture(scope="module")
def seq() -> ts.RenderedSequence:
    return ts.render_sequence(N_FRAMES)


def convert(root: Path, out: Path, *options: str, fmt: str = "tum") -> dict:
    """Run the converter through the command's own parser; the report."""
    argv = ["rgbd", "--format", fmt, "--root", str(root), "--out", str(out), *options]
    if fmt == "tum" and "--intrinsics" not in options:
        argv += ["--intrinsics", ts.intrinsics_option()]
    return rgbd.run(build_parser("rgbd").parse_args(argv))


def scene_infos(out: Path) -> list[Path]:
    return sorted((out / "index" / "scene_info").glob("*.npz"))


def tum_frame(name: str) -> int:
    """Fixture frame index of a written TUM image (named by its rgb timestamp)."""
    return round((float(Path(name).stem) - ts.START) / ts.FRAME_DT)


def folder_frame(name: str) -> int:
    """Fixture frame index of a written folder-layout image (``0003.png`` is frame 3)."""
    return int(Path(name).stem)


def truth_pairs(seq: ts.RenderedSequence, frames: list[int]) -> list[tuple[int, int]]:
    """The pairs of ``frames`` the rendered truth puts clearly inside the overlap bins."""
    pairs = []
    for n, a in enumerate(frames):
        for b in frames[n + 1 :]:
            T = relative_pose(seq.poses[a], seq.poses[b])
            if 0.12 <= overlap_score(seq.depths[a], seq.depths[b], ts.K, ts.K, T) <= 0.68:
                pairs.append((a, b))
    return pairs


def warp_agreement(
    out: Path,
    seq: ts.RenderedSequence,
    frame_of: Callable[[str], int] = tum_frame,
    rel_tol: float = 0.01,
) -> float:
    """Share of the truth's co-visible pixels (pixels of image a that reach image b within 1 %
    depth, over the truth's binned pairs of the frames written) that the converted set's warps
    reproduce within ``rel_tol`` depth, read through MegaDepthDataset; a pair the set lacks
    reproduces none."""
    items, frames = {}, set()
    for npz in scene_infos(out):
        frames |= {frame_of(p) for p in load_scene_info(npz)["image_paths"]}
        ds = MegaDepthDataset(out, npz, mode="train", min_overlap_score=0.0, img_resize=160, df=8)
        for item in ds:
            a, b = (frame_of(n) for n in item["pair_names"])
            items[(a, b)] = item
    h, w = ts.HEIGHT, ts.WIDTH
    hit = total = 0
    for a, b in truth_pairs(seq, sorted(frames)):
        T = relative_pose(seq.poses[a], seq.poses[b])
        true = reproject(seq.depths[a], seq.depths[b], ts.K, ts.K, T, rel_tol=0.01)
        covisible = np.zeros((h, w), bool)
        covisible[true.ys[true.ok], true.xs[true.ok]] = True
        total += int(covisible.sum())
        if (a, b) not in items:
            continue
        item = items[(a, b)]
        d0, d1 = (item[k][:h, :w].numpy() for k in ("depth0", "depth1"))
        K0, K1, T01 = (item[k].numpy().astype(np.float64) for k in ("K0", "K1", "T_0to1"))
        conv = reproject(d0, d1, K0, K1, T01, rel_tol=rel_tol)
        agrees = np.zeros((h, w), bool)
        agrees[conv.ys[conv.ok], conv.xs[conv.ok]] = True
        hit += int((agrees & covisible).sum())
    return hit / total


def assert_coarse_ground_truth_is_the_renderers(out: Path, seq: ts.RenderedSequence) -> None:
    """The coarse ground truth of every converted pair, as the loader serves it, equals the one
    built from the renderer's own depth (float), intrinsics and poses, but for matches whose
    warp TUM's depth steps move to the next cell."""
    n_pairs = differ = matches = 0
    for npz in scene_infos(out):
        ds = MegaDepthDataset(out, npz, mode="train", min_overlap_score=0.0, img_resize=160, df=8)
        for item in ds:
            a, b = (tum_frame(n) for n in item["pair_names"])
            batch = default_collate([item])
            ref = dict(batch)
            T = relative_pose(seq.poses[a], seq.poses[b])
            ref["K0"] = ref["K1"] = torch.from_numpy(ts.K).float()[None]
            ref["T_0to1"] = torch.from_numpy(T).float()[None]
            ref["T_1to0"] = torch.from_numpy(np.linalg.inv(T)).float()[None]
            for key, i in (("depth0", a), ("depth1", b)):
                padded, _ = pad_bottom_right(seq.depths[i], DEPTH_PAD_SIZE)
                ref[key] = torch.from_numpy(padded)[None]
            compute_supervision_coarse(batch, {"resolution": [8, 2]})
            compute_supervision_coarse(ref, {"resolution": [8, 2]})
            converted, truth = batch["conf_matrix_gt"], ref["conf_matrix_gt"]
            assert converted.sum() > 0
            differ += int((converted != truth).sum())
            matches += int(truth.sum())
            n_pairs += 1
    assert n_pairs > 10
    # depth stored in 1/5000 m steps may move a warped point across a coarse cell's edge: one
    # match in the 2,000 of this sequence
    assert differ <= 0.005 * matches


def assert_frames_are_the_renderers(
    out: Path,
    info: dict,
    seq: ts.RenderedSequence,
    frame_of: Callable[[str], int],
    pose_atol: float,
    depth_step: float,
) -> None:
    """Every frame of scene info ``info``: its pose is the rendered one within ``pose_atol``, its
    intrinsics are the fixture's, and its written depth is valid where the rendered one is and
    within ``depth_step`` metres of it."""
    for path, pose, K in zip(info["image_paths"], info["poses"], info["intrinsics"], strict=True):
        i = frame_of(path)
        np.testing.assert_allclose(pose, seq.poses[i], atol=pose_atol)
        np.testing.assert_array_equal(K, ts.K)
        depth = read_megadepth_depth(
            out / Path(path.replace("/images/", "/depths/")).with_suffix(".h5")
        )
        assert np.array_equal(depth > 0, seq.depths[i] > 0)
        assert np.abs(depth - seq.depths[i]).max() <= depth_step


def test_tum_sequence_round_trip(tmp_path: Path, seq: ts.RenderedSequence) -> None:
    """Association within --max-dt (a depth frame 21 ms away is refused, 19 ms is kept), the
    quaternion order and pose direction (warps and coarse ground truth reproduce the truth),
    depth in 1/5000 m."""
    root = ts.write_tum(tmp_path / "seq", seq, depth_offsets={3: 0.021, 5: 0.019})
    out = tmp_path / "out"
    report = convert(root, out, "--keyframe-overlap", "1")
    assert report["refused"] == {"no depth frame within --max-dt 0.02 s": 1}
    assert report["images"] == N_FRAMES - 1 and report["keyframes"] == N_FRAMES - 1
    assert report["source"] == "rgbd (tum)" and report["name"] == "seq"
    info = load_scene_info(scene_infos(out)[0])
    written = sorted(tum_frame(p) for p in info["image_paths"])
    assert written == [i for i in range(N_FRAMES) if i != 3]
    assert warp_agreement(out, seq) >= 0.99
    assert_coarse_ground_truth_is_the_renderers(out, seq)
    # TUM's depth in 1/5000 m steps
    assert_frames_are_the_renderers(out, info, seq, tum_frame, 1e-6, 0.5 / 5000 + 1e-6)


@pytest.mark.parametrize("fault", ["wxyz", "inverted"])
def test_wrong_quaternion_order_or_pose_direction_fails_the_check(
    tmp_path: Path, seq: ts.RenderedSequence, fault: str
) -> None:
    """The reprojection check has teeth: COLMAP's w x y z order, or world-to-camera poses
    written where TUM has camera-to-world, give warps that miss the other view."""
    if fault == "wxyz":
        root = ts.write_tum(tmp_path / "seq", seq, quaternion_order="wxyz")
    else:
        root = ts.write_tum(tmp_path / "seq", seq, invert_pose=True)
    out = tmp_path / "out"
    convert(root, out, "--keyframe-overlap", "1")  # some pairs still score inside the bins
    assert warp_agreement(out, seq) < 0.5


def test_quaternion_is_read_x_y_z_w() -> None:
    """90 degrees about z, written x y z w = (0, 0, sin 45, cos 45): x goes to y."""
    s = np.sqrt(0.5)
    expected = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(rgbd_layouts.quaternion_matrix(0.0, 0.0, s, s), expected, atol=1e-12)


def test_association_rule() -> None:
    """Nearest depth and pose within max_dt, worked by hand; a depth frame serves one rgb frame."""
    rgb = np.array([10.000, 10.100, 10.200, 10.300, 10.400, 10.410])
    depth = np.array([10.005, 10.119, 10.221, 10.290, 10.310, 10.404])
    pose = np.array([10.000, 10.100, 10.200, 10.405])
    depth_idx, pose_idx, reasons = rgbd_layouts.associate(rgb, depth, pose, 0.02)
    # 19 ms is in, 21 ms out; 10.300 has depth (a 10 ms tie: the earlier) but no pose; 10.404
    # is nearer 10.400 (4 ms) than 10.410 (6 ms)
    assert depth_idx.tolist() == [0, 1, -1, -1, 5, -1]
    assert pose_idx.tolist() == [0, 1, -1, -1, 3, -1]
    assert reasons == [
        None,
        None,
        "no depth frame within --max-dt 0.02 s",
        "no pose within --max-dt 0.02 s",
        None,
        "depth frame taken by a nearer rgb frame",
    ]


def test_distortion_refused_without_coefficients_and_removed_with_them(
    tmp_path: Path, seq: ts.RenderedSequence
) -> None:
    root = ts.write_tum(tmp_path / "rgbd_dataset_freiburg1_synthetic", seq, distortion=DISTORTION)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="distorted.*--distortion.*camera-calibration page"):
        convert(root, out)
    assert not out.exists()

    option = ",".join(str(c) for c in DISTORTION)
    report = convert(root, out, f"--distortion={option}", "--keyframe-overlap", "1")
    assert report["undistorted"] and report["images"] == N_FRAMES
    info = load_scene_info(scene_infos(out)[0])
    for path in info["image_paths"][:3]:
        i = tum_frame(path)
        converted = read_gray(out / path).astype(np.float32)
        distorted = read_gray(root / "rgb" / Path(path).name).astype(np.float32)
        truth = seq.images[i].astype(np.float32)
        # the corners, where the distortion moves pixels most (several pixels); the converted
        # image must sit on the pinhole render (sub-pixel shift) where the distorted one does not
        for y, x in ((0, 0), (0, 112), (72, 0), (72, 112)):
            window = np.s_[y : y + 48, x : x + 48]
            shift, _ = cv2.phaseCorrelate(truth[window], converted[window])
            assert np.hypot(*shift) < 0.5, (path, (y, x), shift)
            error = np.abs(converted[window] - truth[window]).mean()
            assert error < 0.5 * np.abs(distorted[window] - truth[window]).mean()
    # the fixture's depth went through nearest resampling twice (distorted, then back): a pixel
    # may hold its neighbour's depth, so warps are checked to 5 % here
    assert warp_agreement(out, seq, rel_tol=0.05) >= 0.99


def test_keyframes_by_overlap_and_by_baseline(tmp_path: Path, seq: ts.RenderedSequence) -> None:
    """Greedy along the sequence: a frame becomes a keyframe when its overlap with the last
    keyframe drops below the step, or when it moved/turned the baseline from it."""
    root = ts.write_tum(tmp_path / "seq", seq)

    def expected(is_new) -> list[int]:
        keys = [0]
        for i in range(1, len(seq)):
            if is_new(keys[-1], i):
                keys.append(i)
        return keys

    def by_overlap(a: int, b: int) -> bool:
        T = relative_pose(seq.poses[a], seq.poses[b])
        return overlap_score(seq.depths[a], seq.depths[b], ts.K, ts.K, T) < 0.7

    def by_baseline(a: int, b: int) -> bool:
        T = relative_pose(seq.poses[a], seq.poses[b])
        centres = [np.linalg.inv(seq.poses[k])[:3, 3] for k in (a, b)]
        angle = np.degrees(np.arccos(np.clip((np.trace(T[:3, :3]) - 1) / 2, -1, 1)))
        return np.linalg.norm(centres[1] - centres[0]) >= 0.4 or angle >= 25

    for options, rule in (
        (("--keyframe-overlap", "0.7"), by_overlap),
        (("--keyframe-baseline", "0.4,25"), by_baseline),
    ):
        out = tmp_path / f"out-{options[0]}"
        report = convert(root, out, *options)
        keys = expected(rule)
        assert 2 < len(keys) < N_FRAMES, keys  # the steps choose, not take all or one
        assert report["keyframes"] == len(keys)
        assert report["skipped_between_keyframes"] == N_FRAMES - len(keys)
        info = load_scene_info(scene_infos(out)[0])
        assert sorted(tum_frame(p) for p in info["image_paths"]) == keys


def test_baseline_step_counts_metres_and_degrees() -> None:
    """Hand-made poses: the baseline rule takes the centre's distance and the relative rotation's
    angle, either one enough."""
    rule = rgbd_frames.KeyframeRule(baseline=rgbd.parse_baseline("1.0,20"))
    depth = np.ones((4, 4), np.float32)
    last = rgbd_frames.KeptFrame(depth, ts.K, np.eye(4))

    def pose(degrees: float, along_x: float) -> np.ndarray:
        """World-to-camera pose of a camera turned about y and moved along x (camera-to-world)."""
        c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        c2w = np.eye(4)
        c2w[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        c2w[0, 3] = along_x
        return np.linalg.inv(c2w)

    assert not rule.is_new(last, depth, ts.K, pose(19.0, 0.0))
    assert rule.is_new(last, depth, ts.K, pose(21.0, 0.0))
    assert not rule.is_new(last, depth, ts.K, pose(0.0, 0.99))
    assert rule.is_new(last, depth, ts.K, pose(0.0, 1.01))
    assert rule.is_new(last, depth, ts.K, pose(-21.0, 0.5))  # the sign of the turn does not matter


@pytest.mark.parametrize("npy_depth", [False, True])
def test_folder_layout(tmp_path: Path, seq: ts.RenderedSequence, npy_depth: bool) -> None:
    """color/, depth/ (16-bit millimetres, or .npy metres), poses.txt, K.txt (one matrix or one
    line per frame) give the same ground truth."""
    root = ts.write_folder(tmp_path / "room", seq, npy_depth=npy_depth, per_frame_k=npy_depth)
    out = tmp_path / "out"
    report = convert(root, out, "--keyframe-overlap", "1", fmt="folder")
    assert report["images"] == N_FRAMES and report["name"] == "room"
    info = load_scene_info(scene_infos(out)[0])
    step = 0.0 if npy_depth else 0.5 / 1000 + 1e-6  # .npy metres, or millimetre steps
    assert_frames_are_the_renderers(out, info, seq, folder_frame, 1e-9, step)
    assert warp_agreement(out, seq, folder_frame) >= 0.99


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _drop(path: Path) -> None:
    path.unlink()


def _garble(path: Path) -> None:
    path.write_bytes(b"not a png")


def _shrink(path: Path) -> None:
    assert cv2.imwrite(str(path), np.full((60, 80), 5000, np.uint16))


def _repeat_first_line(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines, lines[0]]))


def _nth(root: Path, folder: str, n: int = 2) -> Path:
    return sorted((root / folder).iterdir())[n]


# (case, layout, how the fixture is spoiled, extra options, what the message must name)
BAD_INPUT = [
    ("no groundtruth.txt", "tum", lambda r: _drop(r / "groundtruth.txt"), (), "groundtruth.txt"),
    ("never associate", "tum", None, ("--max-dt", "0.001"), "no rgb frame associates"),
    ("intrinsics string", "tum", None, ("--intrinsics", "120,121,x"), "--intrinsics"),
    ("focal length", "tum", None, ("--intrinsics", "0,121,79,59"), "focal lengths"),
    ("image missing", "tum", lambda r: _drop(_nth(r, "rgb")), (), "rgb.txt: image"),
    ("corrupt depth", "tum", lambda r: _garble(_nth(r, "depth")), (), "depth map"),
    ("depth size", "tum", lambda r: _shrink(_nth(r, "depth")), (), "registered pixel for pixel"),
    ("no poses.txt", "folder", lambda r: _drop(r / "poses.txt"), (), "poses.txt"),
    ("pose twice", "folder", lambda r: _repeat_first_line(r / "poses.txt"), (), "'0000' has a"),
    ("K.txt", "folder", lambda r: (r / "K.txt").write_text("1 2\n"), (), "K.txt"),
]


@pytest.mark.parametrize(
    ("layout", "spoil", "options", "named"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_is_one_line_and_leaves_out_as_it_was(
    tmp_path: Path, seq: ts.RenderedSequence, capsys, layout, spoil, options, named
) -> None:
    root = tmp_path / "seq"
    if layout == "tum":
        # the depth frames lie 8 ms from the rgb ones: outside a 1 ms --max-dt
        ts.write_tum(root, seq, depth_offsets=dict.fromkeys(range(len(seq)), 0.008))
    else:
        ts.write_folder(root, seq)
    if spoil is not None:
        spoil(root)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a file of the user's\n")
    before = listing(out)
    argv = ["rgbd", "--format", layout, "--root", str(root), "--out", str(out), *options]
    if layout == "tum" and "--intrinsics" not in options:
        argv += ["--intrinsics", ts.intrinsics_option()]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert named in err
    assert listing(out) == before


def test_frames_without_enough_depth_are_refused(tmp_path: Path, seq: ts.RenderedSequence) -> None:
    root = ts.write_tum(tmp_path / "seq", seq)
    depths = sorted((root / "depth").iterdir())
    assert cv2.imwrite(str(depths[1]), np.zeros((ts.HEIGHT, ts.WIDTH), np.uint16))
    sparse = np.zeros((ts.HEIGHT, ts.WIDTH), np.uint16)
    sparse[:10] = 10000  # 2 m on 10 of 120 rows: 8 % of the pixels
    assert cv2.imwrite(str(depths[2]), sparse)
    report = convert(root, tmp_path / "out", "--keyframe-overlap", "1")
    assert report["refused"] == {"no valid depth": 1, "valid depth below --min-depth-fraction": 1}
    assert report["images"] == N_FRAMES - 2


def test_downscaled_frames_keep_their_geometry(tmp_path: Path, seq: ts.RenderedSequence) -> None:
    """--max-size 80 writes 80x60 frames whose intrinsics, depth and central matches agree: the
    central match of every pair lands, through the written depth and pose, where it says."""
    root = ts.write_tum(tmp_path / "seq", seq)
    out = tmp_path / "out"
    convert(root, out, "--keyframe-overlap", "1", "--max-size", "80")
    checked = 0
    for npz in scene_infos(out):
        info = load_scene_info(npz)
        np.testing.assert_allclose(info["intrinsics"][0][:2], ts.K[:2] / 2 - [[0, 0, 0.25]] * 2)
        ds = MegaDepthDataset(out, npz, mode="train", min_overlap_score=0.0, img_resize=80, df=8)
        for item, (_, _, central) in zip(ds, ds.pair_infos, strict=True):
            d0, d1 = (item[k][:60, :80].numpy() for k in ("depth0", "depth1"))
            K0, K1, T = (item[k].numpy().astype(np.float64) for k in ("K0", "K1", "T_0to1"))
            x0, y0, x1, y1 = central
            r = reproject(d0, d1, K0, K1, T)
            at = np.flatnonzero((r.xs == x0) & (r.ys == y0))
            assert len(at) == 1 and r.ok[at[0]]
            assert abs(r.u[at[0]] - x1) < 1e-3 and abs(r.v[at[0]] - y1) < 1e-3
            checked += 1
    assert checked > 5
