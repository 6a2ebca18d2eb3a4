"""Upgrading older continuation documents to the current schema (G11).

Each step is a pure function from a version-``n`` document (a parsed JSON dict) to a version
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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from ._schema import SCHEMA_VERSION, run_segment, segment
from .errors import MalformedContinuation

__all__ = ["upgrade"]

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


_MIGRATIONS: dict[int, Callable[[dict[str, Any], PathMap], dict[str, Any]]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
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
