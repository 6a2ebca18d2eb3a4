"""The continuation document, schema version 3 (DESIGN.md section 2, G11).

A :class:`Continuation` holds the root :class:`Frame` of a suspended run. Each frame holds one
agent's native state (serialized by the framework's own adapters) and its pending calls; a
pending call of kind ``child`` holds the sub-agent runs it is waiting on (:class:`ChildRun`,
one per sub-agent run the tool body started and that did not complete), so the tree can be
arbitrarily deep, several sub-agents may wait under one call, and frameworks may mix.

A path alternates call segments (``"<tool>:<call_id>@<step>"``) and, below a delegating call,
run segments naming the sub-agent run (``"<agent>#<prompt digest>.<occurrence>"``).

Everything but ``signature`` and ``decisions`` is signed. Decisions live outside the signed
part and are bound to their call by ``(path, tool, args_digest)``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ._limits import MAX_DEPTH, check_tree, loads
from ._migrate import load, signed_part
from ._paths import RunKey, run_segment, segment
from ._signing import ALGORITHM, Keyring, canonical_json, digest
from .errors import (
    ContinuationTampered,
    MalformedContinuation,
    StaleContinuation,
    UnknownPath,
    UnsignedContinuation,
)

__all__ = [
    "SCHEMA_VERSION",
    "Approve",
    "CallKind",
    "ChildRun",
    "Continuation",
    "Decision",
    "DecisionRecord",
    "Deny",
    "Frame",
    "PendingCall",
    "Request",
    "Respond",
    "RunKey",
    "Signature",
    "TraceContext",
    "json_schema",
    "run_segment",
    "segment",
]

SCHEMA_VERSION = 4

CallKind = Literal["approval", "input", "child"]
Path = tuple[str, ...]


def _now() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


class Approve(_Model):
    """Run the pending call, optionally with edited args (validated against the tool schema)."""

    kind: Literal["approve"] = "approve"
    args: dict[str, Any] | None = None


class Deny(_Model):
    """Do not run the call; the model receives ``message`` as the call's result."""

    kind: Literal["deny"] = "deny"
    message: str = "The tool call was denied."


class Respond(_Model):
    """Answer an ``input`` call (an external tool or a question) with ``value``."""

    kind: Literal["respond"] = "respond"
    value: Any = None


Decision = Annotated[Approve | Deny | Respond, Field(discriminator="kind")]


_TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


class TraceContext(_Model):
    """A W3C trace context: where the span that suspended, or decided, this run was.

    Attributes:
        traceparent: The W3C ``traceparent`` header value.
        tracestate: The W3C ``tracestate`` header value, if any.
    """

    traceparent: str = Field(pattern=_TRACEPARENT)
    tracestate: str | None = Field(default=None, max_length=512)


class DecisionRecord(_Model):
    """One decision, bound to its pending call, with who made it and when.

    ``trace`` is the context of the ``continuation.decide`` span that stored it, if any, so a
    resume links to it.
    """

    path: tuple[str, ...]
    tool: str
    args_digest: str
    decision: Decision
    by: str | None = None
    at: datetime = Field(default_factory=_now)
    comment: str | None = None
    trace: TraceContext | None = None


class Signature(_Model):
    """The MAC over the signed part, with its algorithm and key id."""

    alg: Literal["HMAC-SHA256"] = ALGORITHM
    kid: str
    mac: str


class PendingCall(_Model):
    """A tool call that has not run.

    Attributes:
        call_id: The framework's tool-call id (unique within its frame only).
        tool: The tool name.
        step: The model turn of the frame that made the call (0 for the first response), so a
            call id reused in a later turn is a different call.
        approvers: Who may decide this call (principal ids, roles or groups), from
            ``@requires_approval(approvers=...)``; empty means any authorized person.
        args: The normalized args (always a dict).
        kind: ``approval`` waits for a person, ``input`` for a value from outside, ``child``
            for a delegating call whose sub-agent runs are in ``children``.
        reason: Why a person must decide, shown in a UI.
        expires_at: The deadline for a decision, if any (G8).
        args_schema: The tool's JSON Schema, used to validate edited args.
        children: The sub-agent runs a ``child`` call waits on, each with its frame (several
            when the tool body ran sub-agents concurrently).
        metadata: Data needed to re-enter this call: the sub-agent runs that completed
            (``runs``) and the results of journaled steps (``steps``), plus adapter-owned
            data (JSON only).
    """

    call_id: str
    tool: str
    step: int | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    kind: CallKind
    approvers: tuple[str, ...] = ()
    reason: str | None = None
    expires_at: datetime | None = None
    args_schema: dict[str, Any] | None = None
    children: tuple[ChildRun, ...] = ()
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _runs_are_distinct(self) -> PendingCall:
        keys = [run.key for run in self.children]
        if len(set(keys)) != len(keys):
            raise ValueError("two sub-agent runs of one call have the same identity")
        return self

    @property
    def segment(self) -> str:
        """This call's path segment: ``"<tool>:<call_id>@<step>"`` (see :func:`segment`)."""
        return segment(self.tool, self.call_id, self.step)

    @property
    def args_digest(self) -> str:
        """The digest that decisions are bound to."""
        return digest(self.args)


