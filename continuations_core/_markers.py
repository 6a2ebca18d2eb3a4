"""``@requires_approval``: mark a tool so a person decides before it runs, and guard its body.

Marking a function returns a *guarded* function with the same name, signature, docstring and
sync/async nature, so both frameworks build the same tool schema from it. The guarded body runs
only when a gate admitted this exact call: an adapter's gate resolved the tool being called,
found the call approved (or its ``when=`` predicate false) and handed the body a one-shot pass.
Anywhere else (a sub-agent without the ``Continuations`` capability or plugin, ``run_stream``,
a bare ``agent.run`` of an agent without it, a direct call, another framework) the body does not
run and :class:`~continuations_core.UngatedCall` says what is missing (G13).

Applied above a framework's own decorator (``@requires_approval`` over ``@tool``), the marker
can only label the framework's tool object: agents with the capability or plugin gate it, but
the function inside has no guard of its own. The README says to put it closest to the function.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, overload

from pydantic import ConfigDict, ValidationError, create_model

from .errors import UngatedCall

__all__ = [
    "ApprovalSpec",
    "GateHook",
    "GateKey",
    "admitted",
    "approval_spec",
    "gate_hook",
    "gate_key",
    "is_guarded",
    "original_function",
    "requires_approval",
    "unresolved_call",
    "validated_args",
]

F = TypeVar("F", bound=Callable[..., Any])

MARKER = "__continuations_approval__"
GUARD = "__continuations_guard__"

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class ApprovalSpec:
    """How a marked tool is gated.

    Attributes:
        reason: Shown to the person deciding.
        when: Called with the call's validated args (a dict of parameter name to validated
            value, the same on every framework); the call is gated only when it returns true.
            ``None`` gates every call. A predicate that raises gates the call.
        expires: How long a decision may take; after that a resume raises
            ``ContinuationExpired`` or applies the configured default (G8).
        approvers: Who may decide (principal ids, roles or groups), recorded with the request
            for approval UIs to enforce.
    """

    reason: str | None = None
    when: Predicate | None = None
    expires: timedelta | None = None
    approvers: tuple[str, ...] = ()

    def applies(self, args: Mapping[str, Any]) -> bool:
        """Return whether a call with ``args`` must wait for a decision.

        A ``when`` predicate that raises counts as true: when in doubt, a person decides.
        """
        if self.when is None:
            return True
        try:
            return bool(self.when(args))
        except Exception:
            return True


@dataclass(frozen=True, eq=False)
class GateKey:
    """The identity of one guarded function; a pass admits exactly the function it names.

    Attributes:
        name: The function's ``__name__`` (what a framework calls the tool by default).
        qualname: Its ``__qualname__``, for messages.
    """

    name: str
    qualname: str


#: A gate that cannot resolve the function before the framework calls it (Pydantic AI's
#: output functions) decides inside the guard: called with the guard's key, spec and the
#: call's bound arguments, it returns to admit the call or raises to hold or refuse it.
GateHook = Callable[[GateKey, ApprovalSpec, dict[str, Any]], None]


@dataclass(eq=False)
class _Pass:
    key: GateKey
    path: tuple[str, ...]
    used: bool = False


_PASS: ContextVar[_Pass | None] = ContextVar("continuations_gate_pass", default=None)
_HOOK: ContextVar[GateHook | None] = ContextVar("continuations_gate_hook", default=None)


@overload
def requires_approval(fn: F, /) -> F: ...


@overload
def requires_approval(
    *,
    reason: str | None = None,
    when: Predicate | None = None,
    expires: timedelta | None = None,
    approvers: tuple[str, ...] | list[str] = (),
) -> Callable[[F], F]: ...


def requires_approval(
    fn: F | None = None,
    /,
    *,
    reason: str | None = None,
    when: Predicate | None = None,
    expires: timedelta | None = None,
    approvers: tuple[str, ...] | list[str] = (),
) -> F | Callable[[F], F]:
    """Mark a tool function as needing a person's decision before it runs.

    Usable bare (``@requires_approval``) or configured
    (``@requires_approval(reason=..., when=lambda args: ..., expires=timedelta(hours=4),
    approvers=["payments-leads"])``). Put it directly on the function, below the framework's
    tool decorator, so the body itself refuses to run outside a gate.

    Returns:
        A guarded function with the same name, signature, docstring and sync/async nature;
        calling it outside a gate raises :class:`~continuations_core.UngatedCall` without
        running the body.
    """
    spec = ApprovalSpec(reason=reason, when=when, expires=expires, approvers=tuple(approvers))

    def mark(target: F) -> F:
        if inspect.isfunction(target) or inspect.ismethod(target):
            # Label the function itself too: when the marker sits above a decorator that
            # registered the bare function already (``agent.tool_plain``), the agent's gate
            # still finds the spec on what it holds.
            with contextlib.suppress(AttributeError, TypeError):
                setattr(target, MARKER, spec)
            return _guard(target, spec)
        # A framework's tool object (the marker was put above the framework decorator): label
        # it and the function it wraps, so gates find the spec whichever object they hold.
        setattr(target, MARKER, spec)
        inner = getattr(target, "__wrapped__", None)
        if inner is not None and inner is not target:
            with contextlib.suppress(AttributeError, TypeError):
                setattr(inner, MARKER, spec)
        return target

    if fn is not None:
        return mark(fn)
    return mark


def _guard(fn: F, spec: ApprovalSpec) -> F:
    name = getattr(fn, "__name__", None) or "tool"
    key = GateKey(name, getattr(fn, "__qualname__", None) or name)
    guarded: Callable[..., Any]

    def admit(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        _admit(key, spec, fn, args, kwargs)

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def guarded_agen(*args: Any, **kwargs: Any) -> Any:
            admit(args, kwargs)
            async for item in fn(*args, **kwargs):
                yield item

        guarded = guarded_agen
    elif inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            admit(args, kwargs)
            return await fn(*args, **kwargs)

        guarded = guarded_async
    else:

        @functools.wraps(fn)
        def guarded_sync(*args: Any, **kwargs: Any) -> Any:
            admit(args, kwargs)
            return fn(*args, **kwargs)

        guarded = guarded_sync
    setattr(guarded, MARKER, spec)
    setattr(guarded, GUARD, key)
    return typing.cast(F, guarded)


def _admit(
    key: GateKey,
    spec: ApprovalSpec,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Let the body run only with an unused pass for this very function, or a gate hook's yes."""
    ticket = _PASS.get()
    if ticket is not None and ticket.key is key and not ticket.used:
        ticket.used = True  # one call per decision: a re-entrant call needs its own
        return
    hook = _HOOK.get()
    if hook is not None:
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as exc:  # the framework will report the bad call itself
            raise _refusal(key) from exc
        hook(key, spec, dict(bound.arguments))
        return
    raise _refusal(key)


