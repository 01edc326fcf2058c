"""The dashboard's sign-in, roles and cross-site checks (worker/ops/dashboard_auth.py), on the app
itself with real Redis and PostgreSQL: who gets in, who may act, and what is written to the audit
log (worker/db/dashboard_audit.py)."""

from __future__ import annotations

import asyncpg
import pytest
from arq.connections import ArqRedis

from tests.integration.dashboard_asgi import (
    OWN_ORIGIN,
    USERS,
    AppFactory,
    app_factory,
    basic,
)
from worker.config import Config
from worker.errors import ConfigError
from worker.ops.dashboard_auth import (
    NOT_SIGNED_IN,
    Authenticator,
    DashboardSettings,
    hash_password,
    parse_users,
    verify_password,
)
from worker.queue import flow_admin

pytestmark = pytest.mark.integration


@pytest.fixture
def open_app(config: Config) -> AppFactory:
    return app_factory(config)


async def audit_rows(pool: asyncpg.Pool[asyncpg.Record], actor: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT actor, role, action, target, parameters::text AS parameters, client, outcome,"
        " detail FROM dashboard_audit WHERE actor = $1 ORDER BY id",
        actor,
    )


def test_password_hashes_are_salted_scrypt_and_verify_in_constant_time() -> None:
    one, two = hash_password("correct horse"), hash_password("correct horse")
    assert one != two and one.startswith("scrypt:16384:8:1:")  # a random salt each time
    assert verify_password("correct horse", one) and verify_password("correct horse", two)
    assert not verify_password("correct horsf", one)
    assert not verify_password("correct horse", "scrypt:bad")
    assert not verify_password("x", "md5:1:1:1:AAAA:AAAA")


def test_users_entries_are_checked_at_start() -> None:
    users = parse_users(USERS)
    assert {u.name: u.role for u in users.values()} == {"vera": "viewer", "otto": "operator"}
    for bad in ("ann:admin:scrypt:1", "ann:viewer:plaintext", ":viewer:scrypt:1"):
        with pytest.raises(ConfigError, match="DASHBOARD_USERS"):
            parse_users(bad)
    with pytest.raises(ConfigError, match="listed twice"):
        parse_users(f"{USERS},{USERS}")


def test_no_sign_in_only_on_loopback_and_each_mode_needs_its_settings() -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        Authenticator(DashboardSettings(auth="none"), host)
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        with pytest.raises(ConfigError, match="loopback"):
            Authenticator(DashboardSettings(auth="none"), host)
    with pytest.raises(ConfigError, match="needs DASHBOARD_USERS"):
        Authenticator(DashboardSettings(auth="basic", users=""), "127.0.0.1")
    with pytest.raises(ConfigError, match="needs DASHBOARD_TRUSTED_HEADER"):
        Authenticator(DashboardSettings(auth="header"), "0.0.0.0")


async def test_basic_refuses_anonymous_and_wrong_credentials_with_one_message(
    open_app: AppFactory,
) -> None:
    async with open_app(host="0.0.0.0", auth="basic", users=USERS) as app:
        answers = [
            await app.request("GET", "/api/overview"),
            await app.request("GET", "/", basic("vera", "wrong-password")),
            await app.request("GET", "/api/me", basic("nobody", "viewer-pass-1")),
            await app.request("GET", "/api/audit", {"authorization": "Basic !!!"}),
            await app.request("GET", "/api/me", {"authorization": "Bearer x"}),
        ]
        for answer in answers:
            assert answer.status == 401
            assert answer.json() == {"error": NOT_SIGNED_IN}  # never which part was wrong
        # The sign-in prompt to a request without credentials; the message to wrong ones.
        assert answers[0].headers["www-authenticate"].startswith('Basic realm="pgpool-worker')
        assert all("www-authenticate" not in a.headers for a in answers[1:])
        assert (await app.request("GET", "/healthz")).status == 200  # the probe: no sign-in
        me = await app.request("GET", "/api/me", basic("vera"))
        assert me.status == 200 and me.json() == {
            "user": "vera",
            "role": "viewer",
            "can_act": False,
            "auth": "basic",
        }
        again = await app.request("GET", "/api/me", basic("vera"))  # the verified-credential cache
        assert again.json()["user"] == "vera"
        assert (await app.request("GET", "/api/me", basic("vera", "wrong-password"))).status == 401
        assert (await app.request("GET", "/api/overview", basic("otto"))).status == 200


