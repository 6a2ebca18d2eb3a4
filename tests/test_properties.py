"""Property-based tests: schema round-trips, mutations of signed documents, decision order."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continuations_core import (
    ChildRun,
    Continuation,
    ContinuationError,
    Frame,
    Keyring,
    PendingCall,
)
from continuations_core._decisions import build_plan
from continuations_core.testing.conformance import BIG, KEYS, payer
from continuations_core.testing.spec import Call, Ledger
from continuations_pydantic_ai.testing import PydanticAIHarness

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
ident = st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=8)


def frames(depth: int = 3) -> st.SearchStrategy[Frame]:
    def frame(children: st.SearchStrategy[Frame | None]) -> st.SearchStrategy[Frame]:
        call = st.builds(
            lambda cid, tool, args, kind, child, reason: PendingCall(
                call_id=cid,
                tool=tool,
                args=args,
                kind="child" if child is not None else kind,
                children=(ChildRun(agent=child.agent, prompt="0" * 64, frame=child),)
                if child is not None
                else (),
                reason=reason,
            ),
            ident,
            ident,
            st.dictionaries(ident, json_value, max_size=3),
            st.sampled_from(["approval", "input"]),
            children,
            st.none() | st.text(max_size=20),
        )
        return st.builds(
            lambda agent, state, pending: Frame(
                framework="test",
                agent=agent,
                state=state,
                pending=tuple({c.call_id: c for c in pending}.values()),
            ),
            ident,
            st.dictionaries(ident, json_value, max_size=3),
            st.lists(call, max_size=3),
        )

    strategy: st.SearchStrategy[Frame | None] = st.none()
    for _ in range(depth):
        strategy = st.none() | frame(strategy)
    return frame(strategy)


continuations = st.builds(
    lambda root, run_id, seq: Continuation(run_id=run_id, seq=seq, root=root),
    frames(),
    ident,
    st.integers(0, 1000),
)


@given(continuations, st.booleans())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_schema_round_trip(cont: Continuation, signed: bool) -> None:
    """Any continuation survives to_json/from_json unchanged, signature included."""
    if signed:
        cont = cont.sign(KEYS)
    back = Continuation.from_json(cont.to_json())
    assert back == cont
    assert back.requests == cont.requests
    if signed:
        back.verify(KEYS)


def _real_continuation() -> tuple[str, PydanticAIHarness]:
    harness = PydanticAIHarness()
    spec = payer(Call("lookup", {"who": "bob"}), Call("transfer", BIG))
    outcome = asyncio.run(harness.run(harness.build(spec, Ledger()), "go", keys=KEYS))
    return outcome.continuation.to_json(), harness  # type: ignore[union-attr]


SIGNED_TEXT, _HARNESS = _real_continuation()
SIGNED_BYTES = SIGNED_TEXT.encode("utf-8")


def _accepted(data: bytes | dict[str, Any]) -> bool:
    try:
        cont = (
            Continuation.from_json(data)
            if isinstance(data, bytes)
            else Continuation.from_dict(data)
        )
        cont.verify(KEYS)
    except ContinuationError:
        return False
    return True


@given(st.integers(0, len(SIGNED_BYTES) - 1), st.integers(0, 255))
@settings(max_examples=400)
def test_byte_mutations_are_rejected(index: int, byte: int) -> None:
    """Changing any single byte of a signed continuation makes loading or verifying fail."""
    if SIGNED_BYTES[index] == byte:
        byte = (byte + 1) % 256
    mutated = SIGNED_BYTES[:index] + bytes([byte]) + SIGNED_BYTES[index + 1 :]
    assert not _accepted(mutated)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))] or [path]
    return [path]


SIGNED_DOC = Continuation.from_json(SIGNED_TEXT).to_dict()
FIELDS = [p for p in _leaves(SIGNED_DOC) if p and p[0] != "decisions"]


@given(st.sampled_from(FIELDS), json_leaf)
@settings(max_examples=300)
def test_field_mutations_are_rejected(path: tuple[Any, ...], value: Any) -> None:
    """Replacing any field of a signed continuation with another value is rejected."""
    doc = Continuation.from_json(SIGNED_TEXT).to_dict()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if target[path[-1]] == value and type(target[path[-1]]) is type(value):
        return
    target[path[-1]] = value
    assert not _accepted(doc)


@given(st.integers(0, len(SIGNED_BYTES) - 1), st.integers(0, 255))
@settings(max_examples=40, deadline=None)
def test_mutated_continuation_never_runs_a_tool(index: int, byte: int) -> None:
    """Even when a UI approves whatever it loaded, a mutated document runs no tool."""
    if SIGNED_BYTES[index] == byte:
        byte = (byte + 1) % 256
    mutated = SIGNED_BYTES[:index] + bytes([byte]) + SIGNED_BYTES[index + 1 :]
    ledger = Ledger()
    agent = _HARNESS.build(payer(Call("lookup", {"who": "bob"}), Call("transfer", BIG)), ledger)
    try:
        cont = Continuation.from_json(mutated)
        for req in cont.requests:
            cont = cont.approve(req.path)
        asyncio.run(_HARNESS.resume(agent, cont, keys=KEYS))
    except ContinuationError:
        pass
    else:
        raise AssertionError("a mutated continuation was resumed")
    assert ledger.count("transfer") == 0 and ledger.count("lookup") == 0


def _decided(cont: Continuation, choices: list[int], order: list[int]) -> Continuation:
    reqs = cont.requests
    for i in order:
        req = reqs[i]
        if req.kind == "input":
            cont = cont.respond(req.path, {"answer": i}, by="p")
        elif choices[i] % 2:
            cont = cont.deny(req.path, f"no {i}", by="p")
        else:
            cont = cont.approve(req.path, by="p")
    return cont


@given(continuations, st.data())
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_decision_order_is_irrelevant(cont: Continuation, data: st.DataObject) -> None:
    """Any order of the same decisions yields the same document and the same resume plan."""
    cont = cont.sign(KEYS)
    n = len(cont.requests)
    choices = data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    order = data.draw(st.permutations(list(range(n))))
    forward = _decided(cont, choices, list(range(n)))
    shuffled = _decided(cont, choices, list(order))
    strip = {"at": True}
    assert [d.model_dump(exclude=strip) for d in forward.decisions] == [
        d.model_dump(exclude=strip) for d in shuffled.decisions
    ]
    if n:
        assert build_plan(forward) == build_plan(shuffled)


def test_keyring_rotation() -> None:
    """A continuation signed with an old key verifies while that key is still held."""
    old = Keyring({"old": b"old-secret-0123456789abcdef"})
    signed = Continuation.from_json(SIGNED_TEXT).sign(old)
    rotated = Keyring(
        {"new": b"new-secret-0123456789abcdef", "old": b"old-secret-0123456789abcdef"}
    )
    Continuation.from_json(signed.to_json()).verify(rotated)
    assert rotated.active == "new"
    assert Continuation.from_json(signed.to_json()).sign(rotated).signature.kid == "new"  # type: ignore[union-attr]


def test_in_memory_edit_of_loaded_copy_is_caught() -> None:
    """Editing a loaded continuation in memory (not via its JSON) still fails verification."""
    from continuations_core import ContinuationTampered

    loaded = Continuation.from_json(SIGNED_TEXT)
    loaded.verify(KEYS)
    pending = loaded.root.pending[0].model_copy(update={"args": {"to": "eve", "amount": 1}})
    edited = loaded.model_copy(
        update={"root": loaded.root.model_copy(update={"pending": (pending,)})}
    )
    try:
        edited.verify(KEYS)
    except ContinuationTampered:
        pass
    else:
        raise AssertionError("an in-memory edit of a loaded continuation verified")
