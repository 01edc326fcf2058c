"""Logging policy: job arguments never reach the logs (they may carry personal data or secrets);
one JSON object per line when stderr is not a terminal (LOG_FORMAT=auto), readable text on one.

Job events carry their fields (``job_event``): job id, function, try, duration, outcome and queue
wait, as JSON keys (and in the text of the message for the text format).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

ARQ_JOB_START = "%6.2fs → %s(%s)%s"
OUR_LOGGERS = ("worker", "jobs")
REDACTED = "…"


class RedactJobArgs(logging.Filter):
    """Replaces the arguments in arq's "job started" line with an ellipsis."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == ARQ_JOB_START and isinstance(record.args, tuple) and len(record.args) == 4:
            elapsed, ref, _args, extra = record.args
            record.args = (elapsed, ref, REDACTED, extra)
        return True


def install_redaction() -> None:
    """Attach the redaction filter to arq's worker logger, once."""
    arq_logger = logging.getLogger("arq.worker")
    if not any(isinstance(f, RedactJobArgs) for f in arq_logger.filters):
        arq_logger.addFilter(RedactJobArgs())


# The structured fields a record may carry (``extra=``), written as JSON keys in this order.
EVENT_FIELDS = ("event", "job_id", "function", "try", "outcome", "duration", "queue_wait", "error")


def job_event(
    job_id: str,
    function: str,
    job_try: int,
    duration: float | None,
    outcome: str,
    queue_wait: float | None = None,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """The ``extra`` of a job event's log record (never the job's arguments)."""
    fields: dict[str, Any] = {
        "event": "job",
        "job_id": job_id,
        "function": function,
        "try": job_try,
        "outcome": outcome,
    }
    if duration is not None:
        fields["duration"] = round(duration, 6)
    if queue_wait is not None:
        fields["queue_wait"] = round(queue_wait, 6)
    if error is not None:
        fields["error"] = type(error).__name__
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, Any] = {
            "ts": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        for key in EVENT_FIELDS:
            if key in fields:
                data[key] = fields[key]
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)  # one field, newlines escaped
        elif record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


TEXT_FORMAT = logging.Formatter("%(asctime)s: %(message)s", "%H:%M:%S")


def arq_log_config(log_format: str, verbose: bool) -> dict[str, Any]:
    """arq's own logging configuration (``arq.logs.default_log_config``) in LOG_FORMAT, so that
    arq's first lines (before the worker's startup configures the rest) are JSON too."""
    level = "DEBUG" if verbose else "INFO"
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if use_json(log_format)
        else {"format": "%(asctime)s: %(message)s", "datefmt": "%H:%M:%S"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "arq.standard": {"level": level, "class": "logging.StreamHandler", "formatter": "arq"}
        },
        "formatters": {"arq": formatter},
        "loggers": {"arq": {"handlers": ["arq.standard"], "level": level}},
    }


def use_json(log_format: str, stream: Any = None) -> bool:
    """LOG_FORMAT ``json``, or ``auto`` when ``stream`` (stderr) is not a terminal."""
    if log_format != "auto":
        return log_format == "json"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


class _ProjectHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module adds, so that it is added once."""


def configure_logging(level: str, log_format: str = "text") -> None:
    """Apply LOG_LEVEL and LOG_FORMAT to every logger of the process.

    The ``arq`` command configures only arq's logger (its handler gets our formatter). When nothing
    else handles the root logger, it gets the one handler of this module: then every record of any
    logger (asyncpg's pool warnings, asyncio's errors; WARNING and above for other libraries, the
    root's level) is one line in LOG_FORMAT, its traceback one field, instead of Python's raw
    last-resort output; arq's records keep their own handler and do not reach the root twice.
    """
    formatter = JsonFormatter() if use_json(log_format) else TEXT_FORMAT
    arq_logger = logging.getLogger("arq")
    arq_logger.setLevel(level)
    for handler in arq_logger.handlers:
        handler.setFormatter(formatter)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _ProjectHandler)]
    if len(ours) == len(root.handlers):  # nobody else configured the root logger
        if not ours:
            ours = [_ProjectHandler()]
            root.addHandler(ours[0])
        for handler in ours:
            handler.setFormatter(formatter)
        if arq_logger.handlers:
            arq_logger.propagate = False
    install_redaction()
