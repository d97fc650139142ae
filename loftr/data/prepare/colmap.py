"""``python -m loftr.data.prepare colmap``: a COLMAP reconstruction becomes a scene of a prepared
set (docs/prepare.md#colmap-reconstructions).

Input: the undistorted sparse model (binary or text, read with pycolmap, the optional extra
``[colmap]``), its images and the dense depth maps of ``colmap patch_match_stereo``
(``<workspace>/stereo/depth_maps/<image name>.geometric.bin``, or ``.photometric.bin``). Only
PINHOLE and SIMPLE_PINHOLE cameras are taken; COLMAP puts pixel centres at .5, so the principal
point moves by half a pixel into the project's convention (centres at integers). A depth map
smaller than its image by a uniform factor (``--PatchMatchStereo.max_image_size``) makes the
image be downscaled to the depth map's size. Pairs are scored by shared 3D points, as D2-Net's
MegaDepth preprocessing scored the scene infos LoFTR trains on, both directions combined by
their minimum. Everything is checked before anything is written.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from loftr.data.io import check_dir, check_file, image_size
from loftr.data.prepare.frames import PreparedFrame, fit_size, resize_frame
from loftr.data.prepare.scene import PreparedPair, SceneWriter
from loftr.data.scene_info import OVERLAP_BINS
from loftr.errors import ConfigError, DataError

SOURCE = "colmap"
# Camera models taken as they are: no distortion parameters.
UNDISTORTED_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")
DEPTH_KINDS = ("geometric", "photometric")
# Pair counting works on chunks of at most this many (image, image) entries (memory bound).
_PAIR_CHUNK = 1 << 22


def _pycolmap() -> Any:
    try:
        import pycolmap
    except ImportError:
        raise ConfigError(
            "the colmap converter reads models with pycolmap, which is not installed: "
            "pip install -e '.[colmap]'"
        ) from None
    return pycolmap


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The colmap command's own options (docs/prepare.md#colmap-reconstructions)."""
    group = parser.add_argument_group("COLMAP reconstruction")
    group.add_argument(
        "--model",
        type=Path,
        required=True,
        help="the undistorted sparse model (cameras, images, points3D; .bin or .txt)",
    )
    group.add_argument(
        "--images", type=Path, required=True, help="the folder the model's image names are in"
    )
    group.add_argument(
        "--depth",
        type=Path,
        default=None,
        help="the dense workspace holding stereo/depth_maps/ (or that folder itself; default: "
        "the folder above --images, as colmap image_undistorter lays it out)",
    )
    group.add_argument(
        "--photometric",
        action="store_true",
        help="read the *.photometric.bin depth maps instead of *.geometric.bin",
    )


# --- COLMAP's dense array files --------------------------------------------------------------


def _depth_header(path: Path) -> tuple[int, int, int]:
    """``(width, height, data offset)`` of a single-channel COLMAP dense array file."""
    with open(path, "rb") as f:
        head = f.read(64)
    fields = head.split(b"&", 3)
    try:
        if len(fields) < 4:
            raise ValueError
        w, h, c = (int(v) for v in fields[:3])
    except ValueError:
        raise DataError(
            f"depth map {path} has no COLMAP header 'width&height&channels&' (starts with "
            f"{head[:24]!r})"
        ) from None
    offset = sum(len(v) + 1 for v in fields[:3])
    size = path.stat().st_size - offset
    if min(w, h, c) < 1 or size != 4 * w * h * c:
        raise DataError(
            f"depth map {path}: its header says {w}x{h}x{c} float32 values but it holds "
            f"{size} bytes of data"
        )
    if c != 1:
        raise DataError(f"depth map {path} has {c} channels; a depth map has one")
    return w, h, offset


def colmap_array_size(path: Path) -> tuple[int, int]:
    """``(w, h)`` of a COLMAP depth map, from its header (the values are not read).

    Raises:
        DataError: no header, a size that disagrees with the file's length, or several channels.
    """
    w, h, _ = _depth_header(path)
    return w, h


