"""Journaled steps: code in a delegating tool body that runs once across re-entries (G3, G9).

A tool body that runs a sub-agent is re-entered when the sub-agent resumes, so code before the
sub-agent call runs again on every resume. Wrap what must happen once in a step::

    room = await step("reserve", reserve_room, "B-204")

    @step
    async def notify_manager(employee: str) -> str: ...

The first time, the function runs and its result is recorded under the tool call's path: in
the ``child`` pending call when the call suspends (signed, so it travels to any process), and,
with a store, in the run's journal as soon as it returns, so a crash does not repeat it either.
Every later execution of the same call returns the recorded result without running it. Steps
are told apart by name and by how many steps of that name the call ran before.

The recorded value is JSON; on replay it is validated against the function's return annotation,
so a step returning a dataclass or a Pydantic model gets one back. A step that raised recorded
nothing and runs again. A function marked ``@idempotent(False)`` that started before a crash and
recorded no result is not run again: the call fails with ``StepInterrupted``. Outside a tool call
of a continuation-aware run a step just calls the function.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, overload
from urllib.parse import quote

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from ._durable import CHECKPOINTER, Checkpointer, is_idempotent
from ._markers import original_function
from ._protocol import CURRENT_CALL
from ._scope import CallScope, on_loop
from .errors import ConfigurationError, ReplayMismatch, StepInterrupted

__all__ = ["journal", "step"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


async def journal(cp: Checkpointer, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Adapters: run a journal write on the run's event loop (a sub-agent may run on another)."""
    return await on_loop(cp.loop, make, timeout=cp.lease_seconds, what="A journal write")


@overload
def step(fn: F, /) -> F: ...


@overload
def step(name: str, /) -> Callable[[F], F]: ...


@overload
def step(
    name: str, fn: Callable[..., Awaitable[T]] | Callable[..., T], /, *args: Any, **kwargs: Any
) -> Awaitable[T]: ...


def step(name_or_fn: Any, fn: Any = None, /, *args: Any, **kwargs: Any) -> Any:
    """Run a function once per tool call, however often the call is re-entered or retried.

    Three forms:

    - ``await step("reserve", reserve_room, room)`` runs ``reserve_room(room)`` (sync or async)
      as the step named ``"reserve"``;
    - ``@step`` marks a function as a step named after it (a sync function stays sync, an async
      one async);
    - ``@step("reserve")`` names it.

    Returns:
        The function's result: on the first execution the value it returned, afterwards the
        recorded value, validated against its return annotation.

    Raises:
        StepInterrupted: A non-idempotent step started before a crash and recorded no result.
        ReplayMismatch: The recorded value no longer fits the function's return annotation.
        ConfigurationError: The result is not JSON-serializable.
    """
    if isinstance(name_or_fn, str) and fn is not None:
        return _run(name_or_fn, fn, args, kwargs)
    if isinstance(name_or_fn, str):
        return lambda target: _decorate(name_or_fn, target)
    if callable(name_or_fn):
        return _decorate(getattr(name_or_fn, "__name__", "step"), name_or_fn)
    raise TypeError("step() takes a name and a function, a function, or a name to decorate with.")


def _decorate(name: str, fn: F) -> F:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return await _run(name, fn, args, kwargs)

        return typing.cast(F, run_async)

    @functools.wraps(fn)
    def run_sync(*args: Any, **kwargs: Any) -> Any:
        return _run_blocking(name, fn, args, kwargs)

    return typing.cast(F, run_sync)


