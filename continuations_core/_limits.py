"""Limits on untrusted input, and the strict JSON loader that enforces them (G15).

Continuation documents, decision records and the values people type into a decision come from
outside the process: a caller, a browser, a database row, a model. Each is refused with
:class:`~continuations_core.errors.MalformedContinuation` before anything is changed when it

- is larger than its size limit (measured in UTF-8 bytes of compact JSON);
- nests deeper than its depth limit;
- repeats a key inside one JSON object (parsers disagree on which copy wins, so a reviewer
  and a resumer could read different documents);
- holds ``NaN``, ``Infinity`` or ``-Infinity`` (not JSON; they also break canonical signing).

Depth counts nested containers on the deepest path: a scalar has depth 0, ``[]`` and ``{}``
have depth 1, ``{"a": [1]}`` has depth 2. The checks never recurse, so no input can exhaust the
interpreter's recursion limit.
"""

from __future__ import annotations

import json
import math
from itertools import chain, compress, filterfalse
from operator import not_
from typing import Any, Final

from pydantic_core import to_jsonable_python

from .errors import MalformedContinuation

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "check_tree",
    "check_value",
    "loads",
]

MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
"""Largest continuation document (and stored decision list), in bytes of JSON text."""

MAX_DEPTH: Final = 128
"""Deepest nesting of a continuation document; each sub-agent level adds 3."""

MAX_VALUE_BYTES: Final = 256 * 1024
"""Largest respond value, edited args, deny message, comment or ``by``, in bytes of JSON."""

MAX_VALUE_DEPTH: Final = 32
"""Deepest nesting of a respond value or edited args (an args object is depth 1)."""

# Type tests as C callables, so the depth walk keeps its per-node work in C.
_is_dict = frozenset({dict}).__contains__
_is_array = frozenset({list, tuple}).__contains__
_is_float = frozenset({float}).__contains__
_is_json_type = frozenset({dict, list, tuple, str, int, float, bool, type(None)}).__contains__

_MAX_UTF8_BYTES_PER_CHAR: Final = 4


