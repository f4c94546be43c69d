"""Device profiles: what `edge-seg tune` measured here, and what `edge-seg run` starts with.

A profile is one JSON file, by default ``$XDG_CONFIG_HOME/edge-seg/profile.json``
(``~/.config/edge-seg/profile.json``): the device (architecture, CPU model, cores,
hostname), the chosen model (path and sha256), threads and delegate, the measured FPS and
agreement, the date, and the whole tuning table.

``edge-seg run`` uses it when no ``--model``/``--threads``/``--delegate`` is given. A profile
that cannot be trusted is ignored with one warning line and the run starts with the
bundled default model: unreadable JSON, a model file that is missing or changed since the
tuning (sha256), or a profile made on different hardware.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

FORMAT = "edge-seg-profile/1"
FILE_NAME = "profile.json"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/edge-seg`` (default ``~/.config/edge-seg``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "edge-seg"


def default_profile_path() -> Path:
    return config_dir() / FILE_NAME


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """A human name for the CPU/board: /proc/cpuinfo 'model name' (x86, some ARM), else its
    'Model' line (Raspberry Pi), else the device-tree model (Jetson, Pi), else platform."""
    cpuinfo = _read_text("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "cpu model"):
        if key in fields:
            return fields[key]
    tree = _read_text("/proc/device-tree/model").strip("\x00 \n")
    if tree:
        return tree
    return platform.processor() or platform.machine() or "unknown"


def device_info() -> dict:
    info = {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "hostname": platform.node(),
        "python": platform.python_version(),
    }
    board = _read_text("/proc/device-tree/model").strip("\x00 \n")
    if board:
        info["board"] = board
    return info


def same_hardware(a: dict, b: dict) -> bool:
    """Architecture, CPU model and core count agree (the hostname may differ: containers,
    re-imaged SD cards)."""
    return all(a.get(k) == b.get(k) for k in ("machine", "cpu", "cores"))


@dataclass
class Profile:
    path: Path
    data: dict

    @property
    def model(self) -> Path:
        return Path(self.data["model"]["path"])

    @property
    def threads(self) -> int:
        return int(self.data["threads"])

    @property
    def delegate(self) -> str:
        return str(self.data["delegate"])

    @property
    def created(self) -> str:
        return str(self.data.get("created", "?"))

    def describe(self) -> str:
        return (f"{self.path} (tuned {self.created}): {self.model.name} threads {self.threads} "
                f"delegate {self.delegate}")


def load_profile(path: str | os.PathLike) -> tuple[Profile | None, str | None]:
    """(Profile, None) when it can be used here; (None, why) when it must be ignored.
    Never raises for a bad profile: the run goes on with the default model."""
    from edge_seg.backends.metadata import file_sha256

    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"profile {path} does not exist"
    except (OSError, ValueError) as e:
        return None, f"profile {path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    try:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            return None, f"profile {path} is not an edge-seg profile (format {got!r}, expected {FORMAT!r})"
        model = Path(data["model"]["path"])
        sha = data["model"]["sha256"]
        threads, delegate = int(data["threads"]), str(data["delegate"])
        if threads < 1 or not delegate:
            raise ValueError("threads/delegate")
    except (KeyError, TypeError, ValueError) as e:
        return None, f"profile {path} is incomplete or malformed ({type(e).__name__}: {e})"
    here = device_info()
    if not same_hardware(data.get("device") or {}, here):
        d = data.get("device") or {}
        return None, (f"profile {path} was tuned on another device ({d.get('machine')}, {d.get('cpu')}, "
                      f"{d.get('cores')} cores; this is {here['machine']}, {here['cpu']}, "
                      f"{here['cores']} cores): run 'edge-seg tune' here")
    if not model.is_file():
        return None, f"profile {path}: its model {model} is missing"
    try:
        current = file_sha256(model)
    except OSError as e:
        return None, f"profile {path}: its model {model} is unreadable ({e})"
    if current != sha:
        return None, (f"profile {path}: its model {model} changed since it was tuned "
                      "(sha256 differs): run 'edge-seg tune' again")
    return Profile(path, data), None
