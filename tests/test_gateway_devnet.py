"""The bot's HTTP gateway (issue 15) against real processes: a devnet, ``veil bot serve``
as a subprocess, and a recipient client reading its inbox.

The whole 2FA flow through HTTP (send, a wrong code, the right one, a reused code, the
status, a cancel), every error case (401, 403, 400 and 422 problem+json naming the
field, 429 with Retry-After, idempotency replay, 422 and 409, 503 with Retry-After when
the network is unreachable), messages, channel posts, subscribers and a broadcast, the
metrics, token revocation, the public-address refusal; the OpenAPI document validated
with openapi-spec-validator, and schemathesis run against the live gateway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from tests.devnetutil import devnet
from veil.client.devnet import Devnet
from veil.client.home import Home
from veil.client.veil_client import open_client
from veil.onion.keys import Account

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
PROBLEM = "application/problem+json"
CALL_TIMEOUT_S = 4.0


def veil(home: Path, network: Path) -> list[str]:
    return [sys.executable, "-m", "veil.client", "--home", str(home), "--network", str(network)]


def run_veil(home: Path, network: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*veil(home, network), *args], capture_output=True, text=True, timeout=60, check=False
    )


def make_token(home: Path, network: Path, *scopes: str) -> str:
    args = [a for s in scopes for a in ("--scope", s)]
    done = run_veil(home, network, "--json", "bot", "token", "create", *args)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["token"])


@dataclass
class Gateway:
    url: str
    bot_id: str
    home: Path
    network: Path
    process: subprocess.Popen[str]
    full: str  # every scope
    read: str  # read only
    recipient_home: Path
    recipient: Account

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def start_serve(home: Path, network: Path, *extra: str) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen(
        [
            *veil(home, network),
            "--json",
            "bot",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "Gateway test",
            "--call-timeout",
            str(CALL_TIMEOUT_S),
            "--messages-per-minute",
            "3",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        raise AssertionError(f"veil bot serve did not start: {process.stderr.read()}")  # type: ignore[union-attr]
    started = json.loads(line)
    bind = started["listen"][0]
    return process, "http://" + bind.removeprefix("http://"), started["bot"]


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with devnet(tmp_path_factory.mktemp("gateway"), nodes=5, swarm_size=3) as running:
        yield running


@pytest.fixture(scope="module")
def gw(net: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gw-homes")
    home = root / "bot"
    Home(home).save_identity(Account.generate())
    recipient_home = root / "recipient"
    recipient = Account.generate()
    Home(recipient_home).save_identity(recipient)
    network = net.network_file
    created = run_veil(home, network, "channel", "create", "news")
    assert created.returncode == 0, created.stderr
    full = make_token(home, network, "codes", "messages", "channels", "broadcast", "read")
    read = make_token(home, network, "read")
    process, url, bot_id = start_serve(home, network, "--topic", "news")
    try:
        yield Gateway(url, bot_id, home, network, process, full, read, recipient_home, recipient)
    finally:
        stop(process)


async def read_texts(gw: Gateway, count: int, timeout: float = 60) -> list[str]:
    """The next ``count`` messages from the bot in the recipient's inbox."""
    texts: list[str] = []
    async with open_client(gw.recipient_home, gw.network) as client:
        with trio.fail_after(timeout):
            async for message in client.messages():
                if str(message.sender) == gw.bot_id:
                    texts.append(message.text)
                    if len(texts) == count:
                        return texts
    raise AssertionError("unreachable")


def code_in(text: str) -> str:
    match = re.match(r"(\S+) is your (\S+) code from", text)
    assert match, text
    return match.group(1)


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    if field is not None:
        assert body["field"] == field, body
    return body  # type: ignore[no-any-return]


# --- the 2FA flow ---------------------------------------------------------------------------


