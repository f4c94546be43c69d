"""`edge-seg tune`: find this device's fastest configuration that keeps accuracy.

    edge-seg tune --models DIR [--frames SOURCE] [--max-drop 0.5 | --target-fps F]

Every model variant in DIR (``*.tflite`` with its sidecar ``.json``; ``*.onnx`` when
onnxruntime is installed; any input sizes) is run with every thread count (1..cores) and
every delegate that loads here (TFLite: XNNPACK, the plain CPU kernels, the GPU delegate
when its library loads; ONNX Runtime: CPU, CUDA/TensorRT when present). For each
configuration:

* latency p50/p90 of one frame through preprocess + inference + argmax (edge.segmenter,
  the path ``edge-seg run`` takes), after a warm-up, and FPS = 1000 / mean latency;
* agreement: mIoU(7) of the variant's masks against the float reference's masks on the
  same frames (edge.metrics, the reference mask as ground truth; masks of another size are
  resized NEAREST to the reference's output size, so sizes compare fairly). It is measured
  once per model and delegate: the thread count does not change the arithmetic.
  drop = 100 * (1 - agreement), in points.

With ``--drop-vs labels`` and a calibration manifest as ``--frames``, the drop is instead
the float reference's mIoU(7) minus the variant's against the manifest's ground-truth
masks (at the label resolution), the drop ``edge-seg compare --max-drop`` checks.

The float reference is the ``fp32`` variant in DIR (the largest input size when several),
else the most precise float model found. The choice: the fastest configuration whose drop
is within ``--max-drop`` (default 0.5), or with ``--target-fps`` the most accurate one
that reaches that rate. The result is printed as one table (best first) and saved as a
device profile (edge.profile) that ``edge-seg run`` uses by default.

The runtime only: no TensorFlow.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import click

from .errors import UserError

DEFAULT_MAX_DROP = 0.5
DEFAULT_N_FRAMES = 20
DEFAULT_SECONDS = 3.0
DEFAULT_WARMUP = 3
MIN_RUNS = 5
# float variants, most precise first: the agreement reference when there is no fp32
FLOAT_PREFERENCE = ("fp32", "onnx-fp32", "fp16", "dynamic")
MANIFEST_FORMAT = "edge-seg-calibration/1"
TFLITE_DELEGATES = ("xnnpack", "cpu", "gpu")
ONNX_DELEGATES = ("cpu", "cuda", "tensorrt")


# -- model variants --------------------------------------------------------------------
@dataclass
class Variant:
    path: Path
    meta: dict
    kind: str                       # tflite | onnx
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    quantized: bool
    input_type: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def variant(self) -> str:
        return str(self.meta.get("variant") or "?")

    @property
    def is_fp32(self) -> bool:
        return (self.variant in ("fp32", "onnx-fp32") or self.path.name.endswith("-fp32.tflite")) \
            and not self.quantized

    @property
    def size_text(self) -> str:
        return f"{self.input_size[0]}x{self.input_size[1]}"


def discover(models_dir, log=None) -> tuple[list[Variant], list[tuple[str, str]]]:
    """(usable variants, [(file, why skipped)]). UserError when nothing is usable."""
    from . import backends_onnx
    from .model_meta import sidecar_path
    from .segmenter import Segmenter, is_onnx

    root = Path(models_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"--models {models_dir}: no such folder")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".tflite", ".onnx"))
    variants, skipped = [], []
    onnx_ok = backends_onnx.available()
    for path in files:
        if is_onnx(path) and not onnx_ok:
            skipped.append((path.name, "onnxruntime is not installed (pip install onnxruntime)"))
            continue
        if not sidecar_path(path).is_file():
            skipped.append((path.name, f"no metadata {sidecar_path(path).name} beside it"))
            continue
        try:
            seg = Segmenter(path, threads=1, delegate="cpu" if is_onnx(path) else "xnnpack",
                            log=lambda m: None)
        except UserError as e:
            skipped.append((path.name, str(e)))
            continue
        import numpy as np
        variants.append(Variant(path, seg.meta, "onnx" if is_onnx(path) else "tflite",
                                tuple(seg.input_size), tuple(seg.output_size), seg.quantized,
                                np.dtype(seg.input_dtype).name))
        del seg
    if not variants:
        why = "; ".join(f"{n}: {w}" for n, w in skipped[:3]) if skipped else \
            "no *.tflite (with its sidecar .json) or *.onnx files"
        raise UserError(f"--models {models_dir}: no usable model variant ({why}); convert one with "
                        "'edge-seg convert MODEL --fp32 --int8 -o DIR'")
    return variants, skipped


def choose_reference(variants: list[Variant]) -> Variant:
    """The fp32 variant (largest input size first, .tflite before .onnx), else the most
    precise float model; UserError when every variant is quantised."""
    def area(v):
        return v.input_size[0] * v.input_size[1]
    fp32 = [v for v in variants if v.is_fp32]
    if fp32:
        return sorted(fp32, key=lambda v: (-area(v), v.kind != "tflite", v.name))[0]
    floats = [v for v in variants if not v.quantized]
    if not floats:
        raise UserError("no float model among the variants to measure agreement against: add the "
                        "fp32 variant (edge-seg convert MODEL --fp32 -o DIR)")
    rank = {name: i for i, name in enumerate(FLOAT_PREFERENCE)}
    return sorted(floats, key=lambda v: (rank.get(v.variant, len(rank)), -area(v), v.name))[0]


# -- frames ------------------------------------------------------------------------------
def _manifest_frames(path: Path, n: int, root_override=None, with_labels: bool = False):
    """(frames, description, ground-truth category masks or None) of a calibration manifest."""
    import json

    import cv2
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--frames {path}: unreadable JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise UserError(f"--frames {path}: not a calibration manifest (format {MANIFEST_FORMAT!r})")
    files = [f["image"] for f in manifest.get("files") or [] if isinstance(f, dict) and f.get("image")]
    if not files:
        raise UserError(f"--frames {path}: the manifest lists no frames")
    if root_override:
        root = Path(root_override).expanduser()
    else:
        recorded = Path((manifest.get("dataset") or {}).get("root", "."))
        root = recorded if recorded.is_absolute() else path.resolve().parent / recorded
    if not root.is_dir():
        raise UserError(f"--frames {path}: dataset root {root} not found; pass it with --frames-root")
    root = root.resolve()
    entries = _spread([f for f in manifest["files"] if isinstance(f, dict) and f.get("image")], n)
    frames, gts = [], []
    lut = _label_lut(path, manifest, root) if with_labels else None
    for entry in entries:
        image = cv2.imread(str(root / entry["image"]), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"--frames {path}: {root / entry['image']} is missing or not an image")
        frames.append(image)
        if lut is not None:
            gts.append(_read_label(path, root, entry, lut, image.shape[:2]))
    text = f"{len(frames)} frames of the manifest {path.name} ({root})"
    return frames, text + (", with their labels" if with_labels else ""), (gts if with_labels else None)


def _label_lut(path: Path, manifest: dict, root: Path):
    """Raw mask value -> category for the manifest's dataset format (the evaluation tables
    of edge.labels, as 'edge-seg eval' and 'compare' use them)."""
    from . import labels
    from .mapping import find_mapping, mapping_lut, read_mapping
    fmt = (manifest.get("dataset") or {}).get("format")
    if fmt == "camvid":
        return labels.camvid_lut()
    if fmt == "cityscapes":
        return labels.cityscapes_lut(for_eval=True)
    if fmt == "folder" and find_mapping(root):
        return mapping_lut(read_mapping(find_mapping(root)))
    raise UserError(f"--frames {path}: cannot read the labels of a {fmt!r} dataset here "
                    "(camvid, cityscapes, or folder with mapping.json); use --drop-vs float")


def _read_label(path: Path, root: Path, entry: dict, lut, shape):
    import cv2

    from . import labels
    if not entry.get("mask"):
        raise UserError(f"--frames {path}: {entry['image']} has no mask; --drop-vs labels needs "
                        "a manifest with masks")
    raw = cv2.imread(str(root / entry["mask"]), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise UserError(f"--frames {path}: {root / entry['mask']} is missing or not a one-channel mask")
    if raw.shape != tuple(shape):
        raise UserError(f"--frames {path}: mask {entry['mask']} is {raw.shape[1]}x{raw.shape[0]} but "
                        f"its image is {shape[1]}x{shape[0]}")
    try:
        return labels.apply_lut(raw, lut, what=str(root / entry["mask"]))
    except ValueError as e:
        raise UserError(str(e)) from None


def _spread(items: list, n: int) -> list:
    """n items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def load_frames(spec: str | None, n: int, root=None) -> tuple[list, str]:
    """(BGR frames, description) from a calibration manifest (.json), a folder or glob of
    images, an image, a video, a camera index or 'demo' (the synthetic street scenes)."""
    from . import sources
    spec = (spec or sources.DEMO).strip()
    if n < 1:
        raise UserError(f"--n-frames {n}: must be at least 1")
    if spec.lower() == sources.DEMO:
        render_scene = sources.demo_renderer().render_scene
        frames = [render_scene(seed, sources.DEMO_SIZE).image for seed in range(n)]
        return frames, f"{n} synthetic street scenes ({sources.DEMO_SIZE[0]}x{sources.DEMO_SIZE[1]})"
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise UserError(f"--frames {spec}: no such manifest")
        return _manifest_frames(path, n, root)[:2]
    kind = sources.kind_of(spec)
    if kind == "images":
        paths = sources._image_paths(spec) or []
        if not paths:
            raise UserError(f"--frames {spec}: no images found")
        reader = sources.ImagesReader(_spread(paths, n), f"images from {spec}")
    else:
        reader = sources.open_reader(spec)  # a camera that can't be opened: one-line UserError
    frames, bad = [], 0
    stride = 1
    if kind == "video" and getattr(reader, "frame_count", 0) > n:
        stride = reader.frame_count // n
    deadline = time.monotonic() + 30.0
    try:
        if reader.live:  # let the camera settle its exposure
            for _ in range(5):
                try:
                    reader.read()
                except (ConnectionError, EOFError):
                    break
        while len(frames) < n:
            try:
                image = sources.valid_frame(reader.read())
            except EOFError:
                break
            except ConnectionError as e:
                raise UserError(f"--frames {spec}: {e}") from None
            if image is None:
                bad += 1
                if bad > 25 or time.monotonic() > deadline:
                    break
                continue
            frames.append(image.copy())
            for _ in range(stride - 1):
                try:
                    reader.skip()
                except EOFError:
                    break
    finally:
        reader.close()
    if not frames:
        raise UserError(f"--frames {spec}: no readable frame")
    return frames, f"{len(frames)} frames of {reader.description}"


