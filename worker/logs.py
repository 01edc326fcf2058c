"""Logging policy: job arguments never reach the logs (they may carry personal data or secrets)."""

from __future__ import annotations

import logging

ARQ_JOB_START = "%6.2fs → %s(%s)%s"
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
