"""The one exception hierarchy of agent-continuations.

Every error a caller can act on derives from :class:`ContinuationError`. Messages say what
happened and what to do next, and carry the continuation id when one is known. Nothing here
is raised for a run that suspends: "suspended, awaiting a decision" is an outcome.

::

    ContinuationError
    ├── SchemaError                   the document is not a continuation we can read
    │   ├── MalformedContinuation     not JSON, or fields do not match the schema
    │   └── UnsupportedSchemaVersion  written by a newer (or unknown) schema version
    ├── SignatureError                integrity (G6)
    │   ├── ContinuationTampered      the signed state does not match its MAC
    │   │   └── BrokenCheckpoint      a checkpoint's appended segments do not chain
    │   ├── UnsignedContinuation      no signature and the caller did not opt out
    │   └── UnknownKey                signed with a key id this keyring does not hold
    ├── DecisionError                 decisions (G4)
    │   ├── InvalidDecision           wrong kind, bad edited args, or not bound to the call
    │   │   └── UnknownPath           the path does not name a pending call
    │   ├── AlreadyDecided            the path has a decision; replacing it must be explicit
    │   └── MissingDecisions          some pending calls are still undecided
    ├── GateError                     a gated call could not be decided safely (G13)
    │   ├── UngatedCall               a marked tool was reached outside a gate; it did not run
    │   └── DuplicateCallId           one model response reused a call id; nothing ran
    ├── ContinuationExpired           a pending call passed its deadline (G8)
    ├── ResumeError                   the continuation cannot be resumed here
    │   ├── AgentDrift                the agent's tools no longer match the frame (G10)
    │   ├── StaleContinuation         an older copy than the last one seen (G5)
    │   ├── ReplayMismatch            a re-entered tool body did not repeat what was recorded
    │   ├── StepInterrupted           a non-idempotent step started but recorded no result
    │   └── ApprovedCallFailed        an approved call raised; it is not re-run automatically
    ├── StoreError                    persistence
    │   ├── StoreUnavailable          the backend failed or cannot be reached
    │   ├── ContinuationNotFound      no such id in the store
    │   ├── ContinuationFailed        it failed for good (G14); retry it to try again
    │   └── ConflictError             a compare-and-set lost (G5)
    │       ├── AlreadyClaimed        another resumer won, or it was already resumed
    │       │   └── ClaimSuperseded   a write under a superseded fencing token (G14)
    │       └── BackingOff            it failed recently and waits before its next attempt
    ├── AccessError                   the approval inbox refused a person
    │   ├── AuthenticationFailed      no trustworthy identity came with the request
    │   └── NotAuthorized             the principal may not decide this request
    ├── NotificationFailed            a webhook notification could not be delivered
    └── ConfigurationError            the package is set up wrongly
        ├── MissingExtra              an optional dependency is not installed
        └── UnsupportedNesting        a sub-agent started where its delegating call cannot see it
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

__all__ = [
    "AccessError",
    "AgentDrift",
    "AlreadyClaimed",
    "AlreadyDecided",
    "ApprovedCallFailed",
    "AuthenticationFailed",
    "BackingOff",
    "BrokenCheckpoint",
    "ClaimSuperseded",
    "ConfigurationError",
    "ConflictError",
    "ContinuationError",
    "ContinuationExpired",
    "ContinuationFailed",
    "ContinuationNotFound",
    "ContinuationTampered",
    "DecisionError",
    "DispatchFailed",
    "DuplicateCallId",
    "GateError",
    "InvalidDecision",
    "MalformedContinuation",
    "MissingDecisions",
    "MissingExtra",
    "NotAuthorized",
    "NotificationFailed",
    "ReplayMismatch",
    "ResumeError",
    "SchemaError",
    "SignatureError",
    "StaleContinuation",
    "StepInterrupted",
    "StoreError",
    "StoreUnavailable",
    "UngatedCall",
    "UnknownKey",
    "UnknownPath",
    "UnsignedContinuation",
    "UnsupportedNesting",
    "UnsupportedSchemaVersion",
]


class ContinuationError(Exception):
    """Root of every error raised by agent-continuations.

    Attributes:
        continuation_id: The id of the continuation concerned, when known.
    """

    def __init__(self, message: str, *, continuation_id: str | None = None) -> None:
        self.continuation_id = continuation_id
        if continuation_id is not None:
            message = f"{message} [continuation {continuation_id}]"
        super().__init__(message)


class SchemaError(ContinuationError):
    """The document is not a continuation this version can read."""


class MalformedContinuation(SchemaError):
    """The text is not JSON, or its fields do not match the continuation schema."""


class UnsupportedSchemaVersion(SchemaError):
    """The document was written with a schema version this package cannot load."""


class SignatureError(ContinuationError):
    """The continuation's integrity could not be established."""


class ContinuationTampered(SignatureError):
    """The signed part of the continuation does not match its MAC."""


class BrokenCheckpoint(ContinuationTampered):
    """A checkpoint's appended segment is torn, missing, out of order, foreign or modified."""


class UnsignedContinuation(SignatureError):
    """The continuation carries no signature and the caller did not allow unsigned ones."""


class UnknownKey(SignatureError):
    """The continuation was signed with a key id that the keyring does not hold."""


class DecisionError(ContinuationError):
    """A decision cannot be applied."""


class InvalidDecision(DecisionError):
    """A decision does not fit its pending call: wrong kind, bad args, or a binding mismatch."""


class UnknownPath(InvalidDecision):
    """The path does not name a pending call of this continuation."""