def load_labelled_frames(spec: str | None, n: int, root=None) -> tuple[list, list, str]:
    """(BGR frames, ground-truth category masks, description) from a calibration manifest."""
    path = Path(spec or "").expanduser()
    if path.suffix.lower() != ".json" or not path.is_file():
        raise UserError(f"--drop-vs labels needs --frames MANIFEST.json (a calibration manifest "
                        f"with masks, from 'edge-seg calibrate'), not {spec!r}")
    frames, text, gts = _manifest_frames(path, n, root, with_labels=True)
    return frames, gts, text


# -- measuring ---------------------------------------------------------------------------
def parse_threads(text: str | None, cores: int | None = None) -> list[int]:
    cores = cores or os.cpu_count() or 1
    if not text:
        return list(range(1, cores + 1))
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UserError(f"--threads {text!r}: expected a list such as 1,2,4 or 1-4") from None
    if not out or min(out) < 1:
        raise UserError(f"--threads {text!r}: thread counts must be 1 or more")
    return sorted(set(out))


def delegates_for(kind: str, wanted: list[str] | None = None) -> list[str]:
    """The delegates worth trying for a .tflite or .onnx model on this machine."""
    if kind == "onnx":
        from . import backends_onnx
        try:
            providers = backends_onnx.import_onnxruntime().get_available_providers()
        except UserError:
            providers = []
        here = ["cpu"] + [d for d in ("cuda", "tensorrt") if backends_onnx.PROVIDERS[d] in providers]
        if wanted is None:
            return here
        mapped = ["cuda" if d == "gpu" else ("cpu" if d == "auto" else d) for d in wanted]
        return [d for d in dict.fromkeys(mapped) if d in ONNX_DELEGATES]
    from . import backends
    if wanted is None:
        here = ["xnnpack", "cpu"]
        try:
            backends.find_gpu_delegate()
            here.append("gpu")
        except OSError:
            pass
        return here
    out = []
    for d in wanted:
        d = "xnnpack" if d == "auto" else d
        if d in ("xnnpack", "cpu", "gpu", "edgetpu") or backends.is_delegate_path(d):
            out.append(d)
    return list(dict.fromkeys(out))


