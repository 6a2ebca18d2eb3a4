"""Suspension policies: rules that suspend a run at a step boundary (G7).

A policy looks only at :class:`PolicyState`, and that state lives in the frame, so a resumed
run behaves the same whether it resumes in the same process or in a new one. Each policy
counts from the last time it fired, so after a resume it fires again only once its budget is
used up again.

Adapters call :meth:`PolicyState.record_turn` after every model response and
:meth:`PolicyState.firing` before every model request; a policy never fires in the middle of
a tool batch, so approved work that is being resumed is never dropped.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EveryNTurns",
    "PauseWhen",
    "PolicyState",
    "SuspensionPolicy",
    "TokenBudget",
    "WallClockBudget",
]

Clock = Callable[[], float]


@dataclass
class PolicyState:
    """Counters shared by a frame's policies; serialized into the frame.

    Attributes:
        turns: Model responses so far in this agent's run, across suspensions.
        tokens: Total tokens reported by those responses.
        active_seconds: Seconds spent running (not suspended), across suspensions.
        marks: For each policy key, the counters when it last fired.
    """

    turns: int = 0
    tokens: int = 0
    active_seconds: float = 0.0
    marks: dict[str, dict[str, float]] = field(default_factory=dict)
    _last_tick: float | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PolicyState:
        """Rebuild from a frame's ``policy_state``."""
        data = data or {}
        return cls(
            turns=int(data.get("turns", 0)),
            tokens=int(data.get("tokens", 0)),
            active_seconds=float(data.get("active_seconds", 0.0)),
            marks={str(k): dict(v) for k, v in dict(data.get("marks", {})).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialize for the frame."""
        return {
            "turns": self.turns,
            "tokens": self.tokens,
            "active_seconds": round(self.active_seconds, 6),
            "marks": {k: dict(v) for k, v in sorted(self.marks.items())},
        }

    def tick(self, clock: Clock) -> None:
        """Add the time since the previous tick to ``active_seconds``."""
        now = clock()
        if self._last_tick is not None:
            self.active_seconds += max(0.0, now - self._last_tick)
        self._last_tick = now

    def record_turn(self, tokens: int) -> None:
        """Count one model response and the tokens it used."""
        self.turns += 1
        self.tokens += max(0, tokens)

    def since(self, key: str, counter: str) -> float:
        """How much of ``counter`` accrued since policy ``key`` last fired."""
        current = float(getattr(self, counter))
        return current - float(self.marks.get(key, {}).get(counter, 0.0))

    def firing(self, policies: Sequence[SuspensionPolicy], clock: Clock) -> SuspensionPolicy | None:
        """Return the first policy that fires now, marking it; ``None`` if none does."""
        self.tick(clock)
        for policy in policies:
            if policy.should_suspend(self):
                self.marks[policy.key] = {
                    "turns": float(self.turns),
                    "tokens": float(self.tokens),
                    "active_seconds": self.active_seconds,
                }
                return policy
        return None


class SuspensionPolicy(ABC):
    """A rule that suspends a run at a step boundary."""

    @property
    @abstractmethod
    def key(self) -> str:
        """A stable name, used in ``Frame.suspended_by`` and as the key of its marks."""

    @abstractmethod
    def should_suspend(self, state: PolicyState) -> bool:
        """Return true to suspend before the next model request."""


@dataclass(frozen=True)
class EveryNTurns(SuspensionPolicy):
    """Suspend after every ``n`` model turns."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("EveryNTurns needs n >= 1")

    @property
    def key(self) -> str:
        return f"every_{self.n}_turns"

    def should_suspend(self, state: PolicyState) -> bool:
        return state.since(self.key, "turns") >= self.n


@dataclass(frozen=True)
class TokenBudget(SuspensionPolicy):
    """Suspend once ``tokens`` tokens were used since the run started or last resumed by it."""

    tokens: int

    @property
    def key(self) -> str:
        return f"token_budget_{self.tokens}"

    def should_suspend(self, state: PolicyState) -> bool:
        return state.since(self.key, "tokens") >= self.tokens


@dataclass(frozen=True)
class WallClockBudget(SuspensionPolicy):
    """Suspend once the run has been active for ``seconds`` since this policy last fired."""

    seconds: float

    @property
    def key(self) -> str:
        return f"wall_clock_{self.seconds:g}s"

    def should_suspend(self, state: PolicyState) -> bool:
        return state.since(self.key, "active_seconds") >= self.seconds


@dataclass(frozen=True)
class PauseWhen(SuspensionPolicy):
    """Suspend when ``check()`` returns true, e.g. an operator's "pause this run" flag."""

    check: Callable[[], bool]
    name: str = "pause"

    @property
    def key(self) -> str:
        return self.name

    def should_suspend(self, state: PolicyState) -> bool:
        return bool(self.check())


def default_clock() -> float:
    """The clock policies use unless told otherwise."""
    return time.monotonic()
