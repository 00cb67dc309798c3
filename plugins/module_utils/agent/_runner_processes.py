# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runner's benchmark processes (runs on targets; private).

:class:`Output` is one benchmark's merged stdout/stderr pipe, its ``stdout.log`` (capped at the
plan's ``max_output_bytes``, then the last MiB) and its readiness and progress scanners.
:class:`BenchmarkProcesses` launches each benchmark in its own process group with its pipe,
signals its group, reads its output (readiness matched over whole chunks; in batches once
nothing is left to look for) and reaps it: a base of ``_hetero_runner.Runner``, which sets the
state below and owns the loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import subprocess
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_checks import (
    LineScanner,
    ProgressScanner,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    MAIN,
    Exited,
    Launched,
    LaunchFailed,
    Progress,
    Ready,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_choreo import (
    Choreography,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_containment import (
    Containment,
    reap_orphans,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    register_process,
)

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: room for DRAIN_INTERVAL of very chatty output
DRAIN_INTERVAL = 0.1
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
OUTPUT_TAIL = 1024 * 1024


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


# ------------------------------------------------------------------------------- processes
class BenchmarkProcesses:
    """Launch, signal, read and reap the benchmarks of ``Runner`` (which sets the state below)."""

    plan: Dict[str, Any]
    benchmarks: Dict[str, Dict[str, Any]]
    machine: Choreography
    containment: Containment
    selector: selectors.BaseSelector
    procs: Dict[str, subprocess.Popen[bytes]]
    outputs: Dict[str, Output]
    paused: Dict[str, float]
    patterns: Tuple[str, ...]
    progress_regex: Optional[str]
    max_output: int
    base_nice: int
    child_exited: bool
    _dispatch: Callable[[Any], None]
    _log: Callable[[str], None]

    def _in_child(self) -> None:
        """Between fork and exec of a benchmark (the runner has no threads, so this is safe)."""
        self._benchmark_priority()
        self.containment.preexec()

    def _benchmark_priority(self) -> None:
        """In the forked child, before exec: back to the runner's original nice value."""
        if os.getpriority(os.PRIO_PROCESS, 0) != self.base_nice:
            os.setpriority(os.PRIO_PROCESS, 0, self.base_nice)

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
    def _read_chunk(self, name: str, output: Output) -> bytes:
        """One read of the pipe, consumed; b"" when it would block or has ended (then closed)."""
        try:
            data = os.read(output.fd, READ_SIZE)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(output.fd)
            output.close()
            return b""
        self._consume(name, output, data, time.time())
        return data

    def _read(self, name: str) -> None:
        output = self.outputs[name]
        data = self._read_chunk(name, output)
        if not data:
            return
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
        while self._read_chunk(name, output):
            pass

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
