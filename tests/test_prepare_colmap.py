"""The COLMAP converter (docs/prepare.md#colmap-reconstructions) on a synthetic plaza written as a
COLMAP workspace (tests/helpers/colmap_scene.py): the converted scene, read by the MegaDepth
loader, gives the renderer's own geometry and ground truth; its overlap scores rank pairs as the
true co-visible fraction does; bad input fails in one line naming the culprit and leaves --out
as it was."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from loftr.data.covisibility import overlap_score, relative_pose
from loftr.data.megadepth import DEPTH_PAD_SIZE, MegaDepthDataset, pad_bottom_right
from loftr.data.prepare.__main__ import main
from loftr.data.prepare.colmap import camera_matrix, overlap_scores, read_colmap_depth
from loftr.data.scene_info import OVERLAP_BINS, load_scene_info
from loftr.supervision import compute_supervision_coarse
from tests.helpers.colmap_scene import CAMERAS, write_colmap_array, write_colmap_scene
from tests.helpers.geometry import reprojection_agreement

pycolmap = pytest.importorskip("pycolmap")  # the [colmap] extra

N_FRAMES = 12
SCENE = "plaza"
CONFIG = {"resolution": [8, 2]}


def _convert(workspace, out: Path, *extra: str) -> dict:
    argv = ["colmap", "--model", str(workspace.model), "--images", str(workspace.images)]
    assert main([*argv, "--out", str(out), "--name", SCENE, *extra]) == 0
    return json.loads((out / "reports" / f"{SCENE}.json").read_text())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return write_colmap_scene(tmp_path_factory.mktemp("binary"), n_frames=N_FRAMES)


@pytest.fixture(scope="module")
def text_workspace(tmp_path_factory):
    return write_colmap_scene(tmp_path_factory.mktemp("text"), n_frames=N_FRAMES, text=True)


@pytest.fixture(scope="module")
def converted(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    return out, _convert(workspace, out)


def _infos(out: Path) -> dict[str, dict]:
    """Scene-info stem -> scene info, for every file of the prepared set."""
    folder = out / "index" / "scene_info"
    return {p.stem: load_scene_info(p) for p in sorted(folder.glob("*.npz"))}


def _truth(workspace, rel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The renderer's K, pose and depth of the frame written as ``scenes/<SCENE>/images/<rel>``."""
    i = workspace.names.index(rel)
    return workspace.K[i], workspace.poses[i], workspace.depths[i]


def _rel(path: str) -> str:
    return str(path).split(f"scenes/{SCENE}/images/", 1)[1]


# --- COLMAP's formats and conventions, worked by hand ---------------------------------------------


def test_depth_map_layout(tmp_path):
    # a 3x2 map: COLMAP writes "3&2&1&" then x fastest, row after row
    path = tmp_path / "a.jpg.geometric.bin"
    write_colmap_array(path, np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    raw = path.read_bytes()
    assert raw[:6] == b"3&2&1&"
    assert np.frombuffer(raw[6:], "<f4").tolist() == [1, 2, 3, 4, 5, 6]
    assert read_colmap_depth(path).tolist() == [[1, 2, 3], [4, 5, 6]]
    # no estimate (negative, nan) reads as 0
    write_colmap_array(path, np.array([[-1.0, np.nan], [np.inf, 2.0]]))
    assert read_colmap_depth(path).tolist() == [[0, 0], [0, 2]]


def test_principal_point_moves_to_integer_pixel_centres():
    # COLMAP's default principal point of a 160x120 image is (80, 60), the image centre with
    # pixel centres at .5; with centres at integers the centre is (79.5, 59.5).
    camera = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 100.0, 160, 120)
    assert camera.principal_point_x == 80.0
    K = camera_matrix(camera, "camera 1")
    np.testing.assert_array_equal(K, [[100, 0, 79.5], [0, 100, 59.5], [0, 0, 1]])


def test_the_report(converted, workspace):
    out, report = converted
    assert report["source"] == "colmap" and report["name"] == SCENE
    assert report["images"] == N_FRAMES and report["refused"] == {}
    assert report["cameras"] == len(CAMERAS) and report["registered_images"] == N_FRAMES
    assert report["points3D"] > 1000 and report["depth_source"] == "geometric"
    assert report["downscaled_to_depth"] == len(workspace.downscaled)
    assert report["pairs_considered"] <= N_FRAMES * (N_FRAMES - 1) // 2
    assert 0.5 < report["depth_coverage"]["mean"] <= 1
    assert (out / "index" / "train_list.txt").read_text().split() == sorted(_infos(out))


# --- the converted scene is the rendered one ----------------------------------------------------