async def test_the_whole_2fa_flow_through_the_gateway(gw: Gateway) -> None:
    to = str(gw.recipient.id)
    with gw.client(gw.full) as http:
        sent = http.post("/v1/codes", json={"to": to, "purpose": "login"})
        assert sent.status_code == 201, sent.text
        ticket = sent.json()["ticket"]
        assert sent.json()["status"] == "pending"
        [text] = await read_texts(gw, 1)
        assert "login code from Gateway test" in text
        code = code_in(text)
        wrong = "0" * len(code) if code != "0" * len(code) else "1" * len(code)
        checked = http.post(f"/v1/codes/{ticket}/check", json={"code": wrong})
        assert checked.status_code == 200
        assert checked.json() == {"ticket": ticket, "status": "pending", "attempts_left": 4}
        approved = http.post(f"/v1/codes/{ticket}/check", json={"code": code})
        assert approved.json()["status"] == "approved"
        assert_problem(http.post(f"/v1/codes/{ticket}/check", json={"code": code}), 409)
        status = http.get(f"/v1/codes/{ticket}")
        assert status.json()["status"] == "approved"
        # A second ticket, cancelled: its code is no good afterwards.
        second = http.post("/v1/codes", json={"to": to, "purpose": "login", "digits": 8})
        assert second.status_code == 201
        [text2] = await read_texts(gw, 1)
        assert len(code_in(text2)) == 8
        ticket2 = second.json()["ticket"]
        canceled = http.post(f"/v1/codes/{ticket2}/cancel")
        assert canceled.json()["status"] == "canceled"
        after = http.post(f"/v1/codes/{ticket2}/check", json={"code": code_in(text2)})
        assert after.json()["status"] == "canceled"
        assert_problem(http.get("/v1/codes/tk_" + "A" * 22), 404)


async def test_auth_401_and_403(gw: Gateway) -> None:
    body = {"to": str(gw.recipient.id), "purpose": "login"}
    with gw.client() as anonymous:
        refused = anonymous.post("/v1/codes", json=body)
        assert_problem(refused, 401)
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/healthz").json() == {"status": "ok", "bot": gw.bot_id}
        assert_problem(anonymous.get("/metrics"), 401)
    with gw.client("vgw_000000000000_" + "x" * 43) as wrong:
        assert_problem(wrong.post("/v1/codes", json=body), 401)
    with gw.client(gw.read) as reader:
        forbidden = assert_problem(reader.post("/v1/codes", json=body), 403)
        assert "codes" in forbidden["title"]
        assert_problem(reader.post("/v1/messages", json={**body, "text": "hi"}), 403)
        assert reader.get("/metrics").text.count("veil_gateway_requests_total") > 0


async def test_bad_requests_are_problems_naming_the_field(gw: Gateway) -> None:
    to = str(gw.recipient.id)
    with gw.client(gw.full) as http:
        bad_json = http.post(
            "/v1/codes", content=b'{"to": ', headers={"content-type": "application/json"}
        )
        assert_problem(bad_json, 400)
        assert_problem(
            http.post("/v1/codes", json={"to": to, "purpose": "login", "digits": 3}), 422, "digits"
        )
        assert_problem(http.post("/v1/codes", json={"to": "nobody", "purpose": "login"}), 422, "to")
        assert_problem(http.post("/v1/codes", json={"to": to}), 422, "purpose")
        assert_problem(http.post("/v1/codes", json={"to": to, "purpose": "Log In"}), 422, "purpose")
        assert_problem(
            http.post("/v1/codes", json={"to": to, "purpose": "login", "ttl": 3600}), 422, "ttl"
        )
        assert_problem(http.post("/v1/messages", json={"to": to, "text": ""}), 422, "text")
        assert_problem(http.post("/v1/codes/nope/check", json={"code": "1"}), 422, "ticket")
        big = http.post("/v1/messages", json={"to": to, "text": "x" * 70_000})
        assert_problem(big, 413)
        assert_problem(http.get("/v1/nothing"), 404)
        assert http.get("/healthz").status_code == 200  # still serving


async def test_429_with_retry_after_at_the_code_limit(gw: Gateway) -> None:
    to = str(Account.generate().id)  # a fresh recipient: its own limit
    with gw.client(gw.full) as http:
        for _ in range(5):
            assert http.post("/v1/codes", json={"to": to, "purpose": "signup"}).status_code == 201
        limited = http.post("/v1/codes", json={"to": to, "purpose": "signup"})
        body = assert_problem(limited, 429)
        assert int(limited.headers["retry-after"]) > 0
        assert body["retry_after"] == int(limited.headers["retry-after"])


async def test_429_with_retry_after_at_the_message_limit(gw: Gateway) -> None:
    to = str(Account.generate().id)
    with gw.client(gw.full) as http:
        for i in range(3):
            sent = http.post("/v1/messages", json={"to": to, "text": f"n{i}", "ttl": 60})
            assert sent.status_code == 201, sent.text
        limited = http.post("/v1/messages", json={"to": to, "text": "one too many"})
        assert_problem(limited, 429)
        assert 0 < int(limited.headers["retry-after"]) <= 60


