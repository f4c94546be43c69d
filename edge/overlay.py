"""Drawing: category colours over the frame, a legend of the categories and a HUD.

The colours and names come from the model's metadata (falling back to the label table),
turned into a 256-entry lookup table once; colouring a mask is one ``cv2.applyColorMap``.
Views: ``overlay`` (colours blended over the frame with ``alpha``), ``mask`` (colours
only), ``side-by-side`` (frame | overlay, twice as wide).
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from edge_seg.labels import CATEGORIES
from edge_seg.preprocess import resize_mask

VIEWS = ("overlay", "mask", "side-by-side")
# A mask larger than a third of the frame is resized before colouring (one channel to
# resize, not three); a smaller one is coloured at its own size, where fewer pixels are
# looked up, and the colours resized.
MASK_FIRST_AREA = 3
HUD_STAGES = ("capture", "pre", "infer", "post", "draw")
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def categories_from_meta(meta: dict | None) -> tuple[list[str], np.ndarray]:
    """(names, (N, 3) RGB colours) from model metadata, or the label table."""
    cats = (meta or {}).get("categories") or [
        {"id": c.id, "name": c.name, "color": list(c.color)} for c in CATEGORIES]
    cats = sorted(cats, key=lambda c: c["id"])
    names = [str(c["name"]) for c in cats]
    colors = np.array([c["color"] for c in cats], np.uint8).reshape(-1, 3)
    return names, colors


def color_lut(colors_rgb: np.ndarray) -> np.ndarray:
    """(256, 1, 3) BGR lookup table for cv2.applyColorMap; ids past the palette are black."""
    lut = np.zeros((256, 1, 3), np.uint8)
    lut[:len(colors_rgb), 0] = np.asarray(colors_rgb, np.uint8)[:, ::-1]
    return lut


def colorize(mask: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 category mask -> BGR colour image of the same size."""
    return cv2.applyColorMap(np.ascontiguousarray(mask, np.uint8), lut)


def blend(frame_bgr: np.ndarray, color_bgr: np.ndarray, alpha: float) -> np.ndarray:
    return cv2.addWeighted(frame_bgr, 1.0 - alpha, color_bgr, alpha, 0.0)


def _text_scale(width: int) -> float:
    return max(0.35, min(0.8, width / 1600))


def _dim(roi: np.ndarray, factor: float = 0.35) -> None:
    cv2.convertScaleAbs(roi, roi, alpha=factor)


