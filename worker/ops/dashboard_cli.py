"""``python -m worker dashboard``: serve the web dashboard (worker/ops/dashboard.py) on uvicorn,
behind its sign-in (worker/ops/dashboard_auth.py, checked before it starts); its modules are
imported only by this command. ``python -m worker dashboard-hash``: print the scrypt hash of a
password (read from the terminal, or one line of standard input) for ``DASHBOARD_USERS``."""

from __future__ import annotations

import argparse
import getpass
import sys

from worker.config import Config
from worker.core.exit_codes import EXIT_OK
from worker.errors import ConfigError, DashboardNotInstalled
from worker.ops.dashboard_auth import ROLES, Authenticator, hash_password, load_settings
from worker.queue.connect import check_redis


async def cmd_dashboard(config: Config, args: argparse.Namespace) -> int:
    try:  # the `dashboard` extra: not installed with the worker alone
        import uvicorn

        from worker.ops.dashboard import create_app
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in ("starlette", "uvicorn"):
            raise
        raise DashboardNotInstalled() from exc

    auth = Authenticator(load_settings(), args.host)  # ConfigError: what to set
    await check_redis(config)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, auth, args.host),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    sys.stderr.write(
        f"dashboard on http://{args.host}:{args.port}/ (sign-in: {auth.settings.auth})\n"
    )
    await server.serve()
    return EXIT_OK


async def cmd_dashboard_hash(_: Config, args: argparse.Namespace) -> int:
    """Print ``hash``, or ``user:role:hash`` with ``--user``: a ``DASHBOARD_USERS`` entry."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError(details="the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise ConfigError(details="a dashboard password has at least 8 characters")
    if args.user is not None and (not args.user or ":" in args.user or args.role not in ROLES):
        raise ConfigError(details="--user is a name without ':' (and --role viewer or operator)")
    hashed = hash_password(password)
    sys.stdout.write((f"{args.user}:{args.role}:{hashed}" if args.user else hashed) + "\n")
    return EXIT_OK
