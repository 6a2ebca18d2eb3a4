"""The multi-level HR agent: an HR agent that emails and delegates to an accounts sub-agent.

- ``hr`` has ``send_email`` and ``open_accounts``; the latter is a plain tool body that opens a
  ticket in the IT system, then awaits the ``accounts`` sub-agent with the ticket number.
- ``accounts`` has ``create_account`` and ``authorize_account``; authorizing needs approval.

``open_accounts`` is re-entered when the suspended sub-agent resumes, so the code before the
sub-agent call runs again. Opening the ticket is a journaled ``step``: it runs once, and every
re-entry gets the same ticket number back (so the sub-agent also gets the same prompt).

Offline it runs on scripted models (no API key). With ``OPENAI_API_KEY`` set, both agents use
OpenAI (``CONTINUATIONS_DEMO_MODEL``, default ``openai:gpt-4o-mini``).

Run one step per process::

    python examples/hr_agents.py start --db .demo/hr.db
    python -m continuations_core show --store sqlite:///.demo/hr.db <ID>
    python -m continuations_core approve --store sqlite:///.demo/hr.db <ID> 1 --by manager
    python examples/hr_agents.py resume --db .demo/hr.db <ID>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel

from continuations_core import Completed, Keyring, Suspended, requires_approval, step
from continuations_core.stores import SQLiteStore, open_store
from continuations_pydantic_ai import Continuations, resume, run

PROMPT = "Onboard Alice Martin (alice@example.com) as a payroll administrator."
LOG = Path(os.environ.get("HR_DEMO_LOG", ".demo/tool-calls.log"))


def _log(line: str) -> None:
    """Append to the demo's log of tool bodies that actually ran (across processes)."""
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as fh:
        fh.write(line + "\n")
    print(f"    [tool ran] {line}")


def _scripted(turns: list[list[tuple[str, dict[str, Any]]]], name: str) -> FunctionModel:
    """A model that makes ``turns[n]`` on its n-th response, then summarizes the results."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        n = sum(isinstance(m, ModelResponse) for m in messages)
        if n < len(turns):
            return ModelResponse(
                parts=[
                    ToolCallPart(tool, args, tool_call_id=f"{name}_{n}_{i}")
                    for i, (tool, args) in enumerate(turns[n])
                ]
            )
        results = [
            str(p.content)
            for m in messages
            for p in getattr(m, "parts", [])
            if isinstance(p, ToolReturnPart)
        ]
        return ModelResponse(parts=[TextPart(f"{name}: " + "; ".join(results))])

    return FunctionModel(respond, model_name=f"scripted-{name}")


def _model(turns: list[list[tuple[str, dict[str, Any]]]], name: str) -> Model | str:
    if os.environ.get("OPENAI_API_KEY"):
        return os.environ.get("CONTINUATIONS_DEMO_MODEL", "openai:gpt-4o-mini")
    return _scripted(turns, name)


accounts: Agent[None, str] = Agent(
    _model(
        [
            [("create_account", {"user": "alice", "system": "payroll"})],
            [("authorize_account", {"user": "alice", "system": "payroll", "role": "admin"})],
        ],
        "accounts",
    ),
    name="accounts",
    instructions="Create the account, then authorize it with the requested role.",
    capabilities=[Continuations()],
)


@accounts.tool_plain
def create_account(user: str, system: str) -> str:
    """Create a disabled account for ``user`` in ``system``."""
    _log(f"create_account user={user} system={system}")
    return f"account {user}@{system} created (disabled)"


@accounts.tool_plain
@requires_approval(reason="Grants access to a production system")
def authorize_account(user: str, system: str, role: str) -> str:
    """Enable ``user``'s account in ``system`` with ``role``."""
    _log(f"authorize_account user={user} system={system} role={role}")
    return f"account {user}@{system} enabled as {role}"


hr: Agent[None, str] = Agent(
    _model(
        [
            [
                ("send_email", {"to": "alice@example.com", "subject": "Welcome aboard"}),
                ("open_accounts", {"request": "payroll admin account for alice"}),
            ]
        ],
        "hr",
    ),
    name="hr",
    instructions="Onboard new employees: welcome them by email and open their accounts.",
    capabilities=[Continuations()],
)


@hr.tool_plain
def send_email(to: str, subject: str) -> str:
    """Send an email."""
    _log(f"send_email to={to} subject={subject}")
    return f"email '{subject}' sent to {to}"


async def open_ticket(request: str) -> str:
    """Open a ticket in the IT system (a side effect: each call opens a new ticket)."""
    ticket = f"IT-{uuid.uuid4().hex[:6]}"
    _log(f"open_ticket {ticket} request={request}")
    return ticket


@hr.tool
async def open_accounts(ctx: RunContext[None], request: str) -> str:
    """Open an IT ticket, then ask the accounts team agent to open the accounts."""
    ticket = await step("open ticket", open_ticket, request)  # once, however often re-entered
    result = await accounts.run(f"{request} (ticket {ticket})", usage=ctx.usage)
    return f"{ticket}: {result.output}"


#: For workers: ``continuations worker --agents hr_agents:AGENTS`` (with examples/ on the path).
AGENTS = {"hr": hr}


def keyring(db: Path) -> Keyring:
    """Real keys from $CONTINUATIONS_SIGNING_KEYS, else a local key file beside the database."""
    if os.environ.get("CONTINUATIONS_SIGNING_KEYS"):
        return Keyring.from_env()
    return Keyring.load_or_create(db.with_suffix(".key"))


async def start(db: Path, prompt: str, store_url: str | None = None) -> int:
    """Run the HR agent until it completes or suspends; store the continuation.

    In the SQLite file ``db``, or in the store at ``store_url`` when given (Postgres, say, for
    workers on other machines).
    """
    outcome = await run(hr, prompt, keys=keyring(db))
    if isinstance(outcome, Completed):
        print(f"completed without approval: {outcome.output}")
        return 0
    async with open_store(store_url) if store_url else SQLiteStore(db) as store:
        await store.save(outcome.continuation, actor="hr-demo")
    print(f"suspended: continuation {outcome.continuation.id} stored in {store_url or db}")
    print(outcome.continuation.id, file=sys.stderr)
    return 0


async def resume_run(db: Path, cid: str) -> int:
    """Resume the decided continuation from the store, which records the outcome.

    The store is the truth: ``resume`` claims the continuation there (single use), resumes from
    the stored document and decisions, and stores the next suspension or the completion.
    """
    async with SQLiteStore(db) as store:
        cont = await store.load(cid)
        outcome = await resume(hr, cont, keys=keyring(db), store=store, owner=f"hr-{os.getpid()}")
        if isinstance(outcome, Suspended):
            print(f"suspended again: {outcome.continuation.id}")
        else:
            print(f"completed: {outcome.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: ``start`` or ``resume ID``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, default=Path(".demo/hr.db"))
    parser.add_argument("--store", help="store the suspension at this store URL instead of --db")
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start")
    p_start.add_argument("prompt", nargs="?", default=PROMPT)
    p_resume = sub.add_parser("resume")
    p_resume.add_argument("id")
    args = parser.parse_args(argv)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    if args.command == "start":
        return asyncio.run(start(args.db, args.prompt, args.store))
    return asyncio.run(resume_run(args.db, args.id))


if __name__ == "__main__":
    sys.exit(main())
