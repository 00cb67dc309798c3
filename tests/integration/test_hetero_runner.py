"""The host runner (plugins/module_utils/agent/_hetero_runner.py) with real processes, no Ansible:
tests/fixtures/hetero/fake_bench.py under the real LoadGen, every fault, the lease, the lock."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _hetero_runner as R
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_contract as C
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_control as RC
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_files as RF
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host
from ansible_collections.heteromig.fleet.plugins.plugin_utils._agent_transport import AGENT_COMMANDS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAKE = str(ROOT / "tests" / "fixtures" / "hetero" / "fake_bench.py")
PYTHONPATH = str(ROOT / "collections")
LEASE_S = 5.0  # long enough that a loaded 2-core machine renews it in time
FAST = {
    "background_start_timeout": 20.0,
    "start_time_buffer": 0.3,
    "stop_grace": 2.0,
    "kill_grace": 2.0,
    "end_time_buffer_min": 0.5,
}


def _alive(pid: int) -> bool:
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def nice(pid: int) -> int:
    return int(Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[16])


class Host:
    """A host root in tmp_path and the runs started in it; kills leftovers at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs: list[str] = []

    def plan(
        self,
        run_id: str,
        main: list[str],
        backgrounds: list[list[str]],
        lease_s: float = 30.0,
        **choreo: Any,
    ) -> dict[str, Any]:
        run_dir = str(self.root / "runs" / run_id)

        def bench(name: str, role: str, extra: list[str]) -> dict[str, Any]:
            log_dir = os.path.join(run_dir, name)
            return {
                "name": name,
                "role": role,
                "benchmark": "fake-" + name,
                "scenario": "Offline",
                "action": "run_harness",
                "slice": {"uuid": "MIG-fake-" + name},
                "argv": [sys.executable, FAKE, "--log-dir", log_dir, *extra],
                "env": {"CUDA_VISIBLE_DEVICES": "MIG-fake-" + name},
                "log_dir": log_dir,
            }

        benches = [bench("main", "main", main)]
        benches += [bench("bg-%d" % (i + 1), "background", b) for i, b in enumerate(backgrounds)]
        return {
            "format": C.PLAN_FORMAT,
            "version": C.PLAN_VERSION,
            "run_id": run_id,
            "run_dir": run_dir,
            "benchmarks": benches,
            "choreography": dict(FAST, **choreo),
            "lease_s": lease_s,
            "expected_duration_s": 2.0,
        }

    def start(self, plan: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.runs.append(plan["run_dir"])
        return RC.start(
            plan,
            str(self.root),
            kwargs.pop("python", sys.executable),
            PYTHONPATH,
            check_layout_first=kwargs.pop("check_layout_first", False),
            **kwargs,
        )

    def wait(
        self, plan: dict[str, Any], timeout: float = 40.0, renew: float = 0.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            # a poll renews the lease when it starts: wait well under the lease, as hetero_run does
            wait = renew / 3 if renew else 1.0
            status = RC.poll_status(plan["run_dir"], status.get("seq"), wait, renew)
            if status.get("done") or not status.get("runner_alive"):
                break
        assert status.get("done"), status
        pid = status["pid"]
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid), "the runner did not exit"
        assert pids_mentioning(plan["run_dir"]) == [], "benchmark processes outlived the run"
        return status["result"]

    def cleanup(self) -> None:
        for run_dir in self.runs:
            for pid in pids_mentioning(run_dir):
                os.kill(pid, 9)


def wait_until(
    plan: dict[str, Any],
    reached: Callable[[dict[str, Any]], bool],
    timeout: float = 60.0,
    lease_s: float = 0.0,
) -> dict[str, Any]:
    """Poll the run's status (renewing a lease of ``lease_s``) until ``reached`` says so.

    Fails at ``timeout``, or at once when the runner is gone without having reached it.
    """
    deadline = time.monotonic() + timeout
    status = RC.poll_status(plan["run_dir"], None, 0.0, lease_s)
    while not reached(status):
        assert status.get("runner_alive"), ("the run ended first", status)
        assert time.monotonic() < deadline, ("not reached within %.0f s" % timeout, status)
        status = RC.poll_status(plan["run_dir"], status.get("seq"), 0.5, lease_s)
    return status


def main_running(status: dict[str, Any]) -> bool:
    return status.get("phase") == "main_running" and status.get("main_launched_at") is not None


# A background that is ready at once and crashes (exit 4, as fake_bench --crash-after does) only
# when the test creates the trigger file: the crash happens while the main runs by construction,
# not because a timer happened to beat the main's launch.
CRASH_ON_TRIGGER = """
import os, sys, time
log_dir, trigger = sys.argv[1], sys.argv[2]
os.makedirs(log_dir, exist_ok=True)
print("[I] warming up", flush=True)
print("[I] ts=%.6f running actual test." % time.time(), flush=True)
while not os.path.exists(trigger):
    time.sleep(0.02)
print("[E] CUDA error: an illegal memory access was encountered", flush=True)
sys.exit(4)
"""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = Host(tmp_path / "host")
    yield h
    h.cleanup()


def reasons(result: dict[str, Any]) -> str:
    return " | ".join(result["reasons"])


def bench(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(b for b in result["benchmarks"] if b["name"] == name)


# ----------------------------------------------------------------------------------- runs
def test_valid_run_with_real_loadgen(host: Host) -> None:
    plan = host.plan("ok", ["--duration-ms", "1000"], [["--duration-ms", "600000"]] * 2)
    first = host.start(plan)
    assert first["phase"] in ("starting_backgrounds", "start_buffer") and first["runner_alive"]
    runner_pid = first["pid"]
    assert os.getsid(runner_pid) == runner_pid  # its own session: survives the SSH session
    assert os.readlink("/proc/%d/fd/0" % runner_pid) == "/dev/null"
    holder = RF.lock_holder(str(host.root))
    assert holder is not None and (holder["run_id"], holder["pid"]) == ("ok", runner_pid)
    # the runner raises its own priority where it may (root here); benchmarks keep the original
    status = wait_until(plan, lambda s: bool((s["benchmarks"].get("bg-2") or {}).get("pid")))
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    if os.geteuid() == 0:
        assert nice(runner_pid) == min(ours, R.RUNNER_NICE)
    assert nice(status["benchmarks"]["bg-2"]["pid"]) == ours

    result = host.wait(plan)
    assert result["verdict"] == "VALID", reasons(result)
    main = bench(result, "main")
    assert main["exit_code"] == 0 and main["loadgen"]["result_validity"] == "VALID"
    assert main["loadgen"]["metric"]["name"] == "samples_per_second"
    assert main["timed_window"]["source"] == "power_begin/power_end"
    for name in ("bg-1", "bg-2"):
        bg = bench(result, name)
        assert bg["signal"] == "SIGTERM" and bg["stopped_by_runner"]
        assert bg["timed_window"]["begin"] <= main["timed_window"]["begin"]
        assert bg["timed_window"]["end"] >= main["timed_window"]["end"]
        log = Path(bg["log_dir"], "stdout.log").read_text()
        assert "[I] device MIG-fake-%s" % name in log  # CUDA_VISIBLE_DEVICES per slice
    assert RF.lock_holder(str(host.root)) is None  # released with the runner
    run_dir = Path(plan["run_dir"])
    assert json.loads((run_dir / "result.json").read_text())["verdict"] == "VALID"
    events = [(e["event"], e["benchmark"]) for e in result["timeline"]]
    assert events.index(("ready", "bg-2")) < events.index(("launch", "main"))
    assert events.index(("exit", "main")) < events.index(("kill", "bg-1"))

    packed = RC.archive(plan["run_dir"])
    paths = {f["path"] for f in packed["files"]}
    assert {
        "plan.json",
        "status.json",
        "result.json",
        "runner.log",
        "main/stdout.log",
        "main/mlperf_log_detail.txt",
        "bg-1/stdout.log",
    } <= paths
    with tarfile.open(packed["archive"]) as tar:
        assert set(tar.getnames()) == paths


def test_background_crash_before_ready(host: Host) -> None:
    plan = host.plan(
        "crash-early",
        ["--duration-ms", "1000"],
        [["--duration-ms", "600000"], ["--crash-in-warmup"]],
    )
    host.start(plan)
    result = host.wait(plan)
    assert result["verdict"] == "INVALID"
    assert result["reasons"][0] == "bg-2 (fake-bg-2) exited with code 3 before it was ready"
    assert bench(result, "main")["launched_at"] is None
    assert bench(result, "bg-1")["signal"] == "SIGTERM"


def test_background_that_hangs_is_stopped_at_the_deadline(host: Host) -> None:
    plan = host.plan(
        "hang", ["--duration-ms", "1000"], [["--no-marker"]], background_start_timeout=1.0
    )
    host.start(plan)
    result = host.wait(plan)
    assert result["verdict"] == "INVALID"
    assert result["reasons"][0].startswith(
        "bg-1 (fake-bg-1) did not reach its timed phase within 1.0 s"
    )
    assert bench(result, "bg-1")["signal"] == "SIGTERM"


def test_background_crash_after_the_main_started(host: Host) -> None:
    plan = host.plan(
        "crash-late",
        ["--duration-ms", "600000"],
        [["--duration-ms", "600000"], []],
    )
    crasher = plan["benchmarks"][2]
    trigger = host.root / "crash-late.trigger"
    crasher["argv"] = [sys.executable, "-c", CRASH_ON_TRIGGER, crasher["log_dir"], str(trigger)]
    host.start(plan)
    wait_until(plan, main_running)
    trigger.touch()
    result = host.wait(plan)
    # one reason: the main's stop and its missing LoadGen result follow from it
    assert result["reasons"] == [
        "bg-2 (fake-bg-2) exited with code 4 while the main benchmark was running"
    ]
    assert bench(result, "main")["stopped_by_runner"]


def test_a_hung_main_is_stopped_at_its_timeout_with_one_reason(host: Host) -> None:
    """A main that reached its timed phase and then runs on (600 s of LoadGen here) is stopped
    at main_timeout from its launch; the backgrounds, stopped with it, give no false reason."""
    plan = host.plan(
        "hung",
        ["--duration-ms", "600000"],
        [["--duration-ms", "600000"], ["--duration-ms", "600000"]],
        main_timeout=3.0,
    )
    host.start(plan)
    result = host.wait(plan)
    assert result["reasons"] == [
        "the main benchmark was still running 3.0 s after its launch (main_benchmark_timeout): "
        "it hung, or runs far longer than its min_duration; the run was stopped"
    ]
    main = bench(result, "main")
    assert main["stopped_by_runner"] and main["ready_at"] is not None
    assert 3.0 <= main["ended_at"] - main["launched_at"] < 3.0 + FAST["stop_grace"] + 2.0


def test_main_crash(host: Host) -> None:
    plan = host.plan("main-crash", ["--crash-in-warmup"], [["--duration-ms", "600000"]])
    host.start(plan)
    result = host.wait(plan)
    assert result["reasons"][0] == "the main benchmark exited with code 3"
    assert bench(result, "bg-1")["signal"] == "SIGTERM"


def test_main_result_invalid(host: Host) -> None:
    plan = host.plan(
        "main-invalid",
        ["--duration-ms", "500", "--fake-result", "INVALID"],
        [["--duration-ms", "600000"]],
    )
    host.start(plan)
    result = host.wait(plan)
    assert result["reasons"] == [
        "the main benchmark's LoadGen result is INVALID: min duration not satisfied; Reduce target QPS."
    ]


def test_background_finishing_too_early_in_wait_mode(host: Host) -> None:
    # the background ends 8 s after it is ready, the main about 1.5 s after that (its start,
    # 0.2 s warm-up, 1 s): 6 s apart, well inside the 30 s buffer and with 6 s to spare for a
    # slow main start on a loaded machine
    plan = host.plan(
        "too-early",
        ["--duration-ms", "1000", "--fake-result", "VALID"],
        [["--duration-ms", "8000", "--fake-result", "VALID", "--warmup", "0"]],
        background_mode="wait",
        end_time_buffer_min=30.0,
        start_time_buffer=0.0,
    )
    host.start(plan)
    result = host.wait(plan)
    assert re.search(
        r"^bg-1 \(fake-bg-1\) finished too early: [0-9.]+ s after the main benchmark",
        result["reasons"][0],
    ), result["reasons"]


def test_sigterm_ignored_means_sigkill_after_the_grace(host: Host) -> None:
    plan = host.plan(
        "stubborn",
        ["--duration-ms", "500", "--fake-result", "VALID"],
        [["--duration-ms", "600000", "--ignore-term", "--chatter", "10"]],
        stop_grace=0.5,
    )
    host.start(plan)
    result = host.wait(plan)
    assert result["verdict"] == "VALID", reasons(result)
    assert bench(result, "bg-1")["signal"] == "SIGKILL"
    kills = [e["detail"] for e in result["timeline"] if e["event"] == "kill"]
    assert kills[0] == "SIGTERM" and kills[1].startswith(
        "SIGKILL: still running 0.5 s after SIGTERM"
    )


def test_lease_expiry_stops_every_benchmark(host: Host) -> None:
    plan = host.plan(
        "lease", ["--duration-ms", "600000"], [["--duration-ms", "600000"]], lease_s=LEASE_S
    )
    host.start(plan)
    # the controller renews the lease until the main runs...
    wait_until(plan, main_running, lease_s=LEASE_S)
    lease = json.loads(Path(plan["run_dir"], "lease").read_text())
    result = host.wait(plan, timeout=LEASE_S + 40)  # ...then goes away
    assert result["finished_at"] >= lease["expires_at"]  # not a moment before the last lease
    assert result["reasons"][0].startswith("the controller's lease expired at ")
    assert result["stop_reason"] == result["reasons"][0]
    assert {bench(result, n)["signal"] for n in ("main", "bg-1")} == {"SIGTERM"}


def test_renewed_lease_keeps_the_run_going(host: Host) -> None:
    # the main runs for longer than the lease: only the renewals keep the run alive
    plan = host.plan(
        "renewed",
        ["--duration-ms", "%d" % (LEASE_S * 1000 + 3000)],
        [["--duration-ms", "600000"]],
        lease_s=LEASE_S,
    )
    first = host.start(plan)
    result = host.wait(plan, timeout=LEASE_S + 60, renew=LEASE_S)  # every status poll renews it
    assert result["verdict"] == "VALID", reasons(result)
    assert bench(result, "main")["ended_at"] > first["started_at"] + LEASE_S


def test_stop_request(host: Host) -> None:
    plan = host.plan("stop", ["--duration-ms", "600000"], [["--duration-ms", "600000"]])
    host.start(plan)
    wait_until(plan, main_running)
    RC.request_stop(plan["run_dir"], "stopped by the test")
    result = host.wait(plan)
    assert result["reasons"][0] == "stopped by the test"


def test_one_run_per_host(host: Host) -> None:
    first = host.plan("first", ["--duration-ms", "600000"], [])
    host.start(first)
    second = host.plan("second", ["--duration-ms", "1000"], [])
    with pytest.raises(
        RF.RunnerError,
        match=r"another hetero run is in progress on this host: run first \(runner pid \d+",
    ):
        host.start(second)
    assert not Path(second["run_dir"]).exists()  # nothing was written for it
    with pytest.raises(RF.RunnerError, match="run first already exists on this host"):
        host.start(host.plan("first", ["--duration-ms", "1"], []))
    RC.request_stop(first["run_dir"], "done testing")
    host.wait(first)


def test_output_is_capped_and_chatty_markers_are_still_found(host: Host) -> None:
    plan = host.plan(
        "chatty",
        ["--duration-ms", "800", "--fake-result", "VALID"],
        [["--duration-ms", "600000", "--chatter", "20000"]],
    )
    plan["max_output_bytes"] = 4096
    host.start(plan)
    result = host.wait(plan)
    assert result["verdict"] == "VALID", reasons(result)
    log = Path(bench(result, "bg-1")["log_dir"], "stdout.log").read_text()
    assert "bytes of output not logged (max_output_bytes 4096)" in log
    assert bench(result, "bg-1")["output_bytes"] > 4096


def test_unusable_plans_and_missing_runtime(host: Host) -> None:
    plan = host.plan("bad", ["--duration-ms", "1"], [])
    with pytest.raises(RF.RunnerError, match="host runtime is not installed on this host"):
        RC.start(
            plan, str(host.root), sys.executable, str(host.root / "lib"), check_layout_first=False
        )
    broken = dict(plan, version=99)
    with pytest.raises(RF.RunnerError, match="controller and host runtime versions differ"):
        host.start(broken)
    broken = dict(plan, choreography={"stop_grace": -1})
    with pytest.raises(RF.RunnerError, match="stop_grace must not be negative"):
        host.start(broken)
    broken = dict(plan, benchmarks=[dict(plan["benchmarks"][0], argv="make run")])
    with pytest.raises(RF.RunnerError, match="main: argv must be a non-empty list of strings"):
        host.start(broken)
    assert RF.lock_holder(str(host.root)) is None


def test_mig_layout_change_is_refused(host: Host, tmp_path: Path) -> None:
    import pynvml

    state = str(tmp_path / "nvml-sim.json")
    backend = open_backend("sim", state, "1xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    for _slice in range(2):
        nvml.nvmlGpuInstanceCreateComputeInstance(nvml.nvmlDeviceCreateGpuInstance(handle, 19), 0)
    devices = read_host(nvml)["mig_devices"]
    backend.close()
    plan = host.plan(
        "layout", ["--duration-ms", "1000", "--fake-result", "VALID"], [["--duration-ms", "600000"]]
    )
    plan["backend"] = {"name": "sim", "sim_state": state}
    for entry, device in zip(plan["benchmarks"], devices, strict=True):
        entry["slice"] = {
            k: device[k]
            for k in ("uuid", "gpu_index", "gpu_instance_id", "compute_instance_id", "profile")
        }
    changed = json.loads(json.dumps(plan))
    changed["benchmarks"][1]["slice"]["uuid"] = "MIG-00000000-gone"
    changed["benchmarks"][0]["slice"]["profile"] = "2g.20gb"
    with pytest.raises(
        RF.RunnerError,
        match=r"the MIG layout changed .*main: MIG device .* now has profile "
        r"'1g.10gb' \(the controller saw '2g.20gb'\); bg-1: MIG device "
        r"MIG-00000000-gone no longer exists",
    ):
        host.start(changed, check_layout_first=True)

    # unchanged: it runs, and the simulator sees the benchmarks on their MIG devices
    host.start(plan, check_layout_first=True)
    deadline = time.monotonic() + 60
    seen: set[str] = set()
    while time.monotonic() < deadline and len(seen) < 2:
        backend = open_backend("sim", state)
        procs = [p for g in read_host(backend.nvml)["gpus"] for p in g["processes"]]
        backend.close()
        seen |= {p["mig_uuid"] for p in procs}
        time.sleep(0.1)
    assert seen == {d["uuid"] for d in devices}
    assert host.wait(plan)["verdict"] == "VALID"


def test_children_left_in_a_benchmark_process_group_are_killed(host: Host) -> None:
    """A benchmark that leaves a child behind (make's recipe, a helper): the child goes too."""
    plan = host.plan("leftover", ["--duration-ms", "500", "--fake-result", "VALID"], [])
    main = plan["benchmarks"][0]
    straggler = "%s -c 'import time; time.sleep(300)' %s" % (sys.executable, plan["run_dir"])
    main["argv"] = ["sh", "-c", '%s & exec "$@"' % straggler, "sh", *main["argv"]]
    host.start(plan)
    result = host.wait(plan)  # asserts that nothing naming the run directory is left
    assert result["verdict"] == "VALID", reasons(result)


# A stand-in for the host's Python that holds the runner where the kernel puts every new
# process for a moment: alive, but with no command line in /proc yet. Popen returns when the
# exec closes the close-on-exec pipe, before the new program's arguments are laid out; right
# after Popen, 232 of 300 reads of /proc/<pid>/cmdline were empty (2 cores, load 4), and a
# read 1 ms later still found none in 6 of 500 spawns at load 24.
# The stand-in blanks its own arguments (through /proc/self/mem), says so, waits for the test's
# go, then execs the real Python with them.
EXEC_WINDOW = r"""
import os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
stat = open("/proc/self/stat", "rb").read()
fields = stat[stat.rindex(b")") + 2 :].split()
arg_start, arg_end = int(fields[45]), int(fields[46])  # proc(5): fields 48 and 49
with open("/proc/self/mem", "r+b", buffering=0) as mem:
    mem.seek(arg_start)
    mem.write(b"\0" * (arg_end - arg_start))
open(os.path.join(here, "blank"), "w").close()
deadline = time.time() + 60
while not os.path.exists(os.path.join(here, "go")) and time.time() < deadline:
    time.sleep(0.01)
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
"""


def test_a_runner_still_in_its_exec_is_not_taken_for_dead(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: hetero_run said "the runner ... died before the run finished and wrote no
    result" of runs that went on to finish. The start's own status read (hetero_runner
    command=start) came while the new runner showed no command line, so it took the runner for
    dead and said ``lost``, and the watch ended there."""
    launcher = tmp_path / "launcher"
    launcher.mkdir()
    python = launcher / "python"
    python.write_text("#!%s\n%s" % (sys.executable, EXEC_WINDOW))
    python.chmod(0o755)
    blank, go = launcher / "blank", launcher / "go"
    read_status = RC.read_status

    def read_in_the_window(run_dir: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # the order a loaded host gives by chance: the start reads once the runner shows none
        deadline = time.monotonic() + 30
        while not blank.exists():
            assert time.monotonic() < deadline, "the stand-in never blanked its arguments"
            time.sleep(0.01)
        return read_status(run_dir, *args, **kwargs)

    plan = host.plan("exec-window", ["--duration-ms", "500", "--fake-result", "VALID"], [])
    try:
        with monkeypatch.context() as patch:
            patch.setattr(RC, "read_status", read_in_the_window)
            first = host.start(plan, python=str(python), wait_for_runner=False)
        pid = int(first["pid"])
        # the state under test, as /proc shows it (read here, not through the runner's code)
        assert _alive(pid) and Path("/proc/%d/cmdline" % pid).read_bytes().strip(b"\0") == b""
        assert first["phase"] != "lost" and first["runner_alive"], first
        # a status call of the controller while it lasts: it waits for the exec to show
        timer = threading.Timer(0.3, go.touch)
        timer.start()
        status = RC.read_status(plan["run_dir"])
        timer.join()
        assert status["phase"] != "lost" and status["runner_alive"], status
        assert plan["run_dir"] in Path("/proc/%d/cmdline" % pid).read_bytes().decode()
    finally:
        go.touch()
    result = host.wait(plan)
    assert result["verdict"] == "VALID", reasons(result)


# ------------------------------------------------------------------ the agent commands' CLI
def agent(request: dict[str, Any]) -> dict[str, Any]:
    """One call of the agent's commands as the controller's direct transport makes it: a fresh
    interpreter, ``python -m`` from the runtime's tree, the request on stdin."""
    done = subprocess.run(
        [sys.executable, "-m", AGENT_COMMANDS],
        input=json.dumps(request),
        env=dict(os.environ, PYTHONPATH=PYTHONPATH),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # one JSON answer, nothing else on stdout
    return json.loads(lines[0])


def test_a_run_through_the_agent_commands_cli(host: Host) -> None:
    plan = host.plan("cli", ["--duration-ms", "800"], [["--duration-ms", "600000"]])
    host.runs.append(plan["run_dir"])
    root = str(host.root)
    dry = agent({"args": {"command": "start", "host_root": root, "plan": plan}, "check_mode": True})
    assert dry == {"changed": True, "run_id": "cli", "run_dir": plan["run_dir"]}
    assert not Path(plan["run_dir"]).exists()
    args = {"host_root": root, "plan": plan, "pythonpath": PYTHONPATH, "check_layout": False}
    started = agent({"args": dict(args, command="start", python=sys.executable)})
    assert started["changed"] is True and started["status"]["runner_alive"] is True
    again = agent({"args": dict(args, command="start")})
    assert again["failed"] is True and "run cli already exists on this host" in again["msg"]
    status: dict[str, Any] = started["status"]
    deadline = time.monotonic() + 60
    answer: dict[str, Any] = {}
    while not (status.get("done") and "archive_b64" in answer):
        assert time.monotonic() < deadline, status
        answer = agent(
            {
                "args": {
                    "command": "status",
                    "host_root": root,
                    "run_id": "cli",
                    "since_change": status.get("change"),
                    "wait": 5,
                    "lease": 30,
                    "collect": True,
                }
            }
        )
        status = answer["status"]
    assert status["verdict"] == "VALID", status.get("reasons")
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(answer["archive_b64"]))) as tar:
        assert "main/mlperf_log_detail.txt" in tar.getnames()
    stopped = agent({"args": {"command": "stop", "host_root": root, "run_id": "cli"}})
    assert stopped["changed"] is False and stopped["status"]["done"] is True
    listed = agent({"args": {"command": "collect", "host_root": root}, "check_mode": True})
    assert listed["run_id"] == "cli"
    assert {"plan.json", "result.json", "main/mlperf_log_detail.txt"} <= {
        f["path"] for f in listed["files"]
    }


@pytest.mark.parametrize(
    ("request_text", "msg"),
    [
        ("not json", "the request is not JSON"),
        ('["status"]', 'the request must be {"args": {...}, "check_mode": bool}'),
        (
            '{"args": {"command": "restart", "host_root": "/r"}}',
            "command must be one of start, status, stop, collect, got 'restart'",
        ),
        ('{"args": {"command": "status"}}', "host_root is required"),
        (
            '{"args": {"command": "start", "host_root": "/r"}}',
            "command is start but plan is missing",
        ),
        (
            '{"args": {"command": "status", "host_root": "/r", "wait": -1}}',
            "wait must not be negative, got -1",
        ),
        (
            '{"args": {"command": "status", "host_root": "/r", "colect": true}}',
            "unknown argument(s): colect",
        ),
    ],
)
def test_the_agent_cli_refuses_bad_requests_by_name(request_text: str, msg: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", AGENT_COMMANDS],
        input=request_text,
        env=dict(os.environ, PYTHONPATH=PYTHONPATH),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == ""
    answer = json.loads(done.stdout)
    assert answer["failed"] is True and answer["msg"].startswith(msg), answer
