"""The seam adapters and engines are written against: the core's public service interface.

An adapter hooks one agent framework's own tool-execution path (capabilities, toolsets,
plugins, hooks) and reports suspensions to the core; an engine decides who runs decided
continuations. Both import the core only from here, from :mod:`continuations_core` and from
:mod:`continuations_core.stores`, never from a private ``continuations_core._*`` module (a
packaging test keeps that true). Everything listed here is covered by the project's versioning:
a breaking change to it is a breaking change to the package.

The two shipped adapters (``continuations_pydantic_ai``, ``continuations_strands``) are the
reference for how the pieces fit. A third adapter needs the following.

**Running and resuming a root run.**

- :func:`start_root` is an adapter's ``run``: it runs ``go`` (the framework's own run of the
  root agent) as a new run, durably when a store is given, and returns an
  :class:`~continuations_core.Outcome`.
- :func:`resume_root` is an adapter's ``resume``: it checks a continuation (signature,
  decisions, single use, expiry), hands the adapter an :class:`Opened` (the claim and one
  :class:`FramePlan` per frame), and runs it.
- :func:`seal` wraps a suspended root frame into a signed continuation; :data:`OnSuspend`
  is the callback type for saving one. :func:`new_run_id` makes a run id.
- :func:`set_run_id` / :func:`reset_run_id` mark the run being executed; :func:`take_over`
  claims a run's latest checkpoint after a crash; :func:`default_owner` names a worker.
- :data:`TraceMode` is the type of ``resume``'s ``trace=`` option (``"link"`` or
  ``"continue"``), passed on to :func:`resume_root`.
- :data:`MANAGED` is set while a root run is managed by ``start_root``/``resume_root``;
  :func:`unmanaged_suspension` is the error for a run that suspended outside them.

**Gating calls** (G1: a marked tool never runs without its decision).

- :func:`admitted` lets a marked function's guarded body run once, for the call at one path;
  :class:`GateKey` is the identity a pass admits. :func:`gate_hook` decides inside the guard of
  the first marked function called in a block; :func:`unresolved_call` surrounds an approved
  call whose function the adapter could not resolve, so the guard itself refuses it.
- :func:`original_function` unwraps a tool object to its function; :func:`validated_args`
  validates a call's raw arguments against it (an edited call is validated before it runs).
- :func:`check_unique_call_ids` refuses a response that reuses a call id (G13);
  :func:`check_fingerprint` refuses to resume an agent whose tools drifted (G10).
- :func:`mark_tool_suspended` marks the framework's ``execute_tool`` span of a held call
  ``continuation.tool.outcome=suspended``, so traces do not show it as executed.
- :func:`raise_refused` re-raises the first refusal recorded in the run; :func:`fail_run`
  fails the root run after the current batch; :func:`fatal_error` tells which errors must.

**Durable steps** (G9, G14).

- :data:`CHECKPOINTER` holds the run's :class:`Checkpointer` (``None`` without a store). It
  writes checkpoints and the tool journal under the run's claim.
- :func:`journal` runs a journal write on the run's event loop (a sub-agent may run on
  another loop or thread).
- :func:`enter_call` / :func:`exit_call` bracket a tool call, making its idempotency key
  available to the body.
- :func:`is_idempotent` tells whether a tool may run again after a crash.
  :data:`INTERRUPTED_MESSAGE` is what the model is told about a call that was interrupted and
  is not re-run.

**Nesting** (sub-agents called from tool bodies, at any depth).

- :data:`CURRENT_CALL` holds the delegating call a sub-agent runs under.
- :class:`SubRun` is one sub-agent run as its adapter reports it.
- :func:`is_suspension` tells a tool body's "sub-agents suspended" error from a real failure.
- :func:`checkpoint_form` turns a frame into its checkpoint form; :func:`prompt_digest` is part
  of a sub-agent's identity.

**Engines** (who runs decided continuations). A store tells its :class:`Dispatcher` when a
continuation becomes ready and when a stored suspension's requests expire; the built-in
:class:`StoreDispatcher` leaves both to the store's status and the built-in worker. An engine
installs its own (``store.dispatcher = ...``) and resumes with :func:`resume_root` through an
adapter, under a store claim. See :mod:`continuations_core.dispatch`. :class:`RetryPolicy` is
how failed attempts are retried (the built-in worker's ``--max-attempts`` and ``--backoff``);
an engine passes the same policy to the :class:`~continuations_core.worker.Worker` whose
``resume_claimed`` it calls, so a run fails after the same number of attempts on either.
:func:`expire_due` applies ``on_expired`` to a waiting continuation whose undecided requests
passed their deadline (:class:`Expiry` says what it did), once however many engines try.

**Small helpers.** :func:`segment` builds one path segment; :func:`digest` is the SHA-256 of a
value's canonical JSON (fingerprints); :data:`Clock` and :func:`default_clock` are the clock
suspension policies read; :data:`ExpiryMode` is how a resume treats expired requests.
"""

from __future__ import annotations

from ._attempts import RetryPolicy
from ._decisions import ExpiryMode, FramePlan
from ._durable import (
    CHECKPOINTER,
    INTERRUPTED_MESSAGE,
    Checkpointer,
    default_owner,
    enter_call,
    exit_call,
    is_idempotent,
    reset_run_id,
    set_run_id,
    take_over,
)
from ._expiry import Expiry, expire_due
from ._markers import (
    GateKey,
    admitted,
    gate_hook,
    original_function,
    unresolved_call,
    validated_args,
)
from ._policies import Clock, default_clock
from ._protocol import (
    CURRENT_CALL,
    MANAGED,
    SubRun,
    check_fingerprint,
    check_unique_call_ids,
    fail_run,
    fatal_error,
    is_suspension,
    new_run_id,
    raise_refused,
    seal,
    unmanaged_suspension,
)
from ._resume import OnSuspend, Opened, resume_root, start_root
from ._schema import segment
from ._scope import checkpoint_form, prompt_digest
from ._signing import digest
from ._steps import journal
from ._tracing import TraceMode, mark_tool_suspended
from .dispatch import Dispatcher, StoreDispatcher

__all__ = [
    "CHECKPOINTER",
    "CURRENT_CALL",
    "INTERRUPTED_MESSAGE",
    "MANAGED",
    "Checkpointer",
    "Clock",
    "Dispatcher",
    "Expiry",
    "ExpiryMode",
    "FramePlan",
    "GateKey",
    "OnSuspend",
    "Opened",
    "RetryPolicy",
    "StoreDispatcher",
    "SubRun",
    "TraceMode",
    "admitted",
    "check_fingerprint",
    "check_unique_call_ids",
    "checkpoint_form",
    "default_clock",
    "default_owner",
    "digest",
    "enter_call",
    "exit_call",
    "expire_due",
    "fail_run",
    "fatal_error",
    "gate_hook",
    "is_idempotent",
    "is_suspension",
    "journal",
    "mark_tool_suspended",
    "new_run_id",
    "original_function",
    "prompt_digest",
    "raise_refused",
    "reset_run_id",
    "resume_root",
    "seal",
    "segment",
    "set_run_id",
    "start_root",
    "take_over",
    "unmanaged_suspension",
    "unresolved_call",
    "validated_args",
]
