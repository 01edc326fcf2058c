"""Who may use the dashboard, and as what: its authentication modes, roles and request checks,
enforced by the server (an ASGI middleware in front of every route but ``/healthz``).

``DASHBOARD_AUTH`` picks the mode:

* ``basic`` (the default): HTTP basic against ``DASHBOARD_USERS``, entries ``user:role:hash``
  (``python -m worker dashboard-hash`` prints one; the hash is scrypt with a random salt, compared
  in constant time). A wrong password and an unknown user get the same answer.
* ``header``: a reverse proxy that authenticates (SSO) names the user in ``DASHBOARD_TRUSTED_HEADER``
  and, optionally, the role in ``DASHBOARD_ROLE_HEADER`` (else ``DASHBOARD_OPERATORS`` lists the
  operators). Only safe behind a proxy that removes those headers from its clients' requests.
* ``none``: everyone is ``DASHBOARD_ANONYMOUS_ROLE`` (viewer); refused unless the dashboard listens
  on a loopback address, and only requests sent to a loopback Host name are answered.

Roles: ``viewer`` reads, ``operator`` reads and acts. A state change must also pass
``cross_site_refusal``: its Origin is the dashboard's own, ``Sec-Fetch-Site`` is same-origin when
sent, and it carries the ``X-Dashboard-Request`` header that no cross-site form can set.

This module imports no web framework: ``python -m worker dashboard-hash`` needs none.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

ROLES = ("viewer", "operator")
NOT_SIGNED_IN = "not signed in: unknown user or wrong password"
REQUEST_HEADER = "x-dashboard-request"  # what the page sends with every action
OPEN_PATHS = frozenset({"/healthz"})  # a liveness probe: says only whether Redis answers
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32
CACHE_MAX = 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class DashboardSettings(BaseSettings):
    """The dashboard's own variables, ``DASHBOARD_*`` (environment and ``.env``)."""

    model_config = SettingsConfigDict(
        env_prefix="DASHBOARD_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    auth: Literal["basic", "header", "none"] = "basic"
    users: str = ""
    trusted_header: str = ""
    role_header: str = ""
    operators: str = ""
    anonymous_role: Literal["viewer", "operator"] = "viewer"
    origins: str = ""  # more origins that may post actions (a proxy's public https://host)


@dataclass(frozen=True)
class Identity:
    user: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class User:
    name: str
    role: str
    hash: str


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt:N:r:p:salt:key`` (salt and key in base64) of ``password``, with a random 16-byte
    salt. No ``$`` in it: shells and compose files would read one as a variable."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_LEN
    )
    b64 = base64.b64encode
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{b64(salt).decode()}:{b64(key).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (``hash_password``'s form), in constant time."""
    try:
        kind, n, r, p, salt, key = encoded.split(":")
        expected = base64.b64decode(key, validate=True)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=2**26,
        )
    except ValueError:
        return False
    return kind == "scrypt" and hmac.compare_digest(got, expected)


def parse_users(text: str) -> dict[str, User]:
    """``DASHBOARD_USERS``: ``user:role:hash`` entries separated by commas or white space."""
    users: dict[str, User] = {}
    for entry in text.replace(",", " ").split():
        name, _, rest = entry.partition(":")
        role, _, hashed = rest.partition(":")
        if not name or role not in ROLES or not hashed.startswith("scrypt:"):
            raise ConfigError(
                details=f"DASHBOARD_USERS: entry {name or entry[:20]!r} is not user:role:hash "
                "(role viewer or operator; `python -m worker dashboard-hash` prints a hash)"
            )
        if name in users:
            raise ConfigError(details=f"DASHBOARD_USERS: user {name!r} is listed twice")
        users[name] = User(name, role, hashed)
    return users


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings() -> DashboardSettings:
    try:
        return DashboardSettings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "DASHBOARD_" + str(err["loc"][0]).upper() if err["loc"] else "DASHBOARD_*"
        raise ConfigError(details=f"{name}: {err['msg']}") from None


class Authenticator:
    """Checks each request's credentials against the mode's configuration (checked at creation:
    ConfigError with what to set)."""

    def __init__(self, settings: DashboardSettings, host: str) -> None:
        self.settings = settings
        self.users = parse_users(settings.users)
        self.operators = set(settings.operators.replace(",", " ").split())
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        self._dummy = hash_password(secrets.token_hex(8))
        if settings.auth == "basic" and not self.users:
            raise ConfigError(
                details="DASHBOARD_AUTH=basic needs DASHBOARD_USERS (user:role:hash entries; "
                "`python -m worker dashboard-hash` prints a hash), or DASHBOARD_AUTH=none on "
                "127.0.0.1 for local use"
            )
        if settings.auth == "header" and not settings.trusted_header:
            raise ConfigError(
                details="DASHBOARD_AUTH=header needs DASHBOARD_TRUSTED_HEADER (X-Forwarded-User)"
            )
        if settings.auth == "none" and not is_loopback(host):
            raise ConfigError(
                details=f"DASHBOARD_AUTH=none (no sign-in) listens only on a loopback address, "
                f"not {host}: configure DASHBOARD_USERS or DASHBOARD_AUTH=header"
            )

    async def identify(self, headers: dict[str, str]) -> Identity | None:
        """The caller's identity, or None (answered 401 with ``NOT_SIGNED_IN``)."""
        mode = self.settings.auth
        if mode == "none":
            # A loopback Host only: a page of another site whose name is made to resolve to
            # 127.0.0.1 (DNS rebinding) is its own origin, and would get in without a sign-in.
            if not is_loopback(urlsplit("//" + headers.get("host", "")).hostname or ""):
                return None
            return Identity("anonymous", self.settings.anonymous_role)
        if mode == "header":
            user = headers.get(self.settings.trusted_header.lower(), "").strip()
            if not user:
                return None
            if self.settings.role_header:
                role = headers.get(self.settings.role_header.lower(), "").strip().lower()
                return Identity(user, role if role in ROLES else "viewer")
            return Identity(user, "operator" if user in self.operators else "viewer")
        return await self._basic(headers.get("authorization", ""))

    async def _basic(self, header: str) -> Identity | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            name, sep, password = (
                base64.b64decode(token.strip(), validate=True).decode().partition(":")
            )
        except ValueError:
            return None
        user = self.users.get(name)
        hashed = user.hash if user else self._dummy  # the same work for an unknown name
        seen = hmac.digest(self._key, f"{name}\0{password}\0{hashed}".encode(), "sha256")
        if user is not None and sep and seen in self._verified:
            return Identity(user.name, user.role)
        ok = await asyncio.to_thread(verify_password, password, hashed)
        if not (ok and user is not None and sep):
            return None
        if len(self._verified) >= CACHE_MAX:
            self._verified.clear()
        self._verified.add(seen)
        return Identity(user.name, user.role)


def cross_site_refusal(headers: dict[str, str], allowed_origins: str = "") -> str | None:
    """Why a state-changing request is refused as possibly cross-site, or None: its Origin (when
    sent) must be the dashboard's own (the Host it was sent to) or one of ``allowed_origins``,
    ``Sec-Fetch-Site`` (when sent) same-origin, and it must carry ``X-Dashboard-Request``."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site[:20]})"
    origin = headers.get("origin")
    if origin is not None:
        allowed = {o.strip().rstrip("/") for o in allowed_origins.split(",") if o.strip()}
        own = urlsplit(origin).netloc == headers.get("host", "") and origin != "null"
        if not own and origin.rstrip("/") not in allowed:
            return f"cross-site request refused (Origin {origin[:80]} is not this dashboard's)"
    if headers.get(REQUEST_HEADER) != "1":
        return f"request refused: the {REQUEST_HEADER} header is missing"
    return None


def client_address(scope: Scope, settings: DashboardSettings, headers: dict[str, str]) -> str:
    """Where a request came from: the TCP peer; behind the trusted proxy, the client it names."""
    peer = scope.get("client")
    address = str(peer[0]) if peer else "unknown"
    forwarded = headers.get("x-forwarded-for", "").split(",")[0].strip()
    if settings.auth == "header" and forwarded:
        return f"{forwarded[:100]} (via {address})"
    return address


def request_headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class AuthMiddleware:
    """Answers 401 ``NOT_SIGNED_IN`` to a request without a valid identity (``/healthz`` excepted);
    otherwise puts the ``Identity`` in ``scope["state"]["identity"]`` for the routes."""

    def __init__(self, app: App, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = request_headers(scope)
        identity = await self.auth.identify(headers)
        if identity is None:
            # The challenge (the browser's sign-in prompt) only to a request without credentials:
            # to wrong ones, the page shows the message (reloading it prompts again).
            challenge = self.auth.settings.auth == "basic" and "authorization" not in headers
            await send_json(send, 401, {"error": NOT_SIGNED_IN}, challenge=challenge)
            return
        scope.setdefault("state", {})["identity"] = identity
        scope["state"]["client_address"] = client_address(scope, self.auth.settings, headers)
        await self.app(scope, receive, send)


async def send_json(send: Send, status: int, body: dict[str, Any], challenge: bool = False) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if challenge:
        headers.append(
            (b"www-authenticate", b'Basic realm="pgpool-worker dashboard", charset="UTF-8"')
        )
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
