"""The pipeline of ``edge-seg run`` (``edge_seg.run.command``): the render stage and the run itself (open
the model, source and outputs; the capture -> infer -> render loop; finish; the summary).
``edge_seg.run.command.run_pipeline`` drives a ``Run`` from start to end."""
from __future__ import annotations

import math
import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge_seg import __version__, log
from edge_seg.errors import UserError
from edge_seg.overlay import Overlay, hud_lines
from edge_seg.timing import StageTimes

# SIGHUP (the terminal or ssh session closed) stops like SIGTERM: outputs finalised
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
SECRET_SHOWN = "(set, not shown)"
STAGES = ("capture", "pre", "infer", "post", "draw", "encode", "frame")
PROGRESS_EVERY_S = 5.0


# -- the render stage ---------------------------------------------------------------
class Renderer:
    """The render thread: post-process, offer to the drift check, draw, hand to the sinks."""

    def __init__(self, segmenter, overlay: Overlay, times: StageTimes, sink=None, window=None,
                 drift=None, hub=None, collect=None):
        self.segmenter, self.overlay, self.times = segmenter, overlay, times
        self.sink, self.window, self.drift = sink, window, drift
        self.collect = collect  # --collect: edge_seg.run.collect.Collector (never blocks)
        self.hub = hub  # --serve: the viewers' newest-frame slot (never blocks)
        self.frames = 0
        self.t_first = self.t_last = None
        self._fps = math.nan
        self._dt = None
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self._thread.start()

    def submit(self, frame, logits) -> None:
        if self.error is not None:
            raise self.error
        while self._thread.is_alive():
            try:
                self._queue.put((frame, logits), timeout=0.2)
                return
            except queue.Full:
                continue
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error

    @property
    def fps(self) -> float:
        return self._fps

    def _hud(self) -> list[str]:
        extra = None
        if self.drift is not None and self.drift.per_check:
            extra = f"float agreement {self.drift.per_check[-1]:.2f}"
        return hud_lines(self._fps, self.times.recent(), extra)

    def _draw(self, frame, model_mask):
        """The output image, drawn from the mask at the model's output size (colouring the
        small mask and resizing the colours NEAREST equals colouring the upsampled mask)."""
        return self.overlay.render(frame.image, model_mask, self._hud() if self.overlay.hud else None)

    def _run(self) -> None:
        from edge_seg.preprocess import upsample_mask
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                frame, logits = item
                t0 = time.perf_counter()
                model_mask = self.segmenter.postprocess(logits)
                t1 = time.perf_counter()
                checked = self.drift is not None and self.drift.offer(self.frames, frame.image, model_mask)
                if self.collect is not None:
                    # the frame-size mask only for a frame the collector considers
                    mask = upsample_mask(model_mask, frame.image.shape) if self.collect.due(frame) else None
                    self.collect.offer(frame, logits, model_mask, mask,
                                       check=self.frames if checked else None)
                # Drawn only for an output that takes every frame: with the model on every
                # core, drawing nobody sees slows the model. The viewers of --serve draw
                # the newest frame themselves, and only while they watch.
                image = None
                if self.sink is not None or self.window is not None:
                    image = self._draw(frame, model_mask)
                t2 = time.perf_counter()
                if self.sink is not None:
                    self.sink.write(image)
                if self.window is not None:
                    self.window.put(image)
                if self.hub is not None:
                    if image is not None:
                        self.hub.put(image)
                    else:
                        self.hub.offer(lambda f=frame, m=model_mask: self._draw(f, m))
                t3 = time.perf_counter()
                self.times.add("post", (t1 - t0) * 1e3)
                self.times.add("draw", (t2 - t1) * 1e3)
                self.times.add("frame", (t3 - frame.t_capture) * 1e3)
                self.frames += 1
                if self.t_last is not None:
                    # Average the frame interval, not its inverse: a mean of 1/dt reads
                    # high whenever intervals vary (a slow frame barely lowers it).
                    dt = t3 - self.t_last
                    self._dt = dt if self._dt is None else self._dt + 0.1 * (dt - self._dt)
                    self._fps = 1.0 / self._dt if self._dt > 0 else math.nan
                else:
                    self.t_first = t3
                self.t_last = t3
        except BaseException as e:  # surfaced by submit()/close()
            self.error = e
            while True:  # unblock the producer
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break


