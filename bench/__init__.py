"""``make bench``: this worker measured side by side with raw asyncpg, bare arq and SAQ.

``python -m bench --help`` lists the options; docs/performance.md is the report it writes.
"""

from __future__ import annotations
