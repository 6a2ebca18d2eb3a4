"""Incremental checkpoints: a base continuation plus a chain of appended segments.

A durable run writes a full, signed checkpoint (the *base*) now and then, and between two of
them appends one small *segment* per step: what changed in the root frame since the previous
step (messages appended to a history list, fields replaced), so a step costs an append
whatever the length of the history.

A segment is one JSON object::

    {"format": 1, "base": <base id>, "index": 1.., "seq": <run seq>, "prev": <previous mac>,
     "delta": [<op>...], "alg": "HMAC-SHA256" | "SHA-256", "kid": <key id> | null,
     "mac": <hex>}

``mac`` covers the canonical JSON of every other field, so each segment is bound to its base,
its place and the one before it: the first one's ``prev`` is the base's signature MAC (or, for
an unsigned base, the SHA-256 of its id). With a keyring it is an HMAC; without one it is a
plain SHA-256 chain, which still catches a torn, missing, reordered or foreign segment.

A delta's ops address the root frame's JSON by path (keys and list indexes):
``["set", path, value]``, ``["del", path]`` and ``["splice", path, start, items]`` (the list at
``path`` from ``start`` on becomes ``items``; appending messages is a splice at the old end).

Reading a checkpoint (:func:`materialize`) checks the chain's shape and applies the deltas;
the MACs are checked with the keys on :meth:`Continuation.verify`, before anything runs.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._limits import loads
from ._schema import Continuation, Frame
from ._signing import ALGORITHM, Keyring, canonical_json
from .errors import BrokenCheckpoint, ContinuationTampered

__all__ = [
    "DEFAULT_COMPACT_EVERY",
    "SEGMENT_FORMAT",
    "Chain",
    "Segment",
    "chain_start",
    "diff",
    "frame_data",
    "materialize",
    "new_segment",
    "with_segments",
]

SEGMENT_FORMAT: Final = 1
#: Segments appended to a base before the next step writes a full checkpoint again.
DEFAULT_COMPACT_EVERY: Final = 32
_PLAIN: Final = "SHA-256"
#: A list whose items differ at more places than this (beyond its common prefix) is replaced
#: from the first difference on rather than patched item by item.
_PATCHED_ITEMS: Final = 4

Path = list[str | int]


@dataclass(frozen=True)
class Segment:
    """One appended step of a checkpoint, as stored.

    Attributes:
        base: The id of the base continuation it follows.
        index: Its place in the chain (1 for the first segment after the base).
        seq: The run's ``seq`` after this step.
        mac: Its MAC (the next segment's ``prev``).
        text: The JSON text stored.
    """

    base: str
    index: int
    seq: int
    mac: str
    text: str


def chain_start(base_id: str, signature_mac: str | None) -> str:
    """The ``prev`` of a base's first segment: its signature MAC, or a digest of its id."""
    if signature_mac is not None:
        return signature_mac
    return hashlib.sha256(base_id.encode()).hexdigest()


def new_segment(
    base: str, index: int, seq: int, prev: str, delta: list[Any], keys: Keyring | None
) -> Segment:
    """Build and seal the segment ``index`` of ``base`` (HMAC with ``keys``, else SHA-256)."""
    body: dict[str, Any] = {
        "format": SEGMENT_FORMAT, "base": base, "index": index, "seq": seq, "prev": prev,
        "delta": delta, "alg": ALGORITHM if keys is not None else _PLAIN,
        "kid": keys.active if keys is not None else None,
    }  # fmt: skip
    payload = canonical_json(body)
    mac = keys.sign(payload)[1] if keys is not None else hashlib.sha256(payload).hexdigest()
    # The stored text is the payload with its MAC added last (a reader takes ``mac`` out and
    # canonicalizes the rest again), so the delta is encoded once.
    text = payload[:-1].decode("utf-8") + f',"mac":"{mac}"}}'
    return Segment(base, index, seq, mac, text)


# -- deltas ---------------------------------------------------------------------------------


def frame_data(frame: Frame) -> dict[str, Any]:
    """``frame`` as JSON data to diff, its ``state`` taken as it is rather than re-serialized.

    Adapters hand over a frame's state already serialized by the framework's own adapters (a
    fresh value per step that nothing changes later), so walking it once more per step, which
    costs as much as the history is long, is left out; only the small fields are dumped.
    """
    data = frame.model_dump(mode="json", exclude={"state"})
    data["state"] = frame.state
    return data


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: ``1``, ``1.0`` and ``true`` differ, though Python's ``==`` says equal.

    Values a step carries over are usually the very same objects (the adapters reuse what
    they serialized before), so the identity check answers most of it at once.
    """
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[Any]:
    """The ops that turn JSON object ``old`` into ``new`` (neither is changed)."""
    ops: list[Any] = []
    _diff(old, new, [], ops)
    return ops


def _diff(old: Any, new: Any, path: Path, ops: list[Any]) -> None:
    if _same(old, new):
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key, value in new.items():
            if key in old:
                _diff(old[key], value, [*path, key], ops)
            else:
                ops.append(["set", [*path, key], value])
        ops.extend(["del", [*path, key]] for key in old if key not in new)
        return
    if isinstance(old, list) and isinstance(new, list) and path:
        _diff_list(old, new, path, ops)
        return
    ops.append(["set", path, new])


def _diff_list(old: list[Any], new: list[Any], path: Path, ops: list[Any]) -> None:
    n = len(old)
    # The usual step: items appended (the prefix compared in C first).
    head = new[:n]
    if len(head) == n and (
        all(map(operator.is_, old, head))
        or (head == old and all(_same(x, y) for x, y in zip(old, head, strict=True)))
    ):
        ops.append(["splice", path, n, new[n:]])
        return
    start = 0
    while start < min(n, len(new)) and _same(old[start], new[start]):
        start += 1
    common = min(n, len(new))
    changed = [i for i in range(start, common) if not _same(old[i], new[i])]
    if len(changed) <= _PATCHED_ITEMS and all(
        isinstance(old[i], dict) and isinstance(new[i], dict) for i in changed
    ):
        for i in changed:
            _diff(old[i], new[i], [*path, i], ops)
        if len(new) != n:
            ops.append(["splice", path, common, new[common:]])
        return
    ops.append(["splice", path, start, new[start:]])


def _apply(root: dict[str, Any], ops: Any) -> None:
    if not isinstance(ops, list):
        raise ValueError("the delta is not a list of ops")
    for op in ops:
        if not isinstance(op, list) or len(op) < 2 or not isinstance(op[1], list):
            raise ValueError(f"malformed op {op!r:.80}")
        kind, path = op[0], op[1]
        if kind == "splice" and len(op) == 4:
            target = _walk(root, path)
            start, items = op[2], op[3]
            if not isinstance(target, list) or not isinstance(items, list):
                raise ValueError("a splice needs a list")
            if (
                not isinstance(start, int)
                or isinstance(start, bool)
                or not 0 <= start <= len(target)
            ):
                raise ValueError(f"splice start {start!r} out of range")
            target[start:] = items
        elif kind in ("set", "del") and path and len(op) == (3 if kind == "set" else 2):
            parent, key = _walk(root, path[:-1]), path[-1]
            if isinstance(parent, dict) and isinstance(key, str):
                if kind == "set":
                    parent[key] = op[2]
                elif key in parent:
                    del parent[key]
                else:
                    raise ValueError(f"no key {key!r} to delete")
            elif isinstance(parent, list) and kind == "set" and _index(key, parent):
                parent[key] = op[2]
            else:
                raise ValueError(f"cannot {kind} at {path!r:.80}")
        else:
            raise ValueError(f"malformed op {op!r:.80}")


def _index(key: Any, items: list[Any]) -> bool:
    return isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(items)


def _walk(root: Any, path: list[Any]) -> Any:
    node = root
    for key in path:
        found = isinstance(node, dict) and isinstance(key, str) and key in node
        if found or (isinstance(node, list) and _index(key, node)):
            node = node[key]
        else:
            raise ValueError(f"no {key!r} on the path {path!r:.80}")
    return node


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """What a materialized checkpoint was built from, so :meth:`verify` can check its MACs."""

    base_payload: bytes
    base_kid: str | None
    base_mac: str | None
    links: tuple[tuple[bytes, str, str | None, str, int], ...]  # payload, alg, kid, mac, index

    def verify(self, keys: Keyring, continuation_id: str) -> None:
        """Check the base's signature and every segment's HMAC with ``keys``.

        Raises:
            ContinuationTampered: If the base does not match its signature.
            BrokenCheckpoint: If a segment does not match its MAC.
            UnknownKey: If a key id is not held.
        """
        if self.base_kid is None or self.base_mac is None:
            raise ContinuationTampered(
                "The checkpoint's base is not signed but was read as signed. Do not resume it.",
                continuation_id=continuation_id,
            )
        keys.verify(
            self.base_payload, self.base_kid, self.base_mac, continuation_id=continuation_id
        )
        for payload, _alg, kid, mac, index in self.links:
            try:
                keys.verify(payload, kid or "", mac, continuation_id=continuation_id)
            except ContinuationTampered:
                raise _broken(
                    continuation_id, index, "does not match its MAC: it was modified"
                ) from None


def _broken(cid: str, index: int, what: str) -> BrokenCheckpoint:
    return BrokenCheckpoint(
        f"Segment {index} of checkpoint {cid} {what}. The run cannot be recovered from this "
        "checkpoint safely and nothing was run: restore the store from a backup, or fail the "
        "run and start it again.",
        continuation_id=cid,
    )


def materialize(
    base_root: dict[str, Any],
    *,
    base_id: str,
    signature_mac: str | None,
    texts: list[str],
) -> tuple[dict[str, Any], int | None, list[tuple[bytes, str, str | None, str, int]]]:
    """Apply the stored segments ``texts`` (in index order) to ``base_root`` (changed in place).

    Returns the root, the last segment's ``seq`` (``None`` without segments) and the chain's
    links (payload, alg, kid, mac, index) for :class:`Chain`. The chain's shape is checked
    here: every segment names this base, indexes run 1, 2, … without a gap, each ``prev`` is
    the MAC before it, and a SHA-256 chain's MACs are recomputed. HMACs need the keys: they
    are checked by :meth:`Chain.verify`.

    Raises:
        BrokenCheckpoint: If a segment is torn (not JSON, or malformed), missing, out of
            order, from another base, or does not chain.
    """
    prev = chain_start(base_id, signature_mac)
    seq: int | None = None
    links: list[tuple[bytes, str, str | None, str, int]] = []
    for expected, text in enumerate(texts, start=1):
        try:
            seg = loads(text, what="checkpoint segment", continuation_id=base_id)
        except Exception as exc:  # not JSON: a torn write
            raise _broken(base_id, expected, f"is torn or not JSON ({exc})") from None
        if not isinstance(seg, dict) or seg.get("format") != SEGMENT_FORMAT:
            raise _broken(base_id, expected, "is not a segment this version can read")
        if seg.get("base") != base_id:
            raise _broken(base_id, expected, f"belongs to another checkpoint ({seg.get('base')!r})")
        index = seg.get("index")
        if index != expected:
            raise _broken(
                base_id, expected, f"is out of order or missing (found index {index!r} there)"
            )
        mac, alg, kid = seg.get("mac"), seg.get("alg"), seg.get("kid")
        if seg.get("prev") != prev or not isinstance(mac, str):
            raise _broken(base_id, expected, "does not follow the segment before it")
        body = {k: v for k, v in seg.items() if k != "mac"}
        payload = canonical_json(body)
        if signature_mac is None:
            if alg != _PLAIN or hashlib.sha256(payload).hexdigest() != mac:
                raise _broken(base_id, expected, "does not match its digest: torn or modified")
        elif alg != ALGORITHM or not isinstance(kid, str):
            raise _broken(base_id, expected, "is not signed like its base")
        step = seg.get("seq")
        if not isinstance(step, int) or isinstance(step, bool):
            raise _broken(base_id, expected, "has no seq")
        try:
            _apply(base_root, seg.get("delta"))
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise _broken(base_id, expected, f"does not apply to its checkpoint ({exc})") from None
        links.append((payload, str(alg), kid, mac, expected))
        prev, seq = mac, step
    return base_root, seq, links


def with_segments(base: Continuation, texts: Sequence[str]) -> Continuation:
    """The checkpoint ``base`` with its stored segments applied (``base`` without any).

    The result carries the base's id and signature and the last segment's ``seq``; its
    :meth:`~Continuation.verify` checks the base's signature and every segment's MAC.

    Raises:
        BrokenCheckpoint: See :func:`materialize`.
    """
    if not texts:
        return base
    sig = base.signature
    data = base.model_copy(update={"decisions": ()}).to_dict()
    root, seq, links = materialize(
        data["root"], base_id=base.id, signature_mac=sig.mac if sig else None, texts=list(texts)
    )
    data["root"], data["seq"] = root, seq
    try:
        cont = Continuation.from_dict(data)
    except ContinuationTampered:
        raise
    except Exception as exc:  # the deltas made something that is no frame
        raise _broken(base.id, len(texts), f"makes an invalid checkpoint ({exc})") from None
    cont._chain = Chain(
        base.signed_payload(), sig.kid if sig else None, sig.mac if sig else None, tuple(links)
    )
    cont._signed_bytes = None
    cont._loaded_digest = hashlib.sha256(cont._current_payload()).hexdigest()
    return cont
