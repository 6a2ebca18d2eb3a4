"""The main demo: one HR run, suspended and resumed across separate OS processes.

1. Process 1 runs the HR agent; the accounts sub-agent's ``authorize_account`` needs approval,
   so the run suspends into a signed continuation stored in SQLite, and the process exits.
2. Process 2 (the CLI) lists the pending request, showing the nested path and the inner
   tool's args; process 3 (the CLI) approves it.
3. Process 4 resumes the run from the SQLite file alone, and it completes.

Needs no configuration: SQLite file and signing key go to ``.demo/`` (key file mode 0600).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO = Path(os.environ.get("HR_DEMO_DIR", HERE.parent / ".demo"))
DB = DEMO / "hr.db"
STORE = f"sqlite:///{DB}"


def step(title: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    print(f"\n=== {title}\n$ {' '.join(cmd)}")
    env = {**os.environ, "HR_DEMO_LOG": str(DEMO / "tool-calls.log")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(done.stdout.rstrip())
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        sys.exit(f"step failed: {title}")
    return done


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    py, agents, cli = sys.executable, str(HERE / "hr_agents.py"), "continuations_core"
    started = step("1. run the HR agent (process 1)", py, agents, "--db", str(DB), "start")
    cid = started.stderr.strip().splitlines()[-1]
    step("2a. a person lists what waits (process 2)", py, "-m", cli, "list", "--store", STORE)
    step(
        "2b. ...and reviews it: nested path, inner tool and args",
        py,
        "-m",
        cli,
        "show",
        "--store",
        STORE,
        cid,
    )
    step(
        "2c. ...and approves it (process 3)",
        py,
        "-m",
        cli,
        "approve",
        "--store",
        STORE,
        cid,
        "1",
        "--by",
        "manager@example.com",
    )
    step(
        "3. resume from the SQLite file alone (process 4)",
        py,
        agents,
        "--db",
        str(DB),
        "resume",
        cid,
    )
    step("audit trail", py, "-m", cli, "audit", "--store", STORE, cid_run(cid))
    key = DB.with_suffix(".key")
    print(f"\nsigning key: {key} (mode {oct(key.stat().st_mode & 0o777)})")
    print("tool bodies that ran, across all processes:")
    print((DEMO / "tool-calls.log").read_text().rstrip())
    return 0


def cid_run(cid: str) -> str:
    """The run id of continuation ``cid``, read back from the store."""
    sys.path.insert(0, str(HERE.parent))
    from continuations_core.stores import SQLiteStore, SyncStore

    store = SyncStore(SQLiteStore(DB))
    try:
        return store.get(cid).run_id
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