def test_frames_carry_the_renderers_geometry(converted, workspace):
    out, _ = converted
    for info in _infos(out).values():
        paths = zip(info["image_paths"], info["depth_paths"], strict=True)
        for k, (image, depth) in enumerate(paths):
            K, pose, true_depth = _truth(workspace, _rel(image))
            np.testing.assert_allclose(info["intrinsics"][k], K, atol=1e-9)
            np.testing.assert_allclose(info["poses"][k], pose, atol=1e-9)
            with h5py.File(out / depth) as f:
                np.testing.assert_array_equal(f["depth"][()], true_depth)
            if workspace.names.index(_rel(image)) not in workspace.downscaled:  # copied as is
                source = workspace.images / _rel(image)
                assert (out / image).read_bytes() == source.read_bytes()


def _pairs(out: Path):
    """Every written pair as the MegaDepth loader serves it, with its scene info."""
    for stem in _infos(out):
        npz = out / "index" / "scene_info" / f"{stem}.npz"
        dataset = MegaDepthDataset(out, npz, "train", 0.0, img_resize=160)
        for idx in range(len(dataset)):
            yield dataset[idx]


def test_warps_and_coarse_ground_truth_match_the_renderer(converted, workspace):
    """Every written pair as the loader serves it: image-0 pixels warped through the converted
    depth, intrinsics and pose land where image 1's depth agrees within 1 % (pooled over the
    pairs; co-visible and resolved as ``reprojection_agreement`` defines them), and the coarse
    ground truth equals the one built from the renderer's own depth, intrinsics and poses."""
    out, _ = converted
    agree = covisible = n_pairs = 0
    for item in _pairs(out):
        n_pairs += 1
        (K0, P0, D0), (K1, P1, D1) = (_truth(workspace, _rel(name)) for name in item["pair_names"])
        d0 = item["depth0"].numpy()[: D0.shape[0], : D0.shape[1]]  # the loader pads to 2000
        d1 = item["depth1"].numpy()[: D1.shape[0], : D1.shape[1]]
        share, count = reprojection_agreement(
            d0, d1, item["K0"].numpy(), item["K1"].numpy(), item["T_0to1"].double().numpy(),
            tol=0.01,
        )  # fmt: skip
        agree += share * count
        covisible += count

        batch = default_collate([item])
        ref = dict(batch)
        T_0to1 = relative_pose(P0, P1)
        ref["K0"] = torch.from_numpy(K0).float()[None]
        ref["K1"] = torch.from_numpy(K1).float()[None]
        ref["T_0to1"] = torch.from_numpy(T_0to1).float()[None]
        ref["T_1to0"] = torch.from_numpy(np.linalg.inv(T_0to1)).float()[None]
        ref["depth0"] = torch.from_numpy(pad_bottom_right(D0, DEPTH_PAD_SIZE)[0])[None]
        ref["depth1"] = torch.from_numpy(pad_bottom_right(D1, DEPTH_PAD_SIZE)[0])[None]
        compute_supervision_coarse(batch, CONFIG)
        compute_supervision_coarse(ref, CONFIG)
        assert torch.equal(batch["conf_matrix_gt"], ref["conf_matrix_gt"]), item["pair_names"]
        assert batch["conf_matrix_gt"].sum() > 0
    assert n_pairs > 20 and covisible > 100_000
    assert agree / covisible >= 0.99


@pytest.mark.parametrize("max_size", [None, 100])
def test_central_matches_are_in_the_written_pixels(workspace, tmp_path, max_size):
    """A pair's central match is one of its shared 3D points projected into both written images
    (through the written intrinsics and poses, also when --max-size downscales the frames), the
    one nearest the shared points' centroid in image 0."""
    extra = () if max_size is None else ("--max-size", str(max_size))
    _convert(workspace, tmp_path, *extra)
    rec = pycolmap.Reconstruction(str(workspace.model))
    by_name = {im.name: im for im in rec.images.values()}
    n_pairs = 0
    for info in _infos(tmp_path).values():
        Ks, poses = info["intrinsics"], info["poses"]
        if max_size is not None:  # 160x120 -> 100x75 (fx 112 -> 70), 128x96 -> 100x75 (96 -> 75)
            assert Ks[:, 0, 0].max() == pytest.approx(75)
        for (i, j), _overlap, match in info["pair_infos"]:
            images = [by_name[_rel(info["image_paths"][k])] for k in (i, j)]
            ids = [{p.point3D_id for p in im.points2D if p.has_point3D()} for im in images]
            xyz = np.array([rec.points3D[p].xyz for p in sorted(ids[0] & ids[1])])
            pix = []
            for k in (i, j):
                cam = xyz @ poses[k][:3, :3].T + poses[k][:3, 3]
                proj = cam @ Ks[k].T
                pix.append(proj[:, :2] / proj[:, 2:])
            nearest = np.argmin(((pix[0] - pix[0].mean(axis=0)) ** 2).sum(axis=1))
            np.testing.assert_allclose(match, [*pix[0][nearest], *pix[1][nearest]], atol=1e-6)
            n_pairs += 1
    assert n_pairs > 20


