"""Procedural street scenes with exact per-pixel labels.

What it is for:

* a **test fixture that needs no dataset**: :func:`render_scene` returns a driving
  scene (image, Cityscapes labelIds, Cityscapes instanceIds) covering all eight
  categories, so readers, training, evaluation, conversion and the runtime can be
  exercised end to end on any machine (``train/synthetic_dataset.py`` writes such
  scenes to disk in the Cityscapes, CamVid and folder layouts);
* the **built-in demo video source** of the runtime (``edge-seg run --source demo``,
  through ``edge_seg.io.readers.DemoReader``):
  :func:`render_clip` yields frames of a camera driving down a street at
  :data:`FPS` frames per second.

Every scene is a small 3-D world seen through a pinhole camera over a flat ground:
a perspective road with lanes and markings running to a vanishing point, curbs and
sidewalks, buildings with windows and gabled houses, walls, fences and hedges,
trees and grass, street lamps, traffic signs and lights, bins and bollards, parked
and moving cars, walking pedestrians, a sky with a gradient and clouds, a distant
skyline and usually the ego vehicle's hood. Everything is drawn back to front with
hard-edged polygons (``cv2.LINE_8``) into the image *and* into the instance map
with the same vertices, so labels agree with the pixels exactly; the only image-only
steps are per-pixel (exposure, vignetting, sensor grain, a 3x3 blur).

Determinism: everything derives from ``np.random.default_rng`` seeded with ``seed``
(world layout from ``[seed, chunk]``, each car from ``[seed, lane, slot]``), so
``render_scene(s)`` and frame ``i`` of ``render_clip(s, n)`` are functions of
``(s, i, size)`` only. ``render_scene(s)`` is frame 0 of ``render_clip(s, ...)``.

Where things are: ``clip`` (the public renderers), ``world`` (one seed's world and its
frame loop), ``camera`` (projection), ``street`` (what stands where), ``draw_street``,
``draw_objects`` and ``cars`` (drawing), ``canvas`` (the shared rasteriser), ``palette``
(colours and random draws).

numpy and OpenCV only: this package is installed with the device runtime.
"""
from .clip import DEFAULT_SIZE, FPS, Scene, render_clip, render_scene
from .world import _World  # noqa: F401  (tests drive the frames of one world directly)

__all__ = ["Scene", "render_scene", "render_clip", "FPS", "DEFAULT_SIZE"]
