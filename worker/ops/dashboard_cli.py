"""``python -m worker dashboard``: serve the read-only web dashboard (worker/ops/dashboard.py) on
uvicorn; its modules are imported only by this command."""

from __future__ import annotations

import argparse
import sys

from worker.config import Config
from worker.core.exit_codes import EXIT_OK
from worker.errors import DashboardNotInstalled
from worker.queue.connect import check_redis


async def cmd_dashboard(config: Config, args: argparse.Namespace) -> int:
    try:  # the `dashboard` extra: not installed with the worker alone
        import uvicorn

        from worker.ops.dashboard import create_app
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in ("starlette", "uvicorn"):
            raise
        raise DashboardNotInstalled() from exc

    await check_redis(config)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    sys.stderr.write(f"dashboard on http://{args.host}:{args.port}/\n")
    await server.serve()
    return EXIT_OK
