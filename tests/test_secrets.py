"""Secrets: key files open to others are refused; store errors never repeat a URL's password."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from continuations_core import ConfigurationError, ContinuationError, Keyring, StoreUnavailable
from continuations_core.cli import main
from continuations_core.stores import SyncStore, open_store
from continuations_core.stores._urls import redact

HERE = Path(__file__).resolve().parent
posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")

# -- key files -------------------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o644, 0o666, 0o777])
def test_a_key_file_open_to_group_or_others_is_refused_with_chmod_600(
    tmp_path: Path, mode: int
) -> None:
    """Any group or other permission bit makes load_or_create refuse, naming `chmod 600 <path>`."""
    path = tmp_path / "demo.key"
    keys = Keyring.load_or_create(path)
    path.chmod(mode)
    with pytest.raises(ConfigurationError) as info:
        Keyring.load_or_create(path)
    assert f"chmod 600 {path}" in str(info.value) and f"{mode:04o}" in str(info.value)
    path.chmod(0o600)
    assert Keyring.load_or_create(path).export() == keys.export()


@posix_only
def test_a_new_key_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    """The file is created 0600 whatever the umask; 0400 is accepted too."""
    old = os.umask(0)
    try:
        path = tmp_path / "sub" / "demo.key"
        keys = Keyring.load_or_create(path, kid="mine")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.kids == ["mine"] and len(list(path.parent.iterdir())) == 1  # no temporary left
    path.chmod(0o400)
    assert Keyring.load_or_create(path).export() == keys.export()


@posix_only
def test_a_symlinked_key_file_is_judged_by_the_file_it_points_to(tmp_path: Path) -> None:
    """The mode checked is that of the file opened: a link to a 0644 file is refused."""
    target = tmp_path / "real.key"
    Keyring.load_or_create(target)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    Keyring.load_or_create(link)
    target.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        Keyring.load_or_create(link)


def test_processes_racing_to_create_a_key_file_all_get_the_same_key(tmp_path: Path) -> None:
    """Eight threads creating one key file at once all load the one key that was written."""
    path = tmp_path / "race.key"
    barrier = threading.Barrier(8)
    found: list[str] = []

    def create() -> None:
        barrier.wait()
        found.append(Keyring.load_or_create(path).export())

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(found) == 8 and len(set(found)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["race.key"]


def test_a_key_file_that_holds_no_keys_names_the_file(tmp_path: Path) -> None:
    """A truncated or garbled key file is a ConfigurationError that names it."""
    path = tmp_path / "bad.key"
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match=str(path)):
        Keyring.load_or_create(path)


# -- store URLs --------------------------------------------------------------------------------

SECRET = "s3cret"
LEAKY_URLS = [
    "postgresql://user:s3cret@127.0.0.1:1/test",
    "postgresql://user:s3cret%ZZ@127.0.0.1:1/test",  # libpq repeats a bad percent-escape
    "postgresql://user:s3cret@127.0.0.1:abc/test",
    "postgresql://user:s3cret@[::1/test",
    "postgresql://user@127.0.0.1:1/test?password=s3cret&bogus=1",
    "host=127.0.0.1 port=1 user=u password=s3cret",
    "redis://:s3cret@127.0.0.1:1/0",
    "redis://user:s3cret@127.0.0.1:1/0",
    "redis://:s3cret@127.0.0.1:abc/0",
    "redis://:s3cret@[::1/0",
    "redis://:s3cret@127.0.0.1:1/0?socket_timeout=x",
    "mysql://user:s3cret@db/agents",
    "sqlite://user:s3cret@host/runs.db",
]


def _chain(exc: BaseException | None) -> list[BaseException]:
    found = []
    while exc is not None:
        found.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return found


def _open_and_use(url: str) -> None:
    if url.startswith("host="):
        from continuations_core.stores.postgres import PostgresStore

        store = PostgresStore(url)
    else:
        store = open_store(url)
    with SyncStore(store) as sync:
        sync.list()


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_store_errors_never_repeat_the_password(url: str) -> None:
    """open_store, Postgres and Redis errors name the store without its password, chain included."""
    with pytest.raises(ContinuationError) as info:
        _open_and_use(url)
    assert isinstance(info.value, ConfigurationError | StoreUnavailable)
    for exc in _chain(info.value):
        assert SECRET not in str(exc), repr(exc)
    if isinstance(info.value, StoreUnavailable):
        assert "127.0.0.1" in str(info.value)


def test_redact_masks_passwords_and_drops_queries() -> None:
    """redact keeps scheme, user, host and path; masks the password; drops query and fragment."""
    assert redact("postgresql://app:pw@db:5432/agents?sslmode=require") == (
        "postgresql://app:***@db:5432/agents"
    )
    assert redact("redis://:pw@cache/0?prefix=x#f") == "redis://:***@cache/0"
    assert redact("redis://cache:6379/0") == "redis://cache:6379/0"
    assert redact("host=db password='p w' user=app") == "host=db password=*** user=app"


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_cli_errors_never_repeat_the_password(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`list --store URL` with a bad or unreachable store exits 2 without the password."""
    monkeypatch.delenv("CONTINUATIONS_STORE", raising=False)
    code = main(["list", "--store", url])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert SECRET not in out + err


@pytest.mark.parametrize(
    "url", ["postgresql://user:s3cret@127.0.0.1:1/test", "redis://:s3cret@127.0.0.1:1/0"]
)
def test_the_worker_command_never_prints_the_password(url: str, tmp_path: Path) -> None:
    """A worker pointed at an unreachable store exits 2; neither stdout nor stderr has the secret."""
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": Keyring.generate().export(),
        "FLEET_LEDGER": str(tmp_path / "ledger.jsonl"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "continuations_core", "worker", "--store", url,
         "--agents", "fleet_agents:AGENTS", "--idle-exit", "0", "--connect-timeout", "2"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: " in result.stderr and "127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
