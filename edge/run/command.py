"""`edge-seg run`: frames from a camera, stream, file or the demo clip -> 8-category overlays.

The loop reads like jetson-inference's segnet.py -- capture, process, overlay, render --
with each stage overlapped with the others in its own thread:

    capture thread   decode (live sources keep only the newest frame)
    main thread      preprocess + invoke the model
    render thread    argmax + upsample, drift-check offer, overlay + legend + HUD
    writer thread    encode to the video file / PNG folder
    drift thread     (optional) the float model on every Nth frame
    web threads      (optional, --serve) page, stats, metrics; JPEG for viewers, never waited for

so the pipeline runs at about the speed of the model alone. All options live in
``RunOptions``; the click command only fills it.
"""
from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass

import click

from edge_seg.errors import OutputError, RunAbandoned, SourceLostError, UserError, exit_codes_help
from edge_seg.backends.metadata import trust_sidecar_option
from edge_seg.overlay import VIEWS
from edge_seg import log
from edge_seg.run.loop import STOP_SIGNALS, Abandoned, Run


@dataclass
class RunOptions:
    """Every option of `edge-seg run`, in one place (the click help explains each)."""
    camera: int | None = None
    source: str | None = None
    model: str | None = None
    threads: int | None = None
    delegate: str | None = None  # None: the profile's, else auto
    alpha: float = 0.5
    view: str = "overlay"
    legend: bool = True
    hud: bool = True
    show: bool | None = None  # None: a window when a display is available
    save: str | None = None
    save_segment: float | None = None   # seconds of video a segment (None: one file)
    save_max_files: int | None = None
    save_max_bytes: int | None = None
    max_frames: int = 0
    every: int = 1
    realtime: bool = False
    check_float: str | None = None
    check_every: int = 10
    min_agreement: float = 0.90
    agreement_window: int = 10
    report: str | None = None
    overwrite: bool = False
    capture_size: tuple[int, int] | None = None
    reconnect_timeout: float = 0.0
    quiet: bool = False
    profile: str | None = None  # device profile from 'edge-seg tune' (None: the default path)
    no_profile: bool = False
    serve: str | None = None    # [HOST:]PORT of the web page / stream / stats / metrics
    serve_token: str | None = None
    serve_max_clients: int = 4
    report_every: float = 0.0   # seconds between live JSON lines (0: none)
    report_lines: str | None = None  # where they go (None: stdout)
    open_timeout: float = 10.0  # seconds the source may take to open (0: no limit)
    trust_sidecar: bool = False
    collect: str | None = None        # folder of frames to label (edge_seg.run.collect)
    collect_every: float = 1.0        # seconds of source time between considered frames
    collect_max: int = 500
    collect_max_bytes: int | None = None

    def source_spec(self) -> str:
        if self.camera is not None and self.source is not None:
            raise UserError("give either --camera or --source, not both")
        if self.camera is not None:
            return str(self.camera)
        if self.source is None:
            raise UserError("no input: give --camera N or --source (video, image, folder, glob, "
                            "URL, GStreamer pipeline or 'demo')")
        return self.source


def run_pipeline(opts: RunOptions, on_start=None, keep_signals: bool = False) -> dict:
    """Open, run and close; returns the summary (also the Python entry point).
    ``on_start(run)`` is called just before the loop (benchmarks watch ``run.renderer``).
    ``keep_signals``: leave the run's signal handlers in place afterwards (the command
    does, so a signal while the process exits cannot kill it with outputs published)."""
    r = Run(opts)
    r.install_signals()
    try:
        summary = _run(r, opts, on_start)
        r.completed = True
        return summary
    except Abandoned as e:
        raise r.abandon(e.signame) from None
    finally:
        if not keep_signals:
            r.restore_signals()


def _start_and_loop(r: Run, opts: RunOptions, on_start) -> None:
    if not opts.quiet:
        r.banner()
    elif r.server is not None:  # the address (and a generated token) is needed anyway
        log.info("serve.address", f"  serve    {r.server.describe()}")
    r.source.start()
    if r.drift:
        r.drift.start()
    if r.collect:
        r.collect.start()
    if r.server:
        r.server.start()
    if r.reporter:
        r.reporter.start()
    if on_start is not None:
        on_start(r)
    r.loop()