def time_config(seg, frames, seconds: float, warmup: int = DEFAULT_WARMUP,
                min_runs: int = MIN_RUNS) -> dict:
    """Latency (ms) of preprocess + inference + argmax, cycling through ``frames``."""
    import numpy as np
    k = 0
    for _ in range(warmup):
        seg.postprocess(seg.infer(seg.preprocess(frames[k % len(frames)])))
        k += 1
    total, infer = [], []
    start = time.perf_counter()
    while len(total) < min_runs or time.perf_counter() - start < seconds:
        frame = frames[k % len(frames)]
        k += 1
        t0 = time.perf_counter()
        tensor = seg.preprocess(frame)
        t1 = time.perf_counter()
        logits = seg.infer(tensor)
        t2 = time.perf_counter()
        seg.postprocess(logits)
        t3 = time.perf_counter()
        total.append((t3 - t0) * 1e3)
        infer.append((t2 - t1) * 1e3)
        if len(total) >= 100_000:
            break
    total_a = np.array(total)
    return {"p50_ms": float(np.percentile(total_a, 50)), "p90_ms": float(np.percentile(total_a, 90)),
            "mean_ms": float(total_a.mean()), "infer_p50_ms": float(np.percentile(infer, 50)),
            "fps": float(1000.0 / total_a.mean()), "runs": len(total)}


