"""The real photographs that installed packages ship, split once into training and held-out images.

No photograph can be downloaded on these machines, but scikit-image and matplotlib ship a few
with their sample data. They serve two purposes that must not leak into each other:

- ``TRAIN_PHOTOS`` texture the synthetic scenes (``loftr.data.synthetic.textures``): crops,
  scales and brightness changes of them cover the walls, posters and objects;
- ``HELDOUT_PHOTOS`` are kept for evaluation on real images (homography pairs made from them):
  no held-out photograph, nor another view of the same subject, is ever a texture.

Only real photographs are listed: drawings and renderings the packages also ship (the logos,
matplotlib's gift-box icon, the colour wheel, the binary horse, the Shepp-Logan phantom, the
checkerboard) are left out, as are the 102-pixel ``microaneurysms`` crop and the images that
need a download (scikit-image's ``pooch`` registry). ``chelsea`` and
``cat`` are the same photograph in scikit-image, so it is listed once; the motorcycle is a
stereo pair, of which the left view is used.

Example:
    >>> sorted(set(TRAIN_PHOTOS) & set(HELDOUT_PHOTOS))
    []
    >>> load_photo("camera").shape
    (512, 512)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Where each photograph comes from: ``(package, item)``; for scikit-image the ``skimage.data``
#: function, for matplotlib the file in its ``sample_data`` folder.
PHOTO_SOURCES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "astronaut"),
    "brick": ("skimage", "brick"),
    "camera": ("skimage", "camera"),
    "cell": ("skimage", "cell"),
    "clock": ("skimage", "clock"),
    "coins": ("skimage", "coins"),
    "grass": ("skimage", "grass"),
    "gravel": ("skimage", "gravel"),
    "hubble_deep_field": ("skimage", "hubble_deep_field"),
    "immunohistochemistry": ("skimage", "immunohistochemistry"),
    "moon": ("skimage", "moon"),
    "page": ("skimage", "page"),
    "retina": ("skimage", "retina"),
    "text": ("skimage", "text"),
    "chelsea": ("skimage", "chelsea"),
    "coffee": ("skimage", "coffee"),
    "rocket": ("skimage", "rocket"),
    "motorcycle": ("skimage", "stereo_motorcycle"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),
}

#: Photographs of everyday scenes with structure at several scales, kept for held-out evaluation.
HELDOUT_PHOTOS = ("chelsea", "coffee", "rocket", "motorcycle", "grace_hopper")
#: Every other photograph: the synthetic scenes' textures.
TRAIN_PHOTOS = tuple(name for name in PHOTO_SOURCES if name not in HELDOUT_PHOTOS)
PHOTO_SPLITS = {"train": TRAIN_PHOTOS, "heldout": HELDOUT_PHOTOS}


def load_photo(name: str) -> np.ndarray:
    """One photograph as shipped: (H, W) grey or (H, W, 3) RGB, uint8 (any alpha dropped).

    Raises:
        KeyError: ``name`` is not in ``PHOTO_SOURCES``.
    """
    package, item = PHOTO_SOURCES[name]
    if package == "skimage":
        from skimage import data as skdata

        image = getattr(skdata, item)()
        if isinstance(image, tuple):  # a stereo pair (left, right, disparity): the left view
            image = image[0]
    else:
        import cv2
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / item
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3]
    return np.ascontiguousarray(image.astype(np.uint8))
