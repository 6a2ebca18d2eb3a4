"""A separate OS process that runs or resumes one spec'd agent tree (cross-process tests).

It holds nothing but what it is given: the agent definitions (rebuilt from a named spec), the
signing keys from the environment, and a continuation in a JSON file or a SQLite store.
Tool executions are appended to a ledger file so the test can count them across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from _harnesses import ALL as HARNESSES

from continuations_core import Completed, Continuation, EveryNTurns, Keyring, Suspended
from continuations_core.stores import open_store
from continuations_core.testing.conformance import _looping, chain
from continuations_core.testing.spec import Ledger

SPECS = {"chain3": lambda: chain(3), "every2": lambda: _looping(EveryNTurns(2))}


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["run", "resume"])
    p.add_argument("--adapter", required=True)
    p.add_argument("--spec", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--file", help="continuation JSON file (read on resume, written on suspend)")
    p.add_argument("--store", help="store URL (continuations saved/claimed there)")
    p.add_argument("--id", help="continuation id in the store, for resume")
    p.add_argument("--result", required=True, help="where to write the outcome as JSON")
    a = p.parse_args()
    keys = Keyring.from_env()
    harness = HARNESSES[a.adapter]()
    agent = harness.build(SPECS[a.spec](), Ledger(path=Path(a.ledger)))
    store = open_store(a.store) if a.store else None
    if a.phase == "run":
        outcome = await harness.run(agent, "go", keys=keys)
    elif store is not None:
        claim = await store.claim(a.id, owner="xproc")
        outcome = await harness.resume(agent, await store.load(a.id), keys=keys)
        nxt = outcome.continuation if isinstance(outcome, Suspended) else None
        if nxt is not None:
            await store.save(nxt)
        await store.complete(
            claim,
            next_id=nxt.id if nxt else None,
            output=outcome.output if isinstance(outcome, Completed) else None,
        )
    else:
        cont = Continuation.from_json(Path(a.file).read_text())
        outcome = await harness.resume(agent, cont, keys=keys)
    result: dict[str, object]
    if isinstance(outcome, Suspended):
        if store is not None and a.phase == "run":
            await store.save(outcome.continuation)
        if a.file:
            Path(a.file).write_text(outcome.continuation.to_json())
        result = {"status": "suspended", "id": outcome.continuation.id}
    else:
        result = {"status": "completed", "output": str(outcome.output)}
    Path(a.result).write_text(json.dumps(result))
    if store is not None:
        await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
