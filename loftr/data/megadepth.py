"""MegaDepth pairs in the original LoFTR layout and item format (docs/original.md#megadepth).

One dataset per scene info (a pickled dict despite its ``.npz`` suffix, loaded safely by
:func:`loftr.data.scene_info.load_scene_info`). Images are resized so the longer side is
``img_resize`` (floored to a multiple of ``df``) and zero-padded bottom-right to a square; depth
maps are zero-padded to 2000x2000 so batches collate.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from loftr.data.io import (
    check_depth,
    check_dir,
    check_file,
    check_matrix,
    image_size,
    read_gray,
    read_megadepth_depth,
)
from loftr.data.layout import setup_hint
from loftr.data.scene_info import load_scene_info
from loftr.errors import ConfigError, DataError

MODES = ("train", "val", "test")

# Depth maps are zero-padded to this square so that batches collate (docs/original.md#megadepth).
DEPTH_PAD_SIZE = 2000


def resized_wh(w: int, h: int, resize: int | None, df: int | None) -> tuple[int, int]:
    """Network-input size of a MegaDepth image (docs/original.md#megadepth, steps 2).

    The longer side becomes ``resize``: ``s = resize / max(h, w)``, ``w' = round(w s)``,
    ``h' = round(h s)`` (Python's round, as the original), then both are floored to a multiple
    of ``df``.

    Args:
        w: stored width in pixels.
        h: stored height in pixels.
        resize: target longer side in pixels, or None to keep the stored size.
        df: size divisibility factor (8), or None for no flooring.

    Returns:
        ``(w', h')`` in pixels.

    Example:
        >>> resized_wh(1000, 750, 640, 8)
        (640, 480)
        >>> resized_wh(600, 900, 640, 8)  # 426.67 rounds to 427, floored to 424
        (424, 640)
    """
    if resize is not None:
        scale = resize / max(h, w)
        w, h = int(round(w * scale)), int(round(h * scale))
    if df is not None:
        w, h = int(w // df * df), int(h // df * df)
    return w, h


def pad_bottom_right(
    array: np.ndarray, size: int, return_mask: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Zero-pad a 2-D array at the bottom and right to ``size x size``.

    Args:
        array: ``(h, w)`` array with ``h, w <= size``.
        size: the side of the square output.
        return_mask: also return the validity mask.

    Returns:
        ``(padded, mask)``: ``padded`` ``(size, size)`` of the input dtype; ``mask``
        ``(size, size)`` bool, True where ``array`` was (None unless ``return_mask``).

    Raises:
        ValueError: the array is larger than ``size`` or not 2-D.
    """
    if array.ndim != 2 or max(array.shape) > size:
        raise ValueError(f"cannot pad an array of shape {array.shape} to {size}x{size}")
    h, w = array.shape
    padded = np.zeros((size, size), dtype=array.dtype)
    padded[:h, :w] = array
    mask = None
    if return_mask:
        mask = np.zeros((size, size), dtype=bool)
        mask[:h, :w] = True
    return padded, mask


