"""agent-continuations core: framework-neutral continuations for suspended agent runs.

Mark tools with :func:`requires_approval`; an adapter (``continuations_pydantic_ai``,
``continuations_strands``) suspends runs into a signed :class:`Continuation` document that any
process with the same agent definitions can resume after a person decided.

The stores and the durable-run helpers are imported on first use (``from continuations_core
import open_store`` works as usual): they bring in ``asyncio`` and ``sqlite3``, which a process
that only defines tools or reads a continuation does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._decisions import CallPlan, FramePlan
from ._limits import MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_VALUE_BYTES, MAX_VALUE_DEPTH
from ._markers import ApprovalSpec, approval_spec, requires_approval
from ._policies import (
    EveryNTurns,
    PauseWhen,
    PolicyState,
    SuspensionPolicy,
    TokenBudget,
    WallClockBudget,
)
from ._protocol import CallScope, Completed, FrameSuspended, Outcome, Suspended
from ._schema import (
    SCHEMA_VERSION,
    Approve,
    ChildRun,
    Continuation,
    DecisionRecord,
    Deny,
    Frame,
    PendingCall,
    Request,
    Respond,
    RunKey,
    Signature,
    TraceContext,
    json_schema,
)
from ._signing import Keyring
from .errors import (
    AccessError,
    AgentDrift,
    AlreadyClaimed,
    AlreadyDecided,
    ApprovedCallFailed,
    AuthenticationFailed,
    BackingOff,
    BrokenCheckpoint,
    ClaimSuperseded,
    ConfigurationError,
    ConflictError,
    ContinuationError,
    ContinuationExpired,
    ContinuationFailed,
    ContinuationNotFound,
    ContinuationTampered,
    DecisionError,
    DispatchFailed,
    DuplicateCallId,
    GateError,
    InvalidDecision,
    MalformedContinuation,
    MissingDecisions,
    MissingExtra,
    NotAuthorized,
    NotificationFailed,
    ReplayMismatch,
    ResumeError,
    SchemaError,
    SignatureError,
    StaleContinuation,
    StepInterrupted,
    StoreError,
    StoreUnavailable,
    UngatedCall,
    UnknownKey,
    UnknownPath,
    UnsignedContinuation,
    UnsupportedNesting,
    UnsupportedSchemaVersion,
)

if TYPE_CHECKING:
    from ._durable import idempotency_key, idempotent
    from ._steps import step
    from .dispatch import Dispatcher, StoreDispatcher
    from .stores import (
        AuditEvent,
        Claim,
        MemoryStore,
        SQLiteStore,
        Store,
        StoredContinuation,
        open_store,
    )

# Public names imported on first access (PEP 562), by the module that defines them.
_LAZY: dict[str, str] = {
    "idempotency_key": "._durable",
    "idempotent": "._durable",
    "step": "._steps",
    "Dispatcher": ".dispatch",
    "StoreDispatcher": ".dispatch",
    "AuditEvent": ".stores",
    "Claim": ".stores",
    "MemoryStore": ".stores",
    "SQLiteStore": ".stores",
    "Store": ".stores",
    "StoredContinuation": ".stores",
    "open_store": ".stores",
}

__version__ = "0.1.0"

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "SCHEMA_VERSION",
    "AccessError",
    "AgentDrift",
    "AlreadyClaimed",
    "AlreadyDecided",
    "ApprovalSpec",
    "Approve",
    "ApprovedCallFailed",
    "AuditEvent",
    "AuthenticationFailed",
    "BackingOff",
    "BrokenCheckpoint",
    "CallPlan",
    "CallScope",
    "ChildRun",
    "Claim",
    "ClaimSuperseded",
    "Completed",
    "ConfigurationError",
    "ConflictError",
    "Continuation",
    "ContinuationError",
    "ContinuationExpired",
    "ContinuationFailed",
    "ContinuationNotFound",
    "ContinuationTampered",
    "DecisionError",
    "DecisionRecord",
    "Deny",
    "DispatchFailed",
    "Dispatcher",
    "DuplicateCallId",
    "EveryNTurns",
    "Frame",
    "FramePlan",
    "FrameSuspended",
    "GateError",
    "InvalidDecision",
    "Keyring",
    "MalformedContinuation",
    "MemoryStore",
    "MissingDecisions",
    "MissingExtra",
    "NotAuthorized",
    "NotificationFailed",
    "Outcome",
    "PauseWhen",
    "PendingCall",
    "PolicyState",
    "ReplayMismatch",
    "Request",
    "Respond",
    "ResumeError",
    "RunKey",
    "SQLiteStore",
    "SchemaError",
    "Signature",
    "SignatureError",
    "StaleContinuation",
    "StepInterrupted",
    "Store",
    "StoreDispatcher",
    "StoreError",
    "StoreUnavailable",
    "StoredContinuation",
    "Suspended",
    "SuspensionPolicy",
    "TokenBudget",
    "TraceContext",
    "UngatedCall",
    "UnknownKey",
    "UnknownPath",
    "UnsignedContinuation",
    "UnsupportedNesting",
    "UnsupportedSchemaVersion",
    "WallClockBudget",
    "__version__",
    "approval_spec",
    "idempotency_key",
    "idempotent",
    "json_schema",
    "open_store",
    "requires_approval",
    "step",
]


def __getattr__(name: str) -> Any:
    """Import a lazily exported name on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """Every public name, the lazily exported ones included."""
    return sorted({*globals(), *__all__})
