"""The HR example's agents, imported for in-process tests with their tool log in a temp dir.

``hr_agents.LOG`` receives one line per tool body that actually ran; ``ran()`` reads it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# The example switches to a real model when an API key is set; tests never call one.
os.environ.pop("OPENAI_API_KEY", None)
os.environ.setdefault(
    "HR_DEMO_LOG", str(Path(tempfile.mkdtemp(prefix="hr-tools-")) / "tool-calls.log")
)
sys.path.insert(0, str(EXAMPLES))

import hr_agents  # noqa: E402 - needs the environment and path set above

PROMPT = hr_agents.PROMPT
hr = hr_agents.hr


def ran() -> list[str]:
    """Every tool body that ran in this process so far, one line each."""
    log = hr_agents.LOG
    return log.read_text().splitlines() if log.exists() else []
