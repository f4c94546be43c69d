"""The demo source is plugged in: edge/ finds the scene renderer through the
``edge_seg.sources`` entry point ``demo`` and never imports it by name."""
from __future__ import annotations

import numpy as np
import pytest

from edge import source_readers, sources
from edge.errors import UserError

scenes = pytest.importorskip("scenes")


def test_the_demo_entry_point_is_the_scene_renderer():
    assert source_readers.demo_renderer() is scenes


def test_demo_frames_are_the_renderers_clip():
    reader = sources.open_reader("demo", demo_size=(256, 128))
    expected = scenes.render_clip(0, 2, size=(256, 128))
    for want in expected:
        assert np.array_equal(reader.read(), want.image)


def test_without_the_entry_point_the_demo_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(source_readers, "entry_points", lambda **kw: [])
    with pytest.raises(UserError, match="demo source needs the scene renderer") as e:
        sources.open_reader("demo")
    assert "\n" not in str(e.value)