# --- overlap scores and bins ------------------------------------------------------------------


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their mean rank (Spearman's convention)."""
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    for v in np.unique(values):
        ranks[values == v] = ranks[values == v].mean()
    return ranks


def _spearman(a, b) -> float:
    return float(np.corrcoef(_ranks(np.asarray(a)), _ranks(np.asarray(b)))[0, 1])


def test_overlap_scores_track_the_covisible_fraction(converted, workspace):
    rec = pycolmap.Reconstruction(str(workspace.model))
    by_name = {im.name: im for im in rec.images.values()}
    ids = [
        np.unique([p.point3D_id for p in by_name[name].points2D if p.has_point3D()])
        for name in workspace.names
    ]
    pairs, scores = overlap_scores(ids)
    score = {(int(i), int(j)): s for (i, j), s in zip(pairs, scores, strict=True)}
    estimated, true = [], []
    for i, j in itertools.combinations(range(N_FRAMES), 2):
        estimated.append(score.get((i, j), 0.0))
        T = relative_pose(workspace.poses[i], workspace.poses[j])
        K0, K1, D0, D1 = workspace.K[i], workspace.K[j], workspace.depths[i], workspace.depths[j]
        true.append(overlap_score(D0, D1, K0, K1, T, stride=2))
    assert _spearman(estimated, true) >= 0.9

    # the written pairs carry these scores
    out, _ = converted
    for info in _infos(out).values():
        for (i, j), overlap, _ in info["pair_infos"]:
            a = workspace.names.index(_rel(info["image_paths"][i]))
            b = workspace.names.index(_rel(info["image_paths"][j]))
            assert overlap == pytest.approx(score[min(a, b), max(a, b)])


def test_bins_hold_the_pairs_they_claim(converted):
    out, report = converted
    infos = _infos(out)
    counts = {}
    for lo, hi in OVERLAP_BINS:
        stem = f"{SCENE}_{lo}_{hi}"
        overlaps = [overlap for _, overlap, _ in infos[stem]["pair_infos"]] if stem in infos else []
        assert all(lo <= v < hi for v in overlaps), stem
        counts[f"{lo}-{hi}"] = len(overlaps)
    assert counts == report["pairs_per_bin"]
    assert sum(counts.values()) == report["pairs_written"] > 20


def test_text_and_binary_models_convert_alike(converted, text_workspace, tmp_path):
    out, _ = converted
    _convert(text_workspace, tmp_path)
    binary, text = _infos(out), _infos(tmp_path)
    assert binary.keys() == text.keys()
    for stem in binary:
        a, b = binary[stem], text[stem]
        assert list(a["image_paths"]) == list(b["image_paths"])
        np.testing.assert_allclose(a["intrinsics"], b["intrinsics"], atol=1e-12)
        np.testing.assert_allclose(a["poses"], b["poses"], atol=1e-12)
        assert [p[:2] for p in a["pair_infos"]] == [p[:2] for p in b["pair_infos"]]


def test_photometric_depth_maps(text_workspace, tmp_path, capsys):
    root = tmp_path / "ws"
    shutil.copytree(text_workspace.root, root)
    for path in (root / "stereo" / "depth_maps").rglob("*.geometric.bin"):
        path.rename(path.with_name(path.name.replace(".geometric.", ".photometric.")))
    argv = ["colmap", "--model", str(root / "sparse"), "--images", str(root / "images")]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "no dense depth maps (*.geometric.bin)" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "b"), "--photometric"]) == 0
    report = json.loads((tmp_path / "b" / "reports" / "ws.json").read_text())
    assert report["depth_source"] == "photometric" and report["images"] == N_FRAMES


