"""Medians, spread and the tables a benchmark run prints.

Every figure is a :class:`Figure`: a Markdown table (ready to paste into the README) plus the
raw samples it was computed from, which go to the JSON results file. Spread is shown as
``±x%``: half the interquartile range, relative to the median.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Figure", "Summary", "fmt_bytes", "fmt_ms", "fmt_ratio", "machine", "summarize"]

#: A run with fewer repetitions than this is labelled as not meeting the harness's bar.
MIN_REPS = 5


@dataclass(frozen=True)
class Summary:
    """The median and interquartile range of a list of samples."""

    median: float
    p25: float
    p75: float
    n: int

    @property
    def spread(self) -> float:
        """Half the interquartile range, relative to the median (0.05 is ±5%)."""
        if self.median == 0:
            return 0.0
        return (self.p75 - self.p25) / 2 / abs(self.median)


def summarize(samples: Sequence[float]) -> Summary:
    """Summarize ``samples`` (at least one)."""
    if not samples:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return Summary(ordered[0], ordered[0], ordered[0], 1)
    q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return Summary(statistics.median(ordered), q1, q3, len(ordered))


def fmt_ms(s: Summary | float, *, spread: bool = True) -> str:
    """Milliseconds with a sensible number of digits, and the spread when it is a summary."""
    value = s.median if isinstance(s, Summary) else s
    text = (
        f"{value:,.0f}"
        if abs(value) >= 100
        else f"{value:.1f}"
        if abs(value) >= 1
        else f"{value:.2f}"
    )
    if isinstance(s, Summary) and spread and s.n > 1:
        text += f" ±{s.spread * 100:.0f}%"
    return text


def fmt_ratio(value: float) -> str:
    """A ratio such as ``1.05×``."""
    if not math.isfinite(value):
        return "—"
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def fmt_bytes(value: float) -> str:
    """Bytes as B, KB or MB (powers of 1,000)."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.2f} MB"
    if value >= 1_000:
        return f"{value / 1_000:.1f} KB"
    return f"{value:.0f} B"


@dataclass
class Figure:
    """One table of the report.

    Attributes:
        key: A short stable name (used in the JSON file and by ``--only``).
        title: The table's heading.
        columns: Column headers.
        rows: Cells, already formatted.
        notes: Sentences printed under the table: what was measured and how.
        raw: The raw samples and derived values, for the JSON file.
    """

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        """The figure as a Markdown section."""
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"{self.key}: row {row} does not match {self.columns}")
            lines.append("| " + " | ".join(row) + " |")
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The figure, formatted cells and raw samples, as JSON-compatible data."""
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
            "raw": self.raw,
        }


def machine() -> dict[str, Any]:
    """Where and when this run happened, including the load on the machine."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
    }
