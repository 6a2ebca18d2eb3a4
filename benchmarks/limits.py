"""The cost of the input limits (G15) when loading a continuation document.

Builds a ~1 MB document whose root frame holds a message history shaped like Pydantic AI's
(requests and responses with parts, tool calls with nested args), then times, in one run:

- plain ``json.loads`` of the text;
- the strict loader (size check, duplicate keys, NaN/Infinity, depth walk);
- ``Continuation.from_json`` (strict parse plus validation and signature bookkeeping);
- the same load without the limits (plain ``json.loads`` and the internal loader).

Run: ``.venv/bin/python benchmarks/limits.py [--kib 1024] [--repeat 30]``. It prints ratios;
nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from continuations_core import Continuation, Frame, PendingCall
from continuations_core._limits import loads
from continuations_core._migrate import load as load_unchecked


def _history(target_bytes: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    size, turn = 0, 0
    while size < target_bytes:
        request = {
            "kind": "request",
            "parts": [
                {
                    "part_kind": "user-prompt",
                    "content": f"Turn {turn}: reconcile invoice INV-{turn:05d} against the ledger.",
                    "timestamp": "2026-11-02T10:00:00Z",
                }
            ],
        }
        response = {
            "kind": "response",
            "model_name": "gpt-4o-mini",
            "usage": {"input_tokens": 812 + turn, "output_tokens": 64, "details": {}},
            "parts": [
                {"part_kind": "text", "content": "Looking up the ledger entries. " * 4},
                {
                    "part_kind": "tool-call",
                    "tool_name": "lookup",
                    "tool_call_id": f"call_{turn}",
                    "args": {
                        "invoice": f"INV-{turn:05d}",
                        "filters": {"amount": {"gte": 10.5, "lte": 9999.99}, "tags": ["q4", "eu"]},
                    },
                },
            ],
        }
        result = {
            "kind": "request",
            "parts": [
                {
                    "part_kind": "tool-return",
                    "tool_name": "lookup",
                    "tool_call_id": f"call_{turn}",
                    "content": [{"entry": i, "amount": 12.5 * i, "ok": True} for i in range(6)],
                }
            ],
        }
        for message in (request, response, result):
            messages.append(message)
            size += len(json.dumps(message))
        turn += 1
    return messages


def document(kib: int) -> str:
    """A continuation document of about ``kib`` KiB."""
    frame = Frame(
        framework="pydantic-ai",
        agent="accounts",
        state={"messages": _history(kib * 1024)},
        pending=(
            PendingCall(
                call_id="call_x",
                tool="transfer",
                args={"to": "acct-1", "amount": 5},
                kind="approval",
            ),
        ),
    )
    return Continuation(run_id="bench", root=frame).to_json()


def _best(fn: Callable[[], object], repeat: int) -> float:
    # The fastest run: on a shared machine, slower ones measure the neighbours.
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Print the timings and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    text = document(args.kib)
    plain = _best(lambda: json.loads(text), args.repeat)
    strict = _best(lambda: loads(text), args.repeat)
    load = _best(lambda: Continuation.from_json(text), args.repeat)
    unchecked = _best(lambda: load_unchecked(Continuation, json.loads(text)), args.repeat)
    print(f"document: {len(text.encode()) / 1024:.0f} KiB, best of {args.repeat}")
    print(f"json.loads                  {plain * 1e3:8.2f} ms")
    print(f"strict loads                {strict * 1e3:8.2f} ms  ({strict / plain:.2f}x json.loads)")
    print(f"from_json without limits    {unchecked * 1e3:8.2f} ms")
    print(
        f"from_json (strict)          {load * 1e3:8.2f} ms  "
        f"(+{(load - unchecked) * 1e3:.2f} ms, {load / unchecked:.2f}x)"
    )


if __name__ == "__main__":
    main()
