"""Structured logs: JSON lines when stdout is not a terminal (or when asked), readable text otherwise."""

from __future__ import annotations

import contextvars
import itertools
import logging
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# A request id is this process's random half and a counter: unique across the nodes' logs, without asking
# the kernel for random bytes on every request and every websocket command (a city's pings, each second).
_PROCESS_PART = secrets.token_hex(4)
_NEXT = itertools.count(1)


def new_request_id() -> str:
    """16 hex characters, as a client's own X-Request-ID may be."""
    return f"{_PROCESS_PART}{next(_NEXT) & 0xFFFFFFFF:08x}"


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class OneLineRetries(logging.Filter):
    """A library's warnings about retrying a dependency (asyncpg refilling its pool during an outage) come
    with a traceback each time; an operator needs the reason on one line, not a traceback a second."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and record.levelno < logging.ERROR:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(level: str = "INFO", fmt: str = "auto") -> bool:
    """Logs to stdout, as JSON lines or text; returns whether JSON. Python warnings become log lines too,
    and the embedded PostgreSQL's chatty start-up (multi-line command dumps) is shown only at DEBUG."""
    handler = logging.StreamHandler(sys.stdout)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    if use_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log duplicates ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    quiet = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, OneLineRetries) for f in quiet.filters):
        quiet.addFilter(OneLineRetries())
    logging.getLogger("pgserver").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    logging.captureWarnings(True)
    return use_json


class Throttle:
    """At most one `ready()` per `interval_s` of monotonic time: for lines that would otherwise repeat once
    per request during an outage. `suppressed` counts the calls that were not ready since the last one."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self.suppressed = 0

    def ready(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.interval_s
        self.suppressed = 0
        return True