class Frame(_Model):
    """The state of one agent at one level of a suspended run.

    Attributes:
        framework: The adapter that owns ``state`` (e.g. ``"pydantic-ai"``).
        agent: The agent's name.
        fingerprint: Tool name to digest of its parameter schema, to detect drift (G10).
        state: The framework's native state, serialized by the framework's own adapters.
        pending: The calls this frame is waiting on.
        policy_state: Suspension-policy counters and budgets (G7).
        suspended_by: ``"calls"`` when waiting on pending calls, else the policy that fired.
    """

    framework: str
    agent: str
    fingerprint: dict[str, str] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict)
    pending: tuple[PendingCall, ...] = ()
    policy_state: dict[str, Any] = Field(default_factory=dict)
    suspended_by: str = "calls"


class ChildRun(_Model):
    """A sub-agent run a delegating call waits on, with its frame.

    Attributes:
        agent: The sub-agent's name.
        prompt: The digest of the prompt it was started with (``None`` when recorded by schema
            version 2).
        occurrence: How many runs of this agent with this prompt the call started before it.
        frame: The run's suspended (or, in a checkpoint, current) frame.
    """

    agent: str
    prompt: str | None = None
    occurrence: int = 0
    frame: Frame

    @property
    def key(self) -> RunKey:
        """The run's identity inside its delegating call."""
        return RunKey(self.agent, self.prompt, self.occurrence)

    @property
    def segment(self) -> str:
        """The run's path segment."""
        return self.key.segment


class Request(_Model):
    """The flat view of one leaf pending call, for a UI.

    It names what will actually run: the innermost tool and its args, never the synthetic
    delegating call.
    """

    path: tuple[str, ...]
    agents: tuple[str, ...]
    tool: str
    args: dict[str, Any]
    kind: Literal["approval", "input"]
    reason: str | None = None
    expires_at: datetime | None = None
    approvers: tuple[str, ...] = ()


def _walk(
    frame: Frame, path: Path, agents: tuple[str, ...]
) -> Iterator[tuple[Path, tuple[str, ...], PendingCall]]:
    chain = (*agents, frame.agent)
    for call in frame.pending:
        here = (*path, call.segment)
        if call.kind == "child":
            for run in call.children:
                yield from _walk(run.frame, (*here, run.segment), chain)
        else:
            yield here, chain, call


