"""End to end with the HR example: suspend, decide through the inbox API, a worker resumes."""

from __future__ import annotations

from pathlib import Path

from _hr import PROMPT, hr, ran
from _inbox import KEYS, app_for, decision_body, person, post_decision

from continuations_core import SQLiteStore, Suspended
from continuations_core.worker import Worker
from continuations_pydantic_ai import run


async def test_an_edited_approval_and_a_denial_resume_exactly_as_decided(tmp_path: Path) -> None:
    """The approved call runs once with the edited role, the denied one never; outputs show."""
    async with SQLiteStore(tmp_path / "hr.db") as store:
        started = []
        for _ in range(2):
            outcome = await run(hr, PROMPT, keys=KEYS, store=store)
            assert isinstance(outcome, Suspended)
            started.append(outcome.continuation.id)
        before = len(ran())
        app = app_for(store)
        async with person(app, "manager@example.com") as manager:
            [one, two] = started
            edited = {"user": "alice", "system": "payroll", "role": "viewer"}
            body = await decision_body(manager, one, args=edited, comment="least privilege")
            assert (await post_decision(manager, one, body)).status_code == 200
            body = await decision_body(manager, two, action="deny", message="Use a ticket.")
            assert (await post_decision(manager, two, body)).status_code == 200
            worker = Worker(store, {"hr": hr}, keys=KEYS, poll_seconds=0.05)
            assert await worker.run(install_signals=False, idle_exit=0.5) == 2
            views = [(await manager.get(f"/api/continuations/{cid}")).json() for cid in started]
        tools = [line.split()[0] for line in ran()[before:]]
        assert tools.count("authorize_account") == 1
        assert "authorize_account user=alice system=payroll role=viewer" in ran()[before:]
        assert all(v["completed"] and v["status"] == "done" for v in views)
        assert "enabled as viewer" in views[0]["output"]
        assert "Use a ticket." in views[1]["output"]
        kinds = [e["kind"] for e in views[0]["audit"]]
        assert kinds.count("decided") == 2 and kinds[-1] == "completed"