def read_megadepth_gray(
    path: str | os.PathLike, resize: int | None, df: int | None, padding: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Read, resize and pad a MegaDepth image (docs/original.md#megadepth, ``read_megadepth_gray``).

    Args:
        path: the image file.
        resize: longer side of the network input in pixels, or None.
        df: size divisibility factor, or None.
        padding: zero-pad bottom-right to a square of side ``max(h', w')``.

    Returns:
        ``(image, mask, scale)``: ``image`` ``(1, s, s)`` float32 in [0, 1] (``(1, h', w')``
        without padding); ``mask`` ``(s, s)`` bool, True on valid pixels, or None without
        padding; ``scale`` ``(2,)`` float32 ``[w / w', h / h']`` (original over resized).

    Raises:
        DataError: the image is missing or corrupt.
    """
    image = read_gray(path)
    h, w = image.shape
    w_new, h_new = resized_wh(w, h, resize, df)
    image = cv2.resize(image, (w_new, h_new))
    scale = torch.tensor([w / w_new, h / h_new], dtype=torch.float32)
    mask = None
    if padding:
        image, mask_np = pad_bottom_right(image, max(h_new, w_new), return_mask=True)
        mask = torch.from_numpy(mask_np)
    return torch.from_numpy(image).float()[None] / 255.0, mask, scale


def read_megadepth_depth_padded(
    path: str | os.PathLike,
    pad_to: int | None,
    image_wh: tuple[int, int] | None = None,
    require_valid: bool = False,
) -> torch.Tensor:
    """Read a MegaDepth depth map, zero-padded bottom-right to ``pad_to`` when given.

    Args:
        path: the ``.h5`` depth file.
        pad_to: side of the padded square (2000), or None for the stored size.
        image_wh: ``(w, h)`` of its image; the depth map must have that size (the intrinsics
            and the ground truth read it at original image pixels, docs/original.md#warp-kpts).
        require_valid: the map must have a valid pixel (training: else it cannot supervise).

    Returns:
        ``(pad_to, pad_to)`` (or ``(h, w)``) float32 depth at original resolution.

    Raises:
        DataError: the file is missing, corrupt, not the image's size, larger than ``pad_to``,
            or without a valid pixel when ``require_valid``.
    """
    depth = read_megadepth_depth(path)
    if require_valid:
        check_depth(depth, path)
    if image_wh is not None and depth.shape != (image_wh[1], image_wh[0]):
        raise DataError(
            f"depth map {path} is {depth.shape[1]}x{depth.shape[0]} but its image is "
            f"{image_wh[0]}x{image_wh[1]}; depth must be at the image's original resolution"
        )
    if pad_to is not None:
        if max(depth.shape) > pad_to:
            raise DataError(f"depth map {path} has shape {depth.shape}, larger than {pad_to}")
        depth, _ = pad_bottom_right(depth, pad_to)
    return torch.from_numpy(depth)


def coarse_mask(mask: torch.Tensor, coarse_scale: float = 0.125) -> torch.Tensor:
    """Nearest-downsample an image-resolution validity mask to the coarse grid
    (docs/original.md#megadepth).

    Args:
        mask: ``(s, s)`` bool, True on valid pixels.
        coarse_scale: the downsampling factor (1/8).

    Returns:
        ``(floor(s * coarse_scale), floor(s * coarse_scale))`` bool; cell ``(i, j)`` takes pixel
        ``(floor(i / coarse_scale), floor(j / coarse_scale))``, i.e. ``(8i, 8j)``.
    """
    return F.interpolate(
        mask[None, None].float(),
        scale_factor=coarse_scale,
        mode="nearest",
        recompute_scale_factor=False,
    )[0, 0].bool()


class MegaDepthDataset(Dataset):
    """The pairs of one MegaDepth scene info, as the original LoFTR dataset returns them.

    Items (docs/original.md#megadepth) hold ``image0``/``image1`` ``(1, s, s)`` float32 grey in [0,
    1] (resized and padded); ``depth0``/``depth1`` ``(2000, 2000)`` float32 at original resolution,
    zero-padded (empty in test mode); ``T_0to1`` ``(4, 4)`` float32 = T1 @ inv(T0) (world-to-camera
    poses) and ``T_1to0``; ``K0``/``K1`` ``(3, 3)`` float32 per image at original resolution;
    ``scale0``/``scale1`` ``(2,)`` float32 ``[w / w', h / h']``; ``dataset_name`` ``'MegaDepth'``,
    ``scene_id`` (the file stem), ``pair_id`` and ``pair_names`` (the two image paths); with
    padding also ``mask0``/``mask1`` ``(s * coarse_scale, s * coarse_scale)`` bool.

    Args:
        root_dir: folder holding ``phoenix/`` and ``Undistorted_SfM/`` (``data/megadepth/train``).
        npz_path: the scene info (``.../scene_info_0.1_0.7/0000_0.1_0.3.npz``).
        mode: ``'train'``, ``'val'`` or ``'test'`` (test keeps every pair and returns empty depth).
        min_overlap_score: pairs with overlap ``> min_overlap_score`` are kept (0 in test mode).
        img_resize: longer side of the network input in pixels (640 or 840).
        df: size divisibility factor.
        img_padding: zero-pad images to squares and return coarse masks.
        depth_padding: zero-pad depth to 2000x2000.
        coarse_scale: mask downsampling factor. The original always used 0.125
        (docs/original.md#megadepth).
        setup: the set-up step a missing root, scene info, image or depth file points to; None
            for MegaDepth's (``loftr.data.layout.setup_hint``). A prepared set
            (docs/prepare.md) passes the converters' command, which makes all of them.

    Raises:
        ConfigError: training without ``img_resize`` or without image and depth padding.
        DataError: a missing root or scene info, or a missing first image/depth file.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike,
        npz_path: str | os.PathLike,
        mode: str = "train",
        min_overlap_score: float = 0.4,
        img_resize: int | None = 640,
        df: int | None = 8,
        img_padding: bool = True,
        depth_padding: bool = True,
        coarse_scale: float = 0.125,
        setup: str | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"MegaDepthDataset mode={mode!r}; use one of {list(MODES)}")
        if mode == "train":
            # docs/original.md#megadepth: the original asserts these; a ConfigError names the key
            # instead.
            if img_resize is None:
                raise ConfigError("dataset.mgdpt_img_resize must be set for MegaDepth training")
            if not img_padding:
                raise ConfigError("dataset.mgdpt_img_pad must be true for MegaDepth training")
            if not depth_padding:
                raise ConfigError("dataset.mgdpt_depth_pad must be true for MegaDepth training")
        self.mode = mode
        self.root_dir = Path(root_dir)
        self.npz_path = Path(npz_path)
        # docs/original.md#megadepth: the original's scene_id is npz_path.split('.')[0], which cuts
        # paths at the first dot (cosmetic); the file stem is what it meant.
        self.scene_id = self.npz_path.stem
        self.img_resize = img_resize
        self.df = df
        self.img_padding = img_padding
        self.depth_pad_to = DEPTH_PAD_SIZE if depth_padding else None
        self.coarse_scale = coarse_scale

        root_hint = setup or setup_hint("megadepth_root", self.root_dir)
        check_dir(self.root_dir, f"MegaDepth {mode} root", root_hint)
        index_part = "megadepth_index" if mode == "train" else "megadepth_test_index"
        index_hint = setup or setup_hint(index_part, self.npz_path.parent)
        info = load_scene_info(self.npz_path, index_hint)
        min_overlap_score = 0.0 if mode == "test" else min_overlap_score
        self.pair_infos = [p for p in info["pair_infos"] if p[1] > min_overlap_score]
        self.image_paths = info["image_paths"]
        self.depth_paths = info["depth_paths"]
        self.intrinsics = np.asarray(info["intrinsics"])
        self.poses = np.asarray(info["poses"])
        if self.pair_infos:
            # One cheap look at the first pair catches a wrongly linked root early.
            idx0 = int(self.pair_infos[0][0][0])
            check_file(self.root_dir / str(self.image_paths[idx0]), "image", root_hint)
            if mode != "test":
                check_file(self.root_dir / str(self.depth_paths[idx0]), "depth map", root_hint)

    def __len__(self) -> int:
        return len(self.pair_infos)

    def _path(self, paths: np.ndarray, idx: int, what: str) -> Path:
        rel = paths[idx]
        if rel is None:
            raise DataError(f"scene info {self.npz_path} has no {what} path for image slot {idx}")
        return self.root_dir / str(rel)

    def file_checks(self) -> Iterator[tuple[str, Callable[[], object]]]:
        """``(file, check)`` for every file and camera the index names, read as an item reads it.

        Per image slot of any pair: its image, depth map (unless in test mode; with a valid pixel
        in training), intrinsics and pose; a check raises :class:`~loftr.errors.DataError`.
        """
        slots = sorted({int(i) for (pair, _overlap, _central) in self.pair_infos for i in pair})
        for i in slots:
            image = functools.partial(self._path, self.image_paths, i, "image")
            yield self._name(self.image_paths, i, "image"), lambda image=image: read_gray(image())
            if self.mode != "test":
                depth = functools.partial(self._path, self.depth_paths, i, "depth")
                yield (
                    self._name(self.depth_paths, i, "depth"),
                    lambda image=image, depth=depth: read_megadepth_depth_padded(
                        depth(), self.depth_pad_to, image_size(image()), self.mode == "train"
                    ),
                )
            for values, what, shape in (
                (self.intrinsics, "intrinsics", (3, 3)),
                (self.poses, "pose", (4, 4)),
            ):
                yield (
                    f"{what} of image slot {i} in {self.npz_path}",
                    functools.partial(self._matrix, values, i, what, shape),
                )

    def _name(self, paths: np.ndarray, idx: int, what: str) -> str:
        rel = paths[idx]
        missing = f"{what} of image slot {idx} in {self.npz_path}"
        return str(self.root_dir / str(rel)) if rel is not None else missing

    def _matrix(
        self, values: np.ndarray, idx: int, what: str, shape: tuple[int, int]
    ) -> np.ndarray:
        return check_matrix(values[idx], f"{what} of image slot {idx} in {self.npz_path}", shape)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        (idx0, idx1), _overlap, _central_matches = self.pair_infos[idx]
        idx0, idx1 = int(idx0), int(idx1)

        image0, mask0, scale0 = read_megadepth_gray(
            self._path(self.image_paths, idx0, "image"), self.img_resize, self.df, self.img_padding
        )
        image1, mask1, scale1 = read_megadepth_gray(
            self._path(self.image_paths, idx1, "image"), self.img_resize, self.df, self.img_padding
        )
        if self.mode == "test":
            depth0 = depth1 = torch.tensor([])
        else:
            depth0, depth1 = (
                read_megadepth_depth_padded(
                    self._path(self.depth_paths, i, "depth"),
                    self.depth_pad_to,
                    image_size(self._path(self.image_paths, i, "image")),
                    require_valid=self.mode == "train",
                )
                for i in (idx0, idx1)
            )

        K0, K1 = (
            torch.tensor(
                self._matrix(self.intrinsics, i, "intrinsics", (3, 3)), dtype=torch.float32
            )
            for i in (idx0, idx1)
        )
        T0, T1 = (self._matrix(self.poses, i, "pose", (4, 4)) for i in (idx0, idx1))
        T_0to1 = torch.tensor(T1 @ np.linalg.inv(T0), dtype=torch.float32)[:4, :4]
        T_1to0 = T_0to1.inverse()

        data: dict[str, Any] = {
            "image0": image0,  # (1, s, s)
            "depth0": depth0,  # (2000, 2000), or empty in test mode
            "image1": image1,
            "depth1": depth1,
            "T_0to1": T_0to1,  # (4, 4)
            "T_1to0": T_1to0,
            "K0": K0,  # (3, 3) at original resolution
            "K1": K1,
            "scale0": scale0,  # (2,) [w / w', h / h']
            "scale1": scale1,
            "dataset_name": "MegaDepth",
            "scene_id": self.scene_id,
            "pair_id": idx,
            "pair_names": (str(self.image_paths[idx0]), str(self.image_paths[idx1])),
        }
        if mask0 is not None:
            # docs/original.md#megadepth: coarse masks by nearest downsampling of the padded image
            # masks (each on its own, which equals the original's stacked call and allows unequal
            # sides).
            data["mask0"] = coarse_mask(mask0, self.coarse_scale)
            data["mask1"] = coarse_mask(mask1, self.coarse_scale)
        return data
