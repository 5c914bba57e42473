"""The bot's HTTP gateway (issue 15): any web application sends codes, messages, posts
and broadcasts through a bot with one HTTP call.

* :mod:`~veil.client.gateway.app`: the FastAPI application (routes, auth), its OpenAPI
  3.1 document generated from the code;
* :mod:`~veil.client.gateway.shared`: :class:`Gateway`, what the routes share (the send
  limit, the bounded network call);
* :mod:`~veil.client.gateway.handlers`: error handlers and middleware (413, metrics);
* :mod:`~veil.client.gateway.answering`: a POST's answer, once per ``Idempotency-Key``;
* :mod:`~veil.client.gateway.responses`: the error answers each route documents;
* :mod:`~veil.client.gateway.models`: request and answer bodies;
* :mod:`~veil.client.gateway.tokens`: bearer tokens with scopes, stored hashed;
* :mod:`~veil.client.gateway.idempotency`: ``Idempotency-Key`` answers, persisted;
* :mod:`~veil.client.gateway.problems`: RFC 9457 problem+json;
* :mod:`~veil.client.gateway.metrics`: Prometheus metrics;
* :mod:`~veil.client.gateway.serve`: hypercorn's trio worker in the bot's process;
* :mod:`~veil.client.gateway.store`: ``gateway.sqlite`` in the bot's directory.

Importing this package imports FastAPI; the ``veil`` command imports it only for
``veil bot serve`` and ``veil bot token``.
"""

from __future__ import annotations

from veil.client.gateway.app import Gateway, create_app
from veil.client.gateway.serve import Listen, check_listen, parse_listen, serve_gateway
from veil.client.gateway.store import GatewayStore
from veil.client.gateway.tokens import SCOPES, TokenBook, TokenInfo

__all__ = [
    "SCOPES",
    "Gateway",
    "GatewayStore",
    "Listen",
    "TokenBook",
    "TokenInfo",
    "check_listen",
    "create_app",
    "parse_listen",
    "serve_gateway",
]
