"""No process of a run outlives it (plugins/module_utils/agent/_run_containment.py), with real processes.

Both containment methods this machine offers are exercised: cgroup v2 (``cgroup.kill``) and the
subreaper with parent-death signals (``HETEROMIG_CONTAINMENT=subreaper``). What "outlives" means
is read from /proc, independently of the code under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_contract as C
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_control as RC
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_containment import (
    cgroup2_mount,
    end_leftovers_of_dead_run,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAKE = str(ROOT / "tests" / "fixtures" / "hetero" / "fake_bench.py")
PYTHONPATH = str(ROOT / "collections")
CHOREO = {
    "background_start_timeout": 30.0,
    "start_time_buffer": 0.2,
    "stop_grace": 3.0,
    "kill_grace": 3.0,
    "end_time_buffer_min": 0.0,
}
METHODS = ["cgroup", "subreaper"]


def alive(pid: int) -> bool:
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def pids_with(text: str, prefix: bool = False) -> list[int]:
    """Live processes whose command line contains (or, with ``prefix``, starts with) ``text``.

    Read from /proc, not through the code under test.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                )
            except OSError:
                continue
            hit = cmd.startswith(text) if prefix else text in cmd
            if hit and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.02)


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "cgroup":
        if cgroup2_mount() is None:
            pytest.skip("no cgroup2 hierarchy on this machine")
        monkeypatch.delenv("HETEROMIG_CONTAINMENT", raising=False)
    else:
        monkeypatch.setenv("HETEROMIG_CONTAINMENT", "subreaper")
    return str(request.param)


@pytest.fixture
def host_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "host"
    yield root
    for pid in pids_with(str(root)):  # never leave a process behind, whatever the test did
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def plan(host_root: Path, run_id: str, main: list[str], backgrounds: list[list[str]]) -> dict:
    run_dir = str(host_root / "runs" / run_id)

    def bench(name: str, role: str, argv: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "role": role,
            "benchmark": "fake-" + name,
            "scenario": "Offline",
            "action": "run_harness",
            "mode": "PerformanceOnly",
            "slice": {"uuid": "MIG-fake-" + name},
            "argv": argv,
            "env": {"CUDA_VISIBLE_DEVICES": "MIG-fake-" + name},
            "log_dir": os.path.join(run_dir, name),
        }

    benches = [bench("main", "main", main)]
    benches += [bench("bg-%d" % (i + 1), "background", b) for i, b in enumerate(backgrounds)]
    return {
        "format": C.PLAN_FORMAT,
        "version": C.PLAN_VERSION,
        "run_id": run_id,
        "run_dir": run_dir,
        "benchmarks": benches,
        "choreography": dict(CHOREO),
        "lease_s": 30.0,
        "expected_duration_s": 2.0,
    }


def fake(log_dir_of: str, *extra: str) -> list[str]:
    return [sys.executable, FAKE, "--log-dir", log_dir_of, *extra]


def escaping(log_dir_of: str, marker: str, *extra: str) -> list[str]:
    """A benchmark that first double-forks a sleeper into a new session (setsid), then runs."""
    script = (
        "setsid sh -c 'exec sleep 600 %s' </dev/null >/dev/null 2>&1 & exec %s %s --log-dir %s %s"
        % (marker, sys.executable, FAKE, log_dir_of, " ".join(extra))
    )
    return ["sh", "-c", script]


def assert_no_cgroup_left(run_dir: Path) -> None:
    """The run's cgroup (if it had one) is gone: an empty cgroup left per run would pile up."""
    record = json.loads((run_dir / "containment.json").read_text())
    if record["cgroup"]:
        assert not os.path.exists(record["cgroup"]), "cgroup %s left behind" % record["cgroup"]


def start(host_root: Path, the_plan: dict) -> dict[str, Any]:
    return RC.start(the_plan, str(host_root), sys.executable, PYTHONPATH, check_layout_first=False)


def finish(the_plan: dict, timeout: float = 60.0) -> dict[str, Any]:
    status: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = RC.poll_status(the_plan["run_dir"], status.get("seq"), 1.0, 30.0)
        if status.get("done") or not status.get("runner_alive"):
            break
    assert status.get("done"), status
    wait_for(lambda: not alive(int(status["pid"])), 20, "the runner to exit")
    return status["result"]


