"""Structured logs for the node: one line per event on stderr, key=value or JSON.

Design note
-----------
A log line is an event name and a few fields: ``log_event(log, logging.INFO,
"listening", address="127.0.0.1:4000")`` prints::

    ts=2025-01-01T12:00:00.123Z level=info logger=veil.node event=listening address=...

(or the same as one JSON object with ``format = "json"``). Plain ``log.info("...")``
calls from other modules print their message as the event. Values that hold spaces,
quotes or ``=`` are quoted, so a line always splits back into its fields.

What is never logged (a log is something operators ship elsewhere):

* message contents, request payloads, packet bytes, and any key or seed;
* clients' addresses. Only a guard could learn a client's address at all, and an
  operator who keeps those in logs makes every guard a de-anonymization list, so the
  HTTP server logs no peer address at INFO or above: connection-level events carry none,
  and the per-connection DEBUG lines say only ``peer=<redacted>``. Relay next-hop
  addresses (other nodes, public in the directory) may appear in warnings.

:func:`log_event` checks the level before building anything, so a DEBUG call on the hot
path costs one method call when DEBUG is off.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["configure_logging", "log_event"]

_FIELDS = "veil_fields"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log ``event`` with ``fields`` if ``logger`` is enabled for ``level``."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields}, stacklevel=2)


def _timestamp(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def _kv_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text == "" or any(c in text for c in ' "=\n\r\t\\'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... event=... key=value ...``, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={_timestamp(record.created)}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_kv_value(record.getMessage())}",
        ]
        fields = getattr(record, _FIELDS, None)
        if fields:
            parts.extend(f"{k}={_kv_value(v)}" for k, v in fields.items())
        if record.exc_info:
            parts.append(f"exc={_kv_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the same fields as :class:`KeyValueFormatter`."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, _FIELDS, None)
        if fields:
            for k, v in fields.items():
                doc.setdefault(k, v if isinstance(v, int | float | bool | None) else str(v))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


def configure_logging(level: str = "info", fmt: str = "kv", stream: TextIO | None = None) -> None:
    """Send the ``veil`` loggers to ``stream`` (stderr) at ``level`` in format ``fmt``.

    Replaces handlers set by an earlier call, so it may be called again (tests).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger("veil")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    root.propagate = False
