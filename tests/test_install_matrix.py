"""The install matrix: pyproject.toml's dependencies under constraints.txt resolve, as
binary wheels from the package index, for every Python and platform users deploy on.

    python tests/test_install_matrix.py        # prints the table

Each combination (CPython 3.10-3.13 x manylinux x86_64 / aarch64 x runtime, train extra,
train and mlflow extras) is one
``pip install --dry-run --only-binary :all: --python-version X --platform P`` resolution with the full dependency tree. pip evaluates environment markers against the
interpreter running it, not the target, so the markers of the requirements and of the
constraints are evaluated here for the target first. Platforms are the manylinux tags a
glibc 2.35 system accepts (Jetson JetPack 6 / Ubuntu 22.04; Raspberry Pi OS Bookworm has
2.36, Trixie 2.41). Results are cached by the content of both files; the tests are marked
``network`` and skip when the index does not answer.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO, index_unreachable

pytestmark = pytest.mark.network

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
ARCHES = ("x86_64", "aarch64")
EXTRAS = ("runtime", "train", "train,mlflow")  # the full install (make install) too
GLIBC_MINOR = 35
COMBOS = [(py, arch, extra) for extra in EXTRAS for py in PYTHONS for arch in ARCHES]
PIP_TIMEOUT_S = 600


def platform_tags(arch: str) -> list[str]:
    tags = [f"manylinux_2_{m}_{arch}" for m in range(GLIBC_MINOR, 16, -1)]
    return tags + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def target_env(py: str, arch: str) -> dict:
    return {"python_version": py, "python_full_version": f"{py}.0", "platform_machine": arch,
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def requirements(extra: str, env: dict) -> list[str]:
    """pyproject's runtime dependencies (plus the extra's), markers evaluated for ``env``."""
    import tomllib

    from packaging.requirements import Requirement
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    if extra != "runtime":
        reqs += [r for name in extra.split(",") for r in project["optional-dependencies"][name]]
    out = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


def constraints(env: dict) -> str:
    """constraints.txt with the lines whose marker holds for ``env``, markers removed."""
    from packaging.requirements import Requirement
    lines = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            lines.append(str(req))
    return "\n".join(lines) + "\n"


def resolve(py: str, arch: str, extra: str, pip_python=sys.executable) -> dict:
    """{'ok': bool, 'why': str, 'packages': {name: version}} for one combination."""
    env = target_env(py, arch)
    with tempfile.TemporaryDirectory() as tmp:
        cons = Path(tmp) / "constraints.txt"
        cons.write_text(constraints(env))
        report = Path(tmp) / "report.json"
        cmd = [str(pip_python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--only-binary", ":all:", "--python-version", py, "--implementation", "cp",
               "--target", str(Path(tmp) / "target"), "--report", str(report), "-c", str(cons)]
        for tag in platform_tags(arch):
            cmd += ["--platform", tag]
        run = subprocess.run(cmd + requirements(extra, env), capture_output=True, text=True,
                             timeout=PIP_TIMEOUT_S, env=dict(os.environ, PIP_NO_INPUT="1"))
        if run.returncode != 0:
            errors = [line for line in run.stderr.splitlines() if line.startswith("ERROR")]
            return {"ok": False, "why": " ".join(errors)[:300] or run.stderr[-300:], "packages": {}}
        installed = json.loads(report.read_text())["install"]
        return {"ok": True, "why": "",
                "packages": {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installed}}


def _pip_version(python=sys.executable) -> tuple[int, ...]:
    run = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True)
    return tuple(int(p) for p in run.stdout.split()[1].split(".")[:2])


def resolver_python(cache_dir: Path | None) -> Path:
    """A Python whose pip reads the index's metadata files (pip >= 23.3): an older pip
    downloads every wheel to read its dependencies (TensorFlow: 600 MB per combination).
    The resolution itself is the same with either. A newer pip goes into a cached venv."""
    if _pip_version() >= (23, 3) or cache_dir is None:
        return Path(sys.executable)
    venv = cache_dir / "resolver-venv"
    python = venv / "bin" / "python"
    if not (python.is_file() and _pip_version(python) >= (23, 3)):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip>=23.3"],
                       check=True, capture_output=True, timeout=PIP_TIMEOUT_S)
    return python


def _key() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        h.update((REPO / name).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def resolve_all(cache=None) -> dict:
    """Every combination, resolved in parallel (pip waits on the network, not the CPU)."""
    key = f"edge-seg/install-matrix/{_key()}"
    if cache is not None and (cached := cache.get(key, None)):
        return {tuple(k.split("|")): v for k, v in cached.items()}
    work = Path(cache.mkdir("edge-seg-install-matrix")) if cache is not None else \
        Path(tempfile.gettempdir()) / "edge-seg-install-matrix"
    work.mkdir(parents=True, exist_ok=True)
    python = resolver_python(work)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(COMBOS, pool.map(lambda c: resolve(*c, pip_python=python), COMBOS)))
    if cache is not None:
        cache.set(key, {"|".join(k): v for k, v in results.items()})
    return results


def table(results: dict) -> str:
    rows = ["| Python | platform | extra | resolves | numpy | tensorflow | why not |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for (py, arch, extra), r in results.items():
        pk = r["packages"]
        rows.append(f"| {py} | manylinux_2_{GLIBC_MINOR} {arch} | {extra} | "
                    f"{'yes' if r['ok'] else 'NO'} | {pk.get('numpy', '')} | "
                    f"{pk.get('tensorflow', '')} | {r['why']} |")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def matrix(request):
    return resolve_all(request.config.cache)


@pytest.mark.parametrize("py, arch, extra", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_resolves(matrix, py, arch, extra):
    result = matrix[(py, arch, extra)]
    assert result["ok"], f"{extra} on CPython {py} {arch}: {result['why']}"
    packages = result["packages"]
    assert {"numpy", "opencv-python-headless", "ai-edge-litert", "click"} <= set(packages)
    assert "tensorflow" not in packages if extra == "runtime" else "tensorflow" in packages


def test_pins_are_what_resolves(matrix):
    """Every package the resolution picks that constraints.txt pins is at its pin: the
    constraints, not the index's newest release, decide."""
    from packaging.requirements import Requirement
    for (py, arch, extra), result in matrix.items():
        pins = {}
        for line in constraints(target_env(py, arch)).splitlines():
            req = Requirement(line)
            pins[req.name.lower().replace("_", "-")] = str(req.specifier).removeprefix("==")
        for name, version in result["packages"].items():
            name = name.replace("_", "-")
            if name in pins:
                assert version == pins[name], (py, arch, extra, name)


if __name__ == "__main__":
    if why := index_unreachable():
        sys.exit(why)
    print(table(resolve_all()))
