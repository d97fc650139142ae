"""loftr.data.io: readers, the restricted scene-info unpickler, and their errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from loftr.data.io import (
    check_depth,
    check_matrix,
    image_size,
    load_intrinsics,
    load_scannet_pairs,
    read_gray,
    read_image,
    read_list,
    read_megadepth_depth,
    read_png_depth,
    read_pose,
    read_scannet_depth,
)
from loftr.data.scene_info import load_scene_info, save_scene_info_npz
from loftr.errors import DataError
from tests.helpers.datasets import write_image, write_megadepth_scene, write_scannet_index

# --- images -------------------------------------------------------------------------------


def test_read_gray_and_resize(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    image = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    cv2.imwrite(str(path), image)
    out = read_gray(path)
    assert out.dtype == np.uint8 and out.shape == (48, 64)
    np.testing.assert_array_equal(out, image)  # png: lossless
    small = read_gray(path, resize=(32, 24))  # (w, h)
    assert small.shape == (24, 32)
    np.testing.assert_array_equal(small, cv2.resize(image, (32, 24)))
    assert image_size(path) == (64, 48)


def test_read_gray_colour_jpg_is_grey(tmp_path: Path) -> None:
    write_image(tmp_path / "c.jpg", 20, 10)
    assert read_gray(tmp_path / "c.jpg").shape == (10, 20)
    assert image_size(tmp_path / "c.jpg") == (20, 10)


def test_read_gray_missing_corrupt_and_broken_symlink(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"image .*nope\.jpg does not exist"):
        read_gray(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"image .*bad\.jpg is corrupt"):
        read_gray(bad)
    link = tmp_path / "link.jpg"
    os.symlink(tmp_path / "gone.jpg", link)
    with pytest.raises(DataError, match=r"link\.jpg is a broken symlink \(-> .*gone\.jpg\)"):
        read_gray(link)


def test_read_image_keeps_grey_and_colour_drops_alpha_and_16_bits(tmp_path: Path) -> None:
    """What a converter resamples keeps its channels: grey stays (h, w), BGR stays BGR, an
    alpha channel goes, 16-bit samples keep their high byte (4660 = 0x1234 -> 0x12 = 18)."""
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    bgra = np.stack([grey, grey + 50, grey + 100, np.full_like(grey, 7)], axis=2)
    cases = {
        "grey.png": (grey, grey),
        "bgr.png": (bgra[..., :3], bgra[..., :3]),
        "bgra.png": (bgra, bgra[..., :3]),
        "sixteen.png": (np.full((3, 4), 4660, np.uint16), np.full((3, 4), 18, np.uint8)),
    }
    for name, (stored, expected) in cases.items():
        assert cv2.imwrite(str(tmp_path / name), stored)
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8, name
        np.testing.assert_array_equal(out, expected, err_msg=name)
    with pytest.raises(DataError, match=r"image .*nope\.png does not exist"):
        read_image(tmp_path / "nope.png")
    data = (tmp_path / "bgr.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 20])
    with pytest.raises(DataError, match=r"image .*cut\.png is truncated"):
        read_image(tmp_path / "cut.png")


# --- depth and poses ----------------------------------------------------------------------


def test_read_gray_refuses_truncated_jpg_and_png(tmp_path: Path) -> None:
    for name in ("a.jpg", "a.png"):
        write_image(tmp_path / name, 64, 48)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) - 20])
        with pytest.raises(DataError, match=rf"image .*{name} is truncated"):
            read_gray(tmp_path / name)


def test_check_matrix_and_check_depth() -> None:
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    np.testing.assert_array_equal(check_matrix(K.reshape(9), "K"), K)
    with pytest.raises(DataError, match=r"intrinsics of x in y is a singular matrix"):
        check_matrix(np.diag([500.0, 500.0, 0.0]), "intrinsics of x in y")
    with pytest.raises(DataError, match=r"pose p contains inf or nan"):
        check_matrix(np.full((4, 4), np.nan), "pose p", (4, 4))
    assert check_depth(np.array([[0.0, 1.5]]), "d.png").shape == (1, 2)
    with pytest.raises(DataError, match=r"depth map d.png has no valid pixel"):
        check_depth(np.array([[0.0, np.nan], [-1.0, np.inf]]), "d.png")


def test_scannet_depth_is_millimetres_to_metres(tmp_path: Path) -> None:
    depth = np.array([[0, 1000], [1500, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), depth)
    out = read_scannet_depth(tmp_path / "d.png")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 1.0], [1.5, 65.535]], rtol=1e-6)


def test_png_depth_divides_by_its_scale_and_names_a_missing_file(tmp_path: Path) -> None:
    """TUM's 5000 units per metre: 5000 -> 1 m, 12345 -> 2.469 m."""
    cv2.imwrite(str(tmp_path / "d.png"), np.array([[0, 5000, 12345]], dtype=np.uint16))
    out = read_png_depth(tmp_path / "d.png", 5000.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 1.0, 2.469]], rtol=1e-6)
    with pytest.raises(DataError, match=r"depth map .*gone\.png does not exist"):
        read_png_depth(tmp_path / "gone.png", 5000.0)
    cv2.imwrite(str(tmp_path / "d8.png"), np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"d8\.png has dtype uint8.*expected a single-channel 16"):
        read_png_depth(tmp_path / "d8.png", 5000.0)


