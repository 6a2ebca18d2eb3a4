"""Crash recovery through segments: a run stopped mid-way resumes from its base plus segments,
random damage to any stored segment is refused before any tool runs, and a long run stores
far less than full checkpoints would."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_ai.usage import UsageLimits

from continuations_core import Completed, ContinuationError, Keyring, SQLiteStore
from continuations_core.testing.spec import AgentSpec, Call, Ledger, ToolSpec
from continuations_pydantic_ai import resume_run
from continuations_pydantic_ai.testing import PydanticAIHarness

KEYS = Keyring.generate("recovery")
H = PydanticAIHarness()
STEPS = 6


def _spec(steps: int) -> AgentSpec:
    turns = tuple((Call("lookup", {"who": f"p{i}"}),) for i in range(steps))
    return AgentSpec(name="loop", turns=turns, tools=(ToolSpec("lookup"),))


async def _stopped_run(path: Path, *, stop_after: int) -> Ledger:
    """Run the loop durably and cancel it (a worker shutting down) after ``stop_after`` tools."""
    ledger = Ledger()
    agent = H.build(_spec(STEPS), ledger)
    async with SQLiteStore(path) as store:
        task = asyncio.ensure_future(H.run(agent, "go", keys=KEYS, store=store, run_id="r1"))
        while ledger.count("lookup") < stop_after:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return ledger


def _segments(path: Path) -> list[tuple[str, int, str]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT base_id, idx, body FROM segments ORDER BY idx"))


async def _recover(path: Path, ledger: Ledger) -> Any:
    agent = H.build(_spec(STEPS), ledger)
    async with SQLiteStore(path) as store:
        return await resume_run("r1", agent, store=store, keys=KEYS, owner="w2")


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("stopped") / "runs.db"
    ledger = asyncio.run(_stopped_run(path, stop_after=4))
    return path, ledger.count("lookup")


def test_a_stopped_run_recovers_from_its_base_and_segments(
    stopped: tuple[Path, int], tmp_path: Path
) -> None:
    """The takeover reads the base plus its segments: each lookup ran once, at most one again."""
    path, ran = stopped
    copy = tmp_path / "runs.db"
    shutil.copy(path, copy)
    assert len(_segments(copy)) >= 2, "the stopped run left no segments to recover from"
    ledger = Ledger()
    outcome = asyncio.run(_recover(copy, ledger))
    assert isinstance(outcome, Completed)
    assert ran + ledger.count("lookup") - STEPS in (0, 1), "more than the step in flight repeated"
    assert _segments(copy) == [], "the completed run left segments behind"


@st.composite
def _damage(draw: st.DrawFn, texts: list[str]) -> tuple[int, str]:
    which = draw(st.integers(0, len(texts) - 1))
    text = texts[which]
    at = draw(st.integers(0, len(text) - 1))
    kind = draw(st.sampled_from(["flip", "cut", "drop"]))
    if kind == "cut":
        return which, text[:at]
    if kind == "drop":
        return which, text[:at] + text[at + 1 :]
    char = draw(st.characters(min_codepoint=32, max_codepoint=126).filter(lambda c: c != text[at]))
    return which, text[:at] + char + text[at + 1 :]


def test_any_damage_to_a_stored_segment_is_refused_before_any_tool_runs(
    stopped: tuple[Path, int], tmp_path: Path
) -> None:
    """Random edits, cuts and drops of any stored segment raise a typed error; no tool runs."""
    path, _ = stopped
    texts = [body for _, _, body in _segments(path)]
    counter = iter(range(10_000))

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_damage(texts))
    def check(damage: tuple[int, str]) -> None:
        which, damaged = damage
        copy = tmp_path / f"runs-{next(counter)}.db"
        shutil.copy(path, copy)
        with sqlite3.connect(copy) as conn:
            conn.execute("UPDATE segments SET body = ? WHERE idx = ?", (damaged, which + 1))
        ledger = Ledger()
        with pytest.raises(ContinuationError):
            asyncio.run(_recover(copy, ledger))
        assert ledger.count("lookup") == 0, "a tool ran after a damaged segment was read"
        assert ledger.turns("loop") == 0, "the model was called after a damaged segment was read"
        copy.unlink()

    check()


def test_a_fifty_step_run_stores_far_less_than_full_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes a 50-step run leaves in the store grow linearly, not with the square."""

    async def stored(env: str) -> int:
        monkeypatch.setenv("CONTINUATIONS_COMPACT_EVERY", env)
        path = tmp_path / f"runs-{env}.db"
        ledger = Ledger()
        async with SQLiteStore(path) as store:
            agent = H.build(_spec(50), ledger)
            outcome = await H.run(
                agent, "go", keys=KEYS, store=store, run_id=f"r-{env}",
                usage_limits=UsageLimits(request_limit=None),
            )  # fmt: skip
            assert isinstance(outcome, Completed) and ledger.count("lookup") == 50
        with sqlite3.connect(path) as conn:
            docs = conn.execute("SELECT SUM(LENGTH(document)) FROM continuations").fetchone()[0]
            segs = conn.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM segments").fetchone()
            rows = conn.execute("SELECT COUNT(*) FROM continuations").fetchone()[0]
        assert env == "0" or rows <= 5, f"full checkpoints written: {rows}"
        return int(docs) + int(segs[0])

    full = asyncio.run(stored("0"))  # every step a full checkpoint, as before segments
    incremental = asyncio.run(stored("32"))
    assert incremental * 5 < full, (incremental, full)
