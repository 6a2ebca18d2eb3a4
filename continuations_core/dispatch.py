"""Who is told that a continuation can run: the dispatch seam between stores and engines.

A store calls its :class:`Dispatcher` at two moments:

- :meth:`Dispatcher.ready` when the last decision of a suspension lands (from
  :meth:`Store.decide`, which the CLI's ``decide`` and the inbox use, or a :meth:`Store.save`
  of a continuation that already carries every decision): it can be resumed now;
- :meth:`Dispatcher.expire_at` when a suspension is stored and one of its requests has a
  deadline: at ``when`` its undecided requests expire (``on_expired``).

Both are called after the store's write committed, never inside it, and at most once per
event: a second decision on a continuation that is already ready, or a replaced decision,
dispatches nothing. The store stays the truth: a dispatcher only hands work to an engine, and
every engine must still claim the continuation under the store's rules (fencing token,
``seq`` check, decision compare-and-set) before anything runs. So a dispatch that arrives
twice, or late, resumes nothing twice.

:class:`StoreDispatcher` is the built-in one and the default: the store's own ``ready`` status
is the dispatch (Postgres also sends ``NOTIFY`` in the same transaction), and the built-in
worker finds ready work with ``claim_next``. An engine such as DBOS installs its own with
``store.dispatcher = ...`` (or ``open_store(url, dispatcher=...)``).

A dispatcher that raises does not undo the write: the decision is stored and the continuation
is ``ready`` in the store. The store raises :class:`~continuations_core.errors.DispatchFailed`,
naming the continuation, so the caller knows the engine was not told; an engine re-dispatches
what is ready in the store when its worker starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._schema import Continuation

__all__ = ["BUILTIN", "Dispatcher", "StoreDispatcher", "earliest_deadline"]


class Dispatcher(ABC):
    """Told when a stored continuation can run, or when its requests expire."""

    @abstractmethod
    async def ready(self, continuation_id: str, seq: int) -> None:
        """Every request of continuation ``continuation_id`` (at step ``seq``) is decided.

        Called once, after the write that made it ``ready`` committed. Must be idempotent
        for the pair: a retried call must not schedule a second resume.
        """

    @abstractmethod
    async def expire_at(self, continuation_id: str, seq: int, when: datetime) -> None:
        """Continuation ``continuation_id`` (step ``seq``) was stored with a deadline.

        ``when`` is its earliest request deadline (timezone-aware UTC). At that moment, if
        the continuation is still waiting for a decision, its ``on_expired`` applies. Called
        once, after the suspension was stored.
        """


class StoreDispatcher(Dispatcher):
    """The built-in dispatcher: the store's ``ready`` status is the dispatch.

    The built-in worker polls with ``claim_next`` (woken by ``LISTEN/NOTIFY`` on Postgres) and
    applies ``on_expired`` when it resumes; nothing else needs telling.
    """

    async def ready(self, continuation_id: str, seq: int) -> None:
        """Nothing to do: the row is ``ready`` (and Postgres notified in its transaction)."""

    async def expire_at(self, continuation_id: str, seq: int, when: datetime) -> None:
        """Nothing to do: an expired request is applied when the continuation is resumed."""

    def __repr__(self) -> str:
        return "StoreDispatcher()"


#: The default dispatcher of every store.
BUILTIN: Dispatcher = StoreDispatcher()


def earliest_deadline(cont: Continuation) -> datetime | None:
    """The earliest ``expires_at`` of ``cont``'s undecided requests, at any depth, if any."""
    decided = {r.path for r in cont.decisions}
    deadlines = [
        call.expires_at
        for path, _, call in cont.leaves()
        if call.expires_at is not None and path not in decided
    ]
    return min(deadlines) if deadlines else None
