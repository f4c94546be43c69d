"""`edge-seg tune`: find this device's fastest configuration that keeps accuracy.

    edge-seg tune --models DIR [--frames SOURCE] [--max-drop 0.5 | --target-fps F]

Every model variant in DIR (``*.tflite``, ``*.onnx`` when
onnxruntime is installed; any input sizes) is run with every thread count (1..cores) and
every delegate that loads here (TFLite: XNNPACK, the plain CPU kernels, the GPU delegate
when its library loads; ONNX Runtime: CPU, CUDA/TensorRT when present). For each
configuration (edge_seg.tune.measure):

* latency p50/p90 of one frame through preprocess + inference + argmax (edge_seg.runner over
  edge_seg.segmenter, the path ``edge-seg run`` takes), after a warm-up, and FPS = 1000 / mean
  latency;
* agreement with the float reference's masks on the same frames: mIoU(7) (the reference
  as ground truth) and the share of equal pixels.

The accuracy budget (edge_seg.tune.choose) applies to the drop ``edge-seg compare`` recorded
in each variant's metadata: its mIoU(7) points lost on a labelled set vs the float model the
reference was converted from, so that variants of two models (the bundled reference and its
fast tier) are ranked on one scale (edge_seg.tune.variants.Variant.recorded_vs).
A variant without one falls back to 100 * (1 - agreement); with ``--drop-vs labels`` and a
calibration manifest as ``--frames`` the drop is measured here against its ground truth.
Agreement guards correctness: a variant at the reference's input size whose pixel
agreement here falls more than ``GUARD_MARGIN`` points below the recorded one computes
differently here and is rejected.

The float reference is the ``fp32`` variant in DIR (the largest input size when several),
else the most precise float model found (edge_seg.tune.variants). The choice: the fastest
configuration within ``--max-drop`` (default 0.5), or with ``--target-fps`` the most
accurate one that reaches that rate. The result is printed as one table (best first) and
saved as a device profile (edge_seg.device_profile) that ``edge-seg run`` uses by default.

The runtime only: no TensorFlow.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import click

from edge_seg import log as logs
from edge_seg.errors import UserError
from edge_seg.backends.metadata import trust_sidecar_option
from edge_seg.tune.choose import DEFAULT_MAX_DROP, choose, order_rows
from edge_seg.tune.frames import load_frames, load_labelled_frames
from edge_seg.tune.measure import DEFAULT_WARMUP, delegates_for, measure, model_masks, miou_vs_labels, parse_threads
from edge_seg.tune.report import chosen_line, format_table, legend, profile_result
from edge_seg.tune.variants import choose_reference, discover, variant_files

DEFAULT_N_FRAMES = 20
DEFAULT_SECONDS = 3.0


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
    drop_vs: str = "float"          # float: recorded drop, else agreement; labels: vs ground truth
    save_profile: bool = True
    progress: bool = True
    trust_sidecar: bool = False
    notes: list[str] = field(default_factory=list)


def _check(o: TuneOptions) -> tuple[list[int], list[str] | None]:
    """(thread counts, delegates asked for or None) once the options make sense."""
    if o.max_drop is not None and o.max_drop < 0:
        raise UserError(f"--max-drop {o.max_drop}: must be 0 or more")
    if o.target_fps is not None and o.target_fps <= 0:
        raise UserError(f"--target-fps {o.target_fps}: must be more than 0")
    if o.drop_vs not in ("float", "labels"):
        raise UserError(f"--drop-vs {o.drop_vs}: choose float or labels")
    threads = parse_threads(o.threads)
    wanted = [d.strip() if os.sep in d else d.strip().lower()
              for d in o.delegates.split(",") if d.strip()] if o.delegates else None
    return threads, wanted


def _plan(o: TuneOptions, variants, wanted, threads, skipped) -> list:
    """[(variant, delegate, threads)] to measure; notes the variants no delegate fits."""
    plan = [(v, d, t) for v in variants for d in delegates_for(v.kind, wanted) for t in threads]
    for v in variants:
        if not delegates_for(v.kind, wanted):
            skipped.append((v.name, f"none of --delegates {o.delegates} applies to a .{v.kind} model"))
    if not plan:
        raise UserError(f"nothing to measure: no delegate of --delegates {o.delegates} applies to "
                        "the models found")
    return plan


def _reference_masks(reference, frames, gts, threads: int, notes: list, trust_sidecar: bool = False):
    """(the reference's masks on ``frames``, its mIoU(7) against ``gts`` or None)."""
    from edge_seg.runner import open_model
    runner = open_model(reference.path, threads=threads,
                        delegate="cpu" if reference.kind == "onnx" else "xnnpack", log=notes.append,
                        trust_sidecar=trust_sidecar)
    masks = model_masks(runner, frames)
    return masks, (miou_vs_labels(gts, masks) if gts is not None else None)


def _scale_notes(variants, reference) -> list[str]:
    """Why a variant's recorded drop is not used: it was measured against another float model
    than the reference's, so its drop falls back to the agreement with the reference here."""
    return [f"{v.name}: its recorded drop is vs another float model than {reference.name}'s "
            f"(no reference_accuracy measured against it: 'edge-seg compare' that model and "
            f"{v.name}); its drop here is the agreement with {reference.name}"
            for v in variants if v.recorded is not None and v.recorded_vs(reference.source_sha) is None]


def _report(o: TuneOptions, rows, reference, skipped, notes) -> None:
    logs.lines("tune.table", ["", format_table(rows), "", legend(reference.name, o.max_drop,
                                                                 o.target_fps, rows)], rows=rows)
    for name, why in skipped:
        logs.note("tune.skipped", f"skipped {name}: {why}", model=name)
    for n in dict.fromkeys(notes):
        logs.note("tune.note", n)


def tune_device(o: TuneOptions) -> dict:
    """Measure, choose, print, save the profile; returns the result (the profile's content)."""
    import cv2

    from edge_seg.io.publish import atomic_write_json
    from edge_seg.device_profile import default_profile_path

    threads, wanted = _check(o)
    profile_path = Path(o.profile).expanduser() if o.profile else default_profile_path()
    variants, skipped = discover(o.models, trust_sidecar=o.trust_sidecar)
    reference = choose_reference(variants)
    gts = None
    if o.drop_vs == "labels":
        frames, gts, frames_text = load_labelled_frames(o.frames, o.n_frames, o.frames_root)
    else:
        frames, frames_text = load_frames(o.frames, o.n_frames, o.frames_root)
    frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]  # the runners take RGB
    plan = _plan(o, variants, wanted, threads, skipped)
    logs.lines("tune.start", [
        f"edge-seg tune: {len(variants)} model(s) in {o.models}, threads "
        f"{','.join(map(str, threads))}, {len(plan)} configurations, {o.seconds:g} s each",
        f"  frames     {frames_text}",
        f"  reference  {reference.name} ({reference.variant}, {reference.size_text}) for agreement"],
        models=len(variants), configurations=len(plan), reference=reference.name)
    notes = _scale_notes(variants, reference)
    ref_masks, ref_miou = _reference_masks(reference, frames, gts, max(threads), notes, o.trust_sidecar)
    rows = measure(plan, frames, ref_masks, gts, ref_miou, o.seconds, o.warmup, o.progress, notes,
                   trust_sidecar=o.trust_sidecar, scale=reference.source_sha)
    if not rows:
        raise UserError("no configuration could be measured: " + "; ".join(notes[:3]))
    for r in rows:  # the guard compares like with like: variants at the reference's size
        r["guarded"] = r["input_size"] == list(reference.input_size)
    chosen = choose(rows, o.max_drop, o.target_fps)
    rows = order_rows(rows, o.target_fps)
    _report(o, rows, reference, skipped, notes)
    if chosen is None:
        raise UserError(f"no configuration is within --max-drop "
                        f"{o.max_drop if o.max_drop is not None else DEFAULT_MAX_DROP:g}; nothing "
                        "chosen (no profile written)")
    if chosen.get("target_met") is False:
        logs.warning("tune.target_missed", f"no configuration reaches {o.target_fps:g} FPS here; "
                     f"chose the fastest within the accuracy budget ({chosen['fps']:.1f} FPS)")
    result = profile_result(o, chosen, rows, reference, ref_miou, frames_text, len(frames),
                            skipped, notes)
    logs.lines("tune.chosen", ["", chosen_line(chosen)], **chosen)
    if o.save_profile:
        atomic_write_json(profile_path, result)
        result["profile_path"] = str(profile_path)
        logs.info("tune.profile_written", f"profile written to {profile_path} (edge-seg run uses "
                  "it unless --no-profile)", path=str(profile_path))
    return result


