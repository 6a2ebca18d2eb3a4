"""One of N processes racing to resume the same continuation (see test_concurrent_resume).

Usage: ``race_worker.py STORE_URL|- SOURCE GO_FILE``. ``SOURCE`` is a continuation id to load from
the store, or ``file:PATH`` for a JSON document (decided in memory). With ``-`` as the store URL
the process resumes without ``store=`` (the embedded default store). It prints ``won``, ``lost``
(another resumer won) or ``suspended``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import fleet_agents

from continuations_core import AlreadyClaimed, Completed, ConflictError, Continuation, Keyring
from continuations_core.stores import open_store
from continuations_pydantic_ai import resume


async def main(url: str, source: str, go: str) -> str:
    keys = Keyring.from_env()
    store = open_store(url) if url != "-" else None
    try:
        if source.startswith("file:"):
            cont = Continuation.from_json(Path(source[5:]).read_text())
        else:
            assert store is not None
            cont = await store.load(source)
        while not Path(go).exists():  # start together
            time.sleep(0.005)
        try:
            outcome = await resume(fleet_agents.payer, cont, keys=keys, store=store)
        except (AlreadyClaimed, ConflictError):  # claimed, or a compare-and-set lost
            return "lost"
        return "won" if isinstance(outcome, Completed) else "suspended"
    finally:
        if store is not None:
            await store.close()


if __name__ == "__main__":
    print(asyncio.run(main(*sys.argv[1:4])))