def _refusal(key: GateKey, unresolved: str | None = None) -> UngatedCall:
    from ._protocol import CURRENT_CALL  # the seam imports this module's callers

    scope = CURRENT_CALL.get()
    if unresolved is not None:
        message = (
            f"Tool {unresolved!r} was approved, but the gate could not resolve which function "
            f"it runs, and it reached {key.qualname!r}, which requires approval "
            "(@requires_approval); it did not run. A marked function runs only through a gate "
            "that resolved it. Fix: serve the tool from a toolset the gate can see through "
            "(on Pydantic AI a FunctionToolset, or one wrapped with prefixed, renamed, filtered "
            "or prepared), then retry the continuation."
        )
        return _refused(UngatedCall(message))
    if scope is not None:
        where = (
            f"It was called while tool {scope.path[-1]!r} of agent "
            f"{scope.agents[-1]!r} ran (chain {' > '.join(scope.agents)}), by code or a "
            "sub-agent that has no Continuations capability (Pydantic AI) or plugin (Strands)."
        )
    else:
        where = "It was called directly, or by an agent that has no Continuations gate."
    error = UngatedCall(
        f"{key.qualname!r} requires approval (@requires_approval) and did not run: no gate decided "
        f"on this call. {where} Fix: add Continuations() to the agent that has this tool "
        "(Agent(..., capabilities=[Continuations()]) on Pydantic AI, plugins=[Continuations()] "
        "on Strands) and start the root run with the adapter's run()/resume(). In tests, call "
        "it through continuations_core.testing.call_approved()."
    )
    return _refused(error)


def _refused(error: UngatedCall) -> UngatedCall:
    """Note ``error`` on the run, which then fails even if the framework swallows it."""
    from ._protocol import REFUSED

    refused = REFUSED.get()
    if refused is not None:
        refused.append(error)
    return error


