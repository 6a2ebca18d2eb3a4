"""Opening a continuation for resume: integrity, the store's authority, single use (G5, G6, G13).

Every adapter's ``resume`` opens the continuation here before anything runs:

1. The caller's copy is verified (signature, key, in-memory edits).
2. With a store, the store is the source of truth. The caller's copy may *add* decisions, which
   are recorded with compare-and-set against the stored version; a decision that conflicts with
   a stored one is refused (``AlreadyDecided``, naming who decided and when). A continuation the
   store does not hold yet is saved first, with the caller's decisions.
3. Every check that can fail (bindings, missing decisions, expiry) runs on the merged view
   before anything is written, so a refused resume changes nothing.
4. The continuation is claimed (single use), and the plan is built from the stored document and
   the stored decisions, never from the caller's copy. A claim passed in must hold, on this very
   continuation.

Without ``store=``, resuming is still single use by default: the embedded default store
(``$CONTINUATIONS_STORE``, else SQLite at :func:`~continuations_core.stores.default_store_url`)
records the claim, so resuming one JSON twice, in any two processes, runs its tools once.
``single_use=False`` opts out.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._attempts import NOT_COMMITTED, claim_with_retries, retry_policy, with_retries
from ._decisions import ExpiryMode, FramePlan, already_decided, build_plan
from ._durable import default_owner, durable
from ._protocol import REFUSED, STARTED_BY, Outcome, Suspended
from ._schema import Continuation, DecisionRecord
from ._signing import Keyring
from ._tracing import TraceMode, metrics, resume_span
from .errors import (
    ConfigurationError,
    ConflictError,
    ContinuationError,
    ContinuationExpired,
    ContinuationNotFound,
    DispatchFailed,
)
from .stores import Claim, Store, StoredContinuation, default_store

if TYPE_CHECKING:
    from ._attempts import _NotCommitted

__all__ = [
    "CLAIMED_RECORD",
    "OnSuspend",
    "Opened",
    "notify",
    "open_resume",
    "resume_root",
    "run_root",
    "start_root",
]

log = logging.getLogger("continuations.resume")

#: The record a worker read right after claiming it, so resuming it under that claim does not
#: read it again. Used only if it is the record of that claim (same id and fencing token).
CLAIMED_RECORD: ContextVar[StoredContinuation | None] = ContextVar(
    "continuations_claimed_record", default=None
)

#: Called with every continuation a run suspends into (after it was stored, with a store).
OnSuspend = Callable[[Continuation], Awaitable[None] | None]


async def start_root(
    go: Callable[[], Awaitable[Outcome[Any]]],
    *,
    run_id: str,
    keys: Keyring | None,
    store: Store | None,
    checkpoint: bool | None,
    owner: str | None,
    lease_seconds: float,
    started_by: str | None,
    on_suspend: OnSuspend | None,
) -> Outcome[Any]:
    """Adapters' ``run``: run ``go`` (the framework's run of the root agent) as a new run.

    With ``store`` the run is durable (checkpoints, the tool journal, the suspension or the
    completion recorded there); see :func:`run_root` for the run-wide context.
    """
    return await run_root(
        lambda: durable(
            go,
            store=store,
            checkpoint=checkpoint,
            run_id=run_id,
            seq=0,
            keys=keys,
            owner=owner,
            lease_seconds=lease_seconds,
            claim=None,
        ),
        started_by=started_by,
        on_suspend=on_suspend,
    )


async def resume_root(
    continuation: Continuation,
    go: Callable[[Opened], Callable[[], Awaitable[Outcome[Any]]]],
    *,
    keys: Keyring | None,
    allow_unsigned: bool,
    on_expired: ExpiryMode,
    store: Store | None,
    claim: Claim | None,
    owner: str | None,
    lease_seconds: float,
    single_use: bool,
    checkpoint: bool | None,
    on_suspend: OnSuspend | None,
    trace: TraceMode = "link",
    check: Callable[[Continuation], None] | None = None,
) -> Outcome[Any]:
    """Adapters' ``resume``: open ``continuation`` (see :func:`open_resume`), then run it.

    ``check`` is the adapter's own refusal of a continuation it cannot resume (another
    framework's root, a drifted agent); it runs once the signature is verified, before the
    store is touched. ``go(opened)`` returns the framework's run of the root agent from the opened plan. The run
    is durable through the store the continuation was claimed in, and the store opened for
    single use is closed afterwards. It runs in a ``continuation.resume`` span that links to
    the suspension and to each decision stored with a trace context, or with
    ``trace="continue"`` continues the suspension's trace as a child of its span.
    """
    if trace not in ("link", "continue"):
        raise ConfigurationError(f"trace must be 'link' or 'continue', not {trace!r}.")
    who = owner or default_owner()
    try:
        opened = await open_resume(
            continuation,
            keys=keys,
            allow_unsigned=allow_unsigned,
            on_expired=on_expired,
            store=store,
            claim=claim,
            owner=who,
            lease_seconds=lease_seconds,
            single_use=single_use,
            checkpoint=checkpoint,
            check=check,
        )
    except ContinuationExpired:
        _count_expired(continuation, "raise")
        raise
    truth = opened.continuation
    if on_expired == "deny":
        _count_expired(truth, "deny")
    try:
        with resume_span(truth, trace):
            return await run_root(
                lambda: durable(
                    go(opened),
                    store=opened.store,
                    checkpoint=opened.checkpoint,
                    run_id=truth.run_id,
                    seq=truth.seq,
                    keys=keys,
                    owner=who,
                    lease_seconds=lease_seconds,
                    claim=opened.claim,
                ),
                started_by=truth.started_by,
                on_suspend=on_suspend,
            )
    finally:
        await opened.close()


async def run_root(
    attempt: Callable[[], Awaitable[Outcome[Any]]],
    *,
    started_by: str | None,
    on_suspend: OnSuspend | None,
) -> Outcome[Any]:
    """Adapters: run a root ``run``/``resume`` attempt with the run-wide context.

    It records who started the run (signed into every continuation), fails the run with the
    first marked tool that refused to run anywhere in the tree (G13: a framework may have
    turned that refusal into a tool result the run carried on from), and notifies
    ``on_suspend`` of a suspension.
    """
    refused: list[ContinuationError] = []
    refused_token = REFUSED.set(refused)
    started_token = STARTED_BY.set(started_by)
    try:
        try:
            outcome = await attempt()
        except Exception as exc:
            if refused:
                raise refused[0] from exc
            raise
        if refused:
            raise refused[0]
    finally:
        STARTED_BY.reset(started_token)
        REFUSED.reset(refused_token)
    await notify(on_suspend, outcome)
    return outcome


async def notify(on_suspend: OnSuspend | None, outcome: Outcome[Any]) -> None:
    """Call ``on_suspend`` for a suspension; its failure is logged, never lost in the outcome.

    The suspension is already stored (with a store) or returned to the caller, so a notifier
    that fails (a webhook down) must not turn the outcome into an error.
    """
    if on_suspend is None or not isinstance(outcome, Suspended):
        return
    try:
        result = on_suspend(outcome.continuation)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("on_suspend failed for continuation %s", outcome.continuation.id)


@dataclass
class Opened:
    """A continuation checked and claimed for resuming.

    Attributes:
        plan: What to do with every pending call, built from the stored truth.
        continuation: The stored document with the stored decisions (the caller's copy when
            there is no store).
        store: Where the resume is recorded, if anywhere.
        claim: The claim the resume holds on ``continuation``.
        checkpoint: Whether the resumed run writes checkpoints.
        owns_store: The store was opened here (the embedded default) and is closed after.
    """

    plan: FramePlan
    continuation: Continuation
    store: Store | None
    claim: Claim | None
    checkpoint: bool | None
    owns_store: bool = False

    async def close(self) -> None:
        """Close the store if it was opened here."""
        if self.owns_store and self.store is not None:
            await self.store.close()


async def open_resume(
    cont: Continuation,
    *,
    keys: Keyring | None,
    allow_unsigned: bool,
    on_expired: ExpiryMode,
    store: Store | None,
    claim: Claim | None,
    owner: str,
    lease_seconds: float,
    single_use: bool,
    checkpoint: bool | None,
    check: Callable[[Continuation], None] | None = None,
) -> Opened:
    """Verify ``cont``, reconcile it with the store, claim it and plan the resume.

    ``check(cont)`` runs right after the signature is verified, before the store is touched.

    Raises:
        SignatureError: If the caller's copy or the stored document fails verification.
        AlreadyDecided: If the caller's decisions conflict with stored ones.
        MissingDecisions, InvalidDecision, ContinuationExpired: As for any resume; nothing
            was written.
        AlreadyClaimed: If another resumer holds or consumed it.
        ConflictError: If a passed claim is for another continuation, or the store changed
            between the checks and the claim.
    """
    cont.verify(keys, allow_unsigned=allow_unsigned)
    if check is not None:
        check(cont)
    owns = False
    if store is None:
        if claim is not None:
            raise ConflictError(
                "claim= was given without the store it came from; pass store= as well.",
                continuation_id=cont.id,
            )
        if not single_use:
            plan = build_plan(cont, now=_now(), on_expired=on_expired)
            return Opened(plan, cont, None, None, checkpoint=checkpoint)
        store, owns = default_store(), True
        if checkpoint is None:
            checkpoint = False  # single use only; durability is asked for with store=
    try:
        if claim is not None:
            truth = await _held(
                store, cont, claim, keys=keys, allow_unsigned=allow_unsigned, lease=lease_seconds
            )
            plan = build_plan(truth, now=_now(), on_expired=on_expired)
            return Opened(plan, truth, store, claim, checkpoint, owns)
        return await _claim(
            store,
            cont,
            keys=keys,
            allow_unsigned=allow_unsigned,
            on_expired=on_expired,
            owner=owner,
            lease_seconds=lease_seconds,
            checkpoint=checkpoint,
            owns=owns,
        )
    except BaseException:
        if owns:
            await store.close()
        raise


async def _held(
    store: Store,
    cont: Continuation,
    claim: Claim,
    *,
    keys: Keyring | None,
    allow_unsigned: bool,
    lease: float,
) -> Continuation:
    """The stored truth of a continuation the caller already claimed (a worker)."""
    if claim.id != cont.id:
        raise ConflictError(
            f"The claim passed is for continuation {claim.id}, not this one; a claim only "
            "resumes the continuation it was taken on.",
            continuation_id=cont.id,
        )
    read = CLAIMED_RECORD.get()
    fresh = (
        read is not None and read.id == claim.id and read.status == "claimed"
        and read.fence == claim.token and read.continuation is cont
    )  # fmt: skip
    current = read if fresh and read is not None else await _read(store, cont.id)
    held = current.status == "claimed" and current.fence == claim.token
    left = (current.lease_until - _now()).total_seconds() if current.lease_until else 0.0
    if not held or left < lease * 2 / 3:  # a fresh claim (a worker's) needs no heartbeat yet
        await with_retries(  # raises AlreadyClaimed if it was lost
            lambda: store.heartbeat(claim, lease_seconds=lease), what="renewing a claim"
        )
    truth = current.continuation
    if truth is not cont:  # the caller's copy (verified already) against the stored one
        _same_document(truth, cont, keys=keys, allow_unsigned=allow_unsigned)
    for record in cont.decisions:
        stored = truth.decision_for(record.path)
        if stored is None:
            raise ConflictError(
                f"The decision for {' > '.join(record.path)} is not in the store, and a claimed "
                "continuation takes no new decisions. Record decisions before claiming.",
                continuation_id=cont.id,
            )
        if not _same_decision(stored, record):
            raise already_decided(stored, continuation_id=cont.id)
    return truth


async def _claim(
    store: Store,
    cont: Continuation,
    *,
    keys: Keyring | None,
    allow_unsigned: bool,
    on_expired: ExpiryMode,
    owner: str,
    lease_seconds: float,
    checkpoint: bool | None,
    owns: bool,
) -> Opened:
    for _ in range(3):  # a concurrent first save by another resumer: read it and go on
        try:
            stored = await _read(store, cont.id)
        except ContinuationNotFound:
            build_plan(cont, now=_now(), on_expired=on_expired)  # refuse before writing
            try:
                # A save committed unseen is refused on retry as a conflict: read it then.
                await with_retries(lambda: store.save(cont, actor=owner), what="saving")
            except DispatchFailed:
                pass  # saved: this process claims and runs it next, the dispatch is moot
            except ConflictError:
                continue
            stored = await _read(store, cont.id)
        break
    else:  # pragma: no cover - the id kept disappearing and reappearing
        raise ConflictError(
            "The continuation changed while it was opened.", continuation_id=cont.id
        )
    truth = stored.continuation
    _same_document(truth, cont, keys=keys, allow_unsigned=allow_unsigned)
    new: list[DecisionRecord] = []
    for record in cont.decisions:
        existing = truth.decision_for(record.path)
        if existing is None:
            new.append(record)
        elif not _same_decision(existing, record):
            raise already_decided(existing, continuation_id=cont.id)
    merged = truth.with_decisions([*truth.decisions, *new])
    build_plan(merged, now=_now(), on_expired=on_expired)  # refuse before writing
    version = stored.version
    for record in new:
        version = (await _decide(store, cont.id, record, version)).version
    if (await _read(store, cont.id)).version != version:  # changed since the checks: refuse
        raise ConflictError(
            "The continuation changed while it was opened; resume it again.",
            continuation_id=cont.id,
        )
    claim = await claim_with_retries(
        store,
        cont.id,
        owner=owner,
        lease_seconds=lease_seconds,
        max_attempts=retry_policy().max_attempts,
    )
    try:
        truth = (await _read(store, cont.id)).continuation
        plan = build_plan(truth, now=_now(), on_expired=on_expired)
    except BaseException:
        await _release(store, claim)
        raise
    return Opened(plan, truth, store, claim, checkpoint, owns)


async def _read(store: Store, id: str) -> StoredContinuation:
    """Read ``id``, retrying transient store errors."""
    return await with_retries(lambda: store.get(id), what="reading")


async def _decide(
    store: Store, id: str, record: DecisionRecord, version: int
) -> StoredContinuation:
    """Record ``record`` at ``version``, retrying transient store errors; a decision committed
    unseen (the error came on the way back) counts."""

    async def committed() -> StoredContinuation | _NotCommitted:
        now = await store.get(id)
        found = now.continuation.decision_for(record.path)
        if now.version == version + 1 and found is not None and _same_decision(found, record):
            return now
        return NOT_COMMITTED

    async def decide() -> StoredContinuation:
        try:
            return await store.decide(id, record, expected_version=version)
        except DispatchFailed:  # recorded; this process claims and runs it next anyway
            return await store.get(id)

    return await with_retries(decide, what="recording a decision", committed=committed)


async def _release(store: Store, claim: Claim) -> None:
    with contextlib.suppress(ContinuationError):  # lost already: nothing of ours to give back
        await store.release(claim)


def _same_document(
    truth: Continuation, cont: Continuation, *, keys: Keyring | None, allow_unsigned: bool
) -> None:
    truth.verify(keys, allow_unsigned=allow_unsigned)
    if truth.signed_payload() != cont.signed_payload():
        raise ConflictError(
            "The continuation passed differs from the one stored under its id; the store's "
            "copy is the truth. Load it from the store and resume that.",
            continuation_id=cont.id,
        )


def _same_decision(a: DecisionRecord, b: DecisionRecord) -> bool:
    return (a.tool, a.args_digest, a.decision) == (b.tool, b.args_digest, b.decision)


def _now() -> datetime:
    return datetime.now(UTC)


def _count_expired(cont: Continuation, mode: ExpiryMode) -> None:
    """Count the undecided requests of ``cont`` past their deadline (the expiries metric)."""
    now, decided = _now(), {r.path for r in cont.decisions}
    expired = sum(
        1
        for path, _, call in cont.leaves()
        if path not in decided and call.expires_at is not None and call.expires_at <= now
    )
    if expired:
        metrics().expiries.add(expired, {"continuation.on_expired": mode})
