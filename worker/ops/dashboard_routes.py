"""The dashboard's endpoints beyond the read-only overview: ``GET /api/me`` (who is signed in, and
whether they may act), ``GET /api/audit`` (the audit log, for every signed-in role) and
``POST /api/actions/{action}`` (worker/ops/dashboard_actions.py).

An action request is refused (403, written ``refused`` to the audit log) when it may be cross-site
(``cross_site_refusal``) or its caller is not an operator; an allowed one is written ``pending``
before it runs (PostgreSQL down: 503, nothing done) and then ``ok`` or ``failed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs.errors import WorkerError
from worker.config import Config
from worker.db import dashboard_audit
from worker.db.dashboard_audit import AuditEntry
from worker.ops.dashboard_actions import ACTIONS, ActionError, Operations, parameters, target_of
from worker.ops.dashboard_auth import (
    Authenticator,
    Identity,
    cross_site_refusal,
    request_headers,
)

logger = logging.getLogger(__name__)

PG_TIMEOUT = 10.0
AUDIT_ROWS = 50
BODY_MAX = 16_384


def identity_of(request: Request) -> Identity:
    identity = request.scope["state"]["identity"]
    assert isinstance(identity, Identity)
    return identity


class ActionEndpoints:
    """The routes, over the dashboard's connections (``redis``: a callable, opened at start-up)."""

    def __init__(
        self,
        config: Config,
        auth: Authenticator,
        redis: Callable[[], Any],
        postgres: Callable[[], Awaitable[asyncpg.Pool[asyncpg.Record]]],
    ) -> None:
        self.config = config
        self.auth = auth
        self.redis = redis
        self.postgres = postgres

    def routes(self) -> list[Route]:
        return [
            Route("/api/me", self.me),
            Route("/api/audit", self.audit),
            Route("/api/actions/{action}", self.act, methods=["POST"]),
        ]

    async def me(self, request: Request) -> Response:
        identity = identity_of(request)
        return JSONResponse(
            {
                "user": identity.user,
                "role": identity.role,
                "can_act": identity.can_act,
                "auth": self.auth.settings.auth,
            }
        )

    async def audit(self, _: Request) -> Response:
        try:
            async with asyncio.timeout(PG_TIMEOUT):
                async with (await self.postgres()).acquire() as conn:
                    rows = await dashboard_audit.recent(conn, AUDIT_ROWS)
        except Exception as exc:  # noqa: BLE001  (shown on the page; the rest still renders)
            return JSONResponse({"error": f"PostgreSQL: {type(exc).__name__}: {exc}"[:200]})
        return JSONResponse({"entries": rows})

    async def act(self, request: Request) -> Response:
        name = request.path_params["action"]
        handler = ACTIONS.get(name)
        if handler is None:
            return JSONResponse({"error": f"no action {name!r}"[:100]}, 404)
        identity = identity_of(request)
        body = await _body(request)
        fields = parameters(body)
        entry = AuditEntry(
            actor=identity.user,
            role=identity.role,
            action=name,
            target=target_of(fields),
            parameters=fields,
            client=str(request.scope["state"].get("client_address", "")),
        )
        refusal = cross_site_refusal(request_headers(request.scope), self.auth.settings.origins)
        if refusal is None and not identity.can_act:
            refusal = f"role {identity.role} may not act (operators only)"
        if refusal is None and not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, 400)
        if refusal is not None:
            await self._refused(entry, refusal)
            return JSONResponse({"error": refusal}, 403)
        assert isinstance(body, dict)
        try:
            async with asyncio.timeout(PG_TIMEOUT):
                async with (await self.postgres()).acquire() as conn:
                    row_id = await dashboard_audit.record(conn, entry, "pending")
        except Exception as exc:  # noqa: BLE001  (no audit row: no action)
            message = f"audit log unavailable, nothing done: {type(exc).__name__}: {exc}"
            return JSONResponse({"error": message[:300]}, 503)
        ops = Operations(self.config, self.redis(), self.postgres)
        status, outcome, answer = 200, "ok", {}
        try:
            target, result = await handler(ops, body)
            answer = {"ok": True, "action": name, "target": target, "result": result}
        except (ActionError, WorkerError, ValueError) as exc:
            status, outcome, answer = 400, "failed", {"error": str(exc)}
        except (RedisError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
            status, outcome = 503, "failed"
            answer = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        detail = json.dumps(answer.get("result", answer.get("error")), default=str)
        try:
            async with asyncio.timeout(PG_TIMEOUT):
                async with (await self.postgres()).acquire() as conn:
                    await dashboard_audit.finish(conn, row_id, outcome, detail)
        except Exception as exc:  # noqa: BLE001  (done; its row stays pending)
            logger.error("audit row %s stays pending: %s: %s", row_id, type(exc).__name__, exc)
        return JSONResponse(answer, status)

    async def _refused(self, entry: AuditEntry, reason: str) -> None:
        try:
            async with asyncio.timeout(PG_TIMEOUT):
                async with (await self.postgres()).acquire() as conn:
                    await dashboard_audit.record(conn, entry, "refused", reason)
        except Exception as exc:  # noqa: BLE001  (refused all the same)
            logger.warning("refused action not audited: %s: %s", type(exc).__name__, exc)


async def _body(request: Request) -> object:
    raw = await request.body()
    if len(raw) > BODY_MAX:
        return None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
