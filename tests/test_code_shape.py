"""No function in the package's folders is longer than 80 lines: past that a function
does several things whose order and hand-offs nobody can see at a glance (nor test apart)."""
from __future__ import annotations

import ast

from conftest import REPO

MAX_LINES = 80
FOLDERS = ("train", "converters", "calibration", "edge")


def long_functions(source: str, name: str = "<source>", limit: int = MAX_LINES) -> list[str]:
    """``name:line function (N lines)`` for every function or method, nested ones included,
    longer than ``limit`` lines (decorators not counted, the docstring counted)."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_80_lines():
    offenders = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            offenders += long_functions(path.read_text(), str(path.relative_to(REPO)))
    assert not offenders, f"functions over {MAX_LINES} lines:\n" + "\n".join(offenders)


def test_the_check_finds_long_functions_nested_or_async():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES - 1))  # def line + 79 = 80: allowed
    source = (f"def fits():\n{body}\n"
              f"def too_long():\n{body}    return x0\n\n"
              "class C:\n    def method(self):\n        async def inner():\n"
              + "".join("    " * 3 + f"y{i} = {i}\n" for i in range(MAX_LINES)) +
              "        return inner\n")
    assert long_functions(source, "m.py") == [
        f"m.py:{MAX_LINES + 2} too_long (81 lines)",
        f"m.py:{2 * MAX_LINES + 5} method ({MAX_LINES + 3} lines)",
        f"m.py:{2 * MAX_LINES + 6} inner (81 lines)",
    ]
    assert long_functions("def f():\n    pass\n") == []
