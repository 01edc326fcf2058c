"""``python -m worker dead-letters list|show|replay|purge``: the dead letters in PostgreSQL
(``show`` masks the payload's arguments: worker/ops/job_arguments.py)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from jobs.errors import WorkerError
from worker.client import JobClient
from worker.config import Config
from worker.core.exit_codes import EXIT_OK
from worker.db import dead_letters
from worker.db.pool import connect
from worker.ops.job_arguments import redact_letter
from worker.ops.output import emit


async def cmd_dead_letters(config: Config, args: argparse.Namespace) -> int:
    conn = await connect(config.database_url, config.pg_connect_timeout)
    try:
        if args.action == "list":
            emit(await dead_letters.list_letters(conn, args.limit))
        elif args.action == "show":
            emit(redact_letter(await dead_letters.get_letter(conn, args.id)))
        elif args.action == "replay":
            async with JobClient.connect(config) as client:
                new_id = await dead_letters.replay(conn, client.redis, args.id)
            emit({"dead_letter": args.id, "job_id": new_id, "queue": config.queue_name})
        else:
            return await _purge(conn, args)
    finally:
        await conn.close()
    return EXIT_OK


async def _purge(conn: Any, args: argparse.Namespace) -> int:
    if not (args.ids or args.before or args.all):
        raise WorkerError("purge needs --id N (repeatable), --before ISO8601, or --all")
    before = datetime.fromisoformat(args.before) if args.before else None
    purged = await dead_letters.purge(conn, args.ids or None, before)
    emit({"purged": purged})
    return EXIT_OK
