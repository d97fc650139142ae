"""ScanNet pairs in the original LoFTR layout and item format (docs/original.md#scannet).

One dataset per scene index (``.npz`` with ``name`` rows ``[scene, sub_scene, frame0, frame1]``
and ``score``). Images come from ``<root>/<scene>/color/<id>.jpg`` (python SensReader export),
depth from ``depth/<id>.png`` (uint16 mm), camera-to-world poses from ``pose/<id>.txt``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from loftr.data.io import (
    check_depth,
    check_dir,
    check_file,
    check_matrix,
    load_intrinsics,
    load_scannet_pairs,
    read_gray,
    read_pose,
    read_scannet_depth,
)
from loftr.data.layout import setup_hint
from loftr.errors import ConfigError, DataError

MODES = ("train", "val", "test")

# The resolution of ScanNet's depth maps, which its (depth) intrinsics refer to
# (docs/original.md#scannet).
SCANNET_DEPTH_SIZE = (640, 480)

# Frame names of the C++ SensReader export, which LoFTR does not read
# (docs/original.md#data-layout).
_CPP_EXPORT = re.compile(r"^(frame-\d+\.(color|depth|pose)\.\w+|0\d+\.(jpg|png|txt))$")


def sensreader_cpp_hint(scene_dir: str | os.PathLike) -> str | None:
    """Say so when a ScanNet scene folder looks like a C++ SensReader export.

    The C++ exporter writes ``frame-000000.color.jpg`` files (or zero-padded ``000000.jpg``);
    LoFTR expects the python exporter's ``color/<int>.jpg``, ``depth/<int>.png`` and
    ``pose/<int>.txt`` without zero padding (docs/original.md#data-layout, TRAINING.md).

    Args:
        scene_dir: a scene folder such as ``data/scannet/train/scene0000_00``.

    Returns:
        An instruction when the folder holds C++-style frame names, else None.
    """
    scene = Path(scene_dir)
    for folder in (scene, scene / "color", scene / "depth", scene / "pose"):
        if not folder.is_dir():
            continue
        for i, entry in enumerate(os.scandir(folder)):
            if _CPP_EXPORT.match(entry.name):
                return (
                    f"{folder} holds C++ SensReader frames such as {entry.name}; LoFTR reads the "
                    "python SensReader export (color/<int>.jpg, depth/<int>.png, pose/<int>.txt, "
                    "no zero padding): re-export with ScanNet/SensReader/python (TRAINING.md)"
                )
            if i > 50:
                break
    return None


@functools.lru_cache(maxsize=8)
def _cached_intrinsics(path: str, mtime: float) -> dict[str, np.ndarray]:
    # One intrinsics file serves every scene dataset (1513 for ScanNet training); read it once.
    return load_intrinsics(path)


def _scene_name(scene_id: int, sub_scene_id: int) -> str:
    return f"scene{int(scene_id):04d}_{int(sub_scene_id):02d}"


class ScanNetDataset(Dataset):
    """The pairs of one ScanNet scene index, as the original LoFTR dataset returns them.

    Items (docs/original.md#scannet) hold ``image0``/``image1`` ``(1, h, w)`` float32 grey in [0, 1]
    at ``img_resize``; ``depth0``/``depth1`` ``(480, 640)`` float32 metres at the stored depth
    resolution (empty in test mode); ``K0``/``K1`` ``(3, 3)`` float32 depth intrinsics;
    ``T_0to1`` ``(4, 4)`` float32 = W2C1 @ inv(W2C0) (maps camera-0 points to camera 1) and
    ``T_1to0`` its inverse; ``dataset_name`` ``'ScanNet'``, ``scene_id`` (``scene0000_00``),
    ``pair_id`` (the index) and ``pair_names`` (``scene/color/<id>.jpg`` twice). No mask, no scale.

    Our extension: when ``img_resize`` differs from the depth resolution (which the intrinsics
    refer to), only the image is resized and the item also holds ``scale0``/``scale1``
    ``(2,)`` float32 = ``[w_depth / w_in, h_depth / h_in]``, so supervision maps the coarse grid to
    original pixels as for MegaDepth (docs/original.md#coarse-gt) and keypoints come out in original
    pixels.

    Args:
        root_dir: folder of scene folders (``data/scannet/train``).
        npz_path: the scene index (``.../scene_data/train/scene0000_00.npz``).
        intrinsic_path: ``intrinsics.npz`` keyed by scene name.
        mode: ``'train'``, ``'val'`` or ``'test'`` (test returns empty depth).
        min_overlap_score: pairs with ``score > min_overlap_score`` are kept. As in the original
            (docs/original.md#scannet), val mode skips the filter and test mode applies it.
        pose_dir: folder replacing ``root_dir`` for pose files, or None.
        img_resize: ``(w, h)`` of the network input in pixels.

    Example:
        >>> ds = ScanNetDataset("data/scannet/train", "data/scannet/index/scene_data/train/"
        ...                     "scene0000_00.npz", "data/scannet/index/intrinsics.npz")
        >>> ds[0]["image0"].shape
        torch.Size([1, 480, 640])
    """

    def __init__(
        self,
        root_dir: str | os.PathLike,
        npz_path: str | os.PathLike,
        intrinsic_path: str | os.PathLike,
        mode: str = "train",
        min_overlap_score: float = 0.4,
        pose_dir: str | os.PathLike | None = None,
        img_resize: tuple[int, int] = (640, 480),
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"ScanNetDataset mode={mode!r}; use one of {list(MODES)}")
        if len(img_resize) != 2 or any(int(v) <= 0 for v in img_resize):
            raise ConfigError(f"scannet_img_resize={list(img_resize)}; expected [w, h] > 0")
        self.mode = mode
        self.root_dir = Path(root_dir)
        self.pose_dir = Path(pose_dir) if pose_dir is not None else self.root_dir
        self.img_resize = (int(img_resize[0]), int(img_resize[1]))
        root_part = "scannet_train" if mode == "train" else "scannet_test"
        index_part = "scannet_index" if mode == "train" else "scannet_test_index"
        check_dir(self.root_dir, f"ScanNet {mode} root", setup_hint(root_part, self.root_dir))
        if pose_dir is not None:
            check_dir(self.pose_dir, f"ScanNet {mode} pose root", setup_hint(root_part, pose_dir))

        names, scores = load_scannet_pairs(npz_path, setup_hint(index_part, Path(npz_path).parent))
        # docs/original.md#scannet: the original's mode check `['val' or 'test']` is `['val']`, so
        # val keeps every pair and test filters; the comparison is strict.
        if mode != "val":
            if scores is not None:
                names = names[scores > min_overlap_score]
            elif min_overlap_score > 0:
                raise DataError(
                    f"ScanNet scene index {npz_path} has no 'score' array, so pairs cannot be "
                    f"filtered by score > {min_overlap_score}; use a training index with scores "
                    "or set the min_overlap_score of this split to 0"
                )
        self.data_names = names
        self.npz_path = Path(npz_path)

        intrinsic_path = Path(intrinsic_path)
        check_file(intrinsic_path, "intrinsics file", setup_hint(index_part, intrinsic_path.parent))
        intrinsics = _cached_intrinsics(str(intrinsic_path), intrinsic_path.stat().st_mtime)
        scenes = self.scene_names()
        absent = [s for s in scenes if s not in intrinsics]
        if absent:
            raise DataError(
                f"intrinsics file {intrinsic_path} has no entry for scene(s) {absent[:10]}"
                f"{' ...' if len(absent) > 10 else ''} listed in {npz_path}"
            )
        self.intrinsics = {s: intrinsics[s] for s in scenes}
        self.intrinsic_path = intrinsic_path
        missing = [s for s in scenes if not (self.root_dir / s).is_dir()]
        if missing:
            raise DataError(
                f"scene folder(s) {[str(self.root_dir / s) for s in missing[:10]]}"
                f"{' ...' if len(missing) > 10 else ''} named by {npz_path} do not exist; "
                + setup_hint(root_part, self.root_dir)
            )

    def scene_names(self) -> list[str]:
        """The distinct scene folder names (``scene0000_00``) this index refers to, sorted."""
        if len(self.data_names) == 0:
            return []
        keys = np.unique(self.data_names[:, 0].astype(np.int64) * 100 + self.data_names[:, 1])
        return [_scene_name(k // 100, k % 100) for k in keys]

    def __len__(self) -> int:
        return len(self.data_names)

    def file_checks(self) -> Iterator[tuple[str, Callable[[], object]]]:
        """``(file, check)`` for every file the index names, each read as an item reads it.

        The scenes' intrinsics, then per frame of any pair its image, depth map (unless in test
        mode) and pose; a check raises :class:`~loftr.errors.DataError` naming what is wrong.
        """
        for scene in self.scene_names():
            what = f"intrinsics of {scene} in {self.intrinsic_path}"
            yield what, functools.partial(check_matrix, self.intrinsics[scene], what)
        names = self.data_names.astype(np.int64)
        frames = np.unique(np.concatenate([names[:, [0, 1, 2]], names[:, [0, 1, 3]]]), axis=0)
        for scene_id, sub_scene_id, frame in frames.tolist():
            scene = _scene_name(scene_id, sub_scene_id)
            yield (
                str(self.root_dir / scene / "color" / f"{frame}.jpg"),
                functools.partial(self._read_image, scene, frame),
            )
            if self.mode != "test":
                yield (
                    str(self.root_dir / scene / "depth" / f"{frame}.png"),
                    functools.partial(self._read_depth, scene, frame),
                )
            yield (
                str(self.pose_dir / scene / "pose" / f"{frame}.txt"),
                functools.partial(self._read_world_to_camera, scene, frame),
            )

    def _read_image(self, scene: str, frame: int) -> torch.Tensor:
        path = self.root_dir / scene / "color" / f"{frame}.jpg"
        try:
            image = read_gray(path, resize=self.img_resize)
        except DataError as err:
            hint = sensreader_cpp_hint(self.root_dir / scene)
            if hint is None:
                raise
            raise DataError(f"{err}; {hint}") from err
        return torch.from_numpy(image).float()[None] / 255.0

    def _read_depth(self, scene: str, frame: int) -> torch.Tensor:
        if self.mode == "test":
            return torch.tensor([])
        path = self.root_dir / scene / "depth" / f"{frame}.png"
        depth = read_scannet_depth(path)
        if depth.shape != (SCANNET_DEPTH_SIZE[1], SCANNET_DEPTH_SIZE[0]):
            raise DataError(
                f"depth map {path} is {depth.shape[1]}x{depth.shape[0]}; ScanNet depth (and its "
                f"intrinsics) must be {SCANNET_DEPTH_SIZE[0]}x{SCANNET_DEPTH_SIZE[1]} "
                "(docs/original.md#scannet)"
            )
        if self.mode == "train":
            check_depth(depth, path)  # a pair without any depth cannot supervise
        return torch.from_numpy(depth)

    def _read_world_to_camera(self, scene: str, frame: int) -> np.ndarray:
        camera_to_world = read_pose(self.pose_dir / scene / "pose" / f"{frame}.txt")
        return np.linalg.inv(camera_to_world)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        scene_id, sub_scene_id, frame0, frame1 = (int(v) for v in self.data_names[idx])
        scene = _scene_name(scene_id, sub_scene_id)

        image0 = self._read_image(scene, frame0)
        image1 = self._read_image(scene, frame1)
        depth0 = self._read_depth(scene, frame0)
        depth1 = self._read_depth(scene, frame1)

        K = check_matrix(self.intrinsics[scene], f"intrinsics of {scene} in {self.intrinsic_path}")
        K = torch.tensor(K, dtype=torch.float32)
        w2c0 = self._read_world_to_camera(scene, frame0)
        w2c1 = self._read_world_to_camera(scene, frame1)
        T_0to1 = torch.tensor(w2c1 @ np.linalg.inv(w2c0), dtype=torch.float32)[:4, :4]
        T_1to0 = T_0to1.inverse()

        data: dict[str, Any] = {
            "image0": image0,  # (1, h, w)
            "depth0": depth0,  # (H, W) metres, or empty in test mode
            "image1": image1,
            "depth1": depth1,
            "T_0to1": T_0to1,  # (4, 4)
            "T_1to0": T_1to0,
            "K0": K,  # (3, 3) depth intrinsics, identical for both images
            "K1": K.clone(),
            "dataset_name": "ScanNet",
            "scene_id": scene,
            "pair_id": idx,
            "pair_names": (f"{scene}/color/{frame0}.jpg", f"{scene}/color/{frame1}.jpg"),
        }
        if self.img_resize != SCANNET_DEPTH_SIZE:
            # our extension: the input is resized, depth and K stay at the depth resolution
            scale = torch.tensor(
                [
                    SCANNET_DEPTH_SIZE[0] / self.img_resize[0],
                    SCANNET_DEPTH_SIZE[1] / self.img_resize[1],
                ]
            )
            data["scale0"], data["scale1"] = scale, scale.clone()
        return data
