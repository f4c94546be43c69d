"""One world: the street of a seed seen from the moving camera, rendered frame by frame."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_seg.labels import cityscapes_lut

from .camera import _CHUNK, _S_FAR, _S_OBJ, _Camera
from .canvas import INSTANCE_LABELS, SKY, _Canvas
from .cars import _CarPainter
from .draw_objects import _ObjectPainter
from .draw_street import _StreetPainter
from .palette import _GRASS, _SKIES, _Rand, _jit, _mix, _mul, _pick
from .street import _Street

DEFAULT_SIZE = (1024, 512)  # (width, height)

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



class _World(_Camera, _Street, _StreetPainter, _ObjectPainter, _CarPainter):
    """The street of one seed: global parameters, lazily generated 40 m chunks of
    roadside content, lanes of traffic. ``render(i)`` draws frame ``i``.

    Coordinates: ``s`` metres ahead along the road, ``d`` metres to the right of the
    ego lane centre, ``h`` metres up (see camera.py). Generation, drawing and the
    camera live in the mixins; this class holds the world's parameters and the frame loop."""

    def __init__(self, seed: int, size=DEFAULT_SIZE, flat: bool = False):
        w, h = (int(v) for v in size)
        if w < 16 or h < 16:
            raise ValueError(f"size must be (width, height) of at least 16x16, got {size!r}")
        self.seed, self.w, self.h, self.flat = int(seed), w, h, flat
        r = _Rand(self.seed)
        # the draws happen in this order: a seed's street depends on it
        self._init_camera(r)
        self._init_road(r)
        self._init_sides(r)
        self._init_appearance(r)
        self._init_hood(r)
        self._init_traffic(r)
        self._init_lit_colours(r)
        self._init_near_people(r)
        self.skyline = self._make_skyline(r)
        self._sky_img = None if flat else self._make_sky(r)
        self._chunks: dict[int, dict] = {}
        self._cars: dict[tuple, dict] = {}

    def _init_camera(self, r: _Rand):
        """Focal length, principal point, horizon and height of the camera; road curvature and ego speed."""
        w, h = self.w, self.h
        self.f = w * r.uniform(0.78, 1.02)
        self.cx = w * r.uniform(0.45, 0.55)
        self.horizon = h * r.uniform(0.40, 0.49)
        self.cam_h = r.uniform(1.25, 1.6)
        self.curv = 0.0 if r.random() < 0.4 else r.uniform(-1.0e-3, 1.0e-3) * _pick(r, (1, 2))
        self.v_ego = r.uniform(6.0, 12.0)

    def _init_road(self, r: _Rand):
        """Lanes, parking strips, road edges and lane markings."""
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

    def _init_sides(self, r: _Rand):
        """Verge, sidewalk, building style and street lamps of each side."""
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

    def _init_appearance(self, r: _Rand):
        """Sky, light and the surface colours."""
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

    def _init_hood(self, r: _Rand):
        """The ego vehicle's hood at the bottom of the frame, in most scenes."""
        w, h = self.w, self.h
        self.hood = None
        if r.random() < 0.75:
            self.hood = dict(h=h * r.uniform(0.06, 0.12), bulge=r.uniform(0.25, 0.6), xc=w * r.uniform(0.45, 0.55),
                             col=_jit(r, _pick(r, ((35, 35, 38), (60, 60, 62), (90, 40, 20), (150, 150, 150))), 6))

    def _init_traffic(self, r: _Rand):
        """Traffic: each lane an endless row of slots moving at its speed; maybe a lead car."""
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

    def _init_lit_colours(self, r: _Rand):
        """The colours every frame uses, lit once."""
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

    def _init_near_people(self, r: _Rand):
        """A few pedestrians close ahead, so that most scenes show people at a useful size."""
        self.near_people = []
        for _ in range(1 + r.integers(3)):
            side = _pick(r, (+1, -1))
            sd = self.side[side]
            d = self.road_edge[side] + side * (0.25 + sd["verge"] + r.uniform(0.4, max(sd["sw"] - 0.4, 0.5)))
            v = 0.0 if r.random() < 0.3 else _pick(r, (-1, 1)) * r.uniform(0.9, 1.6)
            self.near_people.append((r.uniform(7, 40), "person", self._person_params(r, d, v)))

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