def read_colmap_depth(path: Path) -> np.ndarray:
    """A COLMAP depth map (``*.geometric.bin`` / ``*.photometric.bin``) as (H, W) float32, in the
    model's unit (docs/prepare.md#colmap-reconstructions).

    COLMAP's layout (``mvs/mat.h``): the ASCII header ``width&height&channels&``, then
    little-endian float32 values with x fastest, row after row (channel after channel). Values
    that are not finite or not positive (no estimate) become 0.

    Raises:
        DataError: the file is missing, has no header, is cut short or has several channels.
    """
    w, h, offset = _depth_header(check_file(path, "depth map"))
    depth = np.fromfile(path, dtype="<f4", offset=offset).reshape(h, w).astype(np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))


# --- the model ---------------------------------------------------------------------------------


@dataclass
class _Image:
    """A registered image of the model, checked, as it will be converted."""

    name: str
    path: Path
    depth_path: Path
    K: np.ndarray  # (3, 3) at the image's stored size, pixel centres at integers
    T_w2c: np.ndarray  # (4, 4)
    size: tuple[int, int]  # stored (w, h)
    depth_size: tuple[int, int]  # (w, h) of its depth map
    point_ids: np.ndarray  # sorted unique ids of the 3D points it observes


def read_model(model_dir: Path) -> Any:
    """The ``pycolmap.Reconstruction`` in ``model_dir`` (binary preferred, else text).

    Raises:
        ConfigError: pycolmap is not installed.
        DataError: the folder is missing or holds no readable model, or the model is empty.
    """
    pycolmap = _pycolmap()
    check_dir(model_dir, "COLMAP model folder (--model)")
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except (ValueError, RuntimeError, OSError) as err:
        message = str(err).split("] ", 1)[-1].strip()
        raise DataError(
            f"COLMAP model {model_dir} cannot be read: {message} (expected cameras, images "
            "and points3D as .bin or .txt)"
        ) from None
    if rec.num_reg_images() == 0:
        raise DataError(
            f"COLMAP model {model_dir} is an empty reconstruction: it registers no image"
        )
    if rec.num_points3D() == 0:
        raise DataError(
            f"COLMAP model {model_dir} is an empty reconstruction: it has no 3D point "
            "(pairs are scored by the 3D points they share)"
        )
    return rec


def camera_matrix(camera: Any, where: str) -> np.ndarray:
    """The (3, 3) intrinsics of an undistorted COLMAP camera, pixel centres at integers.

    COLMAP puts the centre of the top-left pixel at (0.5, 0.5) (its default principal point of a
    w-pixel-wide image is w / 2); the project puts it at (0, 0), so the principal point moves by
    -0.5 on both axes (docs/prepare.md#colmap-reconstructions).

    Raises:
        DataError: a camera model with distortion (``where`` names the camera and its image).
    """
    model = camera.model.name
    if model not in UNDISTORTED_MODELS:
        raise DataError(
            f"{where} uses the camera model {model}, which has lens distortion; run "
            "`colmap image_undistorter` and convert its undistorted model (cameras "
            f"{' or '.join(UNDISTORTED_MODELS)})"
        )
    fx, fy = camera.focal_length_x, camera.focal_length_y
    cx, cy = camera.principal_point_x - 0.5, camera.principal_point_y - 0.5
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _is_uniform_downscale(small: tuple[int, int], big: tuple[int, int]) -> bool:
    """Whether ``small`` = ``big`` scaled by one factor below 1 (each side within a pixel)."""
    s = max(small) / max(big)
    return s < 1 and all(abs(a - b * s) < 1 for a, b in zip(small, big, strict=True))


def _depth_folder(depth: Path | None, images: Path) -> Path:
    workspace = depth if depth is not None else images.parent
    nested = workspace / "stereo" / "depth_maps"
    return nested if nested.is_dir() else workspace


