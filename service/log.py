"""Structured logs: structlog for our own events, stdlib (Tornado) routed alike.

Every line is one JSON object (``log.format: json``) or a readable console line,
with ``timestamp`` (ISO 8601 UTC), ``level`` and ``event``.

A stream costs the server three lines and a control-API call one, so our own
events take the shortest path structlog offers: each module holds a ready-made
bound logger whose processors render straight to the output stream, with no
stdlib ``LogRecord``, no caller lookup and no per-call configuration lookup
(about 5 µs a line instead of 54 µs through ``logging``). Those loggers never go
stale: the destination, level and format live in one :class:`LogOutput` that
:func:`configure_logging` replaces and every line reads. Records of other
libraries' stdlib loggers go through :class:`structlog.stdlib.ProcessorFormatter`
with the same renderer, and out through the same writer, so lines keep their order.

Lines logged on the event loop are held for up to :data:`FLUSH_DELAY` and
written together (:class:`_LineWriter`): a write to a file or a pipe that
wakes its reader costs more than rendering the line, and a publish that
arrives alone would otherwise pay one for its ``http.request`` line (nginx's
``access_log ... buffer= flush=`` makes the same trade). :func:`flush_logs`
(also run at exit and at the end of a drain) writes any left.

Until :func:`configure_logging` is called (an application embedding the
service may not), lines go to standard output as JSON at ``info``.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
import structlog

_LEVELS = logging.getLevelNamesMapping()


def _json_line(value: Any, **kw: Any) -> str:
    """One compact JSON object; values orjson cannot encode fall back to ``json``."""
    try:
        return orjson.dumps(
            value, default=kw.get("default"), option=orjson.OPT_NON_STR_KEYS
        ).decode()
    except TypeError:  # e.g. integers beyond 64 bits
        return json.dumps(value, **kw)


def _renderer(fmt: str) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_json_line)
    return structlog.dev.ConsoleRenderer(colors=False)


@dataclass(frozen=True)
class LogOutput:
    """Where our lines go, from which level, in which format."""

    stream: TextIO | None = None  # None: whatever sys.stdout is at the time
    threshold: int = logging.INFO
    renderer: Any = None


_output = LogOutput(renderer=_renderer("json"))
_write_lock = threading.Lock()  # lines of other threads (a broker client's) must not interleave


def log_output() -> LogOutput:
    return _output


def set_log_output(output: LogOutput) -> None:
    global _output
    flush_logs()  # lines already logged go where they were meant to
    _output = output
    _filter_levels(output.threshold)


# --- the processors of our loggers ---------------------------------------------------------


_second_text: list[Any] = [-1, ""]


def _utc_timestamp(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    """``timestamp``: ISO 8601 UTC with microseconds (``2026-01-02T03:04:05.123456Z``)."""
    now = time.time()
    second = int(now)
    if second != _second_text[0]:  # the date and time are formatted once per second
        _second_text[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    event["timestamp"] = f"{_second_text[1]}.{int((now - second) * 1e6):06d}Z"
    return event


def _render(logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
    return _output.renderer(logger, name, event)


_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    _utc_timestamp,
]
_PROCESSORS: list[Any] = [
    *_SHARED_PROCESSORS,
    structlog.processors.format_exc_info,
    _render,
]


#: Seconds a line logged on the event loop may wait to be written with later ones.
FLUSH_DELAY = 0.1
#: Lines held at most; more are written at once.
_MAX_HELD_LINES = 256


class _LineWriter:
    """The end of the chain: writes rendered lines together, at most FLUSH_DELAY late.

    A line logged where no event loop runs (start-up, another thread) is
    written at once, after any lines still held, so the output stays in order.
    """

    def __init__(self) -> None:
        self._held: list[str] = []
        #: The loop whose timer will write the held lines.
        self._flushing_on: asyncio.AbstractEventLoop | None = None

    def msg(self, message: str) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with _write_lock:
            self._held.append(message)
            if loop is not None and len(self._held) < _MAX_HELD_LINES:
                if loop is self._flushing_on:
                    return
                if self._flushing_on is None or self._flushing_on.is_closed():
                    self._flushing_on = loop
                    loop.call_later(FLUSH_DELAY, self.flush)
                    return
            # No loop here, too many lines, or another thread's loop holds them.
            self._write_held()

    def flush(self) -> None:
        with _write_lock:
            self._flushing_on = None
            self._write_held()

    def _write_held(self) -> None:
        if not self._held:
            return
        text = "\n".join(self._held) + "\n"
        self._held.clear()
        stream = _output.stream or sys.stdout
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            pass  # the output is gone (a closed pipe or file): there is nowhere to say so

    debug = info = warning = warn = error = exception = critical = fatal = msg


class _WriterHandler(logging.Handler):
    """Sends stdlib records, rendered by its formatter, through our line writer."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _WRITER.msg(self.format(record))
        except Exception:
            self.handleError(record)


#: The class of our loggers: structlog's, subclassed so that its methods can follow the
#: configured level without touching structlog's own classes (shared in the process).
_BoundLogger: Any = type(
    "UnifrostLogger", (structlog.make_filtering_bound_logger(logging.DEBUG),), {}
)
#: The methods whose level decides whether they log (``exception`` calls ``error``).
_LEVEL_METHODS = ("debug", "info", "msg", "warning", "warn", "error", "critical", "fatal", "log")
_WRITER = _LineWriter()


def _filter_levels(threshold: int) -> None:
    """Below ``threshold`` our loggers' methods become structlog's no-ops.

    A line the level drops then costs one call, not a trip through the
    processors to be dropped there (a line per request at ``warning``).
    """
    filtering = structlog.make_filtering_bound_logger(threshold)
    for name in _LEVEL_METHODS:
        for method in (name, f"a{name}"):
            setattr(_BoundLogger, method, getattr(filtering, method))
    for method in ("is_enabled_for", "get_effective_level"):
        setattr(_BoundLogger, method, getattr(filtering, method))


_filter_levels(_output.threshold)


def flush_logs() -> None:
    """Write the lines still held (on the event loop they wait up to FLUSH_DELAY)."""
    _WRITER.flush()


atexit.register(flush_logs)


def get_logger(name: str = "unifrost") -> Any:
    """A logger for our events (``name`` only tells readers of the code whose it is)."""
    return _BoundLogger(_WRITER, _PROCESSORS, {})


# --- configuration ---------------------------------------------------------------------------


def configure_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Send our events and the stdlib root logger's records through one renderer."""
    renderer = _renderer(fmt)
    threshold = _LEVELS[level.upper()]
    set_log_output(LogOutput(stream=stream, threshold=threshold, renderer=renderer))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED_PROCESSORS, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _WriterHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)


def quiet_library_logs(*names: str) -> None:
    """Silence broker client libraries that log every retry during an outage.

    Drivers report outages as ``broker.*`` events instead. A level the operator
    set (or the embedding application) is left alone.
    """
    for name in names:
        library_log = logging.getLogger(name)
        if library_log.level == logging.NOTSET:
            library_log.setLevel(logging.CRITICAL)
