"""Scene geometry: piecewise-planar rooms and outdoor plazas as lists of textured rectangles.

World frame z up, metres. ``indoor_scene`` builds a room with walls, posters, furniture boxes and
free-standing occluders; ``outdoor_scene`` a plaza with a landmark, a ring of buildings and street
furniture. The camera paths (``cameras``) are drawn first, so that the occluders can stand between
the cameras and what they look at, without swallowing a camera: each keeps clear of every camera
centre.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loftr.data.synthetic.textures import TEXTURE_SIZE, TextureBank


@dataclass(frozen=True)
class Scene:
    """A piecewise-planar scene: Q textured rectangles in the world frame (z up, metres).

    Rectangle q spans ``origin[q] + a * axis_u[q] + b * axis_v[q]`` for ``0 <= a <= size[q, 0]``
    and ``0 <= b <= size[q, 1]``; its texel is ``(a, b) * texels_per_metre[q] + tex_offset[q]``
    (texture wraps around).

    Attributes:
        kind: "indoor" or "outdoor".
        origin: (Q, 3) a corner, metres.
        axis_u: (Q, 3) unit edge direction.
        axis_v: (Q, 3) unit edge direction, orthogonal to ``axis_u``.
        size: (Q, 2) edge lengths along u and v, metres.
        texture: (Q,) index into the texture bank.
        texels_per_metre: (Q,) texture scale.
        tex_offset: (Q, 2) texel offset.
        albedo: (Q,) brightness factor.
        outward: (Q, 3) unit normal of the visible side of a one-sided rectangle (a closed box's
            face: culled when the camera is behind it), or zeros for a two-sided one.
        light: (3,) world position of the point light (indoor) or unit direction towards the sun
            (outdoor).
        bank: the textures.
    """

    kind: str
    origin: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    size: np.ndarray
    texture: np.ndarray
    texels_per_metre: np.ndarray
    tex_offset: np.ndarray
    albedo: np.ndarray
    outward: np.ndarray
    light: np.ndarray
    bank: TextureBank

    @property
    def num_quads(self) -> int:
        """Number of rectangles Q."""
        return int(self.origin.shape[0])


class _QuadList:
    """Accumulates textured rectangles while a scene is built."""

    def __init__(self, rng: np.random.Generator, bank: TextureBank) -> None:
        self.rng = rng
        self.bank = bank
        self.cols: dict[str, list[Any]] = {
            k: [] for k in ("origin", "u", "v", "size", "tex", "tpm", "albedo", "outward")
        }

    def add(
        self,
        origin: Sequence[float],
        axis_u: Sequence[float],
        axis_v: Sequence[float],
        width: float,
        height: float,
        *,
        period: tuple[float, float] = (1.5, 3.5),
        outward: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> None:
        """Add a rectangle; the texture repeats every ``period`` metres (drawn uniformly).

        ``outward`` is the normal of the side that can be seen (a closed box's face), or zero for a
        rectangle seen from both sides.
        """
        u = np.asarray(axis_u, np.float64)
        v = np.asarray(axis_v, np.float64)
        self.cols["origin"].append(np.asarray(origin, np.float64))
        self.cols["u"].append(u / np.linalg.norm(u))
        self.cols["v"].append(v / np.linalg.norm(v))
        self.cols["size"].append((float(width), float(height)))
        self.cols["tex"].append(int(self.rng.integers(self.bank.count)))
        self.cols["tpm"].append(TEXTURE_SIZE / self.rng.uniform(*period))
        self.cols["albedo"].append(self.rng.uniform(0.75, 1.0))
        self.cols["outward"].append(np.asarray(outward, np.float64))

    def add_box(
        self,
        centre: Sequence[float],
        half: Sequence[float],
        yaw: float,
        *,
        period: tuple[float, float] = (1.5, 3.5),
    ) -> None:
        """Add the four sides and the top of a box rotated by ``yaw`` about the vertical.

        The box spans ``centre +- half`` in its own axes (metres); its faces are one-sided.
        """
        c = np.asarray(centre, np.float64)
        hx, hy, hz = half
        ex = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        ey = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
        ez = np.array([0.0, 0.0, 1.0])
        base = c - hx * ex - hy * ey - hz * ez  # corner (-, -, -)
        kw: dict[str, Any] = {"period": period}
        self.add(base, ex, ez, 2 * hx, 2 * hz, outward=-ey, **kw)
        self.add(base + 2 * hy * ey, ex, ez, 2 * hx, 2 * hz, outward=ey, **kw)
        self.add(base, ey, ez, 2 * hy, 2 * hz, outward=-ex, **kw)
        self.add(base + 2 * hx * ex, ey, ez, 2 * hy, 2 * hz, outward=ex, **kw)
        self.add(base + 2 * hz * ez, ex, ey, 2 * hx, 2 * hy, outward=ez, **kw)

    def build(self, kind: str, light: np.ndarray) -> Scene:
        """Freeze the rectangles into a ``Scene``."""
        c = self.cols
        n = len(c["origin"])
        return Scene(
            kind=kind,
            origin=np.stack(c["origin"]),
            axis_u=np.stack(c["u"]),
            axis_v=np.stack(c["v"]),
            size=np.asarray(c["size"], np.float64),
            texture=np.asarray(c["tex"], np.int64),
            texels_per_metre=np.asarray(c["tpm"], np.float64),
            tex_offset=self.rng.uniform(0, TEXTURE_SIZE, size=(n, 2)),
            albedo=np.asarray(c["albedo"], np.float64),
            outward=np.stack(c["outward"]),
            light=np.asarray(light, np.float64),
            bank=self.bank,
        )


@dataclass(frozen=True)
class Room:
    """Extents of an indoor room: x in [0, width], y in [0, depth], z in [0, height], metres."""

    width: float
    depth: float
    height: float


#: Cameras keep this distance (metres) from the walls; furniture stays closer to the walls.
ROOM_CAMERA_MARGIN = 1.2
ROOM_FURNITURE_DEPTH = 1.0
#: Free-standing occluders per room (tables, screens, columns), drawn from [lo, hi).
ROOM_OCCLUDERS = (4, 9)
#: Metres an occluder's footprint keeps from every camera centre (indoor, outdoor).
ROOM_OCCLUDER_CLEARANCE = 0.5
PLAZA_OCCLUDER_CLEARANCE = 3.0
#: Positions tried per occluder before it is left out.
OCCLUDER_TRIES = 20


def random_room(rng: np.random.Generator) -> Room:
    """Draw the extents of a room: 4-7 m by 4-7 m, 2.5-3.2 m high."""
    return Room(rng.uniform(4.0, 7.0), rng.uniform(4.0, 7.0), rng.uniform(2.5, 3.2))


def camera_footprints(poses: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Ground positions (K, 2) and unit ground-plane viewing directions (K, 2) of the cameras
    with world-to-camera ``poses`` (4, 4); both empty for None."""
    if not poses:
        return np.zeros((0, 2)), np.zeros((0, 2))
    centres = np.stack([-p[:3, :3].T @ p[:3, 3] for p in poses])[:, :2]
    forwards = np.stack([p[2, :2] for p in poses])  # the camera's z axis in the world
    forwards /= np.maximum(np.linalg.norm(forwards, axis=1, keepdims=True), 1e-9)
    return centres, forwards


def _in_front(
    rng: np.random.Generator,
    cameras: tuple[np.ndarray, np.ndarray],
    reach: float,
    clearance: float,
    depth: float,
    side: float,
) -> np.ndarray | None:
    """A ground position in front of a random camera: ``reach + clearance`` to that plus
    ``depth`` m along its view, up to ``side`` m off it; None without cameras."""
    centres, forwards = cameras
    if len(centres) == 0:
        return None
    k = int(rng.integers(len(centres)))
    lateral = np.array([-forwards[k, 1], forwards[k, 0]]) * rng.uniform(-side, side)
    return centres[k] + (reach + clearance + rng.uniform(0.0, depth)) * forwards[k] + lateral


def _clear_of(xy: np.ndarray, reach: float, centres: np.ndarray, clearance: float) -> bool:
    """Whether a footprint of radius ``reach`` at ``xy`` keeps ``clearance`` m from every point
    of ``centres`` (K, 2)."""
    if len(centres) == 0:
        return True
    return bool(np.linalg.norm(centres - xy, axis=1).min() >= reach + clearance)


def _place_box(
    quads: _QuadList,
    half: tuple[float, float, float],
    sample_xy: Callable[[float], np.ndarray],
    centres: np.ndarray,
    clearance: float,
    **kw: Any,
) -> None:
    """Add a box standing on the ground at the first of up to ``OCCLUDER_TRIES`` positions drawn
    by ``sample_xy(reach)`` that keeps ``clearance`` m from the camera ``centres`` (K, 2); none
    if all of them are taken."""
    yaw = quads.rng.uniform(0, np.pi)
    reach = float(np.hypot(half[0], half[1]))
    for _ in range(OCCLUDER_TRIES):
        xy = sample_xy(reach)
        if _clear_of(xy, reach, centres, clearance):
            quads.add_box((xy[0], xy[1], half[2]), half, yaw, **kw)
            return


def indoor_scene(
    rng: np.random.Generator,
    bank: TextureBank,
    room: Room,
    cameras: Sequence[np.ndarray] | None = None,
) -> Scene:
    """A room: floor, ceiling, 4 walls, posters, furniture against the walls and free-standing
    occluders (tables, thin screens, columns) on the floor, most of them in the view of a camera
    (at most 1.5 m beyond the clearance it keeps from every camera).

    Args:
        rng: drives every random choice.
        bank: textures to draw from.
        room: the extents (``random_room``); cameras stay inside ``ROOM_CAMERA_MARGIN``.
        cameras: world-to-camera poses (4, 4) of the frames to be rendered: the occluders stand
            in their views, ``ROOM_OCCLUDER_CLEARANCE`` m clear of every one; None for none.

    Returns:
        The scene.
    """
    w, d, h = room.width, room.depth, room.height
    quads = _QuadList(rng, bank)
    quads.add((0, 0, 0), (1, 0, 0), (0, 1, 0), w, d)  # floor
    quads.add((0, 0, h), (1, 0, 0), (0, 1, 0), w, d)  # ceiling
    quads.add((0, 0, 0), (1, 0, 0), (0, 0, 1), w, h)  # wall y = 0
    quads.add((0, d, 0), (1, 0, 0), (0, 0, 1), w, h)  # wall y = d
    quads.add((0, 0, 0), (0, 1, 0), (0, 0, 1), d, h)  # wall x = 0
    quads.add((w, 0, 0), (0, 1, 0), (0, 0, 1), d, h)  # wall x = w
    walls = (  # (origin of the wall's u axis, u direction, inward normal, wall length)
        (np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), w),
        (np.array([0.0, d]), np.array([1.0, 0.0]), np.array([0.0, -1.0]), w),
        (np.array([0.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 0.0]), d),
        (np.array([w, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), d),
    )
    # Posters 2 cm off the walls: more photographs at eye height.
    for _ in range(int(rng.integers(2, 5))):
        start, along, inward, length = walls[int(rng.integers(4))]
        pw, ph = rng.uniform(0.5, 1.4), rng.uniform(0.4, 1.0)
        a0 = rng.uniform(0.1, max(0.2, length - pw - 0.1))
        xy = start + a0 * along + 0.02 * inward
        z0 = rng.uniform(0.9, max(1.0, h - ph - 0.2))
        quads.add((xy[0], xy[1], z0), (along[0], along[1], 0), (0, 0, 1), pw, ph, period=(pw, pw))
    # Furniture: boxes against the walls, never deeper than ROOM_FURNITURE_DEPTH.
    for _ in range(int(rng.integers(3, 6))):
        start, along, inward, length = walls[int(rng.integers(4))]
        half_len = rng.uniform(0.25, min(1.0, length / 2 - 0.1))
        half_dep = rng.uniform(0.2, ROOM_FURNITURE_DEPTH / 2)
        half_hgt = rng.uniform(0.2, 1.0)
        a0 = rng.uniform(half_len + 0.05, length - half_len - 0.05)
        xy = start + a0 * along + (half_dep + rng.uniform(0.0, 0.03)) * inward
        yaw = float(np.arctan2(along[1], along[0]))
        quads.add_box((xy[0], xy[1], half_hgt), (half_len, half_dep, half_hgt), yaw)

    # Occluders: objects between the cameras and the walls, so that pairs see real occlusion.
    footprints = camera_footprints(cameras)

    def on_floor(reach: float) -> np.ndarray:
        lo, hi = np.array([reach + 0.05] * 2), np.array([w - reach - 0.05, d - reach - 0.05])
        seen = _in_front(rng, footprints, reach, ROOM_OCCLUDER_CLEARANCE, 1.5, 0.5)
        if seen is not None and rng.random() < 0.75:
            return np.clip(seen, lo, hi)
        return rng.uniform(lo, hi)

    for _ in range(int(rng.integers(*ROOM_OCCLUDERS))):
        kind = int(rng.integers(3))
        if kind == 0:  # table or cabinet
            half = (rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.25, 0.6))
        elif kind == 1:  # a thin screen or partition
            half = (rng.uniform(0.3, 0.8), 0.02, rng.uniform(0.5, 1.0))
        else:  # a column up to the ceiling
            r = rng.uniform(0.1, 0.25)
            half = (r, r, h / 2)
        _place_box(quads, half, on_floor, footprints[0], ROOM_OCCLUDER_CLEARANCE)
    light = np.array([w * rng.uniform(0.3, 0.7), d * rng.uniform(0.3, 0.7), h - 0.3])
    return quads.build("indoor", light)


