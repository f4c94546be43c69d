"""The public renderers: one scene, or a clip of a camera driving down a street."""
from __future__ import annotations

from typing import Iterator

from .camera import FPS
from .world import DEFAULT_SIZE, Scene, _World

__all__ = ["Scene", "render_scene", "render_clip", "FPS", "DEFAULT_SIZE"]


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
