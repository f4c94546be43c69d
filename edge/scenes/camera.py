"""The moving pinhole camera over a flat ground, and primitives placed in world space.

Coordinates: ``s`` metres ahead along the road, ``d`` metres to the right of the ego
lane centre, ``h`` metres up. The road may curve (constant curvature), which the
projection applies as a lateral offset ``curv * s^2 / 2``."""
from __future__ import annotations

import math

import numpy as np

from .canvas import _clip_poly

FPS = 30.0                # frame rate of render_clip (seconds per frame = 1 / FPS)
_Z_NEAR = 1.0              # metres: geometry closer than this is clipped away
_S_FAR = 200.0             # metres: ground and buildings end here (skyline beyond)
_S_OBJ = 150.0             # metres: compact objects (cars, people, poles) end here
_S_DETAIL = 100.0          # metres: dashes, fence posts and other small details end here
_S_WINDOWS = 130.0         # metres: building windows end here
_CHUNK = 40.0              # metres of street generated from one rng
_S_GRID = np.geomspace(_Z_NEAR, _S_FAR, 40)  # shared samples along curved ground edges


class _Camera:
    """Camera pose per frame, projection and world-space drawing helpers of a _World."""

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

