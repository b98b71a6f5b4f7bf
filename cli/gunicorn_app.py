"""Run a WSGI application under gunicorn from inside our own process.

Embedding (rather than shelling out to the ``gunicorn`` script) keeps one command, one
set of settings and one logging format. gunicorn's arbiter owns signals: SIGTERM and
Ctrl-C stop the workers gracefully, and ``on_exit`` lets the caller stop what it started.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class EmbeddedGunicorn(BaseApplication):  # type: ignore[misc]
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


def gunicorn_options(
    bind: str,
    workers: int,
    log_level: str,
    on_exit: Callable[[Any], None] | None = None,
    child_exit: Callable[[Any, Any], None] | None = None,
    when_ready: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Return the gunicorn settings patchwatch always uses."""
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "worker_class": "sync",
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
    if when_ready:
        options["when_ready"] = when_ready
    return options
