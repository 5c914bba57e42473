"""Who may read a node's and an authority's ``GET /metrics``: ``[http] metrics_allow``.

The counters say when a node works (requests, waiting polls, pushes); read often from
anywhere they help an outsider time a user's traffic, so by default only loopback may
scrape them (as Tor's MetricsPort policy). Real processes: a node and a devnet's
authority started with a config that leaves loopback out are asked from loopback.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.nodeutil import run_node_with_config, running_node, write_toml
from veil.client.devnet import Devnet
from veil.node.metrics import MetricsAccess


def test_the_allow_list_judges_the_connecting_address() -> None:
    default = MetricsAccess(("127.0.0.0/8", "::1/128"))
    assert default.allows("127.0.0.1") and default.allows("127.9.9.9")
    assert default.allows("::1")
    assert default.allows("::ffff:127.0.0.1")  # IPv4-mapped: judged as IPv4
    for outside in ("10.0.0.1", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.1"):
        assert not default.allows(outside), outside
    for garbage in ("", "localhost", "127.0.0.1:80", "not an address"):
        assert not default.allows(garbage), garbage
    assert not MetricsAccess(()).allows("127.0.0.1")  # an empty list: nobody
    scoped = MetricsAccess(("fe80::/10",))
    assert scoped.allows("fe80::1%eth0")


async def test_a_node_serves_metrics_to_loopback_by_default_and_403_to_others(
    tmp_path: Path,
) -> None:
    async with running_node(tmp_path / "open") as node, httpx.AsyncClient() as http:
        r = await http.get(f"{node.url}/metrics")
        assert r.status_code == 200 and "veil_http_requests_total" in r.text
    config = {"http": {"metrics_allow": ["192.0.2.0/24"]}}
    async with (
        running_node(tmp_path / "closed", config=config) as node,
        httpx.AsyncClient() as http,
    ):
        r = await http.get(f"{node.url}/metrics")
        assert r.status_code == 403
        assert "metrics_allow" in r.text and "veil_" not in r.text
        # Everything else is served as before.
        assert (await http.get(f"{node.url}/info")).status_code == 200


def test_an_authority_refuses_metrics_outside_its_allow_list(tmp_path: Path) -> None:
    net = Devnet(
        tmp_path / "net",
        authority_config={"http": {"metrics_allow": ["192.0.2.0/24"]}},
    )
    with net:
        net.up(nodes=1)
        authority = next(m for m in net.members if m.name.startswith("auth"))
        node = next(m for m in net.members if not m.name.startswith("auth"))
        with httpx.Client(trust_env=False, timeout=10) as http:
            refused = http.get(f"http://127.0.0.1:{authority.port}/metrics")
            assert refused.status_code == 403 and "metrics_allow" in refused.text
            assert http.get(f"http://127.0.0.1:{authority.port}/info").status_code == 200
            # The nodes keep the default: loopback reads theirs.
            assert http.get(f"http://127.0.0.1:{node.port}/metrics").status_code == 200


@pytest.mark.parametrize("value", [["not-a-network"], ["10.0.0.0/33"]])
def test_a_bad_allow_list_is_refused_at_start_naming_the_key(
    tmp_path: Path, value: list[str]
) -> None:
    config = write_toml(tmp_path / "bad.toml", {"http": {"metrics_allow": value}})
    run = run_node_with_config(tmp_path / "d", config)
    assert run.returncode == 2
    assert "metrics_allow" in run.stderr and value[0] in run.stderr