async def test_a_viewer_cannot_act_and_the_refusal_is_audited(
    open_app: AppFactory,
    arq_redis: ArqRedis,
    config: Config,
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    async with open_app(auth="basic", users=USERS) as app:
        answer = await app.act("pause", {"names": ["get_user"]}, basic("vera"))
        assert answer.status == 403 and "may not act" in answer.json()["error"]
    assert await flow_admin.paused_names(arq_redis, config.queue_name) == []
    rows = await audit_rows(pool, "vera")
    assert [(r["role"], r["action"], r["outcome"]) for r in rows][-1:] == [
        ("viewer", "pause", "refused")
    ]
    assert rows[-1]["client"] == "127.0.0.1" and '"get_user"' in rows[-1]["parameters"]


async def test_cross_site_posts_are_refused_before_anything_runs(
    open_app: AppFactory, arq_redis: ArqRedis, config: Config
) -> None:
    refused = (
        {"origin": "http://evil.example"},  # another site's page
        {"origin": "null"},  # a sandboxed frame, a data: URL
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": OWN_ORIGIN},  # a sibling subdomain
        {"x-dashboard-request": ""},  # a plain form: it cannot add the header
    )
    async with open_app(auth="basic", users=USERS) as app:
        for headers in refused:
            answer = await app.act("pause", {"all": True}, basic("otto"), **headers)
            assert answer.status == 403, headers
            assert "refused" in answer.json()["error"]
        assert await flow_admin.paused_names(arq_redis, config.queue_name) == []
        # The dashboard's own page: allowed, and idempotent.
        for _ in range(2):
            answer = await app.act("pause", {"names": ["get_user"]}, basic("otto"))
            assert answer.status == 200, answer.body
            assert answer.json()["result"] == {"paused": ["get_user"]}
    assert await flow_admin.paused_names(arq_redis, config.queue_name) == ["get_user"]


async def test_an_origin_behind_a_proxy_can_be_allowed(open_app: AppFactory) -> None:
    async with open_app(auth="basic", users=USERS, origins="https://jobs.example.com") as app:
        proxied = {"origin": "https://jobs.example.com", "host": "10.0.0.5:8080"}
        answer = await app.act("resume", {"all": True}, basic("otto"), **proxied)
        assert answer.status == 200, answer.body


async def test_trusted_header_mode_takes_the_proxys_user_and_role(
    open_app: AppFactory, pool: asyncpg.Pool[asyncpg.Record]
) -> None:
    settings = {
        "auth": "header",
        "trusted_header": "X-Forwarded-User",
        "role_header": "X-Forwarded-Role",
    }
    async with open_app(host="0.0.0.0", **settings) as app:
        assert (await app.request("GET", "/api/me")).status == 401
        me = await app.request("GET", "/api/me", {"x-forwarded-user": "sso-ann"})
        assert me.json()["role"] == "viewer"  # no role header: a viewer
        odd = {"x-forwarded-user": "sso-ann", "x-forwarded-role": "admin"}
        assert (await app.request("GET", "/api/me", odd)).json()["role"] == "viewer"
        operator = {
            "x-forwarded-user": "sso-bob",
            "x-forwarded-role": "operator",
            "x-forwarded-for": "203.0.113.9, 10.0.0.1",
        }
        answer = await app.act("resume", {"names": ["get_user"]}, operator)
        assert answer.status == 200, answer.body
    rows = await audit_rows(pool, "sso-bob")
    assert rows[-1]["outcome"] == "ok" and rows[-1]["client"] == "203.0.113.9 (via 127.0.0.1)"
    async with open_app(
        host="0.0.0.0", auth="header", trusted_header="X-Forwarded-User", operators="sso-cy"
    ) as app:
        me = await app.request("GET", "/api/me", {"x-forwarded-user": "sso-cy"})
        assert me.json()["role"] == "operator"


async def test_no_sign_in_answers_only_a_loopback_host(open_app: AppFactory) -> None:
    async with open_app(auth="none") as app:
        for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080"):
            me = await app.request("GET", "/api/me", {"host": host})
            assert me.json() == {
                "user": "anonymous",
                "role": "viewer",
                "can_act": False,
                "auth": "none",
            }
        # DNS rebinding: another site's name resolved to 127.0.0.1 is that site's origin.
        rebound = await app.request("GET", "/api/overview", {"host": "evil.example:8080"})
        assert rebound.status == 401 and rebound.json() == {"error": NOT_SIGNED_IN}
        assert "www-authenticate" not in rebound.headers
