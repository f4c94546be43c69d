"""What edge-seg tells its operator: log records through the standard ``logging`` module, and
the one progress display.

Under systemd what a device printed is all its owner sees afterwards, so every line is a
record with a level and a short stable event name (``run.start``, ``source.lost``,
``drift.below``, ``save.published``, ...) and the figures behind it. Two renderings:

- ``text`` (the default): the lines people read, exactly as the commands print them:
  information on stdout, and on stderr ``warning: ...``, ``error: ...`` and ``note: ...``
  (scripts and tests match those lines).
- ``json``: one JSON object per line -- ``time`` (ISO 8601, UTC), ``level``, ``event``,
  ``message`` and the event's fields -- for journald and log shippers. Information stays on
  stdout and the rest on stderr, so ``2>/dev/null`` keeps meaning the same thing.

The runtime's parts report through a ``log`` callback that takes one string (tests collect
or silence them); ``Line`` lets such a string also carry its event and fields, and
``callback`` turns the callback's strings into records.
"""
from __future__ import annotations

import json
import logging
import math
import sys
from datetime import datetime, timezone
from typing import Callable, Iterable

LOGGER_NAME = "edge_seg"
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
# the prefixes a callback line may start with, and the level each stands for
PREFIXES = {"warning": logging.WARNING, "error": logging.ERROR, "note": logging.INFO,
            "debug": logging.DEBUG}
_CORE_KEYS = ("time", "level", "event", "message")

_state = {"format": "text", "configured": False}


def finite(value):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python numbers (JSON has no NaN,
    and a browser's JSON.parse rejects it)."""
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Line(str):
    """A message for a ``log`` callback that also names its event and fields: still a plain
    string to a callback that only prints or collects it."""

    def __new__(cls, event: str, text: str, **fields):
        line = super().__new__(cls, text)
        line.event, line.fields = event, fields
        return line


class _Handler(logging.Handler):
    """Writes to the process's current stdout/stderr at each record: click's test runner
    and pytest swap them, and a handler holding the streams of its creation would write
    to closed files."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if _to_stderr(record) else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):  # a closed pipe or stream: nobody reads
            pass
        except Exception:  # noqa: BLE001  (logging's own policy: never raise from emit)
            self.handleError(record)


def _prefix(record: logging.LogRecord) -> str | None:
    prefix = getattr(record, "prefix", None)
    if prefix is None and record.levelno != logging.INFO:
        prefix = "error" if record.levelno >= logging.ERROR else logging.getLevelName(record.levelno).lower()
    return prefix


def _to_stderr(record: logging.LogRecord) -> bool:
    return getattr(record, "stderr", False) or _prefix(record) is not None


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = _prefix(record)
        message = record.getMessage()
        return f"{prefix}: {message}" if prefix else message


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json_line(record.levelno, getattr(record, "event", None) or "log",
                         record.getMessage(), record.created, **(getattr(record, "fields", None) or {}))


def json_line(level: int, event: str, message: str, created: float | None = None, **fields) -> str:
    """One record as the json format writes it."""
    when = datetime.now(timezone.utc) if created is None else datetime.fromtimestamp(created, timezone.utc)
    out = {"time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
           "level": logging.getLevelName(level).lower(), "event": event, "message": message}
    # the record's own time, level, event and message win over a field of the same name
    out.update({k: v for k, v in finite(fields).items() if k not in _CORE_KEYS})
    return json.dumps(out, separators=(",", ":"), default=str)


def configure(level: str = "info", fmt: str = "text") -> logging.Logger:
    """Set the level and format of every edge-seg record (the ``edge-seg`` group's
    ``--log-level`` and ``--log-format``); called again, it replaces the earlier choice."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: choose one of {', '.join(FORMATS)}")
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler = _Handler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False  # a host application's root handlers would print every line twice
    _state.update(format=fmt, configured=True)
    return logger


def logger() -> logging.Logger:
    """The edge-seg logger; configured with the defaults when the runtime is used from
    Python without the command line, so its lines still reach the terminal."""
    if not _state["configured"]:
        configure()
    return logging.getLogger(LOGGER_NAME)


def is_json() -> bool:
    return _state["format"] == "json"


def emit(level: int, event: str, message: str, *, prefix: str | None = None,
         stderr: bool = False, **fields) -> None:
    """One record. ``prefix`` names the text line's ``note:``-style prefix, ``stderr`` sends
    an information line to stderr in either format (where the commands always put it)."""
    logger().log(level, "%s", message,
                 extra={"event": event, "fields": fields, "prefix": prefix, "stderr": stderr})


def info(event: str, message: str, **fields) -> None:
    emit(logging.INFO, event, message, **fields)


def note(event: str, message: str, **fields) -> None:
    """Information about the work rather than its result: ``note: ...`` on stderr."""
    emit(logging.INFO, event, message, prefix="note", **fields)


def status(event: str, message: str, **fields) -> None:
    """What the work is doing, on stderr without a prefix (stdout keeps the results)."""
    emit(logging.INFO, event, message, stderr=True, **fields)


def warning(event: str, message: str, **fields) -> None:
    emit(logging.WARNING, event, message, **fields)


def error(event: str, message: str, **fields) -> None:
    emit(logging.ERROR, event, message, **fields)


def lines(event: str, message_lines: list[str], **fields) -> None:
    """A block people read line by line (a banner, a summary, a table): line by line in
    text, one record in json (the lines joined, the fields attached)."""
    if is_json():
        info(event, "\n".join(m.strip() for m in message_lines if m.strip()), **fields)
    else:
        for m in message_lines:
            info(event, m)


def callback(event: str) -> Callable[[str], None]:
    """A ``log`` callback for the runtime's parts: a string starting with ``warning:``,
    ``error:`` or ``note:`` becomes a record of that level without the prefix; a ``Line``
    names its own event and fields, any other string is information under ``event``."""
    def log(message: str) -> None:
        head, sep, rest = str(message).partition(": ")
        level = PREFIXES.get(head) if sep else None
        emit(logging.INFO if level is None else level,
             getattr(message, "event", event), rest if level is not None else str(message),
             prefix="note" if head == "note" and sep else None,
             stderr=level is None, **getattr(message, "fields", {}))
    return log


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             quiet: bool = False, **options):
    """The one progress display (tqdm, on stderr) for long work. Off when stderr is not a
    terminal (a log file or journald would keep every redraw), with ``-q``, with
    ``--log-format json`` and above ``--log-level info``; a disabled bar still iterates,
    and ``update`` on it does nothing."""
    from tqdm import tqdm
    off = (quiet or is_json() or not logger().isEnabledFor(logging.INFO)
           or not _is_terminal(sys.stderr))
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=off,
                **{"dynamic_ncols": True, **options})


def counter(desc: str, quiet: bool = False, **options) -> Callable[[int, int], None]:
    """The progress display for work that reports ``(done, total)`` to a callback; the bar
    opens at the first call and closes when ``done`` reaches ``total``."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(total=total, desc=desc, quiet=quiet, **options)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return update


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