def _run(r: Run, opts: RunOptions, on_start) -> dict:
    lost = None
    try:
        r.open()
        if r.source is not None:  # None: stopped while the source was opening
            _start_and_loop(r, opts, on_start)
    except KeyboardInterrupt:
        r.state.stopped_by = r.state.stopped_by or "SIGINT"
    except SourceLostError as e:  # summarised like any other end, then exit code 3
        r.state.stopped_by = "source lost"
        lost = e
    except UserError as e:
        if r.renderer is None or e is not r.renderer.error:
            raise
        # rendering or saving failed mid-run: stop, summarise, then fail
        r.failure = e
        r.state.stopped_by = "output error"
    finally:
        if r.abandoning:
            pass  # a second signal: run_pipeline removes what is unfinished
        elif r.segmenter is not None:
            r.finish()
        elif r.source is not None:
            r.source.close()
    summary = r.summary()
    r.print_summary(summary)  # printed before any output error: the results are never lost
    if opts.report:
        from edge_seg.io.publish import atomic_write_json
        try:
            atomic_write_json(opts.report, summary, "--report")
            r.report_written = True
            log.info("report.written", f"  report written to {opts.report}", path=opts.report)
        except OutputError as e:
            if r.failure is None and lost is None:
                raise
            log.error("report.failed", str(e))
    if r.failure is not None:
        raise r.failure
    if lost is not None:
        raise lost
    if r.reporter is not None and r.reporter.error:
        raise OutputError(f"--report-every: lines could not be written to {r.reporter.error}")
    return summary


# -- the click command -------------------------------------------------------------------
def _size(ctx, param, value):
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    return w, h


DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
# decimal, as disks are sold: 32G is 32e9 bytes
SIZE_UNITS = {unit + b: 1000 ** i for i, unit in enumerate(("", "k", "m", "g", "t")) for b in ("", "b")}


