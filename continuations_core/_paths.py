"""Path segments: how a path names the calls and sub-agent runs from the root to a leaf.

A path alternates call segments (``"<tool>:<call_id>@<step>"``) and, below a delegating call,
run segments naming the sub-agent run the next calls belong to
(``"<agent>#<prompt digest>.<occurrence>"``). Model output names tools and call ids, so they are
percent-encoded: no crafted value can make two calls or two runs share a path.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote

__all__ = ["RUN_SEGMENT_DIGEST", "RunKey", "run_segment", "segment"]


def segment(tool: str, call_id: str, step: int | None = None) -> str:
    """A path segment: ``"<tool>:<call_id>@<step>"``, with tool and id percent-encoded.

    Model output names tools and call ids, so both are encoded: a crafted id containing
    ``/``, ``:`` or ``@`` cannot make two calls share a path, a journal key or an idempotency
    key. The step (the model turn that made the call) makes an id the model reuses in a later
    turn a different call.
    """
    text = f"{quote(tool, safe='')}:{quote(call_id, safe='')}"
    return text if step is None else f"{text}@{step}"


#: Hex digits of the prompt digest a run segment shows.
RUN_SEGMENT_DIGEST = 12


class RunKey(NamedTuple):
    """The identity of one sub-agent run inside its delegating call.

    It does not depend on scheduling: concurrent runs started in any order get the same keys.

    Attributes:
        agent: The sub-agent's name.
        prompt: The digest of the prompt the tool body passed (``None`` for a run recorded by
            schema version 2, matched by agent name and order).
        occurrence: How many runs of this agent with this prompt the call started before it.
    """

    agent: str
    prompt: str | None
    occurrence: int

    @property
    def segment(self) -> str:
        """This run's path segment (see :func:`run_segment`)."""
        return run_segment(self.agent, self.prompt, self.occurrence)


def run_segment(agent: str, prompt: str | None, occurrence: int) -> str:
    """A run segment: ``"<agent>#<prompt digest>.<occurrence>"`` (``"<agent>#<n>"`` for schema 2).

    It never contains ``:``, so it cannot be read as a call segment; the agent name is
    percent-encoded.
    """
    name = quote(agent, safe="")
    if prompt is None:
        return f"{name}#{occurrence}"
    return f"{name}#{prompt[:RUN_SEGMENT_DIGEST]}.{occurrence}"
