"""Continuations for Strands agents.

``Continuations`` is a Strands plugin; ``run`` and ``resume`` are thin conveniences over it.
The continuation documents and outcome types are the same as for every other adapter.
"""

from __future__ import annotations

try:
    import strands as _strands  # noqa: F401 - import guard
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    from continuations_core import MissingExtra

    raise MissingExtra("strands", "strands") from exc

from continuations_core import Completed, Continuation, Outcome, Suspended, requires_approval

from ._plugin import Continuations
from ._run import resume, resume_run, resume_sync, run, run_sync

__all__ = [
    "Completed",
    "Continuation",
    "Continuations",
    "Outcome",
    "Suspended",
    "requires_approval",
    "resume",
    "resume_run",
    "resume_sync",
    "run",
    "run_sync",
]