def plan_images(
    rec: Any, model_dir: Path, images: Path, depth_maps: Path, kind: str
) -> tuple[list[_Image], dict[str, list[str]]]:
    """Check every image of the model before anything is written.

    Returns:
        The registered images (those with a pose) that observe a 3D point, sorted by name, and
        the refused ones (``{reason: [names]}``).

    Raises:
        DataError: naming the culprit: a distorted camera, an image missing on disk or of
            another size than its camera, no dense depth at all, a missing depth map, or one
            whose size is neither the image's nor a uniform downscale of it.
    """
    check_dir(images, "image folder (--images)")
    suffix = f".{kind}.bin"
    if not depth_maps.is_dir() or next(depth_maps.rglob(f"*{suffix}"), None) is None:
        raise DataError(
            f"no dense depth maps (*{suffix}) in {depth_maps}: sparse 3D points alone do not "
            "give the dense supervision LoFTR needs; run `colmap patch_match_stereo` on the "
            "undistorted workspace (or point --depth at it)"
        )
    refused: dict[str, list[str]] = {}
    planned = []
    for image in sorted((rec.image(i) for i in rec.reg_image_ids()), key=lambda im: im.name):
        camera = rec.camera(image.camera_id)
        where = f"camera {image.camera_id} of image {image.name} in COLMAP model {model_dir}"
        K = camera_matrix(camera, where)
        path = check_file(
            images / image.name, f"COLMAP model {model_dir} lists image {image.name}, but"
        )
        size = image_size(path)
        if size != (camera.width, camera.height):
            raise DataError(
                f"image {path} is {size[0]}x{size[1]} but {where} is "
                f"{camera.width}x{camera.height}; give --images the undistorted images the model "
                "was made with"
            )
        depth_path = check_file(
            depth_maps / f"{image.name}{suffix}", f"image {image.name} has no depth map:"
        )
        depth_size = colmap_array_size(depth_path)
        if depth_size != size and not _is_uniform_downscale(depth_size, size):
            raise DataError(
                f"depth map {depth_path} is {depth_size[0]}x{depth_size[1]}, neither its image's "
                f"{size[0]}x{size[1]} nor a uniform downscale of it"
            )
        ids = np.unique(
            np.array([p.point3D_id for p in image.points2D if p.has_point3D()], np.int64)
        )
        if len(ids) == 0:
            refused.setdefault("observes no 3D point", []).append(image.name)
            continue
        T = np.eye(4)
        T[:3, :4] = image.cam_from_world().matrix()
        planned.append(_Image(image.name, path, depth_path, K, T, size, depth_size, ids))
    return planned, refused


# --- pairs ---------------------------------------------------------------------------------------