class _Journaled:
    """One step execution inside a tool call: its key, path and what was recorded for it."""

    def __init__(self, scope: CallScope, name: str, fn: Callable[..., Any]) -> None:
        self.scope, self.name, self.fn = scope, name, fn
        self.key = scope.next_step(name)
        number = self.key.rpartition("#")[2]
        self.path = (*scope.path, f"step:{quote(name, safe='')}#{number}")
        self.idempotent = is_idempotent(fn)
        self.cp = CHECKPOINTER.get()

    def recorded(self) -> dict[str, Any] | None:
        found = self.scope.recorded_step(self.key)
        if found is None and self.cp is not None:
            earlier = self.cp.replay(self.path, idempotent=self.idempotent)
            if earlier is not None and earlier.get("interrupted"):
                raise StepInterrupted(
                    f"Step {self.key!r} of tool call {self.scope.path[-1]!r} started before a "
                    "crash and recorded no result; it is marked @idempotent(False), so it is not "
                    "run again. Check its effect before starting the work anew."
                )
            found = earlier
            if found is not None:
                self.scope.record_step(self.key, found)
        return found

    def load(self, recorded: dict[str, Any]) -> Any:
        value = recorded.get("value")
        annotation = _return_annotation(self.fn)
        if annotation is None:
            return value
        try:
            return TypeAdapter(annotation).validate_python(value)
        except ValidationError as exc:
            raise ReplayMismatch(
                f"The recorded result of step {self.key!r} no longer fits the return type of "
                f"{getattr(self.fn, '__qualname__', self.name)!r}: {exc.error_count()} error(s). "
                "Deploy the version that recorded it, or start a new run."
            ) from exc

    def dump(self, value: Any) -> dict[str, Any]:
        try:
            return {"value": pydantic_core.to_jsonable_python(value, bytes_mode="base64")}
        except pydantic_core.PydanticSerializationError as exc:
            raise ConfigurationError(
                f"Step {self.key!r} returned a value that cannot be recorded as JSON "
                f"({type(value).__name__}); return data (dicts, lists, models, dataclasses)."
            ) from exc

    @property
    def tool(self) -> str:
        return f"step:{self.name}"


async def _run(name: str, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    scope = CURRENT_CALL.get()
    if scope is None:
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result
    it = _Journaled(scope, name, fn)
    recorded = it.recorded()
    if recorded is not None:
        return it.load(recorded)
    cp = it.cp
    if cp is not None:
        await journal(cp, lambda: cp.tool_started(it.path, it.tool))
    try:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
    except BaseException:
        if cp is not None:  # nothing happened that must not repeat: it may run again
            await journal(cp, lambda: cp.tool_suspended(it.path, it.tool))
        raise
    result = it.dump(value)
    scope.record_step(it.key, result)
    if cp is not None:
        await journal(cp, lambda: cp.tool_completed(it.path, it.tool, result))
    return value


def _run_blocking(name: str, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    scope = CURRENT_CALL.get()
    if scope is None:
        return fn(*args, **kwargs)
    it = _Journaled(scope, name, fn)
    recorded = it.recorded()
    if recorded is not None:
        return it.load(recorded)
    cp = it.cp
    if cp is not None:
        _write(cp, scope, lambda: cp.tool_started(it.path, it.tool), started=not it.idempotent)
    try:
        value = fn(*args, **kwargs)
    except BaseException:
        if cp is not None:
            _write(cp, scope, lambda: cp.tool_suspended(it.path, it.tool))
        raise
    result = it.dump(value)
    scope.record_step(it.key, result)
    if cp is not None:
        _write(cp, scope, lambda: cp.tool_completed(it.path, it.tool, result))
    return value


def _write(
    cp: Checkpointer,
    scope: CallScope,
    make: Callable[[], Coroutine[Any, Any, None]],
    *,
    started: bool = False,
) -> None:
    """A journal write from synchronous code.

    From a thread with no event loop (a plain ``def`` tool body) it waits for the write. Called
    on an event loop (a sync step inside an async body) it cannot block, so the write is handed
    to the run's loop and the tool call waits for it before it ends; a non-idempotent step must
    not start before its start is journaled, so it must be async there.
    """
    if cp.loop is None or cp.loop.is_closed():  # pragma: no cover - run_durably sets it
        raise ConfigurationError("The durable run's event loop is gone; the step cannot record.")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run_coroutine_threadsafe(make(), cp.loop).result(timeout=cp.lease_seconds)
        return
    if started:
        raise ConfigurationError(
            "A synchronous step marked @idempotent(False) was called on an event loop while the "
            "run is durable: its start could not be journaled before it ran. Make it async and "
            "await it, or call it from a plain def tool body."
        )
    scope.track(asyncio.run_coroutine_threadsafe(make(), cp.loop))


def _return_annotation(fn: Callable[..., Any]) -> Any:
    target = original_function(fn)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # annotations that cannot be resolved: replay the plain JSON value
        return None
    annotation = hints.get("return")
    if annotation is None or annotation is Any or annotation is type(None):
        return None
    return annotation
