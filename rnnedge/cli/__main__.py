"""`python -m rnnedge.cli`: the same entry point as the `rnnedge` command."""

from __future__ import annotations

from rnnedge.cli.main import main

raise SystemExit(main())
