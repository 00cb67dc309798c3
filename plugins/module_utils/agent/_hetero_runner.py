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
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_choreo import (
    DEFAULT_READINESS_REGEXES,
    MAIN,
    PHASE_ABORTING,
    PHASE_BUFFER,
    PHASE_COLLECTING,
    PHASE_DONE,
    PHASE_INIT,
    PHASE_STARTING,
    PHASE_STOPPING,
    AbortRequested,
    ArmTimer,
    Begin,
    CancelTimer,
    Choreography,
    Collect,
    Config,
    Exited,
    Finish,
    Launch,
    Launched,
    LaunchFailed,
    LineScanner,
    Progress,
    ProgressScanner,
    Ready,
    ResultsCollected,
    SignalGroup,
    TimerFired,
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
    reap_orphans,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_contract import (
    BenchmarkOutcome,
    plan_entry,
    plan_problems,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_activity import (
    ActivitySampler,
    activity_result,
    interval_from_plan,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    register_process,
)

STATUS_FORMAT = "heteromig.hetero-status"
LOCK_NAME = "hetero_run.lock"
RUNS_DIR = "runs"
ARCHIVE_NAME = "results.tar.gz"
RUNNER_MODULE = "ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_runner"
READ_SIZE = 1 << 20
RUNNER_NICE = -10
PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: room for DRAIN_INTERVAL of very chatty output
DRAIN_INTERVAL = 0.1
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
LEASE_CHECK_INTERVAL = 1.0
HEARTBEAT_INTERVAL = 5.0
DEFAULT_MAX_OUTPUT = 256 * 1024 * 1024
OUTPUT_TAIL = 1024 * 1024
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


# ------------------------------------------------------------------------------- output
class Output:
    """One benchmark's merged stdout/stderr: the pipe, its log file, and the scanners."""

    def __init__(
        self,
        name: str,
        fd: int,
        log_path: str,
        scanner: LineScanner,
        progress: Optional[ProgressScanner],
        max_bytes: int,
    ) -> None:
        self.name = name
        self.fd = fd
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.scanner = scanner
        self.progress = progress
        self.max_bytes = max_bytes
        self.written = 0
        self.dropped = 0
        self.tail = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        room = self.max_bytes - self.written
        if room > 0:
            part = data[:room]
            os.write(self.log_fd, part)
            self.written += len(part)
            data = data[len(part) :]
        if data:
            self.dropped += len(data)
            self.tail += data
            if len(self.tail) > OUTPUT_TAIL:
                del self.tail[: len(self.tail) - OUTPUT_TAIL]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.dropped:
            note = (
                "\n[heteromig runner: %d bytes of output not logged (max_output_bytes %d); "
                "the last %d bytes follow]\n" % (self.dropped, self.max_bytes, len(self.tail))
            )
            os.write(self.log_fd, note.encode() + bytes(self.tail))
        os.close(self.log_fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)


# ------------------------------------------------------------------------------- runner
class Runner:
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

    def _in_child(self) -> None:
        """Between fork and exec of a benchmark (the runner has no threads, so this is safe)."""
        self._benchmark_priority()
        self.containment.preexec()

    def _benchmark_priority(self) -> None:
        """In the forked child, before exec: back to the runner's original nice value."""
        if os.getpriority(os.PRIO_PROCESS, 0) != self.base_nice:
            os.setpriority(os.PRIO_PROCESS, 0, self.base_nice)

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

    def _launch(self, name: str) -> Any:
        bench = self.benchmarks[name]
        log_dir = bench["log_dir"]
        try:
            os.makedirs(log_dir, exist_ok=True)
        except OSError as exc:
            return LaunchFailed(time.time(), name, "cannot create %s: %s" % (log_dir, exc.strerror))
        cwd = bench.get("cwd") or log_dir
        try:
            for file_name, content in (bench.get("files") or {}).items():
                with open(os.path.join(cwd, os.path.basename(file_name)), "w") as handle:
                    handle.write(content)
        except OSError as exc:
            return LaunchFailed(
                time.time(),
                name,
                "cannot write %s into %s: %s"
                % (", ".join(sorted(bench.get("files") or {})), cwd, exc.strerror),
            )
        env = dict(os.environ)
        env.update(self.plan.get("env") or {})
        env.update(bench.get("env") or {})
        env.update(self.containment.env(name))
        read_fd, write_fd = os.pipe()
        # above /proc/sys/fs/pipe-max-size the default 64 KiB pipe still works
        with contextlib.suppress(OSError):
            fcntl.fcntl(read_fd, F_SETPIPE_SZ, PIPE_SIZE)
        try:
            # a detached long-lived child with its own pipe: run_command cannot do that
            proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
                bench["argv"],
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                preexec_fn=self._in_child,  # safe: the runner has no threads
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            os.close(read_fd)
            os.close(write_fd)
            return LaunchFailed(time.time(), name, "%s: %s" % (bench["argv"][0], exc))
        os.close(write_fd)
        t = time.time()
        os.set_blocking(read_fd, False)
        progress = None
        if self.progress_regex and name != MAIN:
            progress = ProgressScanner(self.progress_regex)
        output = Output(
            name,
            read_fd,
            os.path.join(log_dir, "stdout.log"),
            LineScanner(self.patterns),
            progress,
            self.max_output,
        )
        self.outputs[name] = output
        self.procs[name] = proc
        self.selector.register(read_fd, selectors.EVENT_READ, name)
        self._log("launched %s pid %d: %s" % (name, proc.pid, " ".join(bench["argv"])))
        self._register_sim_process(name, proc.pid)
        return Launched(t, name, proc.pid)

    def _register_sim_process(self, name: str, pid: int) -> None:
        backend = self.plan.get("backend") or {}
        uuid = (self.benchmarks[name].get("slice") or {}).get("uuid")
        if backend.get("name") != "sim" or not backend.get("sim_state") or not uuid:
            return
        try:
            register_process(
                "sim",
                backend["sim_state"],
                pid,
                uuid,
                str(self.benchmarks[name].get("benchmark", name)),
            )
        except Exception as exc:
            self._log("could not register %s (pid %d) with the simulator: %s" % (name, pid, exc))

    def _signal(self, name: str, signame: str) -> None:
        proc = self.procs.get(name)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, getattr(signal, signame))
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            self._log("cannot signal %s: %s" % (name, exc))
        self._log("sent %s to process group %d (%s)" % (signame, proc.pid, name))

    # ------------------------------------------------------------------------ output
    def _read(self, name: str) -> None:
        output = self.outputs[name]
        try:
            data = os.read(output.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(output.fd)
            output.close()
            return
        self._consume(name, output, data, time.time())
        if (
            len(data) < READ_SIZE // 2
            and not output.closed
            and not self.machine.wants_readiness(name)
            and not (output.progress is not None and self.machine.wants_progress(name))
        ):
            # Nothing to look for in this output any more: collect it in batches instead of
            # waking for every line (the pipe holds DRAIN_INTERVAL of output at full speed).
            self.selector.unregister(output.fd)
            self.paused[name] = time.time() + DRAIN_INTERVAL

    def _resume_paused(self) -> None:
        now = time.time()
        for name, at in list(self.paused.items()):
            if at <= now:
                del self.paused[name]
                output = self.outputs[name]
                if not output.closed:
                    self.selector.register(output.fd, selectors.EVENT_READ, name)
                    self._read(name)

    def _consume(self, name: str, output: Output, data: bytes, t: float) -> None:
        output.write(data)
        if self.machine.wants_readiness(name):
            line = output.scanner.feed(data)
            if line is not None:
                self._dispatch(Ready(t, name, line))
        if output.progress is not None and self.machine.wants_progress(name):
            value = output.progress.feed(data)
            if value is not None:
                self._dispatch(Progress(t, name, value))

    def _drain(self, name: str) -> None:
        output = self.outputs.get(name)
        if output is None or output.closed:
            return
        if self.paused.pop(name, None) is not None:
            self.selector.register(output.fd, selectors.EVENT_READ, name)
        while True:
            try:
                data = os.read(output.fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.selector.unregister(output.fd)
                output.close()
                return
            self._consume(name, output, data, time.time())

    def _reap(self) -> None:
        if not self.child_exited:
            return
        self.child_exited = False
        # orphans of the benchmarks re-parent to the runner (a subreaper): reap them too
        reap_orphans(keep=[proc.pid for proc in self.procs.values()])
        for name, proc in list(self.procs.items()):
            if proc.returncode is not None:
                continue
            code = proc.poll()
            if code is None:
                continue
            t = time.time()
            # Whatever the benchmark left in its process group goes with it, now: the group id
            # cannot be reused while a member lives, and later the leader's pid could be.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            self._drain(name)
            sig = None
            if code < 0:
                try:
                    sig = signal.Signals(-code).name
                except ValueError:
                    sig = "signal %d" % -code
            self._dispatch(Exited(t, name, None if sig else code, sig))

    def _fire_timers(self) -> None:
        now = time.time()
        for key, at in sorted(self.timers.items(), key=lambda item: item[1]):
            if at <= now and key in self.timers:
                del self.timers[key]
                self._dispatch(TimerFired(now, key))

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

    def release_lock(self) -> None:
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None

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
