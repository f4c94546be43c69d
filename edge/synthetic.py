"""Procedural street scenes with exact per-pixel labels.

What it is for:

* a **test fixture that needs no dataset**: :func:`render_scene` returns a driving
  scene (image, Cityscapes labelIds, Cityscapes instanceIds) covering all eight
  categories, so readers, training, evaluation, conversion and the runtime can be
  exercised end to end on any machine (``train/synthetic_dataset.py`` writes such
  scenes to disk in the Cityscapes, CamVid and folder layouts);
* the **built-in demo video source** of the runtime (``edge-seg run --source demo``):
  :func:`render_clip` yields frames of a camera driving down a street at
  :data:`FPS` frames per second.

Every scene is a small 3-D world seen through a pinhole camera over a flat ground:
a perspective road with lanes and markings running to a vanishing point, curbs and
sidewalks, buildings with windows and gabled houses, walls, fences and hedges,
trees and grass, street lamps, traffic signs and lights, bins and bollards, parked
and moving cars, walking pedestrians, a sky with a gradient and clouds, a distant
skyline and usually the ego vehicle's hood. Everything is drawn back to front with
hard-edged polygons (``cv2.LINE_8``) into the image *and* into the instance map
with the same vertices, so labels agree with the pixels exactly; the only image-only
steps are per-pixel (exposure, vignetting, sensor grain, a 3x3 blur).

Determinism: everything derives from ``np.random.default_rng`` seeded with ``seed``
(world layout from ``[seed, chunk]``, each car from ``[seed, lane, slot]``), so
``render_scene(s)`` and frame ``i`` of ``render_clip(s, n)`` are functions of
``(s, i, size)`` only. ``render_scene(s)`` is frame 0 of ``render_clip(s, ...)``.

numpy and OpenCV only: this module is part of the device runtime.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from .labels import cityscapes_lut

__all__ = ["Scene", "render_scene", "render_clip", "FPS", "DEFAULT_SIZE"]

FPS = 30.0                # frame rate of render_clip (seconds per frame = 1 / FPS)
DEFAULT_SIZE = (1024, 512)  # (width, height)

# Cityscapes labelIds drawn here (official table: edge/labels.py).
UNLABELED, EGO_VEHICLE, STATIC = 0, 1, 4
ROAD, SIDEWALK = 7, 8
BUILDING, WALL, FENCE = 11, 12, 13
POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 17, 19, 20
VEGETATION, TERRAIN, SKY = 21, 22, 23
PERSON, CAR = 24, 26
INSTANCE_LABELS = (PERSON, CAR)

_CAT_LUT = cityscapes_lut()
_LABEL_OF = np.zeros(34 * 1000, np.uint8)  # instanceIds value -> labelId
_LABEL_OF[:34] = np.arange(34)
for _lab in INSTANCE_LABELS:
    _LABEL_OF[_lab * 1000:(_lab + 1) * 1000] = _lab


@dataclass
class Scene:
    image: np.ndarray         # HxWx3 uint8, BGR (OpenCV order)
    label_ids: np.ndarray     # HxW uint8, Cityscapes labelIds
    instance_ids: np.ndarray  # HxW int32, labelId*1000+k on person/car instances, labelId elsewhere

    @property
    def categories(self) -> np.ndarray:
        """HxW uint8 catIds (0 void .. 7 vehicle)."""
        return _CAT_LUT[self.label_ids]


def render_scene(seed: int, size: tuple[int, int] = DEFAULT_SIZE) -> Scene:
    """One street scene, deterministic in ``seed``; ``size`` is (width, height)."""
    return _World(seed, size).render(0)


def render_clip(seed: int, n_frames: int, size: tuple[int, int] = DEFAULT_SIZE) -> Iterator[Scene]:
    """``n_frames`` consecutive frames (at :data:`FPS`) of the camera driving forward
    through the world of ``seed``: road markings and roadside objects stream outward
    and grow, other cars and pedestrians move on their own. Frame ``i`` depends only
    on ``(seed, i, size)``."""
    n_frames = int(n_frames)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    world = _World(seed, size)
    return (world.render(i) for i in range(n_frames))


# ============================================================================ drawing

_SHIFT = 3                 # fixed-point bits for sub-pixel vertex positions
_ONE = 1 << _SHIFT
_Z_NEAR = 1.0              # metres: geometry closer than this is clipped away
_S_FAR = 200.0             # metres: ground and buildings end here (skyline beyond)
_S_OBJ = 150.0             # metres: compact objects (cars, people, poles) end here
_S_DETAIL = 100.0          # metres: dashes, fence posts and other small details end here
_S_WINDOWS = 130.0         # metres: building windows end here
_CHUNK = 40.0              # metres of street generated from one rng
_S_GRID = np.geomspace(_Z_NEAR, _S_FAR, 40)  # shared samples along curved ground edges


def _clip_poly(poly, axis, bound, keep_greater):
    """One Sutherland-Hodgman pass over a list of points."""
    out = []
    if not poly:
        return out
    prev = poly[-1]
    pin = prev[axis] >= bound if keep_greater else prev[axis] <= bound
    for cur in poly:
        cin = cur[axis] >= bound if keep_greater else cur[axis] <= bound
        if cin != pin:
            t = (bound - prev[axis]) / (cur[axis] - prev[axis])
            out.append([p + t * (c - p) for p, c in zip(prev, cur)])
        if cin:
            out.append(cur)
        prev, pin = cur, cin
    return out


class _Canvas:
    """Image + instance map drawn with identical rasterisation.

    ``value`` is the instanceIds value of the primitive (labelId, or labelId*1000+k).
    In ``flat`` mode the image gets a colour encoding the value instead of the
    natural colour (B = labelId, G = k mod 256, R = 255): tests use it to prove the
    image and the label map were drawn with the same geometry."""

    def __init__(self, w: int, h: int, flat: bool):
        self.w, self.h, self.flat = w, h, flat
        self.img = np.empty((h, w, 3), np.uint8)
        self.ids = np.empty((h, w), np.uint16)  # instanceIds values (< 34000); int32 on output
        self.g = float(max(w, h))  # guard band around the image for clipping
        self._k = {lab: 0 for lab in INSTANCE_LABELS}

    def new_instance(self, label: int) -> int:
        k = self._k[label]
        self._k[label] = k + 1
        return label * 1000 + min(k, 999)

    def _color(self, color, value):
        if self.flat:
            if value >= 1000:
                return (value // 1000, (value % 1000) % 256, 255)
            return (value, 0, 255)
        return color

    def fill(self, color, value):
        self.img[:] = self._color(color, value)
        self.ids[:] = value

    def _prep(self, p):
        """Cull or guard-clip one (N,2) float polygon; fixed-point int32 or None."""
        if p is None or len(p) < 3:
            return None
        lo, hi = p.min(0), p.max(0)
        if hi[0] < -1 or hi[1] < -1 or lo[0] > self.w + 1 or lo[1] > self.h + 1:
            return None
        g = self.g
        if lo[0] < -g or lo[1] < -g or hi[0] > self.w + g or hi[1] > self.h + g:
            q = p.tolist()
            for axis, bound, keep in ((0, -g, True), (0, self.w + g, False),
                                      (1, -g, True), (1, self.h + g, False)):
                q = _clip_poly(q, axis, bound, keep)
            if len(q) < 3:
                return None
            p = np.asarray(q)
        return np.rint(p * _ONE).astype(np.int32)

    def poly(self, pts, color, value):
        """Fill one polygon (N,2) or several (list of (N,2) / (M,N,2) array)."""
        if isinstance(pts, np.ndarray) and pts.ndim == 2:
            pts = (pts,)
        polys = [q for q in (self._prep(p) for p in pts) if q is not None]
        if polys:
            cv2.fillPoly(self.img, polys, self._color(color, value), cv2.LINE_8, _SHIFT)
            cv2.fillPoly(self.ids, polys, value, cv2.LINE_8, _SHIFT)

    def batch(self, xy, spans):
        """Polygons sharing one (N,2) point array: spans of (start, stop, colour, value),
        drawn in order. One cull / fixed-point conversion for the whole object."""
        if not spans:
            return
        lo, hi = xy.min(0), xy.max(0)
        if hi[0] < -1 or hi[1] < -1 or lo[0] > self.w + 1 or lo[1] > self.h + 1:
            return
        g = self.g
        if lo[0] < -g or lo[1] < -g or hi[0] > self.w + g or hi[1] > self.h + g:
            for a, b, color, value in spans:
                self.poly(xy[a:b], color, value)
            return
        q = np.rint(xy * _ONE).astype(np.int32)
        img, ids = self.img, self.ids
        for a, b, color, value in spans:
            p = [q[a:b]]
            cv2.fillPoly(img, p, self._color(color, value), cv2.LINE_8, _SHIFT)
            cv2.fillPoly(ids, p, value, cv2.LINE_8, _SHIFT)

    def polys_batch(self, arr, color, value):
        """(M,N,2) polygons that are small (windows, dashes): cull by bbox only."""
        if len(arr) == 0:
            return
        lo, hi = arr.min(1), arr.max(1)
        keep = (hi[:, 0] >= -1) & (hi[:, 1] >= -1) & (lo[:, 0] <= self.w + 1) & (lo[:, 1] <= self.h + 1)
        g = self.g
        keep &= (lo[:, 0] > -g) & (lo[:, 1] > -g) & (hi[:, 0] < self.w + g) & (hi[:, 1] < self.h + g)
        if keep.any():
            q = np.rint(arr[keep] * _ONE).astype(np.int32)
            cv2.fillPoly(self.img, list(q), self._color(color, value), cv2.LINE_8, _SHIFT)
            cv2.fillPoly(self.ids, list(q), value, cv2.LINE_8, _SHIFT)

    def polys_groups(self, arr, keep, groups, value):
        """(M,N,2) small polygons drawn in colour groups: ``groups`` of (start, stop,
        colour) over ``arr``; ``keep`` (M,) masks polygons out. One cull and conversion."""
        lo, hi = arr.min(1), arr.max(1)
        g = self.g
        keep = keep & (hi[:, 0] >= -1) & (hi[:, 1] >= -1) & (lo[:, 0] <= self.w + 1) & (lo[:, 1] <= self.h + 1) \
            & (lo[:, 0] > -g) & (lo[:, 1] > -g) & (hi[:, 0] < self.w + g) & (hi[:, 1] < self.h + g)
        if not keep.any():
            return
        q = np.rint(arr * _ONE).astype(np.int32)
        for a, e, color in groups:
            k = keep[a:e]
            if k.any():
                polys = list(q[a:e][k])
                cv2.fillPoly(self.img, polys, self._color(color, value), cv2.LINE_8, _SHIFT)
                cv2.fillPoly(self.ids, polys, value, cv2.LINE_8, _SHIFT)

    def circle(self, x, y, r, color, value):
        if x + r < -1 or y + r < -1 or x - r > self.w + 1 or y - r > self.h + 1 or r > 4 * self.g:
            return
        c = (int(round(x * _ONE)), int(round(y * _ONE)))
        rr = max(int(round(r * _ONE)), _ONE // 2)
        cv2.circle(self.img, c, rr, self._color(color, value), -1, cv2.LINE_8, _SHIFT)
        cv2.circle(self.ids, c, rr, value, -1, cv2.LINE_8, _SHIFT)

    def half_disc(self, x, y, rx, ry, color, value):
        """Upper half of an ellipse (hair)."""
        if x + rx < -1 or y + ry < -1 or x - rx > self.w + 1 or y - ry > self.h + 1 or rx > 4 * self.g:
            return
        c = (int(round(x * _ONE)), int(round(y * _ONE)))
        ax = (max(int(round(rx * _ONE)), 1), max(int(round(ry * _ONE)), 1))
        cv2.ellipse(self.img, c, ax, 0, 180, 360, self._color(color, value), -1, cv2.LINE_8, _SHIFT)
        cv2.ellipse(self.ids, c, ax, 0, 180, 360, value, -1, cv2.LINE_8, _SHIFT)

    def lines(self, segs, color, value):
        """1-pixel segments, (M,2,2); only for small near details (paving, mesh)."""
        if len(segs) == 0:
            return
        g = self.g
        keep = (np.abs(segs[..., 0]).max(1) < self.w + g) & (np.abs(segs[..., 1]).max(1) < self.h + g)
        if keep.any():
            q = list(np.rint(segs[keep] * _ONE).astype(np.int32))
            cv2.polylines(self.img, q, False, self._color(color, value), 1, cv2.LINE_8, _SHIFT)
            cv2.polylines(self.ids, q, False, value, 1, cv2.LINE_8, _SHIFT)


# ============================================================================ palettes (BGR)

_SKIES = {  # (top, horizon) BGR
    "clear": ((205, 140, 75), (238, 218, 196)),
    "hazy": ((200, 165, 130), (228, 222, 214)),
    "overcast": ((182, 178, 172), (214, 212, 208)),
    "dusk": ((150, 95, 75), (150, 185, 235)),
}
_WALLS = ((150, 170, 192), (122, 126, 132), (72, 88, 142), (200, 204, 208), (160, 182, 204),
          (96, 100, 110), (132, 150, 176), (172, 192, 216), (108, 120, 150), (140, 158, 142),
          (88, 112, 168), (180, 178, 170))
_ROOFS = ((52, 62, 128), (62, 62, 68), (72, 84, 104), (90, 90, 96), (48, 70, 110))
_CARS = ((235, 235, 232), (185, 185, 182), (120, 122, 124), (35, 35, 38), (110, 50, 25),
         (40, 40, 170), (50, 80, 40), (160, 175, 190), (170, 110, 40), (60, 60, 60), (30, 30, 110),
         (140, 130, 120))
_CLOTHES = ((30, 30, 32), (60, 60, 60), (120, 80, 40), (40, 40, 130), (200, 200, 200),
            (90, 110, 130), (50, 90, 50), (150, 100, 70), (30, 40, 80), (170, 170, 60),
            (80, 60, 120), (40, 120, 200))
_SKIN = ((120, 150, 195), (95, 125, 170), (60, 85, 120), (150, 175, 220), (80, 105, 145))
_HAIR = ((20, 25, 30), (30, 45, 70), (50, 80, 120), (140, 160, 180), (25, 30, 45))
_GREENS = ((40, 100, 55), (50, 118, 72), (34, 84, 46), (62, 128, 96), (40, 108, 150), (45, 110, 90))
_GRASS = ((62, 128, 90), (70, 136, 112), (78, 128, 140), (58, 112, 96))
_STATIC_COLS = ((40, 70, 40), (60, 60, 62), (30, 30, 30), (120, 120, 118), (40, 110, 180))
_AWNINGS = ((40, 40, 160), (120, 60, 20), (40, 120, 40), (60, 60, 60))


class _Rand:
    """Scalar draws from ``np.random.default_rng(seed)``, fetched in batches: the
    world generator makes thousands of small draws, which numpy makes slow one by one."""

    def __init__(self, seed):
        self.gen = np.random.default_rng(seed)
        self._buf: list[float] = []

    def random(self) -> float:
        if not self._buf:
            self._buf = self.gen.random(256).tolist()
            self._buf.reverse()
        return self._buf.pop()

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def integers(self, n: int) -> int:
        return min(int(self.random() * n), n - 1)

    def normal(self, mu: float = 0.0, sd: float = 1.0) -> float:
        u1, u2 = self.random(), self.random()
        return mu + sd * math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2 * math.pi * u2)

    def poisson(self, lam: float) -> int:
        limit, k, p = math.exp(-lam), 0, self.random()
        while p > limit:
            k += 1
            p *= self.random()
        return k


def _jit(r: _Rand, color, amount=12.0, scale=(0.9, 1.1)):
    """A random variation of ``color``: overall scale plus per-channel noise."""
    k = r.uniform(*scale)
    a = 3.4 * amount  # uniform noise with the standard deviation ``amount``
    return tuple(min(255.0, max(0.0, c * k + a * (r.random() - 0.5))) for c in color)


def _mul(color, k):
    return tuple(min(255.0, max(0.0, c * k)) for c in color)


def _mix(a, b, t):
    return tuple(x * (1 - t) + y * t for x, y in zip(a, b))


def _pick(r: _Rand, seq):
    return seq[r.integers(len(seq))]


# ============================================================================ world

_POST_CACHE: dict[tuple[int, int], np.ndarray] = {}
_POST_MARGIN = 32


def _post_map(w: int, h: int) -> np.ndarray:
    """Image-only effects for one frame size, built once per process: vignetting,
    low-frequency blotches and sensor grain as a 128-centred offset map a little
    larger than the frame (each frame uses a different crop)."""
    post = _POST_CACHE.get((w, h))
    if post is None:
        m = _POST_MARGIN
        g = np.random.default_rng(20240611)
        yy = ((np.arange(h + m, dtype=np.float32) - (h + m) / 2) / (h / 2)) ** 2
        xx = ((np.arange(w + m, dtype=np.float32) - (w + m) / 2) / (w / 2)) ** 2
        vign = -9.0 * (yy[:, None] + xx[None, :])
        low = g.standard_normal((max(h // 32, 2), max(w // 32, 2)), dtype=np.float32)
        low = cv2.resize(low, (w + m, h + m), interpolation=cv2.INTER_CUBIC) * 2.5
        grain = g.standard_normal((h + m, w + m), dtype=np.float32) * 4.0
        mono = np.clip(128 + vign + low + grain, 0, 255).astype(np.uint8)
        post = _POST_CACHE[(w, h)] = cv2.merge((mono, mono, mono))
        if len(_POST_CACHE) > 8:
            _POST_CACHE.pop(next(iter(_POST_CACHE)))
    return post


# vertex indices of the faces of a box / frustum: near, far, left, right, top
_BOX_FACES = np.array(((0, 1, 2, 3), (4, 5, 6, 7), (0, 4, 7, 3), (1, 5, 6, 2), (3, 2, 6, 7)))


class _World:
    """The street of one seed: global parameters, lazily generated 40 m chunks of
    roadside content, lanes of traffic. ``render(i)`` draws frame ``i``.

    Coordinates: ``s`` metres ahead along the road, ``d`` metres to the right of the
    ego lane centre, ``h`` metres up. The road may curve (constant curvature), which
    the projection applies as a lateral offset ``curv * s^2 / 2``."""

    def __init__(self, seed: int, size=DEFAULT_SIZE, flat: bool = False):
        w, h = (int(v) for v in size)
        if w < 16 or h < 16:
            raise ValueError(f"size must be (width, height) of at least 16x16, got {size!r}")
        self.seed, self.w, self.h, self.flat = int(seed), w, h, flat
        r = _Rand(self.seed)
        # camera
        self.f = w * r.uniform(0.78, 1.02)
        self.cx = w * r.uniform(0.45, 0.55)
        self.horizon = h * r.uniform(0.40, 0.49)
        self.cam_h = r.uniform(1.25, 1.6)
        self.curv = 0.0 if r.random() < 0.4 else r.uniform(-1.0e-3, 1.0e-3) * _pick(r, (1, 2))
        self.v_ego = r.uniform(6.0, 12.0)
        # road
        self.lane_w = lw = r.uniform(3.0, 3.6)
        n_same = _pick(r, (1, 1, 2))
        n_opp = _pick(r, (0, 1, 1, 1, 2)) if n_same == 2 else _pick(r, (1, 1, 2))
        ego = r.integers(n_same)
        self.lanes = [((ego - j) * lw, +1, j == ego) for j in range(n_same)]
        self.lanes += [((ego - n_same - m) * lw, -1, False) for m in range(n_opp)]
        self.drive_right = (ego + 0.5) * lw
        self.drive_left = (ego - n_same - n_opp + 0.5) * lw
        self.parking = {+1: r.random() < 0.5, -1: r.random() < 0.3}
        self.road_edge = {+1: self.drive_right + 2.3 * self.parking[+1],
                          -1: self.drive_left - 2.3 * self.parking[-1]}
        self.dividers = []  # (d, kind): 'dash', 'solid' or 'double'
        for j in range(n_same - 1):
            self.dividers.append(((ego - j - 0.5) * lw, "dash"))
        for m in range(n_opp - 1):
            self.dividers.append(((ego - n_same - m - 0.5) * lw, "dash"))
        self.centre_d = None
        if n_opp:
            self.centre_d = (ego - n_same + 0.5) * lw
            kinds = ("dash", "solid", "double") if n_same + n_opp > 2 else ("dash", "dash", "double")
            self.dividers.append((self.centre_d, _pick(r, kinds)))
        self.yellow_centre = r.random() < 0.3
        self.edge_lines = r.random() < 0.7
        self.dash_len, self.dash_period = r.uniform(2.5, 4.5), r.uniform(8.0, 13.0)
        self.dash_phase = r.uniform(0, self.dash_period)
        # the two sides of the street
        self.side = {}
        for side in (+1, -1):
            verge = r.uniform(1.0, 2.5) if r.random() < 0.25 else 0.0
            sw = r.uniform(1.8, 4.5)
            self.side[side] = dict(
                verge=verge, sw=sw, outer=self.road_edge[side] + side * (0.25 + verge + sw),
                style=_pick(r, ("urban", "urban", "urban", "suburban", "suburban", "park")),
                setback=r.uniform(0, 1.2), lamp_sp=r.uniform(22, 36), lamp_ph=r.uniform(0, 36),
                lamp_h=r.uniform(7, 9.5), lamp_arm=r.uniform(1.0, 2.2),
                lamp_col=_pick(r, ((110, 112, 115), (60, 75, 60), (70, 70, 72))))
        # appearance
        self.sky_kind = _pick(r, ("clear", "clear", "hazy", "overcast", "dusk"))
        top, hor = _SKIES[self.sky_kind]
        self.sky_top, self.sky_hor = _jit(r, top, 6, (0.95, 1.05)), _jit(r, hor, 5, (0.97, 1.03))
        dusk = self.sky_kind == "dusk"
        self.sun = 0.08 if self.sky_kind == "overcast" else r.uniform(0.2, 0.45)
        self.sun_side = _pick(r, (-1.0, 1.0))
        cast = (r.uniform(0.95, 1.05), r.uniform(0.97, 1.03), r.uniform(0.95, 1.05))
        self.light = (0.8, 0.75, 0.95) if dusk else cast  # BGR tint of lit surfaces
        g = r.uniform(88, 128)
        self.asphalt = _jit(r, (g + 2, g, g - 2), 4)
        self.asphalt_track = _mul(self.asphalt, r.uniform(0.84, 0.93))
        self.patch_cols = [_mul(self.asphalt, r.uniform(0.75, 1.15)) for _ in range(3)]
        sg = r.uniform(125, 180)
        self.pavement = _jit(r, (sg, sg + 3, sg + 6 * r.uniform(-1, 1)), 5)
        self.curb = _mul(self.pavement, r.uniform(1.05, 1.2))
        self.plaza = _mul(self.pavement, r.uniform(0.85, 1.05))
        self.grass = _jit(r, _pick(r, _GRASS), 8)
        self.far_ground = _mix(self.grass, self.sky_hor, 0.45)
        self.marking = _jit(r, (225, 228, 230), 6, (0.85, 1.0))
        self.yellow = _jit(r, (40, 190, 225), 8)
        self.crossings = r.uniform(0.08, 0.2)
        self.exposure = (r.uniform(0.8, 1.2), r.uniform(-25, 20))  # contrast, brightness
        self.post_offset = (r.integers(_POST_MARGIN), r.integers(_POST_MARGIN))
        # ego vehicle hood
        self.hood = None
        if r.random() < 0.75:
            self.hood = dict(h=h * r.uniform(0.06, 0.12), bulge=r.uniform(0.25, 0.6), xc=w * r.uniform(0.45, 0.55),
                             col=_jit(r, _pick(r, ((35, 35, 38), (60, 60, 62), (90, 40, 20), (150, 150, 150))), 6))
        # traffic: each lane is an endless row of slots moving at the lane's speed
        self.traffic = []
        for li, (d, direction, is_ego) in enumerate(self.lanes):
            if is_ego:
                continue
            if direction > 0:
                v, spacing = self.v_ego + r.uniform(-4, 4), r.uniform(18, 40)
            else:
                v, spacing = -r.uniform(7, 14), r.uniform(22, 55)
            self.traffic.append(dict(d=d, dir=direction, rel_v=v - self.v_ego, spacing=spacing,
                                     p=r.uniform(0.45, 0.85), phase=r.uniform(0, spacing)))
        self.lead = None
        if r.random() < 0.7:
            self.lead = dict(d0=r.uniform(9, 30), amp=r.uniform(0, 5), period=r.uniform(8, 20),
                             ph=r.uniform(0, 2 * math.pi), car=self._car_params(r))
        # lit colours used every frame
        self.c = {name: self._tint(col) for name, col in (
            ("far", self.far_ground), ("pavement", self.pavement), ("grass", self.grass), ("curb", self.curb),
            ("asphalt", self.asphalt), ("track", self.asphalt_track), ("joint", _mul(self.pavement, 0.82)),
            ("white", self.marking), ("yellow", self.yellow), ("plaza", self.plaza),
            ("pit", _mul(self.grass, 0.8)),
            ("sign_pole", (110, 112, 115)), ("sign_back", (140, 140, 140)), ("sign_white", (235, 235, 235)),
            ("sign_red", (40, 30, 200)), ("sign_blue", (170, 90, 20)), ("sign_yellow", (40, 200, 240)),
            ("sign_black", (30, 30, 30)), ("light_pole", (70, 72, 75)), ("light_house", (35, 35, 35)),
            ("lamp_off0", (30, 30, 90)), ("lamp_off1", (30, 90, 110)), ("lamp_off2", (40, 80, 30)))}
        for side in (+1, -1):
            sd = self.side[side]
            sd["lamp_c"] = self._tint(sd["lamp_col"])
            sd["zone_grass"] = self._tint(_jit(r, self.grass, 5, (0.93, 1.07)))
        # a few pedestrians close ahead, so that most scenes show people at a useful size
        self.near_people = []
        for _ in range(1 + r.integers(3)):
            side = _pick(r, (+1, -1))
            sd = self.side[side]
            d = self.road_edge[side] + side * (0.25 + sd["verge"] + r.uniform(0.4, max(sd["sw"] - 0.4, 0.5)))
            v = 0.0 if r.random() < 0.3 else _pick(r, (-1, 1)) * r.uniform(0.9, 1.6)
            self.near_people.append((r.uniform(7, 40), "person", self._person_params(r, d, v)))
        self.skyline = self._make_skyline(r)
        self._sky_img = None if flat else self._make_sky(r)
        self._chunks: dict[int, dict] = {}
        self._cars: dict[tuple, dict] = {}

    # ------------------------------------------------------------------ camera
    def _cam(self, i: int):
        t = i / FPS
        self.t, self.s_cam = t, self.v_ego * t
        shake = math.sin(2 * math.pi * 1.3 * t) + 0.5 * math.sin(2 * math.pi * 3.1 * t + 1.0)
        shake *= self.h / 512
        self.yh = self.horizon + shake
        self.d_ego = 0.12 * math.sin(2 * math.pi * t / 7.0)

    def proj1(self, s, d, h):
        """One point (s ahead, d right, h up; metres) -> pixel (x, y)."""
        inv = self.f / s
        return self.cx + (d - self.d_ego + 0.5 * self.curv * s * s) * inv, self.yh + (self.cam_h - h) * inv

    def proj(self, s, d, h):
        """Broadcast arrays of points -> (..., 2) pixel coordinates."""
        inv = self.f / np.asarray(s, float)
        if self.curv:
            x = (d - self.d_ego + 0.5 * self.curv * s * s) * inv + self.cx
        else:
            x = (d - self.d_ego) * inv + self.cx
        y = (self.cam_h - h) * inv + self.yh
        if x.shape != y.shape:
            x, y = np.broadcast_arrays(x, y)
        out = np.empty(x.shape + (2,))
        out[..., 0] = x
        out[..., 1] = y
        return out

    def _s_samples(self, s0, s1, far=_S_FAR):
        s0, s1 = max(s0, _Z_NEAR), min(s1, far)
        if s1 <= s0:
            return None
        if self.curv == 0.0:
            return np.array((s0, s1))
        inner = _S_GRID[(_S_GRID > s0) & (_S_GRID < s1)]
        return np.concatenate(((s0,), inner, (s1,)))

    def _shade(self, nd, ns=0.0, up=0.0):
        """Brightness factor of a surface whose unit normal has components (d, s, up)."""
        k = 0.86 + self.sun * (0.9 * nd * self.sun_side + 0.35 * up - 0.25 * ns)
        return max(0.5, min(1.25, k))

    def _tint(self, color, k=1.0):
        return tuple(min(255.0, c * k * l) for c, l in zip(color, self.light))

    # ------------------------------------------------------------------ primitives in world space
    def _band(self, s, d0, h0, d1, h1):
        """Polygon between two lines sampled at the same s values."""
        ab = self.proj(s[None, :], np.array(((d0,), (d1,))), np.array(((h0,), (h1,))) if np.isscalar(h1)
                       else np.stack((np.broadcast_to(h0, s.shape), h1)))
        return np.concatenate((ab[0], ab[1][::-1]))

    def ground(self, cv, s0, s1, d0, d1, color, value, far=_S_FAR):
        s = self._s_samples(s0, s1, far)
        if s is not None:
            cv.poly(self._band(s, d0, 0.0, d1, 0.0), color, value)

    def vstrip(self, cv, s0, s1, d, h0, h1, color, value):
        """Vertical band along s at lateral d (facades, walls, rails)."""
        s = self._s_samples(s0, s1, _S_FAR + 60)
        if s is not None:
            cv.poly(self._band(s, d, h0, d, h1), color, value)

    def _near_clip(self, pts_sdh):
        """(N,3) s,d,h polygon -> pixel polygon, clipped at the near plane (or None)."""
        if pts_sdh[:, 0].min() < _Z_NEAR:
            q = _clip_poly(pts_sdh.tolist(), 0, _Z_NEAR, True)
            if len(q) < 3:
                return None
            pts_sdh = np.asarray(q)
        return self.proj(pts_sdh[:, 0], pts_sdh[:, 1], pts_sdh[:, 2])

    def face(self, cv, pts_sdh, color, value):
        p = self._near_clip(pts_sdh)
        if p is not None:
            cv.poly(p, color, value)

    def quads_sh(self, cv, s0, s1, h0, h1, d, color, value):
        """Batch of rectangles in the vertical plane d = const (arrays s0, s1, h0, h1)."""
        if len(s0):
            xy = self.proj(np.stack((s0, s1, s1, s0), 1), d, np.stack((h0, h0, h1, h1), 1))
            cv.polys_batch(xy, color, value)

    def quads_sd(self, cv, s0, s1, d0, d1, color, value):
        """Batch of ground rectangles (markings, stripes)."""
        if len(s0):
            xy = self.proj(np.stack((s0, s1, s1, s0), 1), np.stack((d0, d0, d1, d1), 1), 0.0)
            cv.polys_batch(xy, color, value)

    # ------------------------------------------------------------------ one-time images
    def _make_sky(self, r: _Rand):
        """Sky gradient with soft clouds, painted at quarter resolution."""
        h, w = self.h, self.w
        sh, sw = max(h // 4, 8), max(w // 4, 8)
        hor = self.horizon * sh / h
        t = np.clip(np.arange(sh, dtype=np.float32) / max(hor, 1.0), 0, 1) ** 0.6
        top, bot = np.array(self.sky_top, np.float32), np.array(self.sky_hor, np.float32)
        col = top[None, :] * (1 - t[:, None]) + bot[None, :] * t[:, None]
        sky = np.repeat(col[:, None, :], sw, axis=1).astype(np.uint8)
        n_clouds = {"clear": 4, "hazy": 6, "overcast": 14, "dusk": 5}[self.sky_kind]
        cloud = _mix(self.sky_hor, (245, 245, 245), 0.6)
        for _ in range(r.integers(n_clouds + 1)):
            cx, cy = r.uniform(-0.1, 1.1) * sw, r.uniform(0.05, 0.8) * hor
            for _ in range(2 + r.integers(6)):
                ax = max(int(r.uniform(0.03, 0.1) * sw), 1)
                ay = max(int(ax * r.uniform(0.2, 0.45)), 1)
                cv2.ellipse(sky, (int(cx + r.normal(0, ax)), int(cy + r.normal(0, ay))), (ax, ay), 0, 0, 360,
                            _mul(cloud, r.uniform(0.9, 1.05)), -1, cv2.LINE_AA)
        sky = cv2.GaussianBlur(sky, (0, 0), 1.0)
        return cv2.resize(sky, (w, h), interpolation=cv2.INTER_LINEAR)

    def _make_skyline(self, r: _Rand):
        """Distant skyline: blocks and tree lines in screen space above the horizon,
        periodic over two widths so a curving road can pan it."""
        w = self.w
        period = 2 * w
        blocks = []  # (x0, x1, height px, label, colour)
        x = 0.0
        urbanity = r.uniform(0.3, 1.0)
        while x < period:
            bw = r.uniform(0.015, 0.07) * w
            if r.random() < urbanity:
                hgt = r.uniform(0.01, 0.09) * self.h * (2.5 if r.random() < 0.1 else 1.0)
                col = _mix(_jit(r, _pick(r, _WALLS), 10), self.sky_hor, r.uniform(0.4, 0.65))
                blocks.append((x, x + bw, hgt, BUILDING, col))
            else:
                hgt = r.uniform(0.01, 0.05) * self.h
                col = _mix(_jit(r, _pick(r, _GREENS), 8), self.sky_hor, r.uniform(0.35, 0.55))
                blocks.append((x, x + bw, hgt, VEGETATION, col))
            x += bw * r.uniform(0.6, 1.0)
        return dict(period=period, blocks=blocks)

    # ------------------------------------------------------------------ content generation
    def _chunk(self, c: int) -> dict:
        ch = self._chunks.get(c)
        if ch is None:
            ch = self._chunks[c] = self._make_chunk(c)
            if len(self._chunks) > 32:
                for old in sorted(self._chunks)[:8]:
                    del self._chunks[old]
        return ch

    def _make_chunk(self, c: int) -> dict:
        r = _Rand([self.seed, 1, c + (1 << 30)])
        s_lo, s_hi = c * _CHUNK, (c + 1) * _CHUNK
        ch = dict(c=c, ground=[], zones=[], facades=[], bounds=[], objs=[], marks=[], inter=None, style={},
                  setback={}, populated=False)
        if r.random() < self.crossings:
            si = s_lo + r.uniform(6, _CHUNK - 18)
            both = r.random() < 0.6
            right = both or r.random() < 0.5
            ch["inter"] = (si, si + r.uniform(9, 14), {+1: right, -1: both or not right})
        for side in (+1, -1):
            self._make_side(r, ch, side, s_lo, s_hi)
        for _ in range(r.integers(3)):  # repaired asphalt
            s0 = r.uniform(s_lo, s_hi - 3)
            d0 = r.uniform(self.drive_left, self.drive_right - 1.5)
            ch["ground"].append((1, s0, s0 + r.uniform(1.5, 6), d0, d0 + r.uniform(0.8, 3),
                                 self._tint(_pick(r, self.patch_cols)), ROAD))
        if ch["inter"]:
            si, se, sides = ch["inter"]
            ch["marks"].append(("cross", si - 4.5, si - 1.0))
            ch["marks"].append(("stop", si - 5.2, si - 4.7))
            for side in (+1, -1):
                if sides[side]:
                    edge = self.road_edge[side]
                    ch["ground"].append((2, si, se, edge, edge + side * 80, self.c["asphalt"], ROAD))
                    self._traffic_light(r, ch, side, si - 1.8, mast=side > 0 and r.random() < 0.5)
        return ch

    @staticmethod
    def _blocked(ch, s0, s1, side, margin=0.5):
        inter = ch["inter"]
        return bool(inter and inter[2][side] and s1 > inter[0] - margin and s0 < inter[1] + margin)

    def _make_side(self, r: _Rand, ch, side, s_lo, s_hi):
        sd = self.side[side]
        style = sd["style"] if r.random() < 0.75 else _pick(r, ("urban", "suburban", "park"))
        edge, outer = self.road_edge[side], sd["outer"]
        if style == "urban":
            ch["zones"].append((side, s_lo, s_hi, self.c["plaza"], SIDEWALK))
            setback = sd["setback"]
        else:
            ch["zones"].append((side, s_lo, s_hi, sd["zone_grass"], TERRAIN))
            setback = r.uniform(3, 8)
        ch["style"][side], ch["setback"][side] = style, setback
        # buildings: the street front and a taller row behind
        s = s_lo
        while s < s_hi - 2:
            if style == "urban":
                length, gap = r.uniform(8, 26), (r.uniform(2, 6) if r.random() < 0.15 else 0.0)
            elif style == "suburban":
                length, gap = r.uniform(9, 16), r.uniform(4, 12)
            else:
                length, gap = r.uniform(6, 15), r.uniform(10, 25)
            s0, s1 = s + gap * 0.5, min(s + gap * 0.5 + length, s_hi)
            s = s1 + gap * 0.5
            if s1 - s0 < 3 or self._blocked(ch, s0, s1, side, 1.0):
                continue
            if style == "urban":
                self._building(r, ch, side, s0, s1, outer + side * setback, r.uniform(9, 26), "urban")
            elif style == "suburban":
                self._building(r, ch, side, s0, s1, outer + side * setback, r.uniform(3.2, 6.5), "house")
            if r.random() < (0.35 if style == "urban" else 0.2):
                self._building(r, ch, side, s0 + r.uniform(-3, 3), s1 + r.uniform(-3, 3),
                               outer + side * (setback + r.uniform(14, 25)), r.uniform(15, 40), "back")
        # property-line boundary (suburban and park)
        if style != "urban":
            kind = _pick(r, ("hedge", "fence", "wall", "fence", "none"))
            s = s_lo
            while s < s_hi - 1 and kind != "none":
                s0, s1 = s, min(s + r.uniform(8, 25), s_hi)
                s = s1 + (r.uniform(2.5, 5) if r.random() < 0.4 else 0.0)
                if not self._blocked(ch, s0, s1, side):
                    self._boundary(r, ch, side, s0, s1, outer + side * 0.3, kind)

    def _populate(self, ch):
        """Second stage of a chunk, generated only once it comes within object range:
        trees, lamps, signs, static objects, pedestrians and parked cars."""
        c = ch["c"]
        r = _Rand([self.seed, 4, c + (1 << 30)])
        s_lo, s_hi = c * _CHUNK, (c + 1) * _CHUNK
        for side in (+1, -1):
            self._populate_side(r, ch, side, s_lo, s_hi)
        ch["populated"] = True

    def _populate_side(self, r: _Rand, ch, side, s_lo, s_hi):
        sd, style, setback = self.side[side], ch["style"][side], ch["setback"][side]
        edge, outer = self.road_edge[side], sd["outer"]
        # trees
        in_walk = edge + side * (0.25 + (sd["verge"] / 2 if sd["verge"] else 0.9))
        for _ in range(r.poisson({"urban": 1.5, "suburban": 2.5, "park": 6.0}[style])):
            st = r.uniform(s_lo, s_hi)
            if self._blocked(ch, st - 2, st + 2, side):
                continue
            if style == "park" and r.random() < 0.7:
                d = outer + side * r.uniform(1.5, 20)
            elif style == "suburban" and r.random() < 0.5:
                d = outer + side * r.uniform(1.0, max(setback - 1.0, 1.2))
            else:
                d = in_walk
                if not sd["verge"]:  # tree pit in the pavement
                    ch["ground"].append((3, st - 0.6, st + 0.6, d - 0.6, d + 0.6, self.c["pit"], TERRAIN))
            self._tree(r, ch, st, d)
        # lamps at world-regular spacing
        k = math.ceil((s_lo - sd["lamp_ph"]) / sd["lamp_sp"])
        while k * sd["lamp_sp"] + sd["lamp_ph"] < s_hi:
            sl = k * sd["lamp_sp"] + sd["lamp_ph"]
            k += 1
            if not self._blocked(ch, sl - 1, sl + 1, side):
                ch["objs"].append((sl, "lamp", dict(d=edge + side * 0.45, side=side, h=sd["lamp_h"],
                                                    arm=sd["lamp_arm"], col=sd["lamp_c"])))
        # traffic signs
        for _ in range(r.poisson(0.7)):
            ss = r.uniform(s_lo, s_hi)
            if not self._blocked(ch, ss - 1, ss + 1, side):
                self._sign(r, ch, side, ss, edge + side * r.uniform(0.4, 0.8))
        # static void objects: bins, bollards, cabinets
        for _ in range(r.poisson(1.0 if style == "urban" else 0.5)):
            so = r.uniform(s_lo, s_hi)
            if self._blocked(ch, so - 1, so + 1, side):
                continue
            kind = _pick(r, ("bin", "bin", "bollard", "cabinet"))
            d = edge + side * (0.6 if kind == "bollard" else r.uniform(0.5, max(sd["sw"] - 0.4, 0.6)))
            wd, ht = {"bin": (0.55, 1.05), "bollard": (0.16, 0.9), "cabinet": (0.8, 1.3)}[kind]
            col = self._tint(_jit(r, _pick(r, _STATIC_COLS), 6))
            for j in range(3 if kind == "bollard" and r.random() < 0.5 else 1):
                ch["objs"].append((so + 1.5 * j, "static", dict(d=d, w=wd, h=ht, col=col)))
        # pedestrians on the sidewalk
        walk0 = edge + side * (0.25 + sd["verge"] + 0.4)
        walk1 = edge + side * (0.25 + sd["verge"] + max(sd["sw"] - 0.4, 0.5))
        for _ in range(r.poisson({"urban": 3.5, "suburban": 1.5, "park": 2.0}[style])):
            sp = r.uniform(s_lo, s_hi)
            v = 0.0 if r.random() < 0.2 else _pick(r, (-1, 1)) * r.uniform(0.9, 1.7)
            d = r.uniform(min(walk0, walk1), max(walk0, walk1))
            ch["objs"].append((sp, "person", self._person_params(r, d, v)))
        # parked cars
        if self.parking[side]:
            s = s_lo + r.uniform(0, 3)
            while s < s_hi - 4:
                car = self._car_params(r)
                if r.random() < 0.6 and not self._blocked(ch, s - 3, s + car["L"] + 1, side, 3.0):
                    ch["objs"].append((s, "car", dict(car=car, d=edge - side * 1.15, dir=side)))
                s += car["L"] + r.uniform(1.0, 3.0)

    def _building(self, r: _Rand, ch, side, s0, s1, d, height, kind):
        """A building whose street face is the plane ``d`` from ``s0`` to ``s1``.
        Colours are stored lit and shaded: only positions change from frame to frame."""
        col = _jit(r, _pick(r, _WALLS), 10)
        k_street = self._shade(-side)
        street = self._tint(col, k_street)
        b = dict(s0=s0, s1=s1, d=d, h=height, side=side, depth=r.uniform(8, 15), kind=kind, roof=None, win=None,
                 c_street=street, c_cornice=_mul(street, 0.8), c_end=self._tint(col, self._shade(0, -1)))
        if kind == "house" and r.random() < 0.75:
            b["roof"] = (height + r.uniform(2.0, 3.8),
                         self._tint(_jit(r, _pick(r, _ROOFS), 8), self._shade(-side * 0.6, 0, 0.8)))
        floor_h = r.uniform(2.8, 3.6) if kind != "back" else r.uniform(3.0, 3.8)
        win_w, win_h = r.uniform(0.9, 1.6), r.uniform(1.1, 1.7)
        col_sp = max(win_w + r.uniform(0.7, 2.2), 1.8)
        n_cols = int((s1 - s0 - 0.8) // col_sp)
        shop = kind == "urban" and r.random() < 0.55
        rows = []
        h0 = (3.6 if shop else 0.9) + (floor_h - win_h) / 2
        while h0 + win_h < height - 0.6:
            rows.append(h0)
            h0 += floor_h
        reflect = _mix(self.sky_hor, (60, 60, 60), r.uniform(0.3, 0.6))
        win_cols = (self._tint(_jit(r, (48, 44, 40), 6), k_street), self._tint(_jit(r, reflect, 6), k_street),
                    self._tint(_jit(r, (120, 195, 235), 8)))
        frame = _mul(street, r.uniform(0.7, 0.85)) if r.random() < 0.6 else None
        if n_cols >= 1 and rows:
            lit = 0.35 if self.sky_kind == "dusk" else 0.06
            b["win_spec"] = (n_cols, rows, col_sp, win_w, win_h, r.gen.random(n_cols * len(rows)), lit, frame,
                             win_cols)
        if shop:
            b["shop"] = (self._tint(_jit(r, (60, 55, 50), 8)),
                         self._tint(_jit(r, _pick(r, _AWNINGS), 10)))
        elif kind in ("house", "urban") and s1 - s0 > 4:
            ds = r.uniform(s0 + 1, s1 - 2.2)
            b["door"] = (ds, ds + 1.1, self._tint(_jit(r, (40, 50, 70), 10)))
        ch["facades"].append(b)

    @staticmethod
    def _windows(b):
        """Window corners of a building as (M, 4) arrays in s and h, frames first, then
        grouped by colour; built when the building first comes close enough."""
        n_cols, rows, col_sp, win_w, win_h, u, lit, frame, win_cols = b.pop("win_spec")
        s0, s1 = b["s0"], b["s1"]
        margin = (s1 - s0 - n_cols * col_sp) / 2 + (col_sp - win_w) / 2
        S0, H0 = np.meshgrid(s0 + margin + col_sp * np.arange(n_cols), np.array(rows))
        S0, H0 = S0.ravel(), H0.ravel()
        grp = (u > 0.55 - lit / 2).astype(np.int8) + (u > 1 - lit)
        order = np.argsort(grp, kind="stable")
        S0, H0, grp = S0[order], H0[order], grp[order]
        S1, H1 = S0 + win_w, H0 + win_h
        ws, wh, groups, start = [], [], [], 0
        if frame is not None:
            ws.append(np.stack((S0 - 0.12, S1 + 0.12, S1 + 0.12, S0 - 0.12), 1))
            wh.append(np.stack((H0 - 0.15, H0 - 0.15, H1 + 0.12, H1 + 0.12), 1))
            groups.append((0, S0.size, frame))
            start = S0.size
        ws.append(np.stack((S0, S1, S1, S0), 1))
        wh.append(np.stack((H0, H0, H1, H1), 1))
        for g in range(3):
            cnt = int((grp == g).sum())
            if cnt:
                groups.append((start, start + cnt, win_cols[g]))
                start += cnt
        b["win"] = (np.concatenate(ws), np.concatenate(wh), groups, frame is not None)

    def _boundary(self, r: _Rand, ch, side, s0, s1, d, kind):
        col = {"hedge": _pick(r, _GREENS), "wall": (150, 155, 160)}.get(
            kind, _pick(r, ((90, 90, 92), (50, 70, 50), (70, 90, 120), (160, 160, 160))))
        lit = self._tint(_jit(r, col, 10), self._shade(-side))
        b = dict(kind=kind, s0=s0, s1=s1, d=d, side=side, col=lit)
        if kind == "hedge":
            n = max(int((s1 - s0) / 0.6), 2)
            top = r.uniform(1.0, 1.8)
            b.update(ss=np.linspace(s0, s1, n), tops=top + 0.08 * r.gen.standard_normal(n))
        elif kind == "wall":
            b.update(h=r.uniform(0.7, 2.2))
        else:
            b.update(h=r.uniform(1.0, 2.0), post=r.uniform(1.8, 3.0), rails=2 + r.integers(2),
                     mesh=r.random() < 0.5)
        ch["bounds"].append(b)

    def _tree(self, r: _Rand, ch, s, d):
        """A tree: trunk plus a canopy drawn as the outline of a union of leaf blobs
        (one polygon) with a few darker and lighter blobs inside for texture."""
        rad = r.uniform(1.3, 3.4)
        base = _jit(r, _pick(r, _GREENS), 8)
        g = r.gen.random((9 + r.integers(8), 4))
        ch["objs"].append((s, "tree", dict(d=d, r=rad, trunk=r.uniform(1.6, 3.6), blobs=g,
                                            conifer=r.random() < 0.12, base=base, trunk_w=r.uniform(0.2, 0.4),
                                            bark=self._tint(_jit(r, (45, 60, 75), 8)))))

    def _canopy(self, p):
        """Outline (farthest blob boundary along 28 rays) and inner texture blobs of a
        tree crown, from the blob parameters drawn at generation; built on first sight."""
        g, rad, base = p.pop("blobs"), p["r"], p["base"]
        oy = (g[:, 0] * 1.3 - 0.6) * rad
        ox = (g[:, 1] * 1.6 - 0.8) * rad * (1 - 0.3 * np.maximum(oy / rad, 0))
        rr = rad * (0.38 + 0.24 * g[:, 2])
        proj_c = _RAYS[:, 0:1] * ox + _RAYS[:, 1:2] * oy
        disc = proj_c ** 2 - (ox ** 2 + oy ** 2 - rr ** 2)
        reach = np.where(disc >= 0, proj_c + np.sqrt(np.maximum(disc, 0)), 0.0).max(1)
        p["outline"] = _RAYS * reach[:, None]
        order = np.argsort(oy)
        p["inner"] = [(float(ox[j]), float(oy[j]), float(rr[j]) * 0.8,
                       self._tint(base, 0.75 + 0.35 * (oy[j] / rad + 0.6) + 0.2 * (g[j, 3] - 0.5)))
                      for j in list(order[:2]) + list(order[-4:])]  # two low, dark blobs; four high, light ones
        p["fill"] = self._tint(base, 0.9)
        p["cones"] = [self._tint(base, 0.8 + 0.12 * j) for j in range(4)]

    def _sign(self, r: _Rand, ch, side, s, d):
        kind = _pick(r, ("round", "round", "triangle", "square", "diamond", "octagon"))
        ch["objs"].append((s, "sign", dict(d=d, kind=kind,
                                            h=r.uniform(2.0, 2.8), r=r.uniform(0.3, 0.45),
                                            back=side < 0 and r.random() < 0.6, second=r.random() < 0.3)))

    def _traffic_light(self, r: _Rand, ch, side, s, mast=False):
        ch["objs"].append((s, "light", dict(d=self.road_edge[side] + side * 0.6, h=r.uniform(2.6, 3.2),
                                             state=r.integers(3), mast=mast, mast_h=r.uniform(5.5, 6.5),
                                             mast_d=r.uniform(0.0, 3.5))))

    def _person_params(self, r: _Rand, d, v):
        child = r.random() < 0.08
        t = self._tint
        top = t(_jit(r, _pick(r, _CLOTHES), 12))
        return dict(d=d, v=v, height=r.uniform(1.0, 1.35) if child else r.uniform(1.52, 1.95),
                    top=top, sleeves=_mul(top, 0.9), legs=t(_jit(r, _pick(r, _CLOTHES[:6]), 10)),
                    skin=t(_jit(r, _pick(r, _SKIN), 6)), hair=t(_jit(r, _pick(r, _HAIR), 5)),
                    shoes=t(_jit(r, (30, 30, 35), 10)), coat=r.random() < 0.25, bag=r.random() < 0.3,
                    bag_col=t(_jit(r, _pick(r, _CLOTHES), 10)), build=r.uniform(0.85, 1.15),
                    phase0=r.uniform(0, 2 * math.pi), stride=r.uniform(0.6, 0.8))

    def _car_params(self, r: _Rand):
        kind = _pick(r, ("sedan", "sedan", "hatch", "suv", "van"))
        return dict(kind=kind, W=r.uniform(1.9, 2.05) if kind == "van" else r.uniform(1.7, 1.95),
                    L={"sedan": 4.3, "hatch": 3.8, "suv": 4.4, "van": 4.8}[kind] + r.uniform(0, 0.6),
                    body={"sedan": 0.95, "hatch": 0.95, "suv": 1.08, "van": 1.15}[kind] + r.uniform(-0.05, 0.05),
                    roof={"sedan": 1.45, "hatch": 1.5, "suv": 1.72, "van": 2.05}[kind] + r.uniform(-0.05, 0.05),
                    clear=r.uniform(0.14, 0.2), col=_jit(r, _pick(r, _CARS), 6),
                    glass=_mix(_jit(r, (60, 55, 50), 5), self.sky_hor, r.uniform(0.1, 0.35)))

    def _traffic_car(self, lane: int, k: int) -> dict | None:
        car = self._cars.get((lane, k))
        if car is None:
            r = _Rand([self.seed, 2, lane, k + (1 << 30)])
            tr = self.traffic[lane]
            car = self._car_params(r) if r.random() < tr["p"] else {}
            car["jit"] = r.uniform(0, max(tr["spacing"] - 7.0, 0.1))
            if len(self._cars) > 4096:
                self._cars.clear()
            self._cars[(lane, k)] = car
        return car if "kind" in car else None

    # ------------------------------------------------------------------ rendering
    def render(self, i: int) -> Scene:
        self._cam(i)
        cv = _Canvas(self.w, self.h, self.flat)
        if self.flat:
            cv.fill(None, SKY)
        else:
            cv.img[:] = self._sky_img
            cv.ids[:] = SKY
        c_lo = math.floor((self.s_cam - 30) / _CHUNK)
        c_hi = math.floor((self.s_cam + _S_FAR) / _CHUNK)
        chunks = [self._chunk(c) for c in range(c_lo, c_hi + 1)]
        for ch in chunks:
            if not ch["populated"] and ch["c"] * _CHUNK < self.s_cam + _S_OBJ:
                self._populate(ch)
        self._draw_ground(cv, chunks)
        self._draw_skyline(cv)
        self._draw_facades(cv, chunks)
        self._draw_objects(cv, chunks)
        self._draw_hood(cv)
        img = cv.img if self.flat else self._post_process(cv.img, i)
        return Scene(img, np.take(_LABEL_OF, cv.ids), cv.ids.astype(np.int32))

    def _post_process(self, img, i):
        """Exposure, vignetting and grain in one saturating pass, then a slight blur."""
        contrast, bright = self.exposure
        bright += 2.0 * math.sin(2 * math.pi * 0.23 * self.t)
        oy = (self.post_offset[0] + 7 * i) % _POST_MARGIN
        ox = (self.post_offset[1] + 11 * i) % _POST_MARGIN
        post = _post_map(self.w, self.h)[oy:oy + self.h, ox:ox + self.w]
        img = cv2.addWeighted(img, contrast, post, 1.0, (1 - contrast) * 128 + bright - 128)
        return cv2.GaussianBlur(img, (3, 3), 0.6)

    def _draw_ground(self, cv, chunks):
        s_cam, c = self.s_cam, self.c
        w, h = self.w + 2, self.h + 2
        cv.poly(np.array([[-2, self.yh], [w, self.yh], [w, h], [-2, h]], float), c["far"], TERRAIN)
        runs = {}  # what lies beyond the sidewalks, merged over chunks of the same kind
        for ch in chunks:
            for side, s0, s1, color, value in ch["zones"]:
                run = runs.get(side)
                if run is not None and run[1] == s0 and run[2] == color:
                    run[1] = s1
                else:
                    if run is not None:
                        self.ground(cv, run[0] - s_cam, run[1] - s_cam, self.side[side]["outer"],
                                    self.side[side]["outer"] + side * 60, run[2], run[3])
                    runs[side] = [s0, s1, color, value]
        for side, run in runs.items():
            self.ground(cv, run[0] - s_cam, run[1] - s_cam, self.side[side]["outer"],
                        self.side[side]["outer"] + side * 60, run[2], run[3])
        for side in (+1, -1):  # sidewalks, verges, curbs
            sd, e = self.side[side], self.road_edge[side]
            self.ground(cv, 0, _S_FAR, e + side * (0.25 + sd["verge"]), sd["outer"], c["pavement"], SIDEWALK)
            if sd["verge"]:
                self.ground(cv, 0, _S_FAR, e + side * 0.25, e + side * (0.25 + sd["verge"]), c["grass"], TERRAIN)
            self.ground(cv, 0, _S_FAR, e, e + side * 0.25, c["curb"], SIDEWALK)
        self._paving(cv)
        for ch in chunks:  # tree pits
            for g in ch["ground"]:
                if g[0] == 3:
                    self.ground(cv, g[1] - s_cam, g[2] - s_cam, g[3], g[4], g[5], g[6], far=_S_DETAIL)
        self.ground(cv, 0, _S_FAR, self.road_edge[-1], self.road_edge[+1], c["asphalt"], ROAD)
        s_t = self._s_samples(0, _S_FAR)
        tracks = [self._band(s_t, d + o - 0.3, 0.0, d + o + 0.3, 0.0)
                  for d, _, _ in self.lanes for o in (-0.8, 0.8)]
        cv.poly(tracks, c["track"], ROAD)  # darker wheel tracks
        for ch in chunks:  # patches and side streets
            for g in ch["ground"]:
                if g[0] in (1, 2):
                    self.ground(cv, g[1] - s_cam, g[2] - s_cam, g[3], g[4], g[5], g[6])
        self._markings(cv, chunks)

    def _paving(self, cv):
        """Joints between paving slabs close to the camera."""
        step = 1.5
        k0, k1 = math.ceil((self.s_cam + 2.0) / step), math.floor((self.s_cam + 30.0) / step)
        if k1 < k0:
            return
        s = np.arange(k0, k1 + 1) * step - self.s_cam
        segs = []
        for side in (+1, -1):
            sd, e = self.side[side], self.road_edge[side]
            inner = self.proj(s, e + side * (0.25 + sd["verge"]), 0.0)
            segs.append(np.stack((inner, self.proj(s, sd["outer"], 0.0)), 1))
        cv.lines(np.concatenate(segs), self.c["joint"], SIDEWALK)

    def _markings(self, cv, chunks):
        s_cam = self.s_cam
        white, yellow = self.c["white"], self.c["yellow"]
        mw = 0.13
        k0 = math.floor((s_cam + _Z_NEAR - self.dash_phase) / self.dash_period) - 1
        k1 = math.ceil((s_cam + _S_DETAIL - self.dash_phase) / self.dash_period)
        starts = np.arange(k0, k1 + 1) * self.dash_period + self.dash_phase - s_cam
        ends = starts + self.dash_len
        ok = ends > _Z_NEAR
        starts, ends = np.maximum(starts[ok], _Z_NEAR), ends[ok]
        for d, kind in self.dividers:
            col = yellow if (self.yellow_centre and d == self.centre_d) else white
            if kind == "dash":
                dd = np.full(starts.shape, d)
                self.quads_sd(cv, starts, ends, dd - mw / 2, dd + mw / 2, col, ROAD)
            else:
                for o in ((0.0,) if kind == "solid" else (-0.1, 0.1)):
                    self.ground(cv, 0, _S_FAR * 0.6, d + o - mw / 2, d + o + mw / 2, col, ROAD)
        if self.edge_lines:
            for dd in (self.drive_right - 0.2, self.drive_left + 0.2):
                self.ground(cv, 0, _S_FAR * 0.6, dd - mw / 2, dd + mw / 2, white, ROAD)
        for ch in chunks:
            for kind, a, b in ch["marks"]:
                a, b = max(a - s_cam, _Z_NEAR), b - s_cam
                if b <= a or a > _S_DETAIL:
                    continue
                if kind == "cross":  # zebra crossing over the whole road
                    d0 = np.arange(self.road_edge[-1] + 0.5, self.road_edge[+1] - 0.9, 1.0)
                    self.quads_sd(cv, np.full(len(d0), a), np.full(len(d0), b), d0, d0 + 0.5, white, ROAD)
                else:  # stop line over our lanes
                    ours = [d for d, dr, _ in self.lanes if dr > 0]
                    self.quads_sd(cv, np.array([a]), np.array([b]), np.array([min(ours) - self.lane_w / 2]),
                                  np.array([max(ours) + self.lane_w / 2]), white, ROAD)

    def _draw_skyline(self, cv):
        period = self.skyline["period"]
        off = (self.f * self.curv * self.s_cam) % period
        bottom = self.yh + self.f * self.cam_h / _S_FAR + 1.5
        for x0, x1, hgt, label, col in self.skyline["blocks"]:
            for shift in (-off, period - off):
                a, b = x0 + shift, x1 + shift
                if b < 0 or a > self.w:
                    continue
                top = self.yh - hgt
                if label == VEGETATION:
                    pts = [[a, bottom], [a, top + hgt * 0.4], [(a + b) / 2, top], [b, top + hgt * 0.3],
                           [b, bottom]]
                else:
                    pts = [[a, bottom], [a, top], [b, top], [b, bottom]]
                cv.poly(np.array(pts, float), self._tint(col), label)

    # ------------------------------------------------------------------ facades and boundaries
    def _draw_facades(self, cv, chunks):
        s_cam = self.s_cam
        items = []
        for ch in chunks:
            for b in ch["facades"]:
                if b["s1"] - s_cam > _Z_NEAR and b["s0"] - s_cam < _S_FAR + 40:
                    items.append((abs(b["d"]), b["s0"], 0, b))
            for b in ch["bounds"]:
                if b["s1"] - s_cam > _Z_NEAR and b["s0"] - s_cam < _S_OBJ:
                    items.append((abs(b["d"]) - 0.01, b["s0"], 1, b))
        items.sort(key=lambda it: (-it[0], -it[1]))  # outermost first, then far to near
        for _, _, typ, b in items:
            (self._facade if typ == 0 else self._bound)(cv, b)

    def _facade(self, cv, b):
        sc = self.s_cam
        s0, s1 = b["s0"] - sc, b["s1"] - sc
        s = self._s_samples(s0, s1, _S_FAR + 60)
        if s is None:
            return
        d, side, h, roof = b["d"], b["side"], b["h"], b["roof"]
        dd, hh = [d, d, d], [0.0, h, h - 0.45]
        if roof is not None:
            dd.append(d + side * b["depth"] / 2)
            hh.append(roof[0])
        lines = self.proj(s[None, :], np.array(dd)[:, None], np.array(hh)[:, None])  # (levels, n, 2)
        parts = []
        if roof is not None:  # street-facing slope of a gabled roof
            parts.append((np.concatenate((lines[1], lines[3][::-1])), roof[1]))
        if s0 > _Z_NEAR:  # end wall facing the camera
            d2 = d + side * b["depth"]
            ed, eh = [d, d2, d2], [0.0, 0.0, h]
            if roof is not None:
                ed.append(d + side * b["depth"] / 2)
                eh.append(roof[0])
            ed.append(d)
            eh.append(h)
            parts.append((self.proj(s0, np.array(ed), np.array(eh)), b["c_end"]))
        parts.append((np.concatenate((lines[0], lines[1][::-1])), b["c_street"]))
        if b["kind"] != "house" and s0 < 80:
            parts.append((np.concatenate((lines[2], lines[1][::-1])), b["c_cornice"]))
        spans, start = [], 0
        for pts, color in parts:
            spans.append((start, start + len(pts), color, BUILDING))
            start += len(pts)
        cv.batch(np.concatenate([pts for pts, _ in parts]), spans)
        if s0 > _S_WINDOWS:
            return
        if s0 < 60:
            if "shop" in b:
                glass, awning = b["shop"]
                self.vstrip(cv, s0 + 0.4, s1 - 0.4, d, 0.3, 2.7, glass, BUILDING)
                self.vstrip(cv, s0, s1, d, 2.9, 3.4, awning, BUILDING)
            if "door" in b:
                a, e, dc = b["door"]
                if a - sc > _Z_NEAR:
                    self.quads_sh(cv, np.array([a - sc]), np.array([e - sc]), np.zeros(1), np.array([2.1]), d, dc,
                                  BUILDING)
        if "win_spec" in b and (b["kind"] != "back" or s0 < 50):
            self._windows(b)
        if b["win"] is not None and (b["kind"] != "back" or s0 < 50):
            WS, WH, groups, framed = b["win"]
            S = WS - sc
            vis = (S[:, 0] > _Z_NEAR) & (S[:, 0] < _S_WINDOWS)
            if vis.any():
                # window frames only when near
                cv.polys_groups(self.proj(S, d, WH), vis, groups[1:] if framed and s0 > 50 else groups, BUILDING)

    def _bound(self, cv, b):
        s0, s1 = b["s0"] - self.s_cam, b["s1"] - self.s_cam
        d, side = b["d"], b["side"]
        col = b["col"]
        if b["kind"] == "wall":
            self.vstrip(cv, s0, s1, d, 0.0, b["h"], col, WALL)
            self.vstrip(cv, s0, s1, d, b["h"] - 0.12, b["h"], _mul(col, 1.12), WALL)
            if s0 > _Z_NEAR:
                self.face(cv, np.array([[s0, d, 0], [s0, d + side * 0.25, 0], [s0, d + side * 0.25, b["h"]],
                                        [s0, d, b["h"]]]), _mul(col, 0.9), WALL)
        elif b["kind"] == "hedge":
            ss = b["ss"] - self.s_cam
            keep = (ss >= _Z_NEAR) & (ss <= _S_FAR)
            if keep.sum() < 2:
                return
            ss, tops = ss[keep], b["tops"][keep]
            cv.poly(self._band(ss, d, 0.0, d, tops), col, VEGETATION)
            if ss[0] < _S_DETAIL:
                cv.poly(self._band(ss, d, 0.0, d, tops * 0.55), _mul(col, 0.8), VEGETATION)
        else:
            h = b["h"]
            s = self._s_samples(s0, s1)
            if s is None:
                return
            rails = [self._band(s, d, hr, d, hr + 0.07)
                     for hr in (0.2 + (h - 0.25) * j / max(b["rails"] - 1, 1) for j in range(b["rails"]))]
            cv.poly(rails, col, FENCE)
            k0, k1 = math.ceil(max(s0, _Z_NEAR) / b["post"]), math.floor(min(s1, _S_DETAIL) / b["post"])
            if k1 >= k0:
                ps = np.arange(k0, k1 + 1) * b["post"]
                self.quads_sh(cv, ps, ps + 0.09, np.zeros_like(ps), np.full_like(ps, h), d, _mul(col, 0.9), FENCE)
            if b["mesh"] and s0 < 40:
                step = 0.35
                k0, k1 = math.ceil(max(s0, 2.0) / step), math.floor(min(s1, 40.0) / step)
                if k1 > k0:
                    sa = np.arange(k0, k1) * step
                    lo_a, lo_b = self.proj(sa, d, 0.2), self.proj(sa + step, d, 0.2)
                    hi_a, hi_b = self.proj(sa, d, h - 0.05), self.proj(sa + step, d, h - 0.05)
                    segs = np.concatenate((np.stack((lo_a, hi_b), 1), np.stack((lo_b, hi_a), 1)))
                    cv.lines(segs, _mul(col, 0.95), FENCE)

    # ------------------------------------------------------------------ compact objects
    def _draw_objects(self, cv, chunks):
        s_cam, t = self.s_cam, self.t
        todo = []
        for objs in [self.near_people] + [ch["objs"] for ch in chunks]:
            for s_w, kind, p in objs:
                if kind == "person":  # walks; passes its anchor when the camera does
                    s = s_w + p["v"] * (t - s_w / self.v_ego) - s_cam
                else:
                    s = s_w - s_cam
                if kind == "car":
                    if s + p["car"]["L"] > _Z_NEAR and s < _S_OBJ:
                        todo.append((s, kind, p))
                elif 1.5 < s < _S_OBJ:
                    todo.append((s, kind, p))
        for lane, tr in enumerate(self.traffic):  # moving traffic
            shift = tr["rel_v"] * t + tr["phase"]
            k0 = math.floor((-8 - shift) / tr["spacing"]) - 1
            for k in range(k0, math.ceil((_S_OBJ - shift) / tr["spacing"]) + 1):
                car = self._traffic_car(lane, k)
                if car is not None:
                    s = k * tr["spacing"] + car["jit"] + shift
                    if s + car["L"] > _Z_NEAR and s < _S_OBJ:
                        todo.append((s, "car", dict(car=car, d=tr["d"], dir=tr["dir"])))
        if self.lead is not None:  # the car ahead in our lane
            ld = self.lead
            s = ld["d0"] + ld["amp"] * math.sin(2 * math.pi * t / ld["period"] + ld["ph"])
            todo.append((s, "car", dict(car=ld["car"], d=0.0, dir=+1)))
        todo.sort(key=lambda it: -it[0])
        draw = {"tree": self._draw_tree, "lamp": self._draw_lamp, "sign": self._draw_sign,
                "light": self._draw_light, "static": self._draw_static, "person": self._draw_person,
                "car": self._draw_car}
        for s, kind, p in todo:
            draw[kind](cv, s, p)

    def _rect(self, cv, x0, y0, x1, y1, color, value):
        cv.poly(np.array(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), float), color, value)

    def _vbar(self, cv, x, y0, y1, half, color, value):
        half = max(half, 0.5)
        self._rect(cv, x - half, y0, x + half, y1, color, value)

    def _draw_tree(self, cv, s, p):
        x, y = self.proj1(s, p["d"], 0.0)
        k = self.f / s
        rk = p["r"] * k
        if x < -3 * rk or x > self.w + 3 * rk:
            return
        if "blobs" in p:
            self._canopy(p)
        self._vbar(cv, x, y, y - (p["trunk"] + p["r"] * 0.9) * k, p["trunk_w"] * k / 2, p["bark"], VEGETATION)
        cy = y - (p["trunk"] + p["r"] * 0.8) * k
        if p["conifer"]:
            for j in range(4):
                yb = cy + (0.9 - 0.55 * j) * rk
                hw = (1.0 - 0.2 * j) * rk
                cv.poly(np.array(((x - hw, yb), (x + hw, yb), (x, yb - 1.1 * rk))), p["cones"][j], VEGETATION)
            return
        cv.poly(p["outline"] * (k, -k) + (x, cy), p["fill"], VEGETATION)
        if rk > 4:  # level of detail: inner blobs only when they show
            for ox, oy, rr, col in (p["inner"] if rk > 12 else p["inner"][-2:]):
                cv.circle(x + ox * k, cy - oy * k, rr * k, col, VEGETATION)

    def _draw_lamp(self, cv, s, p):
        x, y = self.proj1(s, p["d"], 0.0)
        k = self.f / s
        if x < -3 * p["arm"] * k or x > self.w + 3 * p["arm"] * k:
            return
        col, h = p["col"], p["h"]
        yt = y - h * k
        xa, ya = self.proj1(s, p["d"] - p["side"] * p["arm"], h)
        t, w1, w2, hw = max(0.05 * k, 0.5), max(0.09 * k, 0.5), max(0.14 * k, 0.5), 0.3 * k
        xy = np.array(((x - w1, y), (x + w1, y), (x + w1, yt), (x - w1, yt),  # mast
                       (x - w2, y), (x + w2, y), (x + w2, y - 0.6 * k), (x - w2, y - 0.6 * k),  # foot
                       (x, yt - t), (xa, ya - t), (xa, ya + t), (x, yt + t),  # arm
                       (xa - hw, ya), (xa + hw, ya), (xa + hw * 0.7, ya + 0.18 * k),
                       (xa - hw * 0.7, ya + 0.18 * k)))
        cv.batch(xy, ((0, 4, col, POLE), (4, 8, col, POLE), (8, 12, col, POLE), (12, 16, _mul(col, 0.8), POLE)))

    def _draw_sign(self, cv, s, p):
        x, y = self.proj1(s, p["d"], 0.0)
        k = self.f / s
        rk = p["r"] * k
        if x < -3 * rk or x > self.w + 3 * rk:
            return
        c = self.c
        self._vbar(cv, x, y, y - (p["h"] + p["r"]) * k, 0.04 * k, c["sign_pole"], POLE)
        cx, cy, v = x, y - (p["h"] + p["r"]) * k, TRAFFIC_SIGN
        if p["back"]:  # a sign for the other direction: we see its grey back
            cv.circle(cx, cy, rk, c["sign_back"], v)
            return
        white, red = c["sign_white"], c["sign_red"]
        ctr = np.array((cx, cy))
        kind = p["kind"]
        if kind == "round":
            cv.circle(cx, cy, rk, red, v)
            cv.circle(cx, cy, rk * 0.75, white, v)
            if rk > 4:
                self._rect(cv, cx - rk * 0.5, cy - rk * 0.12, cx + rk * 0.5, cy + rk * 0.12, c["sign_black"], v)
        elif kind == "triangle":
            tri = rk * np.array(((0, -1.1), (1.1, 0.8), (-1.1, 0.8)))
            cv.batch(ctr + np.concatenate((tri, tri * 0.65)), ((0, 3, red, v), (3, 6, white, v)))
        elif kind == "square":
            self._rect(cv, cx - rk, cy - rk, cx + rk, cy + rk, c["sign_blue"], v)
            if rk > 4:
                cv.poly(ctr + rk * np.array(((0, -0.6), (0.5, 0), (0, 0.6), (-0.5, 0))), white, v)
        elif kind == "diamond":
            dm = rk * np.array(((0, -1.2), (1.2, 0), (0, 1.2), (-1.2, 0)))
            cv.batch(ctr + np.concatenate((dm, dm * 0.75)), ((0, 4, white, v), (4, 8, c["sign_yellow"], v)))
        else:
            cv.poly(ctr + rk * _OCTAGON, red, v)
        if p["second"]:
            self._rect(cv, cx - rk, cy + rk * 1.8, cx + rk, cy + rk * 2.8, white, v)

    def _draw_light(self, cv, s, p):
        x, y = self.proj1(s, p["d"], 0.0)
        k = self.f / s
        if x < -6 * k or x > self.w + 6 * k:
            return
        c, h = self.c, p["h"]
        pole = c["light_pole"]
        top = p["mast_h"] if p["mast"] else h + 0.9
        self._vbar(cv, x, y, y - top * k, 0.07 * k, pole, POLE)
        heads = [(x, y - (h + 0.9) * k)]
        if p["mast"]:  # arm over the road with a second signal
            xa, ya = self.proj1(s, p["mast_d"], p["mast_h"])
            yt, t = y - top * k, max(0.06 * k, 0.5)
            cv.poly(np.array(((x, yt - t), (xa, ya - t), (xa, ya + t), (x, yt + t))), pole, POLE)
            heads.append((xa, ya + 1.0 * k))
        lamps = [c["lamp_off0"], c["lamp_off1"], c["lamp_off2"]]
        lamps[p["state"]] = ((60, 60, 255), (40, 200, 255), (120, 255, 110))[p["state"]]
        for hx, hy in heads:
            hw, hh = 0.17 * k, 0.48 * k
            self._rect(cv, hx - hw, hy - hh, hx + hw, hy + hh, c["light_house"], TRAFFIC_LIGHT)
            if hw > 2:
                for j in range(3):
                    cv.circle(hx, hy - hh + (j + 0.5) * 2 * hh / 3, hw * 0.7, lamps[j], TRAFFIC_LIGHT)

    def _draw_static(self, cv, s, p):
        x, y = self.proj1(s, p["d"], 0.0)
        k = self.f / s
        hw, ht = p["w"] * k / 2, p["h"] * k
        if x < -hw or x > self.w + hw:
            return
        col, hl, yt = p["col"], hw * 1.05, y - ht
        xy = np.array(((x - hw, y), (x + hw, y), (x + hw, yt), (x - hw, yt),
                       (x - hl, yt), (x + hl, yt), (x + hl, yt + 0.08 * k), (x - hl, yt + 0.08 * k)))
        cv.batch(xy, ((0, 4, col, STATIC), (4, 8, _mul(col, 1.3), STATIC)))

    def _draw_person(self, cv, s, p):
        x, y = self.proj1(s, p["d"], 0.0)
        sc = p["height"] / 1.75 * self.f / s  # pixels per metre of a 1.75 m template
        if x < -sc or x > self.w + sc:
            return
        value = cv.new_instance(PERSON)
        bw = p["build"]
        low, wl = (0.55, 0.23) if p["coat"] else (0.85, 0.17)
        torso = ((-0.2 * bw, 1.46), (0.2 * bw, 1.46), (wl * bw, low), (-wl * bw, low))
        if sc * 1.75 < 22:  # level of detail: far pedestrians are a few shapes
            pts = ((-0.15 * bw, 0), (0.15 * bw, 0), (0.15 * bw, 0.9), (-0.15 * bw, 0.9)) + torso
            cv.batch(np.array(pts) * (sc, -sc) + (x, y), ((0, 4, p["legs"], value), (4, 8, p["top"], value)))
            cv.circle(x, y - 1.625 * sc, 0.11 * sc, p["hair"], value)
            return
        ph = p["phase0"] + (math.pi * abs(p["v"]) * self.t / p["stride"] if p["v"] else 0.0)
        sw = math.sin(ph)
        pts, spans = [], []

        def add(quad, color):
            spans.append((len(pts), len(pts) + len(quad), color, value))
            pts.extend(quad)
        legs = []
        for side, swing in ((-1, sw), (1, -sw)):
            hx = side * 0.085 * bw
            fx = hx + side * 0.02 + 0.05 * swing
            lift = 0.07 * max(swing, 0.0)
            legs.append(((hx - 0.07 * bw, 0.9), (hx + 0.07 * bw, 0.9),
                         (fx + 0.055, lift + 0.06), (fx - 0.055, lift + 0.06)))
            add(((fx - 0.06, lift), (fx + 0.06, lift), (fx + 0.06, lift + 0.08), (fx - 0.06, lift + 0.08)),
                p["shoes"])
        for leg in legs:
            add(leg, p["legs"])
        if p["bag"]:
            add(((0.22 * bw, 1.1), (0.38 * bw, 1.1), (0.38 * bw, 0.8), (0.22 * bw, 0.8)), p["bag_col"])
        add(torso, p["top"])
        hands = []
        for side, swing in ((-1, -sw), (1, sw)):
            shx, hx = side * 0.2 * bw, side * 0.24 * bw + 0.05 * swing
            add(((shx - 0.05, 1.45), (shx + 0.05, 1.45), (hx + 0.045, 0.88), (hx - 0.045, 0.88)), p["sleeves"])
            hands.append(hx)
        add(((-0.045, 1.44), (0.045, 1.44), (0.045, 1.53), (-0.045, 1.53)), p["skin"])  # neck
        cv.batch(np.array(pts) * (sc, -sc) + (x, y), spans)
        for hx in hands:
            cv.circle(x + hx * sc, y - 0.84 * sc, 0.045 * sc, p["skin"], value)
        cv.circle(x, y - 1.625 * sc, 0.11 * sc, p["skin"], value)
        cv.half_disc(x, y - 1.645 * sc, 0.118 * sc, 0.105 * sc, p["hair"], value)

    # cars: two convex solids (body box, cabin frustum) with back-face culling
    def _car_geometry(self, car, direction):
        """Car-local geometry, built once per car and direction of travel.

        Local coordinates: s from the near end, d from the centre line, h up. Returns
        the points of every polygon (faces of the body box and the cabin frustum plus
        decals from :func:`_car_template`), face normals and centroids for back-face
        culling, and (start, stop, face, colour, level) spans; ``level`` is the pixel
        width of the car from which a span is drawn."""
        tpl = _car_template(direction)
        L, W, body, roof, clear = car["L"], car["W"], car["body"], car["roof"], car["clear"]
        dl, dr = -W / 2, W / 2
        # the near end is the rear of cars driving our way and the front of oncoming ones
        if car["kind"] == "van":
            a0, a1, sl0, sl1 = (0.05, 0.9, 0.05, 0.6) if direction > 0 else (0.9, 0.05, 0.6, 0.05)
        elif direction > 0:
            a0, a1, sl0, sl1 = (0.25, 1.1, 0.3, 0.65) if car["kind"] == "hatch" else (0.75, 1.1, 0.45, 0.65)
        else:
            a0, a1, sl0, sl1 = 1.1, 0.75, 0.65, 0.45
        n_in = 0.12 if car["kind"] != "van" else 0.06
        t0, t1 = a0 + sl0, L - a1 - sl1
        V = np.array(((0, dl, clear), (0, dr, clear), (0, dr, body), (0, dl, body),
                      (L, dl, clear), (L, dr, clear), (L, dr, body), (L, dl, body),
                      (a0, dl + 0.04, body), (a0, dr - 0.04, body), (t0, dr - n_in, roof), (t0, dl + n_in, roof),
                      (L - a1, dl + 0.04, body), (L - a1, dr - 0.04, body), (t1, dr - n_in, roof),
                      (t1, dl + n_in, roof)))
        Pf = V[_CAR_FACES]  # (10, 4, 3): body faces 0-4, cabin faces 5-9
        C = np.stack((Pf[..., 1], -Pf[..., 2], Pf[..., 0]), -1)  # camera axes: right, down, forward
        n = np.cross(C[:, 1] - C[:, 0], C[:, 3] - C[:, 0])
        n *= np.where(((C.mean(1) - _repeat_centres(C)) * n).sum(1) < 0, -1.0, 1.0)[:, None]  # outward
        n /= np.sqrt((n * n).sum(1))[:, None]
        # (u, v) of every point; wheels are circles of fixed size, so theirs depend on the car
        u, v = tpl["u"].copy(), tpl["v"].copy()
        wi = tpl["wheel_idx"]
        ws = np.where(tpl["wheel_cs"] > 0, tpl["wheel_cs"], L + tpl["wheel_cs"]) + tpl["wheel_dx"]
        u[wi] = ws / L
        v[wi] = (tpl["wheel_h"] - clear) / (body - clear)
        Q = Pf[tpl["fidx"]]
        u, v = u[:, None], v[:, None]
        pts = (1 - u) * (1 - v) * Q[:, 0] + u * (1 - v) * Q[:, 1] + u * v * Q[:, 2] + (1 - u) * v * Q[:, 3]
        k = 0.86 + self.sun * (0.9 * n[:, 0] * self.sun_side - 0.35 * n[:, 1] - 0.25 * n[:, 2])  # as _shade
        k = np.clip(k, 0.5, 1.25)
        col = car["col"]
        palette = np.array((col, _mul(col, 1.05), _mul(col, 0.6), car["glass"]) + _CAR_PART_COLORS) * self.light
        cols = np.minimum(palette[tpl["span_code"]] * k[tpl["span_face"]][:, None], 255.0).tolist()
        spans = [(a, b, face, tuple(c), level) for (a, b, face, level), c in zip(tpl["span_geom"], cols)]
        return dict(pts=pts, spans=spans, normals=n, cents=Pf.mean(1))

    def _draw_car(self, cv, s, p):
        car, d, direction = p["car"], p["d"], p["dir"]
        sn = max(s, _Z_NEAR)
        x, _ = self.proj1(sn, d, 0.0)
        k = self.f / sn
        if x < -6 * k or x > self.w + 6 * k:
            return
        geo = car.get(direction)
        if geo is None:
            geo = car[direction] = self._car_geometry(car, direction)
        value = cv.new_instance(CAR)
        # back-face culling from the face centroids in camera space
        cs, cd = geo["cents"][:, 0] + s, geo["cents"][:, 1] + d
        cam = np.stack((cd - self.d_ego + 0.5 * self.curv * cs * cs, self.cam_h - geo["cents"][:, 2], cs), 1)
        visible = (geo["normals"] * cam).sum(1) < 0
        detail = car["W"] * k
        spans = [(a, b, col, value) for a, b, face, col, level in geo["spans"]
                 if level <= detail and visible[face]]
        P = geo["pts"] + (s, d, 0.0)
        if s >= _Z_NEAR:
            cv.batch(self.proj(P[:, 0], P[:, 1], P[:, 2]), spans)
        else:  # passing the camera: clip every polygon at the near plane
            for a, b, col, val in spans:
                self.face(cv, P[a:b], col, val)

    # ------------------------------------------------------------------ ego vehicle
    def _draw_hood(self, cv):
        hd = self.hood
        if hd is None:
            return
        w, h = self.w, self.h
        xs = np.linspace(-0.05 * w, 1.05 * w, 24)
        u2 = ((xs - hd["xc"]) / (0.55 * w)) ** 2

        def curve(scale):
            return np.stack((xs, h - hd["h"] * scale * (1 - hd["bulge"] * u2)), 1)
        cv.poly(np.concatenate((curve(1.0), [[1.05 * w, h + 2], [-0.05 * w, h + 2]])), hd["col"], EGO_VEHICLE)
        cv.poly(np.concatenate((curve(0.8), curve(0.62)[::-1])), _mix(hd["col"], self.sky_hor, 0.35), EGO_VEHICLE)


_CAR_FACES = np.concatenate((_BOX_FACES, _BOX_FACES + 8))
_CAR_PARTS = {"tyre": (28, 28, 30), "wheel": (20, 20, 22), "hub": (70, 70, 72), "tail": (30, 30, 170),
              "head": (200, 235, 245), "grille": (28, 28, 30), "plate": (225, 225, 225)}
_CAR_PART_COLORS = tuple(_CAR_PARTS.values())


def _repeat_centres(C):
    """Centre of each solid, repeated for its five faces (C: (10, 4, 3))."""
    return np.repeat(np.stack((C[:5].reshape(-1, 3).mean(0), C[5:].reshape(-1, 3).mean(0))), 5, axis=0)


_CAR_TEMPLATES: dict = {}


def _car_template(direction: int) -> dict:
    """Where the decals of a car sit, in (u, v) coordinates of its faces (see
    _World._car_geometry): lights, plate and grille on the near face, windows on the
    cabin, wheels on the sides. Tyres under the near bumper are a face of their own
    (face index -1 in the spans: drawn when the near face is)."""
    tpl = _CAR_TEMPLATES.get(direction)
    if tpl is not None:
        return tpl
    if direction > 0:
        near = [(0.0, 1.0, 0.0, 0.28, "bumper", 12), (0.03, 0.2, 0.55, 0.82, "tail", 12),
                (0.8, 0.97, 0.55, 0.82, "tail", 12), (0.38, 0.62, 0.3, 0.5, "plate", 16)]
    else:
        near = [(0.0, 1.0, 0.0, 0.28, "bumper", 12), (0.04, 0.22, 0.52, 0.8, "head", 12),
                (0.78, 0.96, 0.52, 0.8, "head", 12), (0.3, 0.7, 0.35, 0.62, "grille", 12),
                (0.38, 0.62, 0.08, 0.26, "plate", 16)]
    wheels = [("disc", 0.8, 1.15, "wheel", 12), ("disc", -0.85, 1.15, "wheel", 12),
              ("disc", 0.8, 0.6, "hub", 20), ("disc", -0.85, 0.6, "hub", 20)]
    win = [(0.07, 0.93, 0.1, 0.88, "glass", 5)]
    side_win = [(0.06, 0.47, 0.12, 0.86, "glass", 5), (0.53, 0.94, 0.12, 0.86, "glass", 5)]
    decals = {0: near, 2: wheels, 3: wheels, 5: win, 6: win, 7: side_win, 8: side_win}
    uu, vv, fidx, spans = [], [], [], []
    wheel_idx, wheel_cs, wheel_dx, wheel_h = [], [], [], []
    wr = 0.33  # wheel radius, metres

    def add(u, v, face, code, level, span_face=None):
        start = sum(len(x) for x in uu)
        uu.append(np.asarray(u, float))
        vv.append(np.asarray(v, float))
        fidx.extend([face] * len(uu[-1]))
        spans.append((start, start + len(uu[-1]), face if span_face is None else span_face, code, level))
    # tyres: a quad 0.5 m behind the near face, below the bumper (u across, v up the near face)
    for u0, u1 in ((0.065, 0.19), (0.81, 0.935)):
        add((u0, u1, u1, u0), (-0.22, -0.22, 0.3, 0.3), 0, "tyre", 12)
    for face in range(10):
        add(_UNIT_U, _UNIT_V, face, "roof" if face == 9 else "body", 0)
        for dec in decals.get(face, ()):
            if dec[0] == "disc":
                _, cs, rf, code, level = dec
                start = sum(len(x) for x in uu)
                add(np.zeros(len(_CIRCLE)), np.zeros(len(_CIRCLE)), face, code, level)
                wheel_idx.extend(range(start, start + len(_CIRCLE)))
                wheel_cs.extend([cs] * len(_CIRCLE))
                wheel_dx.extend(rf * wr * _CIRCLE[:, 0])
                wheel_h.extend(wr + rf * wr * _CIRCLE[:, 1])
            else:
                u0, u1, v0, v1, code, level = dec
                add((u0, u1, u1, u0), (v0, v0, v1, v1), face, code, level)
    codes = ("body", "roof", "bumper", "glass") + tuple(_CAR_PARTS)
    tpl = _CAR_TEMPLATES[direction] = dict(
        u=np.concatenate(uu), v=np.concatenate(vv), fidx=np.array(fidx),
        span_geom=[(a, b, face, level) for a, b, face, _, level in spans],
        span_code=np.array([codes.index(code) for _, _, _, code, _ in spans]),
        span_face=np.array([face for _, _, face, _, _ in spans]),
        wheel_idx=np.array(wheel_idx), wheel_cs=np.array(wheel_cs), wheel_dx=np.array(wheel_dx),
        wheel_h=np.array(wheel_h))
    return tpl


_RAYS = np.stack((np.cos(np.linspace(0, 2 * math.pi, 28, endpoint=False)),
                  np.sin(np.linspace(0, 2 * math.pi, 28, endpoint=False))), 1)
_OCTAGON = np.stack((np.cos(np.arange(8) * math.pi / 4 + math.pi / 8),
                     np.sin(np.arange(8) * math.pi / 4 + math.pi / 8)), 1)
_UNIT_U = np.array((0.0, 1.0, 1.0, 0.0))
_UNIT_V = np.array((0.0, 0.0, 1.0, 1.0))
_CIRCLE = np.stack((np.cos(np.linspace(0, 2 * math.pi, 12, endpoint=False)),
                    np.sin(np.linspace(0, 2 * math.pi, 12, endpoint=False))), 1)
