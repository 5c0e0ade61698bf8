"""Structured logs: structlog for our own events, stdlib (Tornado) routed alike.

Every line is one JSON object (``log.format: json``) or a readable console line,
with ``timestamp`` (ISO 8601 UTC), ``level`` and ``event``.

Our own events take structlog's native path (a level-filtering bound logger
rendering straight to the stream), not the stdlib ``logging`` machinery: a
stream costs the server three lines and a control-API call one, and the
stdlib path (``LogRecord``, caller lookup, handler locks) made each line
about four times as expensive. Records of other libraries' stdlib loggers go
through :class:`structlog.stdlib.ProcessorFormatter` with the same renderer.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog


def _utc_timestamp(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    """``timestamp``: ISO 8601 UTC with microseconds (``2026-01-02T03:04:05.123456Z``)."""
    now = time.time()
    second = int(now)
    if second != _second_text[0]:  # the date and time are formatted once per second
        _second_text[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    event["timestamp"] = f"{_second_text[1]}.{int((now - second) * 1e6):06d}Z"
    return event


_second_text: list[Any] = [-1, ""]


def _json_line(value: Any, **kw: Any) -> str:
    """One compact JSON object; values orjson cannot encode fall back to ``json``."""
    try:
        return orjson.dumps(
            value, default=kw.get("default"), option=orjson.OPT_NON_STR_KEYS
        ).decode()
    except TypeError:  # e.g. integers beyond 64 bits
        return json.dumps(value, **kw)


_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    _utc_timestamp,
]


class _LineWriter:
    """The end of structlog's chain: writes each rendered line and flushes it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        # Lines of other threads (a broker client's) must not interleave with ours.
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            self.stream.write(message + "\n")
            self.stream.flush()

    debug = info = warning = warn = error = exception = critical = fatal = msg


def configure_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Send our events and the stdlib root logger's records through one renderer."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    level_number = logging.getLevelNamesMapping()[level.upper()]
    writer = _LineWriter(stream or sys.stdout)
    structlog.configure(
        processors=[*_SHARED_PROCESSORS, structlog.processors.format_exc_info, renderer],
        logger_factory=lambda *_args: writer,
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        # Tests and embedding applications reconfigure logging: look it up per call.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED_PROCESSORS, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(writer.stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number)


def quiet_library_logs(*names: str) -> None:
    """Silence broker client libraries that log every retry during an outage.

    Drivers report outages as ``broker.*`` events instead. A level the operator
    set (or the embedding application) is left alone.
    """
    for name in names:
        library_log = logging.getLogger(name)
        if library_log.level == logging.NOTSET:
            library_log.setLevel(logging.CRITICAL)


def get_logger(name: str = "unifrost") -> Any:
    return structlog.get_logger(name)
