"""Synthetic ScanNet- and MegaDepth-format datasets: piecewise-planar scenes with exact depth.

No real dataset can be downloaded on these machines, so the embedded default dataset is rendered
here: rooms (floor, ceiling, four walls, furniture boxes, posters, and free-standing tables,
screens and columns in the cameras' views) and outdoor plazas (a ground plane, a landmark of boxes
with facades at several depths, a ring of buildings, kiosks, posts and low walls), textured with
crops of the training photographs (``loftr.data.photos``: the held-out ones never appear) and with
non-periodic procedural patterns. The occluders make depth-warped pairs see real occlusion; the
held-out (test) scenes are drawn from their own seeds, so no training scene is among them. Every
pixel's depth is the exact
ray-plane intersection, so ground truth built from depth, intrinsics and poses is exact up to the
storage precision of the real formats (millimetres for ScanNet, float32 for MegaDepth).

The files are written in the real on-disk formats (docs/original.md#data-layout to #test-sets)
and are read by the same loaders as the real data:

- ``<root>/scannet/``: ``train/<scene>/{color/<i>.jpg, depth/<i>.png, pose/<i>.txt}``,
  ``test/<scene>/{color,depth,pose,intrinsic}/``, ``index/scene_data/{train,test}/*.npz``,
  ``index/scene_data/{train_list/synthetic_train.txt, test_list/synthetic_test.txt}``,
  ``index/intrinsics.npz`` (9-vectors) and ``index/intrinsics_test.npz`` (3x3).
- ``<root>/megadepth/``: ``{train,test}/Undistorted_SfM/<scene>/images/<name>.jpg``,
  ``{train,test}/phoenix/S6/zl548/MegaDepth_v1/<scene>/dense0/depths/<name>.h5``,
  ``index/scene_info_0.1_0.7/<scene>_<lo>_<hi>.npz`` and ``index/scene_info_val_1500/*.npz``
  (pickled dicts, docs/original.md#megadepth), ``index/trainvaltest_list/{train,val}_list.txt``.

Conventions used throughout: world frame z-up, metres; camera frame x right, y down, z forward
(OpenCV); pixel ``(x, y)`` with integer values at pixel centres, so ``K = [[f, 0, cx], [0, f, cy],
[0, 0, 1]]`` maps a camera point to its pixel; ``T_w2c`` (4, 4) maps world points to the camera
and ``T_0to1 = T_w2c1 @ inv(T_w2c0)`` maps camera-0 points to camera 1. Depth is the camera-frame
z in metres, 0 where nothing was hit (sky).

Example:
    >>> root = ensure_synthetic("data/synthetic", format="scannet", seed=0)  # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())  # doctest: +SKIP
    ['index', 'synthetic_manifest.json', 'test', 'train']

The package, in the order a set is made:

- ``textures``: the texture bank (photograph crops and procedural patterns, mip-mapped);
- ``scenes``: scene geometry, rooms and plazas made of textured rectangles, with occluders;
- ``cameras``: camera paths through them and the MegaDepth-like intrinsics;
- ``render``: the rasteriser (image and exact depth); pairs are scored by
  ``loftr.data.covisibility``;
- ``writers``: the ScanNet- and MegaDepth-format writers;
- ``cache``: sizes, the manifest and ``ensure_synthetic`` (temporary folder, then rename);
- ``__main__``: the CLI, ``python -m loftr.data.synthetic --help``.
"""

from loftr.data.covisibility import Covisibility, covisibility, overlap_score, relative_pose
from loftr.data.synthetic.cache import (
    DEFAULT_SIZES,
    FORMATS,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    ensure_synthetic,
    generate_synthetic,
    iter_files,
    read_manifest,
    resolve_sizes,
)
from loftr.data.synthetic.cameras import MEGADEPTH_IMAGE_SIZES, camera_pose, megadepth_intrinsics
from loftr.data.synthetic.render import RenderedView, render_view
from loftr.data.synthetic.scenes import Scene, indoor_scene, outdoor_scene
from loftr.data.synthetic.textures import TextureBank, make_texture_bank
from loftr.data.synthetic.writers import (
    MEGADEPTH_BINS,
    SCANNET_FOCALS,
    write_megadepth,
    write_scannet,
)

__all__ = [
    "DEFAULT_SIZES",
    "FORMATS",
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "MEGADEPTH_BINS",
    "MEGADEPTH_IMAGE_SIZES",
    "SCANNET_FOCALS",
    "Covisibility",
    "RenderedView",
    "Scene",
    "TextureBank",
    "camera_pose",
    "covisibility",
    "ensure_synthetic",
    "generate_synthetic",
    "indoor_scene",
    "iter_files",
    "make_texture_bank",
    "megadepth_intrinsics",
    "outdoor_scene",
    "overlap_score",
    "read_manifest",
    "relative_pose",
    "render_view",
    "resolve_sizes",
    "write_megadepth",
    "write_scannet",
]
