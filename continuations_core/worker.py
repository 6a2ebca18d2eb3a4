"""The worker: claims decided (or abandoned) continuations and resumes them.

``python -m continuations_core worker --store URL --agents module:attr`` runs one. Any number of
workers on any number of machines may share a store: each continuation is claimed with a
compare-and-set, so it is resumed once; a worker that dies loses its lease and another takes the
run over from its last checkpoint. On SIGTERM or SIGINT a worker stops claiming, cancels what it
is running, releases its claims and exits 0.

``--agents`` names the agent definitions: an agent, a list of agents, a dict of name to agent,
or a callable returning one of those. Continuations are matched to agents by the root frame's
agent name, and resumed by the adapter named by the root frame's framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._durable import default_owner
from ._schema import Continuation
from ._signing import Keyring
from .errors import (
    AlreadyClaimed,
    ConfigurationError,
    ConflictError,
    ContinuationError,
    MissingDecisions,
)
from .stores import Claim, Store

__all__ = ["ADAPTERS", "Worker", "load_agents"]

log = logging.getLogger("continuations.worker")

#: Framework name (as written in frames) to the adapter module that resumes it.
ADAPTERS: dict[str, str] = {
    "pydantic-ai": "continuations_pydantic_ai",
    "strands": "continuations_strands",
}


def load_agents(spec: str) -> dict[str, Any]:
    """Import ``module:attr`` and return its agents by name.

    Raises:
        ConfigurationError: If the path cannot be imported or holds no agents.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"--agents must look like 'package.module:attribute', not {spec!r}."
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"Cannot load agents from {spec!r}: {exc}") from exc
    if callable(target) and not hasattr(target, "name"):
        target = target()
    if isinstance(target, Mapping):
        return {str(k): v for k, v in target.items()}
    agents = list(target) if isinstance(target, list | tuple) else [target]
    named = {str(getattr(a, "name", None) or "agent"): a for a in agents}
    if not named:
        raise ConfigurationError(f"{spec!r} holds no agents.")
    return named


def _adapter(framework: str) -> Any:
    module = ADAPTERS.get(framework)
    if module is None:
        raise ConfigurationError(f"No adapter is registered for framework {framework!r}.")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = "pydantic-ai" if framework == "pydantic-ai" else framework
        raise ConfigurationError(
            f'The {framework} adapter is not installed: pip install "agent-continuations[{extra}]"'
        ) from exc


@dataclass
class Worker:
    """Resume claimable continuations from ``store`` with ``agents`` until stopped.

    Attributes:
        store: The shared store.
        agents: Agent definitions by name.
        keys: Verifies and signs continuations.
        owner: This worker's name in claims and the audit trail.
        lease_seconds: Lease on claims; a dead worker's work is taken over after it.
        poll_seconds: How long to wait for new work between scans.
        concurrency: How many continuations this worker resumes at once.
    """

    store: Store
    agents: dict[str, Any]
    keys: Keyring | None = None
    owner: str = field(default_factory=default_owner)
    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    concurrency: int = 1
    resumed: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        """Stop claiming; running resumes are cancelled and their claims released."""
        self._stop.set()

    async def run(self, *, install_signals: bool = True, idle_exit: float | None = None) -> int:
        """Work until stopped (or idle for ``idle_exit`` seconds); return how many were resumed."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        idle_since = loop.time()
        try:
            while not self._stop.is_set():
                ids = await self.store.claimable(limit=self.concurrency * 4)
                started = False
                for cid in ids:
                    if self._stop.is_set():
                        break
                    await slots.acquire()
                    claim = await self._claim(cid)
                    if claim is None:
                        slots.release()
                        continue
                    started = True
                    task = asyncio.create_task(self._resume(claim))
                    running.add(task)

                    def done(finished: asyncio.Task[None]) -> None:
                        running.discard(finished)
                        slots.release()

                    task.add_done_callback(done)
                if started or running:
                    idle_since = loop.time()
                elif idle_exit is not None and loop.time() - idle_since >= idle_exit:
                    break
                if not started:
                    await self._wait()
        finally:
            for task in running:
                task.cancel()
            for task in list(running):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        return self.resumed

    async def _wait(self) -> None:
        waiter = asyncio.create_task(self.store.wait_ready(self.poll_seconds))
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, stopper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _claim(self, cid: str) -> Claim | None:
        try:
            return await self.store.claim(cid, owner=self.owner, lease_seconds=self.lease_seconds)
        except (AlreadyClaimed, MissingDecisions, ConflictError):
            return None

    async def _resume(self, claim: Claim) -> None:
        try:
            cont = await self.store.load(claim.id)
            await self._dispatch(cont, claim)
            self.resumed += 1
        except asyncio.CancelledError:
            with contextlib.suppress(ContinuationError):
                await self.store.release(claim)
            raise
        except ContinuationError as exc:
            log.error("continuation %s could not be resumed: %s", claim.id, exc)
            with contextlib.suppress(ContinuationError):
                await self.store.release(claim)
        except Exception:
            log.exception("continuation %s failed while resuming; releasing it", claim.id)
            with contextlib.suppress(ContinuationError):
                await self.store.release(claim)

    async def _dispatch(self, cont: Continuation, claim: Claim) -> None:
        adapter = _adapter(cont.root.framework)
        agent = self.agents.get(cont.root.agent)
        if agent is None:
            raise ConfigurationError(
                f"No agent named {cont.root.agent!r} among {sorted(self.agents)}; "
                "pass the same agent definitions that started the run."
            )
        await adapter.resume(
            agent,
            cont,
            keys=self.keys,
            store=self.store,
            claim=claim,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
        )
