"""Building blocks of the store conformance suite: a realistic continuation and small checks.

Shared by :mod:`.store_scenarios` and :mod:`.store_fencing`; plain functions, no test framework.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .._protocol import new_run_id
from .._schema import ChildRun, Continuation, DecisionRecord, Frame, PendingCall
from .._signing import Keyring, digest
from ..stores import Store

__all__ = [
    "ContinuationFactory",
    "Scenario",
    "check",
    "decision",
    "make_continuation",
    "raises",
    "ready",
]

_TRANSFER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"amount": {"type": "integer", "minimum": 1}, "to": {"type": "string"}},
    "required": ["amount", "to"],
    "additionalProperties": False,
}
_ASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"question": {"type": "string"}},
    "required": ["question"],
}


class ContinuationFactory(Protocol):
    """Builds a continuation with ``leaves`` approval requests plus one input request."""

    def __call__(
        self, keys: Keyring | None = None, *, leaves: int = 2, run_id: str | None = None
    ) -> Continuation: ...


Scenario = Callable[[Store, ContinuationFactory], Awaitable[None]]


def make_continuation(
    keys: Keyring | None = None, *, leaves: int = 2, run_id: str | None = None
) -> Continuation:
    """Build a realistic nested continuation (framework ``"test"``), signed when ``keys`` is given.

    The root agent ``orchestrator`` waits on a ``delegate_payments`` call whose sub-agent
    ``payments`` waits for approval of ``leaves`` ``transfer`` calls (the first with a
    deadline), and on an ``ask_user`` input call of its own. With ``leaves=0`` only the input
    call is pending.
    """
    transfers = tuple(
        PendingCall(
            call_id=f"call_{i + 1}",
            tool="transfer",
            args={"amount": 100 * (i + 1), "to": f"acct-{i + 1:03d}"},
            kind="approval",
            reason="Transfers move money out of the company account.",
            expires_at=datetime.now(UTC) + timedelta(days=7) if i == 0 else None,
            args_schema=_TRANSFER_SCHEMA,
        )
        for i in range(leaves)
    )
    child = Frame(
        framework="test",
        agent="payments",
        fingerprint={"transfer": digest(_TRANSFER_SCHEMA)},
        state={"messages": [{"role": "user", "content": "Pay the open invoices."}]},
        pending=transfers,
    )
    pending: list[PendingCall] = []
    if leaves:
        pending.append(
            PendingCall(
                call_id="call_1",
                tool="delegate_payments",
                args={"task": "Pay the open invoices."},
                kind="child",
                children=(ChildRun(agent="payments", prompt="0" * 64, frame=child),),
                metadata={"runs": [], "steps": {}},
            )
        )
    pending.append(
        PendingCall(
            call_id="call_2",
            tool="ask_user",
            args={"question": "Which cost centre should be charged?"},
            kind="input",
            args_schema=_ASK_SCHEMA,
        )
    )
    root = Frame(
        framework="test",
        agent="orchestrator",
        fingerprint={"delegate_payments": digest({}), "ask_user": digest(_ASK_SCHEMA)},
        state={"messages": [{"role": "user", "content": "Settle this month's invoices."}]},
        pending=tuple(pending),
        policy_state={"turns": 2},
    )
    cont = Continuation(run_id=run_id or new_run_id(), root=root)
    return cont.sign(keys) if keys is not None else cont


def check(condition: bool, message: str) -> None:
    """Raise ``AssertionError(message)`` unless ``condition`` holds."""
    if not condition:
        raise AssertionError(message)


async def raises(
    expected: type[BaseException], awaitable: Awaitable[Any], what: str
) -> BaseException:
    """Await ``awaitable`` and return the ``expected`` error it raises (or fail naming ``what``)."""
    try:
        await awaitable
    except expected as exc:
        return exc
    raise AssertionError(f"{what}: expected {expected.__name__}, nothing was raised")


def decision(cont: Continuation, index: int, by: str = "alice") -> DecisionRecord:
    """A valid decision for request ``index``: approve approvals, answer inputs."""
    request = cont.requests[index]
    if request.kind == "input":
        decided = cont.respond(request, "CC-42", by=by)
    else:
        decided = cont.approve(request, by=by, comment="looks right")
    record = decided.decision_for(request.path)
    assert record is not None
    return record


async def ready(store: Store, make: ContinuationFactory, **kwargs: Any) -> Continuation:
    """Save a continuation built by ``make`` and decide all of it, so it is ``ready``."""
    cont = make(**kwargs)
    await store.save(cont)
    for i in range(len(cont.requests)):
        await store.decide(cont.id, decision(cont, i))
    stored = await store.get(cont.id)
    check(stored.status == "ready", f"all decided should be ready, got {stored.status}")
    return cont
