"""The exit codes of ``python -m worker`` and of ``arq worker.Settings``, one name each."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0  # success; healthy
EXIT_FAILED: Final = 1  # the job failed or ended otherwise than asked; unhealthy
EXIT_USAGE: Final = 2  # bad usage or configuration, or a service does not answer
EXIT_PENDING: Final = 3  # not yet: no result within --wait, an abort not yet confirmed