def model_masks(seg, frames) -> list:
    return [seg.predict_mask(f)[0] for f in frames]


def agreement_with(reference_masks, masks) -> dict:
    """mIoU(7) (reference as ground truth) and pixel agreement over all frames; masks of
    another size are resized NEAREST to the reference mask's size first."""
    import numpy as np

    from .metrics import SegMetrics
    from .preprocess import resize_mask
    m = SegMetrics()
    for ref, mask in zip(reference_masks, masks):
        if mask.shape != ref.shape:
            mask = resize_mask(mask, (ref.shape[1], ref.shape[0]))
        m.update(ref, mask)
    res = m.result()
    total = m.cm.sum()
    return {"miou7": res["miou7"], "pixel_agreement": float(np.trace(m.cm) / total) if total else math.nan}


def miou_vs_labels(gts, masks) -> float:
    """mIoU(7) against ground truth at the label resolution (masks upsampled NEAREST)."""
    from .metrics import SegMetrics
    from .preprocess import resize_mask
    m = SegMetrics()
    for gt, mask in zip(gts, masks):
        m.update(gt, resize_mask(mask, (gt.shape[1], gt.shape[0])))
    return m.result()["miou7"]


# -- choosing ----------------------------------------------------------------------------
def drop_points(agreement: float) -> float:
    return 100.0 * (1.0 - agreement) if agreement is not None and not math.isnan(agreement) else math.inf


