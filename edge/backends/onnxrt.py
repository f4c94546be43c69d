"""ONNX Runtime backend for ``.onnx`` models (the Jetson path; ``edge-seg convert --onnx``).

    from edge_seg.backends.onnxrt import load_onnx
    model = load_onnx("model.onnx", threads=4)          # delegate="auto"
    logits = model.run(x)                               # x (1, H, W, 3) float32 -> (1, h, w, C)

Execution providers (``delegate``):

* ``auto``      TensorRT, else CUDA, else the CPU -- whichever the installed onnxruntime
                has (``onnxruntime.get_available_providers()``; ``onnxruntime-gpu`` /
                the JetPack wheel bring TensorRT and CUDA, plain ``onnxruntime`` the CPU);
* ``tensorrt``  TensorrtExecutionProvider, then CUDA for what TensorRT leaves (engines cached under
                ``$EDGE_SEG_CACHE``/``~/.cache/edge-seg/tensorrt``: the first run builds them,
                which takes minutes on a Jetson);
* ``cuda`` / ``gpu``  CUDAExecutionProvider;
* ``cpu``       CPUExecutionProvider.

The CPU provider is always appended as the fallback for nodes a GPU provider does not take.
A requested provider that is missing, or that the session silently dropped (onnxruntime-gpu
without the CUDA/TensorRT libraries), never stops the run: one line through ``log`` says
the model runs on the CPU instead, as with the TFLite delegates (edge_seg.backends.litert).

The loaded model offers both ``run(x)`` and the slice of the TFLite interpreter interface
edge_seg.segmenter uses (``get_input_details``, ``get_output_details``, ``set_tensor``,
``invoke``, ``get_tensor``), in NHWC terms whatever the graph's layout: an NCHW graph
(``export_onnx(nchw=True)``) is transposed in and out here. onnxruntime is imported only
when a model is loaded; without it: UserError naming the package to install.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np

from edge_seg.backends.litert import BackendInfo
from edge_seg.errors import UserError
from edge_seg.io.publish import cache_dir

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
DELEGATES = ("auto", "tensorrt", "cuda", "gpu", "cpu")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}


class OnnxBackendInfo(BackendInfo):
    """What actually runs: edge_seg.backends.litert.BackendInfo, with execution providers."""
    accelerator = "provider"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise UserError(f"running .onnx models needs ONNX Runtime ({e}): pip install onnxruntime "
                        "(on a Jetson: the onnxruntime-gpu wheel for your JetPack)") from None
    return onnxruntime


def available() -> bool:
    """Whether onnxruntime can be imported (``tune`` includes .onnx models only then)."""
    import importlib.util
    return importlib.util.find_spec("onnxruntime") is not None


def check_delegate(delegate: str | None) -> str:
    d = (delegate or "auto").strip().lower()
    if d == "gpu":
        d = "cuda"
    if d not in PROVIDERS and d != "auto":
        raise UserError(f"--delegate {delegate!r} for an .onnx model: choose one of "
                        f"{'|'.join(DELEGATES)}")
    return d


def choose_providers(delegate: str, available_providers: list[str]) -> tuple[list[str], str | None]:
    """(providers in priority order, CPU last; why the request could not be met or None)."""
    delegate = check_delegate(delegate)
    cpu = PROVIDERS["cpu"]
    if delegate == "auto":
        chosen = [p for p in (PROVIDERS["tensorrt"], PROVIDERS["cuda"]) if p in available_providers]
        return chosen + [cpu], None
    wanted = PROVIDERS[delegate]
    if wanted == cpu:
        return [cpu], None
    if wanted in available_providers:
        # TensorRT hands the nodes it cannot take to CUDA when that is there, as ORT advises
        extra = [PROVIDERS["cuda"]] if (delegate == "tensorrt"
                                        and PROVIDERS["cuda"] in available_providers) else []
        return [wanted, *extra, cpu], None
    return [cpu], (f"{wanted} is not in this onnxruntime "
                   f"(available: {', '.join(available_providers) or 'none'})")


def tensorrt_cache_dir() -> Path:
    return cache_dir("tensorrt")


def _provider_options(providers: list[str], fp16: bool) -> list[dict]:
    options = []
    for p in providers:
        if p == PROVIDERS["tensorrt"]:
            cache = tensorrt_cache_dir()
            try:
                cache.mkdir(parents=True, exist_ok=True)
                options.append({"trt_engine_cache_enable": "True",
                                "trt_engine_cache_path": str(cache),
                                "trt_fp16_enable": "True" if fp16 else "False"})
            except OSError:
                options.append({"trt_fp16_enable": "True" if fp16 else "False"})
        else:
            options.append({})
    return options


def _short(name: str) -> str:
    return {v: k for k, v in PROVIDERS.items()}.get(name, name)


def _dim(value) -> int | None:
    return int(value) if isinstance(value, (int, np.integer)) and value > 0 else None


class OnnxModel:
    """One ONNX Runtime session with a single image input and a single logits output."""

    def __init__(self, session, info: OnnxBackendInfo, path: Path, input_size=None,
                 layout: str | None = None, num_categories: int | None = None):
        self.session = session
        self.info = info
        self.path = path
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"model {path}: expected one input and one output, got "
                            f"{len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        if self._in.type not in _ORT_TYPES:
            raise UserError(f"model {path}: unsupported input type {self._in.type}")
        self.input_name, self.output_name = self._in.name, self._out.name
        self.input_dtype = _ORT_TYPES[self._in.type]
        self.output_dtype = _ORT_TYPES.get(self._out.type, np.float32)
        shape = list(self._in.shape)
        if len(shape) != 4:
            raise UserError(f"model {path}: input shape {shape} is not 4-D")
        self.layout = (layout or ("NCHW" if _dim(shape[1]) == 3 and _dim(shape[3]) != 3
                                  else "NHWC")).upper()
        if self.layout not in ("NHWC", "NCHW"):
            raise UserError(f"model {path}: unknown layout {layout!r}")
        h, w = (shape[2], shape[3]) if self.layout == "NCHW" else (shape[1], shape[2])
        channels = shape[1] if self.layout == "NCHW" else shape[3]
        if _dim(channels) not in (3, None):
            raise UserError(f"model {path}: input shape {shape} does not take 3-channel images")
        h, w = _dim(h), _dim(w)
        if input_size is not None:
            iw, ih = (int(v) for v in input_size)
            if (h and h != ih) or (w and w != iw):
                raise UserError(f"model {path}: input tensor is {w}x{h} but the metadata says {iw}x{ih}")
            h, w = ih, iw
        if not h or not w:
            raise UserError(f"model {path}: the input size is dynamic and no metadata gives it")
        self.input_size = (w, h)
        oshape = list(self._out.shape)
        self.output_layout = self.layout
        if len(oshape) == 4 and num_categories:
            if _dim(oshape[-1]) == num_categories:
                self.output_layout = "NHWC"
            elif _dim(oshape[1]) == num_categories:
                self.output_layout = "NCHW"
        self._pending: np.ndarray | None = None
        self._result: np.ndarray | None = None

    # -- the minimal interface -------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) -- or (N, 3, H, W) for an NCHW graph -- -> logits (N, h, w, C)."""
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"input must be 4-D, got shape {x.shape}")
        w, h = self.input_size
        if self.layout == "NCHW" and x.shape[1:] == (h, w, 3):
            x = x.transpose(0, 3, 1, 2)
        elif self.layout == "NHWC" and x.shape[1:] == (3, h, w):
            x = x.transpose(0, 2, 3, 1)
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        y = self.session.run([self.output_name], {self.input_name: x})[0]
        if self.output_layout == "NCHW":
            y = y.transpose(0, 2, 3, 1)
        return y

    __call__ = run

    # -- the slice of the TFLite interpreter interface edge_seg.segmenter uses -----------
    def get_input_details(self) -> list[dict]:
        w, h = self.input_size
        return [{"name": self.input_name, "index": 0, "shape": np.array([1, h, w, 3], np.int32),
                 "dtype": self.input_dtype, "quantization": (0.0, 0), "layout": self.layout}]

    def get_output_details(self) -> list[dict]:
        shape = [d if _dim(d) else -1 for d in self._out.shape]
        if len(shape) == 4:
            shape[0] = 1
            if self.output_layout == "NCHW":
                shape = [shape[0], shape[2], shape[3], shape[1]]
        return [{"name": self.output_name, "index": 0, "shape": np.array(shape, np.int32),
                 "dtype": self.output_dtype, "quantization": (0.0, 0),
                 "layout": self.output_layout}]

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self._pending = value

    def invoke(self) -> None:
        if self._pending is None:
            raise RuntimeError("set_tensor before invoke")
        self._result = self.run(self._pending)

    def get_tensor(self, index: int) -> np.ndarray:
        if self._result is None:
            raise RuntimeError("invoke before get_tensor")
        return self._result

    def allocate_tensors(self) -> None:  # nothing to do: kept for interface parity
        return None


