"""The rasteriser.

``render_view`` ray-casts a ``Scene`` into a pinhole camera: exact depth per pixel (a z-buffer over
ray-plane intersections) and a shaded, mip-mapped grey image. How much of one view another sees is
measured in ``loftr.data.covisibility``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loftr.data.synthetic.scenes import Scene
from loftr.data.synthetic.textures import TextureBank


@dataclass(frozen=True)
class RenderedView:
    """One rendered view.

    Attributes:
        image: (H, W) uint8 grey image.
        depth: (H, W) float32 camera-frame z in metres; 0 where no surface was hit (sky).
    """

    image: np.ndarray
    depth: np.ndarray


_NEAR = 0.05  # metres: surfaces closer to the camera plane are clipped


def _clip_near(corners: np.ndarray, near: float) -> np.ndarray:
    """Clip a convex polygon (N, 3) in the camera frame to the half-space z >= ``near``."""
    out = []
    n = len(corners)
    for i in range(n):
        p, q = corners[i], corners[(i + 1) % n]
        p_in, q_in = p[2] >= near, q[2] >= near
        if p_in:
            out.append(p)
        if p_in != q_in:
            s = (near - p[2]) / (q[2] - p[2])
            out.append(p + s * (q - p))
    return np.asarray(out).reshape(-1, 3)


def _screen_bbox(
    corners: np.ndarray, k: np.ndarray, width: int, height: int, near: float
) -> tuple[int, int, int, int] | None:
    """Pixel bounding box ``(x0, x1, y0, y1)`` (inclusive) of a polygon (N, 3) in the camera frame.

    Returns None when the polygon lies behind the near plane or outside the image.
    """
    poly = _clip_near(corners, near)
    if len(poly) == 0:
        return None
    x = k[0, 0] * poly[:, 0] / poly[:, 2] + k[0, 2]
    y = k[1, 1] * poly[:, 1] / poly[:, 2] + k[1, 2]
    x0, x1 = max(0, int(np.floor(x.min())) - 1), min(width - 1, int(np.ceil(x.max())) + 1)
    y0, y1 = max(0, int(np.floor(y.min())) - 1), min(height - 1, int(np.ceil(y.max())) + 1)
    if x0 > x1 or y0 > y1:
        return None
    return x0, x1, y0, y1


def _sample_textures(
    bank: TextureBank, tex: np.ndarray, s: np.ndarray, t: np.ndarray, level: np.ndarray
) -> np.ndarray:
    """Bilinear, wrapping texture look-up at texel coordinates of level 0.

    Args:
        bank: the textures.
        tex: (M,) texture index per sample.
        s: (M,) column coordinate in level-0 texels (texel centres at integer + 0.5).
        t: (M,) row coordinate in level-0 texels.
        level: (M,) mip level per sample.

    Returns:
        (M,) float32 values in [0, 1].
    """
    out = np.empty(s.shape, np.float32)
    for lv in np.flatnonzero(np.bincount(level)):
        sel = level == lv
        data = bank.levels[int(lv)]
        size = data.shape[-1]
        flat = data.reshape(-1)
        scale = 0.5**lv
        x = s[sel] * scale - 0.5
        y = t[sel] * scale - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
        x0 = x0.astype(np.int64) % size
        y0 = y0.astype(np.int64) % size
        x1, y1 = (x0 + 1) % size, (y0 + 1) % size
        base = tex[sel] * size * size
        v00 = flat[base + y0 * size + x0]
        v01 = flat[base + y0 * size + x1]
        v10 = flat[base + y1 * size + x0]
        v11 = flat[base + y1 * size + x1]
        top = v00 + fx * (v01 - v00)
        bot = v10 + fx * (v11 - v10)
        out[sel] = top + fy * (bot - top)
    return out


def render_view(
    scene: Scene,
    K: np.ndarray,
    T_w2c: np.ndarray,
    width: int,
    height: int,
    *,
    rng: np.random.Generator | None = None,
) -> RenderedView:
    """Ray-cast ``scene`` into a pinhole camera with exact depth.

    Every pixel centre ``(x, y)`` (integers) casts the ray ``K^-1 [x, y, 1]``; the depth is the
    camera-frame z of the nearest rectangle hit in front of the camera (z-buffer over exact
    ray-plane intersections). The grey value is the rectangle's mip-mapped, bilinearly sampled
    texture times a Lambertian shade (point light indoors, sun outdoors); rays that hit nothing see
    a sky gradient with depth 0.

    Args:
        scene: the scene.
        K: (3, 3) intrinsics in pixels (no skew).
        T_w2c: (4, 4) world-to-camera pose.
        width: image width W in pixels.
        height: image height H in pixels.
        rng: if given, adds a small per-image gain, offset and sensor noise (photometric only; the
            depth is unaffected).

    Returns:
        A ``RenderedView`` with the (H, W) uint8 image and (H, W) float32 depth in metres.

    Example:
        >>> bank = make_texture_bank(0)  # doctest: +SKIP
        >>> rng = np.random.default_rng(0)  # doctest: +SKIP
        >>> scene = indoor_scene(rng, bank, random_room(rng))  # doctest: +SKIP
    """
    k = np.asarray(K, np.float64)
    pose = np.asarray(T_w2c, np.float64)
    rot, trans = pose[:3, :3], pose[:3, 3]
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    ray_x = (np.arange(width, dtype=np.float64) - cx) / fx  # ray (ray_x, ray_y, 1)
    ray_y = (np.arange(height, dtype=np.float64) - cy) / fy

    origin = scene.origin @ rot.T + trans  # everything in the camera frame
    axis_u = scene.axis_u @ rot.T
    axis_v = scene.axis_v @ rot.T
    normal = np.cross(axis_u, axis_v)
    # a box face whose outer side points away from the camera (centre at the origin) is hidden
    front = np.einsum("ij,ij->i", scene.outward @ rot.T, -origin) > 0
    front |= ~scene.outward.any(axis=1)
    size = scene.size
    corners = np.stack(
        [
            origin,
            origin + axis_u * size[:, :1],
            origin + axis_u * size[:, :1] + axis_v * size[:, 1:],
            origin + axis_v * size[:, 1:],
        ],
        axis=1,
    )  # (Q, 4, 3)

    zbuf = np.full((height, width), np.inf)
    quad_id = np.full((height, width), -1, np.int64)
    coord_a = np.zeros((height, width))
    coord_b = np.zeros((height, width))
    eps = 1e-6  # metres: closes cracks where rectangles share an edge
    for q in np.flatnonzero(front):
        box = _screen_bbox(corners[q], k, width, height, _NEAR)
        if box is None:
            continue
        x0, x1, y0, y1 = box
        rx = ray_x[None, x0 : x1 + 1]
        ry = ray_y[y0 : y1 + 1, None]
        n, o, u, v = normal[q], origin[q], axis_u[q], axis_v[q]
        denom = n[0] * rx + n[1] * ry + n[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = float(n @ o) / denom  # ray parameter = camera z, since the ray has z = 1
        a = u[0] * rx + u[1] * ry + u[2]  # in place from here: fewer temporaries
        a *= z
        a -= float(u @ o)
        b = v[0] * rx + v[1] * ry + v[2]
        b *= z
        b -= float(v @ o)
        zb = zbuf[y0 : y1 + 1, x0 : x1 + 1]
        with np.errstate(invalid="ignore"):
            hit = z > _NEAR
            hit &= z < zb
            hit &= a >= -eps
            hit &= a <= size[q, 0] + eps
            hit &= b >= -eps
            hit &= b <= size[q, 1] + eps
        np.copyto(zb, z, where=hit)
        np.copyto(quad_id[y0 : y1 + 1, x0 : x1 + 1], q, where=hit)
        np.copyto(coord_a[y0 : y1 + 1, x0 : x1 + 1], a, where=hit)
        np.copyto(coord_b[y0 : y1 + 1, x0 : x1 + 1], b, where=hit)

    image = np.empty((height, width), np.float32)
    idx = np.flatnonzero(quad_id >= 0)
    rows, cols = np.divmod(idx, width)
    q = quad_id.reshape(-1)[idx]
    z = zbuf.reshape(-1)[idx]
    if len(idx):
        rays = np.stack([ray_x[cols], ray_y[rows], np.ones(len(idx))], axis=1)
        ray_len = np.linalg.norm(rays, axis=1)
        n = normal[q]
        n_dot_d = np.einsum("ij,ij->i", n, rays)
        n = n * -np.sign(n_dot_d)[:, None]  # two-sided: the normal facing the camera
        cos_view = np.abs(n_dot_d) / ray_len
        tpm = scene.texels_per_metre[q]
        # texels covered by one pixel (geometric mean of the anisotropic footprint)
        footprint = tpm * z / (np.sqrt(fx * fy) * np.sqrt(np.maximum(cos_view, 0.02)))
        level = np.clip(np.floor(np.log2(np.maximum(footprint, 1.0)) + 0.5), 0, None)
        level = np.minimum(level, len(scene.bank.levels) - 1).astype(np.int64)
        s = coord_a.reshape(-1)[idx] * tpm + scene.tex_offset[q, 0]
        t = coord_b.reshape(-1)[idx] * tpm + scene.tex_offset[q, 1]
        value = _sample_textures(scene.bank, scene.texture[q], s, t, level)
        if scene.kind == "indoor":
            light = rot @ scene.light + trans
            to_light = light[None, :] - rays * z[:, None]
            dist = np.linalg.norm(to_light, axis=1)
            lambert = np.maximum(np.einsum("ij,ij->i", n, to_light) / dist, 0.0)
            shade = 0.55 + 0.9 * lambert / (1.0 + (dist / 4.0) ** 2)
        else:
            sun = rot @ scene.light
            shade = 0.7 + 0.5 * np.maximum(n @ sun, 0.0)
        image.reshape(-1)[idx] = value * scene.albedo[q] * shade
    # Sky: brighter towards the zenith; no depth there.
    sky = quad_id < 0
    if sky.any():
        up = rot @ np.array([0.0, 0.0, 1.0])
        rx = np.broadcast_to(ray_x[None, :], sky.shape)[sky]
        ry = np.broadcast_to(ray_y[:, None], sky.shape)[sky]
        elevation = (up[0] * rx + up[1] * ry + up[2]) / np.sqrt(rx**2 + ry**2 + 1.0)
        image[sky] = 0.7 + 0.25 * elevation
    if rng is not None:
        gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-0.04, 0.04)
        image = image * gain + offset + rng.normal(0.0, 1.5 / 255, size=image.shape)
    image_u8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    depth = np.where(quad_id >= 0, zbuf, 0.0).astype(np.float32)
    return RenderedView(image=image_u8, depth=depth)
