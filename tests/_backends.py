"""Store URLs for multi-process tests, one isolated namespace per test (filled in below)."""

from __future__ import annotations

from pathlib import Path

BACKENDS = ["sqlite"]


def backend_url(name: str, tmp: Path) -> str:
    if name == "sqlite":
        return f"sqlite:///{tmp / 'fleet.db'}"
    raise NotImplementedError(name)
