"""Continuations for Pydantic AI agents.

``Continuations`` is a Pydantic AI capability; ``run`` and ``resume`` are thin conveniences
over it. See the project README for the guarantees.
"""

from __future__ import annotations

try:
    import pydantic_ai as _pydantic_ai  # noqa: F401 - import guard
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    from continuations_core import MissingExtra

    raise MissingExtra("pydantic_ai", "pydantic-ai") from exc

from continuations_core import Completed, Continuation, Outcome, Suspended, requires_approval

from ._capability import Continuations
from ._run import prepare, resume, resume_run, resume_sync, run, run_sync

__all__ = [
    "Completed",
    "Continuation",
    "Continuations",
    "Outcome",
    "Suspended",
    "prepare",
    "requires_approval",
    "resume",
    "resume_run",
    "resume_sync",
    "run",
    "run_sync",
]
