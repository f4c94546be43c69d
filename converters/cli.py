"""`edge-seg convert` and `edge-seg compare` (TensorFlow is imported inside the commands)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click

from edge_seg import log as logs
from edge_seg import model_formats
from edge_seg.errors import UserError


def _format_help(fmt: model_formats.Format) -> str:
    needs = " (needs --calibration)" if fmt.calibration else ""
    return f"{fmt.help}{needs}: <model>{fmt.suffix}"


def _format_flags(command):
    """One flag per row of edge_seg.model_formats, in the table's order."""
    for fmt in reversed(model_formats.FORMATS):
        command = click.option(fmt.flag, _param(fmt), is_flag=True, help=_format_help(fmt))(command)
    return command


def _param(fmt: model_formats.Format) -> str:
    return "format_" + fmt.name.replace("-", "_")


def _convert_help() -> str:
    files = ", ".join(f"<model>{fmt.suffix}" for fmt in model_formats.FORMATS)
    return (f"Export MODEL (.keras) to the formats its flags pick ({files}; the table is "
            "docs/quantisation.md's). Each file carries its metadata inside (one file is enough "
            "to run it); a copy is written beside it as <name>.json.")


def make_convert() -> click.Command:
    """`edge-seg convert`, its format flags read from edge_seg.model_formats when called."""
    @click.command("convert", help=_convert_help())
    @click.argument("model", type=click.Path(dir_okay=False))
    @_format_flags
    @click.option("--qat-epochs", default=1, show_default=True, type=int)
    @click.option("--qat-steps", default=None, type=int, help="steps per QAT epoch [default: one pass over train]")
    @click.option("--qat-lr", default=1e-5, show_default=True, type=float,
                  help="QAT learning rate; keep it low, so the fine-tune stays close to the float model")
    @click.option("--qat-batch", default=4, show_default=True, type=int)
    @click.option("--calibration", "calibration", default=None,
                  help="calibration manifest (.json from 'edge-seg calibrate') or a dataset root")
    @click.option("--calibration-root", default=None, type=click.Path(file_okay=False),
                  help="dataset root for a manifest whose recorded root is elsewhere")
    @click.option("--io", "io", type=click.Choice(model_formats.io_choices()), default=model_formats.io_choices()[0],
                  show_default=True, help="input/output type of int8 models")
    @click.option("--per-channel", is_flag=True,
                  help="int8 weights with one scale per output channel (TFLite's usual scheme); the "
                       "default is one scale per tensor, a smaller file (per channel stores a scale and "
                       "a zero point for every output channel). --qat is always per channel: BatchNorm "
                       "is folded into the kernel after fake quantisation, which one scale per tensor "
                       "cannot absorb")
    @click.option(model_formats.FULL_RES_LOGITS, "full_res_logits", is_flag=True,
                  help="keep the model's final bilinear upsampling of the logits in the TFLite "
                       "graph (logits at the input size); the default ends the graph before it, "
                       "logits at stride 2 (4 when the decoder ends there), which the runtime "
                       "upsamples to the input size before the argmax")
    @click.option("--nchw", is_flag=True, help="with --onnx: NCHW input/output (TensorRT's layout)")
    @click.option("--sizes", default=None, metavar="WxH,...",
                  help="rebuild the (fully convolutional) model at each input size with the same weights "
                       "and convert each, e.g. 512x256,384x192,256x128; file names then carry the size: "
                       "<model>-384x192-int8.tflite")
    @click.option("-o", "--output-dir", default=None, type=click.Path(file_okay=False),
                  help="folder for the model files [default: beside MODEL]")
    def convert(model, output_dir, sizes, nchw, **options):
        wanted = [fmt.name for fmt in model_formats.FORMATS if options.pop(_param(fmt))]
        _convert(model, wanted, output_dir, sizes, nchw, **options)
    return convert


def _convert(model, wanted, output_dir, sizes, nchw, calibration, calibration_root, io, per_channel,
             qat_epochs, qat_steps, qat_lr, qat_batch, full_res_logits):
    from edge_seg.io.publish import check_output

    from .sizes import parse_sizes
    from .tflite_export import choose_formats, export

    choose_formats(wanted)
    _check_applies("--nchw", nchw, wanted)
    _check_applies(model_formats.FULL_RES_LOGITS, full_res_logits, wanted)
    log = logs.callback("convert")

    # each variant is at most about the size of the float model; checked before any conversion
    need = len(wanted) * Path(model).stat().st_size if Path(model).is_file() else 1
    check_output(output_dir or Path(model).parent, "-o", folder=True, need=need)
    with _scratch_tempdir():
        export(model, wanted, output_dir, calibration, io, calibration_root, qat_epochs, qat_steps,
               qat_lr, qat_batch, per_channel=per_channel, log=log, sizes=parse_sizes(sizes), nchw=nchw,
               full_res_logits=full_res_logits)


def _check_applies(option: str, given: bool, wanted: list[str]) -> None:
    """A flag that changes some formats only (their ``options``) needs one of them picked."""
    owners = [fmt for fmt in model_formats.FORMATS if option in fmt.options]
    if given and not any(fmt.name in wanted for fmt in owners):
        flags = " or ".join(fmt.flag for fmt in owners)
        raise UserError(f"{option} applies to {flags} only: add {flags}")


