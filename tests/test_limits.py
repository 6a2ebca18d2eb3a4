"""Bounded input (G15): size, depth, duplicate keys and NaN in documents and decision values."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continuations_core import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_VALUE_BYTES,
    MAX_VALUE_DEPTH,
    Approve,
    Continuation,
    DecisionRecord,
    Frame,
    Keyring,
    MalformedContinuation,
    PendingCall,
    Respond,
)
from continuations_core.testing.store_scenarios import make_continuation

KEYS = Keyring.generate()
MARK = "@@RAW@@"
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400"]

# Generators for nesting thousands of levels deep: seeded, since st.randoms() draws hypothesis
# entropy per call and one draw per level exceeds its budget (a FailedHealthCheck).
SEEDED = st.integers(0, 2**32 - 1).map(random.Random)


def depth(value: Any) -> int:
    """An independent oracle: nested containers on the deepest path (recursive; shallow only)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def nest(levels: int, inner: Any = 1, *, rng: random.Random | None = None) -> Any:
    """``inner`` wrapped in ``levels`` containers (lists, or a random mix of lists and dicts)."""
    value = inner
    for _ in range(levels):
        value = {"k": value} if rng is not None and rng.random() < 0.5 else [value]
    return value


def nest_text(levels: int, inner: str, rng: random.Random) -> str:
    """The JSON text of :func:`nest`, built without recursion for any depth."""
    kinds = [rng.random() < 0.5 for _ in range(levels)]
    opening = "".join('{"k":' if is_dict else "[" for is_dict in kinds)
    closing = "".join("}" if is_dict else "]" for is_dict in reversed(kinds))
    return opening + inner + closing


def signed_with(value: Any) -> str:
    """The text of a signed continuation whose root state holds ``value`` at "x"."""
    base = make_continuation()
    root = base.root.model_copy(update={"state": {**base.root.state, "x": value}})
    return base.model_copy(update={"root": root}).sign(KEYS).to_json()


def document_with(raw: str) -> str:
    """A continuation's text whose root state holds the raw JSON text ``raw`` at "x"."""
    return signed_with(MARK).replace(json.dumps(MARK), raw, 1)


def state_depth_for(total: int) -> int:
    """How deep a value at root.state["x"] must nest for the document to nest ``total`` deep."""
    assert depth(json.loads(document_with("0"))) < total
    return total - 3  # under the document, its "root" frame and the frame's "state" object


def input_cont() -> Continuation:
    """A continuation with one input call and one approval call whose args have no schema."""
    calls = (
        PendingCall(call_id="c1", tool="ask", kind="input"),
        PendingCall(call_id="c2", tool="configure", kind="approval", args={"opts": {}}),
    )
    return Continuation(run_id="r", root=Frame(framework="test", agent="a", pending=calls))


# -- documents ----------------------------------------------------------------------------------


