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


def _loaded_after(module: str) -> set[str]:
    probe = (
        f"import {module}, sys; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_adapters_do_not_import_each_other() -> None:
    """Each adapter loads its own framework only, never the other adapter or framework."""
    pai = _loaded_after("continuations_pydantic_ai")
    assert "pydantic_ai" in pai
    assert not pai & {"continuations_strands", "strands"}
    strands = _loaded_after("continuations_strands")
    assert "strands" in strands
    assert not strands & {"continuations_pydantic_ai", "pydantic_ai"}


def test_no_source_file_crosses_the_layers() -> None:
    """No module of the core imports a framework or adapter; no adapter imports the other."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    rules = {
        root
        / "continuations_core": r"(pydantic_ai|strands|continuations_pydantic_ai|continuations_strands)",
        root / "adapters" / "continuations_pydantic_ai": r"(continuations_strands|strands)",
        root / "adapters" / "continuations_strands": r"(continuations_pydantic_ai|pydantic_ai)",
    }
    offenders = []
    for folder, names in rules.items():
        pattern = re.compile(rf"^\s*(from|import)\s+{names}\b", re.MULTILINE)
        for path in folder.rglob("*.py"):
            if pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
