"""``python -m continuations_core``: the command line (see :mod:`continuations_core.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
