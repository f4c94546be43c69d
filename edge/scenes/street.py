"""What a street holds, generated lazily in 40 m chunks from per-chunk random draws:
buildings, boundaries, trees, lamps, signs, lights, static objects, pedestrians and cars,
plus the sky and the distant skyline painted once per world."""
from __future__ import annotations

import math

import cv2
import numpy as np

from .camera import _CHUNK
from .canvas import BUILDING, ROAD, SIDEWALK, TERRAIN, VEGETATION
from .palette import (_AWNINGS, _CARS, _CLOTHES, _GREENS, _HAIR, _ROOFS, _SKIN, _STATIC_COLS, _WALLS,
                      _Rand, _jit, _mix, _mul, _pick)

_RAYS = np.stack((np.cos(np.linspace(0, 2 * math.pi, 28, endpoint=False)),
                  np.sin(np.linspace(0, 2 * math.pi, 28, endpoint=False))), 1)


class _Street:
    """Content generation of a _World: what stands where, with its colours already lit."""

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
