"""Who holds a claim, and when a live-looking claim may be taken back at once.

A claim records two things about its holder: the ``owner`` name the caller chose (or
``host:pid`` by default) and a *holder id* naming this very process::

    <session>/<machine>/<pid>/<start>

``session`` is random per process (renewed after ``fork``), ``machine`` identifies the host,
its boot and its PID namespace, and ``start`` is the process's start time as the kernel
reports it. A claim whose lease has not expired is normally refused to everyone else. Two
cases are taken over at once, because the holder is known to be gone:

- **A restarted owner.** A process claiming under the same *explicit* owner name as the
  holder, from another session, is that owner restarted (owner names are unique per live
  process: one per pod or service instance, like DBOS executor ids). Its predecessor's
  claims are its own to take back. Names of the default form (``host:pid`` with this host's
  name) never count as explicit: two containers sharing a host name can both be ``host:1``.
- **A provably dead process.** On the same machine (same boot and PID namespace), a holder
  whose PID no longer runs, or now belongs to a process started at another time, is dead.
  Anything less certain (another machine, no ``/proc``) waits for the lease.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from secrets import token_hex

__all__ = ["default_owner", "holder_id", "takeback_terms", "takeover_reason"]

_SESSION = token_hex(8)


def _new_session() -> None:
    global _SESSION
    _SESSION = token_hex(8)


os.register_at_fork(after_in_child=_new_session)


def default_owner() -> str:
    """A worker name: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


_MACHINE: tuple[int, str] | None = None  # (pid, machine id): computed once per process
_HOLDER: tuple[str, str] | None = None  # (session, holder id)


def _machine() -> str:
    """The host, its boot and this PID namespace: where a PID means the same process."""
    global _MACHINE
    if _MACHINE is None or _MACHINE[0] != os.getpid():  # every claim asks: read /proc once
        _MACHINE = (os.getpid(), _read_machine())
    return _MACHINE[1]


def _read_machine() -> str:
    try:
        pid_ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pid_ns = ""
    boot = _read("/proc/sys/kernel/random/boot_id")
    if not boot or not pid_ns:
        return ""  # PIDs cannot be compared safely here: never "provably dead"
    seed = f"{socket.gethostname()}|{boot}|{pid_ns}"
    return hashlib.blake2b(seed.encode(), digest_size=8).hexdigest()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if it does not run."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its end.
    fields = stat.rpartition(")")[2].split()
    if not fields or fields[0] in ("Z", "X"):  # a zombie or dead process writes nothing more
        return None
    return fields[19] if len(fields) > 19 else ""


def holder_id() -> str:
    """This process's holder id, stored with every claim it takes."""
    global _HOLDER
    if _HOLDER is None or _HOLDER[0] != _SESSION:  # a new session after fork: a new holder
        pid = os.getpid()
        _HOLDER = (_SESSION, f"{_SESSION}/{_machine()}/{pid}/{_start_time(pid) or ''}")
    return _HOLDER[1]


def _dead(holder: str) -> bool:
    """Whether ``holder`` names a process on this machine that provably no longer runs."""
    parts = holder.split("/")
    if len(parts) != 4:
        return False
    _, machine, pid_text, start = parts
    if not machine or machine != _machine() or not pid_text.isdigit() or not start:
        return False
    now = _start_time(int(pid_text))
    return now is None or (now != "" and now != start)


def _explicit(owner: str) -> bool:
    """Whether ``owner`` is a chosen name, not a ``host:pid`` of this host (ours or another's)."""
    host, _, pid = owner.rpartition(":")
    return not (pid.isdigit() and host == socket.gethostname())


def takeover_reason(owner: str, held_by: str | None, holder: str | None) -> str | None:
    """Why ``owner`` (this process) may take a live claim at once, or None if it may not.

    Args:
        owner: The name this process claims under.
        held_by: The owner name of the live claim.
        holder: The holder id of the live claim (None for claims from before holder ids).
    """
    if not holder or holder.split("/", 1)[0] == _SESSION:
        return None  # this process holds it: a second claim from here is a real conflict
    if held_by == owner and _explicit(owner):
        return f"owner {owner!r} restarted: its earlier process holds no claim any more"
    if _dead(holder):
        return f"the process holding it ({held_by!r}, pid {holder.split('/')[2]}) is dead"
    return None


def takeback_terms(owner: str) -> tuple[str, bool, str | None]:
    """What a store needs to pick, without this module, the live claims ``owner`` may take back.

    Returns this process's session (its own claims are never taken back), whether ``owner``
    is an explicit name (then any other session's claim under it is taken back), and this
    machine's id (a claim under a ``host:pid`` name is a candidate only if it was taken on
    this machine, where :func:`takeover_reason` can tell whether its process is dead), or
    None where PIDs cannot be compared. A candidate is then claimed through the exact rules.
    """
    return _SESSION, _explicit(owner), _machine() or None
