"""The demo source is the scene renderer's clip, imported only when the demo opens."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from edge_seg import scenes
from edge_seg.errors import UserError
from edge_seg.io import readers, sources


def test_the_demo_renderer_is_the_scene_package():
    assert readers.demo_renderer() is scenes


def test_demo_frames_are_the_renderers_clip(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_SEG_CACHE", str(tmp_path))
    reader = sources.open_reader("demo", demo_size=(256, 128), demo_frames=2)
    expected = scenes.render_clip(0, 2, size=(256, 128))
    for want in expected:
        assert np.array_equal(reader.read(), want.image)


def test_without_the_renderer_the_demo_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "edge_seg.scenes", None)  # as if the package were missing
    monkeypatch.delattr("edge_seg.scenes", raising=False)
    with pytest.raises(UserError, match="demo source needs the scene renderer") as e:
        sources.open_reader("demo")
    assert "\n" not in str(e.value)