class Continuation(_Model):
    """The whole state of a suspended run, as one signed, versioned document.

    Instances are immutable: :meth:`approve`, :meth:`deny` and :meth:`respond` return a new
    continuation with the decision attached.

    ``started_by`` names the principal who started the run (signed, so an approval UI can
    refuse to let them approve their own requests). ``trace`` is the W3C context of the
    ``continuation.suspend`` span (signed), so the resume links to it or continues its trace.
    """

    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    run_id: str
    seq: int = 0
    created_at: datetime = Field(default_factory=_now)
    started_by: str | None = None
    trace: TraceContext | None = None
    root: Frame
    signature: Signature | None = None
    decisions: tuple[DecisionRecord, ...] = ()

    # The canonical bytes that were signed, as read from the document, so that verification
    # covers exactly what was stored rather than a re-serialization of it.
    _signed_bytes: bytes | None = PrivateAttr(default=None)
    # Digest of the signed part as loaded, so an in-memory edit of a loaded copy is caught too.
    _loaded_digest: str | None = PrivateAttr(default=None)
    # For a document upgraded from an older schema whose paths changed: old path -> new path,
    # so decisions a store recorded against the old paths still bind to their calls.
    _legacy_paths: dict[Path, Path] = PrivateAttr(default_factory=dict)
    # For a checkpoint read as a base plus appended segments (``_segments.Chain``): what it
    # was built from, so :meth:`verify` checks the base's signature and each segment's MAC.
    _chain: Any = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # The cached signed bytes are a private detail of how a copy was loaded; two
        # continuations with the same fields are the same document.
        if not isinstance(other, Continuation):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = BaseModel.__hash__

    # -- views -------------------------------------------------------------------------

    def leaves(self) -> list[tuple[Path, tuple[str, ...], PendingCall]]:
        """Every leaf pending call with its path and agent chain, in tree order."""
        return list(_walk(self.root, (), ()))

    @property
    def requests(self) -> list[Request]:
        """The leaf pending calls, flattened for a UI."""
        out: list[Request] = []
        for path, agents, call in self.leaves():
            kind: Literal["approval", "input"] = "input" if call.kind == "input" else "approval"
            out.append(
                Request(
                    path=path,
                    agents=agents,
                    tool=call.tool,
                    args=call.args,
                    kind=kind,
                    reason=call.reason,
                    expires_at=call.expires_at,
                    approvers=call.approvers,
                )
            )
        return out

    def pending_call(self, path: Path | Request) -> PendingCall:
        """Return the leaf pending call at ``path``.

        Raises:
            UnknownPath: If no leaf pending call has that path.
        """
        target = tuple(path.path if isinstance(path, Request) else path)
        for p, _agents, call in self.leaves():
            if p == target:
                return call
        known = "; ".join(" > ".join(p) for p, _, _ in self.leaves()) or "none"
        raise UnknownPath(
            f"No pending call at path {' > '.join(target) or '()'}. Pending paths: {known}.",
            continuation_id=self.id,
        )

    def decision_for(self, path: Path) -> DecisionRecord | None:
        """Return the decision attached for ``path``, if any."""
        for record in self.decisions:
            if record.path == tuple(path):
                return record
        return None

    @property
    def undecided(self) -> list[Path]:
        """Paths of leaf pending calls that have no decision yet."""
        decided = {r.path for r in self.decisions}
        return [p for p, _, _ in self.leaves() if p not in decided]

    def check_fresh(self, last_seen_seq: int) -> None:
        """Refuse a stale copy: one older than the last ``seq`` seen for this run (G5).

        A store-less caller records ``(run_id, seq)`` of every continuation it resumed or
        produced and calls this before resuming.

        Raises:
            StaleContinuation: If ``seq`` is not newer than ``last_seen_seq``.
        """
        if self.seq <= last_seen_seq:
            raise StaleContinuation(
                f"This is suspension {self.seq} of run {self.run_id}, but suspension "
                f"{last_seen_seq} was already seen; it was resumed before. Use the newest copy.",
                continuation_id=self.id,
            )

    # -- decisions (G4) -----------------------------------------------------------------

    def approve(
        self,
        path: Path | Request,
        *,
        args: dict[str, Any] | None = None,
        by: str | None = None,
        comment: str | None = None,
        replace: bool = False,
    ) -> Continuation:
        """Approve the call at ``path``, optionally with edited ``args``.

        Raises:
            UnknownPath: If ``path`` is not pending.
            InvalidDecision: If the call is not an approval or ``args`` fail the tool schema.
            AlreadyDecided: If ``path`` is decided already and ``replace`` is false.
        """
        from ._decisions import attach

        decision = Approve(args=args)
        return attach(self, path, decision, by=by, comment=comment, replace=replace)

    def deny(
        self,
        path: Path | Request,
        message: str = "The tool call was denied.",
        *,
        by: str | None = None,
        comment: str | None = None,
        replace: bool = False,
    ) -> Continuation:
        """Deny the call at ``path``; the model receives ``message`` and the run continues.

        Raises:
            AlreadyDecided: If ``path`` is decided already and ``replace`` is false.
        """
        from ._decisions import attach

        decision = Deny(message=message)
        return attach(self, path, decision, by=by, comment=comment, replace=replace)

    def respond(
        self,
        path: Path | Request,
        value: Any,
        *,
        by: str | None = None,
        comment: str | None = None,
        replace: bool = False,
    ) -> Continuation:
        """Answer the ``input`` call at ``path`` with ``value``.

        Raises:
            AlreadyDecided: If ``path`` is decided already and ``replace`` is false.
        """
        from ._decisions import attach

        decision = Respond(value=value)
        return attach(self, path, decision, by=by, comment=comment, replace=replace)

    def with_decisions(
        self, records: tuple[DecisionRecord, ...] | list[DecisionRecord]
    ) -> Continuation:
        """Return a copy carrying ``records`` (validated by path, sorted; order is irrelevant)."""
        from ._decisions import attach_records

        return attach_records(self, list(records))

    # -- signing (G6) --------------------------------------------------------------------

    def _current_payload(self) -> bytes:
        return canonical_json(signed_part(self.model_dump(mode="json", by_alias=True)))

    def signed_payload(self) -> bytes:
        """The canonical bytes covered by the signature.

        For a loaded document these are the bytes as read (before any schema upgrade).

        Raises:
            ContinuationTampered: If a loaded copy's state was changed in memory since.
        """
        if self._chain is not None:  # a checkpoint built from a base and its segments
            current = self._current_payload()
            if self._loaded_digest != hashlib.sha256(current).hexdigest():
                raise ContinuationTampered(
                    "The checkpoint's state was changed after it was read; it no longer "
                    "matches its segments. Load it again from the store.",
                    continuation_id=self.id,
                )
            return current
        if self._signed_bytes is None:
            return self._current_payload()
        if self._loaded_digest != hashlib.sha256(self._current_payload()).hexdigest():
            raise ContinuationTampered(
                "The continuation's state was changed after it was loaded; it no longer "
                "matches its signature. Load it again from the stored document.",
                continuation_id=self.id,
            )
        return self._signed_bytes

    def sign(self, keys: Keyring) -> Continuation:
        """Return a copy signed with the keyring's active key."""
        unsigned = self.model_copy(update={"signature": None})
        unsigned._signed_bytes = None
        unsigned._loaded_digest = None
        unsigned._chain = None
        kid, mac = keys.sign(unsigned.signed_payload())
        signed = unsigned.model_copy(update={"signature": Signature(kid=kid, mac=mac)})
        signed._signed_bytes = None
        signed._loaded_digest = None
        signed._chain = None
        return signed

    def verify(self, keys: Keyring | None, *, allow_unsigned: bool = False) -> None:
        """Check the signature before anything runs.

        Raises:
            UnsignedContinuation: If unsigned and ``allow_unsigned`` is false.
            UnknownKey: If signed with a key id ``keys`` does not hold.
            ContinuationTampered: If the signed state was modified.
        """
        if self.signature is None or keys is None:
            if allow_unsigned:
                return
            if self.signature is None:
                raise UnsignedContinuation(
                    "This continuation is not signed. Sign runs with a Keyring, or pass "
                    "allow_unsigned=True if you trust where it came from.",
                    continuation_id=self.id,
                )
            raise UnsignedContinuation(
                "No keyring was given to verify this signed continuation; pass keys=.",
                continuation_id=self.id,
            )
        if self._chain is not None:  # a checkpoint read with its appended segments
            self._chain.verify(keys, self.id)
            self.signed_payload()  # and unchanged in memory since
            return
        keys.verify(
            self.signed_payload(), self.signature.kid, self.signature.mac, continuation_id=self.id
        )

    # -- JSON ------------------------------------------------------------------------------

    def to_json(self) -> str:
        """Serialize to compact JSON text.

        Like every JSON dump of the models (and the signed payload), it writes a NaN or
        infinite float held in framework state as ``null``: the text is always strict JSON.

        Raises:
            MalformedContinuation: If a value cannot be written as JSON (framework state
                nesting too deep to serialize, or of a type JSON has no form for).
        """
        try:
            data = self.to_dict()
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (ValueError, RecursionError) as exc:
            raise MalformedContinuation(
                f"The continuation cannot be written as JSON: {exc}. Keep framework state, "
                f"args and decision values JSON values within {MAX_DEPTH} levels of nesting.",
                continuation_id=self.id,
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        """Serialize to a JSON-compatible dict."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Continuation:
        """Load a continuation from JSON text (verify it with :meth:`verify` or on resume).

        The text is parsed strictly before anything else reads it: within ``MAX_DOCUMENT_BYTES``
        and ``MAX_DEPTH``, with no repeated key in an object and no NaN or Infinity.

        Raises:
            MalformedContinuation: If the text is not a continuation document, or breaks a limit.
            UnsupportedSchemaVersion: If it was written by a newer schema version.
        """
        return load(cls, loads(text))

    @classmethod
    def from_dict(cls, data: Any) -> Continuation:
        """Load a continuation from a parsed JSON document; see :meth:`from_json`.

        Raises:
            MalformedContinuation: If it is not a continuation document, nests deeper than
                the document limit, or holds NaN or infinity.
            UnsupportedSchemaVersion: If it was written by a newer schema version.
        """
        check_tree(data)
        return load(cls, data)


# The models build their validators on first use (``defer_build``), resolving the forward
# references between them then: importing the package stays cheap (``list``, ``show``).


def build_models(base: type[BaseModel] = _Model) -> None:
    """Build the validators and serializers of ``base``'s subclasses now, not on first use.

    A long-running process (a worker) calls it before it takes work, so that no claimed
    continuation waits for them.
    """
    todo = list(base.__subclasses__())
    while todo:
        model = todo.pop()
        model.model_rebuild()
        todo.extend(model.__subclasses__())


def json_schema() -> dict[str, Any]:
    """Return the published JSON Schema of continuation and decision documents (G11)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "agent-continuations documents",
        "schema_version": SCHEMA_VERSION,
        "continuation": Continuation.model_json_schema(by_alias=True),
        "decision_record": DecisionRecord.model_json_schema(by_alias=True),
    }