def _amount(value: str | None, units: dict, example: str) -> float | None:
    """'10m' -> 600.0 with DURATION_UNITS, '2G' -> 2e9 with SIZE_UNITS."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower())
    if not match or match.group(2) not in units or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{value!r}: expected a positive amount such as {example}")
    return float(match.group(1)) * units[match.group(2)]


def _duration(ctx, param, value):
    return _amount(value, DURATION_UNITS, "90s, 10m or 1h")


def _bytes(ctx, param, value):
    size = _amount(value, SIZE_UNITS, "500M or 32G")
    return None if size is None else int(size)


EXIT_CODES_HELP = exit_codes_help()


@click.command("run", context_settings={"help_option_names": ["-h", "--help"]},
               epilog=EXIT_CODES_HELP)
@click.option("--camera", type=int, metavar="N",
              help="Camera index (V4L2 /dev/videoN on Linux; a Raspberry Pi camera through "
                   "picamera2 when no V4L2 camera N opens).")
@click.option("--source", metavar="SPEC",
              help="A video file, an image file, a folder or glob of images (quote it), an "
                   "rtsp:// or http:// URL, a GStreamer pipeline ('... ! appsink'), "
                   "'picamera2' or 'picamera2:N' (a Raspberry Pi camera through the picamera2 "
                   "library), or 'demo' (the built-in synthetic street clip).")
@click.option("--model", metavar="PATH.tflite",
              help="Model to run (.tflite, or .onnx for ONNX Runtime on a Jetson); its metadata "
                   "is PATH.json beside it, else the copy embedded in the file. Default: the "
                   "device profile's model (see 'edge-seg tune'), else the bundled reference int8 "
                   "model.")
@click.option("--threads", type=click.IntRange(1, 64), metavar="N",
              help="Interpreter threads. Default: the device profile's, else one per CPU core.")
@click.option("--delegate", default=None, metavar="auto|cpu|xnnpack|gpu|edgetpu|PATH.so",
              help="[default: auto, or the device profile's] auto = Edge TPU for *_edgetpu.tflite models, else XNNPACK; cpu = built-in "
                   "kernels without XNNPACK; gpu = libtensorflowlite_gpu_delegate.so from "
                   "$EDGE_SEG_GPU_DELEGATE or the standard library folders; PATH.so = any "
                   "TFLite external delegate. For .onnx models: auto|tensorrt|cuda|gpu|cpu. A "
                   "delegate that cannot load falls back to the CPU with one line saying why.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Opacity of the category colours over the frame.")
@click.option("--view", type=click.Choice(VIEWS), default="overlay", show_default=True,
              help="overlay = colours blended over the frame; mask = colours only; "
                   "side-by-side = frame | overlay.")
@click.option("--legend/--no-legend", default=True, show_default=True,
              help="Draw the 8 categories and their colours.")
@click.option("--hud/--no-hud", default=True, show_default=True,
              help="Draw FPS and the latency split (capture, pre, infer, post, draw).")
@click.option("--show/--headless", default=None,
              help="--show opens a window (q or Esc quits); --headless never does, for devices "
                   "without a screen. Default: a window when a display is available.")
@click.option("--save", metavar="OUT.mp4|DIR",
              help="Write the rendered frames to a video (.mp4 .mkv .mov .m4v: H.264; .avi: "
                   "MJPEG) or to a folder of PNGs, under a hidden partial name until complete; "
                   "finalised on Ctrl-C / SIGTERM / SIGHUP too. A killed or power-cut H.264 "
                   "recording's partial file plays up to its last second.")
@click.option("--save-segment", callback=_duration, metavar="LENGTH",
              help="Cut the --save video into segments of LENGTH (s, m or h: 90s, 10m, 1h) of "
                   "video, each published when finished as OUT-<UTC start>-<n>.mp4, so they sort "
                   "by time; for recordings that run for days.")
@click.option("--save-max-files", type=click.IntRange(1), metavar="N",
              help="Keep at most N segments (earlier runs' included), removing the oldest first.")
@click.option("--save-max-bytes", callback=_bytes, metavar="SIZE",
              help="Keep the segments within SIZE in total (500M, 32G), removing the oldest "
                   "first; leave room for one more segment beside it.")
@click.option("--collect", metavar="DIR",
              help="Keep the frames the model is least sure of in DIR, a folder dataset "
                   "(images/, masks/ with the model's pre-labels, meta/, mapping.json) to "
                   "label and fine-tune on. An existing collection is continued, never wiped.")
@click.option("--collect-every", type=click.FloatRange(0), default=1.0, show_default=True,
              metavar="SECONDS", help="Consider at most one frame per SECONDS of source time "
                                      "(an image of a folder counts as one second).")
@click.option("--collect-max", type=click.IntRange(1), default=500, show_default=True,
              metavar="N", help="Keep at most N frames (earlier runs' included); a more useful "
                                "frame replaces the least useful one.")
@click.option("--collect-max-bytes", callback=_bytes, metavar="SIZE",
              help="Keep the collection within SIZE in total (500M, 32G), the same way.")
@click.option("--max-frames", type=int, default=0, metavar="N",
              help="Stop after N processed frames (0 = until the source ends or Ctrl-C).")
@click.option("--every", type=int, default=1, show_default=True, metavar="N",
              help="Process only every Nth frame of the source.")
@click.option("--realtime", is_flag=True,
              help="Pace files and the demo at their frame rate and keep only the newest frame "
                   "(as with a camera) instead of processing every frame.")
@click.option("--check-float", metavar="FLOAT.tflite",
              help="Drift check: run this float model on every --check-every-th frame in a "
                   "background worker and compare its masks with the quantised model's.")
@click.option("--check-every", type=click.IntRange(1), default=10, show_default=True, metavar="N",
              help="Frames between drift checks (a check is skipped, and counted, while the "
                   "previous one still runs).")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.90, show_default=True,
              help="Warn once when a window's agreement mIoU(7) with the float model falls below this.")
@click.option("--agreement-window", type=click.IntRange(1), default=10, show_default=True,
              metavar="N", help="Drift checks per agreement window.")
@click.option("--report", metavar="RUN.json",
              help="Write the summary as JSON: frames, dropped frames, FPS, latency p50/p99 per "
                   "stage, backend, delegate, agreement statistics.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --save video or frames folder and --report file "
                   "(without it they are refused, so two runs never mix). An output that is "
                   "one of the inputs is refused either way.")
@click.option("--capture-size", callback=_size, metavar="WxH",
              help="Ask the camera/stream for this resolution, e.g. 1280x720.")
@click.option("--open-timeout", type=click.FloatRange(0), default=10.0, show_default=True,
              metavar="S", help="Give up opening the source after S seconds, exit code 2 (a "
                                "camera that does not answer, a stream, a named pipe nobody "
                                "writes to; 0 = wait forever). A stop signal ends the wait.")
@click.option("--reconnect-timeout", type=click.FloatRange(0), default=0.0, show_default=True,
              metavar="S", help="Give up on a lost camera/stream after S seconds, exit code 3 (0 = retry "
                                "forever, with backoff).")
@click.option("--profile", metavar="PATH",
              help="Device profile written by 'edge-seg tune' [default: $XDG_CONFIG_HOME/edge-seg/"
                   "profile.json]. Used when no --model, --threads or --delegate is given; a "
                   "profile whose model is missing or changed, or made on other hardware, is "
                   "ignored with a warning.")
@click.option("--no-profile", is_flag=True, help="Ignore any device profile.")
@trust_sidecar_option
@click.option("--serve", metavar="[HOST:]PORT",
              help="Serve a web page with the live overlay, legend and figures, plus "
                   "/stream.mjpg, /snapshot.jpg, /stats.json and /metrics (Prometheus). HOST "
                   "defaults to 127.0.0.1 (this device only); any other address, e.g. "
                   "0.0.0.0:8080, requires a token. Viewers never slow the run down.")
@click.option("--serve-token", metavar="TOKEN",
              help="Token every --serve request must carry (Authorization: Bearer TOKEN, or "
                   "?token=TOKEN). Default: $EDGE_SEG_SERVE_TOKEN; off loopback without either, "
                   "a random one is generated and printed once.")
@click.option("--serve-max-clients", type=click.IntRange(1, 64), default=4, show_default=True,
              metavar="N", help="Viewers of /stream.mjpg at once; one more gets 503 (the page "
                                "then shows a snapshot a second).")
@click.option("--report-every", type=click.FloatRange(0), default=0.0,
              metavar="SECONDS", help="Also print the live figures (the same as /stats.json) as "
                                      "one JSON line every SECONDS, for journald and log "
                                      "shippers (0 = never).")
@click.option("--report-lines", metavar="FILE.jsonl",
              help="Append the --report-every lines to this file instead of stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No banner or progress lines; only the summary.")
def run(**kwargs):
    """Segment frames in real time and draw the 8 categories over them.

    \b
    Examples:
      edge-seg run --camera 0                       live, bundled model, window if possible
      edge-seg run --source demo --headless --save out.mp4 --max-frames 200
      edge-seg run --source drive.mp4 --check-float model-fp32.tflite --report run.json
      edge-seg run --source 'frames/*.png' --save out/ --view side-by-side

    Prints an end-of-run summary (frames, dropped, FPS, latency p50/p99 per stage, drift
    agreement); Ctrl-C or SIGTERM stops cleanly and finalises --save; a second one stops at
    once and removes what was not finalised.
    """
    try:
        run_pipeline(RunOptions(**kwargs), keep_signals=True)
    except RunAbandoned as e:
        log.error("run.abandoned", str(e), exit_code=e.exit_code)
        sys.stdout.flush()
        sys.stderr.flush()
        # worker threads may still be inside the encoder: the interpreter's teardown could
        # abort there, and nothing is left to finalise
        os._exit(e.exit_code)
    finally:
        # The outcome is settled and printed. Python puts default handlers back while it
        # shuts down, so a late signal would kill the exit (143) after "saved" was
        # printed: ignored instead, the exit code stays the run's.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
