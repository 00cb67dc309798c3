# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hetero run's files on its host (runs on targets; private).

The names of the run directory and of the host's run lock, atomic JSON writes and reads, the
controller's lease, the one-run-per-host ``flock``, and whether a runner that ``status.json``
names still runs: shared by the runner (``_hetero_runner``) and by ``_run_control``, which
starts, watches and stops it. :class:`RunRecords` holds what the runner writes into
``status.json`` and ``result.json``: the benchmarks' collected results, the result, the status.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    MAIN,
    PHASE_ABORTING,
    PHASE_BUFFER,
    PHASE_COLLECTING,
    PHASE_DONE,
    PHASE_INIT,
    PHASE_STARTING,
    PHASE_STOPPING,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_choreo import (
    Choreography,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    empty_accuracy,
    empty_result,
    read_accuracy,
    read_loadgen_dir,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_containment import (
    PREVIOUS_LEFTOVERS_FILE,
    Containment,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_contract import (
    BenchmarkOutcome,
    plan_entry,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_activity import (
    ActivitySampler,
    activity_result,
)

if TYPE_CHECKING:  # only the type of the runner's outputs
    from ansible_collections.heteromig.fleet.plugins.module_utils.agent._runner_processes import (
        Output,
    )

STATUS_FORMAT = "heteromig.hetero-status"
LOCK_NAME = "hetero_run.lock"
RUNS_DIR = "runs"
ARCHIVE_NAME = "results.tar.gz"
EXEC_SETTLE_S = 2.0  # how long a live runner may show no command line before it counts as gone


class RunnerError(Exception):
    """A run cannot be started or read; the message says why."""


# ------------------------------------------------------------------------------ small files
def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and rename (atomic)."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True, separators=(",", ":"))
    os.replace(tmp, path)


def read_json(path: str) -> Optional[Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def renew_lease(run_dir: str, lease_s: float, now: Optional[float] = None) -> float:
    """Push the lease out to ``now + lease_s``; returns the new expiry."""
    now = time.time() if now is None else now
    expires = now + lease_s
    write_json_atomic(
        os.path.join(run_dir, "lease"),
        {"expires_at": expires, "renewed_at": now, "lease_s": lease_s},
    )
    return expires


def lock_holder(host_root: str) -> Optional[Dict[str, Any]]:
    """Who holds the host's hetero-run lock: its recorded run, or None when it is free."""
    path = os.path.join(host_root, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            data = read_json(path)
            return data if isinstance(data, dict) else {"run_id": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def acquire_host_lock(host_root: str, info: Dict[str, Any]) -> int:
    """Take the host's hetero-run lock (non-blocking) and record ``info`` in it; returns the fd.

    Raises RunnerError naming the run that holds it.
    """
    os.makedirs(host_root, exist_ok=True)
    path = os.path.join(host_root, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RunnerError("cannot lock %s: %s" % (path, exc.strerror)) from exc
        holder = read_json(path) or {}
        raise RunnerError(
            "another hetero run is in progress on this host: run %s (runner pid %s, started "
            "%s, run directory %s). One run per host at a time: wait for it to finish, or stop "
            "it with heteromig.fleet.hetero_runner command=stop"
            % (
                holder.get("run_id", "?"),
                holder.get("pid", "?"),
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder["started_at"]))
                if isinstance(holder.get("started_at"), (int, float))
                else "?",
                holder.get("run_dir", "?"),
            )
        ) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info, sort_keys=True).encode("utf-8"), 0)
    return fd


def pid_seen(pid: Optional[int], marker: str) -> Optional[bool]:
    """Whether ``pid`` is alive, not a zombie, and its command line contains ``marker``; None
    for a live process that shows no command line at all.

    A process shows none from the moment its exec closes its close-on-exec descriptors (when
    the parent's ``Popen`` returns) until the kernel has laid out the new program's arguments,
    and again while it exits (memory released, not yet a zombie). On a loaded host the first
    window is long enough for a status read right after the start to fall into it.
    """
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            stat = handle.read()
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] in (b"Z", b"X"):
            return False
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            cmdline = handle.read()
    except (OSError, ValueError):
        return False
    if marker.encode() in cmdline:
        return True
    return None if not cmdline.strip(b"\0") else False


def pid_runs(pid: Optional[int], marker: str, settle: float = 0.0) -> bool:
    """``pid_seen``, waiting up to ``settle`` seconds for a live process without a command line
    to show one (False if it still shows none then)."""
    deadline = time.time() + settle
    while True:
        seen = pid_seen(pid, marker)
        if seen is not None:
            return seen
        if time.time() >= deadline:
            return False
        time.sleep(0.01)


# ------------------------------------------------------------------ status.json, result.json
class RunRecords:
    """The runner's records of its run: the results it collects, ``result.json``'s result and
    ``status.json``'s status (a base of ``_hetero_runner.Runner``, which sets the state below)."""

    run_dir: str
    plan: Dict[str, Any]
    benchmarks: Dict[str, Dict[str, Any]]
    machine: Choreography
    outputs: Dict[str, Output]
    containment: Containment
    ended_processes: List[Dict[str, Any]]
    activity: ActivitySampler
    stop_reason: Optional[str]
    lease_expires: Optional[float]
    result: Optional[Dict[str, Any]]
    seq: int
    dirty: bool
    shown_phase: str
    _log: Callable[[str], None]

    # ------------------------------------------------------------------------ results
    def _collect(self) -> Dict[str, Dict[str, Any]]:
        results = {}
        for name, bench in self.benchmarks.items():
            try:
                results[name] = read_loadgen_dir(bench["log_dir"])
            except OSError as exc:
                self._log("cannot read LoadGen logs of %s: %s" % (name, exc))
                results[name] = empty_result()
        return results

    def _collect_accuracy(self) -> Dict[str, Dict[str, Any]]:
        """The accuracy verdict of every benchmark that ran an accuracy check (AccuracyOnly)."""
        results = {}
        for name, bench in self.benchmarks.items():
            check = bench.get("accuracy_check")
            if not check:
                continue
            try:
                results[name] = read_accuracy(bench["log_dir"], check)
            except (OSError, re.error) as exc:
                self._log("cannot read the accuracy result of %s: %s" % (name, exc))
                results[name] = empty_accuracy()
        return results

    def build_result(self) -> Dict[str, Any]:
        machine = self.machine
        plan = self.plan
        benchmarks = []
        for name, bench in self.benchmarks.items():
            state = machine.bench_state(name)
            loadgen = machine.benches[name].loadgen or empty_result()
            outcome = BenchmarkOutcome(
                exit_code=state["exit_code"],
                signal=state["signal"],
                failed=state["failed"],
                launched_at=state["launched_at"],
                ready_at=state["ready_at"],
                ended_at=state["ended_at"],
                timed_window=state["timed_window"],
                loadgen=loadgen,
                accuracy=state["accuracy"],
                stopped_by_runner=state["stopped_by_runner"],
            )
            benchmarks.append(
                {
                    **plan_entry(bench),
                    "role": state["role"],
                    "pid": state["pid"],
                    **dataclasses.asdict(outcome),
                    "output_bytes": (
                        self.outputs[name].written + self.outputs[name].dropped
                        if name in self.outputs
                        else 0
                    ),
                }
            )
        warnings = list(machine.warnings)
        previous = read_json(os.path.join(self.run_dir, PREVIOUS_LEFTOVERS_FILE))
        if isinstance(previous, dict) and previous.get("ended"):
            warnings.insert(
                0,
                "before this run started, ended %d process(es) that run %s left running when "
                "its runner died: %s"
                % (
                    len(previous["ended"]),
                    previous.get("run_id"),
                    ", ".join(
                        "pid %s (%s, %s)" % (p["pid"], p["benchmark"], p["command"][:60])
                        for p in previous["ended"]
                    ),
                ),
            )
        for ended in self.ended_processes:
            warnings.append(
                "ended pid %s (%s), left running by %s after its benchmark ended"
                % (ended["pid"], ended["command"][:120], ended["benchmark"])
            )
        return {
            "run_id": plan["run_id"],
            "verdict": machine.verdict,
            "reasons": list(machine.reasons),
            "warnings": warnings,
            "ended_processes": list(self.ended_processes),
            "containment": self.containment.method,
            "started_at": machine.started_at,
            "finished_at": machine.finished_at,
            "main": self.benchmarks[MAIN].get("benchmark"),
            "backgrounds": [b.get("benchmark") for n, b in self.benchmarks.items() if n != MAIN],
            "benchmarks": benchmarks,
            "timeline": machine.sorted_timeline(),
            "stop_reason": self.stop_reason,
            "gpu_activity": activity_result(
                self.activity, machine.bench_state(MAIN)["timed_window"]
            ),
        }

    # ------------------------------------------------------------------------ status
    def status(self) -> Dict[str, Any]:
        machine = self.machine
        now = time.time()
        benches = {}
        for name in self.benchmarks:
            state = machine.bench_state(name)
            benches[name] = {
                "state": state["state"],
                "ready": state["ready_at"] is not None,
                "pid": state["pid"],
                "launched_at": state["launched_at"],
                "ready_at": state["ready_at"],
                "ended_at": state["ended_at"],
                "exit_code": state["exit_code"],
                "signal": state["signal"],
                "failed": state["failed"],
                "benchmark": self.benchmarks[name].get("benchmark"),
            }
        return {
            "format": STATUS_FORMAT,
            "run_id": self.plan["run_id"],
            "seq": self.seq,
            "pid": os.getpid(),
            "phase": machine.phase,
            "started_at": machine.started_at,
            "updated_at": now,
            "elapsed_s": (now - machine.started_at) if machine.started_at else 0.0,
            "expected_duration_s": self.plan.get("expected_duration_s"),
            "main_launched_at": machine.main.launched_at,
            "lease_expires_at": self.lease_expires,
            "benchmarks": benches,
            "reasons": list(machine.reasons),
            "warnings": list(machine.warnings),
            "timeline": machine.sorted_timeline(),
            "change": self.change_key(),
            "done": machine.phase == PHASE_DONE and self.result is not None,
            "verdict": machine.verdict if self.result is not None else None,
            "result": self.result,
        }

    def change_key(self) -> str:
        """What wakes a watcher's long poll: the main starting, a failure, the end.

        Each wake-up costs the controller a module call per host, so the steps in between
        (each background's readiness, the start buffer) are reported by the periodic polls, and
        the short phases on the way out (stopping, aborting, collecting: at most the stop grace)
        do not wake anyone just before the end.
        """
        machine = self.machine
        if machine.phase in (PHASE_INIT, PHASE_STARTING, PHASE_BUFFER):
            self.shown_phase = "starting"
        elif machine.phase not in (PHASE_STOPPING, PHASE_ABORTING, PHASE_COLLECTING):
            self.shown_phase = machine.phase
        failed = ",".join(n for n, b in machine.benches.items() if b.failed is not None)
        return "%s|%s|%s" % (self.shown_phase, failed, self.result is not None)

    def _write_status_if_dirty(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        self.seq += 1
        write_json_atomic(os.path.join(self.run_dir, "status.json"), self.status())
