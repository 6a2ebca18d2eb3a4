"""Nesting: the tool call sub-agent runs start in, and how they are matched on re-entry (G3).

A delegating tool body is plain code. It may run sub-agents one after another or concurrently
(``asyncio.gather``, a ``TaskGroup``, threads that carry the caller's context). Every tool call
gets a :class:`CallScope` while its body runs; a sub-agent run started inside it, by whichever
adapter, asks the scope for a :class:`SubRun`, which gives it:

- an identity (:class:`~continuations_core.RunKey`: agent name, prompt digest, occurrence)
  that does not depend on scheduling order, so a re-entered body finds each run's record
  whatever order its runs start in;
- on re-entry, the recorded result of a run that completed (replayed, not run again) or the
  frame plan of a run that suspended (resumed);
- where to report that it completed, suspended or failed, and its checkpoints.

A run that suspends waits until its concurrent siblings have completed or suspended too, so a
``TaskGroup`` does not cancel them mid-run and ``gather`` does not leave them running orphaned.
The delegating call then waits for every run started in it and records all the suspended ones
in one ``child`` pending call. A run that starts after its call ended (an orphaned task) is
refused with :class:`~continuations_core.UnsupportedNesting`.

Runs may report from other threads and event loops (a Strands ``child(prompt)`` runs in a
thread with its own loop), so the scope is guarded by a lock and wakes waiters on their own loop.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._decisions import CallPlan, FramePlan
from ._schema import ChildRun, Frame, PendingCall, RunKey
from ._signing import digest
from .errors import ReplayMismatch, UnsupportedNesting

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "LATE_START_WINDOW",
    "CallScope",
    "SubRun",
    "checkpoint_form",
    "on_loop",
    "prompt_digest",
]

T = TypeVar("T")

#: Seconds a delegating call whose sub-agents run in threads waits, after a suspension, for a
#: sibling whose thread had not started its run yet (``gather`` of ``to_thread`` calls returns
#: at the first suspension). A run that starts later is refused and runs on the next resume.
LATE_START_WINDOW = 0.25


def prompt_digest(prompt: Any) -> str:
    """The digest of a sub-agent's prompt (any JSON-compatible value), part of its identity."""
    return digest({"prompt": prompt})


def checkpoint_form(frame: Frame) -> Frame:
    """``frame`` as a checkpoint: no decisions needed to resume it.

    Leaf pending calls are dropped (resuming the frame holds them again), delegating calls keep
    their sub-agent runs, in checkpoint form too.
    """
    pending: list[PendingCall] = []
    for call in frame.pending:
        if call.kind != "child":
            continue
        runs = tuple(run.model_copy(update={"frame": checkpoint_form(run.frame)})
                     for run in call.children)  # fmt: skip
        pending.append(call.model_copy(update={"children": runs}))
    return frame.model_copy(update={"pending": tuple(pending), "suspended_by": "checkpoint"})


async def on_loop(
    loop: asyncio.AbstractEventLoop | None,
    make: Callable[[], Coroutine[Any, Any, T]],
    *,
    timeout: float,
    what: str,
) -> T:
    """Run ``make()`` on ``loop`` (the loop that owns a resource) and wait for it here.

    From the same loop it is awaited directly. From a run in another thread with its own loop,
    it is handed over to ``loop``; if that loop does not run it within ``timeout`` seconds (a
    tool body blocking it by calling a sub-agent synchronously), it fails instead of hanging.

    Raises:
        UnsupportedNesting: If ``loop`` did not respond in time.
    """
    import asyncio  # lazy: importing the package needs no event loop

    here = asyncio.get_running_loop()
    if loop is None or loop is here or loop.is_closed():
        return await make()
    handed = asyncio.run_coroutine_threadsafe(make(), loop)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(handed), timeout)
    except TimeoutError:
        handed.cancel()
        raise UnsupportedNesting(
            f"{what} had to run on the event loop of the calling run, which did not respond "
            f"within {timeout:g}s: a tool body is blocking it, probably by calling a sub-agent "
            "synchronously (agent(prompt), run_sync) from an async tool. Call sub-agents with "
            "await (invoke_async, run) in async tools, or make the tool a plain def."
        ) from None


@dataclass(eq=False)
class SubRun:
    """One sub-agent run inside a delegating call, as its adapter sees it.

    Attributes:
        scope: The delegating call it runs in.
        key: Its identity in that call.
        replay: The recorded result of this run, when it completed before (replay it).
        plan: The frame plan to resume, when it suspended before.
    """

    scope: CallScope
    key: RunKey
    replay: dict[str, Any] | None = None
    plan: FramePlan | None = None

    @property
    def path(self) -> tuple[str, ...]:
        """The path of the run: its call's path plus its run segment."""
        return (*self.scope.path, self.key.segment)

    def completed(self, entry: dict[str, Any]) -> None:
        """Journal the run's result (adapter data, JSON only) under its key."""
        self.scope._settle(self.key, entry=entry)

    def suspended(self, frame: Frame) -> None:
        """Note that the run suspended with ``frame``."""
        self.scope._settle(self.key, frame=frame)

    def failed(self) -> None:
        """Note that the run ended with an error (nothing is recorded)."""
        self.scope._settle(self.key)

    async def wait_for_siblings(self) -> None:
        """Wait until every other run of the call has completed, suspended or failed."""
        scope = self.scope
        await scope._wait(lambda: not scope._active)

    async def checkpoint(self, frame: Frame, *, timeout: float) -> None:
        """Keep ``frame`` as this run's latest state and checkpoint the tree above it."""
        scope = self.scope
        with scope._lock:
            if self.key in scope._active:
                scope._active[self.key] = frame
        if scope.on_checkpoint is not None:
            await on_loop(scope.loop, scope.on_checkpoint, timeout=timeout, what="A checkpoint")


