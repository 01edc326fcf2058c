"""The dashboard's Starlette app called in the test's own event loop, without a server or browser:
its lifespan entered (real Redis and PostgreSQL), requests sent as ASGI scopes."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from worker.config import Config
from worker.ops.dashboard import create_app
from worker.ops.dashboard_auth import Authenticator, DashboardSettings, hash_password

HOST = "127.0.0.1:8080"
OWN_ORIGIN = f"http://{HOST}"
PASSWORDS = {"vera": "viewer-pass-1", "otto": "operator-pass-1"}
# Hashed once per test session: scrypt is meant to be slow.
USERS = f"vera:viewer:{hash_password(PASSWORDS['vera'])},otto:operator:{hash_password(PASSWORDS['otto'])}"
ACTION_HEADERS = {"origin": OWN_ORIGIN, "sec-fetch-site": "same-origin", "x-dashboard-request": "1"}


def basic(user: str, password: str | None = None) -> dict[str, str]:
    secret = PASSWORDS.get(user, "") if password is None else password
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"authorization": f"Basic {token}"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class AsgiClient:
    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: object = None,
        client: tuple[str, int] = ("127.0.0.1", 50123),
    ) -> Answer:
        sent = {"host": HOST, **(headers or {})}
        raw = b"" if body is None else json.dumps(body).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in sent.items()],
            "client": client,
            "server": ("127.0.0.1", 8080),
        }
        messages: list[MutableMapping[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            messages.append(message)

        await self.app(scope, receive, send)
        start = next(m for m in messages if m["type"] == "http.response.start")
        return Answer(
            int(start["status"]),
            {k.decode(): v.decode() for k, v in start.get("headers", [])},
            b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"),
        )

    async def act(self, action: str, body: object, headers: dict[str, str], **extra: str) -> Answer:
        return await self.request(
            "POST", f"/api/actions/{action}", {**ACTION_HEADERS, **headers, **extra}, body
        )


AppFactory = Callable[..., AbstractAsyncContextManager[AsgiClient]]


def app_factory(config: Config) -> AppFactory:
    @asynccontextmanager
    async def open_app(host: str = "127.0.0.1", **settings: Any) -> AsyncIterator[AsgiClient]:
        auth = Authenticator(DashboardSettings(**settings), host)
        app = create_app(config, auth, host)
        async with app.router.lifespan_context(app):
            yield AsgiClient(app)

    return open_app
