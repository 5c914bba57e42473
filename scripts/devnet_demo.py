"""``./scripts/devnet --demo``: a devnet, a 2FA bot with its HTTP gateway and a token, a
channel with a few posts, the web login example, and what to paste to try them.

Everything lives in ``.devnet/demo/`` of the repository (git-ignored; made afresh each
time) and stops with Ctrl-C. Options: ``--nodes N`` (default 5),
``--port`` of the gateway (8787), ``--web-port`` of the web login example (8000).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/devnet --demo")
    parser.add_argument("--dir", default=str(REPO / ".devnet" / "demo"))
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--port", type=int, default=8787, help="the gateway's port")
    parser.add_argument("--web-port", type=int, default=8000, help="the web login's port")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from veil.client.devnet import Devnet
    from veil.client.home import Home
    from veil.onion.keys import Account

    root = Path(args.dir)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    print(f"starting a devnet of {args.nodes} nodes in {root} ...", flush=True)
    net = Devnet(root / "net")
    net.up(nodes=args.nodes, swarm_size=min(3, args.nodes))
    network = net.network_file
    children: list[subprocess.Popen[str]] = []

    def veil(home: Path, *rest: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "veil.client",
                "--home",
                str(home),
                "--network",
                str(network),
                *list(rest),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"veil {' '.join(rest)}: {done.stderr.strip()}")
        return done.stdout.strip()

    try:
        bot_home, alice_home = root / "bot", root / "alice"
        Home(bot_home).save_identity(Account.generate())
        alice = Account.generate()
        Home(alice_home).save_identity(alice)
        veil(bot_home, "channel", "create", "news")
        for text in ("Welcome to the demo channel.", "Codes arrive in 1 s.", "No phone number."):
            veil(bot_home, "channel", "post", "news", text)
        channel = json.loads(veil(bot_home, "--json", "channel", "list"))
        token = json.loads(
            veil(
                bot_home,
                "--json",
                "bot",
                "token",
                "create",
                "--scope",
                "codes,messages,channels,broadcast,read",
                "--name",
                "demo",
            )
        )["token"]
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "veil.client",
                "--home",
                str(bot_home),
                "--network",
                str(network),
                "--json",
                "bot",
                "serve",
                "--listen",
                f"127.0.0.1:{args.port}",
                "--name",
                "Demo 2FA",
                "--topic",
                "news",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(gateway)
        assert gateway.stdout is not None
        started = json.loads(gateway.stdout.readline() or "{}")
        bot_id = started.get("bot", "?")
        gw = f"http://127.0.0.1:{args.port}"
        web = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "examples" / "web_login" / "app.py"),
                "--port",
                str(args.web_port),
            ],
            env={"VEIL_GATEWAY": gw, "VEIL_GATEWAY_TOKEN": token, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(web)
        items = channel if isinstance(channel, list) else channel.get("channels", [])
        channel_id = items[0]["id"] if items and isinstance(items[0], dict) else "news"
        veil_cmd = f"{REPO}/.venv/bin/veil --network {network}"
        print(
            f"""
The demo runs (Ctrl-C to stop). Paste these in another terminal:

  GW={gw}
  TOKEN={token}
  ALICE={alice.id}

  # a one-time code for Alice, in one HTTP call
  curl -sS -X POST $GW/v1/codes -H "Authorization: Bearer $TOKEN" \\
    -H "Content-Type: application/json" -d '{{"to": "'$ALICE'", "purpose": "login"}}'

  # Alice's inbox shows the code
  {veil_cmd} --home {alice_home} inbox

  # check it (the ticket from the first answer, the code from the inbox)
  curl -sS -X POST $GW/v1/codes/TICKET/check -H "Authorization: Bearer $TOKEN" \\
    -H "Content-Type: application/json" -d '{{"code": "CODE"}}'

  # follow the bot's channel (three posts)
  {veil_cmd} --home {alice_home} channel follow {channel_id}

  # the web login example: open http://127.0.0.1:{args.web_port}/ and type Alice's ID
  # the API: {gw}/docs and {gw}/openapi.json; every call: examples/curl.md

bot {bot_id}
""",
            flush=True,
        )
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        net.down()
        print("demo stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
