"""GPU-delegate compatibility of a .tflite model.

``tf.lite.experimental.Analyzer.analyze(gpu_compatibility=True)`` prints its report from
C++ (file descriptor 1) or Python, depending on the build, so :func:`analyzer_report`
redirects fd 1 (``os.dup2``) into a temporary file and ``sys.stdout`` into a buffer around
the call and reads both back. The report lists every op
(``Op#3 CONV_2D(...)``), a ``GPU COMPATIBILITY WARNING`` per op the delegate rejects and
a closing verdict ("Your model looks compatible with GPU delegate...").

The TensorFlow 2.21 and ai-edge-litert 2.x wheels print "compatible" even for ops the
GPU delegate has no kernel for (SEGMENT_SUM, TOPK_V2, REVERSE_SEQUENCE were tried), so the
ops the analyzer lists are also checked against the delegate's op list (the builtins
accepted by TFLite's ``CheckGpuDelegateCompatibility``). The verdict is "compatible"
only when both agree; the ops the GPU delegate can't run are named.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

# Builtin ops TFLite's GPU delegate accepts (tensorflow/lite/tools/versioning/gpu_compatibility.cc,
# per-op parameter checks aside).
GPU_DELEGATE_OPS = frozenset("""
ABS ADD ADD_N ATAN2 AVERAGE_POOL_2D BATCH_MATMUL CAST CEIL CONCATENATION CONV_2D COS CUMSUM
DENSIFY DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU
EMBEDDING_LOOKUP EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GELU GREATER
GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGISTIC LSTM MAXIMUM
MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL ONE_HOT PACK PAD PADV2 POW PRELU
QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR
RESIZE_NEAREST_NEIGHBOR RSQRT SELECT SELECT_V2 SIGN SIN SLICE SOFTMAX SPACE_TO_DEPTH SPLIT
SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE STABLEHLO_CLAMP STRIDED_SLICE SUB SUM TANH TILE
TRANSPOSE TRANSPOSE_CONV
""".split())

_OP_LINE = re.compile(r"^\s*Op#(\d+)\s+([A-Z0-9_]+)\(")
_WARNING = re.compile(r"GPU COMPATIBILITY WARNING:\s*(.*)")
_COMPATIBLE = "looks compatible with GPU delegate"


def _capture_stdout(fn) -> str:
    """Run ``fn`` with both Python's ``sys.stdout`` and file descriptor 1 (C/C++ stdout)
    redirected; return everything written to either. (The analyzer's report is printed
    from Python in some builds and from C++ in others; under pytest sys.stdout is not fd 1.)"""
    import contextlib
    import io

    sys.stdout.flush()
    buffer = io.StringIO()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            try:
                with contextlib.redirect_stdout(buffer):
                    fn()
            finally:
                sys.stdout.flush()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        native = tmp.read().decode("utf-8", "replace")
    return native + buffer.getvalue()


def analyzer_report(model_content: bytes) -> str:
    import tensorflow as tf

    return _capture_stdout(lambda: tf.lite.experimental.Analyzer.analyze(
        model_content=model_content, gpu_compatibility=True))


def parse_report(report: str) -> dict:
    """Ops, analyzer warnings and verdict from an analyzer report."""
    ops = []
    warnings = []
    for line in report.splitlines():
        m = _OP_LINE.match(line)
        if m:
            ops.append(m.group(2))
            continue
        w = _WARNING.search(line)
        if w:
            warnings.append(w.group(1).strip())
    analyzer_ok = _COMPATIBLE in report and not warnings
    outside = sorted({op for op in ops if op not in GPU_DELEGATE_OPS})
    version = re.search(r"TFLite runtime version ([^\s.]+\.[^\s]+?)\.?\s", report)
    compatible = analyzer_ok and not outside
    if not ops:
        verdict = "unknown (the analyzer's report listed no ops)"
    elif compatible:
        verdict = "compatible"
    else:
        named = outside + [w for w in warnings if not any(op in w for op in outside)]
        verdict = "incompatible: " + ", ".join(named) if named else "incompatible"
    return {
        "verdict": verdict,
        "compatible": compatible,
        "analyzer_verdict": "compatible" if analyzer_ok else "incompatible",
        "analyzer_warnings": warnings,
        "unsupported_ops": outside,
        "ops": sorted(set(ops)),
        "analyzer_runtime_version": version.group(1) if version else None,
        "checked_with": "tf.lite.experimental.Analyzer(gpu_compatibility=True) + GPU delegate op list",
    }


def check_gpu(model_content: bytes) -> dict:
    """GPU-delegate verdict for a .tflite flatbuffer (see module docstring)."""
    return parse_report(analyzer_report(model_content))