class _Refused(Exception):
    """Raised from inside the JSON parser's hooks; turned into a typed error by :func:`loads`."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the key {key!r} appears twice in one object")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"the number {text[:40]} is too large for a float (it would be Infinity)")
    return value


def _size(text: str | bytes, limit: int) -> int | None:
    """None if ``text`` is within ``limit`` bytes, else a lower bound of its size (cheaply).

    A text of more characters than the limit is over it without encoding it; one of at most a
    quarter as many characters is within it (UTF-8 uses at most 4 bytes a character).
    """
    if isinstance(text, bytes | bytearray):
        return len(text) if len(text) > limit else None
    if len(text) > limit:
        return len(text)
    if len(text) * _MAX_UTF8_BYTES_PER_CHAR <= limit:
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else None


def _classify(nodes: list[Any], *, parsed: bool) -> tuple[list[Any], list[Any], float | None]:
    """The objects and arrays among ``nodes``, and a NaN/inf float found among them, if any.

    ``parsed`` nodes came from the strict parser: exact JSON types, no NaN or infinity.
    """
    kinds = list(map(type, nodes))
    objects = list(compress(nodes, map(_is_dict, kinds)))
    arrays = list(compress(nodes, map(_is_array, kinds)))
    if not parsed:
        bad = next(filterfalse(math.isfinite, compress(nodes, map(_is_float, kinds))), None)
        if bad is not None:
            return [], [], bad
        if not all(map(_is_json_type, kinds)):
            for odd in compress(nodes, map(not_, map(_is_json_type, kinds))):
                if isinstance(odd, dict):
                    objects.append(odd)
                elif isinstance(odd, list | tuple):
                    arrays.append(odd)
                elif isinstance(odd, float) and not math.isfinite(odd):
                    return [], [], odd
    return objects, arrays, None


def _depth_over(value: Any, limit: int, *, parsed: bool) -> tuple[int | None, float | None]:
    """``(depth, None)`` if ``value`` nests deeper than ``limit``, ``(None, x)`` for a NaN/inf.

    Walks level by level without recursion. Each level is a few passes of C iterators
    (``map``, ``compress``, ``chain``) over its nodes, so the per-node work stays in C; only
    containers are touched in Python. Values that did not come from the strict parser may hold
    NaN or infinity, and types the parser never makes (dict or list subclasses, tuples): those
    are checked too.
    """
    objects, arrays, bad = _classify([value], parsed=parsed)
    depth = 0
    while bad is None and (objects or arrays):
        depth += 1
        if depth > limit:
            return depth, None
        values = chain.from_iterable(map(dict.values, objects))
        children = list(chain(values, chain.from_iterable(arrays)))
        objects, arrays, bad = _classify(children, parsed=parsed)
    return None, bad


def _refuse(
    what: str, problem: str, fix: str, continuation_id: str | None
) -> MalformedContinuation:
    return MalformedContinuation(f"The {what} {problem}. {fix}", continuation_id=continuation_id)


def loads(
    text: str | bytes,
    *,
    what: str = "continuation document",
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DEPTH,
    continuation_id: str | None = None,
) -> Any:
    """Parse untrusted JSON text strictly.

    The size is checked before parsing; duplicate keys, ``NaN``, ``Infinity`` and numbers that
    overflow to infinity are refused while parsing; the depth is checked without recursion.

    Args:
        text: The JSON text (``bytes`` may be UTF-8, UTF-16 or UTF-32, as for ``json.loads``).
        what: What the text is, for the error message (``"respond value"``...).
        max_bytes: The size limit in bytes.
        max_depth: The nesting limit (see the module docstring).
        continuation_id: Named in the error, when known.

    Raises:
        MalformedContinuation: If the text is not JSON or breaks one of the limits.
    """
    size = _size(text, max_bytes)
    if size is not None:
        raise _refuse(
            what,
            f"is at least {size} bytes, over the limit of {max_bytes} bytes",
            "Refused before parsing; nothing was changed.",
            continuation_id,
        )
    try:
        value = json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float
        )
    except _Refused as exc:
        raise _refuse(
            what, f"is not strict JSON: {exc}", "Nothing was changed.", continuation_id
        ) from None
    except RecursionError:
        raise _refuse(
            what,
            f"nests deeper than the limit of {max_depth} levels",
            "Nothing was changed.",
            continuation_id,
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(
            what,
            f"is not valid JSON ({exc})",
            "It was truncated, corrupted or is not JSON; nothing was changed.",
            continuation_id,
        ) from exc
    depth, _ = _depth_over(value, max_depth, parsed=True)
    if depth is not None:
        raise _refuse(
            what,
            f"nests deeper than the limit of {max_depth} levels",
            "Nothing was changed.",
            continuation_id,
        )
    return value


def check_tree(
    value: Any,
    *,
    what: str = "continuation document",
    max_depth: int = MAX_DEPTH,
    continuation_id: str | None = None,
) -> None:
    """Refuse an already-parsed value that nests deeper than ``max_depth`` or holds NaN/inf.

    Raises:
        MalformedContinuation: If it does.
    """
    depth, bad = _depth_over(value, max_depth, parsed=False)
    if depth is not None:
        raise _refuse(
            what,
            f"nests deeper than the limit of {max_depth} levels",
            "Nothing was changed.",
            continuation_id,
        )
    if bad is not None:
        raise _refuse(
            what, f"holds the float {bad}, which JSON cannot represent", "Use a finite number "
            "or a string.", continuation_id,
        )  # fmt: skip


def check_value(
    value: Any,
    *,
    what: str,
    max_bytes: int = MAX_VALUE_BYTES,
    max_depth: int = MAX_VALUE_DEPTH,
    continuation_id: str | None = None,
) -> None:
    """Refuse a decision value (respond value, edited args...) over the value limits.

    The value is measured as the compact JSON it is stored as. Values JSON has no type for
    (dates, sets, models) are measured in the JSON form pydantic gives them.

    Raises:
        MalformedContinuation: If it nests too deeply, is too large, holds NaN or infinity, or
            cannot be represented as JSON at all.
    """
    check_tree(value, what=what, max_depth=max_depth, continuation_id=continuation_id)
    try:  # within the depth limit, so the encoder cannot recurse too deeply
        text = _compact(value)
    except (TypeError, ValueError):
        try:
            plain = to_jsonable_python(value)
            check_tree(plain, what=what, max_depth=max_depth, continuation_id=continuation_id)
            text = _compact(plain)
        except (TypeError, ValueError) as exc:  # pydantic's errors, its depth limit too
            raise _refuse(
                what, f"cannot be stored as JSON ({exc})", "Use JSON values.", continuation_id
            ) from exc
    size = _size(text, max_bytes)
    if size is not None:
        raise _refuse(
            what,
            f"is at least {size} bytes as JSON, over the limit of {max_bytes} bytes",
            "Store large data elsewhere and pass a reference.",
            continuation_id,
        )


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
