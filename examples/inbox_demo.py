"""The HR demo with the approval inbox: decide in a browser, a worker resumes the run.

1. Process 1 runs the HR agent until ``authorize_account`` (in the accounts sub-agent) waits.
2. A worker process waits for decided runs.
3. The inbox serves the store on http://127.0.0.1:8700 in development mode (no login, this
   machine only). Open the printed link, edit or approve the request, and watch the run
   complete on the same page.

``--check`` starts everything, confirms the page lists the request, and exits (for CI).
Needs the ``inbox`` and ``pydantic-ai`` extras; ``scripts/dev inbox-demo`` runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO = Path(os.environ.get("HR_DEMO_DIR", HERE.parent / ".demo" / "inbox"))
DB = DEMO / "hr.db"
STORE = f"sqlite:///{DB}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--user", default="reviewer@example.com", help="who you are (dev mode)")
    parser.add_argument("--check", action="store_true", help="start, check the page, exit")
    args = parser.parse_args(argv)

    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    sys.path.insert(0, str(HERE.parent))
    from continuations_core import Keyring

    keys = Keyring.load_or_create(DB.with_suffix(".key"))
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env |= {
        "CONTINUATIONS_SIGNING_KEYS": keys.export(),
        "HR_DEMO_LOG": str(DEMO / "tool-calls.log"),
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")]),
    }
    py = sys.executable
    started = subprocess.run(
        [py, str(HERE / "hr_agents.py"), "--db", str(DB), "start"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    cid = started.stderr.strip().splitlines()[-1]
    print(started.stdout.rstrip())
    worker = subprocess.Popen(
        [py, "-m", "continuations_core", "worker", "--store", STORE, "--agents", "hr_agents:hr"],
        env=env,
    )
    inbox = subprocess.Popen(
        [py, "-m", "continuations_core", "inbox", "--store", STORE, "--dev",
         "--dev-user", args.user, "--port", str(args.port)],
        env=env,
    )  # fmt: skip
    page = f"http://127.0.0.1:{args.port}/inbox/c/{cid}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(page, timeout=2) as response:
                    html = response.read().decode()
                break
            except OSError:
                if inbox.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the inbox did not start")
                time.sleep(0.3)
        print(f"\nOpen the pending request: {page}")
        print("Approve (or edit, or deny) it there; the worker resumes the run. Ctrl-C stops.")
        if args.check:
            assert "authorize_account" in html and "Approve as is" in html, html[:500]
            print("check: the inbox shows the pending request")
            return 0
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    finally:
        for proc in (inbox, worker):
            proc.terminate()
        for proc in (inbox, worker):
            proc.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