def test_a_double_forked_session_escapee_is_ended_and_named(host_root: Path, method: str) -> None:
    marker = "11.%d" % os.getpid()  # "sleep 600 11.<pid>": unique in this machine's process list
    run_dir = host_root / "runs" / "escape"
    the_plan = plan(
        host_root,
        "escape",
        fake(str(run_dir / "main"), "--duration-ms", "800"),
        [escaping(str(run_dir / "bg-1"), marker, "--duration-ms", "600000")],
    )
    start(host_root, the_plan)
    wait_for(
        lambda: pids_with("sleep 600 " + marker, prefix=True), 30, "the escaped sleeper to start"
    )
    escaped = pids_with("sleep 600 " + marker, prefix=True)[0]
    assert os.getsid(escaped) == escaped, "the sleeper must be in a session of its own"
    result = finish(the_plan)
    assert pids_with("sleep 600 " + marker, prefix=True) == [], "a process of the run outlived it"
    assert result["containment"] == method
    assert [e["pid"] for e in result["ended_processes"]] == [escaped]
    assert result["ended_processes"][0]["benchmark"] == "bg-1"
    assert any("pid %d" % escaped in w and "bg-1" in w for w in result["warnings"]), result
    assert pids_with(str(host_root)) == []
    assert_no_cgroup_left(run_dir)


def test_a_sigkilled_runner_leaves_nothing_running_and_the_next_start_says_so(
    host_root: Path, method: str
) -> None:
    marker = "12.%d" % os.getpid()
    run_dir = host_root / "runs" / "killed"
    the_plan = plan(
        host_root,
        "killed",
        fake(str(run_dir / "main"), "--duration-ms", "600000"),
        [
            escaping(str(run_dir / "bg-1"), marker, "--duration-ms", "600000"),
            fake(str(run_dir / "bg-2"), "--duration-ms", "600000"),
        ],
    )
    first = start(host_root, the_plan)
    runner = int(first["pid"])
    wait_for(
        lambda: (
            (RC.read_status(the_plan["run_dir"]).get("benchmarks") or {}).get("main", {}).get("pid")
        ),
        30,
        "the main benchmark to launch",
    )
    wait_for(lambda: pids_with("sleep 600 " + marker, prefix=True), 30, "the escaped sleeper")
    sleeper = pids_with("sleep 600 " + marker, prefix=True)[0]
    benchmarks = pids_with(the_plan["run_dir"])
    assert len(benchmarks) >= 3, benchmarks
    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: not alive(runner), 10, "the runner to die")

    status = RC.read_status(the_plan["run_dir"])  # what a status call of the controller sees
    assert status["phase"] == "lost" and status["runner_alive"] is False
    wait_for(lambda: pids_with(the_plan["run_dir"]) == [], 10, "every benchmark to be gone")
    assert not alive(sleeper)
    # The benchmarks the runner started died with it (parent-death signal); the sleeper, in a
    # session of its own and not the runner's child, was ended by the status call, which says so.
    ended = {e["pid"] for e in status.get("ended_processes") or []}
    assert sleeper in ended, status.get("ended_processes")
    leftovers = json.loads((run_dir / "leftovers.json").read_text())
    assert {e["pid"] for e in leftovers} == ended
    assert_no_cgroup_left(run_dir)

    second = plan(
        host_root, "next", fake(str(host_root / "runs/next/main"), "--duration-ms", "300"), []
    )
    start(host_root, second)
    result = finish(second)
    assert result["verdict"] == "VALID", result["reasons"]
    assert pids_with(str(host_root)) == []


