"""Colours (BGR) and the random draws every part of a world is generated from."""
from __future__ import annotations

import math

import numpy as np

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
