"""Run a WSGI application under gunicorn from inside our own process.

Embedding (rather than shelling out to the ``gunicorn`` script) keeps one command, one
set of settings and one logging format. gunicorn's arbiter owns signals: SIGTERM and
Ctrl-C stop the workers gracefully, and ``on_exit`` lets the caller stop what it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from patchwatch.receiver.gate import release_memory

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


HEADER_DEADLINE_SECONDS = 5.0
_current = threading.local()


class GuardedThreadWorker(ThreadWorker):
    """gunicorn's threaded worker with a deadline for receiving a request's headers.

    gunicorn reads headers with blocking calls and no overall deadline, so a client
    trickling a byte now and then (slow-loris) could hold a thread for ever; enough of
    them starve every agent. A timer cuts the connection if the headers are not
    complete within the deadline counted from when the connection was accepted (so
    that connections queued behind slow ones do not get a fresh allowance);
    ``pre_request``, called once headers are read, disarms it. Bodies have their own
    deadline in the receiver, and silence is bounded by ``SO_RCVTIMEO``.
    """

    def enqueue_req(self, conn: Any) -> None:
        if not conn.initialized and getattr(conn, "accepted_at", None) is None:
            conn.accepted_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        state = {"headers_done": False}
        _current.state = state
        started = getattr(conn, "accepted_at", None) or time.monotonic()
        conn.accepted_at = None  # a kept-alive next request starts its own clock

        def cut() -> None:
            if not state["headers_done"]:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

        remaining = HEADER_DEADLINE_SECONDS - (time.monotonic() - started)
        timer = threading.Timer(max(remaining, 0.0), cut)
        timer.daemon = True
        timer.start()
        try:
            return super().handle(conn)
        finally:
            timer.cancel()
            _current.state = None


def _headers_received(_worker: Any, _req: Any) -> None:
    state = getattr(_current, "state", None)
    if state is not None:
        state["headers_done"] = True


def resident_bytes() -> int:
    """This process's resident memory (RSS), from /proc; 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def recycle_above(limit: int) -> Callable[[Any, Any, Any, Any], None]:
    """A ``post_request`` hook: replace a worker whose memory stays above ``limit`` bytes.

    Runs after each request, inline processing included. Freed memory is handed back
    first (``patchwatch.receiver.gate.release_memory``); if the worker is still above the limit,
    it stops taking connections, finishes the ones it has (gunicorn's graceful stop,
    as for ``max_requests``) and the arbiter starts a fresh one, so what a request
    left behind (fragmentation, caches) does not stay for the worker's life.
    """

    def post_request(worker: Any, _req: Any, _environ: Any, _resp: Any) -> None:
        if resident_bytes() <= limit:
            return
        release_memory()
        rss = resident_bytes()
        if rss <= limit or not worker.alive:
            return
        log.warning(
            "worker %d holds %d MiB after a request (setting worker_max_memory_bytes: "
            "%d MiB); replacing it once its requests are done",
            os.getpid(), rss >> 20, limit >> 20,
        )  # fmt: skip
        worker.alive = False
        queue = getattr(worker, "method_queue", None)
        if queue is not None:  # wake the threaded worker's loop so that it stops now
            queue.defer(lambda: None)

    return post_request


class EmbeddedGunicorn(BaseApplication):
    def __init__(self, load_app: Callable[[], Any], options: dict[str, Any]) -> None:
        self._load_app = load_app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._load_app()


def logging_config(log_level: str) -> dict[str, Any]:
    """One line per event on stderr, the same format for gunicorn and patchwatch."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": log_level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": log_level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }


def set_read_timeout(server: Any, seconds: float) -> None:
    """Give every listening socket a kernel receive timeout that accepted sockets inherit.

    gunicorn reads request headers and bodies with blocking calls and no deadline, so a
    client that sends a byte now and then could hold a thread for ever. ``SO_RCVTIMEO``
    makes such a read fail after ``seconds`` of silence and the connection is closed.
    """
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    for listener in server.LISTENERS:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)


def gunicorn_options(
    bind: str,
    workers: int,
    log_level: str,
    on_exit: Callable[[Any], None] | None = None,
    child_exit: Callable[[Any, Any], None] | None = None,
    threads: int = 1,
    read_timeout: float | None = None,
    max_memory: int = 0,
) -> dict[str, Any]:
    """Return the gunicorn settings patchwatch always uses.

    ``max_memory``: replace a worker whose RSS stays above it after a request
    (:func:`recycle_above`); 0 never.
    """
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "worker_class": "patchwatch.cli.gunicorn_app.GuardedThreadWorker"
        if threads > 1
        else "sync",
        "pre_request": _headers_received,
        "threads": threads,
        "timeout": 120,
        "graceful_timeout": 20,
        "loglevel": log_level.lower(),
        "errorlog": "-",
        "accesslog": None,
        "control_socket_disable": True,  # gunicorn 27 would create ~/.gunicorn/gunicorn.ctl
        "proc_name": "patchwatch",
        "logconfig_dict": logging_config(log_level),
    }
    if on_exit:
        options["on_exit"] = on_exit
    if child_exit:
        options["child_exit"] = child_exit
    if read_timeout:
        options["when_ready"] = lambda server: set_read_timeout(server, read_timeout)
    if max_memory:
        options["post_request"] = recycle_above(max_memory)
    return options
