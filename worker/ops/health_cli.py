"""``python -m worker health``: is this machine's worker live and ready (its HTTP endpoint, or the
health records in Redis)? Exit 0 yes, 1 no, 2 cannot tell."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import urllib.error
import urllib.request
from typing import Any

from worker.config import Config
from worker.core.exit_codes import EXIT_FAILED, EXIT_OK
from worker.ops.output import emit
from worker.queue.connect import command_redis
from worker.queue.health import read_workers

HTTP_TIMEOUT = 5.0


def _http(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), json.loads(exc.read() or b"null")
        except ValueError:
            return int(exc.code), None


async def cmd_health(config: Config, args: argparse.Namespace) -> int:
    """0 healthy; 1 unhealthy or not answering; 2 cannot tell (configuration, Redis down)."""
    if args.url or (config.metrics_port and not args.records):
        base = args.url or f"http://127.0.0.1:{config.metrics_port}"
        paths = [""] if args.url else ["/healthz"] + ([] if args.live else ["/readyz"])
        report: dict[str, Any] = {}
        healthy = True
        for path in paths:
            try:
                status, body = await asyncio.to_thread(_http, base + path)
            except (OSError, ValueError) as exc:
                status, body = 0, {"error": f"{type(exc).__name__}: {exc}"}
            report[base + path] = {"status": status, **(body if isinstance(body, dict) else {})}
            healthy = healthy and status == 200
        emit({"healthy": healthy, "checks": report})
        return EXIT_OK if healthy else EXIT_FAILED
    async with command_redis(config) as redis:
        workers = await read_workers(redis, config.queue_name)
    host = socket.gethostname()
    mine = workers if args.all else [w for w in workers if w.get("host") == host]
    key = "live" if args.live else "healthy"
    healthy = bool(mine) and all(w[key] for w in mine)
    emit(
        {
            "healthy": healthy,
            "host": None if args.all else host,
            "workers": [
                {k: w.get(k) for k in ("id", "live", "ready", "checks", "heartbeat_age", "state")}
                for w in mine
            ],
        }
    )
    return EXIT_OK if healthy else EXIT_FAILED