async def test_idempotency_replay_and_other_body(gw: Gateway) -> None:
    to = str(Account.generate().id)
    with gw.client(gw.full) as http:
        key = {"Idempotency-Key": "order-42"}
        first = http.post("/v1/codes", json={"to": to, "purpose": "pay"}, headers=key)
        assert first.status_code == 201
        again = http.post("/v1/codes", json={"to": to, "purpose": "pay"}, headers=key)
        assert again.status_code == 201 and again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        other = http.post("/v1/codes", json={"to": to, "purpose": "pay2"}, headers=key)
        assert_problem(other, 422, "Idempotency-Key")
        # One ticket only was made (the replay sent nothing): the limit counts one send.
        for _ in range(4):
            assert http.post("/v1/codes", json={"to": to, "purpose": "pay"}).status_code == 201
        assert http.post("/v1/codes", json={"to": to, "purpose": "pay"}).status_code == 429
        # Keys are per token: the read token's key space is its own (and it gets 403).
    with gw.client(gw.read) as reader:
        assert_problem(
            reader.post("/v1/codes", json={"to": to, "purpose": "pay"}, headers=key), 403
        )


async def test_messages_channel_posts_subscribers_and_a_broadcast(gw: Gateway) -> None:
    to = str(gw.recipient.id)
    with gw.client(gw.full) as http:
        sent = http.post("/v1/messages", json={"to": to, "text": "hello from HTTP", "ttl": 600})
        assert sent.status_code == 201, sent.text
        assert len(sent.json()["hash"]) == 64
        assert await read_texts(gw, 1) == ["hello from HTTP"]
        post = http.post(
            "/v1/channels/news/posts", json={"text": "first post", "title": "Hi", "priority": 4}
        )
        assert post.status_code == 201, post.text
        assert post.json()["text"] == "first post" and post.json()["priority"] == 4
        assert_problem(http.post("/v1/channels/nosuch/posts", json={"text": "x"}), 404)
        # The recipient subscribes by messaging the bot; the bot answers.
        async with open_client(gw.recipient_home, gw.network) as person:
            await person.send(gw.bot_id, "/subscribe news")
        [answer] = await read_texts(gw, 1)
        assert "Subscribed to news" in answer
        page = http.get("/v1/subscribers", params={"topic": "news", "limit": 10}).json()
        assert page == {"topic": "news", "subscribers": [to], "next": None}
        cast = http.post("/v1/broadcasts", json={"topic": "news", "text": "extra! extra!"})
        assert cast.status_code == 202, cast.text
        job = cast.json()["id"]
        deadline = time.monotonic() + 30
        while True:
            progress = http.get(f"/v1/broadcasts/{job}").json()
            if progress["status"] == "done" or time.monotonic() > deadline:
                break
            await trio.sleep(0.2)
        assert progress["sent"] == 1 and progress["total"] == 1, progress
        assert await read_texts(gw, 1) == ["extra! extra!"]
        assert_problem(http.get("/v1/broadcasts/bc_" + "A" * 16), 404)


def test_keeps_serving_through_garbage_and_slow_clients(gw: Gateway) -> None:
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    slow = []
    for _ in range(50):  # clients that send half a request and stall
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"POST /v1/codes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
        slow.append(sock)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as garbage:
            garbage.sendall(b"\x00\xff\xfe NOT HTTP\r\n\r\n")
            answer = garbage.recv(1000)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4")
        with socket.create_connection((host, int(port)), timeout=10) as huge:
            huge.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000)
            answer = huge.recv(1000)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4")
        with gw.client() as http:
            for _ in range(5):
                assert http.get("/healthz").status_code == 200
    finally:
        for sock in slow:
            sock.close()


async def test_the_notices_bot_example(net: Devnet, tmp_path: Path) -> None:
    home = tmp_path / "notices"
    Home(home).save_identity(Account.generate())
    person_home = tmp_path / "person"
    Home(person_home).save_identity(Account.generate())
    bot = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples" / "notices_bot.py"),
            "--home",
            str(home),
            "--network",
            str(net.network_file),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert bot.stdout is not None and bot.stdin is not None
        bot_id = bot.stdout.readline().split()[-1]
        async with open_client(person_home, net.network_file) as person:
            await person.send(bot_id, "/start")
            texts: list[str] = []
            with trio.fail_after(30):
                async for message in person.messages():
                    texts.append(message.text)
                    if texts[-1].startswith("Subscribed"):
                        break
            bot.stdin.write("The pool is closed today.\n")
            bot.stdin.flush()
            with trio.fail_after(30):
                async for message in person.messages():
                    if message.text == "The pool is closed today.":
                        break
    finally:
        stop(bot)


