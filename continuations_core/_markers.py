"""``@requires_approval``: mark a tool so a person decides before it runs.

The marker is a plain attribute on the function, so it works on either side of a framework's
own tool decorator (``@agent.tool_plain``, Strands' ``@tool``) and with ``Agent(tools=[...])``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, overload

__all__ = ["ApprovalSpec", "approval_spec", "requires_approval"]

F = TypeVar("F", bound=Callable[..., Any])

MARKER = "__continuations_approval__"

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class ApprovalSpec:
    """How a marked tool is gated.

    Attributes:
        reason: Shown to the person deciding.
        when: Called with the call's validated args; the call is gated only when it returns
            true. ``None`` gates every call.
        expires: How long a decision may take; after that a resume raises
            ``ContinuationExpired`` or applies the configured default (G8).
    """

    reason: str | None = None
    when: Predicate | None = None
    expires: timedelta | None = None

    def applies(self, args: Mapping[str, Any]) -> bool:
        """Return whether a call with ``args`` must wait for a decision."""
        return True if self.when is None else bool(self.when(args))


@overload
def requires_approval(fn: F, /) -> F: ...


@overload
def requires_approval(
    *,
    reason: str | None = None,
    when: Predicate | None = None,
    expires: timedelta | None = None,
) -> Callable[[F], F]: ...


def requires_approval(
    fn: F | None = None,
    /,
    *,
    reason: str | None = None,
    when: Predicate | None = None,
    expires: timedelta | None = None,
) -> F | Callable[[F], F]:
    """Mark a tool function as needing a person's decision before it runs.

    Usable bare (``@requires_approval``) or configured
    (``@requires_approval(reason=..., when=lambda args: ..., expires=timedelta(hours=4))``).
    The function is returned unchanged apart from the marker attribute.
    """
    spec = ApprovalSpec(reason=reason, when=when, expires=expires)

    def mark(target: F) -> F:
        setattr(target, MARKER, spec)
        # Framework tool objects (e.g. Strands' DecoratedFunctionTool) wrap the original
        # function; mark it too so the marker is found whichever object the framework keeps.
        inner = getattr(target, "_tool_func", None) or getattr(target, "__wrapped__", None)
        if inner is not None and inner is not target:
            with contextlib.suppress(AttributeError, TypeError):
                setattr(inner, MARKER, spec)
        return target

    if fn is not None:
        return mark(fn)
    return mark


def approval_spec(obj: object) -> ApprovalSpec | None:
    """Return the :class:`ApprovalSpec` attached to ``obj`` (or what it wraps), if any."""
    seen: set[int] = set()
    current: object | None = obj
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        spec = getattr(current, MARKER, None)
        if isinstance(spec, ApprovalSpec):
            return spec
        current = getattr(current, "__wrapped__", None)
    return None
