# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""No process of a hetero run outlives it: cgroup v2 where the host allows it, else a subreaper.

Every benchmark process of a run carries the run in its environment
(``HETEROMIG_RUN_DIR=<run_dir>``, ``HETEROMIG_RUN_BENCH=<name>``), which its children inherit,
double-forked ones included. Around that:

- **cgroup v2** (a cgroup2 mount the runner may write, such as ``/sys/fs/cgroup`` or the
  ``unified`` hierarchy of a hybrid host): each run gets its own cgroup below the runner's,
  every benchmark joins it before it execs, and the run ends with ``cgroup.kill``, which takes
  every process in it whatever session or process group it moved to.
- **Elsewhere**: the runner is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so orphans of its
  benchmarks re-parent to it rather than to init, and each benchmark gets a parent-death signal
  (``PR_SET_PDEATHSIG``: SIGKILL when the runner dies).
- **Always**: at the end of a run, and whenever a later start, status or stop finds a run whose
  runner died, every process still carrying the run's marker is killed, and what was killed is
  recorded (``<run_dir>/leftovers.json``) and reported.

Linux only; stdlib only (runs on the host, Python >= 3.9).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import time
from typing import Any, Callable, Dict, List, Optional

MARKER_ENV = "HETEROMIG_RUN_DIR"
BENCH_ENV = "HETEROMIG_RUN_BENCH"
CONTAINMENT_FILE = "containment.json"
LEFTOVERS_FILE = "leftovers.json"
# in a new run's directory: what its start had to end of the run before it (whose runner died)
PREVIOUS_LEFTOVERS_FILE = "previous_leftovers.json"
CGROUP_PREFIX = "heteromig-run-"
# Set to "subreaper" in the runner's environment to keep runs out of cgroups on a host where
# moving processes between cgroups is unwanted (a cgroup manager that owns the tree).
METHOD_ENV = "HETEROMIG_CONTAINMENT"

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_CGROUP2_MAGIC = "cgroup2"


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> bool:
    try:
        return _libc().prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def cgroup2_mount() -> Optional[str]:
    """The cgroup2 mount point, or None (cgroup v1 only, or no cgroup filesystem)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 2 and fields[2] == _CGROUP2_MAGIC:
                    return fields[1]
    except OSError:
        return None
    return None


def own_cgroup2_path() -> Optional[str]:
    """This process's cgroup in the v2 hierarchy (the ``0::`` line), e.g. ``/`` or ``/a/b``."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("0::"):
                    return line[3:].strip() or "/"
    except OSError:
        return None
    return None


def _safe_leaf(run_id: str) -> str:
    return CGROUP_PREFIX + "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_json(path: str, data: Any) -> None:
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)
    os.replace(tmp, path)


def _cmdline(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            raw = handle.read()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:300] or "?"


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")


def marked_processes(run_dir: str, exclude: Optional[List[int]] = None) -> Dict[int, str]:
    """Live processes whose environment carries ``run_dir``'s marker: {pid: benchmark name}."""
    needle = ("%s=%s\0" % (MARKER_ENV, os.path.realpath(run_dir))).encode()
    skip = set(exclude or ()) | {os.getpid()}
    found: Dict[int, str] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as handle:
                environ = b"\0" + handle.read()
        except OSError:
            continue
        if not environ.endswith(b"\0"):
            environ += b"\0"
        if b"\0" + needle in environ:
            bench = "?"
            start = environ.find(("\0%s=" % BENCH_ENV).encode())
            if start >= 0:
                end = environ.find(b"\0", start + 1)
                bench = environ[start + len(BENCH_ENV) + 2 : end if end > 0 else None].decode(
                    "utf-8", "replace"
                )
            if _alive(int(entry)):
                found[int(entry)] = bench
    return found


