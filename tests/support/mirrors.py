"""A mirror on loopback that serves a folder and has the faults real mirrors have.

:class:`MirrorServer` hangs, answers 500, cuts a body short, sends more than it
announced, drips; it logs every request so tests can say exactly what was downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from patchwatch.domain.mirror_policy import MirrorPolicy
from tests.support.network import free_port

#: The test mirrors run on 127.0.0.1: a policy that lets the fetcher reach them, and
#: only them (not the rest of loopback, not the other non-public networks).
LOOPBACK_POLICY = MirrorPolicy.build(["http://127.0.0.1:*"], ["127.0.0.1/32"])


def served_folder(static_www: tuple[Path, str], folder: str, url_path: str) -> tuple[Path, str]:
    """Make ``folder`` in the ``static_www`` fixture's root; (it, the URL of ``url_path``)."""
    root, base = static_www
    (root / folder).mkdir(parents=True)
    return root / folder, f"{base}/{url_path}"


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def static_files(root: Path) -> Iterator[str]:
    """Python's own http.server serving ``root`` on loopback; yields its base URL.

    It sends Last-Modified and answers If-Modified-Since with a 304, as a plain mirror
    does: no faults, no records (see :class:`MirrorServer` for those).
    """
    handler = functools.partial(_QuietFiles, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Fault:
    """What the server does instead of serving a path normally.

    ``status``: answer with it (and ``headers``); ``hang``: sleep that long first;
    ``body``: serve these bytes instead of the file; ``cut``: announce the full length
    but close after this many bytes; ``no_length``: send no Content-Length and close
    to end the body; ``times``: only for the first N requests (then served normally);
    ``drip``: send one byte every that many seconds, of the headers (``drip_body``
    false: a header line that never ends) or of the body, until the client goes away;
    ``wait``: answer (normally) only once this event is set; ``arrived`` is set when
    such a request comes in.
    """

    status: int | None = None
    hang: float = 0.0
    body: bytes | None = None
    cut: int | None = None
    no_length: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    times: int | None = None
    drip: float = 0.0
    drip_body: bool = False
    wait: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)


#: A dripping handler gives up on its own after this long, so that a client that never
#: hangs up cannot keep a test's server thread forever.
DRIP_LIMIT_SECONDS = 120.0


class MirrorServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 serving ``root``, with faults and a log."""

    def __init__(self, root: Path, validators: bool = True) -> None:
        self.root = root
        self.validators = validators  # send ETag/Last-Modified and honour conditionals
        self.faults: dict[str, Fault] = {}
        self.log: list[tuple[str, int]] = []  # (path as requested, status)
        self.headers_seen: list[dict[str, str]] = []
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # hung handler threads must not block close
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> MirrorServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str = "") -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        with self._lock:
            return [p for p, _s in self.log]

    def clear(self) -> None:
        with self._lock:
            self.log.clear()
            self.headers_seen.clear()

    def _record(self, path: str, status: int, headers: dict[str, str]) -> None:
        with self._lock:
            self.log.append((path, status))
            self.headers_seen.append(headers)

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        raw_path = h.path
        path = raw_path
        if path.startswith("http://"):  # we are being used as a proxy
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        path = path.split("?", 1)[0]
        fault = self.faults.get(path)
        if fault is not None and fault.times is not None:
            if fault.times <= 0:
                fault = None
            else:
                fault.times -= 1
        headers = {k: v for k, v in h.headers.items()}
        if fault is not None and fault.hang:
            self._record(raw_path, 0, headers)
            time.sleep(fault.hang)
            h.close_connection = True
            return
        if fault is not None and fault.wait is not None:
            fault.arrived.set()
            if not fault.wait.wait(DRIP_LIMIT_SECONDS):
                return
        if fault is not None and fault.drip:
            self._record(raw_path, 200, headers)
            self._drip(h, fault)
            return
        if fault is not None and fault.status is not None:
            self._record(raw_path, fault.status, headers)
            body = f"fault {fault.status}\n".encode()
            h.send_response(fault.status)
            for k, v in fault.headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        if fault is not None and fault.body is not None:
            data = fault.body
        else:
            file = (self.root / path.lstrip("/")).resolve()
            if not file.is_relative_to(self.root.resolve()) or not file.is_file():
                self._record(raw_path, 404, headers)
                h.send_error(404)
                return
            data = file.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        if self.validators and h.headers.get("If-None-Match") == etag:
            self._record(raw_path, 304, headers)
            h.send_response(304)
            h.send_header("ETag", etag)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        self._record(raw_path, 200, headers)
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        if self.validators:
            h.send_header("ETag", etag)
            h.send_header("Last-Modified", "Sat, 11 Jul 2026 10:16:37 GMT")
        if fault is not None and fault.no_length:
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(data)
            h.close_connection = True
            return
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if fault is not None and fault.cut is not None:
            h.wfile.write(data[: fault.cut])
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        h.wfile.write(data)

    def _drip(self, h: http.server.BaseHTTPRequestHandler, fault: Fault) -> None:
        """Send bytes one at a time, slower than any deadline, faster than any timeout."""
        h.close_connection = True
        stop = time.monotonic() + DRIP_LIMIT_SECONDS
        pending = b"HTTP/1.1 200 OK\r\nX-Drip: "  # a header line that never ends
        try:
            if fault.drip_body:
                h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                pending = b""
            while time.monotonic() < stop:
                byte, pending = (pending[:1], pending[1:]) if pending else (b"a", b"")
                h.wfile.write(byte)
                h.wfile.flush()
                time.sleep(fault.drip)
        except OSError:
            return  # the client hung up: what the deadline is for


LIVENESS_SECONDS = 30.0  # far above the tests' deadlines, far below DRIP_LIMIT_SECONDS
