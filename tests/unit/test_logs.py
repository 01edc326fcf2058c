"""Unit tests of the logging policy that keeps job arguments out of the logs (worker.core.logs)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator

import arq.worker
import pytest

from worker.core.logs import (
    ARQ_JOB_START,
    REDACTED,
    RedactJobArgs,
    configure_logging,
    install_redaction,
)

pytestmark = pytest.mark.unit

ARGS = "user_id=7, password=hunter2"


def _record(msg: str, args: tuple[object, ...] | None) -> logging.LogRecord:
    return logging.LogRecord("arq.worker", logging.INFO, __file__, 1, msg, args, None)


@pytest.fixture
def arq_logger() -> Iterator[logging.Logger]:
    """arq's worker logger with its filters restored after the test."""
    logger = logging.getLogger("arq.worker")
    saved = list(logger.filters)
    for existing in saved:
        logger.removeFilter(existing)
    yield logger
    for current in list(logger.filters):
        logger.removeFilter(current)
    for existing in saved:
        logger.addFilter(existing)


def test_format_matches_arqs_job_start_line() -> None:
    source = inspect.getsource(arq.worker)
    assert f"logger.info({ARQ_JOB_START!r}, " in source
    assert logging.getLogger("arq.worker") is arq.worker.logger


def test_job_start_arguments_are_replaced() -> None:
    record = _record(ARQ_JOB_START, (0.25, "abc123:get_user", ARGS, " try=2"))
    assert RedactJobArgs().filter(record) is True
    assert record.args == (0.25, "abc123:get_user", REDACTED, " try=2")
    assert record.getMessage() == "  0.25s → abc123:get_user(…) try=2"


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        ("%6.2fs ← %s ● %s", (0.5, "abc123:get_user", ARGS)),
        ("job %s failed: %s", ("abc123", ARGS)),
        (ARQ_JOB_START, (0.25, "abc123:get_user", ARGS)),  # not arq's 4 arguments
        ("no arguments at all", None),
        ("plain %s", (ARGS,)),
    ],
)
def test_other_records_are_untouched(msg: str, args: tuple[object, ...] | None) -> None:
    record = _record(msg, args)
    before = record.args
    assert RedactJobArgs().filter(record) is True
    assert record.args == before
    assert record.msg == msg


def test_install_redaction_is_idempotent(arq_logger: logging.Logger) -> None:
    install_redaction()
    install_redaction()
    assert [type(f) for f in arq_logger.filters] == [RedactJobArgs]


def test_arq_job_start_log_never_shows_arguments(
    arq_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    install_redaction()
    with caplog.at_level(logging.INFO, logger="arq.worker"):
        arq_logger.info(ARQ_JOB_START, 0.01, "abc123:get_user", ARGS, "")
        arq_logger.info("%6.2fs ← %s ● %s", 0.02, "abc123:get_user", "{'ok': True}")
    assert "hunter2" not in caplog.text
    assert "abc123:get_user(…)" in caplog.text
    assert "abc123:get_user ● {'ok': True}" in caplog.text


def test_without_redaction_the_arguments_would_be_logged(
    arq_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    # The control case: the end-to-end check above passes only because of the filter.
    with caplog.at_level(logging.INFO, logger="arq.worker"):
        arq_logger.info(ARQ_JOB_START, 0.01, "abc123:get_user", ARGS, "")
    assert "hunter2" in caplog.text


@pytest.fixture
def logging_state() -> Iterator[None]:
    """Restore the levels, handlers and filters configure_logging changes."""
    names = ["arq", "arq.worker", "worker", "jobs"]
    loggers = [logging.getLogger(n) for n in names] + [logging.getLogger()]
    saved = [(lg, lg.level, list(lg.handlers), list(lg.filters), lg.propagate) for lg in loggers]
    yield
    for lg, level, handlers, filters, propagate in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.filters[:] = filters
        lg.propagate = propagate


@pytest.mark.usefixtures("logging_state")
def test_configure_logging_sets_levels_and_redaction_once() -> None:
    configure_logging("DEBUG")
    configure_logging("WARNING")
    for name in ("arq", "worker", "jobs"):
        assert logging.getLogger(name).level == logging.WARNING
    assert [type(f) for f in logging.getLogger("arq.worker").filters] == [RedactJobArgs]


@pytest.mark.usefixtures("logging_state")
def test_configure_logging_adds_one_root_handler_when_root_is_unhandled() -> None:
    """Every logger's records (asyncpg's too) then go through the one handler and formatter."""
    logging.getLogger().handlers[:] = []
    for name in ("worker", "jobs"):
        logging.getLogger(name).handlers[:] = []
    configure_logging("INFO")
    configure_logging("INFO")
    handlers = logging.getLogger().handlers
    assert len(handlers) == 1
    assert isinstance(handlers[0], logging.StreamHandler)
    for name in ("worker", "jobs"):
        assert logging.getLogger(name).handlers == []


@pytest.mark.usefixtures("logging_state")
def test_configure_logging_adds_no_handler_when_root_is_handled() -> None:
    logging.getLogger().addHandler(logging.NullHandler())
    for name in ("worker", "jobs"):
        logging.getLogger(name).handlers[:] = []
    configure_logging("INFO")
    assert logging.getLogger("worker").handlers == []
    assert logging.getLogger("jobs").handlers == []
