"""A web application that signs people in with a one-time code sent over veil.

No phone number, no e-mail: a person types their veil ID, gets a code in their veil
inbox (``veil inbox``), and types it back. The app talks to a bot's HTTP gateway
(``veil bot serve``) with two calls, and needs nothing but Python's standard library:

    POST /v1/codes               {"to": ID, "purpose": "login"}  -> {"ticket": ...}
    POST /v1/codes/{ticket}/check {"code": CODE}                 -> {"status": "approved"}

Run it (a gateway and a token with the ``codes`` scope first; ``./scripts/devnet --demo``
prints both):

    VEIL_GATEWAY=http://127.0.0.1:8787 VEIL_GATEWAY_TOKEN=vgw_... \\
        python examples/web_login/app.py --port 8000

then open http://127.0.0.1:8000/. Sessions live in memory; a real app would keep them
in its own store and serve over HTTPS.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GATEWAY = os.environ.get("VEIL_GATEWAY", "http://127.0.0.1:8787").rstrip("/")
TOKEN = os.environ.get("VEIL_GATEWAY_TOKEN", "")
SESSIONS: dict[str, dict[str, Any]] = {}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in with veil</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}
input{{width:100%;font-family:monospace;padding:.4em}}.error{{color:#b00}}</style>
</head><body>{body}</body></html>"""


def gateway(path: str, body: dict[str, Any], key: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to the gateway: (status, JSON answer)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key  # a retry never sends two codes
    request = urllib.request.Request(  # noqa: S310 (the gateway's http(s) URL)
        GATEWAY + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


class Handler(BaseHTTPRequestHandler):
    def session(self) -> dict[str, Any]:
        jar = cookies.SimpleCookie(self.headers.get("Cookie", ""))
        sid = jar["sid"].value if "sid" in jar else ""
        if sid not in SESSIONS:
            sid = secrets.token_urlsafe(24)
            SESSIONS[sid] = {}
        self.sid = sid
        return SESSIONS[sid]

    def page(self, body: str, status: int = 200) -> None:
        data = PAGE.format(body=body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Set-Cookie", f"sid={self.sid}; HttpOnly; SameSite=Lax; Path=/")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def redirect(self, where: str) -> None:
        self.send_response(303)
        self.send_header("Location", where)
        self.send_header("Set-Cookie", f"sid={self.sid}; HttpOnly; SameSite=Lax; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def form(self) -> dict[str, str]:
        length = min(int(self.headers.get("Content-Length", "0") or 0), 10_000)
        fields = urllib.parse.parse_qs(self.rfile.read(length).decode())
        return {k: v[0].strip() for k, v in fields.items()}

    def do_GET(self) -> None:
        session = self.session()
        if self.path == "/welcome" and session.get("user"):
            user = html.escape(session["user"])
            self.page(f'<h1 id="signed-in">Signed in</h1><p>as <code>{user}</code></p>')
        elif self.path == "/code" and session.get("ticket"):
            self.code_form()
        else:
            self.id_form()

    def id_form(self, error: str = "") -> None:
        note = f'<p class="error" id="error">{html.escape(error)}</p>' if error else ""
        self.page(
            f"""<h1>Sign in with veil</h1>{note}
<form method="post" action="/login"><label>Your veil ID
<input id="veil_id" name="veil_id" autocomplete="off" required></label>
<p><button id="send" type="submit">Send me a code</button></p></form>"""
        )

    def code_form(self, error: str = "") -> None:
        note = f'<p class="error" id="error">{html.escape(error)}</p>' if error else ""
        self.page(
            f"""<h1>Enter your code</h1>{note}
<p>We sent a code to your veil inbox (<code>veil inbox</code>).</p>
<form method="post" action="/verify"><label>Code
<input id="code" name="code" autocomplete="one-time-code" required></label>
<p><button id="verify" type="submit">Sign in</button></p></form>"""
        )

    def do_POST(self) -> None:
        session = self.session()
        fields = self.form()
        if self.path == "/login":
            veil_id = fields.get("veil_id", "")
            status, answer = gateway(
                "/v1/codes", {"to": veil_id, "purpose": "login"}, key=secrets.token_urlsafe(16)
            )
            if status == 201:
                session.update(ticket=answer["ticket"], pending=veil_id)
                self.redirect("/code")
            elif status == 422:
                self.id_form("That is not a veil ID.")
            elif status == 429:
                self.id_form(f"Too many codes; try again in {answer.get('retry_after')} s.")
            else:
                self.id_form(f"Could not send a code ({answer.get('title', status)}).")
        elif self.path == "/verify" and session.get("ticket"):
            ticket = session["ticket"]
            status, answer = gateway(f"/v1/codes/{ticket}/check", {"code": fields.get("code", "")})
            if status == 200 and answer.get("status") == "approved":
                user = session.get("pending", "")
                session.clear()
                session["user"] = user
                self.redirect("/welcome")
            elif status == 200 and answer.get("status") == "pending":
                self.code_form(f"Wrong code; {answer['attempts_left']} attempts left.")
            else:
                session.pop("ticket", None)
                self.id_form(f"That code is {answer.get('status', 'no good')}; ask for a new one.")
        else:
            self.redirect("/")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"web login on http://{args.host}:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
