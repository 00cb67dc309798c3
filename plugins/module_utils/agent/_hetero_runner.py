# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host-side HeteroMIG runner: drives ``_hetero_choreo`` with real processes.

Started detached by the ``hetero_runner`` module (its own session, stdin from /dev/null, output
to ``runner.log``), so it outlives the SSH connection that started it::

    python3 -m ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_runner \\
        run --run-dir RUN_DIR [--lock-fd N]

Run directory (``<host_root>/runs/<run_id>/``):

- ``plan.json``: what to run (written by the module from the controller's plan);
- ``status.json``: written atomically on every change (phase, benchmarks, timeline, result);
- ``lease``: ``{"expires_at": epoch}``, renewed by the controller's status polls. When it
  expires the runner stops every benchmark (SIGTERM, SIGKILL after the grace) and records why;
- ``stop``: written by ``hetero_runner command=stop`` (plus a SIGTERM) to stop the run;
- ``result.json``: the final result; ``runner.log``; ``<benchmark>/stdout.log`` and the
  benchmark's LoadGen logs under ``<benchmark>/``.

One run per host: the module takes an ``flock`` on ``<host_root>/hetero_run.lock`` and hands the
locked file to the runner, which holds it until it exits.

The event loop is a ``selectors`` loop over every benchmark's merged stdout/stderr pipe
(non-blocking, 1 MiB reads, readiness matched over whole chunks), a self-pipe for signals
(SIGCHLD, SIGTERM, SIGINT) and the choreography's timers; it sleeps in ``select`` until the next
deadline, so it costs nothing while benchmarks are quiet.

Its parts: the benchmarks' processes and output in ``_runner_processes``; the run's files (the
lock, the lease, ``status.json`` and ``result.json``) in ``_run_files``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_checks import (
    DEFAULT_READINESS_REGEXES,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    MAIN,
    AbortRequested,
    ArmTimer,
    Begin,
    CancelTimer,
    Collect,
    Config,
    Finish,
    Launch,
    Progress,
    ResultsCollected,
    SignalGroup,
    TimerFired,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_choreo import (
    Choreography,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_containment import (
    Containment,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_contract import (
    plan_problems,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_files import (
    RunnerError,
    RunRecords,
    read_json,
    write_json_atomic,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._runner_processes import (
    BenchmarkProcesses,
    Output,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_activity import (
    ActivitySampler,
    interval_from_plan,
)

RUNNER_MODULE = "ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_runner"
RUNNER_NICE = -10
LEASE_CHECK_INTERVAL = 1.0
HEARTBEAT_INTERVAL = 5.0
DEFAULT_MAX_OUTPUT = 256 * 1024 * 1024


# --------------------------------------------------------------------------- layout check
_SLICE_KEYS = ("gpu_index", "gpu_instance_id", "compute_instance_id", "profile")


def layout_problems(
    slices: List[Dict[str, Any]], devices: List[Dict[str, Any]], gpus: List[Dict[str, Any]]
) -> List[str]:
    """How the slices the controller resolved differ from what NVML reports now.

    ``slices``: {name, uuid, ...} per benchmark; ``devices``: NVML's MIG devices now;
    ``gpus``: NVML's GPUs now (for whole-GPU slices in shared-GPU mode).
    """
    by_uuid = {d.get("uuid"): d for d in devices}
    gpu_uuids = {g.get("uuid") for g in gpus}
    problems = []
    for entry in slices:
        uuid = entry.get("uuid")
        name = entry.get("name", "?")
        if isinstance(uuid, str) and uuid.startswith("GPU-"):
            if uuid not in gpu_uuids:
                problems.append("%s: GPU %s is no longer present" % (name, uuid))
            continue
        device = by_uuid.get(uuid)
        if device is None:
            problems.append("%s: MIG device %s no longer exists" % (name, uuid))
            continue
        for key in _SLICE_KEYS:
            if key in entry and entry[key] is not None and device.get(key) != entry[key]:
                problems.append(
                    "%s: MIG device %s now has %s %r (the controller saw %r)"
                    % (name, uuid, key, device.get(key), entry[key])
                )
    return problems


def check_layout(plan: Dict[str, Any]) -> List[str]:
    """Compare the plan's slices with NVML on this host (through ``open_backend``)."""
    from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
        open_backend,
    )
    from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import (
        GpuReader,
    )

    slices = [dict(b.get("slice") or {}, name=b["name"]) for b in plan["benchmarks"]]
    backend_conf = plan.get("backend") or {}
    backend = open_backend(
        backend_conf.get("name", "nvml"),
        backend_conf.get("sim_state"),
        backend_conf.get("sim_gpus"),
    )
    try:
        reader = GpuReader(backend.nvml)
        count = backend.nvml.nvmlDeviceGetCount()
        indices = [s.get("gpu_index") for s in slices]
        if all(isinstance(i, int) for i in indices):
            wanted = sorted({int(i) for i in indices if isinstance(i, int) and 0 <= i < count})
        else:
            wanted = list(range(count))  # slices without a GPU index: read every GPU
        gpus = [reader.gpu(i) for i in wanted]
    finally:
        backend.close()
    devices = [device for gpu in gpus for device in gpu["mig_devices"]]
    return layout_problems(slices, devices, gpus)


# ------------------------------------------------------------------------------- the plan
def validate_plan(plan: Any) -> List[str]:
    """Problems with a plan, in words (empty when it can run): the contract's shape
    (``_run_contract.plan_problems``), then what only the runner can judge."""
    problems = plan_problems(plan)
    if problems:
        return problems
    problem = interval_from_plan(plan)[1]
    if problem:
        problems.append("plan: %s" % problem)
    try:
        choreo_config(plan).validate()
    except (TypeError, ValueError) as exc:
        problems.append("plan.choreography: %s" % exc)
    else:
        problems.extend("plan.choreography: %s" % p for p in choreo_config(plan).validate())
    return problems


def choreo_config(plan: Dict[str, Any]) -> Config:
    conf = dict(plan.get("choreography") or {})
    backgrounds = tuple(b["name"] for b in plan["benchmarks"] if b.get("name") != MAIN)
    labels = tuple((b["name"], str(b.get("benchmark", ""))) for b in plan["benchmarks"])
    allowed = set(Config.__dataclass_fields__) - {"backgrounds", "labels"}
    unknown = set(conf) - allowed
    if unknown:
        raise ValueError("unknown setting(s) %s" % ", ".join(sorted(unknown)))
    return Config(backgrounds=backgrounds, labels=labels, **conf)


# ------------------------------------------------------------------------------- runner
class Runner(BenchmarkProcesses, RunRecords):
    """Runs one plan to its verdict; ``run()`` returns the process exit code."""

    def __init__(self, run_dir: str, lock_fd: Optional[int] = None) -> None:
        self.run_dir = os.path.abspath(run_dir)
        plan = read_json(os.path.join(self.run_dir, "plan.json"))
        problems = validate_plan(plan)
        if problems:
            raise RunnerError("unusable plan in %s: %s" % (self.run_dir, "; ".join(problems)))
        self.plan: Dict[str, Any] = plan if isinstance(plan, dict) else {}
        plan = self.plan
        self.lock_fd = lock_fd
        self.benchmarks = {b["name"]: b for b in plan["benchmarks"]}
        self.machine = Choreography(choreo_config(plan))
        self.selector = selectors.DefaultSelector()
        self.procs: Dict[str, subprocess.Popen[bytes]] = {}
        self.outputs: Dict[str, Output] = {}
        self.timers: Dict[str, float] = {}
        self.patterns = tuple(plan.get("readiness_regexes") or DEFAULT_READINESS_REGEXES)
        self.progress_regex = plan.get("progress_regex")
        self.lease_s = float(plan.get("lease_s") or 0)
        self.max_output = int(plan.get("max_output_bytes") or DEFAULT_MAX_OUTPUT)
        self.seq = 0
        self.dirty = True
        self.result: Optional[Dict[str, Any]] = None
        self.next_lease_check = 0.0
        self.next_heartbeat = 0.0
        self.signals: List[int] = []
        self.child_exited = False
        self.shown_phase = "init"
        self.base_nice = 0
        self.paused: Dict[str, float] = {}
        self.lease_expires: Optional[float] = None
        self.stop_reason: Optional[str] = None
        self.containment = Containment(run_dir, str(plan["run_id"]), self._log)
        self.ended_processes: List[Dict[str, Any]] = []
        self.activity = ActivitySampler(plan)  # GPU activity, sampled from Begin to _finish

    # ---------------------------------------------------------------------- main loop
    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        self._log("runner pid %d: run %s" % (os.getpid(), self.plan["run_id"]))
        self._raise_priority()
        self.containment.setup()
        # NVML's start-up (nvmlInit) before the first launch: done later, it would hold up the
        # reading of the benchmarks' pipes, and readiness times are taken when a chunk is read
        self.activity.open()
        self._dispatch(Begin(time.time()))
        while not self.machine.done:
            now = time.time()
            self._housekeeping(now)
            if self.machine.done:
                break
            self._write_status_if_dirty()
            deadline = min(
                [
                    self.next_lease_check,
                    self.next_heartbeat,
                    *self.timers.values(),
                    *self.paused.values(),
                    self.activity.next_due,
                ]
            )
            timeout = max(0.0, deadline - time.time())
            for key, _mask in self.selector.select(timeout):
                if key.data is None:
                    self._drain_wakeup(wake_r)
                else:
                    self._read(key.data)
            self._resume_paused()
            self._reap()
            self._fire_timers()
            if self.activity.due(time.time()):
                self.activity.sample()
        self._finish()
        return 0

    def _raise_priority(self) -> None:
        """Wake up promptly on a host whose CPUs are busy (harnesses with preprocessing threads).

        The runner uses a fraction of a percent of a core, but its readiness timestamps and
        stop signals are only as prompt as the scheduler lets it run: where permitted (root,
        CAP_SYS_NICE) it takes nice RUNNER_NICE. Benchmarks get the runner's original nice back
        (``_benchmark_priority``).
        """
        self.base_nice = os.getpriority(os.PRIO_PROCESS, 0)
        target = min(self.base_nice, RUNNER_NICE)
        if target < self.base_nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, target)
            except OSError as exc:
                self._log("running at nice %d (cannot raise priority: %s)" % (self.base_nice, exc))
            else:
                self._log("running at nice %d (benchmarks at %d)" % (target, self.base_nice))

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGCHLD:
            self.child_exited = True
        else:
            self.signals.append(signum)

    def _drain_wakeup(self, fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass
        while self.signals:
            signum = self.signals.pop(0)
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                self._log("ignoring SIGHUP")
                continue
            stop = read_json(os.path.join(self.run_dir, "stop"))
            if isinstance(stop, dict) and stop.get("reason"):
                reason = str(stop["reason"])  # hetero_runner command=stop: its reason
            else:
                reason = "the runner received %s (run stopped)" % name
            if self.stop_reason is None:
                self.stop_reason = reason
            self._dispatch(AbortRequested(time.time(), reason))

    def _housekeeping(self, now: float) -> None:
        if now >= self.next_lease_check:
            self.next_lease_check = now + LEASE_CHECK_INTERVAL
            stop = read_json(os.path.join(self.run_dir, "stop"))
            if stop is not None and self.stop_reason is None:
                self.stop_reason = str(stop.get("reason") or "stop requested")
                self._dispatch(AbortRequested(now, self.stop_reason))
            if self.lease_s > 0:
                lease = read_json(os.path.join(self.run_dir, "lease"))
                if isinstance(lease, dict) and isinstance(lease.get("expires_at"), (int, float)):
                    self.lease_expires = float(lease["expires_at"])
                expired = self.lease_expires is not None and now > self.lease_expires
                if expired and self.stop_reason is None:
                    self.stop_reason = (
                        "the controller's lease expired at %s (not renewed for %.0f s: "
                        "controller interrupted, crashed or disconnected); every benchmark "
                        "was stopped" % (_utc(self.lease_expires or now), self.lease_s)
                    )
                    self._dispatch(AbortRequested(now, self.stop_reason))
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + HEARTBEAT_INTERVAL
            self.dirty = True
            self.child_exited = True  # a lost SIGCHLD must not hang the run

    # ------------------------------------------------------------------------ dispatch
    def _dispatch(self, event: Any) -> None:
        pending = [event]
        while pending:
            event = pending.pop(0)
            actions = self.machine.handle(event)
            if actions or not isinstance(event, Progress):
                self.dirty = True
            for action in actions:
                pending.extend(self._carry_out(action))

    def _carry_out(self, action: Any) -> List[Any]:
        if isinstance(action, Launch):
            return [self._launch(action.name)]
        if isinstance(action, ArmTimer):
            self.timers[action.key] = action.at
        elif isinstance(action, CancelTimer):
            self.timers.pop(action.key, None)
        elif isinstance(action, SignalGroup):
            self._signal(action.name, action.signal)
        elif isinstance(action, Collect):
            return [ResultsCollected(time.time(), self._collect(), self._collect_accuracy())]
        elif isinstance(action, Finish):
            self._log("verdict %s %s" % (action.verdict, "; ".join(action.reasons)))
        return []

    def _fire_timers(self) -> None:
        now = time.time()
        for key, at in sorted(self.timers.items(), key=lambda item: item[1]):
            if at <= now and key in self.timers:
                del self.timers[key]
                self._dispatch(TimerFired(now, key))

    # ------------------------------------------------------------------------ the end
    def _finish(self) -> None:
        self.activity.close()
        # close every output; a benchmark still running here survived SIGKILL ("lost")
        for name, proc in self.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            self._drain(name)
            self.outputs[name].close()
        # whatever escaped its process group (double fork, setsid) goes now, by name
        self.ended_processes = self.containment.end(keep=[p.pid for p in self.procs.values()])
        for ended in self.ended_processes:
            self._log("ended a process that outlived its benchmark: %r" % (ended,))
        self.result = self.build_result()
        write_json_atomic(os.path.join(self.run_dir, "result.json"), self.result)
        # free the host before saying "done": whoever sees it may start the next run at once
        self.release_lock()
        self.dirty = True
        self._write_status_if_dirty()
        self._log("finished: %s" % self.result["verdict"])

    def release_lock(self) -> None:
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None

    def _log(self, message: str) -> None:
        sys.stdout.write("%s %s\n" % (_utc(time.time()), message))
        sys.stdout.flush()


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


# ------------------------------------------------------------------------------- CLI
def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="heteromig-hetero-runner")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the plan in RUN_DIR/plan.json in the foreground")
    run.add_argument("--run-dir", required=True)
    run.add_argument("--lock-fd", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        runner = Runner(args.run_dir, args.lock_fd)
    except RunnerError as exc:
        sys.stderr.write("heteromig runner: %s\n" % exc)
        return 2
    try:
        return runner.run()
    except Exception:
        sys.stderr.write(traceback.format_exc())
        for proc in runner.procs.values():
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            runner.ended_processes = runner.containment.end(keep=[])
        why = "the runner crashed: %s" % traceback.format_exc().strip().splitlines()[-1]
        try:
            result = runner.build_result()
        except Exception:
            result = {"run_id": runner.plan.get("run_id"), "benchmarks": [], "timeline": []}
        result.update(verdict="INVALID", reasons=[*list(result.get("reasons") or []), why])
        write_json_atomic(os.path.join(runner.run_dir, "result.json"), result)
        runner.result = result
        runner.release_lock()
        crash = runner.status()
        crash.update(phase="crashed", done=True, verdict="INVALID", result=result)
        write_json_atomic(os.path.join(runner.run_dir, "status.json"), crash)
        return 1


if __name__ == "__main__":
    # the runner's own process, not a module
    sys.exit(main())  # pylint: disable=ansible-bad-function
