"""Where a benchmark ran: the header every benchmark prints first and stores in its JSON.

A speed figure means little without the CPU it was measured on: int8 kernels are faster
than fp32 ones only where the CPU has int8 dot-product instructions (x86 AVX-VNNI or
AVX-512 VNNI, Arm dotprod), so the header names them, with the thread count, the input
size, the model's sha256 prefix and the date.
"""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

# /proc/cpuinfo flag -> what the header calls it (x86 "flags", Arm "Features")
ISA_FLAGS = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "dotprod": ("asimddp",),
}
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    flags = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_id(cpuinfo: str | None = None) -> str | None:
    """x86 "family F model M stepping S": names the part where a virtual machine's model
    name is generic ("Intel(R) Xeon(R) Processor")."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    if "cpu family" not in fields or "model" not in fields:
        return None
    return f"family {fields['cpu family']} model {fields['model']} stepping {fields.get('stepping', '?')}"


def isa(flags: set[str] | None = None) -> dict[str, bool]:
    """{"AVX2": yes?, "AVX-512": ..., "VNNI": ..., "dotprod": ...}."""
    flags = cpu_flags() if flags is None else flags
    return {name: any(f in flags for f in wanted) for name, wanted in ISA_FLAGS.items()}


def int8_dot_instructions(flags: set[str] | None = None) -> list[str]:
    """The CPU's int8 dot-product instruction sets (what makes int8 GEMMs faster than fp32)."""
    flags = cpu_flags() if flags is None else flags
    return sorted(flags & set(INT8_DOT_FLAGS))


def machine(threads, input_size=None, model=None) -> dict:
    """The header's fields. ``threads``: an int or a list; ``input_size``: (W, H) or text."""
    # the hash sidecars, model cards and docs name: unchanged by embedded metadata
    from edge_seg.backends.metadata import model_sha256
    from edge_seg.device_profile import cpu_model

    if isinstance(input_size, (tuple, list)):
        input_size = "x".join(map(str, input_size))
    model_path = Path(model) if model else None
    return {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "isa": isa(),
        "int8_dot_instructions": int8_dot_instructions(),
        "threads": threads,
        "input_size": input_size,
        "model": str(model_path) if model_path else None,
        "model_sha256": model_sha256(model_path)[:12] if model_path and model_path.is_file() else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def header_text(m: dict) -> str:
    """Two lines naming the machine and the measurement."""
    isa_text = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["isa"].items())
    threads = m["threads"] if not isinstance(m["threads"], (list, tuple)) else ",".join(map(str, m["threads"]))
    model = "-"
    if m["model"]:
        model = Path(m["model"]).name + (f" (sha256 {m['model_sha256']})" if m["model_sha256"] else "")
    ident = f", {m['cpu_id']}" if m.get("cpu_id") else ""
    return (f"CPU {m['cpu']} ({m['arch']}{ident}, {m['cores']} cores; {isa_text}); threads {threads}\n"
            f"input {m['input_size'] or '-'}; model {model}; {m['date']}")


def print_header(threads, input_size=None, model=None, file=None) -> dict:
    m = machine(threads, input_size, model)
    print(header_text(m), file=file, flush=True)
    return m


if __name__ == "__main__":
    print_header(os.cpu_count())
