"""The HTTP side of ``edge-seg run --serve`` (``edge_seg.serve.server``): one request handler for the
five paths (page, MJPEG stream, snapshot, stats, metrics) and the threading server class.
Viewer state, the frame slot and the token live on the ``edge_seg.serve.server.Server`` that owns the
HTTP server (``self.server.owner``)."""
from __future__ import annotations

import html
import select
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

WAIT_FRAME_S = 1.0       # how often a waiting viewer thread looks up from the frame slot
SNAPSHOT_WAIT_S = 5.0    # /snapshot.jpg waits this long for a first frame
STREAM_SNDBUF = 256 * 1024  # kernel send buffer per viewer: a stalled one holds no more
BOUNDARY = "edge-seg-frame"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted run can bind while old sockets linger in TIME_WAIT

    def service_actions(self):
        # runs between polls of the listening socket: the headers deadline needs no thread
        self.owner.close_late()

    def handle_error(self, request, client_address):
        # a viewer going away mid-frame is normal; anything else is noted once, never raised
        error = sys.exc_info()[1]
        self.owner.note_error(error)


class _Handler(BaseHTTPRequestHandler):
    def version_string(self) -> str:
        return "edge-seg"  # no Python version on the wire
    protocol_version = "HTTP/1.1"

    @property
    def owner(self) -> Server:  # an edge_seg.serve.server.Server (not imported: no cycle)
        return self.server.owner

    def setup(self):
        self.timeout = self.server.owner.client_timeout
        super().setup()
        self._tracked = self.owner.track(self.connection, True)
        if not self._tracked:  # too many connections at once: closed without a word
            raise ConnectionRefusedError("connection limit")

    def handle_one_request(self):
        # every request, keep-alive ones included, gets the whole headers deadline afresh;
        # an idle keep-alive connection waits under the same deadline
        self.owner.awaiting_headers(self.connection, True)
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.owner.awaiting_headers(self.connection, False)
        return ok

    def finish(self):
        try:
            super().finish()
        finally:
            self.owner.track(self.connection, False)

    def log_message(self, format, *args):  # noqa: A002 -- the base class's name
        pass  # one line per request would flood journald

    # -- responses
    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        # the request line arrives decoded as ISO-8859-1, and percent-escapes decoded the
        # same way keep their bytes: a UTF-8 token, raw or percent-encoded, compares as sent
        query_token = (parse_qs(url.query, encoding="latin-1").get("token") or [None])[0]
        if query_token is not None:
            query_token = query_token.encode("latin-1", "replace")
        if not self.owner.authorized(self.headers.get("Authorization"), query_token):
            with self.owner._lock:
                self.owner.unauthorized += 1
            self.close_connection = True  # no slot is held without the token
            self._send(401, b"401 unauthorized\n", headers={"WWW-Authenticate": 'Bearer realm="edge-seg"'})
            return
        route = {"/": self._page, "/index.html": self._page, "/stream.mjpg": self._stream,
                 "/snapshot.jpg": self._snapshot, "/stats.json": self._stats,
                 "/metrics": self._metrics}.get(url.path)
        if route is None:
            self._send(404, b"404 not found: / /stream.mjpg /snapshot.jpg /stats.json /metrics\n")
            return
        route()

    def _page(self):
        # the legend is in the page itself: visible at once, and without JavaScript
        rows = "".join(
            f'<tr><td><span class="swatch" style="background:rgb({",".join(str(int(v)) for v in c["color"])})">'
            f'</span>{html.escape(str(c["name"]))}</td><td></td></tr>'
            for c in self.owner.stats().get("categories") or [])
        page = self.owner.page.replace(b"<!--legend-->", rows.encode())
        self._send(200, page, "text/html; charset=utf-8", {
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
                                       "script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                       "frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer"})

    def _stats(self):
        import json
        body = json.dumps(self.owner.stats(), separators=(",", ":")).encode()
        self._send(200, body, "application/json")

    def _metrics(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        self._send(200, generate_latest(self.owner.registry), CONTENT_TYPE_LATEST)

    def _snapshot(self):
        got = self.owner.hub.next_jpeg(0, SNAPSHOT_WAIT_S)
        if got is None:
            self._send(503, b"no frame yet\n", headers={"Retry-After": "1"})
            return
        self._send(200, got[1], "image/jpeg")

    def _stream(self):
        owner = self.owner
        with owner.viewer_slot() as ok:
            if not ok:
                self._send(503, f"viewer limit reached (--serve-max-clients {owner.max_clients})\n"
                           .encode(), headers={"Retry-After": "5"})
                return
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            except OSError:
                pass
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            seq = 0
            try:
                while not owner.hub.closed:
                    got = owner.hub.next_jpeg(seq, WAIT_FRAME_S)
                    if got is None:
                        if self._viewer_left():  # no frames flow (source offline): free the slot
                            return
                        continue
                    seq, jpeg = got
                    self.wfile.write(b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                     % (BOUNDARY.encode(), len(jpeg)) + jpeg + b"\r\n")
                    with owner._lock:
                        owner.sent += 1
            except TimeoutError:
                with owner._lock:
                    owner.stalled += 1
            except OSError:
                pass  # the viewer went away


    def _viewer_left(self) -> bool:
        """True when the viewer closed its side (readable with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True