def test_images_without_points_or_depth_are_refused_and_counted(text_workspace, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(text_workspace.root, root)
    rec = pycolmap.Reconstruction(str(root / "sparse"))
    lonely = next(im for im in rec.images.values() if im.name == "cam2/0003.jpg")
    for idx, point in enumerate(lonely.points2D):
        if point.has_point3D():
            rec.delete_observation(lonely.image_id, idx)
    rec.write_text(str(root / "sparse"))
    write_colmap_array(root / "stereo/depth_maps/cam1/0006.jpg.geometric.bin", np.zeros((120, 160)))
    argv = ["colmap", "--model", str(root / "sparse"), "--images", str(root / "images")]
    # elsewhere: --depth names the workspace or its depth_maps folder
    shutil.move(root / "stereo", tmp_path / "dense" / "stereo")
    for depth in (tmp_path / "dense", tmp_path / "dense" / "stereo" / "depth_maps"):
        out = tmp_path / depth.name
        assert main([*argv, "--out", str(out), "--name", SCENE, "--depth", str(depth)]) == 0
        report = json.loads((out / "reports" / f"{SCENE}.json").read_text())
        assert report["images"] == N_FRAMES - 2
        assert report["refused"] == {
            "observes no 3D point": 1,
            "depth map without a valid pixel": 1,
        }
        assert report["refused_examples"]["observes no 3D point"] == ["cam2/0003.jpg"]
        written = {_rel(p) for info in _infos(out).values() for p in info["image_paths"]}
        assert not written & {"cam2/0003.jpg", "cam1/0006.jpg"}


# --- bad input: one line naming the culprit, --out untouched ---------------------------------


def _distorted(root: Path) -> str:
    cameras = root / "sparse" / "cameras.txt"
    lines = cameras.read_text().splitlines()
    lines = [
        "2 OPENCV 128 96 96 96 63.6 48.4 0.01 0 0 0" if line.startswith("2 ") else line
        for line in lines
    ]
    cameras.write_text("\n".join(lines) + "\n")
    return "OPENCV"


def _no_depth(root: Path) -> str:
    shutil.rmtree(root / "stereo")
    return "sparse 3D points alone"


def _one_depth_missing(root: Path) -> str:
    (root / "stereo" / "depth_maps" / "cam2" / "0003.jpg.geometric.bin").unlink()
    return "image cam2/0003.jpg has no depth map:"


def _odd_depth_size(root: Path) -> str:
    write_colmap_array(
        root / "stereo" / "depth_maps" / "cam1/0004.jpg.geometric.bin", np.ones((50, 100))
    )
    return "cam1/0004.jpg.geometric.bin is 100x50, neither its image's 160x120"


def _image_missing(root: Path) -> str:
    (root / "images" / "cam2" / "0005.jpg").unlink()
    return "lists image cam2/0005.jpg, but"


def _image_resized(root: Path) -> str:
    image = root / "images" / "cam1" / "0002.jpg"
    cv2.imwrite(str(image), cv2.resize(cv2.imread(str(image)), (80, 60)))
    return "cam1/0002.jpg is 80x60 but camera 1"


def _garbled_model(root: Path) -> str:
    (root / "sparse" / "cameras.txt").write_text("1 PINHOLE abc\n")
    return "sparse cannot be read"


def _empty(root: Path) -> str:
    shutil.rmtree(root / "sparse")
    (root / "sparse").mkdir()
    pycolmap.Reconstruction().write_text(str(root / "sparse"))
    return "empty reconstruction"


DAMAGES = [_distorted, _no_depth, _one_depth_missing, _odd_depth_size, _image_missing, _empty]


@pytest.mark.parametrize("damage", [*DAMAGES, _image_resized, _garbled_model])
def test_bad_input_fails_in_one_line(text_workspace, tmp_path, capsys, damage):
    root = tmp_path / "ws"
    shutil.copytree(text_workspace.root, root)
    culprit = damage(root)
    out = tmp_path / "out"
    (out / "reports").mkdir(parents=True)
    (out / "reports" / "other.json").write_text("{}")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    argv = ["colmap", "--model", str(root / "sparse"), "--images", str(root / "images")]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and culprit in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_distorted_camera_message_says_what_to_run(text_workspace, tmp_path, capsys):
    root = tmp_path / "ws"
    shutil.copytree(text_workspace.root, root)
    _distorted(root)
    argv = ["colmap", "--model", str(root / "sparse"), "--images", str(root / "images")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "camera 2" in err and "colmap image_undistorter" in err
    assert not (tmp_path / "out").exists()


def test_without_pycolmap_the_command_says_how_to_install_it(
    workspace, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(__import__("sys").modules, "pycolmap", None)
    argv = ["colmap", "--model", str(workspace.model), "--images", str(workspace.images)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "pip install -e '.[colmap]'" in capsys.readouterr().err


def test_the_scale_experiment_converts_its_generated_model(tmp_path):
    """experiments.colmap_scale on 30 cameras: each shares wall points with its 9 neighbours on
    either side (1 m seen, 0.1 m apart), so 30 * 9 - (1 + ... + 9) = 225 pairs are scored."""
    from experiments import colmap_scale

    root = colmap_scale.generate(tmp_path / "ws", 30, points_per_step=20)
    result = colmap_scale.measure(root, tmp_path / "prepared")
    assert result["images"] == 30 and result["pairs_considered"] == 225
    assert result["peak_rss_mib"] > 0 and result["pairs_per_second"] > 0
