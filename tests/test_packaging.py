"""Packaging boundaries of the distribution."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


# Loaded on first use only: jsonschema (edited-args validation), and the stores and durable
# runs with what they bring in (asyncio, sqlite3).
_DEFERRED = (
    "jsonschema",
    "asyncio",
    "sqlite3",
    "continuations_core.stores",
    "continuations_core._durable",
)


def _deferred_loaded(code: str) -> list[str]:
    probe = f"{code}\nimport sys; print(' '.join(m for m in {_DEFERRED!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_importing_core_defers_jsonschema_and_the_stores() -> None:
    """`import continuations_core` loads neither jsonschema nor the stores, asyncio or sqlite3."""
    assert _deferred_loaded("import continuations_core") == []


def test_deferred_public_names_load_on_first_use() -> None:
    """The lazily exported names resolve to the objects their modules define, and are listed."""
    import continuations_core
    import continuations_core._durable as durable
    import continuations_core.stores as stores

    for name in ("AuditEvent", "Claim", "MemoryStore", "SQLiteStore", "Store"):
        assert getattr(continuations_core, name) is getattr(stores, name)
    assert continuations_core.StoredContinuation is stores.StoredContinuation
    assert continuations_core.open_store is stores.open_store
    assert continuations_core.idempotent is durable.idempotent
    assert continuations_core.idempotency_key is durable.idempotency_key
    assert set(continuations_core.__all__) <= set(dir(continuations_core))
    loaded = _deferred_loaded("from continuations_core import open_store, idempotent")
    assert {"continuations_core.stores", "continuations_core._durable"} <= set(loaded)
    assert "jsonschema" not in loaded


def test_unknown_attribute_of_core_is_an_attribute_error() -> None:
    """A name the package does not export raises AttributeError, not an import of something."""
    import continuations_core

    with pytest.raises(AttributeError, match="no attribute 'open_stor'"):
        _ = continuations_core.open_stor  # type: ignore[attr-defined]


def test_cli_list_and_show_do_not_load_jsonschema(tmp_path: Path) -> None:
    """`list` and `show` start without jsonschema; validating edited args loads it."""
    from continuations_core import Keyring, SQLiteStore
    from continuations_core.stores import SyncStore
    from continuations_core.testing.store_scenarios import make_continuation

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    cont = make_continuation(Keyring.generate())
    with SyncStore(SQLiteStore(url)) as store:
        store.save(cont)
    for command in (["list", "--store", url], ["show", "--store", url, cont.id]):
        code = (
            "import contextlib, io\n"
            "from continuations_core.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main({command!r}) == 0"
        )
        assert "jsonschema" not in _deferred_loaded(code), command
    edited = _deferred_loaded(
        "from continuations_core import Keyring\n"
        "from continuations_core.testing.store_scenarios import make_continuation\n"
        "cont = make_continuation(Keyring.generate())\n"
        "req = next(r for r in cont.requests if r.kind == 'approval')\n"
        "cont.approve(req.path, args=dict(req.args))"
    )
    assert "jsonschema" in edited


def _private_core_imports(path: Path) -> list[str]:
    """Every private ``continuations_core._*`` module ``path`` imports, however it does so."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "continuations_core":  # from continuations_core import _x
                names += [f"continuations_core.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value] if node.value.startswith("continuations_core.") else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "continuations_core" and any(p.startswith("_") for p in parts[1:]):
                found.append(f"{path.name}:{node.lineno}: {name}")
    return found


def test_adapters_import_the_core_only_through_its_public_seam() -> None:
    """No adapter module imports a private ``continuations_core._*`` module (``spi`` instead).

    Imports inside functions and module names in strings (``importlib.import_module``) count
    too. A third adapter is written against the same surface.
    """
    root = Path(__file__).resolve().parent.parent
    modules = sorted((root / "adapters").rglob("*.py"))
    assert len(modules) > 10, "the adapters were not found"
    offenders = [hit for path in modules for hit in _private_core_imports(path)]
    assert offenders == []


def test_engines_import_the_core_only_through_its_public_seam() -> None:
    """No engine (DBOS) imports a private core module, nor an adapter: it resumes through
    the adapter a continuation names, looked up by the core's public worker."""
    root = Path(__file__).resolve().parent.parent
    modules = sorted((root / "engines").rglob("*.py"))
    assert modules, "the engines were not found"
    offenders = [hit for path in modules for hit in _private_core_imports(path)]
    assert offenders == []
    for path in modules:
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+continuations_(pydantic_ai|strands)", text, re.M)


def test_the_private_import_check_finds_every_form(tmp_path: Path) -> None:
    """The check above sees each way of importing a private module, and nothing public."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import continuations_core._durable\n"
        "from continuations_core._markers import admitted\n"
        "from continuations_core import _protocol\n"
        "def later():\n"
        "    from continuations_core.stores._rowstore import RowStore\n"
        "    return importlib.import_module('continuations_core._resume')\n"
        "from continuations_core import Continuation\n"
        "from continuations_core.spi import admitted\n"
        "from continuations_core.stores import Store\n"
    )
    hits = _private_core_imports(sample)
    assert [h.split(": ")[1] for h in hits] == [
        "continuations_core._durable",
        "continuations_core._markers",
        "continuations_core._protocol",
        "continuations_core.stores._rowstore",
        "continuations_core._resume",
    ]


def test_the_seam_documents_and_exports_what_it_lists() -> None:
    """Every name of ``continuations_core.spi`` exists and is described in its docstring."""
    from continuations_core import spi

    assert spi.__doc__ is not None
    missing = [n for n in spi.__all__ if not hasattr(spi, n)]
    undocumented = [n for n in spi.__all__ if f"`{n}`" not in spi.__doc__]
    assert missing == [] and undocumented == []


def test_the_package_version_is_the_installed_distribution_version() -> None:
    """``__version__`` (what spans and metrics carry as their scope's version) is the version
    the distribution was built and installed with."""
    import tomllib
    from importlib.metadata import version

    import continuations_core

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert continuations_core.__version__ == version("agent-continuations") == declared
