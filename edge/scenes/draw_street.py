"""Drawing the street itself, back to front: ground, sidewalks and markings, the skyline,
facades with their windows, walls, hedges and fences."""
from __future__ import annotations

import math

import numpy as np

from .camera import _S_DETAIL, _S_FAR, _S_OBJ, _S_WINDOWS, _Z_NEAR
from .canvas import BUILDING, FENCE, ROAD, SIDEWALK, TERRAIN, VEGETATION, WALL
from .palette import _mul


class _StreetPainter:
    """Ground, markings, skyline, facades and property boundaries of a _World."""

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
