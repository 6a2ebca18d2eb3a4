"""Test support: conformance scenarios, store scenarios, a fake OpenAI server, and
:func:`call_approved` for unit tests of ``@requires_approval`` tools.

A marked tool's body refuses to run outside a gate (G13), so a unit test that wants to call it
directly says so explicitly::

    from continuations_core.testing import call_approved

    assert call_approved(transfer, to="bob", amount=10) == "sent"
    assert await call_approved(async_transfer, to="bob", amount=10) == "sent"
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._markers import admitted, gate_key

__all__ = ["call_approved"]


def call_approved(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call a ``@requires_approval`` function as if a person had approved this one call.

    For tests only: production calls go through an adapter's gate. For an async function the
    returned coroutine takes its pass when it is awaited.

    Raises:
        TypeError: If ``fn`` is not a guarded function (the marker was not put on it).
    """
    if gate_key(fn) is None:
        raise TypeError(f"{fn!r} is not a @requires_approval function; call it directly.")
    path = ("test:call_approved",)
    if inspect.isasyncgenfunction(fn):

        async def stream() -> AsyncIterator[Any]:
            inner = fn(*args, **kwargs)
            with admitted(fn, path):  # the guard checks before the first item
                try:
                    first = await inner.__anext__()
                except StopAsyncIteration:
                    return
            yield first
            async for item in inner:
                yield item

        return stream()
    if inspect.iscoroutinefunction(fn):

        async def run() -> Any:
            with admitted(fn, path):
                return await fn(*args, **kwargs)

        return run()
    with admitted(fn, path):
        return fn(*args, **kwargs)
