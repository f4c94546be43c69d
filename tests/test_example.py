"""examples/segment_video.py, the Python API's video loop, run as a user would run it:
headless, on the demo clip, in an interpreter where TensorFlow cannot be imported."""
from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest

from conftest import REPO, python_without_tf

EXAMPLE = REPO / "examples" / "segment_video.py"


def run_example(*args) -> subprocess.CompletedProcess:
    code = f"import runpy, sys\nsys.argv = {[str(EXAMPLE), *map(str, args)]!r}\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
    return subprocess.run(python_without_tf(code), cwd=REPO, capture_output=True, text=True, timeout=300)


def test_example_segments_the_demo_clip_like_the_api(tmp_path):
    scenes = pytest.importorskip("edge_seg.scenes")
    from edge_seg.labels import CATEGORY_NAMES
    from edge_seg.segmenter import Segmenter
    from edge_seg.io.readers import DEMO_SIZE

    out = tmp_path / "frames"
    done = run_example("demo", "--headless", "--max-frames", "3", "--save", out)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = sorted(out.glob("*.png"))
    assert len(saved) == 3
    # the first overlay is the API's own overlay of the demo clip's first frame
    frame = scenes.render_scene(0, DEMO_SIZE).image
    expected = Segmenter()(frame).overlay
    assert np.array_equal(cv2.imread(str(saved[0])), expected)
    # one share line per category, summing to the whole frame
    lines = done.stdout.splitlines()
    assert lines[0].startswith("3 frames of demo")
    shares = {line.split()[0]: float(line.split()[1].rstrip("%")) for line in lines[1:]}
    assert list(shares) == list(CATEGORY_NAMES)
    assert sum(shares.values()) == pytest.approx(100.0, abs=0.5)


def test_example_bad_source_is_one_line_and_exit_2(tmp_path):
    done = run_example(tmp_path / "missing.mp4", "--headless")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: "), done.stderr