def choose(rows: list[dict], max_drop: float | None = None, target_fps: float | None = None) -> dict | None:
    """Mark every row ``in_budget`` (and ``why`` not) and return the chosen one.

    Rows need ``fps`` and ``agreement`` (mIoU(7) vs the float reference, 0..1), or a
    precomputed ``drop`` (points; e.g. vs ground truth).
    Without ``target_fps``: the fastest row whose drop = 100 * (1 - agreement) is within
    ``max_drop`` points (default 0.5). With ``target_fps``: the most accurate row reaching it
    (within ``max_drop`` too when that is given); when none reaches it, the fastest row
    within ``max_drop`` is returned with ``target_met`` False on it.
    Ties: agreement then FPS. None when no row qualifies.
    """
    if max_drop is None and target_fps is None:
        max_drop = DEFAULT_MAX_DROP
    for r in rows:
        if r.get("drop_basis") != "labels":
            r["drop"] = drop_points(r.get("agreement"))
        why = []
        if max_drop is not None and not r["drop"] <= max_drop + 1e-9:
            why.append(f"drop > {max_drop:g}")
        if target_fps is not None and not r["fps"] >= target_fps:
            why.append(f"< {target_fps:g} FPS")
        r["in_budget"] = not why
        r["why"] = ", ".join(why)
        r["chosen"] = False
    ok = [r for r in rows if r["in_budget"]]
    chosen = None
    if target_fps is None:
        if ok:
            chosen = max(ok, key=lambda r: (r["fps"], -r["drop"]))
    elif ok:
        chosen = max(ok, key=lambda r: (-r["drop"], r["fps"]))
        chosen["target_met"] = True
    else:
        accurate = [r for r in rows if max_drop is None or r["drop"] <= max_drop + 1e-9]
        if accurate:
            chosen = max(accurate, key=lambda r: (r["fps"], -r["drop"]))
            chosen["target_met"] = False
    if chosen is not None:
        chosen["chosen"] = True
    return chosen


def order_rows(rows: list[dict], target_fps: float | None = None) -> list[dict]:
    """Best first: the choice, then the rows in budget by the same criterion, then the rest
    by FPS."""
    def key(r):
        if target_fps is not None and r["in_budget"]:
            crit = (-r["drop"], r["fps"])
        else:
            crit = (r["fps"], -r["drop"])
        return (not r.get("chosen"), not r["in_budget"], tuple(-c for c in crit))
    return sorted(rows, key=key)


# -- output ------------------------------------------------------------------------------
COLUMNS = ("", "model", "variant", "input", "delegate", "threads", "p50 ms", "p90 ms", "FPS",
           "agreement", "drop pt", "")


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:.2f}%"


def format_table(rows: list[dict]) -> str:
    labelled = any("miou7_labels" in r for r in rows)
    columns = list(COLUMNS)
    if labelled:
        columns.insert(9, "mIoU(7)")
    body = []
    for r in rows:
        mark = "*" if r.get("chosen") else ("x" if not r["in_budget"] else "")
        drop = "-" if math.isinf(r["drop"]) or math.isnan(r["drop"]) else f"{r['drop']:.2f}"
        drop = "0.00" if drop == "-0.00" else drop
        cells = [mark, r["file"], r["variant"], r["input"], r["delegate"], str(r["threads"]),
                 f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['fps']:.1f}",
                 _pct(r["agreement"]), drop, r.get("why") or ""]
        if labelled:
            cells.insert(9, _pct(r.get("miou7_labels")))
        body.append(cells)
    table = [columns] + body
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    right = set(range(5, len(columns) - 1))
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def legend(reference: str, max_drop, target_fps, labels: bool = False) -> str:
    budget = []
    if max_drop is not None or target_fps is None:
        budget.append(f"drop over {max_drop if max_drop is not None else DEFAULT_MAX_DROP:g} points")
    if target_fps is not None:
        budget.append(f"below {target_fps:g} FPS")
    drop = ("mIoU(7) = against the ground-truth labels at their resolution; drop = "
            f"{reference}'s mIoU(7) minus the variant's, in points" if labels else
            "drop = 100 * (1 - agreement)")
    return (f"* = chosen; x = outside the budget ({' or '.join(budget)}). latency = preprocess + "
            f"inference + argmax of one frame, FPS = 1000 / mean latency; agreement = mIoU(7) of the "
            f"variant's masks against {reference}'s on the same frames; {drop}.")


