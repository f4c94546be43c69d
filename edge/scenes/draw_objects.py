"""Drawing compact objects, far to near: trees, lamps, signs, traffic lights, static
objects, pedestrians (cars: scenes/cars.py), and the ego vehicle's hood."""
from __future__ import annotations

import math

import numpy as np

from .camera import _S_OBJ, _Z_NEAR
from .canvas import EGO_VEHICLE, PERSON, POLE, STATIC, TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION
from .palette import _mix, _mul

_OCTAGON = np.stack((np.cos(np.arange(8) * math.pi / 4 + math.pi / 8),
                     np.sin(np.arange(8) * math.pi / 4 + math.pi / 8)), 1)


class _ObjectPainter:
    """Roadside objects, people and the hood of a _World."""

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

