"""`edge-seg run --serve [HOST:]PORT`: watch the overlay and read the run's health from a
browser, curl or Prometheus, on a device without a screen.

    /             the page: live overlay, legend, figures (plain HTML/JS from the package)
    /stream.mjpg  the rendered frames as MJPEG (multipart/x-mixed-replace)
    /snapshot.jpg the newest rendered frame
    /stats.json   the figures of edge_seg.run.stats.live_stats
    /metrics      the same figures in the Prometheus text format (prometheus_client)

The loop never waits for a viewer: the render thread only drops a reference to each new
frame into a one-slot ``FrameHub`` (no copy, no encode), or, when no other output needed the
frame drawn, a way to draw it. Viewer threads draw and JPEG-encode the newest frame when they
are ready to send one, once per frame however many watch, so the drawing and encoding rate is
at most the fastest viewer's and nothing is drawn or encoded while nobody watches.
Each viewer gets only the newest frame; one that stops reading is dropped after
``CLIENT_TIMEOUT_S`` (its socket's send times out) and meanwhile holds one JPEG at most.

Loopback only unless a host is given; a server bound to any other address requires a
token on every request (``Authorization: Bearer TOKEN`` or ``?token=TOKEN``), compared in
constant time. Only the five paths above exist: no file is served from disk.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from importlib import resources
from typing import Callable

import cv2

from edge_seg import log as logs
from edge_seg.errors import UserError
from edge_seg.serve.http import _Handler, _HTTPServer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_CLIENTS = 4
TOKEN_ENV = "EDGE_SEG_SERVE_TOKEN"
JPEG_QUALITY = 80
CLIENT_TIMEOUT_S = 10.0  # a viewer that accepts no data for this long is dropped
SPARE_CONNECTIONS = 16   # page, stats and metrics requests beside the viewers
# a request's line and headers must arrive within this many seconds in total: a client
# that trickles them a byte at a time cannot hold a connection for long
HEADER_DEADLINE_S = 5.0
# histogram buckets of the per-stage latencies in /metrics (milliseconds)
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


# -- the newest frame, shared with the viewers -------------------------------------------
class FrameHub:
    """One slot holding the newest frame (an image, or a function that draws it) and, once
    a viewer asked for it, its JPEG."""

    def __init__(self, quality: int = JPEG_QUALITY):
        self.quality = int(quality)
        self._cond = threading.Condition()
        self._encode_lock = threading.Lock()
        self._image = None
        self._seq = 0           # frames put so far (the newest one's number)
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0
        self.encoded = 0        # JPEG encodes done
        self.closed = False

    def put(self, image) -> None:
        """From the render thread: O(1), never blocks on a viewer (the image is not
        modified afterwards by the pipeline, so a reference is enough)."""
        with self._cond:
            self._image = image
            self._seq += 1
            self._cond.notify_all()

    def offer(self, draw: Callable[[], object]) -> None:
        """``put`` of a frame nobody has drawn: ``draw()`` returns the image, and runs in
        the first viewer thread that asks for this frame, never in the caller's."""
        self.put(draw)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    @property
    def frames(self) -> int:
        return self._seq

    def next_jpeg(self, after: int, timeout: float) -> tuple[int, bytes] | None:
        """(number, JPEG) of the newest frame once it is newer than ``after``; None on
        timeout or close. The encode runs outside the slot's lock, so ``put`` never waits."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > after or self.closed, timeout):
                return None
            if self.closed:
                return None
            seq, image = self._seq, self._image
            if self._jpeg_seq >= seq:
                return self._jpeg_seq, self._jpeg
        with self._encode_lock:  # one encode per frame however many viewers ask
            if self._jpeg_seq < seq:
                if callable(image):
                    image = image()
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    return None
                self._jpeg, self._jpeg_seq = buf.tobytes(), seq
                self.encoded += 1
            return self._jpeg_seq, self._jpeg


# -- addresses and tokens ---------------------------------------------------------------------
def parse_address(value: str) -> tuple[str, int]:
    """'[HOST:]PORT' (IPv6 hosts in brackets: '[::]:8080') -> (host, port)."""
    text = str(value).strip()
    host, port = DEFAULT_HOST, text
    if text.startswith("["):
        end = text.find("]")
        if end > 0 and text[end + 1:end + 2] == ":":
            host, port = text[1:end], text[end + 2:]
    elif ":" in text:
        host, port = text.rsplit(":", 1)
        host = host or DEFAULT_HOST
    try:
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise UserError(f"--serve {value}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080 "
                        "(PORT 0..65535; 0 picks a free port)") from None
    return host, number


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def choose_token(host: str, given: str | None) -> tuple[str | None, bool]:
    """(token, generated): the given one or $EDGE_SEG_SERVE_TOKEN; off loopback without
    either, a new random one (the caller prints it once). An empty or blank token is refused,
    never taken as "no token": that would serve without authentication."""
    token, label = given, "--serve-token"
    if token is None:
        token, label = os.environ.get(TOKEN_ENV), f"${TOKEN_ENV}"
    if token is not None and not token.strip():
        raise UserError(f"{label}: the token is empty; give a token or leave it unset")
    if token is None and not is_loopback(host):
        return secrets.token_urlsafe(18), True
    return token, False


# -- the Prometheus exposition ------------------------------------------------------------------
class StatsCollector:
    """A prometheus_client collector over a ``live_stats`` dict (read at scrape time)."""

    def __init__(self, stats: Callable[[], dict], times=None):
        self.stats = stats
        self.times = times  # the run's StageTimes: histogram buckets from its bins

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily, InfoMetricFamily)
        s = self.stats()
        src = s.get("source") or {}

        def counter(name, doc, value):
            return CounterMetricFamily(f"edge_seg_{name}", doc, value=value or 0)

        def gauge(name, doc, value):
            return GaugeMetricFamily(f"edge_seg_{name}", doc, value=value)

        yield counter("frames", "Frames segmented and rendered.", s["frames"])
        yield counter("frames_processed", "Frames through the model (rendered or about to be).",
                      s["processed"])
        yield counter("source_frames", "Frames read from the source.", src.get("frames_read"))
        yield counter("dropped_frames", "Live-source frames replaced by a newer one before "
                      "the pipeline took them.", s["dropped_frames"])
        yield counter("corrupt_frames", "Unreadable frames skipped.", s["corrupt_frames"])
        yield counter("source_disconnects", "Times the live source was lost.", src.get("disconnects"))
        yield counter("source_reconnects", "Times the live source came back.", src.get("reconnects"))
        yield counter("source_offline_seconds", "Time spent waiting for a lost source.",
                      src.get("offline_s"))
        if s["fps"] is not None:
            yield gauge("fps", "Rendered frames per second (moving average).", s["fps"])
        yield gauge("running", "1 while the loop runs.", 1.0 if s["running"] else 0.0)
        hist = HistogramMetricFamily("edge_seg_stage_latency_seconds",
                                     "Per-stage latency (capture, pre, infer, post, draw, frame "
                                     "= capture to shown); buckets to 2%.", labels=["stage"])
        recent = GaugeMetricFamily("edge_seg_stage_latency_recent_seconds",
                                   "Per-stage latency, moving average (as on the overlay).",
                                   labels=["stage"])
        for stage, v in s["latency_ms"].items():
            counts = self._latency_counts(stage)
            buckets = [(f"{b / 1e3:g}", c) for b, c in zip(LATENCY_BUCKETS_MS, counts)]
            hist.add_metric([stage], buckets + [("+Inf", v["n"])], sum_value=v["mean"] * v["n"] / 1e3)
            if v.get("recent") is not None:
                recent.add_metric([stage], v["recent"] / 1e3)
        yield hist
        yield recent
        a = s.get("agreement")
        if a:
            yield counter("drift_checks", "Float-model drift checks done.", a["checks"])
            yield counter("drift_skipped_busy", "Drift checks skipped while one ran.", a["skipped_busy"])
            yield counter("drift_windows_below", "Agreement windows below --min-agreement.",
                          a["windows_below"])
            if a["agreement_miou7"] is not None:
                yield gauge("drift_agreement_miou7", "Agreement mIoU(7) of the quantised model "
                            "with its float twin, over all checks.", a["agreement_miou7"])
            if a["pixel_agreement"] is not None:
                yield gauge("drift_pixel_agreement", "Share of pixels where both models agree.",
                            a["pixel_agreement"])
            per = GaugeMetricFamily("edge_seg_drift_category_iou", "Per-category IoU of the "
                                    "quantised model's masks against the float model's.",
                                    labels=["category"])
            for name, value in (a["per_category_iou"] or {}).items():
                if value is not None:
                    per.add_metric([name], value)
            yield per
        stream = s.get("stream") or {}
        if stream:
            yield gauge("viewers", "Viewers of /stream.mjpg now.", stream["viewers"])
            yield counter("stream_frames_encoded", "JPEG encodes for viewers.", stream["frames_encoded"])
        model, backend = s.get("model") or {}, s.get("backend") or {}
        info = InfoMetricFamily("edge_seg_model", "The model and how it runs.",
                                labels=["model", "variant", "backend", "delegate", "threads", "version"])
        info.add_metric([str(model.get("name")), str(model.get("variant")), str(backend.get("backend")),
                         str(backend.get("delegate")), str(backend.get("threads")), str(s["edge_seg"])], {})
        yield info

    def _latency_counts(self, stage: str) -> list[int]:
        if self.times is not None and stage in self.times.stages:
            return self.times.stages[stage].count_at_most(LATENCY_BUCKETS_MS)
        return [0] * len(LATENCY_BUCKETS_MS)


# -- the HTTP server ------------------------------------------------------------------------------
def listen_error(address: str, host: str, port: int, e: OSError) -> UserError:
    what = "the port is in use (another program or edge-seg run listens there); choose " \
           "another PORT" if e.errno in (98, 48, 10048) else (e.strerror or str(e))
    return UserError(f"--serve {address}: cannot listen on {host}:{port}: {what}")


def check_address(address: str) -> None:
    """Fail now, with the server's own error, if ``address`` cannot be listened on: a run
    checks this before opening its source (which can take seconds), binds for real last."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server binds
        try:
            probe.bind((host, port))
        except OSError as e:
            raise listen_error(address, host, port, e) from None


