"""``python -m worker``: the operator and scripting command line."""

from __future__ import annotations

from worker.ops.cli import main

raise SystemExit(main())