convert = make_convert()


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)}


@contextlib.contextmanager
def _scratch_tempdir():
    """TensorFlow's converter writes SavedModel folders through ``tempfile`` and removes them
    only when it returns. Point ``tempfile`` at one private folder and remove it however the
    conversion ends, SIGTERM, SIGHUP and Ctrl-C included. Python runs signal handlers only
    between bytecodes, which a conversion inside TensorFlow's C++ code may not reach for
    minutes; the signal's wake-up byte is read by a waiting thread instead, which removes the
    folder and ends the process at once (every model file is written atomically, so none is
    left half written under its final name)."""
    scratch = tempfile.mkdtemp(prefix="edge-seg-convert-")
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = scratch
    main = threading.current_thread() is threading.main_thread()
    if main:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        saved_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        saved_handlers = {sig: signal.signal(sig, lambda *_: None) for sig in _STOP_SIGNALS}

        def wait_for_stop():
            sig = os.read(read_fd, 1)[0]
            if not sig:  # the conversion ended
                return
            shutil.rmtree(scratch, ignore_errors=True)
            click.echo(f"edge-seg convert: stopped by {signal.Signals(sig).name}; the variants "
                       f"written before it are complete, temporary files removed", err=True)
            os._exit(128 + sig)

        waiter = threading.Thread(target=wait_for_stop, name="convert-stop", daemon=True)
        waiter.start()
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved_tempdir
        shutil.rmtree(scratch, ignore_errors=True)
        if main:
            signal.set_wakeup_fd(saved_wakeup)
            for sig, handler in saved_handlers.items():
                signal.signal(sig, handler)
            os.write(write_fd, b"\0")
            waiter.join()
            os.close(read_fd)
            os.close(write_fd)


@click.command()
@click.argument("float_model", type=click.Path(dir_okay=False))
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", "root", required=True, type=click.Path(file_okay=False), help="dataset root")
@click.option("--split", default="val", show_default=True)
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "cityscapes", "camvid", "folder"]))
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("--max-frames", default=None, type=int, help="score only the first N frames")
@click.option("--max-drop", default=None, type=float,
              help="exit 1 when any variant's mIoU(7) drops more than this many points")
@click.option("--max-category-drop", default=None, type=float,
              help="exit 1 when any int8 variant's category IoU drops more than this many points")
@click.option("--at-label-resolution/--at-model-resolution", "at_label_resolution", default=None,
              help="score every model's mask upsampled (nearest) to the label's size, each model fed "
                   "at its own input size, so sizes from 'convert --sizes' compare fairly "
                   "[default: at the label resolution when the input sizes differ, else at the "
                   "model's]")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False),
              help="write the full result as JSON")
@click.option("--markdown", "md_out", default=None, type=click.Path(dir_okay=False),
              help="write the tables as Markdown")
@click.option("--record/--no-record", default=True, show_default=True,
              help="write each .tflite variant's measured accuracy into its metadata (the "
                   "'accuracy' entry of its sidecar .json: mIoU(7) drop vs the float model, per "
                   "category, the labelled set and the agreement), which 'edge-seg tune "
                   "--max-drop' budgets by; a variant converted from another float model gets it "
                   "as its 'reference_accuracy', the drop on FLOAT_MODEL's scale")
def compare(float_model, models, root, split, fmt, threads, max_frames, max_drop, max_category_drop,
            at_label_resolution, json_out, md_out, record):
    """Score FLOAT_MODEL and every variant MODEL on the same frames: size, mIoU(7), drop vs
    float, agreement with the float predictions, worst category, latency, GPU verdict.
    Variants of other input sizes (convert --sizes) are scored at the label resolution.

    \b
    Example:
      edge-seg compare models/unet-mobilenetv2-camvid-idd.keras models/*-int8.tflite \\
          --data ../shared/datasets/camvid --split val --markdown compare.md
    """
    from edge_seg.io.publish import atomic_write_bytes, atomic_write_json

    from .compare import check_budgets, format_markdown, format_text, record_accuracy, run_compare

    progress = logs.counter("scoring", unit="frame")
    result = run_compare(float_model, list(models), root, split, threads, fmt, max_frames, log=progress,
                         at_label_resolution=at_label_resolution)
    problems = check_budgets(result, max_drop, max_category_drop)
    result["budget"] = {"max_drop": max_drop, "max_category_drop": max_category_drop, "violations": problems}
    click.echo(format_text(result))
    if json_out:
        atomic_write_json(json_out, result)
    if md_out:
        limits = max_drop is not None or max_category_drop is not None
        atomic_write_bytes(md_out, format_markdown(result, problems if limits else None).encode())
    if record:
        for path in record_accuracy(result, log=lambda m: click.echo(f"note: {m}", err=True)):
            click.echo(f"accuracy recorded in {path}")
    if problems:
        for p in problems:
            click.echo(f"budget exceeded: {p}", err=True)
        sys.exit(1)