#: Outdoor plaza radii (metres from the landmark's centre).
PLAZA_LANDMARK_REACH = 11.0
PLAZA_CAMERA_RADII = (14.0, 26.0)
PLAZA_RING_RADII = (36.0, 46.0)
PLAZA_GROUND_HALF = 60.0
#: Street furniture (kiosks, posts, low walls) between the landmark and the ring, [lo, hi).
PLAZA_OCCLUDERS = (4, 9)
PLAZA_OCCLUDER_RADII = (10.0, 30.0)


def outdoor_scene(
    rng: np.random.Generator, bank: TextureBank, cameras: Sequence[np.ndarray] | None = None
) -> Scene:
    """An outdoor plaza: ground plane, a central landmark, a ring of buildings, street furniture,
    sky above.

    The landmark is a few boxes of different heights with facades at several depths (boxes
    within ``PLAZA_LANDMARK_REACH`` m of the origin, plus columns in front); the ring of buildings
    stands between ``PLAZA_RING_RADII`` m, so seen from the camera ring the depth spans about
    5-60 m. Kiosks, posts and low walls stand in the cameras' views (at most 10 m beyond the
    clearance) or anywhere between ``PLAZA_OCCLUDER_RADII`` m, always
    ``PLAZA_OCCLUDER_CLEARANCE`` m clear of every camera.

    Args:
        rng: drives every random choice.
        bank: textures to draw from.
        cameras: world-to-camera poses (4, 4) of the frames to be rendered; None for none.

    Returns:
        The scene; ``light`` is the unit direction towards the sun.
    """
    quads = _QuadList(rng, bank)
    g = PLAZA_GROUND_HALF
    quads.add((-g, -g, 0.0), (1, 0, 0), (0, 1, 0), 2 * g, 2 * g, period=(3.0, 6.0))
    # Landmark: boxes whose corners stay within PLAZA_LANDMARK_REACH of the origin.
    for _ in range(int(rng.integers(2, 5))):
        r, phi = rng.uniform(0.0, 3.0), rng.uniform(0, 2 * np.pi)
        hx, hy = rng.uniform(2.0, 5.5, size=2)
        hz = rng.uniform(3.0, 12.0)
        quads.add_box(
            (r * np.cos(phi), r * np.sin(phi), hz),
            (hx, hy, hz),
            rng.uniform(0, np.pi),
            period=(4.0, 12.0),
        )
    for _ in range(int(rng.integers(2, 6))):  # columns: depth steps in front of the facades
        r, phi = rng.uniform(7.5, 9.5), rng.uniform(0, 2 * np.pi)
        hz = rng.uniform(2.0, 7.0)
        quads.add_box(
            (r * np.cos(phi), r * np.sin(phi), hz),
            (0.5, 0.5, hz),
            rng.uniform(0, np.pi),
            period=(1.0, 3.0),
        )
    # Ring of buildings facing the centre, with gaps.
    n_ring = int(rng.integers(9, 14))
    for k in range(n_ring):
        phi = 2 * np.pi * (k + rng.uniform(-0.2, 0.2)) / n_ring
        r = rng.uniform(*PLAZA_RING_RADII)
        hx = rng.uniform(0.35, 0.5) * 2 * np.pi * r / n_ring  # along the ring
        hy = rng.uniform(3.0, 5.0)
        hz = rng.uniform(4.0, 12.0)
        quads.add_box(
            (r * np.cos(phi), r * np.sin(phi), hz),
            (hx, hy, hz),
            phi + np.pi / 2,
            period=(6.0, 16.0),
        )

    footprints = camera_footprints(cameras)

    def in_plaza(reach: float) -> np.ndarray:
        seen = _in_front(rng, footprints, reach, PLAZA_OCCLUDER_CLEARANCE, 10.0, 3.0)
        if seen is not None and rng.random() < 0.6:
            return seen
        r, phi = rng.uniform(*PLAZA_OCCLUDER_RADII), rng.uniform(0, 2 * np.pi)
        return np.array([r * np.cos(phi), r * np.sin(phi)])

    for _ in range(int(rng.integers(*PLAZA_OCCLUDERS))):
        kind = int(rng.integers(3))
        if kind == 0:  # kiosk
            half = (rng.uniform(1.0, 2.0), rng.uniform(1.0, 2.0), rng.uniform(1.0, 1.8))
        elif kind == 1:  # post or tree trunk
            r = rng.uniform(0.2, 0.4)
            half = (r, r, rng.uniform(2.0, 4.0))
        else:  # low wall or hedge
            half = (rng.uniform(2.0, 5.0), rng.uniform(0.2, 0.4), rng.uniform(0.5, 1.2))
        _place_box(quads, half, in_plaza, footprints[0], PLAZA_OCCLUDER_CLEARANCE, period=(1, 3))
    sun = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.6, 1.5)])
    return quads.build("outdoor", sun / np.linalg.norm(sun))