# -- the whole run -----------------------------------------------------------------------
@dataclass
class TuneOptions:
    models: str
    frames: str | None = None
    frames_root: str | None = None
    n_frames: int = DEFAULT_N_FRAMES
    max_drop: float | None = None
    target_fps: float | None = None
    threads: str | None = None
    delegates: str | None = None
    seconds: float = DEFAULT_SECONDS
    warmup: int = DEFAULT_WARMUP
    profile: str | None = None
    drop_vs: str = "float"          # float: drop from the agreement; labels: vs ground truth
    save_profile: bool = True
    progress: bool = True
    notes: list[str] = field(default_factory=list)


def _warn(message: str) -> None:
    click.echo(message, err=True)


def tune_device(o: TuneOptions) -> dict:
    """Measure, choose, print, save the profile; returns the result (the profile's content)."""
    from .model_meta import atomic_write_json, file_sha256
    from .profile import FORMAT, default_profile_path, device_info
    from .segmenter import Segmenter

    if o.max_drop is not None and o.max_drop < 0:
        raise UserError(f"--max-drop {o.max_drop}: must be 0 or more")
    if o.target_fps is not None and o.target_fps <= 0:
        raise UserError(f"--target-fps {o.target_fps}: must be more than 0")
    threads = parse_threads(o.threads)
    wanted = [d.strip() if os.sep in d else d.strip().lower()
              for d in o.delegates.split(",") if d.strip()] if o.delegates else None
    profile_path = Path(o.profile).expanduser() if o.profile else default_profile_path()
    if o.drop_vs not in ("float", "labels"):
        raise UserError(f"--drop-vs {o.drop_vs}: choose float or labels")
    variants, skipped = discover(o.models)
    reference = choose_reference(variants)
    gts = None
    if o.drop_vs == "labels":
        frames, gts, frames_text = load_labelled_frames(o.frames, o.n_frames, o.frames_root)
    else:
        frames, frames_text = load_frames(o.frames, o.n_frames, o.frames_root)

    # the plan: (variant, delegate, threads); reference masks first
    plan = [(v, d, t) for v in variants for d in delegates_for(v.kind, wanted) for t in threads]
    for v in variants:
        if not delegates_for(v.kind, wanted):
            skipped.append((v.name, f"none of --delegates {o.delegates} applies to a .{v.kind} model"))
    if not plan:
        raise UserError(f"nothing to measure: no delegate of --delegates {o.delegates} applies to "
                        "the models found")
    click.echo(f"edge-seg tune: {len(variants)} model(s) in {o.models}, threads "
               f"{','.join(map(str, threads))}, {len(plan)} configurations, {o.seconds:g} s each")
    click.echo(f"  frames     {frames_text}")
    click.echo(f"  reference  {reference.name} ({reference.variant}, {reference.size_text}) "
               "for agreement")
    notes: list[str] = []
    ref_threads = max(threads)
    ref_seg = Segmenter(reference.path, threads=ref_threads,
                        delegate="cpu" if reference.kind == "onnx" else "xnnpack", log=notes.append)
    ref_masks = model_masks(ref_seg, frames)
    ref_miou = miou_vs_labels(gts, ref_masks) if gts is not None else None
    del ref_seg

    agreements: dict = {}
    failed: set = set()
    rows = []

    def label(item):
        if item is None:
            return ""
        v, d, t = item
        return f"{v.name} {d} x{t}"

    with click.progressbar(plan, label="tuning", file=sys.stderr, item_show_func=label,
                           show_pos=True) if o.progress else _nullbar(plan) as bar:
        for v, d, t in bar:
            if (v.path, d) in failed:
                continue
            logs: list[str] = []
            try:
                seg = Segmenter(v.path, threads=t, delegate=d, log=logs.append)
            except UserError as e:
                failed.add((v.path, d))
                notes.append(f"{v.name} with {d}: {e}")
                continue
            if seg.backend.fallback:
                failed.add((v.path, d))
                notes.append(f"{v.name}: delegate {d} does not load here ({seg.backend.fallback}); skipped")
                continue
            if any("cannot disable" in n for n in getattr(seg.backend, "notes", [])):
                failed.add((v.path, d))
                notes.append(f"{v.name}: this interpreter cannot turn XNNPACK off; 'cpu' skipped")
                continue
            key = (v.path, d)
            if key not in agreements:
                masks = model_masks(seg, frames)
                agreements[key] = agreement_with(ref_masks, masks)
                if gts is not None:
                    agreements[key]["miou_labels"] = miou_vs_labels(gts, masks)
            timing = time_config(seg, frames, o.seconds, o.warmup)
            del seg
            a = agreements[key]
            rows.append({
                "model": str(v.path.resolve()), "file": v.name, "variant": v.variant, "kind": v.kind,
                "input": v.size_text, "input_size": list(v.input_size), "input_type": v.input_type,
                "delegate": d, "threads": t, **timing,
                "agreement": a["miou7"], "pixel_agreement": a["pixel_agreement"],
            })
            if gts is not None:
                drop = 100.0 * (ref_miou - a["miou_labels"])
                rows[-1].update(miou7_labels=a["miou_labels"], drop_basis="labels",
                                drop=math.inf if math.isnan(drop) else drop)
    if not rows:
        raise UserError("no configuration could be measured: " + "; ".join(notes[:3]))
    chosen = choose(rows, o.max_drop, o.target_fps)
    rows = order_rows(rows, o.target_fps)

    click.echo("")
    click.echo(format_table(rows))
    click.echo("")
    click.echo(legend(reference.name, o.max_drop, o.target_fps, labels=gts is not None))
    for name, why in skipped:
        _warn(f"note: skipped {name}: {why}")
    for n in dict.fromkeys(notes):
        _warn(f"note: {n}")
    if chosen is None:
        raise UserError(f"no configuration is within --max-drop {o.max_drop:g}; nothing chosen "
                        "(no profile written)")
    if chosen.get("target_met") is False:
        _warn(f"warning: no configuration reaches {o.target_fps:g} FPS here; chose the fastest "
              f"within the accuracy budget ({chosen['fps']:.1f} FPS)")

    model_path = Path(chosen["model"])
    result = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device_info(),
        "model": {"path": str(model_path), "sha256": file_sha256(model_path),
                  "variant": chosen["variant"], "input_size": chosen["input_size"]},
        "threads": chosen["threads"],
        "delegate": chosen["delegate"],
        "fps": chosen["fps"],
        "latency_ms": {"p50": chosen["p50_ms"], "p90": chosen["p90_ms"]},
        "agreement_miou7": chosen["agreement"],
        "drop_points": chosen["drop"],
        "drop_basis": ("ground-truth labels: reference mIoU(7) minus the variant's" if gts is not None
                       else "agreement with the float reference: 100 * (1 - agreement mIoU(7))"),
        "miou7_labels": chosen.get("miou7_labels"),
        "criterion": {"max_drop": o.max_drop if o.max_drop is not None or o.target_fps is not None
                      else DEFAULT_MAX_DROP, "target_fps": o.target_fps,
                      "target_met": chosen.get("target_met")},
        "reference": {"path": str(reference.path.resolve()), "variant": reference.variant,
                      "input_size": list(reference.input_size), "miou7_labels": ref_miou},
        "frames": {"source": o.frames or "demo", "description": frames_text, "n": len(frames)},
        "seconds_per_configuration": o.seconds,
        "table": [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()}
                  for r in rows],
        "skipped": [{"file": n, "why": w} for n, w in skipped],
        "notes": list(dict.fromkeys(notes)),
    }
    click.echo("")
    click.echo(f"chosen: {model_path.name} ({chosen['input']}), threads {chosen['threads']}, delegate "
               f"{chosen['delegate']}: {chosen['fps']:.1f} FPS, agreement {_pct(chosen['agreement'])} "
               f"(drop {chosen['drop']:.2f} points)")
    if o.save_profile:
        atomic_write_json(profile_path, result)
        result["profile_path"] = str(profile_path)
        click.echo(f"profile written to {profile_path} (edge-seg run uses it unless --no-profile)")
    return result


