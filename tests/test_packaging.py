"""Packaging boundaries of the distribution."""

import subprocess
import sys

_PROBE = (
    "import continuations_core, sys; "
    "bad=[m for m in sys.modules if m.split('.')[0] in "
    "{'pydantic_ai','strands','continuations_pydantic_ai','continuations_strands','psycopg','redis'}]; "
    "print(bad); sys.exit(1 if bad else 0)"
)


def test_importing_core_loads_no_framework_adapter_or_driver() -> None:
    """Importing the core loads no framework, adapter or database driver."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"importing continuations_core loaded: {result.stdout.strip()}\n{result.stderr}"
    )
    assert result.stdout.strip() == "[]"
