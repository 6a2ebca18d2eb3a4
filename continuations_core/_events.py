"""One log line per event: ``event=<name> key=value ...`` on the ``continuations.*`` loggers.

Workers, durable runs and stores report claims, resumes, suspensions, completions, failed
attempts, failures, retries and lost claims this way, so an operator can follow them with
``grep`` and a log pipeline can parse them. The same fields ride on each record as
``record.continuations``, for handlers that emit JSON.
"""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["log_event"]


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event as one line of ``key=value`` pairs (values with spaces are quoted).

    The fields are also attached to the record as ``record.continuations`` (a dict with the
    event under ``"event"``), for handlers that emit JSON.
    """
    if not logger.isEnabledFor(level):
        return
    values = {k: _value(v) for k, v in fields.items() if v is not None}
    line = " ".join([f"event={event}", *(f"{k}={v}" for k, v in values.items())])
    logger.log(level, "%s", line, extra={"continuations": {"event": event, **values}})


def _value(value: Any) -> str:
    if isinstance(value, BaseException):
        value = f"{type(value).__name__}: {value}"
    elif hasattr(value, "isoformat"):
        value = value.isoformat(timespec="milliseconds")
    elif isinstance(value, float):
        value = f"{value:.3f}"
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text
