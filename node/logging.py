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

What peers send is not the operator's to log line by line: anyone can open a link and
send junk, and a WARNING per bad frame once made 6,288 lines in 4 minutes on one node.
:class:`PeerWarnings` is the one way a peer's bad input (or the traceback of a bug it
set off, which it may set off again and again) reaches the log: every event is counted
(a metric, by cause), and lines are rate limited, per peer and cause (the first at once,
then at most one per ``interval_s`` saying how many were left out) and for the whole
node (at most ``max_lines`` per ``interval_s``, so that a peer with many addresses gets
no more). The peer's address only keys the limit and is never written (see above); a
line about a next hop may name it, a relay's address being public.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Hashable
from typing import Any, TextIO

__all__ = ["PeerWarnings", "configure_logging", "log_event"]

_FIELDS = "veil_fields"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log ``event`` with ``fields`` if ``logger`` is enabled for ``level``."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields}, stacklevel=2)


class PeerWarnings:
    """Log lines for peers' bad input (WARNING) and for the bugs it sets off (ERROR, with
    the traceback): counted always, logged rate limited.

    ``count(cause)`` is called for every :meth:`warn` (a metric; ``cause`` is the event
    name, a fixed string of ours). A line is written for the first event of a cause from
    a peer, then at most once per ``interval_s`` for that peer and cause, with
    ``suppressed=N`` when N were left out; and at most ``max_lines`` lines per
    ``interval_s`` in all (left out lines count as suppressed for their peer). At most
    ``max_peers`` (cause, peer) pairs are remembered, the oldest dropped first: a pair
    that comes back is new again, and the overall cap still holds. Called only when a
    peer breaks the protocol (or a bug breaks on its input), never per good packet.
    """

    __slots__ = (
        "_clock",
        "_count",
        "_interval_s",
        "_lines",
        "_max_lines",
        "_max_peers",
        "_seen",
        "_window_end",
    )

    def __init__(
        self,
        *,
        count: Callable[[str], None] | None = None,
        interval_s: float = 60.0,
        max_lines: int = 20,
        max_peers: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self._interval_s = interval_s
        self._max_lines = max_lines
        self._max_peers = max_peers
        self._clock = clock
        #: (cause, peer) -> [when its next line may be written, lines left out since].
        self._seen: dict[tuple[str, Hashable], list[Any]] = {}
        self._window_end = -1.0
        self._lines = 0

    def warn(
        self,
        logger: logging.Logger,
        event: str,
        source: Hashable,
        *,
        level: int = logging.WARNING,
        exc_info: bool = False,
        **fields: Any,
    ) -> None:
        """Count ``event`` from the peer ``source`` and log it at ``level`` unless rate
        limited (``exc_info``: with the exception being handled, for a bug that a peer's
        input set off).

        ``source`` only keys the limit (a client address, a relay's host and port): it
        is not logged; put a relay's public address in ``fields`` for the line to show.
        """
        if self._count is not None:
            self._count(event)
        if not logger.isEnabledFor(level):
            return
        now = self._clock()
        key = (event, source)
        entry = self._seen.get(key)
        if entry is None:
            entry = self._seen[key] = [now, 0]
            if len(self._seen) > self._max_peers:
                del self._seen[next(iter(self._seen))]  # the oldest pair
        if now < entry[0] or not self._take_line(now):
            entry[1] += 1
            return
        if entry[1]:
            fields["suppressed"] = entry[1]
        entry[0], entry[1] = now + self._interval_s, 0
        logger.log(level, event, exc_info=exc_info, extra={_FIELDS: fields}, stacklevel=2)

    def _take_line(self, now: float) -> bool:
        """One line of the node's budget for this window, if any is left."""
        if now >= self._window_end:
            self._window_end = now + self._interval_s
            self._lines = 0
        if self._lines >= self._max_lines:
            return False
        self._lines += 1
        return True


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