class AlreadyDecided(DecisionError):
    """The path already has a decision; a second one is refused unless it replaces it explicitly.

    Attributes:
        path: The decided path.
        by: Who made the existing decision, if recorded.
        at: When the existing decision was made.
        kind: The existing decision's kind (``approve``, ``deny`` or ``respond``).
    """

    def __init__(
        self,
        path: Sequence[str],
        *,
        by: str | None,
        at: datetime,
        kind: str,
        continuation_id: str | None = None,
    ) -> None:
        self.path = tuple(path)
        self.by, self.at, self.kind = by, at, kind
        who = by or "someone (not recorded)"
        super().__init__(
            f"{' > '.join(self.path)} was already decided ({kind}) by {who} at "
            f"{at.isoformat(timespec='seconds')}. A second decision is refused; to override it, "
            "decide again with replace=True (the override is audited).",
            continuation_id=continuation_id,
        )


class MissingDecisions(DecisionError):
    """Some pending calls have no decision yet.

    Attributes:
        paths: The paths of the undecided calls.
    """

    def __init__(
        self, paths: Sequence[tuple[str, ...]], *, continuation_id: str | None = None
    ) -> None:
        self.paths = [tuple(p) for p in paths]
        shown = ", ".join(" > ".join(p) for p in self.paths)
        super().__init__(
            f"{len(self.paths)} pending call(s) have no decision: {shown}. "
            "Approve, deny or respond to each before resuming; nothing was changed.",
            continuation_id=continuation_id,
        )


class GateError(ContinuationError):
    """A gated call could not be decided safely, so nothing ran (G13)."""


class UngatedCall(GateError):
    """A ``@requires_approval`` tool was reached outside a gate that decided on this call.

    Its body did not run. Typical causes: a sub-agent built without the ``Continuations``
    capability or plugin, a run started in a way that cannot suspend (``run_stream``), or a
    direct call of the function.
    """


class DuplicateCallId(GateError):
    """One model response used the same tool-call id twice; no call of that response ran."""


class ContinuationExpired(ContinuationError):
    """A pending call passed its deadline and the resumer asked for expiry to raise."""


class ResumeError(ContinuationError):
    """The continuation cannot be resumed with what the caller supplied."""


class AgentDrift(ResumeError):
    """The agent's tools no longer match what the suspended frame recorded."""


class StaleContinuation(ResumeError):
    """The continuation is older than the last one seen for its run."""


class ReplayMismatch(ResumeError):
    """A delegating tool body, re-entered on resume, did not repeat what its frame recorded.

    It did not start again a sub-agent run that was suspended (its prompt changed, say), so
    that run's decisions cannot be applied. Nothing of that run ran.
    """


class StepInterrupted(ResumeError):
    """A step marked not idempotent started before a crash and recorded no result.

    It is not run again; check its effect, then record the outcome or start a new run.
    """


class ApprovedCallFailed(ResumeError):
    """An approved call raised (or was cut off by its run failing) in an earlier attempt.

    A person approved one execution; running it again is a new decision, so it is never
    repeated automatically (G14). Check the call's effect, then retry the continuation
    explicitly (``continuations retry ID`` or ``store.retry``) to run it again.
    """


class StoreError(ContinuationError):
    """A store operation failed."""


class StoreUnavailable(StoreError):
    """The store's backend failed or cannot be reached."""


class ContinuationNotFound(StoreError):
    """The store holds no continuation with this id."""


class ContinuationFailed(StoreError):
    """The continuation is ``failed``: a permanent error, or its attempts ran out (G14).

    Nothing resumes it until someone retries it (``continuations retry ID`` or
    ``store.retry``); its last error says why it failed.
    """


class ConflictError(StoreError):
    """A compare-and-set lost against a concurrent writer."""


class AlreadyClaimed(ConflictError):
    """Another resumer holds or consumed this continuation; it can be resumed only once."""


class AccessError(ContinuationError):
    """The approval inbox refused a person; nothing was decided."""


class AuthenticationFailed(AccessError):
    """No trustworthy identity came with the request (HTTP 401).

    Raise it from an ``authenticate`` callback to refuse a request with a message.
    """


class NotAuthorized(AccessError):
    """The principal may not decide this request (HTTP 403): not an approver, the person who
    started the run (separation of duties), or refused by the application's policy."""


class DispatchFailed(StoreError):
    """The store's write committed, but its dispatcher was not told (see ``dispatch``).

    The decision (or suspension) is stored and the continuation is in its new status: nothing
    is lost and nothing ran. Only the engine was not told; it finds ready work in the store
    when its worker starts, or dispatch again once the engine is reachable.
    """


class NotificationFailed(ContinuationError):
    """A webhook notification was not accepted by its receiver after the configured retries."""


class ClaimSuperseded(AlreadyClaimed):
    """A write under a claim whose fencing token is no longer the live one was refused (G14).

    The claim's lease expired and another process took the run over, or the claim was
    released, failed or completed. Nothing was written: stop this run and start no tool.
    """


class BackingOff(ConflictError):
    """The continuation failed recently and waits before its next automatic attempt.

    The message says when it becomes claimable again; retry it to claim it sooner.
    """


class ConfigurationError(ContinuationError):
    """The package is configured wrongly."""


class UnsupportedNesting(ConfigurationError):
    """A sub-agent run started where its delegating tool call cannot see or record it.

    For example in a task that outlived the tool call that created it, or in a thread started
    without the caller's context. The run did not start.
    """


class MissingExtra(ConfigurationError):
    """An optional dependency is missing; the message names the pip extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{module!r} is not installed. Install it with: "
            f'pip install "agent-continuations[{extra}]"'
        )