async def test_openapi_document_is_valid_and_lists_every_route(gw: Gateway) -> None:
    from openapi_spec_validator import validate

    with gw.client() as http:
        doc = http.get("/openapi.json").json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/healthz",
        "/metrics",
        "/v1/messages",
        "/v1/codes",
        "/v1/codes/{ticket}/check",
        "/v1/codes/{ticket}",
        "/v1/codes/{ticket}/cancel",
        "/v1/channels/{channel}/posts",
        "/v1/broadcasts",
        "/v1/broadcasts/{job}",
        "/v1/subscribers",
    }


def test_schemathesis_against_the_running_gateway(gw: Gateway, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "schemathesis"
    assert exe.exists() or shutil.which("schemathesis")
    started = time.monotonic()
    done = subprocess.run(
        [
            str(exe if exe.exists() else "schemathesis"),
            "run",
            gw.url + "/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance",
            "-H",
            f"Authorization: Bearer {gw.full}",
            "--max-examples",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--max-time",
            "12",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
            "--report-dir",
            str(tmp_path),
            "--report",
            "junit",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert counts, done.stdout[-3000:]
    assert int(counts.group(1)) == int(counts.group(2)) >= 200
    junit = next(tmp_path.glob("*.xml")).read_text()
    operations = set(re.findall(r'testcase name="([A-Z]+ [^"]+)"', junit))
    assert len(operations) == 11, operations
    with gw.client() as http:
        assert http.get("/healthz").status_code == 200
    assert elapsed < 90


async def test_token_revoke_and_list(gw: Gateway) -> None:
    token = make_token(gw.home, gw.network, "read")
    with gw.client(token) as http:
        assert http.get("/v1/subscribers", params={"topic": "news"}).status_code == 200
        listed = run_veil(gw.home, gw.network, "--json", "bot", "token", "list")
        tokens = json.loads(listed.stdout)["tokens"]
        assert len(tokens) >= 3 and all("token" not in t for t in tokens)
        assert token not in listed.stdout
        token_id = token.split("_")[1]
        done = run_veil(gw.home, gw.network, "bot", "token", "revoke", token_id)
        assert done.returncode == 0, done.stderr
        assert_problem(http.get("/v1/subscribers", params={"topic": "news"}), 401)
    digests = (gw.home / "bot" / "gateway.sqlite").read_bytes()
    assert token.encode() not in digests and gw.full.split("_")[2].encode() not in digests


def test_a_public_address_is_refused_without_tls(gw: Gateway) -> None:
    done = run_veil(gw.home, gw.network, "bot", "serve", "--listen", "0.0.0.0:8787")
    assert done.returncode == 1
    assert "not a loopback address" in done.stderr


async def test_zz_unreachable_network_gives_503_and_running_key_409(
    gw: Gateway, net: Devnet
) -> None:
    """Last (the name). Every node frozen (SIGSTOP: connections open, nothing answers):
    a code request is answered 503 with Retry-After once the call timeout passes, never
    hangs, and a retry with the same key meanwhile gets 409. Then every node stopped
    (connections refused): 503 at once. Then they are started again."""
    nodes = [m for m in net.members if m.role == "node" and m.pid]
    to = str(Account.generate().id)
    body = {"to": to, "purpose": "login"}
    key = {"Idempotency-Key": "while-down"}
    async with httpx.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {gw.full}"}, timeout=60
    ) as http:
        for member in nodes:
            os.kill(member.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        try:
            results: dict[str, httpx.Response] = {}

            async def first() -> None:
                results["first"] = await http.post("/v1/codes", json=body, headers=key)

            started = time.monotonic()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.sleep(1.0)
                results["second"] = await http.post("/v1/codes", json=body, headers=key)
                assert (await http.get("/healthz")).status_code == 200  # still serving
            elapsed = time.monotonic() - started
            assert_problem(results["second"], 409)
            unavailable = assert_problem(results["first"], 503)
            assert int(results["first"].headers["retry-after"]) > 0
            assert unavailable["retry_after"] > 0
            assert CALL_TIMEOUT_S - 1 < elapsed < CALL_TIMEOUT_S + 5
        finally:
            for member in nodes:
                os.kill(member.pid, signal.SIGCONT)  # type: ignore[arg-type]
        for member in nodes:
            net.stop_node(member)
        try:
            # The key was freed (a 503 is not kept): a retry runs again (and fails again).
            again = await http.post("/v1/codes", json=body, headers=key)
            assert_problem(again, 503)
            assert int(again.headers["retry-after"]) > 0
            sent = await http.post("/v1/messages", json={"to": to, "text": "x"})
            assert_problem(sent, 503)
            assert (await http.get("/healthz")).status_code == 200
        finally:
            for member in nodes:
                net.start_node(member)