def test_scannet_depth_rejects_8bit_and_corrupt(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "d8.png"), np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"d8\.png has dtype uint8.*uint16"):
        read_scannet_depth(tmp_path / "d8.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"depth map .*bad\.png is corrupt"):
        read_scannet_depth(tmp_path / "bad.png")


def test_megadepth_depth_h5(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("depth", data=np.array([[1.0, 2.5], [0.0, 3.0]], dtype=np.float64))
    out = read_megadepth_depth(tmp_path / "d.h5")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 2.5], [0.0, 3.0]])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("z", data=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"other\.h5 has no 'depth' dataset"):
        read_megadepth_depth(tmp_path / "other.h5")
    (tmp_path / "bad.h5").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"bad\.h5 is corrupt or not an HDF5 file"):
        read_megadepth_depth(tmp_path / "bad.h5")


def test_read_pose(tmp_path: Path) -> None:
    pose = np.array([[0, -1, 0, 1.5], [1, 0, 0, -2], [0, 0, 1, 0.25], [0, 0, 0, 1]], float)
    np.savetxt(tmp_path / "p.txt", pose)
    np.testing.assert_array_equal(read_pose(tmp_path / "p.txt"), pose)
    (tmp_path / "short.txt").write_text("1 0 0\n0 1 0\n0 0 1\n")
    with pytest.raises(DataError, match=r"short\.txt holds 9 numbers"):
        read_pose(tmp_path / "short.txt")
    (tmp_path / "inf.txt").write_text("-inf " * 16)
    with pytest.raises(DataError, match=r"inf\.txt contains inf"):
        read_pose(tmp_path / "inf.txt")


# --- list files and ScanNet indices -------------------------------------------------------


def test_read_list_first_token(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("scene0000_00.npz 12\n\n  scene0001_00.npz\tfoo bar\n0015_0.1_0.3\n")
    assert read_list(path) == ["scene0000_00.npz", "scene0001_00.npz", "0015_0.1_0.3"]


def test_read_list_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=r"list file .*empty\.txt is empty; do X"):
        read_list(tmp_path / "empty.txt", hint="do X")
    with pytest.raises(DataError, match=r"list file .*none\.txt does not exist; extract it"):
        read_list(tmp_path / "none.txt", hint="extract it")


def test_load_scannet_pairs(tmp_path: Path) -> None:
    path = write_scannet_index(tmp_path / "s.npz", [(0, 0, 0, 10), (0, 0, 10, 20)], [0.5, 0.25])
    names, scores = load_scannet_pairs(path)
    assert names.shape == (2, 4) and names.dtype == np.uint16
    np.testing.assert_allclose(scores, [0.5, 0.25])
    path = write_scannet_index(tmp_path / "t.npz", [(707, 0, 0, 15)], None)
    assert load_scannet_pairs(path)[1] is None  # the ScanNet-1500 test.npz has no score


