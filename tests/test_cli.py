"""The CLI and the runtime package start without TensorFlow; imports point toward edge/."""
import ast
import subprocess
from pathlib import Path

from conftest import REPO, python_without_tf

FORBIDDEN_IN_EDGE = {"tensorflow", "tf_keras", "tensorflow_model_optimization", "keras", "train",
                     "converters", "calibration"}


def test_help_and_edge_import_without_tensorflow():
    code = ("import edge, edge.labels, edge.metrics, edge.preprocess, edge.model_meta\n"
            "from edge.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'tf_keras'))]\n"
            "print('TF-FREE-OK')\n")
    out = subprocess.run(python_without_tf(code), capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "TF-FREE-OK" in out.stdout
    for command in ("run", "train", "eval", "convert", "data"):
        assert command in out.stdout


def test_training_commands_say_what_to_install_without_tensorflow():
    code = "from edge.cli import main\nmain(['train', '--help'])\n"
    out = subprocess.run(python_without_tf(code), capture_output=True, text=True, cwd=REPO)
    # either the help loads (no TF at import time) or a one-line install hint, never a traceback
    assert "Traceback" not in out.stderr, out.stderr


def test_edge_never_imports_training_side():
    for path in sorted((REPO / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN_IN_EDGE, f"{path.name} imports {name}"