def load_onnx(model_path, threads: int | None = None, delegate: str = "auto",
              log: Callable[[str], None] | None = None, meta: dict | None = None,
              fp16: bool = False) -> OnnxModel:
    """Load ``model_path`` into ONNX Runtime; ``.info`` says which provider really runs.

    ``meta``: the model's sidecar metadata (edge_seg.backends.metadata.read_meta), for the input size
    and layout when the graph leaves them open. ``fp16``: let TensorRT run in half precision.
    Bad file -> UserError; missing provider -> CPU with one line through ``log``.
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    path = Path(model_path)
    if not path.is_file():
        raise UserError(f"model {path}: no such file")
    delegate = check_delegate(delegate)
    ort = import_onnxruntime()
    providers, why = choose_providers(delegate, list(ort.get_available_providers()))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; provider fallbacks are reported below
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    session = None
    while session is None:
        try:
            session = ort.InferenceSession(str(path), options, providers=providers,
                                           provider_options=_provider_options(providers, fp16))
        except Exception as e:  # noqa: BLE001 - ORT raises its own types (Fail, InvalidProtobuf...)
            first = _first_line(e)
            if len(providers) == 1 or _looks_like_model_error(first):
                raise UserError(f"model {path}: ONNX Runtime cannot load it ({first})") from None
            why = f"{_short(providers[0])} could not start ({first})"
            providers = providers[1:]  # next provider, the CPU last
    running = list(session.get_providers())
    if why is None and running and running[0] != providers[0]:
        why = f"{_short(providers[0])} was dropped by onnxruntime (its libraries are missing?)"
    info = OnnxBackendInfo(f"onnxruntime {ort.__version__}", delegate,
                           _short(running[0]) if running else "cpu", threads, fallback=why)
    if why:
        log(f"warning: provider {delegate} could not be used ({why}); running on "
            f"{info.delegate} instead")
    meta = meta or {}
    onnx_meta = meta.get("onnx", {}) if isinstance(meta.get("onnx"), dict) else {}
    return OnnxModel(session, info, path, input_size=meta.get("input_size"),
                     layout=onnx_meta.get("layout"),
                     num_categories=len(meta["categories"]) if meta.get("categories") else 8)


def _first_line(error: BaseException) -> str:
    text = [line for line in str(error).strip().splitlines() if line.strip()]
    return text[0] if text else type(error).__name__


def _looks_like_model_error(message: str) -> bool:
    return any(s in message for s in ("INVALID_PROTOBUF", "Protobuf parsing failed",
                                      "INVALID_GRAPH", "No such file", "NO_SUCHFILE",
                                      "Load model from"))