def test_load_scannet_pairs_missing_key_names_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "wrong.npz", pairs=np.zeros((2, 4)))
    with pytest.raises(DataError, match=r"wrong\.npz has no 'name' array \(keys: \['pairs'\]\)"):
        load_scannet_pairs(tmp_path / "wrong.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"bad\.npz is corrupt"):
        load_scannet_pairs(tmp_path / "bad.npz")


def test_load_intrinsics_vectors_and_matrices(tmp_path: Path) -> None:
    k = np.array([[577.87, 0, 319.5], [0, 577.87, 239.5], [0, 0, 1]])
    np.savez(tmp_path / "k.npz", scene0000_00=k.reshape(9), scene0707_00=k)
    out = load_intrinsics(tmp_path / "k.npz")
    assert set(out) == {"scene0000_00", "scene0707_00"}
    np.testing.assert_array_equal(out["scene0000_00"], k)
    np.testing.assert_array_equal(out["scene0707_00"], k)


# --- MegaDepth scene infos ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_scene_info_pickle_roundtrip(tmp_path: Path, protocol: int) -> None:
    info = write_megadepth_scene(tmp_path / "root", tmp_path / "s.npz", protocol=protocol)
    loaded = load_scene_info(tmp_path / "s.npz")
    assert list(loaded["image_paths"]) == list(info["image_paths"])
    assert loaded["image_paths"][-1] is None
    np.testing.assert_array_equal(loaded["poses"], info["poses"])
    assert [(p[0], float(p[1])) for p in loaded["pair_infos"]] == [
        ((0, 1), 0.5),
        ((1, 2), 0.2),
        ((0, 2), 0.0),
    ]


def test_scene_info_npz_zip_without_pickle(tmp_path: Path) -> None:
    info = write_megadepth_scene(tmp_path / "root", tmp_path / "s.npz")
    out = save_scene_info_npz(info, tmp_path / "converted.npz")
    assert out.read_bytes()[:4] == b"PK\x03\x04"
    loaded = load_scene_info(out)
    assert list(loaded["image_paths"]) == list(info["image_paths"])  # "" -> None again
    np.testing.assert_array_equal(loaded["intrinsics"], info["intrinsics"])
    assert [(p[0], p[1]) for p in loaded["pair_infos"]] == [
        ((0, 1), 0.5),
        ((1, 2), 0.2),
        ((0, 2), 0.0),
    ]


class _Payload:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (os.system, (f"touch {self.marker}",))


class _WriteFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("payload", [_Payload, _WriteFile])
def test_scene_info_pickle_with_callable_is_refused_and_never_runs(
    tmp_path: Path, payload: type
) -> None:
    marker = tmp_path / "marker"
    evil = {"image_paths": np.array(["a.jpg"], dtype=object), "x": payload(marker)}
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(DataError, match=r"evil\.npz refers to the global (posix|os|pathlib)\S*"):
        load_scene_info(path)
    assert not marker.exists()


def test_scene_info_refuses_builtins_eval(tmp_path: Path) -> None:
    # GLOBAL builtins.eval + REDUCE, written by hand (pickle protocol 0).
    path = tmp_path / "eval.npz"
    marker = tmp_path / "marker"
    code = f"open({str(marker)!r}, 'w').write('x')"
    path.write_bytes(b"\x80\x02cbuiltins\neval\n(V" + code.encode() + b"\ntR.")
    with pytest.raises(DataError, match=r"eval\.npz refers to the global builtins\.eval"):
        load_scene_info(path)
    assert not marker.exists()


def test_scene_info_corrupt_and_missing_keys(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"hello")
    with pytest.raises(DataError, match=r"junk\.npz is neither a pickled dict nor an npz zip"):
        load_scene_info(tmp_path / "junk.npz")
    (tmp_path / "trunc.npz").write_bytes(pickle.dumps({"a": np.zeros(3)}, protocol=4)[:-10])
    with pytest.raises(DataError, match=r"trunc\.npz is corrupt"):
        load_scene_info(tmp_path / "trunc.npz")
    (tmp_path / "part.npz").write_bytes(pickle.dumps({"poses": np.zeros((1, 4, 4))}, protocol=4))
    with pytest.raises(DataError, match=r"part\.npz lacks the key\(s\) \['image_paths'"):
        load_scene_info(tmp_path / "part.npz")
    with pytest.raises(DataError, match=r"scene info .*absent\.npz does not exist; run step"):
        load_scene_info(tmp_path / "absent.npz", hint="run step")
