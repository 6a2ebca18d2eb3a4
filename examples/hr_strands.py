"""The multi-level HR agent on Strands, plus the mixed-framework variant.

The tool functions are plain Python; each framework registers them its own way (``tool(fn)``
for Strands, ``agent.tool_plain(fn)`` for Pydantic AI), and ``@requires_approval`` marks them
for both. Same shape as ``hr_agents.py``: an HR agent with ``send_email`` and a plain tool body that calls
an accounts sub-agent, whose ``authorize_account`` needs approval. With ``--mixed`` the accounts
agent is a Pydantic AI agent instead, so the continuation's frames mix both frameworks.

Offline it runs on scripted models; each step is a separate process::

    python examples/hr_strands.py start  --db .demo/strands.db [--mixed]
    python -m continuations_core approve --store sqlite:///.demo/strands.db <ID> 1 --by manager
    python examples/hr_strands.py resume --db .demo/strands.db <ID> [--mixed]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from pydantic_ai import Agent as PydanticAgent
from strands import Agent, tool

import continuations_pydantic_ai as cpai
import continuations_strands as cst
from continuations_core import Keyring, Suspended, requires_approval
from continuations_core.stores import SQLiteStore
from continuations_core.testing.spec import AgentSpec, Call, Ledger
from continuations_pydantic_ai.testing import scripted_model
from continuations_strands.testing import ScriptedModel

PROMPT = "Onboard Alice Martin (alice@example.com) as a payroll administrator."


def _ran(line: str) -> None:
    print(f"    [tool ran] {line}")


def create_account(user: str, system: str) -> str:
    """Create a disabled account for ``user`` in ``system``."""
    _ran(f"create_account user={user} system={system}")
    return f"account {user}@{system} created (disabled)"


@requires_approval(reason="Grants access to a production system")
def authorize_account(user: str, system: str, role: str) -> str:
    """Enable ``user``'s account in ``system`` with ``role``."""
    _ran(f"authorize_account user={user} system={system} role={role}")
    return f"account {user}@{system} enabled as {role}"


ACCOUNT_TURNS = [
    [("create_account", {"user": "alice", "system": "payroll"})],
    [("authorize_account", {"user": "alice", "system": "payroll", "role": "admin"})],
]


def strands_accounts() -> Agent:
    """The accounts sub-agent on Strands."""
    return Agent(
        model=ScriptedModel("accounts", ACCOUNT_TURNS),
        name="accounts",
        tools=[tool(create_account), tool(authorize_account)],
        callback_handler=None,
        plugins=[cst.Continuations()],
    )


def pydantic_accounts() -> PydanticAgent[None, str]:
    """The same accounts sub-agent on Pydantic AI (for the mixed tree)."""
    spec = AgentSpec(
        "accounts",
        turns=tuple(tuple(Call(name, args) for name, args in turn) for turn in ACCOUNT_TURNS),
        tools=(),
    )
    agent: PydanticAgent[None, str] = PydanticAgent(
        scripted_model(spec, Ledger()), name="accounts", capabilities=[cpai.Continuations()]
    )
    agent.tool_plain(create_account)
    agent.tool_plain(authorize_account)
    return agent


def hr_agent(mixed: bool) -> Agent:
    """The HR agent on Strands; its plain tool body calls the accounts sub-agent."""
    accounts: Any = pydantic_accounts() if mixed else strands_accounts()

    @tool
    def send_email(to: str, subject: str) -> str:
        """Send an email."""
        _ran(f"send_email to={to} subject={subject}")
        return f"email '{subject}' sent to {to}"

    @tool
    async def open_accounts(request: str) -> str:
        """Ask the accounts team agent to open accounts."""
        if mixed:
            return str((await accounts.run(request)).output)
        return str(await accounts.invoke_async(request)).strip()

    turns = [
        [
            ("send_email", {"to": "alice@example.com", "subject": "Welcome aboard"}),
            ("open_accounts", {"request": "payroll admin for alice"}),
        ]
    ]
    return Agent(
        model=ScriptedModel("hr", turns),
        name="hr",
        tools=[send_email, open_accounts],
        callback_handler=None,
        plugins=[cst.Continuations()],
    )


def keyring(db: Path) -> Keyring:
    """Real keys from $CONTINUATIONS_SIGNING_KEYS, else a local key file beside the database."""
    if os.environ.get("CONTINUATIONS_SIGNING_KEYS"):
        return Keyring.from_env()
    return Keyring.load_or_create(db.with_suffix(".key"))


async def main(argv: list[str] | None = None) -> int:
    """Command line: ``start`` or ``resume ID``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, default=Path(".demo/strands.db"))
    parser.add_argument("--mixed", action="store_true", help="Pydantic AI accounts sub-agent")
    parser.add_argument("command", choices=["start", "resume"])
    parser.add_argument("id", nargs="?")
    args = parser.parse_args(argv)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    agent = hr_agent(args.mixed)
    async with SQLiteStore(args.db) as store:
        if args.command == "start":
            outcome = await cst.run(agent, PROMPT, keys=keyring(args.db))
            if isinstance(outcome, Suspended):
                await store.save(outcome.continuation, actor="hr-strands")
                frames = outcome.continuation.root.framework
                print(f"suspended: {outcome.continuation.id} (root frame: {frames})")
                print(outcome.continuation.id, file=sys.stderr)
            return 0
        # The store is the truth: resume claims the continuation there (single use), resumes
        # from the stored document and decisions, and records the next suspension or the end.
        owner = f"hr-strands-{os.getpid()}"
        cont = await store.load(args.id)
        outcome = await cst.resume(agent, cont, keys=keyring(args.db), store=store, owner=owner)
        if isinstance(outcome, Suspended):
            print(f"suspended again: {outcome.continuation.id}")
        else:
            print(f"completed: {outcome.output}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