def test_the_next_start_ends_what_a_dead_runner_left_and_the_new_result_names_it(
    host_root: Path, method: str
) -> None:
    marker = "13.%d" % os.getpid()
    run_dir = host_root / "runs" / "dead"
    the_plan = plan(
        host_root,
        "dead",
        fake(str(run_dir / "main"), "--duration-ms", "600000"),
        [escaping(str(run_dir / "bg-1"), marker, "--duration-ms", "600000")],
    )
    runner = int(start(host_root, the_plan)["pid"])
    wait_for(lambda: pids_with("sleep 600 " + marker, prefix=True), 30, "the escaped sleeper")
    sleeper = pids_with("sleep 600 " + marker, prefix=True)[0]
    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: not alive(runner), 10, "the runner to die")
    assert alive(sleeper), "nothing but the next start may have ended it yet"

    second = plan(
        host_root, "after", fake(str(host_root / "runs/after/main"), "--duration-ms", "300"), []
    )
    start(host_root, second)
    assert not alive(sleeper), "the next run started beside a process of the dead run"
    result = finish(second)
    warning = next(w for w in result["warnings"] if w.startswith("before this run started"))
    assert "run dead" in warning and "pid %d" % sleeper in warning, warning
    assert pids_with(str(host_root)) == []


def test_a_stopped_run_leaves_no_process_and_no_cgroup(host_root: Path, method: str) -> None:
    """The stop path (SIGTERM, then SIGKILL after the grace) ends in an empty, removed cgroup."""
    run_dir = host_root / "runs" / "stopped"
    the_plan = plan(
        host_root,
        "stopped",
        fake(str(run_dir / "main"), "--duration-ms", "600000"),
        [fake(str(run_dir / "bg-1"), "--duration-ms", "600000", "--ignore-term")],
    )
    start(host_root, the_plan)
    wait_for(
        lambda: (
            (RC.read_status(the_plan["run_dir"]).get("benchmarks") or {}).get("main", {}).get("pid")
        ),
        30,
        "the main benchmark to launch",
    )
    RC.request_stop(the_plan["run_dir"], "stopped by the test")
    result = finish(the_plan)
    assert result["verdict"] == "INVALID" and result["reasons"] == ["stopped by the test"]
    assert pids_with(str(host_root)) == []
    assert_no_cgroup_left(run_dir)


def cgroup2_of(pid: int) -> str:
    """The process's cgroup in the v2 hierarchy, from /proc/<pid>/cgroup."""
    lines = Path("/proc/%d/cgroup" % pid).read_text().splitlines()
    return next(line[3:] for line in lines if line.startswith("0::"))


def test_ending_what_a_run_left_never_ends_its_runner(host_root: Path, method: str) -> None:
    """Issue 16: a start that gets the host lock ends what the run before it left, taking its
    runner for gone; but a runner frees the lock before it writes its done status, so a start
    in between finds it still running. What that cleanup ends (the run's marker, its cgroup)
    must never take the runner itself, or the run it just finished is lost."""
    run_dir = host_root / "runs" / "window"
    the_plan = plan(host_root, "window", fake(str(run_dir / "main"), "--duration-ms", "600000"), [])
    runner = int(start(host_root, the_plan)["pid"])
    wait_for(lambda: pids_with(str(run_dir / "main")), 30, "the main benchmark to launch")
    main = pids_with(str(run_dir / "main"))[0]
    # read from /proc, not through the code under test: the runner carries no marker of the
    # run, and it is not in the run's cgroup (the benchmark is)
    assert b"HETEROMIG_RUN_DIR=" not in Path("/proc/%d/environ" % runner).read_bytes()
    assert b"HETEROMIG_RUN_DIR=" in Path("/proc/%d/environ" % main).read_bytes()
    cgroup = json.loads((run_dir / "containment.json").read_text())["cgroup"]
    assert (cgroup is not None) == (method == "cgroup")
    if cgroup is not None:
        leaf = "/" + os.path.basename(cgroup)
        assert cgroup2_of(main).endswith(leaf) and not cgroup2_of(runner).endswith(leaf)

    ended = end_leftovers_of_dead_run(str(run_dir))  # what the next start does
    assert main in {e["pid"] for e in ended} and runner not in {e["pid"] for e in ended}
    wait_for(lambda: not alive(main), 10, "the main benchmark to be ended")
    assert alive(runner), "the cleanup of the run ended its runner"
    result = finish(the_plan)  # the runner still writes its verdict
    assert result["reasons"][0] == "the main benchmark was killed by SIGKILL", result["reasons"]
    assert pids_with(str(host_root)) == []
