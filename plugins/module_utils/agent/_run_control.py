# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the ``hetero_runner`` module does with runs on a host (runs on targets; private).

Start a detached runner (``_hetero_runner``) for a plan, after the host lock and the layout
check; read and poll a run's status (renewing its lease); ask a run to stop; archive its
results for the controller. The runner itself never imports this module: it only runs the plan
it was started with.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import tarfile
import time
from typing import Any, Dict, List, Optional

from ansible_collections.heteromig.fleet.plugins.module_utils._safe_names import name_problem
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_runner import (
    RUNNER_MODULE,
    check_layout,
    validate_plan,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_containment import (
    PREVIOUS_LEFTOVERS_FILE,
    end_leftovers_of_dead_run,
    leftovers,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_files import (
    ARCHIVE_NAME,
    EXEC_SETTLE_S,
    LOCK_NAME,
    RUNS_DIR,
    STATUS_FORMAT,
    RunnerError,
    acquire_host_lock,
    lock_holder,
    pid_runs,
    read_json,
    renew_lease,
    write_json_atomic,
)


def runs_root(host_root: str) -> str:
    return os.path.join(host_root, RUNS_DIR)


def start(
    plan: Dict[str, Any],
    host_root: str,
    python: str,
    pythonpath: Optional[str],
    check_layout_first: bool = True,
    start_timeout: float = 15.0,
    wait_for_runner: bool = True,
    initial_lease_s: Optional[float] = None,
) -> Dict[str, Any]:
    """Validate ``plan``, take the host lock, check the MIG layout, spawn the detached runner.

    Returns the first status. Raises RunnerError with a clear message; nothing is left running
    or locked when it does.
    """
    problems = validate_plan(plan)
    if problems:
        raise RunnerError("the plan is not usable: " + "; ".join(problems))
    run_dir = plan["run_dir"]
    expected_dir = os.path.join(runs_root(host_root), plan["run_id"])
    if os.path.normpath(run_dir) != os.path.normpath(expected_dir):
        raise RunnerError(
            "the plan's run directory %s is not %s: a run lives in <host_root>/runs/<run_id>"
            % (run_dir, expected_dir)
        )
    if os.path.exists(os.path.join(run_dir, "plan.json")):
        raise RunnerError(
            "run %s already exists on this host (%s): use resume to re-attach to it, or a new "
            "run_id" % (plan["run_id"], run_dir)
        )
    module_path = None
    for entry in (pythonpath or "").split(os.pathsep):
        candidate = os.path.join(entry, *RUNNER_MODULE.split(".")) + ".py"
        if entry and os.path.isfile(candidate):
            module_path = candidate
            break
    if module_path is None:
        raise RunnerError(
            "the heteromig host runtime is not installed on this host: %s.py was not found "
            "under PYTHONPATH %r. Install it with the role heteromig.fleet.host_runtime (or set "
            "heteromig_host_pythonpath to where the collection's ansible_collections tree is)"
            % (RUNNER_MODULE.replace(".", "/"), pythonpath)
        )
    info = {
        "run_id": plan["run_id"],
        "run_dir": run_dir,
        "started_at": time.time(),
        "pid": None,
    }
    previous = read_json(os.path.join(host_root, LOCK_NAME))
    lock_fd = acquire_host_lock(host_root, info)
    try:
        # The lock was free, so the run that held it last has no live runner: whatever it left
        # running (its runner was SIGKILLed, say) ends now, before anything of this run starts.
        ended_before: List[Dict[str, Any]] = []
        previous_dir = previous.get("run_dir") if isinstance(previous, dict) else None
        if isinstance(previous_dir, str) and os.path.isdir(previous_dir):
            ended_before = end_leftovers_of_dead_run(previous_dir)
        if check_layout_first:
            try:
                changed = check_layout(plan)
            except Exception as exc:
                raise RunnerError("cannot check the MIG layout through NVML: %s" % exc) from exc
            if changed:
                raise RunnerError(
                    "the MIG layout changed since the controller resolved the slices; refusing "
                    "to start (re-run gpu_facts / mig_layout first): " + "; ".join(changed)
                )
        os.makedirs(run_dir, exist_ok=True)
        if ended_before:
            write_json_atomic(
                os.path.join(run_dir, PREVIOUS_LEFTOVERS_FILE),
                {"run_id": (previous or {}).get("run_id"), "ended": ended_before},
            )
        write_json_atomic(os.path.join(run_dir, "plan.json"), plan)
        lease_s = float(initial_lease_s or plan.get("lease_s") or 0)
        if lease_s > 0:
            renew_lease(run_dir, lease_s)
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + (
                os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
            )
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("ANSIBLE_MODULE_ARGS", None)
        log = os.open(
            os.path.join(run_dir, "runner.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        try:
            # the detached runner must outlive this module: run_command would wait for it
            proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
                [
                    python,
                    "-m",
                    RUNNER_MODULE,
                    "run",
                    "--run-dir",
                    run_dir,
                    "--lock-fd",
                    str(lock_fd),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=run_dir,
                env=env,
                start_new_session=True,
                pass_fds=(lock_fd,),
                close_fds=True,
            )
        except OSError as exc:
            raise RunnerError("cannot start the runner with %s: %s" % (python, exc)) from exc
        finally:
            os.close(log)
        info["pid"] = proc.pid
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, json.dumps(info, sort_keys=True).encode("utf-8"), 0)
        first = {
            "format": STATUS_FORMAT,
            "run_id": plan["run_id"],
            "seq": 0,
            "pid": proc.pid,
            "phase": "starting",
            "change": "starting",
            "done": False,
            "started_at": info["started_at"],
            "updated_at": time.time(),
            "elapsed_s": 0.0,
            "expected_duration_s": plan.get("expected_duration_s"),
            "benchmarks": {},
        }
        status_path = os.path.join(run_dir, "status.json")
        if not os.path.exists(status_path):
            write_json_atomic(status_path, first)
        # The runner is this process's child: until it is reaped its pid is its own, and poll()
        # says whether it runs. /proc may not show its command line yet (pid_seen).
        if not wait_for_runner:
            running = proc.poll() is None
            status = read_status(run_dir, alive=True if running else None)
            status["runner_alive"] = running or status.get("done", False)
            return status
        deadline = time.time() + start_timeout
        while time.time() < deadline:
            written = read_json(status_path)
            if isinstance(written, dict) and written.get("seq", 0) > 0:
                return read_status(run_dir, alive=True if proc.poll() is None else None)
            if proc.poll() is not None:
                raise RunnerError(
                    "the runner exited at once (code %s): %s"
                    % (proc.returncode, tail(os.path.join(run_dir, "runner.log")))
                )
            time.sleep(0.01)
        raise RunnerError(
            "the runner (pid %d) wrote no status within %.0f s: %s"
            % (proc.pid, start_timeout, tail(os.path.join(run_dir, "runner.log")))
        )
    finally:
        os.close(lock_fd)


def tail(path: str, size: int = 2000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no %s)" % path


def find_run(host_root: str, run_id: Optional[str]) -> Optional[str]:
    """The run directory of ``run_id``; without one, the running run, else the newest.

    Raises RunnerError for a run id that is not a safe name (``..``, a path, a newline).
    """
    root = runs_root(host_root)
    if run_id is not None:
        problem = name_problem(run_id, "run_id")
        if problem:
            raise RunnerError(problem)
    if run_id:
        path = os.path.join(root, run_id)
        return path if os.path.isdir(path) else None
    holder = lock_holder(host_root)
    if holder and isinstance(holder.get("run_dir"), str):
        return holder["run_dir"]
    try:
        entries = [os.path.join(root, e) for e in os.listdir(root)]
    except OSError:
        return None
    runs = [e for e in entries if os.path.isfile(os.path.join(e, "plan.json"))]
    return max(runs, key=os.path.getmtime) if runs else None


def read_status(run_dir: str, alive: Optional[bool] = None) -> Dict[str, Any]:
    """The run's status, with ``runner_alive``; a dead runner without a result is 'lost'.

    ``alive``: whether the runner runs, from a caller that knows (its parent); else /proc says.
    """
    status = read_json(os.path.join(run_dir, "status.json"))
    if not isinstance(status, dict):
        plan = read_json(os.path.join(run_dir, "plan.json")) or {}
        status = {
            "format": STATUS_FORMAT,
            "run_id": plan.get("run_id"),
            "seq": 0,
            "phase": "starting",
            "done": False,
            "pid": None,
        }
    if alive is None:
        alive = pid_runs(status.get("pid"), run_dir, settle=EXEC_SETTLE_S)
    status["runner_alive"] = alive
    if not alive and not status.get("done"):
        # the runner died without finishing (host rebooted, killed): say so
        time.sleep(0.05)
        again = read_json(os.path.join(run_dir, "status.json"))
        if isinstance(again, dict) and again.get("done"):
            again["runner_alive"] = False
            return again
        status["phase"] = "lost"
        status["runner_log_tail"] = tail(os.path.join(run_dir, "runner.log"))
        # nothing of a run outlives its runner: end what it left, and say what that was
        end_leftovers_of_dead_run(run_dir)
    ended = leftovers(run_dir)
    if ended:
        status["ended_processes"] = ended
    return status


def poll_status(
    run_dir: str,
    since: Optional[int],
    wait: float,
    lease_s: float,
    since_change: Optional[str] = None,
) -> Dict[str, Any]:
    """Renew the lease, then return the status once it changed (or after ``wait`` seconds).

    With ``since_change`` only a change a watcher must hear about counts (phase, readiness,
    failures, the end; not the heartbeat); otherwise any ``seq`` after ``since``.
    """
    if lease_s > 0:
        current = read_json(os.path.join(run_dir, "status.json")) or {}
        if not current.get("done"):
            renew_lease(run_dir, lease_s)
    deadline = time.time() + max(0.0, wait)
    path = os.path.join(run_dir, "status.json")
    last_mtime = None
    while True:
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            mtime = None
        if mtime != last_mtime:
            last_mtime = mtime
            status = read_status(run_dir)
            if since_change is not None:
                changed = status.get("change") != since_change
            else:
                changed = since is None or status.get("seq", 0) > since
            if changed or status.get("done") or not status.get("runner_alive"):
                return status
        if time.time() >= deadline:
            return read_status(run_dir)
        time.sleep(0.02)


def request_stop(run_dir: str, reason: str) -> Dict[str, Any]:
    write_json_atomic(os.path.join(run_dir, "stop"), {"reason": reason, "at": time.time()})
    status = read_status(run_dir)
    if status.get("runner_alive") and status.get("pid"):
        with contextlib.suppress(OSError):
            os.kill(int(status["pid"]), signal.SIGTERM)
    return status


def archive_inline(run_dir: str, limit: int) -> Dict[str, Any]:
    """``archive`` plus the archive's bytes (base64) when it is at most ``limit`` bytes."""
    packed = archive(run_dir)
    if packed["archive_size"] <= limit:
        with open(packed["archive"], "rb") as handle:
            packed["archive_b64"] = base64.b64encode(handle.read()).decode("ascii")
    return packed


def archive(run_dir: str) -> Dict[str, Any]:
    """Pack the run directory (logs, LoadGen files, status, result) for one fetch."""
    path = os.path.join(run_dir, ARCHIVE_NAME)
    files = []
    tmp = "%s.tmp.%d" % (path, os.getpid())  # two collectors at once (a resumed controller and
    # an orphaned long poll of the old one) must not trip over each other
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
            for directory, dirs, names in os.walk(run_dir):
                dirs.sort()
                for name in sorted(names):
                    full = os.path.join(directory, name)
                    rel = os.path.relpath(full, run_dir)
                    if rel in (ARCHIVE_NAME, "lease") or ".tmp." in name:
                        continue
                    if not os.path.isfile(full) or os.path.islink(full):
                        continue
                    tar.add(full, arcname=rel, recursive=False)
                    files.append({"path": rel, "size": os.path.getsize(full)})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a failed pack leaves no half archive behind
        raise
    return {"archive": path, "archive_size": os.path.getsize(path), "files": files}
