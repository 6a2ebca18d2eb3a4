"""One of N processes racing to resume the same continuation (see test_concurrent_resume)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import fleet_agents

from continuations_core import AlreadyClaimed, Completed, Keyring
from continuations_core.stores import open_store
from continuations_pydantic_ai import resume


async def main(url: str, cid: str, go: str) -> str:
    keys = Keyring.from_env()
    async with open_store(url) as store:
        cont = await store.load(cid)
        while not Path(go).exists():  # start together
            time.sleep(0.005)
        try:
            outcome = await resume(fleet_agents.payer, cont, keys=keys, store=store)
        except AlreadyClaimed:
            return "lost"
        return "won" if isinstance(outcome, Completed) else "suspended"


if __name__ == "__main__":
    print(asyncio.run(main(*sys.argv[1:4])))
