"""Loading a .tflite model into whichever TFLite interpreter is installed, with a delegate.

Interpreters, in order of preference (the first importable one wins; the environment
variable ``EDGE_SEG_BACKEND`` = ``ai-edge-litert`` | ``tflite-runtime`` | ``tensorflow``
forces one):

1. ``ai_edge_litert.interpreter`` (the LiteRT wheel, what ``pip install edge-seg`` brings),
2. ``tflite_runtime.interpreter`` (older Raspberry Pi / Coral images),
3. ``tensorflow.lite`` (a full TensorFlow install).

Delegates (``--delegate``):

* ``auto``     the Edge TPU for models compiled for it (``*_edgetpu.tflite``), else XNNPACK;
* ``cpu``      the built-in CPU kernels only, XNNPACK disabled (a debugging baseline);
* ``xnnpack``  the built-in kernels with the XNNPACK CPU delegate (the interpreter's default);
* ``gpu``      the TFLite GPU delegate ``libtensorflowlite_gpu_delegate.so``, looked up in
  ``$EDGE_SEG_GPU_DELEGATE`` (a file path), then the standard library folders
  (``$LD_LIBRARY_PATH``, ``/usr/local/lib``, ``/usr/lib``, ``/usr/lib/<arch>-linux-gnu``);
  pass ``--delegate /path/to/libtensorflowlite_gpu_delegate.so`` to name it directly;
* ``edgetpu``  ``libedgetpu.so.1`` (Coral);
* ``PATH.so``  any TFLite external-delegate library.

A delegate that cannot be loaded or applied (OSError, ValueError, ...) never stops the
run: the model falls back to the CPU (XNNPACK) and one line says why.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import platform
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edge_seg.errors import UserError

BACKENDS = ("ai-edge-litert", "tflite-runtime", "tensorflow")
BACKEND_ENV = "EDGE_SEG_BACKEND"
DELEGATES = ("auto", "cpu", "xnnpack", "gpu", "edgetpu")
GPU_DELEGATE_LIBRARY = "libtensorflowlite_gpu_delegate.so"
GPU_DELEGATE_ENV = "EDGE_SEG_GPU_DELEGATE"
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib",
                   "Windows": "edgetpu.dll"}.get(platform.system(), "libedgetpu.so.1")
STANDARD_LIB_DIRS = ("/usr/local/lib", "/usr/lib", f"/usr/lib/{platform.machine()}-linux-gnu",
                     "/usr/lib/aarch64-linux-gnu", "/usr/lib/arm-linux-gnueabihf")
_LIBRARY_SUFFIXES = (".so", ".dylib", ".dll")
# what a delegate may raise when its library is missing, lacks the external-delegate
# entry points, or cannot take the graph
_DELEGATE_ERRORS = (OSError, ValueError, RuntimeError, AttributeError)


@dataclass
class Runtime:
    """One installed TFLite interpreter implementation."""
    name: str
    version: str
    Interpreter: type
    load_delegate: Callable
    op_resolver_type: object = None  # the OpResolverType enum, when the backend has it


@dataclass
class BackendInfo:
    """What actually runs; printed in the banner and written to the report."""
    backend: str
    delegate_requested: str
    delegate: str
    threads: int | None
    fallback: str | None = None  # why the requested delegate is not the one running
    notes: list[str] = field(default_factory=list)
    accelerator = "delegate"  # what the banner calls it (ONNX Runtime: "provider")

    def describe(self) -> str:
        threads = self.threads if self.threads else "default"
        text = f"{self.backend}, {self.accelerator} {self.delegate}, threads {threads}"
        if self.fallback:
            text += f" (requested {self.delegate_requested}: fell back)"
        return text

    def as_dict(self) -> dict:
        return {"backend": self.backend, "delegate_requested": self.delegate_requested,
                "delegate": self.delegate, "threads": self.threads, "fallback": self.fallback}


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _version(module_name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(module_name)
    except PackageNotFoundError:
        return "?"


def _import_runtime(name: str) -> Runtime:
    if name == "ai-edge-litert":
        from ai_edge_litert import interpreter as m
        return Runtime(name, _version("ai-edge-litert"), m.Interpreter, m.load_delegate,
                       getattr(m, "OpResolverType", None))
    if name == "tflite-runtime":
        from tflite_runtime import interpreter as m
        return Runtime(name, _version("tflite-runtime"), m.Interpreter, m.load_delegate,
                       getattr(m, "OpResolverType", None))
    if name == "tensorflow":
        # the last resort, only when neither LiteRT wheel is installed (imported by name:
        # the runtime has no static dependency on TensorFlow)
        tf = importlib.import_module("tensorflow")
        lite = tf.lite
        return Runtime(name, tf.__version__, lite.Interpreter, lite.experimental.load_delegate,
                       getattr(lite.experimental, "OpResolverType", None))
    raise UserError(f"{BACKEND_ENV}={name!r}: choose one of {', '.join(BACKENDS)}")


def find_runtime(prefer: str | None = None) -> Runtime:
    """The first importable interpreter (or the one ``prefer``/$EDGE_SEG_BACKEND names)."""
    prefer = prefer or os.environ.get(BACKEND_ENV) or None
    if prefer:
        try:
            return _import_runtime(prefer)
        except ImportError as e:
            raise UserError(f"TFLite backend {prefer!r} is not installed ({e})") from None
    for name in BACKENDS:
        try:
            return _import_runtime(name)
        except ImportError:
            continue
    raise UserError("no TFLite interpreter is installed: pip install ai-edge-litert "
                    "(or tflite-runtime on older devices)")


def check_model_file(path: str | os.PathLike) -> Path:
    """Exists, readable and a TFLite flatbuffer ('TFL3' identifier); UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model {path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UserError(f"model {path}: cannot read it ({e.strerror})") from None
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise UserError(f"model {path}: not a TFLite model (no TFL3 identifier); "
                        "export one with 'edge-seg convert'")
    return path


def gpu_delegate_candidates() -> list[Path]:
    """Where ``--delegate gpu`` looks, in order: $EDGE_SEG_GPU_DELEGATE, then library folders."""
    found = []
    env = os.environ.get(GPU_DELEGATE_ENV)
    if env:
        found.append(Path(env))
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    dirs += list(STANDARD_LIB_DIRS)
    for d in dict.fromkeys(dirs):
        found.append(Path(d) / GPU_DELEGATE_LIBRARY)
    return found


def find_gpu_delegate() -> Path:
    env = os.environ.get(GPU_DELEGATE_ENV)
    if env:
        if not Path(env).is_file():
            raise OSError(f"${GPU_DELEGATE_ENV}={env} is not a file")
        return Path(env)
    for candidate in gpu_delegate_candidates():
        if candidate.is_file():
            return candidate
    raise OSError(f"{GPU_DELEGATE_LIBRARY} not found (set ${GPU_DELEGATE_ENV} or pass "
                  "--delegate /path/to/it.so; see docs/deploying.md)")


def is_delegate_path(delegate: str) -> bool:
    return delegate.endswith(_LIBRARY_SUFFIXES) or os.sep in delegate or ".so." in delegate


def check_delegate(delegate: str) -> str:
    delegate = (delegate or "auto").strip()
    if delegate.lower() in DELEGATES:
        return delegate.lower()
    if is_delegate_path(delegate):
        return delegate
    raise UserError(f"--delegate {delegate!r}: choose one of {'|'.join(DELEGATES)} "
                    "or the path of a delegate library (.so)")


@contextlib.contextmanager
def _quiet_native_stderr():
    """Hide the interpreter's native 'INFO: Created TensorFlow Lite XNNPACK delegate' line;
    anything else written to stderr meanwhile is passed on."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (pytest capture etc.)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                if line.strip() and not line.startswith("INFO: "):
                    _stderr_line(line)


def _make(runtime: Runtime, model: Path | bytes, threads, delegates=(), no_default_delegates=False,
          resolver: str | None = None):
    """``model``: a file, or a graph in memory; ``resolver``: an OpResolverType name."""
    kwargs = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    kwargs["num_threads"] = threads
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    if no_default_delegates:
        resolver = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    if resolver:
        if runtime.op_resolver_type is None:
            raise ValueError(f"{runtime.name} cannot disable XNNPACK")
        kwargs["experimental_op_resolver_type"] = getattr(runtime.op_resolver_type, resolver)
    with warnings.catch_warnings(), _quiet_native_stderr():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = runtime.Interpreter(**kwargs)
        interpreter.allocate_tensors()
    return interpreter


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def load_interpreter(model_path, threads: int | None = None, delegate: str = "auto",
                     log: Callable[[str], None] | None = None, runtime: Runtime | None = None):
    """(interpreter with tensors allocated, BackendInfo). Bad model -> UserError;
    a delegate that cannot load -> CPU with one line through ``log``."""
    log = log or _stderr_line
    path = check_model_file(model_path)
    delegate = check_delegate(delegate)
    runtime = runtime or find_runtime()
    backend = f"{runtime.name} {runtime.version}"
    info = BackendInfo(backend, delegate, "xnnpack", threads)

    def cpu_fallback(what: str, error: BaseException):
        info.fallback = f"{what}: {_first_line(error)}"
        log(f"warning: delegate {what} could not be used ({_first_line(error)}); "
            "running on the CPU (xnnpack) instead")
        return _default(runtime, path, threads)

    wanted = delegate
    if delegate == "auto":
        wanted = "edgetpu" if "edgetpu" in path.stem.lower() else "xnnpack"
    try:
        if wanted == "xnnpack":
            return _default(runtime, path, threads), info
        if wanted == "cpu":
            try:
                interpreter = _make(runtime, path, threads, no_default_delegates=True)
                info.delegate = "cpu (built-in kernels, XNNPACK off)"
                return interpreter, info
            except ValueError as e:
                if "cannot disable" not in str(e):
                    raise
                info.notes.append(str(e))
                return _default(runtime, path, threads), info
        if wanted == "gpu":
            try:
                library = find_gpu_delegate()
            except OSError as e:
                return cpu_fallback("gpu", e), info
            label = f"gpu ({library})"
        elif wanted == "edgetpu":
            library, label = EDGETPU_LIBRARY, "edgetpu"
        else:
            library, label = wanted, f"external ({wanted})"
        try:
            _check_delegate_library(str(library))
            loaded = runtime.load_delegate(str(library))
            interpreter = _make(runtime, path, threads, delegates=[loaded])
        except _DELEGATE_ERRORS as e:
            if _is_model_error(e):
                raise
            return cpu_fallback(label, e), info
        info.delegate = label
        return interpreter, info
    except (ValueError, RuntimeError) as e:
        raise UserError(f"model {path}: the interpreter cannot load it ({_first_line(e)})") from None


def _check_delegate_library(library: str) -> None:
    """Load the library with ctypes first: the interpreter's Delegate object, failing half-way
    in its constructor, would print an 'Exception ignored' traceback when collected."""
    import ctypes
    lib = ctypes.CDLL(library)  # OSError names the library and the reason
    if not hasattr(lib, "tflite_plugin_create_delegate"):
        raise AttributeError(f"{library} is not a TFLite external delegate "
                             "(no tflite_plugin_create_delegate entry point)")


def _is_model_error(error: BaseException) -> bool:
    return "not a valid Flatbuffer" in str(error) or "Model provided" in str(error)


def _default(runtime: Runtime, path: Path, threads):
    """Built-in kernels with the default XNNPACK delegate."""
    return _make(runtime, path, threads)


# load_graph's kernels -> the interpreter's OpResolverType (None: its default, with XNNPACK)
KERNELS = {"xnnpack": None, "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}


def load_graph(model: str | os.PathLike | bytes, threads: int | None = None, kernels: str = "xnnpack",
               runtime: Runtime | None = None):
    """An interpreter (tensors allocated) over any TFLite graph, from a file or from bytes in
    memory, with or without metadata: for tools that inspect a converted graph or time bare
    ops (a segmentation model is run through edge_seg.runner). ``kernels``: ``xnnpack`` (the
    default delegate), ``builtin`` (XNNPACK off, as ``--delegate cpu``) or ``reference``
    (TFLite's portable reference kernels, the cross-architecture baseline)."""
    if kernels not in KERNELS:
        raise UserError(f"kernels {kernels!r}: choose one of {', '.join(KERNELS)}")
    what = "a graph in memory" if isinstance(model, bytes) else f"model {model}"
    if not isinstance(model, bytes):
        model = check_model_file(model)
    runtime = runtime or find_runtime()
    try:
        return _make(runtime, model, threads, resolver=KERNELS[kernels])
    except (ValueError, RuntimeError) as e:
        raise UserError(f"{what}: the interpreter cannot load it ({_first_line(e)})") from None
