"""Onion packets: fixed-size, KEM-Sphinx style, with layered replies.

Design note
===========

Session's onion requests shrink at every hop and carry the reply back as one blob, so a
hop learns its position and a watcher can link the links. A veil packet keeps one size
from the first hop to the destination, and its reply is re-encrypted on every link.

One module per job, each importing only those above it in this list:

* :mod:`~veil.onion.packet.wire`: the layout (``version | alpha | gamma | beta |
  body``), its sizes and size classes, and what both sides share (the key schedule,
  framing, the body's AEAD, address packing);
* :mod:`~veil.onion.packet.hop`: a hop's side, :func:`process_packet` and the
  :class:`ReplyContext` that answers (:class:`Relay`, :class:`Deliver`,
  :class:`BadBody`);
* :mod:`~veil.onion.packet.sender`: a client's side, :func:`build_packet` (with
  :func:`prepare_hop`'s :class:`HopKeys`) and the :class:`ReplyOpener` of its reply
  (:class:`Hop`, :class:`HopError`).

This module does no I/O: :func:`build_packet` and :func:`process_packet` take bytes and
return bytes or events; the node enforces the window and the replay cache
(:mod:`veil.onion.replay`).

The two sides share the layout's private names (``wire``'s underscore names); they are
this package's own, imported by ``hop`` and ``sender`` and by nothing outside it.
"""

from __future__ import annotations

from .hop import (
    BAD_BODY_MESSAGE,
    BAD_BODY_STATUS,
    BadBody,
    Deliver,
    Relay,
    ReplyContext,
    process_packet,
)
from .sender import Hop, HopError, HopKeys, ReplyOpener, build_packet, prepare_hop
from .wire import (
    ALPHA_LEN,
    BETA_LEN,
    BLOCK,
    CMD_DELIVER,
    CMD_RELAY,
    GAMMA_LEN,
    HEADER_LEN,
    MAX_HOPS,
    MAX_PACKET_LEN,
    MAX_PAYLOAD,
    MAX_REPLY_LEN,
    MAX_REPLY_PAYLOAD,
    SIZE_CLASSES,
    VERSION,
    size_class_for,
)

__all__ = [
    "ALPHA_LEN",
    "BAD_BODY_MESSAGE",
    "BAD_BODY_STATUS",
    "BETA_LEN",
    "BLOCK",
    "CMD_DELIVER",
    "CMD_RELAY",
    "GAMMA_LEN",
    "HEADER_LEN",
    "MAX_HOPS",
    "MAX_PACKET_LEN",
    "MAX_PAYLOAD",
    "MAX_REPLY_LEN",
    "MAX_REPLY_PAYLOAD",
    "SIZE_CLASSES",
    "VERSION",
    "BadBody",
    "Deliver",
    "Hop",
    "HopError",
    "HopKeys",
    "Relay",
    "ReplyContext",
    "ReplyOpener",
    "build_packet",
    "prepare_hop",
    "process_packet",
    "size_class_for",
]
