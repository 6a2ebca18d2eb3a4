"""Loading continuation documents, and upgrading older ones to the current schema (G11).

:func:`load` checks a parsed document's version, keeps the exact bytes its signature covers,
upgrades it and validates it. Each upgrade step is a pure function from a version-``n`` document (a parsed JSON dict) to a version
``n+1`` document. Loading runs them in order; a document that cannot be upgraded is a
:class:`~continuations_core.MalformedContinuation`.

- **1 → 2** added ``PendingCall.step`` and ``.approvers`` and ``Continuation.started_by``, all
  optional: a version 1 document is a valid version 2 document.
- **2 → 3** lets a delegating call wait on several sub-agent runs. A ``child`` pending call's
  single ``child`` frame becomes ``children: [{agent, prompt, occurrence, frame}]``, the
  ``ordinal``/``journal`` metadata of completed sub-agent runs becomes ``runs`` (entries keyed
  the same way), and every path below a delegating call gains the run's segment. Version 2
  recorded no prompt digest, so those runs are matched by agent name and order
  (``prompt: null``). Decisions in the document are moved to the new paths; the old-to-new path
  map is kept so decisions a store holds apart from the document still bind.
- **3 → 4** added ``Continuation.trace`` and ``DecisionRecord.trace`` (W3C trace contexts),
  both optional: a version 3 document is a valid version 4 document.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ._limits import MAX_DOCUMENT_BYTES
from ._paths import run_segment, segment
from ._signing import canonical_json
from .errors import MalformedContinuation, UnsupportedSchemaVersion

if TYPE_CHECKING:
    from ._schema import Continuation

__all__ = ["load", "signed_part", "upgrade"]

Path = tuple[str, ...]
PathMap = dict[Path, Path]


def _v1_to_v2(data: dict[str, Any], paths: PathMap) -> dict[str, Any]:
    return {**data, "schema": 2}


def _v2_to_v3(data: dict[str, Any], paths: PathMap) -> dict[str, Any]:
    root = _frame_v3(data["root"], (), (), paths)
    decisions = [
        {**record, "path": list(paths.get(tuple(record["path"]), tuple(record["path"])))}
        for record in data.get("decisions") or []
    ]
    return {**data, "schema": 3, "root": root, "decisions": decisions}


def _frame_v3(frame: dict[str, Any], old: Path, new: Path, paths: PathMap) -> dict[str, Any]:
    pending = []
    for call in frame.get("pending") or []:
        here = segment(call["tool"], call["call_id"], call.get("step"))
        old_here, new_here = (*old, here), (*new, here)
        child = call.get("child")
        upgraded = {k: v for k, v in call.items() if k != "child"}
        if call.get("kind") == "child":
            meta = dict(call.get("metadata") or {})
            journal = list(meta.pop("journal", None) or [])
            ordinal = int(meta.pop("ordinal", 0))
            seen: Counter[str] = Counter()
            runs = []
            for entry in journal[:ordinal]:
                agent = str(entry.get("agent", ""))
                runs.append({**entry, "agent": agent, "prompt": None, "occurrence": seen[agent]})
                seen[agent] += 1
            children = []
            if child is not None:
                agent = str(child["agent"])
                below = (*new_here, run_segment(agent, None, seen[agent]))
                children.append(
                    {
                        "agent": agent,
                        "prompt": None,
                        "occurrence": seen[agent],
                        "frame": _frame_v3(child, old_here, below, paths),
                    }
                )
            upgraded["children"] = children
            upgraded["metadata"] = {**meta, "runs": runs}
        elif old_here != new_here:
            paths[old_here] = new_here
        pending.append(upgraded)
    return {**frame, "pending": pending}


def _v3_to_v4(data: dict[str, Any], paths: PathMap) -> dict[str, Any]:
    return {**data, "schema": 4}


_MIGRATIONS: dict[int, Callable[[dict[str, Any], PathMap], dict[str, Any]]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
}


def upgrade(
    data: dict[str, Any], version: int, *, continuation_id: str | None
) -> tuple[dict[str, Any], PathMap]:
    """Upgrade a version-``version`` document to :data:`SCHEMA_VERSION`.

    Returns:
        The upgraded document and the map of leaf paths that moved (old path to new path).

    Raises:
        MalformedContinuation: If the document's structure does not fit its version.
    """
    from ._schema import SCHEMA_VERSION

    paths: PathMap = {}
    upgraded = data
    try:
        for v in range(version, SCHEMA_VERSION):
            upgraded = _MIGRATIONS[v](upgraded, paths)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedContinuation(
            f"The schema version {version} document could not be upgraded ({exc!r}); it does "
            "not have the structure of that version.",
            continuation_id=continuation_id,
        ) from exc
    return upgraded, paths


def signed_part(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a document its signature covers: everything but the signature and decisions."""
    return {k: v for k, v in data.items() if k not in ("signature", "decisions")}


