"""The frames a converter hands to the scene writer, and their resizing (docs/prepare.md).

:class:`PreparedFrame` is one frame at the size its source gives (image, intrinsics,
world-to-camera pose, depth); :func:`fit_size` is the ``--max-size`` rule and
:func:`resize_frame` resamples a frame to a new size, intrinsics included. The writer
(``loftr.data.prepare.scene``) applies both to every frame above ``max_size``; a converter that
needs the written pixels before the writer does (for its pair scores) applies them itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from loftr.data.io import image_size, read_image

__all__ = ["PreparedFrame", "fit_size", "frame_size", "resize_frame"]


@dataclass
class PreparedFrame:
    """One frame as a converter hands it to :meth:`SceneWriter.add_frame`.

    Attributes:
        rel: the image's path inside the scene's ``images/`` folder, posix, sub-folders allowed
            (``"sub/0001.jpg"``); its suffix picks the encoding of an array image.
        image: a uint8 grey ``(H, W)`` or BGR ``(H, W, 3)`` array to encode, or a source file
            copied byte for byte when no resize is needed.
        K: (3, 3) intrinsics of that image in pixels, pixel centres at integer coordinates.
        T_w2c: (4, 4) world-to-camera pose.
        depth: (H, W) camera-frame z in metres, exactly the image's size; 0 = unknown (values
            that are not finite or not positive are written as 0).
    """

    rel: str
    image: np.ndarray | Path
    K: np.ndarray
    T_w2c: np.ndarray
    depth: np.ndarray


def frame_size(frame: PreparedFrame) -> tuple[int, int]:
    """``(w, h)`` of a frame's image."""
    if isinstance(frame.image, np.ndarray):
        return int(frame.image.shape[1]), int(frame.image.shape[0])
    return image_size(frame.image)


def resize_frame(frame: PreparedFrame, size: tuple[int, int]) -> PreparedFrame:
    """``frame`` at ``size`` = ``(w, h)`` pixels.

    The image is resampled with area averaging (``cv2.INTER_AREA``), the depth takes the nearest
    source pixel of every new pixel centre (depth is never blended across edges), and the
    intrinsics follow the pixel-centre rule ``x' = (x + 0.5) * s - 0.5`` per axis, with
    ``s = w' / w`` horizontally and ``h' / h`` vertically. A file image is decoded by
    :func:`loftr.data.io.read_image` (grey stays grey, colour is BGR).
    """
    w, h = frame_size(frame)
    new_w, new_h = int(size[0]), int(size[1])
    if new_w < 1 or new_h < 1:
        raise ValueError(f"cannot resize frame {frame.rel} to {new_w}x{new_h}")
    image = frame.image if isinstance(frame.image, np.ndarray) else read_image(frame.image)
    sx, sy = new_w / w, new_h / h
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # the source pixel whose area holds each new pixel centre: floor((x' + 0.5) / s)
    xi = np.minimum(np.floor((np.arange(new_w) + 0.5) / sx).astype(np.int64), w - 1)
    yi = np.minimum(np.floor((np.arange(new_h) + 0.5) / sy).astype(np.int64), h - 1)
    depth = np.asarray(frame.depth)[np.ix_(yi, xi)]
    scale = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    K = scale @ np.asarray(frame.K, np.float64)
    return replace(frame, image=resized, K=K, depth=depth)


def fit_size(w: int, h: int, max_size: int) -> tuple[int, int] | None:
    """The ``(w, h)`` whose longer side is ``max_size``, or None when the image fits already."""
    if max(w, h) <= max_size:
        return None
    s = max_size / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))
