"""Minimal /proc helpers for the SSH lab: find, freeze and kill the processes a lab started.

sshd puts every connection (and every session command) into a new session with setsid(), and
its setproctitle() overwrites the memory behind /proc/<pid>/environ, so neither process groups nor
environment markers alone find everything. The lab combines three selectors:

* the process tree under a listener we started (``descendants``),
* an environment marker that sshd hands to every session (``SetEnv``) and the runner hands to
  every controller-side process: it survives double forks / daemonized async jobs,
* TCP sockets whose local or remote endpoint is a lab sshd address (``socket_holders``): finds
  per-connection sshd processes after their listener died, and ssh ControlMaster processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
Endpoint = tuple[str, int]


@dataclass(frozen=True)
class Proc:
    """One row of a /proc snapshot (zombies are left out: they cannot be killed)."""

    pid: int
    ppid: int
    state: str
    comm: str


def snapshot() -> dict[int, Proc]:
    """All live (non-zombie) processes, by pid."""
    procs: dict[int, Proc] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            # "pid (comm) state ppid ..."; comm may contain spaces and parentheses
            lpar, rpar = raw.index("("), raw.rindex(")")
            state, ppid = raw[rpar + 2 :].split()[:2]
        except (OSError, ValueError):  # gone, or read while exiting
            continue
        if state not in ("Z", "X"):
            procs[int(entry.name)] = Proc(int(entry.name), int(ppid), state, raw[lpar + 1 : rpar])
    return procs


def alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
        return raw[raw.rindex(")") + 2 :].split()[0] not in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return False


def cmdline(pid: int) -> str:
    try:
        return (
            (PROC / str(pid) / "cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode(errors="replace")
            .strip()
        )
    except OSError:
        return ""


def environ(pid: int) -> set[bytes]:
    """The ``NAME=value`` entries of the environment ``pid`` started with."""
    try:
        return set((PROC / str(pid) / "environ").read_bytes().split(b"\0"))
    except OSError:
        return set()


def protected() -> set[int]:
    """This process and its ancestors: never selected for killing."""
    procs = snapshot()
    pids = {0, 1}
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        pid = procs[pid].ppid if pid in procs else 0
    return pids


def descendants(roots: Iterable[int], procs: dict[int, Proc]) -> set[int]:
    """``roots`` (those alive) and everything below them."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found: set[int] = set()
    todo = [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def _decode_endpoint(text: str) -> Endpoint:
    addr, port = text.split(":")
    return socket.inet_ntoa(struct.pack("<I", int(addr, 16))), int(port, 16)


def tcp_inodes(endpoints: set[Endpoint]) -> set[int]:
    """Inodes of IPv4 TCP sockets with a local or remote endpoint in ``endpoints``."""
    try:
        lines = (PROC / "net" / "tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    found = set()
    for line in lines:
        fields = line.split()
        local, remote, inode = _decode_endpoint(fields[1]), _decode_endpoint(fields[2]), fields[9]
        if inode != "0" and (local in endpoints or remote in endpoints):
            found.add(int(inode))
    return found


def socket_holders(endpoints: set[Endpoint], procs: dict[int, Proc]) -> set[int]:
    """Pids holding a TCP socket with an endpoint in ``endpoints`` (listening ones included)."""
    inodes = tcp_inodes(endpoints)
    holders: set[int] = set()
    if not inodes:
        return holders
    for pid in procs:
        try:
            fds = list((PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                holders.add(pid)
                break
    return holders


def kill_tree(select: Callable[[], set[int]], timeout: float = 5.0) -> set[int]:
    """Freeze (SIGSTOP) what ``select`` returns until it stops growing, then SIGKILL all of it.

    Freezing first keeps a selected process from forking a child that escapes the selection.
    Returns the pids that are still alive after ``timeout`` (normally none).
    """
    keep = protected()
    stopped: set[int] = set()
    try:
        for _unused0 in range(100):
            new = select() - keep - stopped
            if not new:
                break
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            stopped |= new
    finally:  # never leave a process stopped
        for pid in stopped:
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        left = {pid for pid in stopped if alive(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def describe(pids: Iterable[int]) -> list[str]:
    """``pid comm: cmdline`` lines, for error messages."""
    procs = snapshot()
    return [
        f"{pid} {procs[pid].comm}: {cmdline(pid)}" if pid in procs else f"{pid} (gone)"
        for pid in sorted(pids)
    ]