class Containment:
    """The runner's side: set up before the first launch, ``preexec`` in every child, ``end``."""

    def __init__(self, run_dir: str, run_id: str, log: Callable[[str], None]) -> None:
        self.run_dir = os.path.realpath(run_dir)
        self.run_id = run_id
        self.log = log
        self.cgroup: Optional[str] = None
        self.subreaper = False
        self.method = "marker"

    def setup(self) -> Dict[str, Any]:
        """Create the run's cgroup where possible, else become a subreaper; record which."""
        mount = cgroup2_mount()
        own = own_cgroup2_path()
        why_not = None
        if os.environ.get(METHOD_ENV) == "subreaper":
            why_not = "%s=subreaper" % METHOD_ENV
        elif mount is None or own is None:
            why_not = "no cgroup2 hierarchy on this host"
        else:
            parent = os.path.normpath(mount + "/" + own)
            # the runner's pid too: hosts of a test lab share one kernel and one run id
            path = os.path.join(parent, "%s-%d" % (_safe_leaf(self.run_id), os.getpid()))
            try:
                os.mkdir(path)
                if not os.path.exists(os.path.join(path, "cgroup.kill")):
                    os.rmdir(path)
                    why_not = "the kernel has no cgroup.kill (Linux < 5.14)"
                else:
                    self.cgroup = path
            except OSError as exc:
                why_not = "cannot create a cgroup under %s: %s" % (parent, exc.strerror)
        if self.cgroup is not None:
            self.method = "cgroup"
        # the subreaper catches double-forks either way (and lets the runner reap them)
        self.subreaper = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        if self.cgroup is None:
            self.method = "subreaper" if self.subreaper else "marker"
        record = {
            "method": self.method,
            "cgroup": self.cgroup,
            "subreaper": self.subreaper,
            "runner_pid": os.getpid(),
            "why_no_cgroup": why_not,
            "marker": "%s=%s" % (MARKER_ENV, self.run_dir),
        }
        write_json(os.path.join(self.run_dir, CONTAINMENT_FILE), record)
        self.log(
            "containment: %s%s"
            % (
                self.method,
                " (%s)" % self.cgroup if self.cgroup else " (%s)" % why_not if why_not else "",
            )
        )
        return record

    def env(self, name: str) -> Dict[str, str]:
        return {MARKER_ENV: self.run_dir, BENCH_ENV: name}

    def preexec(self) -> None:
        """In the child, before exec: join the run's cgroup; die with the runner."""
        if self.cgroup is not None:
            with (
                contextlib.suppress(OSError),
                open(os.path.join(self.cgroup, "cgroup.procs"), "w") as handle,
            ):
                handle.write(str(os.getpid()))
        parent = os.getppid()
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the runner died before the signal was armed
            os._exit(137)

    def end(self, keep: List[int], grace: float = 2.0) -> List[Dict[str, Any]]:
        """Kill every process of the run still alive; reap orphans (not ``keep``, the runner's
        own children, which it waits for itself); remove the cgroup."""
        killed = end_processes(
            self.run_dir, self.cgroup, exclude=[os.getpid()], grace=grace, keep=keep
        )
        if self.cgroup is not None:
            remove_cgroup(self.cgroup, grace)
        return killed


def children_of(pid: int) -> List[int]:
    """The direct children of ``pid``."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid), encoding="utf-8") as handle:
            return [int(p) for p in handle.read().split()]
    except (OSError, ValueError):
        pass
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as handle:
                stat = handle.read()
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def reap_orphans(keep: List[int]) -> None:
    """Reap exited children other than ``keep`` (orphans adopted by a subreaper runner)."""
    for pid in children_of(os.getpid()):
        if pid in keep:
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def end_processes(
    run_dir: str,
    cgroup: Optional[str],
    exclude: Optional[List[int]] = None,
    grace: float = 2.0,
    keep: Optional[List[int]] = None,
) -> List[Dict[str, Any]]:
    """Kill what is left of a run; returns [{pid, benchmark, command}] of what had to be killed.

    What was killed is appended to ``<run_dir>/leftovers.json``.
    """
    found = marked_processes(run_dir, exclude)
    killed = [
        {"pid": pid, "benchmark": bench, "command": _cmdline(pid)} for pid, bench in found.items()
    ]
    if cgroup is not None and os.path.isdir(cgroup):
        with contextlib.suppress(OSError), open(os.path.join(cgroup, "cgroup.kill"), "w") as handle:
            handle.write("1")
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.time() + grace
    while time.time() < deadline:
        reap_orphans(keep=list(keep or ()))
        if not [pid for pid in found if _alive(pid)]:
            break
        time.sleep(0.01)
    if killed:
        path = os.path.join(run_dir, LEFTOVERS_FILE)
        earlier = read_json(path)
        write_json(path, (earlier if isinstance(earlier, list) else []) + killed)
    return killed


def remove_cgroup(path: str, grace: float = 2.0) -> None:
    """Remove a run's cgroup once it is empty.

    A killed process stays in its cgroup until it is reaped (a zombie), and ``cgroup.kill``
    works asynchronously: wait up to ``grace`` for ``cgroup.procs`` to empty, reaping this
    process's exited children meanwhile (the run is over: no exit status is needed any more).
    """
    deadline = time.time() + grace
    while True:
        reap_orphans(keep=[])
        try:
            with open(os.path.join(path, "cgroup.procs"), encoding="utf-8") as handle:
                empty = not handle.read().split()
        except OSError:
            return  # gone already
        if empty:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return
        if time.time() >= deadline:
            return
        time.sleep(0.02)


def end_leftovers_of_dead_run(run_dir: str) -> List[Dict[str, Any]]:
    """For a run whose runner is gone: kill what it left; [] when nothing was left."""
    record = read_json(os.path.join(run_dir, CONTAINMENT_FILE))
    cgroup = record.get("cgroup") if isinstance(record, dict) else None
    killed = end_processes(run_dir, cgroup if isinstance(cgroup, str) else None)
    if isinstance(cgroup, str):
        remove_cgroup(cgroup)
    return killed


def leftovers(run_dir: str) -> List[Dict[str, Any]]:
    """Everything that had to be killed for ``run_dir`` so far."""
    data = read_json(os.path.join(run_dir, LEFTOVERS_FILE))
    return data if isinstance(data, list) else []
