"""How the Redis store writes a record's fields and reads them back (no driver needed).

Times are ISO text in the record and whole microseconds since the epoch as sorted-set scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import cast

from .._decisions import load_records
from .._schema import Continuation, DecisionRecord
from ._records import LastError, Status
from ._row import Row, readable

__all__ = ["EPOCH", "dump", "from_time", "micros", "row", "session_score", "text", "ts"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def text(value: bytes | str) -> str:
    # Works with clients made with or without decode_responses.
    return value.decode() if isinstance(value, bytes) else value


def ts(value: datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") if value is not None else None


def session_score(holder: str | None) -> int:
    """A claim's score in ``<prefix>:owner:<owner>``: its holder's session (the part of the
    holder id before the first "/") hashed to 52 bits, exact as a Redis score. A process finds
    the claims other sessions hold under its owner name without reading its own; the claim
    script computes the same (``redis.sha1hex``)."""
    session = (holder or "").split("/", 1)[0]
    return int(hashlib.sha1(session.encode()).hexdigest()[:13], 16)


def micros(value: datetime) -> int:
    # Whole microseconds since the epoch are exact as Redis scores (doubles) until 2255.
    return (value - EPOCH) // timedelta(microseconds=1)


def from_time(value: tuple[int, int]) -> datetime:
    seconds, micros = value
    return EPOCH + timedelta(seconds=int(seconds), microseconds=int(micros))


def row(data: Mapping[bytes | str, bytes | str]) -> Row:
    r = {text(k): text(v) for k, v in data.items()}
    return readable(r.get("id", "?"), lambda: parse(r))


def parse(r: dict[str, str]) -> Row:
    error, output = r.get("last_error"), r.get("output")
    return Row(
        document=Continuation.from_json(r["document"]),
        decisions=load_records(r["decisions"], continuation_id=r.get("id")),
        version=int(r["version"]),
        status=cast(Status, r["status"]),
        created_at=datetime.fromisoformat(r["created_at"]),
        updated_at=datetime.fromisoformat(r["updated_at"]),
        claimed_by=r.get("claimed_by"),
        lease_until=time(r.get("lease_until")),
        fence=int(r.get("fence", 0)),
        attempts=int(r.get("attempts", 0)),
        not_before=time(r.get("not_before")),
        last_error=LastError.model_validate_json(error) if error else None,
        holder=r.get("holder"),
        output=json.loads(output) if output is not None else None,
    )


def time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def dump(records: tuple[DecisionRecord, ...]) -> str:
    return json.dumps([r.model_dump(mode="json") for r in records], ensure_ascii=False)