def shared_points(point_ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The image pairs that share 3D points and how many they share.

    Args:
        point_ids: per image, the sorted unique ids of the 3D points it observes.

    Returns:
        ``(pairs, counts)``: ``(P, 2)`` int64 image indices ``i < j`` (sorted) and ``(P,)`` the
        number of 3D points both observe.
    """
    n = len(point_ids)
    images = np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(point_ids)])
    points = np.concatenate(point_ids)
    order = np.lexsort((images, points))
    images, points = images[order], points[order]
    _, start, length = np.unique(points, return_index=True, return_counts=True)
    codes = []
    for track_len in np.unique(length[length >= 2]):
        a, b = np.triu_indices(int(track_len), 1)
        starts = start[length == track_len]
        rows_per_chunk = max(1, _PAIR_CHUNK // len(a))
        for c in range(0, len(starts), rows_per_chunk):
            rows = images[starts[c : c + rows_per_chunk, None] + np.arange(track_len)]
            codes.append((rows[:, a] * n + rows[:, b]).ravel())
    if not codes:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    codes, counts = np.unique(np.concatenate(codes), return_counts=True)
    return np.stack([codes // n, codes % n], axis=1), counts


def overlap_scores(point_ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair's overlap from shared 3D points (docs/prepare.md#colmap-reconstructions).

    Image i's directional overlap with j is the share of i's 3D points that j observes too
    (D2-Net's MegaDepth definition); the score is the smaller of the two directions.

    Returns:
        ``(pairs, scores)``: ``(P, 2)`` image indices of the pairs that share a point, ``(P,)``
        scores in (0, 1].
    """
    pairs, counts = shared_points(point_ids)
    n_points = np.array([len(p) for p in point_ids], np.float64)
    return pairs, counts / np.maximum(n_points[pairs[:, 0]], n_points[pairs[:, 1]])


def _project(K: np.ndarray, T: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    cam = xyz @ T[:3, :3].T + T[:3, 3]
    pix = cam @ K.T
    return pix[:, :2] / pix[:, 2:]


def central_match(
    shared_xyz: np.ndarray, K0: np.ndarray, T0: np.ndarray, K1: np.ndarray, T1: np.ndarray
) -> np.ndarray:
    """``[x0, y0, x1, y1]``: the shared 3D point whose image-0 pixel is nearest the centroid of
    all shared points' image-0 pixels, projected into both written images."""
    p0, p1 = _project(K0, T0, shared_xyz), _project(K1, T1, shared_xyz)
    best = int(np.argmin(((p0 - p0.mean(axis=0)) ** 2).sum(axis=1)))
    return np.array([*p0[best], *p1[best]], np.float64)


# --- the command ---------------------------------------------------------------------------------


def _frame(image: _Image, max_size: int) -> PreparedFrame:
    """The frame of an image at its written size: the depth map's, then within ``max_size``."""
    depth = read_colmap_depth(image.depth_path)
    frame = PreparedFrame(image.name, image.path, image.K, image.T_w2c, depth)
    if image.depth_size != image.size:
        # The image and intrinsics follow the depth map; the map itself is already that size.
        full = replace(frame, depth=np.zeros(image.size[::-1], np.float32))
        frame = replace(resize_frame(full, image.depth_size), depth=depth)
    h, w = frame.depth.shape
    fit = fit_size(w, h, max_size)  # the writer's own rule, applied here to know the pixels
    return frame if fit is None else resize_frame(frame, fit)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert the reconstruction; the report (docs/prepare.md#the-report)."""
    model_dir, images = Path(args.model), Path(args.images)
    kind = DEPTH_KINDS[1] if args.photometric else DEPTH_KINDS[0]
    rec = read_model(model_dir)
    depth_maps = _depth_folder(args.depth, images)
    planned, refused = plan_images(rec, model_dir, images, depth_maps, kind)
    name = args.name or (images.resolve().parent.name or "colmap")
    highest = OVERLAP_BINS[-1][1]

    with SceneWriter(args.out, name, args.split, SOURCE, args.max_size) as writer:
        for reason, names in refused.items():
            for rel in names:
                writer.refuse(rel, reason)
        written, cameras = [], []
        downscaled = 0
        for image in planned:
            frame = _frame(image, args.max_size)
            if not (frame.depth > 0).any():
                writer.refuse(image.name, "depth map without a valid pixel")
                continue
            writer.add_frame(frame)
            written.append(image)
            cameras.append((frame.K, frame.T_w2c))
            downscaled += image.depth_size != image.size
        pairs, scores = overlap_scores([image.point_ids for image in written])
        ids = np.array(sorted(rec.points3D.keys()), np.int64)
        xyz = np.array([rec.points3D[int(i)].xyz for i in ids], np.float64).reshape(-1, 3)
        prepared = []
        for (i, j), score in zip(pairs, scores, strict=True):
            match = np.full(4, np.nan)
            if args.min_overlap <= score < highest:  # only written pairs need one
                shared = np.intersect1d(written[i].point_ids, written[j].point_ids)
                match = central_match(xyz[np.searchsorted(ids, shared)], *cameras[i], *cameras[j])
            prepared.append(PreparedPair(int(i), int(j), float(score), match))
        extra = {
            "cameras": rec.num_cameras(),
            "registered_images": rec.num_reg_images(),
            "points3D": rec.num_points3D(),
            "depth_source": kind,
            "downscaled_to_depth": int(downscaled),
        }
        return writer.finish(prepared, args.min_overlap, args.max_pairs_per_image, extra)
