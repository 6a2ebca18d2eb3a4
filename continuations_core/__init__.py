"""agent-continuations core: framework-neutral continuations for suspended agent runs.

Mark tools with :func:`requires_approval`; an adapter (``continuations_pydantic_ai``,
``continuations_strands``) suspends runs into a signed :class:`Continuation` document that any
process with the same agent definitions can resume after a person decided.
"""

from __future__ import annotations

from ._decisions import CallPlan, FramePlan
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
    Continuation,
    DecisionRecord,
    Deny,
    Frame,
    PendingCall,
    Request,
    Respond,
    Signature,
    json_schema,
)
from ._signing import Keyring
from .errors import (
    AgentDrift,
    AlreadyClaimed,
    ConfigurationError,
    ConflictError,
    ContinuationError,
    ContinuationExpired,
    ContinuationNotFound,
    ContinuationTampered,
    DecisionError,
    InvalidDecision,
    MalformedContinuation,
    MissingDecisions,
    MissingExtra,
    ResumeError,
    SchemaError,
    SignatureError,
    StaleContinuation,
    StoreError,
    StoreUnavailable,
    UnknownKey,
    UnknownPath,
    UnsignedContinuation,
    UnsupportedSchemaVersion,
)

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "AgentDrift",
    "AlreadyClaimed",
    "ApprovalSpec",
    "Approve",
    "CallPlan",
    "CallScope",
    "Completed",
    "ConfigurationError",
    "ConflictError",
    "Continuation",
    "ContinuationError",
    "ContinuationExpired",
    "ContinuationNotFound",
    "ContinuationTampered",
    "DecisionError",
    "DecisionRecord",
    "Deny",
    "EveryNTurns",
    "Frame",
    "FramePlan",
    "FrameSuspended",
    "InvalidDecision",
    "Keyring",
    "MalformedContinuation",
    "MissingDecisions",
    "MissingExtra",
    "Outcome",
    "PauseWhen",
    "PendingCall",
    "PolicyState",
    "Request",
    "Respond",
    "ResumeError",
    "SchemaError",
    "Signature",
    "SignatureError",
    "StaleContinuation",
    "StoreError",
    "StoreUnavailable",
    "Suspended",
    "SuspensionPolicy",
    "TokenBudget",
    "UnknownKey",
    "UnknownPath",
    "UnsignedContinuation",
    "UnsupportedSchemaVersion",
    "WallClockBudget",
    "__version__",
    "approval_spec",
    "json_schema",
    "requires_approval",
]
