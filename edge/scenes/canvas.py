"""The rasteriser: every primitive is filled into the image and the instance map with the
same fixed-point vertices (``cv2.LINE_8``), so the labels agree with the pixels exactly."""
from __future__ import annotations

import cv2
import numpy as np

# Cityscapes labelIds drawn here (official table: edge/labels.py).
UNLABELED, EGO_VEHICLE, STATIC = 0, 1, 4
ROAD, SIDEWALK = 7, 8
BUILDING, WALL, FENCE = 11, 12, 13
POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 17, 19, 20
VEGETATION, TERRAIN, SKY = 21, 22, 23
PERSON, CAR = 24, 26
INSTANCE_LABELS = (PERSON, CAR)

_SHIFT = 3                 # fixed-point bits for sub-pixel vertex positions
_ONE = 1 << _SHIFT


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