class Server:
    """The web server beside the loop. Bind happens in the constructor (so a port in use is
    a UserError before the run starts); ``start()`` serves from a daemon thread."""

    def __init__(self, address: str, stats: Callable[[], dict], token: str | None = None,
                 max_clients: int = DEFAULT_MAX_CLIENTS, times=None,
                 log: Callable[[str], None] | None = None):
        self.host, port = parse_address(address)
        if max_clients < 1:
            raise UserError(f"--serve-max-clients {max_clients}: must be at least 1")
        self.token, self.token_generated = choose_token(self.host, token)
        self.max_clients = int(max_clients)
        self.stats = stats
        self.log = log or logs.callback("serve")
        self.hub = FrameHub()
        self.client_timeout = CLIENT_TIMEOUT_S
        self.viewers = 0
        self.refused = 0        # 503: viewer limit
        self.unauthorized = 0   # 401
        self.stalled = 0        # viewers dropped because they stopped reading
        self.sent = 0           # MJPEG parts sent, all viewers
        self.errors = 0
        self._warned = False
        self.header_deadline = HEADER_DEADLINE_S
        self.evicted = 0        # connections closed for not finishing their headers in time
        self._lock = threading.Lock()
        self._connections: dict = {}  # socket -> headers deadline (monotonic), None once read
        self.page = resources.files("edge_seg.serve").joinpath("web/index.html").read_bytes()
        from prometheus_client import CollectorRegistry
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(stats, times))
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("HTTPServer", (_HTTPServer,), {"address_family": family})
        try:
            self.httpd = server_class((self.host, port), _Handler)
        except OSError as e:
            raise listen_error(address, self.host, port, e) from None
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self._serve, name="serve", daemon=True)

    # -- lifecycle
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def all_addresses(self) -> bool:
        """Whether the socket listens on every address ('0', '0.0.0.0', '::', ...): read from
        the bound socket, not from how the address was spelled."""
        try:
            return ipaddress.ip_address(self.httpd.server_address[0]).is_unspecified
        except ValueError:
            return False

    def describe(self) -> str:
        where = self.url + (" (all addresses)" if self.all_addresses else "")
        if self.token_generated:
            return f"{where}, token {self.token} (generated: open {self.url}?token={self.token})"
        if self.token:
            return f"{where}, token required"
        return where

    def start(self) -> "Server":
        self._thread.start()
        return self

    def _serve(self) -> None:
        try:
            self.httpd.serve_forever(poll_interval=0.25)
        except Exception as e:  # noqa: BLE001 -- the web server must never stop the run
            self.note_error(e)

    def close(self) -> None:
        self.hub.close()
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
        with self._lock:  # wake viewers blocked in a send to a stalled client
            connections = list(self._connections)
        for conn in connections:
            _hang_up(conn)

    def note_error(self, error) -> None:
        with self._lock:
            self.errors += 1
        if isinstance(error, OSError) or self._warned:  # disconnects, timeouts: normal
            return
        self._warned = True
        self.log(logs.Line("serve.error", f"warning: web server: {type(error).__name__}: {error} "
                           f"(the run goes on)"))

    # -- bookkeeping used by the handler
    def authorized(self, header: str | None, query_token: bytes | None) -> bool:
        """``header`` as http.server decodes it (ISO-8859-1, so its bytes come back
        unchanged), ``query_token`` as bytes after percent-decoding: both compared with
        the token's UTF-8 bytes, so a non-ASCII token works in either place."""
        if self.token is None:
            return True
        given = query_token
        if header and header.lower().startswith("bearer "):
            given = header[7:].strip().encode("latin-1", "replace")
        if given is None:
            return False
        return hmac.compare_digest(given, self.token.encode("utf-8"))

    @contextmanager
    def viewer_slot(self):
        with self._lock:
            ok = self.viewers < self.max_clients
            if ok:
                self.viewers += 1
            else:
                self.refused += 1
        try:
            yield ok
        finally:
            if ok:
                with self._lock:
                    self.viewers -= 1

    def track(self, conn, add: bool) -> bool:
        """Count a connection in (False: none can be taken) or out. When all are taken, the
        one that has waited longest for its headers is closed to make room: a client that
        connects and sends nothing cannot lock out /metrics or /stats.json."""
        victim = None
        with self._lock:
            if not add:
                self._connections.pop(conn, None)
                return True
            if len(self._connections) >= self.max_clients + SPARE_CONNECTIONS:
                waiting = [(t, c) for c, t in self._connections.items() if t is not None]
                if not waiting:
                    return False
                victim = min(waiting, key=lambda item: item[0])[1]
                self._connections.pop(victim)
                self.evicted += 1
            self._connections[conn] = time.monotonic() + self.header_deadline
        _hang_up(victim)
        return True

    def awaiting_headers(self, conn, waiting: bool) -> None:
        """A request starts (its headers are due within ``header_deadline``) or its
        headers are in (it holds its connection for as long as it is answered)."""
        with self._lock:
            if conn in self._connections:
                self._connections[conn] = time.monotonic() + self.header_deadline if waiting else None

    def close_late(self) -> None:
        """Close every connection whose headers are overdue (from the serving thread)."""
        now = time.monotonic()
        with self._lock:
            late = [c for c, t in self._connections.items() if t is not None and t <= now]
            for conn in late:
                self._connections.pop(conn)
            self.evicted += len(late)
        for conn in late:
            _hang_up(conn)

    def figures(self) -> dict:
        return {"url": self.url, "token_required": self.token is not None,
                "viewers": self.viewers, "max_viewers": self.max_clients,
                "frames_encoded": self.hub.encoded, "parts_sent": self.sent,
                "refused": self.refused, "unauthorized": self.unauthorized,
                "stalled_dropped": self.stalled, "evicted": self.evicted, "errors": self.errors}


def _hang_up(conn) -> None:
    """Wake the thread blocked on ``conn`` (its read or send returns) and end the connection."""
    if conn is None:
        return
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def open_server(address: str, stats: Callable[[], dict], token: str | None = None,
                max_clients: int = DEFAULT_MAX_CLIENTS, times=None, log=None) -> Server:
    """Bind now (UserError when the address cannot be used); ``start()`` to serve."""
    return Server(address, stats, token=token, max_clients=max_clients, times=times, log=log)