class _nullbar:
    def __init__(self, items):
        self.items = items

    def __enter__(self):
        return iter(self.items)

    def __exit__(self, *exc):
        return False


@click.command("tune", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--models", "models", required=True, metavar="DIR",
              help="Folder of model variants: *.tflite with their sidecar .json (fp32, fp16, int8, "
                   "qat-int8, any input sizes) and *.onnx when onnxruntime is installed.")
@click.option("--frames", metavar="SOURCE", default="demo", show_default=True,
              help="Frames to measure on: a calibration manifest (.json from 'edge-seg calibrate'), "
                   "a folder or glob of images (quote it), a video, a camera index, or 'demo' "
                   "(synthetic street scenes).")
@click.option("--frames-root", metavar="DIR", type=click.Path(file_okay=False),
              help="Dataset root for a manifest whose recorded root is elsewhere.")
@click.option("--n-frames", type=click.IntRange(1), default=DEFAULT_N_FRAMES, show_default=True,
              metavar="N", help="Frames to use (spread over the manifest, folder or video).")
@click.option("--max-drop", type=float, default=None, metavar="POINTS",
              help="Accuracy budget: drop = 100 * (1 - agreement mIoU(7) with the float model), in "
                   "points (with --drop-vs labels: mIoU(7) points lost against ground truth). The "
                   f"fastest configuration within it wins. [default: {DEFAULT_MAX_DROP:g} unless "
                   "--target-fps is given]")