@click.command("tune", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--models", "models", required=True, metavar="DIR",
              help=f"Folder of model variants, any input sizes: {variant_files()}; ONNX "
                   "models when onnxruntime is installed.")
@click.option("--frames", metavar="SOURCE", default="demo", show_default=True,
              help="Frames to measure on: a calibration manifest (.json from 'edge-seg calibrate'), "
                   "a folder or glob of images (quote it), a video, a camera index, or 'demo' "
                   "(synthetic street scenes).")
@click.option("--frames-root", metavar="DIR", type=click.Path(file_okay=False),
              help="Dataset root for a manifest whose recorded root is elsewhere.")
@click.option("--n-frames", type=click.IntRange(1), default=DEFAULT_N_FRAMES, show_default=True,
              metavar="N", help="Frames to use (spread over the manifest, folder or video).")
@click.option("--max-drop", type=float, default=None, metavar="POINTS",
              help="Accuracy budget in mIoU(7) points lost vs the float model the reference "
                   "was converted from: the drop 'edge-seg compare' recorded in each variant's "
                   "metadata on a labelled set (against that model: for another model's variants, "
                   "their reference_accuracy); a "
                   "variant without one falls back to 100 * (1 - agreement mIoU(7) with the float "
                   "model here) (the table's basis column says which). The fastest configuration "
                   f"within it wins. [default: {DEFAULT_MAX_DROP:g} unless --target-fps is given]")