class Overlay:
    """Renders one output image per frame; all the drawing options in one place."""

    def __init__(self, names: Sequence[str] | None = None, colors_rgb: np.ndarray | None = None,
                 alpha: float = 0.5, view: str = "overlay", legend: bool = True, hud: bool = True):
        if view not in VIEWS:
            raise ValueError(f"view {view!r}: choose one of {', '.join(VIEWS)}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha {alpha}: must be between 0 and 1")
        default_names, default_colors = categories_from_meta(None)
        self.names = list(names) if names is not None else default_names
        self.colors = np.asarray(colors_rgb if colors_rgb is not None else default_colors, np.uint8)
        self.lut = color_lut(self.colors)
        self.alpha = float(alpha)
        self.view = view
        self.legend = legend
        self.hud = hud
        self._legend_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_meta(cls, meta: dict, **options) -> "Overlay":
        names, colors = categories_from_meta(meta)
        return cls(names, colors, **options)

    def output_size(self, frame_shape) -> tuple[int, int]:
        """(width, height) of what ``render`` returns for frames of ``frame_shape``."""
        h, w = frame_shape[:2]
        return (2 * w if self.view == "side-by-side" else w), h

    def compose(self, frame_bgr: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The view without legend or HUD. ``mask`` may be at the model's output size: it
        is resized NEAREST, before colouring or after (the same pixels either way)."""
        h, w = frame_bgr.shape[:2]
        if mask.shape[:2] != (h, w) and MASK_FIRST_AREA * mask.shape[0] * mask.shape[1] > h * w:
            mask = resize_mask(mask, (w, h))
        color = colorize(mask, self.lut)
        if color.shape[:2] != (h, w):
            color = cv2.resize(color, (w, h), interpolation=cv2.INTER_NEAREST)
        if self.view == "mask":
            return color
        blended = blend(frame_bgr, color, self.alpha)
        if self.view == "side-by-side":
            return np.hstack([frame_bgr, blended])
        return blended

    def render(self, frame_bgr: np.ndarray, mask: np.ndarray,
               hud_lines: Sequence[str] | None = None) -> np.ndarray:
        image = self.compose(frame_bgr, mask)
        if self.legend:
            self.draw_legend(image)
        if self.hud and hud_lines:
            draw_hud(image, hud_lines)
        return image

    # -- legend -----------------------------------------------------------------
    def _legend_patch(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Pre-drawn legend (image, mask of drawn pixels) for images ``width`` wide."""
        if width not in self._legend_cache:
            scale = _text_scale(width)
            line = int(26 * scale / 0.5)
            sw = int(line * 0.7)
            text_w = max(cv2.getTextSize(n, _FONT, scale, 1)[0][0] for n in self.names)
            pw, ph = 12 + sw + 8 + text_w + 10, 8 + line * len(self.names)
            patch = np.zeros((ph, pw, 3), np.uint8)
            drawn = np.zeros((ph, pw), np.uint8)
            for i, (name, rgb) in enumerate(zip(self.names, self.colors)):
                y = 6 + i * line
                bgr = tuple(int(v) for v in rgb[::-1])
                cv2.rectangle(patch, (8, y + 2), (8 + sw, y + 2 + sw), bgr, -1)
                cv2.rectangle(patch, (8, y + 2), (8 + sw, y + 2 + sw), (255, 255, 255), 1)
                cv2.rectangle(drawn, (8, y + 2), (8 + sw, y + 2 + sw), 255, -1)
                org = (12 + sw + 6, y + 2 + sw - max(1, sw // 8))
                cv2.putText(patch, name, org, _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
                cv2.putText(drawn, name, org, _FONT, scale, 255, 1, cv2.LINE_AA)
            self._legend_cache[width] = (patch, cv2.cvtColor(drawn, cv2.COLOR_GRAY2BGR) > 0)
        return self._legend_cache[width]

    def draw_legend(self, image: np.ndarray) -> None:
        """The categories and their colours, bottom-left, on a dimmed panel (in place)."""
        patch, drawn = self._legend_patch(image.shape[1])
        ph, pw = patch.shape[:2]
        if ph > image.shape[0] or pw > image.shape[1]:
            return
        roi = image[image.shape[0] - ph:, :pw]
        _dim(roi)
        np.copyto(roi, patch, where=drawn)


def draw_hud(image: np.ndarray, lines: Sequence[str]) -> None:
    """Text lines top-left on a dimmed panel (in place)."""
    scale = _text_scale(image.shape[1])
    line = int(24 * scale / 0.5)
    sizes = [cv2.getTextSize(t, _FONT, scale, 1)[0] for t in lines]
    pw = min(image.shape[1], max(s[0] for s in sizes) + 16)
    ph = min(image.shape[0], line * len(lines) + 8)
    _dim(image[:ph, :pw])
    for i, text in enumerate(lines):
        cv2.putText(image, text, (8, 4 + line * (i + 1) - line // 4), _FONT, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)


def hud_lines(fps: float, stage_ms: dict[str, float], extra: str | None = None) -> list[str]:
    """'FPS 24.1' and 'capture 1.0 | pre 2.3 | infer 38.0 | post 3.1 | draw 1.2 ms'."""
    parts = [f"{k} {stage_ms[k]:.1f}" for k in HUD_STAGES if k in stage_ms]
    # the rate needs a couple of frames: "FPS --" rather than "FPS nan" until then
    lines = [f"FPS {fps:.1f}" if math.isfinite(fps) else "FPS --", " | ".join(parts) + " ms"]
    if extra:
        lines.append(extra)
    return lines
