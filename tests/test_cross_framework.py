"""Cross-framework trees: frames name their framework and requests show the whole chain."""

from __future__ import annotations

import pytest
from _harnesses import HARNESSES

from continuations_core import Completed, Continuation, Frame, Suspended
from continuations_core.testing.conformance import BIG, KEYS, chain
from continuations_core.testing.spec import Ledger


def _frameworks(frame: Frame) -> list[str]:
    out = [frame.framework]
    for call in frame.pending:
        for run in call.children:
            out.extend(_frameworks(run.frame))
    return out


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("mixed-pydantic-ai-root", ["pydantic-ai", "strands", "pydantic-ai"]),
        ("mixed-strands-root", ["strands", "pydantic-ai", "strands"]),
    ],
)
async def test_mixed_chain_names_each_frame_framework(root: str, expected: list[str]) -> None:
    """A depth-3 tree alternating frameworks records each frame's framework and resumes through both."""
    h = HARNESSES[root]()
    ledger = Ledger()
    outcome = await h.run(h.build(chain(3), ledger), "go", keys=KEYS)
    assert isinstance(outcome, Suspended)
    cont = Continuation.from_json(outcome.continuation.to_json())
    assert _frameworks(cont.root) == expected
    [req] = cont.requests
    assert req.agents == ("level1", "level2", "level3") and req.args == BIG
    done = await h.resume(h.build(chain(3), ledger), cont.approve(req.path), keys=KEYS)
    assert isinstance(done, Completed)
    assert ledger.runs("transfer") == [BIG]
    assert "level3 done" in str(done.output)