@click.option("--target-fps", type=float, default=None, metavar="F",
              help="Choose the most accurate configuration reaching F FPS instead (within "
                   "--max-drop as well when that is given).")
@click.option("--drop-vs", "drop_vs", type=click.Choice(["float", "labels"]), default="float",
              show_default=True,
              help="float: the recorded drop, else the agreement with the float model, any "
                   "frames, no labels needed; labels: the float model's mIoU(7) minus the "
                   "variant's against the ground truth of a --frames manifest, measured here at "
                   "the label resolution.")
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
@trust_sidecar_option
def tune(models, frames, frames_root, n_frames, max_drop, target_fps, drop_vs, threads, delegates,
         seconds, warmup, profile, no_profile, no_progress, trust_sidecar):
    """Measure every model variant x thread count x delegate on this device and pick the
    fastest that keeps accuracy.

    Accuracy is what 'edge-seg compare' measured on labelled frames and recorded in each
    variant's metadata; speed is measured here. Agreement with the float model here guards
    correctness: a variant (at the float model's input size) whose pixel agreement falls
    more than 5 points below the recorded one computes differently here (a broken kernel
    or delegate) and is rejected.

    \b
    Examples:
      edge-seg tune --models models/                    fastest within 0.5 points of drop
      edge-seg tune --models out/ --target-fps 15       most accurate reaching 15 FPS
      edge-seg tune --models out/ --frames calibration/camvid-train.json \\
                    --frames-root ../shared/datasets/camvid --threads 1,2 --seconds 2

    Prints one table, best first (* = chosen, x = rejected, with the reason) and saves a device
    profile that 'edge-seg run' then uses when no --model/--threads/--delegate is given.
    """
    tune_device(TuneOptions(models=models, frames=frames, frames_root=frames_root, n_frames=n_frames,
                            max_drop=max_drop, target_fps=target_fps, threads=threads,
                            delegates=delegates, seconds=seconds, warmup=warmup, profile=profile,
                            drop_vs=drop_vs, save_profile=not no_profile, progress=not no_progress,
                            trust_sidecar=trust_sidecar))