@dataclass(eq=False)
class CallScope:
    """The tool call being executed, as seen by sub-agent runs and steps started inside it.

    Attributes:
        path: The path of this call from the root.
        agents: The agent chain down to the agent that made this call.
        owner: Adapter-private data of the calling run (e.g. its usage object), so a sub-agent
            of the same framework can tell what it shares with its caller.
        resume: The plan for this call when it is re-entered on resume.
        loop: The event loop the call runs on.
        on_checkpoint: Checkpoints the tree with this call in flight (set with a store).
    """

    path: tuple[str, ...]
    agents: tuple[str, ...]
    owner: Any = None
    resume: CallPlan | None = None
    loop: asyncio.AbstractEventLoop | None = None
    on_checkpoint: Callable[[], Coroutine[Any, Any, None]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _recorded: dict[RunKey, dict[str, Any]] = field(default_factory=dict, repr=False)
    _frames: dict[RunKey, FramePlan] = field(default_factory=dict, repr=False)
    _steps: dict[str, Any] = field(default_factory=dict, repr=False)
    _seen: Counter[tuple[str, str | None]] = field(default_factory=Counter, repr=False)
    _legacy_seen: Counter[str] = field(default_factory=Counter, repr=False)
    _step_seen: Counter[str] = field(default_factory=Counter, repr=False)
    _claimed: set[RunKey] = field(default_factory=set, repr=False)
    _fresh: set[RunKey] = field(default_factory=set, repr=False)
    _active: dict[RunKey, Frame | None] = field(default_factory=dict, repr=False)
    _suspended: dict[RunKey, Frame] = field(default_factory=dict, repr=False)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list, repr=False
    )
    _closed: bool = False
    _thread: int = field(default_factory=threading.get_ident, repr=False)
    _writes: list[concurrent.futures.Future[None]] = field(default_factory=list, repr=False)
    _threaded: bool = False
    _starts: int = 0

    def __post_init__(self) -> None:
        plan = self.resume
        if plan is None or not plan.reentered:
            return
        meta = plan.call.metadata
        for entry in meta.get("runs") or []:
            key = RunKey(str(entry["agent"]), entry.get("prompt"), int(entry["occurrence"]))
            self._recorded[key] = {k: v for k, v in entry.items()
                                   if k not in ("agent", "prompt", "occurrence")}  # fmt: skip
        self._frames = dict(plan.children)
        self._steps = dict(meta.get("steps") or {})

    # -- sub-agent runs -----------------------------------------------------------------

    def start(self, agent: str, prompt: str) -> SubRun:
        """A sub-agent run of ``agent`` with prompt digest ``prompt`` starts in this call.

        Raises:
            UnsupportedNesting: If the call has already ended (the run was started by a task
                that outlived it); the run must not start.
        """
        with self._lock:
            if self._closed:
                raise UnsupportedNesting(
                    f"Sub-agent {agent!r} started after tool call {self.path[-1]!r} of agent "
                    f"{self.agents[-1]!r} ended, so its result or suspension could not be "
                    "recorded; it did not run. Await every sub-agent run inside the tool body "
                    "(asyncio.gather, a TaskGroup, or joined threads), do not leave tasks behind."
                )
            self._starts += 1
            self._threaded = self._threaded or threading.get_ident() != self._thread
            key = RunKey(agent, prompt, self._seen[agent, prompt])
            self._seen[agent, prompt] += 1
            legacy = RunKey(agent, None, self._legacy_seen[agent])
            self._legacy_seen[agent] += 1
            if (
                key not in self._recorded
                and key not in self._frames
                and (legacy in self._recorded or legacy in self._frames)
            ):
                key = legacy  # recorded by schema 2: matched by agent name and order
            self._claimed.add(key)
            replay = self._recorded.get(key)
            if replay is not None:
                return SubRun(self, key, replay=replay)
            self._active[key] = None
            plan = self._frames.get(key)
            if plan is None:
                self._fresh.add(key)
            return SubRun(self, key, plan=plan)

    def _settle(
        self, key: RunKey, *, entry: dict[str, Any] | None = None, frame: Frame | None = None
    ) -> None:
        with self._lock:
            self._active.pop(key, None)
            if entry is not None:
                self._recorded[key] = entry
            if frame is not None:
                self._suspended[key] = frame
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is gone: nobody waits there
                loop.call_soon_threadsafe(_resolve, future)

    async def _wait(self, ready: Callable[[], bool]) -> None:
        import asyncio  # lazy: importing the package needs no event loop

        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if ready():
                    return
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            await future

    def track(self, write: concurrent.futures.Future[None]) -> None:
        """Keep a journal write handed to the run's loop; :meth:`settle` waits for it."""
        with self._lock:
            self._writes.append(write)

    async def settle(self) -> None:
        """Wait until every run started in this call completed, suspended or failed, and every
        journal write it handed over landed; then close the call, so no run can start in it."""
        import asyncio  # lazy: importing the package needs no event loop

        try:
            await self._runs_settled()
        finally:
            with self._lock:
                writes, self._writes = self._writes, []
            for write in writes:
                await asyncio.wrap_future(write)

    async def _runs_settled(self) -> None:
        while True:
            await self._wait(lambda: not self._active)
            with self._lock:
                late = self._threaded and bool(self._suspended)
                starts = self._starts
                if not late:
                    self._closed = True
                    return
            # A sibling's thread may not have started its run yet: give it a moment.
            import asyncio  # lazy: importing the package needs no event loop

            await asyncio.sleep(LATE_START_WINDOW)
            with self._lock:
                if not self._active and self._starts == starts:
                    self._closed = True
                    return

    @property
    def suspended(self) -> bool:
        """Whether a run of this call suspended (after :meth:`settle`)."""
        return bool(self._suspended)

    def check_replayed(self, *, completed: bool) -> None:
        """Refuse a re-entered body that did not resume every run that suspended in it.

        A body that completed must have started them all again. A body that suspends again may
        not have reached one yet (a thread that started late), and that run is kept for the
        next resume; but when it started the same agent with another prompt instead, it will
        never resume it, and asking again would loop.

        Raises:
            ReplayMismatch: If a run that suspended before was not started again.
        """
        missed = [key for key in self._frames if key not in self._claimed]
        replaced = {key.agent for key in self._fresh} & {key.agent for key in missed}
        if missed and (completed or replaced):
            names = ", ".join(key.segment for key in missed)
            raise ReplayMismatch(
                f"Tool call {self.path[-1]!r} of agent {self.agents[-1]!r} was re-entered on "
                f"resume and did not start again the sub-agent run(s) {names} that suspended "
                "in it, so their decisions cannot be applied; none of their pending calls ran. "
                "A delegating tool body must start the same sub-agents with the same prompts "
                "when it is re-entered; compute anything that varies (times, ids, lookups) in "
                "a step() so it is replayed."
            )

    # -- what a pending call records -----------------------------------------------------

    def children(self) -> tuple[ChildRun, ...]:
        """The suspended runs, for a ``child`` pending call; recorded runs that this
        execution did not start again are kept as they were."""
        frames = {key: plan.frame for key, plan in self._frames.items() if key not in self._claimed}
        frames.update(self._suspended)
        return _runs(frames)

    def checkpoint_children(self) -> tuple[ChildRun, ...]:
        """The runs of a call in flight, for a checkpoint of the tree: each active run's latest
        frame (or the frame it resumed from), and suspended runs in checkpoint form."""
        with self._lock:
            frames: dict[RunKey, Frame] = {}
            for key, plan in self._frames.items():
                if key not in self._claimed or key in self._active:
                    frames[key] = plan.frame
            for key, latest in self._active.items():
                if latest is not None:
                    frames[key] = latest
            frames.update(self._suspended)
        return _runs({key: checkpoint_form(frame) for key, frame in frames.items()})

    def metadata(self) -> dict[str, Any]:
        """What re-entering this call needs: the completed runs and the recorded steps."""
        with self._lock:
            runs = [
                {**entry, "agent": key.agent, "prompt": key.prompt, "occurrence": key.occurrence}
                for key, entry in sorted(self._recorded.items(), key=_order)
            ]
            return {"runs": runs, "steps": dict(self._steps)}

    @property
    def has_records(self) -> bool:
        """Whether anything of this call would be lost if it ran again from the start."""
        with self._lock:
            return bool(self._recorded or self._frames or self._steps or self._active)

    # -- steps ------------------------------------------------------------------------------

    def next_step(self, name: str) -> str:
        """The key of the next step called ``name`` in this execution: ``"<name>#<n>"``."""
        with self._lock:
            n = self._step_seen[name]
            self._step_seen[name] += 1
        return f"{name}#{n}"

    def recorded_step(self, key: str) -> dict[str, Any] | None:
        """The recorded result of step ``key``, if it ran before."""
        with self._lock:
            found = self._steps.get(key)
        return dict(found) if isinstance(found, dict) else None

    def record_step(self, key: str, result: dict[str, Any]) -> None:
        """Record the result of step ``key``."""
        with self._lock:
            self._steps[key] = result


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _order(item: tuple[RunKey, Any]) -> tuple[str, str, int]:
    key = item[0]
    return key.agent, key.prompt or "", key.occurrence


def _runs(frames: dict[RunKey, Frame]) -> tuple[ChildRun, ...]:
    return tuple(
        ChildRun(agent=key.agent, prompt=key.prompt, occurrence=key.occurrence, frame=frame)
        for key, frame in sorted(frames.items(), key=_order)
    )
