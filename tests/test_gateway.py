"""The gateway's parts without a network: tokens (hashed, scoped, revoked), idempotency
keys (replay, other body, running, freed after a retry-later answer), the listen
address policy, and the OpenAPI document generated from the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.client.errors import InvalidArgument
from veil.client.gateway import GatewayStore, TokenBook, check_listen, parse_listen
from veil.client.gateway.idempotency import (
    Conflict,
    IdempotencyBook,
    Mismatch,
    Stored,
    request_digest,
)


def test_tokens_are_stored_hashed_scoped_and_revocable(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path)
    book = TokenBook(store)
    token, info = book.create(["codes", "read", "codes"], "web")
    assert info.scopes == ("codes", "read")
    assert book.verify(token) == info
    assert book.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert book.verify("vgw_nothing_here") is None and book.verify("Bearer x") is None
    raw = b"".join(bytes(r[0]) for r in store.all("SELECT digest FROM tokens"))
    assert token.split("_", 2)[2].encode() not in raw
    assert token.encode() not in (tmp_path / "gateway.sqlite").read_bytes()
    with pytest.raises(InvalidArgument):
        book.create(["admin"])
    with pytest.raises(InvalidArgument):
        book.create([])
    assert book.revoke(info.token_id) and not book.revoke(info.token_id)
    assert book.verify(token) is None
    assert [t.revoked_ms is not None for t in book.list()] == [True]
    assert (tmp_path / "gateway.sqlite").stat().st_mode & 0o077 == 0
    store.close()


def test_idempotency_keys(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path)
    book = IdempotencyBook(store)
    one = request_digest("POST", "/v1/codes", b'{"a":1}')
    other = request_digest("POST", "/v1/codes", b'{"a":2}')
    assert book.begin("t1", "k", one) is None
    with pytest.raises(Conflict):
        book.begin("t1", "k", one)
    with pytest.raises(Mismatch):
        book.begin("t1", "k", other)
    assert book.begin("t2", "k", other) is None  # keys are per token
    book.finish("t1", "k", Stored(201, b'{"ticket":"x"}', {"content-type": "application/json"}))
    assert book.begin("t1", "k", one) == Stored(
        201, b'{"ticket":"x"}', {"content-type": "application/json"}
    )
    # A "retry later" answer frees the key: the retry runs.
    book.finish("t2", "k", Stored(503, b"{}", {}))
    assert book.begin("t2", "k", other) is None
    # A process that died mid-request leaves "running": cleared at the next start.
    store.close()
    store = GatewayStore(tmp_path)
    IdempotencyBook(store)
    assert store.one("SELECT COUNT(*) FROM idempotency WHERE state = 'running'") == (0,)
    assert store.one("SELECT COUNT(*) FROM idempotency WHERE state = 'done'") == (1,)
    store.close()


@pytest.mark.parametrize(
    ("listen", "ok"),
    [
        ("127.0.0.1:8787", True),
        ("localhost:1", True),
        ("[::1]:8787", True),
        ("0.0.0.0:8787", False),
        ("192.168.1.5:80", False),
        ("[::]:8787", False),
        ("example.com:443", False),
    ],
)
def test_a_public_address_needs_tls_or_an_explicit_flag(listen: str, ok: bool) -> None:
    address = parse_listen(listen)
    if ok:
        check_listen(address, certfile=None, keyfile=None, allow_public=False)
    else:
        with pytest.raises(InvalidArgument, match="not a loopback"):
            check_listen(address, certfile=None, keyfile=None, allow_public=False)
        check_listen(address, certfile="c.pem", keyfile="k.pem", allow_public=False)
        check_listen(address, certfile=None, keyfile=None, allow_public=True)
    with pytest.raises(InvalidArgument):
        check_listen(address, certfile="c.pem", keyfile=None, allow_public=True)


@pytest.mark.parametrize("bad", ["8787", "host:", ":80", "h:99999", "h:x"])
def test_bad_listen(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_listen(bad)


def test_the_openapi_document_is_generated_and_valid(tmp_path: Path) -> None:
    from openapi_spec_validator import validate

    from veil.client.gateway import Gateway, create_app

    class FakeBot:  # the document needs no bot behind it
        id = "x"

    app = create_app(Gateway(FakeBot(), GatewayStore(tmp_path)))  # type: ignore[arg-type]
    doc = app.openapi()
    validate(doc)  # type: ignore[arg-type]
    assert doc["openapi"].startswith("3.1")
    codes = doc["paths"]["/v1/codes"]["post"]
    assert set(codes["responses"]) >= {"201", "400", "401", "403", "409", "422", "429", "503"}
    problem = codes["responses"]["429"]["content"]["application/problem+json"]
    assert problem["schema"]["$ref"] == "#/components/schemas/ProblemBody"
    assert "Retry-After" in codes["responses"]["429"]["headers"]
    assert {"bearer", "HTTPBearer"} & set(doc["components"]["securitySchemes"])