# -- the run --------------------------------------------------------------------------
@dataclass
class RunState:
    frames: int = 0
    stopped_by: str | None = None  # SIGINT / SIGTERM / window / max-frames / end of source
    t_start: float = 0.0
    t_end: float = 0.0
    notes: list[str] = field(default_factory=list)


class Abandoned(BaseException):
    """Raised in the main thread by a second stop signal. A BaseException, so that no
    ``except Exception`` or ``except UserError`` on the way finalises anything."""

    def __init__(self, signame: str):
        super().__init__(signame)
        self.signame = signame


class Run:
    def __init__(self, opts: RunOptions):  # an edge_seg.run.command.RunOptions (not imported: no cycle)
        self.opts = opts
        self.state = RunState()
        self.times = StageTimes(STAGES)
        self.source = self.segmenter = self.drift = self.sink = self.window = self.renderer = None
        self.server = self.reporter = None  # --serve, --report-every
        self.collect = None  # --collect
        self.profile = None        # edge_seg.device_profile.Profile in use
        self.profile_note = None   # why a profile exists but is not used
        self._signals = 0
        self._old_handlers = {}
        self.failure: UserError | None = None  # an output that could not be written
        self.abandoning = False  # a second signal: nothing more is finalised
        self.completed = False   # every output published and the summary printed
        self.report_written = False

    # Signals. The first one stops the run: the loop ends (or the source's opening is given
    # up) and every output is finalised. A second one before that is complete abandons
    # finalising (``Abandoned``): unfinished outputs are removed, exit code 5. Any later
    # one, or one after completion, changes nothing.
    def _on_signal(self, signum, _frame):
        if self.completed:
            return
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self.state.stopped_by = self.state.stopped_by or name
            if self.source is not None:
                self.source.stop()
        elif self._signals == 2:
            self.abandoning = True
            raise Abandoned(name)

    def stop_requested(self) -> bool:
        return self._signals > 0

    def abandon(self, signame: str) -> UserError:
        """After a second signal: stop what runs, remove what is not finalised; the error
        says what was lost."""
        from edge_seg.errors import RunAbandoned
        lost = []
        for step in (lambda: self.source and self.source.stop(),
                     lambda: self.server and self.server.close()):
            try:
                step()
            except Exception:  # noqa: BLE001 -- stopping at once: nothing may hold it up
                pass
        if self.sink is not None and not self.sink.published:
            self.sink.abandon()
            lost.append(f"--save {self.sink.path} not saved (its partial file was removed)")
        if self.opts.report and not self.report_written:
            lost.append(f"--report {self.opts.report} not written")
        return RunAbandoned(f"a second {signame} while stopping: stopped at once; "
                            + ("; ".join(lost) if lost else "every output was already complete"))

    def install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signals(self):
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)

    def _apply_profile(self) -> tuple[str | None, int | None, str]:
        """(model, threads, delegate): the options given, else the device profile's when
        one exists and can be trusted (else a warning line and the defaults)."""
        from edge_seg.device_profile import default_profile_path, load_profile
        o = self.opts
        delegate = o.delegate or "auto"
        if o.no_profile:
            return o.model, o.threads, delegate
        path = Path(o.profile).expanduser() if o.profile else default_profile_path()
        try:  # a service user's HOME may be unreadable: that is no reason not to run
            exists = path.is_file()
        except OSError as e:
            from edge_seg.io.publish import cause
            log.warning("profile.ignored", f"profile {path} cannot be read ({cause(e)}); ignored, "
                        f"starting with the default model", path=str(path))
            self.profile_note = f"{path} unreadable, default model"
            return o.model, o.threads, delegate
        if not exists:
            if o.profile:
                log.warning("profile.ignored", f"profile {path} does not exist; ignored",
                            path=str(path))
            return o.model, o.threads, delegate
        given = [name for name, v in (("--model", o.model), ("--threads", o.threads),
                                      ("--delegate", o.delegate)) if v is not None]
        if given:
            self.profile_note = f"{path} not used: {', '.join(given)} given"
            return o.model, o.threads, delegate
        profile, why = load_profile(path)
        if profile is None:
            log.warning("profile.ignored", f"{why}; ignored, starting with the default model",
                        path=str(path))
            self.profile_note = f"{path} ignored (see the warning), default model"
            return o.model, o.threads, delegate
        self.profile = profile
        return str(profile.model), profile.threads, profile.delegate

    def open(self):
        """Everything that can fail on bad input fails here, with one line."""
        from edge_seg.backends import bundled, litert
        from edge_seg.backends.metadata import read_meta
        from edge_seg.io import sinks, sources
        from edge_seg.run.drift import DriftCheck
        from edge_seg.segmenter import Segmenter, is_onnx
        o = self.opts
        spec = o.source_spec()
        if o.every < 1:
            raise UserError(f"--every {o.every}: must be at least 1")
        if o.max_frames < 0:
            raise UserError(f"--max-frames {o.max_frames}: must be 0 (no limit) or more")
        model, threads, delegate = self._apply_profile()
        model_path = bundled.resolve_model(model)
        if is_onnx(model_path):
            from edge_seg.backends.onnxrt import check_delegate as check_onnx_delegate
            check_onnx_delegate(delegate)
        else:
            litert.check_model_file(model_path)
            litert.check_delegate(delegate)
        read_meta(model_path, trust_sidecar=o.trust_sidecar, warn=lambda m: None)
        if o.check_float:
            litert.check_model_file(o.check_float)
            read_meta(o.check_float, trust_sidecar=o.trust_sidecar, warn=lambda m: None)
        self._check_outputs(model_path)
        if o.serve:
            from edge_seg.serve.server import check_address
            check_address(o.serve)
        show = o.show
        if show is None:
            show = sinks.gui_available()
        elif show and not sinks.gui_available():
            raise UserError("--show: no window can be opened here (no display, or an OpenCV "
                            "without GUI such as opencv-python-headless); use --headless")
        self.source = sources.open_source(spec, realtime=o.realtime, every=o.every,
                                          reconnect_timeout=o.reconnect_timeout,
                                          capture_size=o.capture_size, log=log.callback("source"),
                                          open_timeout=o.open_timeout, stopped=self.stop_requested,
                                          max_frames=o.max_frames)
        if self.source is None:  # a stop signal while the source was opening
            return
        self.segmenter = Segmenter(model_path, threads=threads, delegate=delegate,
                                   log=log.callback("backend"),
                                   trust_sidecar=o.trust_sidecar)
        self.overlay = Overlay.from_meta(self.segmenter.meta, alpha=o.alpha, view=o.view,
                                         legend=o.legend, hud=o.hud)
        self.segmenter.overlay = self.overlay
        if o.check_float:
            self.drift = DriftCheck(o.check_float, reference_meta=self.segmenter.meta,
                                    every=o.check_every, min_agreement=o.min_agreement,
                                    window=o.agreement_window, log=log.callback("drift"))
        if o.collect:  # before the recording: a collection that cannot open leaves nothing behind
            self._open_collect(model_path)
            if self.drift:
                self.collect.follow(self.drift)
        if o.save:
            self.sink = sinks.FrameSink(o.save, fps=self.source.fps or 30.0,
                                        inputs=self._inputs(model_path), overwrite=o.overwrite,
                                        segment_s=o.save_segment, max_files=o.save_max_files,
                                        max_bytes=o.save_max_bytes, log=log.callback("save"))
        if show:
            self.window = sinks.Window()
        self._open_telemetry()

    def _open_collect(self, model_path) -> None:
        from edge_seg.backends.metadata import model_sha256
        from edge_seg.run.collect import LOW_MARGIN, Collector, output_scale
        o = self.opts
        self.collect = Collector(
            o.collect, source_spec=self.opts.source_spec(), model_path=model_path,
            model_sha256=model_sha256(model_path), every_s=o.collect_every,
            max_frames=o.collect_max, max_bytes=o.collect_max_bytes, source_fps=self.source.fps,
            source_names=getattr(self.source.reader, "paths", None),
            margin_threshold=LOW_MARGIN / output_scale(self.segmenter),
            inputs=self._inputs(model_path), log=log.callback("collect"),
            wait=not self.source.newest_only)

    def _open_telemetry(self) -> None:
        """--report-every and --serve, last: bound before the run starts (a port in use is
        exit 2), and nothing else can fail after the port is taken."""
        from edge_seg.run.stats import PeriodicReport, live_stats
        o = self.opts
        if o.report_every:
            self.reporter = PeriodicReport(o.report_every, lambda: live_stats(self), o.report_lines,
                                           log=log.callback("report"))
        elif o.report_lines:
            raise UserError("--report-lines needs --report-every SECONDS")
        if o.serve:
            from edge_seg.serve.server import open_server
            self.server = open_server(o.serve, lambda: live_stats(self), token=o.serve_token,
                                      max_clients=o.serve_max_clients, times=self.times,
                                      log=log.callback("serve"))

    def _inputs(self, model_path) -> list[Path]:
        """What the run reads: an output naming one of these is refused."""
        from edge_seg.backends.metadata import sidecar_path
        from edge_seg.io.sources import _image_paths
        spec = self.opts.source_spec()
        paths = [Path(model_path), sidecar_path(model_path), Path(spec).expanduser()]
        paths += _image_paths(spec) or []  # a folder or glob: each image it matches
        if self.opts.check_float:
            paths += [Path(self.opts.check_float), sidecar_path(self.opts.check_float)]
        return paths

    def _check_outputs(self, model_path) -> None:
        """--save and --report checked before anything starts: a run never ends with its
        results unwritable."""
        from edge_seg.io import sinks
        from edge_seg.io.publish import check_output
        o, inputs = self.opts, self._inputs(model_path)
        if o.save:
            sinks.check_save_target(o.save, inputs, o.overwrite)
        if o.collect:
            from edge_seg.run.collect import check_target
            check_target(o.collect, inputs, o.save)
        if o.report:
            check_output(o.report, "--report", inputs=inputs, overwrite=o.overwrite, need=64 << 10)
            report, save = (Path(p).expanduser().absolute() for p in (o.report, o.save or o.report))
            if o.save and (report == save or save in report.parents):
                raise UserError(f"--report {o.report}: inside --save {o.save}; a saved frames "
                                f"folder holds only frames: write the report beside it")

    def banner(self) -> None:
        o, seg = self.opts, self.segmenter
        lines = [f"edge-seg {__version__} run"]
        if self.profile is not None:
            lines.append(f"  profile: {self.profile.describe()}")
        elif self.profile_note:
            lines.append(f"  profile: {self.profile_note}")
        lines.append(f"  model    {seg.describe()}")
        lines.append(f"  backend  {seg.backend.describe()}")
        mode = ("newest frame only" if self.source.newest_only else "every frame") + (
            f", every {o.every}th" if o.every > 1 else "")
        lines.append(f"  source   {self.source.description} ({mode})")
        outputs = [f"view {o.view}, alpha {o.alpha:g}"]
        outputs.append(f"save {self.sink.describe()}" if self.sink else "no --save")
        outputs.append("window" if self.window else "headless")
        lines.append(f"  output   {', '.join(outputs)}")
        if self.drift:
            lines.append(f"  drift    vs {self.drift.path.name} every {o.check_every} frames, "
                         f"warn below {o.min_agreement:.2f} (windows of {o.agreement_window} checks)")
        if self.collect:
            lines.append(f"  collect  {self.collect.describe()}")
        if self.reporter:
            lines.append(f"  report   {self.reporter.describe()}")
        if self.server:
            lines.append(f"  serve    {self.server.describe()}")
        log.lines("run.start", lines, edge_seg=__version__, model=str(seg.path),
                  variant=seg.variant, backend=seg.backend.as_dict(),
                  source=self.source.description, options=self._options())

    def loop(self) -> None:
        """capture -> process -> overlay/render, until the source ends or we are stopped."""
        o, seg = self.opts, self.segmenter
        self.renderer = Renderer(seg, self.overlay, self.times, self.sink, self.window, self.drift,
                                 hub=self.server.hub if self.server else None,
                                 collect=self.collect)
        next_progress = time.perf_counter() + PROGRESS_EVERY_S
        self.state.t_start = time.perf_counter()
        while self.state.stopped_by is None:
            frame = self.source.read()                          # capture
            if frame is None:
                self.state.stopped_by = self.state.stopped_by or "end of source"
                break
            t0 = time.perf_counter()
            tensor = seg.preprocess(frame.image)                # process
            t1 = time.perf_counter()
            logits = seg.infer(tensor)
            t2 = time.perf_counter()
            self.renderer.submit(frame, logits)                 # overlay + render
            self.times.add("capture", frame.capture_ms)
            self.times.add("pre", (t1 - t0) * 1e3)
            self.times.add("infer", (t2 - t1) * 1e3)
            self.state.frames += 1
            if self.window is not None and not self.window.pump():
                self.state.stopped_by = "window closed"
            if o.max_frames and self.state.frames >= o.max_frames:
                self.state.stopped_by = self.state.stopped_by or "--max-frames"
            if not o.quiet and t2 >= next_progress:
                next_progress = t2 + PROGRESS_EVERY_S
                infer_ms = self.times.stages["infer"].recent
                log.info("run.progress", f"  frame {self.state.frames}: {self.renderer.fps:.1f} "
                         f"FPS, infer {infer_ms:.1f} ms", frames=self.state.frames,
                         fps=self.renderer.fps, infer_ms=infer_ms)

    def finish(self) -> None:
        """Drain and close everything that was opened (every exit path comes here). A
        rendering or saving failure is kept in ``self.failure``: it ends the run with a
        non-zero code after the summary is printed."""
        for output, step in ((False, lambda: self.source and self.source.close()),
                             (False, lambda: self.reporter and self.reporter.close()),
                             (False, lambda: self.server and self.server.close()),
                             (True, lambda: self.renderer and self.renderer.close()),
                             (True, lambda: self.sink and self.sink.close()),
                             (False, lambda: self.drift and self.drift.close()),
                             (False, lambda: self.collect and self.collect.close()),
                             (False, lambda: self.window and self.window.close())):
            try:
                step()
            except UserError as e:
                if output:
                    self.failure = self.failure or e
                else:
                    log.warning("run.close", str(e))
        self.state.t_end = time.perf_counter()
        if self.sink is not None:
            self.times.stages["encode"] = self.sink.encode

    # -- the end-of-run summary ---------------------------------------------------------
    def summary(self) -> dict:
        from edge_seg.io.sources import redact_url
        st, src = self.state, self.source
        rendered = self.renderer.frames if self.renderer else 0
        wall = (self.renderer.t_last - self.state.t_start) if self.renderer and self.renderer.t_last else 0.0
        out = {
            "edge_seg": __version__,
            "stopped_by": st.stopped_by,
            "frames": rendered,
            "wall_s": wall,
            "fps": rendered / wall if wall > 0 else None,
            "dropped_frames": src.stats.dropped if src else 0,
            "corrupt_frames": src.stats.corrupt if src else 0,
            "source": {"spec": redact_url(self.opts.source_spec()), "description": src.description if src else None,
                       **(src.stats.as_dict() if src else {})},
            "model": {"path": str(self.segmenter.path), "variant": self.segmenter.variant,
                      "input_size": list(self.segmenter.input_size)} if self.segmenter else None,
            **(self.segmenter.backend.as_dict() if self.segmenter else {}),
            "latency_ms": self.times.summary(),
            "saved": self.sink.summary() if self.sink else None,
            "error": str(self.failure) if self.failure else None,
            "agreement": self.drift.summary() if self.drift else None,
            "collected": self.collect.summary() if self.collect else None,
            "profile": {"path": str(self.profile.path), "created": self.profile.created}
            if self.profile is not None else ({"note": self.profile_note} if self.profile_note else None),
            "options": self._options(),
        }
        return out

    def _options(self) -> dict:
        """The options as given, for the report: a token never lands in a file (reports
        are shared and world-readable); whether one was set is kept."""
        from edge_seg.io.sources import redact_url
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.opts).items()}
        if out.get("serve_token") is not None:
            out["serve_token"] = SECRET_SHOWN
        if out.get("source"):
            out["source"] = redact_url(out["source"])
        return out

    def print_summary(self, s: dict) -> None:
        """The summary for people; in json one ``run.summary`` record that carries the
        figures of ``/stats.json`` (``live_stats``, the recording's segments included)."""
        from edge_seg.run.stats import live_stats
        log.lines("run.summary", self.summary_lines(s), **live_stats(self))

    @staticmethod
    def summary_lines(s: dict) -> list[str]:
        fps = f"{s['fps']:.1f} FPS" if s["fps"] else "-"
        lines = [f"edge-seg run: {s['frames']} frames in {s['wall_s']:.1f} s = {fps} "
                     f"(stopped by {s['stopped_by']})"]
        src = s["source"]
        lines.append(f"  frames dropped {s['dropped_frames']}, corrupt skipped {s['corrupt_frames']}, "
                     f"source lost {src.get('disconnects', 0)}x / back {src.get('reconnects', 0)}x "
                     f"({src.get('offline_s', 0):.1f} s offline)")
        if src.get("warning"):
            lines.append(f"  warning: {src['warning']}")
        lines.append(f"  {'latency ms':<24}{'p50':>8}{'p99':>8}{'mean':>8}")
        labels = {"frame": "frame (capture->shown)"}
        for stage in STAGES:
            v = s["latency_ms"].get(stage)
            if v and v.get("n"):
                lines.append(f"    {labels.get(stage, stage):<22}{v['p50']:>8.1f}{v['p99']:>8.1f}{v['mean']:>8.1f}")
        if s.get("backend"):
            fb = f" (fell back from {s['delegate_requested']}: {s['fallback']})" if s.get("fallback") else ""
            lines.append(f"  backend {s['backend']}, delegate {s['delegate']}, threads {s['threads']}{fb}")
        a = s.get("agreement")
        if a:
            if a["checks"]:
                cats = ", ".join(f"{k} {v:.2f}" for k, v in (a["per_category_iou"] or {}).items()
                                 if v is not None)
                lines.append(f"  drift vs {Path(a['float_model']).name}: {a['checks']} checks "
                             f"({a['skipped_busy']} skipped while busy), agreement mIoU(7) "
                             f"{_fmt(a['agreement_miou7'])}, pixels {_fmt(a['pixel_agreement'])}, "
                             f"worst window {_fmt((a['worst_window'] or {}).get('miou7'))}, "
                             f"{a['windows_below']}/{a['windows']} windows below {a['min_agreement']:.2f}")
                lines.append(f"    per category: {cats}")
            else:
                lines.append(f"  drift vs {Path(a['float_model']).name}: no check completed")
        saved = s.get("saved")
        if saved and saved.get("published", True):
            lines.append(f"  saved {saved['frames']} frames to {saved['path']}")
        elif saved and s.get("error"):
            lines.append(f"  NOT saved to {saved['path']}: see the error below")
        elif saved:
            lines.append(f"  nothing saved to {saved['path']} (no frame was rendered)")
        from edge_seg.io.sinks import segment_lines
        from edge_seg.run.collect import summary_lines as collect_lines
        return lines + segment_lines(saved) + collect_lines(s.get("collected"))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
