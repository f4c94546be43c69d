"""edge_seg.runner: one way to open and run a model file (.tflite, .onnx, .keras) and one timer.

* The runner's masks are the runtime's: the same as the Segmenter's on the same frame.
* An .onnx export of a float model agrees with that model through ``eval`` and ``compare``.
* ``time_model`` is checked against an injected clock, never against wall time.
* Only edge_seg.backends builds a TFLite ``Interpreter(``; the check is shown to fail.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, RUNTIME_MODEL_SIZE, TESTS, python_without_tf
from edge_seg.errors import UserError

INTERPRETER_HOME = ("tests", "edge/backends")  # where a TFLite Interpreter may be built
SKIP_DIRS = {".venv", "build", "dist", ".git", ".pytest_cache", "node_modules"}


def interpreter_calls(root: Path) -> list[str]:
    """``path:line`` of every ``Interpreter(`` in a .py file of ``root`` outside the folders
    allowed to build one."""
    hits = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_DIRS & set(rel.parts) or any(rel.as_posix().startswith(h + "/") for h in INTERPRETER_HOME):
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if "Interpreter(" in line:
                hits.append(f"{rel.as_posix()}:{n}")
    return hits


def test_only_the_backends_build_an_interpreter():
    assert interpreter_calls(REPO) == []


def test_the_interpreter_check_finds_a_call(tmp_path):
    (tmp_path / "edge" / "backends").mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tools").mkdir()
    allowed = "from ai_edge_litert.interpreter import Interpreter\nit = Interpreter(model_path='m')\n"
    (tmp_path / "edge" / "backends" / "litert.py").write_text(allowed)
    (tmp_path / "tests" / "test_x.py").write_text(allowed)
    (tmp_path / "tools" / "bench.py").write_text("import numpy\n\n" + allowed)
    assert interpreter_calls(tmp_path) == ["tools/bench.py:4"]


# ------------------------------------------------------------------ the timer

class _Clock:
    """Seconds that move only when a stage says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _StagedRunner:
    """A runner whose stages take known times on the injected clock: prepare 1 ms, infer
    (2 + frame value) ms, decode 0.5 ms."""

    def __init__(self, clock: _Clock):
        self.clock = clock
        self.calls = 0

    def prepare(self, frame):
        self.clock.now += 1e-3
        return frame

    def infer(self, tensor):
        self.calls += 1
        self.clock.now += (2 + int(tensor)) * 1e-3
        return tensor

    def decode(self, logits):
        self.clock.now += 0.5e-3
        return logits


def test_time_model_counts_runs_and_stages_on_the_injected_clock():
    from edge_seg.runner import time_model
    clock = _Clock()
    runner = _StagedRunner(clock)
    t = time_model(runner, [0, 2], warmup=3, runs=10, clock=clock)
    assert runner.calls == 13 and t["runs"] == 10
    # warm-up took frames 0, 2, 0; the timed runs cycle on from frame 2: infer 4, 2, 4, ... ms
    infer = np.array([4.0, 2.0] * 5)
    assert t["infer_p50"] == pytest.approx(np.percentile(infer, 50))
    assert t["infer_p90"] == pytest.approx(np.percentile(infer, 90))
    assert t["mean"] == pytest.approx(infer.mean() + 1.5)
    assert t["fps"] == pytest.approx(1000.0 / (infer.mean() + 1.5))


def test_time_model_for_seconds_stops_on_the_clock():
    from edge_seg.runner import time_model
    clock = _Clock()
    t = time_model(_StagedRunner(clock), [0], warmup=0, seconds=0.034, min_runs=2, clock=clock)
    assert t["runs"] == 10  # 3.5 ms a frame: 9 end at 31.5 ms, the 10th passes 34 ms
    clock = _Clock()
    t = time_model(_StagedRunner(clock), [8], warmup=0, seconds=1e-6, min_runs=4, clock=clock)
    assert t["runs"] == 4  # at least min_runs
    with pytest.raises(ValueError):
        time_model(_StagedRunner(clock), [0], runs=3, seconds=1.0, clock=clock)


# ------------------------------------------------------------------ opening models

def _street_rgb(n: int, size=(200, 100)) -> list:
    from edge_seg.scenes.clip import render_scene
    return [cv2.cvtColor(render_scene(seed, size).image, cv2.COLOR_BGR2RGB) for seed in range(n)]


def test_tflite_runner_gives_the_segmenters_masks(tiny_models):
    """RGB frames of another size through the runner == the BGR frames through the Segmenter
    (the path 'edge-seg run' takes), mask at the model's input size."""
    from edge_seg.runner import open_model, time_model
    from edge_seg.segmenter import Segmenter

    frames = _street_rgb(3)
    for kind in ("fp32", "int8"):
        runner = open_model(tiny_models[kind], threads=1)
        seg = Segmenter(tiny_models[kind], threads=1)
        masks = runner.predict(frames)
        assert runner.kind == "tflite" and runner.input_size == RUNTIME_MODEL_SIZE
        assert masks.shape == (3, RUNTIME_MODEL_SIZE[1], RUNTIME_MODEL_SIZE[0]) and masks.dtype == np.uint8
        for f, m in zip(frames, masks):
            assert np.array_equal(m, seg.predict_mask(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[0])
        assert time_model(runner, frames, warmup=1, runs=2)["runs"] == 2


def test_onnx_runner_agrees_with_the_same_net_as_tflite(tiny_models, tiny_onnx):
    from edge_seg.iou import agreement
    from edge_seg.runner import open_model

    frames = _street_rgb(4)
    onnx = open_model(tiny_onnx, threads=1, delegate="cpu")
    assert onnx.kind == "onnx" and "onnxruntime" in onnx.backend.describe()
    a = agreement(np.concatenate(list(open_model(tiny_models["fp32"], threads=1).predict(frames))),
                  np.concatenate(list(onnx.predict(frames))))
    assert a["pixel_agreement"] > 0.999


def test_bad_model_files_are_one_line_errors(tmp_path):
    from edge_seg.runner import open_model

    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(UserError, match=r"unknown model type; expected .*\.keras.*\.onnx.*\.tflite"):
        open_model(tmp_path / "m.pt")
    with pytest.raises(UserError, match="model file not found"):
        open_model(tmp_path / "none.tflite")
    with pytest.raises(UserError, match="a folder"):
        open_model(tmp_path)


def test_a_keras_model_without_tensorflow_names_the_extra(tmp_path, tiny_models):
    """The runtime alone: .tflite runs, .keras is one line naming the [train] extra."""
    (tmp_path / "m.keras").write_bytes(b"not opened")
    code = (f"from edge_seg.runner import open_model\n"
            f"from edge_seg.errors import UserError\n"
            f"print(open_model({str(tiny_models['fp32'])!r}, threads=1).kind)\n"
            f"try:\n    open_model({str(tmp_path / 'm.keras')!r})\n"
            f"except UserError as e:\n    print('error:', e)\n")
    out = subprocess.run(python_without_tf(code), capture_output=True, text=True, cwd=TESTS)
    assert out.returncode == 0, out.stderr[-2000:]
    kind, error = out.stdout.strip().splitlines()
    assert kind == "tflite"
    assert error.startswith(f"error: {tmp_path / 'm.keras'}: running .keras models needs ")
    assert "install the training extra [train]" in error


# ------------------------------------------------------------------ eval and compare with .onnx

@pytest.fixture(scope="module")
def keras_and_onnx(tmp_path_factory):
    """A tiny float .keras and its .onnx export (edge_seg.converters.onnx_export)."""
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(TESTS))
    from model_builder import build_unet

    from edge_seg.converters.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("onnx-pair")
    model = build_unet(RUNTIME_MODEL_SIZE, (8, 16, 24), seed=1)
    model.save(root / "float.keras")
    export_onnx(model, root / "float.onnx")
    return root / "float.keras", root / "float.onnx"


def _edge_seg(*args):
    from click.testing import CliRunner

    from edge_seg.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


def test_eval_scores_an_onnx_model_as_its_keras_source(keras_and_onnx, synthetic_camvid):
    from edge_seg.train.eval_cli import run_eval

    keras_path, onnx_path = keras_and_onnx
    out = _edge_seg("eval", onnx_path, "--data", synthetic_camvid, "--limit", "4")
    assert out.exit_code == 0, out.output[-2000:]
    assert "float.onnx (onnx-fp32, float32 in/float32 out, 128x64)" in out.output and "mIoU(7)" in out.output
    a = run_eval(keras_path, synthetic_camvid, "auto", "val", None, False, None, 4, 4, True)
    b = run_eval(onnx_path, synthetic_camvid, "auto", "val", None, False, None, 4, 4, True)
    assert a["pixels"] == b["pixels"] > 0
    assert abs(a["miou7"] - b["miou7"]) < 1e-3


def test_compare_an_onnx_export_with_its_float_model(keras_and_onnx, synthetic_camvid, tmp_path):
    keras_path, onnx_path = keras_and_onnx
    out = _edge_seg("compare", keras_path, onnx_path, "--data", synthetic_camvid, "--threads", "1",
                    "--no-record", "--json", tmp_path / "c.json")
    assert out.exit_code == 0, out.output[-2000:]
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [(r["kind"], r["format"]) for r in rows] == [("keras", "float (keras)"), ("onnx", "onnx-fp32")]
    assert rows[1]["pixel_agreement"] > 0.999 and abs(rows[1]["drop_points"]) < 0.1
    assert rows[1]["latency_ms"]["runs"] == 20
