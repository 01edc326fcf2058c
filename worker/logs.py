"""Logging policy: job arguments never reach the logs (they may carry personal data or secrets)."""

from __future__ import annotations

import logging

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


class _ProjectHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module adds, so that it is added once."""


def configure_logging(level: str) -> None:
    """Apply LOG_LEVEL to arq's and the project's loggers.

    The ``arq`` command configures only arq's logger; when nothing handles the root logger either,
    ours get a handler with arq's format.
    """
    logging.getLogger("arq").setLevel(level)
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        unhandled = not logging.getLogger().handlers
        if unhandled and not any(isinstance(h, _ProjectHandler) for h in logger.handlers):
            handler = _ProjectHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s: %(message)s", "%H:%M:%S"))
            logger.addHandler(handler)
    install_redaction()
