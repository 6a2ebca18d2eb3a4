"""Peer measurements, run with the peers' own virtualenv (see ``benchmarks/peers.py``).

Prints one JSON object of raw samples (milliseconds and bytes) on stdout:

- LangGraph: the same sequential tool loop as ours (a scripted model node and the prebuilt
  ``ToolNode``), run plain (no checkpointer) and with ``InMemorySaver``, ``SqliteSaver`` and
  ``PostgresSaver``; per-step checkpoint overhead is derived by the caller.
- OpenAI Agents SDK: a conversation of ``k`` plain tool calls (built once, untimed) continued
  by one ``needs_approval`` call, suspended into a ``RunState``, serialized (``to_string``),
  loaded (``from_string``), approved and resumed to completion; versus the same continuation
  with no approval (plain).

No model is called: both peers are driven by scripted models on loopback services only. This
file imports nothing from agent-continuations; the caller computes medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Tracing would try to export to a remote service; nothing may leave this machine.
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
os.environ.setdefault("OPENAI_API_KEY", "unused-no-network")


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


# -- LangGraph -------------------------------------------------------------------------------


def _langgraph_app(steps: int, checkpointer: Any, executed: list[str]) -> Any:
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def lookup(who: str) -> str:
        """The lookup tool."""
        executed.append(who)
        return f"lookup(who={who}) ok"

    def model(state: MessagesState) -> dict[str, Any]:
        done = sum(isinstance(m, ToolMessage) for m in state["messages"])
        if done < steps:
            call = {"name": "lookup", "args": {"who": f"p{done}"}, "id": f"loop-t{done}-c0"}
            return {"messages": [AIMessage(content="", tool_calls=[call])]}
        return {"messages": [AIMessage(content=f"loop done: {done} results")]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_node("tools", ToolNode([lookup]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "model")
    return graph.compile(checkpointer=checkpointer)


def _langgraph_run(app: Any, steps: int, executed: list[str]) -> tuple[float, float]:
    """Wall and process CPU milliseconds of one run."""
    executed.clear()
    config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 4 * steps + 10}
    start, cpu = time.perf_counter(), time.process_time()
    app.invoke({"messages": [("user", "go")]}, config)
    elapsed, spent = _ms(start), (time.process_time() - cpu) * 1000.0
    if len(executed) != steps:
        raise RuntimeError(f"LangGraph ran {len(executed)} tools, expected {steps}")
    return elapsed, spent


def langgraph(steps: int, reps: int, warmup: int, postgres_url: str | None) -> dict[str, Any]:
    """Plain vs checkpointed LangGraph runs of ``steps`` sequential tool calls."""
    import psycopg
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver
    from psycopg.rows import dict_row

    executed: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="peer-langgraph-"))
    savers: dict[str, Any] = {"plain": None, "memory": InMemorySaver()}
    sqlite_conn = sqlite3.connect(tmp / "lg.db", check_same_thread=False)
    saver = SqliteSaver(sqlite_conn)
    saver.setup()
    savers["sqlite"] = saver
    schema = f"bench_lg_{uuid.uuid4().hex[:12]}"
    pg_conn = None
    admin = None
    errors: dict[str, str] = {}
    if postgres_url:
        try:
            admin = psycopg.connect(postgres_url, autocommit=True, connect_timeout=5)
            admin.execute(f'CREATE SCHEMA "{schema}"')
            pg_conn = psycopg.connect(
                postgres_url,
                autocommit=True,
                prepare_threshold=0,
                row_factory=dict_row,
                options=f"-c search_path={schema}",
            )
            pg_saver = PostgresSaver(pg_conn)
            pg_saver.setup()
            savers["postgres"] = pg_saver
        except psycopg.Error as exc:
            errors["postgres"] = str(exc)
    samples: dict[str, list[float]] = {name: [] for name in savers}
    cpu_samples: dict[str, list[float]] = {name: [] for name in savers}
    apps = {name: _langgraph_app(steps, s, executed) for name, s in savers.items()}
    try:
        for rep in range(warmup + reps):
            for name, app in apps.items():  # interleaved, so drift hits every variant alike
                elapsed, spent = _langgraph_run(app, steps, executed)
                if rep >= warmup:
                    samples[name].append(elapsed)
                    cpu_samples[name].append(spent)
    finally:
        sqlite_conn.close()
        if pg_conn is not None:
            pg_conn.close()
        if admin is not None:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            admin.close()
    return {"steps": steps, "samples": samples, "cpu_samples": cpu_samples, "errors": errors}


# -- OpenAI Agents SDK ------------------------------------------------------------------------


def _oai_agent(script: list[Any], *, gated: bool, executed: list[str]) -> Any:
    from agents import Agent, function_tool
    from agents.testing import ScriptedModel

    @function_tool
    def lookup(who: str) -> str:
        """The lookup tool."""
        executed.append("lookup")
        return f"lookup(who={who}) ok"

    @function_tool(needs_approval=gated)
    def transfer(to: str, amount: int) -> str:
        """The transfer tool."""
        executed.append("transfer")
        return f"transfer(amount={amount}, to={to}) ok"

    return Agent(name="root", model=ScriptedModel(script), tools=[lookup, transfer])


async def _oai_history(k: int) -> list[Any]:
    """A real conversation of ``k`` sequential lookup calls (untimed, built once)."""
    from agents import Runner
    from agents.testing import assistant_message, function_call

    executed: list[str] = []
    script: list[Any] = [
        [function_call("lookup", {"who": f"p{i}"}, call_id=f"root-t{i}-c0")] for i in range(k)
    ]
    script.append([assistant_message("root done")])
    result = await Runner.run(
        _oai_agent(script, gated=False, executed=executed), "go", max_turns=k + 10
    )
    if executed.count("lookup") != k:
        raise RuntimeError(f"the OpenAI Agents history ran {executed.count('lookup')} lookups")
    return list(result.to_input_list())


def _tail() -> list[Any]:
    from agents.testing import assistant_message, function_call

    pay = function_call("transfer", {"to": "bob", "amount": 5000}, call_id="root-pay")
    return [[pay], [assistant_message("root done")]]


async def _oai_once(history: list[Any]) -> dict[str, float]:
    from agents import Runner, RunState

    conversation = [*history, {"role": "user", "content": "go"}]
    executed: list[str] = []
    plain = _oai_agent(_tail(), gated=False, executed=executed)
    start = time.perf_counter()
    await Runner.run(plain, conversation)
    plain_ms = _ms(start)
    if executed != ["transfer"]:
        raise RuntimeError(f"plain OpenAI Agents run executed {executed}")

    executed.clear()
    agent = _oai_agent(_tail(), gated=True, executed=executed)
    start = time.perf_counter()
    first = await Runner.run(agent, conversation)
    if not first.interruptions or executed:
        raise RuntimeError("the OpenAI Agents run did not stop at the approval")
    text = first.to_state().to_string()
    suspend_ms = _ms(start)
    start = time.perf_counter()
    state = await RunState.from_string(agent, text)
    for item in state.get_interruptions():
        state.approve(item)
    await Runner.run(agent, state)
    resume_ms = _ms(start)
    if executed != ["transfer"]:
        raise RuntimeError(f"resumed OpenAI Agents run executed {executed}")
    compact = json.dumps(json.loads(text), separators=(",", ":"))
    return {
        "plain_ms": plain_ms,
        "suspend_ms": suspend_ms,
        "resume_ms": resume_ms,
        "bytes": float(len(text.encode())),
        "compact_bytes": float(len(compact.encode())),
        "messages": float(len(first.to_input_list())),
    }


def openai_agents(ks: list[int], reps: int, warmup: int) -> dict[str, Any]:
    """RunState size and suspend/resume latency one step after ``k`` tool calls, per ``k``."""
    from agents import set_tracing_disabled

    set_tracing_disabled(True)
    out: dict[str, Any] = {}
    for k in ks:
        history = asyncio.run(_oai_history(k))
        runs: list[dict[str, float]] = []
        for rep in range(warmup + reps):
            sample = asyncio.run(_oai_once(history))
            if rep >= warmup:
                runs.append(sample)
        out[str(k)] = {key: [r[key] for r in runs] for key in runs[0]}
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("langgraph", "langgraph-checkpoint-sqlite", "langgraph-checkpoint-postgres")
    return {name: version(name) for name in (*names, "openai-agents")}


def main() -> int:
    """Run the peer measurements named on the command line; print JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--postgres", default=None)
    parser.add_argument("--history-steps", default="4,49,499")
    parser.add_argument("--only", choices=["langgraph", "openai-agents"], default=None)
    args = parser.parse_args()
    result: dict[str, Any] = {"versions": _versions(), "python": sys.version.split()[0]}
    jobs: dict[str, Callable[[], Any]] = {
        "langgraph": lambda: langgraph(args.steps, args.reps, args.warmup, args.postgres),
        "openai_agents": lambda: openai_agents(
            [int(k) for k in args.history_steps.split(",")], args.reps, args.warmup
        ),
    }
    for name, job in jobs.items():
        if args.only is None or args.only.replace("-", "_") == name:
            result[name] = job()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
