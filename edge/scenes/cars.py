"""Cars: two convex solids (body box, cabin frustum) with decals, back-face culled."""
from __future__ import annotations

import math

import numpy as np

from .camera import _Z_NEAR
from .canvas import CAR
from .palette import _mul

# vertex indices of the faces of a box / frustum: near, far, left, right, top
_BOX_FACES = np.array(((0, 1, 2, 3), (4, 5, 6, 7), (0, 4, 7, 3), (1, 5, 6, 2), (3, 2, 6, 7)))


class _CarPainter:
    """Car geometry (built once per car and direction) and drawing, for a _World."""

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
    _CarPainter._car_geometry): lights, plate and grille on the near face, windows on the
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



_UNIT_U = np.array((0.0, 1.0, 1.0, 0.0))
_UNIT_V = np.array((0.0, 0.0, 1.0, 1.0))
_CIRCLE = np.stack((np.cos(np.linspace(0, 2 * math.pi, 12, endpoint=False)),
                    np.sin(np.linspace(0, 2 * math.pi, 12, endpoint=False))), 1)