def test_a_document_at_the_byte_limit_loads_and_one_byte_more_is_refused() -> None:
    """MAX_DOCUMENT_BYTES counts UTF-8 bytes: a document of exactly that size loads, +1 does not."""
    empty = document_with('""')
    room = MAX_DOCUMENT_BYTES - len(empty.encode())
    pad = "é" * (room // 2) + "a" * (room % 2)  # two bytes per "é": bytes, not characters
    exact = document_with(json.dumps(pad, ensure_ascii=False))
    assert len(exact.encode()) == MAX_DOCUMENT_BYTES
    assert Continuation.from_json(exact).root.state["x"] == pad
    assert Continuation.from_json(exact.encode()).root.state["x"] == pad
    over = document_with(json.dumps(pad + "a", ensure_ascii=False))
    with pytest.raises(MalformedContinuation, match="over the limit of 16777216 bytes"):
        Continuation.from_json(over)
    with pytest.raises(MalformedContinuation, match="over the limit"):
        Continuation.from_dict(json.loads(over))


def test_a_document_at_the_depth_limit_loads_and_one_level_more_is_refused() -> None:
    """A document nesting exactly MAX_DEPTH levels loads (from text and dict); one more is refused."""
    inner = state_depth_for(MAX_DEPTH)
    exact = signed_with(nest(inner))
    assert depth(json.loads(exact)) == MAX_DEPTH
    Continuation.from_json(exact).verify(KEYS)
    Continuation.from_dict(json.loads(exact)).verify(KEYS)
    over = signed_with(nest(inner + 1))
    assert depth(json.loads(over)) == MAX_DEPTH + 1
    with pytest.raises(MalformedContinuation, match=f"limit of {MAX_DEPTH} levels"):
        Continuation.from_json(over)
    with pytest.raises(MalformedContinuation, match=f"limit of {MAX_DEPTH} levels"):
        Continuation.from_dict(json.loads(over))


def _object_paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [here] if isinstance(value, dict) and value else []
    children = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in children:
        found += _object_paths(child, (*here, key))
    return found


def _dump_repeating(
    value: Any, target: tuple[Any, ...], again: str | None, here: tuple[Any, ...] = ()
) -> str:
    """``value`` as JSON text, with the object at ``target`` repeating its first key.

    The repeated key gets the raw JSON ``again`` as its value, or its own value when None.
    """
    if isinstance(value, dict):
        items = [
            json.dumps(k) + ":" + _dump_repeating(v, target, again, (*here, k))
            for k, v in value.items()
        ]
        if here == target:
            first = next(iter(value))
            items.append(
                json.dumps(first) + ":" + (again if again is not None else json.dumps(value[first]))
            )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return (
            "["
            + ",".join(_dump_repeating(v, target, again, (*here, i)) for i, v in enumerate(value))
            + "]"
        )
    return json.dumps(value)


DOC = json.loads(make_continuation(KEYS).to_json())
DOC_OBJECTS = _object_paths(DOC)


@given(st.sampled_from(DOC_OBJECTS), st.none() | json_value.map(json.dumps))
@settings(max_examples=200)
def test_a_repeated_key_in_any_object_of_a_document_is_refused(
    path: tuple[Any, ...], again: str | None
) -> None:
    """A key repeated in any object of a real document (same or other value) is refused."""
    text = _dump_repeating(DOC, path, again)
    with pytest.raises(MalformedContinuation, match="appears twice"):
        Continuation.from_json(text)


@st.composite
def repeated_key_values(draw: st.DrawFn) -> str:
    """Raw JSON with one object repeating a key, wrapped in up to 40 random containers."""
    key = draw(st.text(max_size=6))
    others = draw(
        st.dictionaries(st.text(max_size=6).filter(lambda k: k != key), json_value, max_size=3)
    )
    pairs = [json.dumps(key) + ":" + json.dumps(draw(json_value))]
    pairs += [json.dumps(k) + ":" + json.dumps(v) for k, v in others.items()]
    pairs.insert(
        draw(st.integers(1, len(pairs))), json.dumps(key) + ":" + json.dumps(draw(json_value))
    )
    text = "{" + ",".join(pairs) + "}"
    return nest_text(draw(st.integers(0, 40)), text, draw(st.randoms(use_true_random=False)))


@given(repeated_key_values())
@settings(max_examples=150)
def test_a_repeated_key_at_any_depth_of_framework_state_is_refused(raw: str) -> None:
    """A repeated key anywhere inside framework state is refused, at any depth."""
    with pytest.raises(MalformedContinuation, match="appears twice"):
        Continuation.from_json(document_with(raw))


@given(st.integers(MAX_DEPTH + 1, 5000), SEEDED)
@settings(max_examples=60, deadline=None)
def test_documents_nesting_too_deep_are_refused_without_recursion(
    levels: int, rng: random.Random
) -> None:
    """Any nesting deeper than MAX_DEPTH, up to thousands of levels, is a typed refusal."""
    with pytest.raises(MalformedContinuation, match="limit of"):
        Continuation.from_json(document_with(nest_text(levels, "0", rng)))
    data = json.loads(document_with('"later"'))
    data["root"]["state"]["x"] = nest(levels, rng=rng)
    with pytest.raises(MalformedContinuation, match="limit of"):
        Continuation.from_dict(data)


@given(
    st.integers(MAX_DOCUMENT_BYTES + 1, MAX_DOCUMENT_BYTES + 4096),
    st.sampled_from(["a", "é", "€", "😀"]),
)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_oversized_documents_are_refused_before_parsing(size: int, char: str) -> None:
    """Text over MAX_DOCUMENT_BYTES is refused whatever it holds, even when it is not JSON."""
    unit = len(char.encode())
    text = char * (size // unit + 1)
    with pytest.raises(MalformedContinuation, match="over the limit"):
        Continuation.from_json(text)
    with pytest.raises(MalformedContinuation, match="over the limit"):
        Continuation.from_json(text.encode())


@given(st.sampled_from(NON_FINITE), st.integers(0, 30), st.randoms(use_true_random=False))
@settings(max_examples=80)
def test_nan_and_infinity_in_a_document_are_refused(
    literal: str, levels: int, rng: random.Random
) -> None:
    """NaN, Infinity, -Infinity and numbers that overflow to infinity are refused in text."""
    with pytest.raises(MalformedContinuation, match="not strict JSON"):
        Continuation.from_json(document_with(nest_text(levels, literal, rng)))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=repr)
def test_nan_and_infinity_in_a_parsed_document_are_refused(value: float) -> None:
    """from_dict refuses non-finite floats; to_json never writes them (state holds null)."""
    data = json.loads(document_with('"later"'))
    data["root"]["state"]["x"] = [{"score": value}]
    with pytest.raises(MalformedContinuation, match="JSON cannot represent"):
        Continuation.from_dict(data)
    cont = make_continuation()
    root = cont.root.model_copy(update={"state": {"score": value}})
    text = cont.model_copy(update={"root": root}).sign(KEYS).to_json()
    loaded = Continuation.from_json(text)
    loaded.verify(KEYS)
    assert loaded.root.state == {"score": None}


# -- decision values ----------------------------------------------------------------------------


def test_respond_values_and_edited_args_at_their_limits_pass_and_beyond_are_refused() -> None:
    """MAX_VALUE_DEPTH and MAX_VALUE_BYTES hold exactly, for respond values and edited args."""
    cont = input_cont()
    ask, configure = (r.path for r in cont.requests)
    assert cont.respond(ask, nest(MAX_VALUE_DEPTH)).decisions[0].decision == Respond(
        value=nest(MAX_VALUE_DEPTH)
    )
    with pytest.raises(MalformedContinuation, match=f"limit of {MAX_VALUE_DEPTH} levels"):
        cont.respond(ask, nest(MAX_VALUE_DEPTH + 1))
    args = {"opts": nest(MAX_VALUE_DEPTH - 1)}  # the args object itself is one level
    assert cont.approve(configure, args=args).decisions[0].decision == Approve(args=args)
    with pytest.raises(MalformedContinuation, match=f"limit of {MAX_VALUE_DEPTH} levels"):
        cont.approve(configure, args={"opts": nest(MAX_VALUE_DEPTH)})

    exact = "é" * ((MAX_VALUE_BYTES - 2) // 2)  # two quotes, two bytes per character
    assert len(json.dumps(exact, ensure_ascii=False).encode()) == MAX_VALUE_BYTES
    cont.respond(ask, exact)
    with pytest.raises(MalformedContinuation, match=f"over the limit of {MAX_VALUE_BYTES} bytes"):
        cont.respond(ask, exact + "a")
    key_room = MAX_VALUE_BYTES - len('{"opts":""}')
    cont.approve(configure, args={"opts": "a" * key_room})
    with pytest.raises(MalformedContinuation, match="over the limit"):
        cont.approve(configure, args={"opts": "a" * (key_room + 1)})
    with pytest.raises(MalformedContinuation, match="over the limit"):
        cont.deny(configure, "n" * MAX_VALUE_BYTES)
    with pytest.raises(MalformedContinuation, match="comment"):
        cont.deny(configure, comment="c" * MAX_VALUE_BYTES)


@given(st.integers(MAX_VALUE_DEPTH + 1, 5000), SEEDED)
@settings(max_examples=50, deadline=None)
def test_deeply_nested_respond_values_and_args_are_refused(levels: int, rng: random.Random) -> None:
    """Respond values and edited args nesting past MAX_VALUE_DEPTH are refused, at any depth."""
    cont = input_cont()
    ask, configure = (r.path for r in cont.requests)
    with pytest.raises(MalformedContinuation, match="limit of"):
        cont.respond(ask, nest(levels, rng=rng))
    with pytest.raises(MalformedContinuation, match="limit of"):
        cont.approve(configure, args={"opts": nest(levels, rng=rng)})


@given(st.integers(MAX_VALUE_BYTES + 1, MAX_VALUE_BYTES * 8), json_value)
@settings(max_examples=30, deadline=None)
def test_oversized_respond_values_are_refused(size: int, extra: Any) -> None:
    """A respond value larger than MAX_VALUE_BYTES as JSON is refused."""
    cont = input_cont()
    with pytest.raises(MalformedContinuation, match="over the limit"):
        cont.respond(cont.requests[0].path, {"blob": "x" * size, "extra": extra})


@given(
    json_value,
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.randoms(use_true_random=False),
)
@settings(max_examples=80)
def test_nan_and_infinity_in_decision_values_are_refused(
    value: Any, bad: float, rng: random.Random
) -> None:
    """A NaN or infinite float anywhere in a respond value or edited args is refused."""
    cont = input_cont()
    ask, configure = (r.path for r in cont.requests)
    hidden = nest(rng.randrange(0, 10), [value, bad], rng=rng)
    with pytest.raises(MalformedContinuation, match="JSON cannot represent"):
        cont.respond(ask, hidden)
    with pytest.raises(MalformedContinuation, match="JSON cannot represent"):
        cont.approve(configure, args={"opts": hidden})


def test_decisions_carried_in_a_document_are_held_to_the_value_limits() -> None:
    """A document whose decision breaks a value limit is refused on load, though it is unsigned."""
    cont = input_cont()
    path = cont.requests[0].path
    record = DecisionRecord(
        path=path, tool="ask", args_digest=cont.pending_call(path).args_digest,
        decision=Respond(value=nest(MAX_VALUE_DEPTH + 1)),
    )  # fmt: skip
    data = cont.to_dict()
    data["decisions"] = [record.model_dump(mode="json")]
    with pytest.raises(MalformedContinuation, match=f"limit of {MAX_VALUE_DEPTH} levels"):
        Continuation.from_json(json.dumps(data))
    with pytest.raises(MalformedContinuation, match=f"limit of {MAX_VALUE_DEPTH} levels"):
        cont.with_decisions([record])