def approval_spec(obj: object) -> ApprovalSpec | None:
    """Return the :class:`ApprovalSpec` attached to ``obj`` (or what it wraps), if any."""
    for current in _chain(obj):
        spec = getattr(current, MARKER, None)
        if isinstance(spec, ApprovalSpec):
            return spec
    return None


def gate_key(obj: object) -> GateKey | None:
    """The guard of ``obj`` (a guarded function, or a framework tool object built from one)."""
    for current in _chain(obj):
        key = getattr(current, GUARD, None)
        if isinstance(key, GateKey):
            return key
    return None


def is_guarded(obj: object) -> bool:
    """Whether calling ``obj`` passes through a guard (the marker was put on the function)."""
    return gate_key(obj) is not None


def original_function(obj: object) -> Any:
    """The innermost function of ``obj``, following ``__wrapped__`` (tool objects, guards)."""
    *_, innermost = _chain(obj)
    return innermost


def _chain(obj: object) -> Iterator[Any]:
    seen: set[int] = set()
    current: Any = obj
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "__wrapped__", None)


@contextlib.contextmanager
def admitted(obj: object, path: tuple[str, ...]) -> Iterator[None]:
    """Adapters: let ``obj``'s guarded body run once, for the call at ``path``.

    A gate enters this around the framework's call of a tool it admitted (approved, or its
    ``when=`` predicate false). Objects without a guard need no pass.
    """
    key = gate_key(obj)
    if key is None:
        yield
        return
    token = _PASS.set(_Pass(key, path))
    try:
        yield
    finally:
        _PASS.reset(token)


@contextlib.contextmanager
def gate_hook(hook: GateHook) -> Iterator[None]:
    """Adapters: decide inside the guard of the first marked function called in this block.

    For framework paths where the gate cannot see which function will run before it is called
    (Pydantic AI output functions). A pass granted with :func:`admitted` takes precedence.
    """
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


@contextlib.contextmanager
def unresolved_call(tool: str) -> Iterator[None]:
    """Adapters: around an approved call whose function the gate could not resolve.

    The approval cannot be handed to a function the gate never saw, so a marked body the call
    reaches in this block is refused with an :class:`UngatedCall` that says so and how to
    serve the tool instead; unmarked functions run.
    """

    def refuse(key: GateKey, spec: ApprovalSpec, args: dict[str, Any]) -> None:
        raise _refusal(key, unresolved=tool)

    with gate_hook(refuse):
        yield


# Validators built from a function's signature, per function and field list.
_VALIDATORS: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = (
    weakref.WeakKeyDictionary()
)


def validated_args(obj: object, args: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """Validate a call's raw ``args`` against the signature of the function behind ``obj``.

    Used where a framework hands the gate raw JSON args (Strands), so that ``when=`` predicates
    see validated values on every framework. Only ``fields`` (the tool schema's properties) are
    validated; framework-injected parameters are left out.

    Raises:
        ValueError: If the args do not validate (the gate then holds the call).
    """
    fn = original_function(obj)
    per_function = _VALIDATORS.setdefault(fn, {})
    model = per_function.get(fields)
    if model is None:
        try:
            hints = typing.get_type_hints(fn)
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError, NameError) as exc:
            raise ValueError(f"cannot read the signature of {fn!r}: {exc}") from exc
        definitions: dict[str, Any] = {}
        for name in fields:
            param = params.get(name)
            annotation = hints.get(name, Any)
            if param is None or param.default is inspect.Parameter.empty:
                definitions[name] = (annotation, ...)
            else:
                definitions[name] = (annotation, param.default)
        try:
            model = create_model(
                f"{getattr(fn, '__name__', 'tool')}_args",
                __config__=ConfigDict(arbitrary_types_allowed=True),
                **definitions,
            )
        except Exception as exc:  # a signature pydantic cannot model: the gate holds the call
            raise ValueError(f"cannot validate the args of {fn!r}: {exc}") from exc
        per_function[fields] = model
    try:
        instance = model.model_validate({k: v for k, v in args.items() if k in fields})
    except ValidationError as exc:
        raise ValueError(str(exc)) from exc
    return {name: getattr(instance, name) for name in fields}