@click.option("--target-fps", type=float, default=None, metavar="F",
              help="Choose the most accurate configuration reaching F FPS instead (within "
                   "--max-drop as well when that is given).")
@click.option("--drop-vs", "drop_vs", type=click.Choice(["float", "labels"]), default="float",
              show_default=True,
              help="float: drop = 100 * (1 - agreement mIoU(7) with the float model's masks), any "
                   "frames, no labels needed (strict: int8 rounding moves boundary pixels that "
                   "ground truth would not count against it); labels: drop = the float model's "
                   "mIoU(7) minus the variant's against the ground truth of a --frames manifest, at "
                   "the label resolution, the drop 'edge-seg compare --max-drop' checks.")
@click.option("--threads", metavar="LIST",
              help="Thread counts to try, e.g. 1,2 or 1-4. [default: 1..cores]")
@click.option("--delegates", metavar="LIST",
              help="Delegates to try, e.g. xnnpack,cpu. [default: xnnpack and cpu, gpu when its "
                   "library loads; for .onnx: cpu, cuda and tensorrt when present]")
@click.option("--seconds", type=click.FloatRange(0.01), default=DEFAULT_SECONDS, show_default=True,
              metavar="S", help="Timing per configuration, after the warm-up.")
@click.option("--warmup", type=click.IntRange(0), default=DEFAULT_WARMUP, show_default=True,
              metavar="N", help="Untimed frames before timing each configuration.")
@click.option("--profile", metavar="PATH", type=click.Path(dir_okay=False),
              help="Where to save the device profile. [default: $XDG_CONFIG_HOME/edge-seg/"
                   "profile.json, i.e. ~/.config/edge-seg/profile.json]")
@click.option("--no-profile", "no_profile", is_flag=True, help="Print the table only, save nothing.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def tune(models, frames, frames_root, n_frames, max_drop, target_fps, drop_vs, threads, delegates,
         seconds, warmup, profile, no_profile, no_progress):
    """Measure every model variant x thread count x delegate on this device and pick the
    fastest that keeps accuracy.

    \b
    Examples:
      edge-seg tune --models models/                    fastest within 0.5 points of drop
      edge-seg tune --models out/ --target-fps 15       most accurate reaching 15 FPS
      edge-seg tune --models out/ --frames calibration/camvid-train.json \\
                    --frames-root ../shared/datasets/camvid --threads 1,2 --seconds 2

    Prints one table, best first (* = chosen, x = outside the budget) and saves a device
    profile that 'edge-seg run' then uses when no --model/--threads/--delegate is given.
    """
    tune_device(TuneOptions(models=models, frames=frames, frames_root=frames_root, n_frames=n_frames,
                            max_drop=max_drop, target_fps=target_fps, threads=threads,
                            delegates=delegates, seconds=seconds, warmup=warmup, profile=profile,
                            drop_vs=drop_vs, save_profile=not no_profile, progress=not no_progress))
