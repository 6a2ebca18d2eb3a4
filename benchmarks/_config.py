"""What one benchmark run measures: sizes, repetitions and backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FULL", "QUICK", "SMOKE", "Config"]


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of a run.

    Attributes:
        reps: Timed repetitions per cell (medians are over these).
        warmup: Untimed repetitions per cell, run first and discarded.
        steps: Sequential tool steps of the step-overhead runs.
        histories: History lengths (messages) of the size and envelope runs.
        depths: Nesting depths of the suspend+resume runs.
        claims: Continuations claimed per repetition of the claim runs.
        drain: Continuations drained per repetition of the worker runs.
        races: Continuations 8 racing worker processes drain per repetition.
        workers: Worker process counts.
        import_reps: Timed interpreter start-ups per import measurement.
        backends: Store backends to measure (those unreachable are reported, not skipped silently).
        frameworks: Frameworks to measure.
        peers: Measure LangGraph and the OpenAI Agents SDK in their own virtualenv.
        tmp: Scratch folder (SQLite files, bytecode caches).
    """

    reps: int = 5
    warmup: int = 1
    steps: tuple[int, ...] = (10, 50, 100)
    histories: tuple[int, ...] = (10, 100, 1000)
    depths: tuple[int, ...] = (0, 1, 3, 10)
    claims: int = 200
    drain: int = 300
    races: int = 1000
    workers: tuple[int, ...] = (1, 2, 4)
    import_reps: int = 10
    backends: tuple[str, ...] = ("memory", "sqlite", "postgres", "redis")
    frameworks: tuple[str, ...] = ("pydantic-ai", "strands")
    peers: bool = True
    tmp: Path = field(default_factory=lambda: Path("."))

    @property
    def peer_steps(self) -> int:
        """The loop length the peers run, and ours is compared at (50, or the nearest)."""
        return min(self.steps, key=lambda n: abs(n - 50))


FULL = Config()
QUICK = Config(
    steps=(10, 50), histories=(10, 100), depths=(0, 1, 3), claims=100, drain=100, races=300
)
# Tiny sizes: every code path of every figure, in seconds; numbers mean nothing.
SMOKE = Config(
    reps=1,
    warmup=0,
    steps=(2, 4),
    histories=(4, 6),
    depths=(0, 1),
    claims=5,
    drain=3,
    races=16,
    workers=(1,),
    import_reps=1,
    backends=("memory", "sqlite"),
    peers=False,
)