def _unsigned_size(data: dict[str, Any]) -> int:
    """Bytes the unsigned fields add to the signed part's compact JSON: ``,"key":value``."""
    size = 0
    for key in ("signature", "decisions"):
        if key in data:
            with contextlib.suppress(TypeError, ValueError):  # not JSON: validation decides
                size += len(key) + 4 + len(canonical_json(data[key]))
    return size


def load(cls: type[Continuation], data: Any) -> Continuation:
    """Load a parsed continuation document (see ``Continuation.from_json``).

    The caller has checked nesting depth and non-finite numbers (``_limits``); this checks the
    size limit, the version, the schema and every decision's values.

    Raises:
        MalformedContinuation: If it is not a continuation document, or breaks a limit.
        UnsupportedSchemaVersion: If it was written by a newer schema version.
    """
    from ._schema import SCHEMA_VERSION

    if not isinstance(data, dict):
        raise MalformedContinuation("A continuation document must be a JSON object.")
    cid = data.get("id") if isinstance(data.get("id"), str) else None
    version = data.get("schema")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedContinuation(
            "The document has no integer 'schema' field; it is not a continuation.",
            continuation_id=cid,
        )
    if version > SCHEMA_VERSION or version < 1:
        raise UnsupportedSchemaVersion(
            f"Schema version {version} is not supported by this package (it reads up to "
            f"{SCHEMA_VERSION}). Upgrade agent-continuations to resume it.",
            continuation_id=cid,
        )
    try:
        signed_bytes = canonical_json(signed_part(data))
    except (TypeError, ValueError) as exc:
        raise MalformedContinuation(f"Not canonical JSON: {exc}", continuation_id=cid) from exc
    size = len(signed_bytes) + _unsigned_size(data)
    if size > MAX_DOCUMENT_BYTES:
        raise MalformedContinuation(
            f"The continuation document is {size} bytes as compact JSON, over the limit of "
            f"{MAX_DOCUMENT_BYTES} bytes. Nothing was changed.",
            continuation_id=cid,
        )
    upgraded, legacy_paths = upgrade(data, version, continuation_id=cid)
    try:
        cont = cls.model_validate(upgraded)
    except ValidationError as exc:
        raise MalformedContinuation(
            f"The document does not match the continuation schema: {exc.error_count()} "
            f"error(s), first: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}.",
            continuation_id=cid,
        ) from exc
    paths = [record.path for record in cont.decisions]
    if len(set(paths)) != len(paths):
        twice = sorted({" > ".join(p) for p in paths if paths.count(p) > 1})
        raise MalformedContinuation(
            f"The document carries more than one decision for {', '.join(twice)}. A path "
            "takes one decision; remove the extra ones and decide again.",
            continuation_id=cid,
        )
    from ._decisions import check_record

    for record in cont.decisions:
        check_record(record, continuation_id=cid)
    # Older documents were signed in their own version's form; keep those bytes.
    cont._signed_bytes = signed_bytes
    cont._legacy_paths = legacy_paths
    cont._loaded_digest = hashlib.sha256(cont._current_payload()).hexdigest()
    return cont
