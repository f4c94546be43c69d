"""The CLI and the runtime package start without TensorFlow; imports point toward the runtime."""
import ast
import subprocess
from pathlib import Path

from conftest import REPO, edge_seg, python_without_tf

FORBIDDEN_IN_EDGE = {"tensorflow", "tf_keras", "tensorflow_model_optimization", "keras",
                     "edge_seg.train", "edge_seg.converters", "edge_seg.calibration"}


def test_help_and_edge_import_without_tensorflow():
    code = ("import edge_seg, edge_seg.labels, edge_seg.iou, edge_seg.preprocess, edge_seg.backends.metadata\n"
            "from edge_seg.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'tf_keras'))]\n"
            "print('TF-FREE-OK')\n")
    out = subprocess.run(python_without_tf(code), capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "TF-FREE-OK" in out.stdout
    for command in ("run", "train", "eval", "convert", "data"):
        assert command in out.stdout


# TensorFlow absent as pip leaves it: importing it raises ModuleNotFoundError naming it.
TF_NOT_INSTALLED = """
import sys, importlib.abc
class _NoTF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, _NoTF())
"""


def test_training_commands_say_what_to_install_without_tensorflow(synthetic_camvid, tmp_path):
    helped = edge_seg("train", "--help", prelude=TF_NOT_INSTALLED)  # the help itself needs no TensorFlow
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("Usage: ") and "Train a segmentation model" in helped.stdout
    assert "--data" in helped.stdout and "Traceback" not in helped.stderr
    ran = edge_seg("train", "--data", synthetic_camvid, "--run-dir", tmp_path / "run",
                   prelude=TF_NOT_INSTALLED)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this command needs tensorflow"), ran.stderr
    assert "install the training extra [train]" in lines[0]


def test_edge_never_imports_training_side():
    for path in sorted((REPO / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert not {name.split(".")[0], ".".join(name.split(".")[:2])} & FORBIDDEN_IN_EDGE, \
                    f"{path.name} imports {name}"
