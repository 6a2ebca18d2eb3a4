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


async def test_approvers_and_the_runs_starter_come_from_the_agent_and_are_enforced(
    tmp_path: Path,
) -> None:
    """A real agent's approvers= and run(started_by=) decide who the inbox lets approve."""
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import FunctionModel

    from continuations_core import requires_approval
    from continuations_pydantic_ai import Continuations

    paid: list[int] = []

    def respond(messages: list, info: object) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            call = ToolCallPart("pay", {"amount": 900}, tool_call_id="p1")
            return ModelResponse(parts=[call])
        return ModelResponse(parts=[TextPart("paid")])

    agent: Agent[None, str] = Agent(
        FunctionModel(respond), name="treasury", capabilities=[Continuations()]
    )

    @agent.tool_plain
    @requires_approval(reason="Moves money", approvers=["treasury-leads"])
    def pay(amount: int) -> str:
        paid.append(amount)
        return "ok"

    async with SQLiteStore(tmp_path / "t.db") as store:
        outcome = await run(agent, "pay", keys=KEYS, store=store, started_by="carol")
        assert isinstance(outcome, Suspended)
        cont = outcome.continuation
        assert cont.started_by == "carol"
        assert cont.requests[0].approvers == ("treasury-leads",)
        app = app_for(store)
        async with person(app, "dave") as dave:  # not an approver
            body = await decision_body(dave, cont.id)
            assert (await post_decision(dave, cont.id, body)).status_code == 403
        async with person(app, "carol", roles="treasury-leads") as carol:  # started the run
            body = await decision_body(carol, cont.id)
            assert (await post_decision(carol, cont.id, body)).status_code == 403
        async with person(app, "erin", roles="treasury-leads") as erin:
            body = await decision_body(erin, cont.id)
            assert (await post_decision(erin, cont.id, body)).status_code == 200
        worker = Worker(store, {"treasury": agent}, keys=KEYS, poll_seconds=0.05)
        assert await worker.run(install_signals=False, idle_exit=0.5) == 1
    assert paid == [900]
