"""heteromig.fleet.hetero_run end to end over the SSH lab: real sshd hosts, real playbooks
(playbooks/hetero_run.yml and tests/integration/playbooks/hetero_*.yml), real benchmark processes
(tests/fixtures/hetero/fake_bench.py under the real LoadGen, through the user-defined harness
profile tests/fixtures/hetero/profiles/fake_loadgen.yml) on simulated MIG slices."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
import yaml

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from lab import HostSpec, LabRun, MakeLab, SshLab
from lab.procs import alive, cmdline, descendants, snapshot
from lab.runner import ANSIBLE_CFG
from lab.sshlab import LAB_MARKER

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hetero"
PLAYBOOK = ROOT / "playbooks" / "hetero_run.yml"
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
TASK = "Run the main benchmark on one MIG slice, backgrounds on every other slice"
START_TASK = "Start the run on every host (main on one MIG slice, backgrounds on the others)"
CONTRACT_KEYS = {
    "run_id",
    "host",
    "verdict",
    "reasons",
    "shared_gpu",
    "harness",
    "gpu",
    "results_dir",
    "main",
    "backgrounds",
    "timeline",
    "expected_duration_s",
}
BENCH_KEYS = {
    "name",
    "role",
    "benchmark",
    "scenario",
    "action",
    "slice",
    "command",
    "exit_code",
    "signal",
    "launched_at",
    "ready_at",
    "ended_at",
    "timed_window",
    "loadgen",
    "log_dir",
    "fetched_dir",
}


def make_mig_slices(state: Path, count: int) -> None:
    """An H100 with MIG enabled and ``count`` 1g.10gb slices, in the simulator's state file."""
    backend = open_backend("sim", str(state), "1xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    for _slice in range(count):
        nvml.nvmlGpuInstanceCreateComputeInstance(nvml.nvmlDeviceCreateGpuInstance(handle, 19), 0)
    backend.close()


def _fake_bench_hold_env() -> str:
    """The name of the fake benchmark's gate variable, as fake_bench.py defines it."""
    spec = importlib.util.spec_from_file_location("fake_bench", FIXTURES / "fake_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.HOLD_ENV)


HOLD_ENV = _fake_bench_hold_env()


@contextlib.contextmanager
def gate_opened_at_exit(proc: subprocess.Popen[str], hold: Path) -> Iterator[None]:
    """However the block ends, the gate ``hold`` opens and the controller ``proc`` is gone."""
    try:
        yield
    finally:
        hold.touch()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def describe_processes(pids: Iterable[int]) -> list[str]:
    """``pid state wchan: command line`` of each live process (for a failure message)."""
    procs = snapshot()
    lines = []
    for pid in sorted(p for p in pids if p in procs):
        wchan = ""
        with contextlib.suppress(OSError):
            wchan = Path("/proc/%d/wchan" % pid).read_text().strip()
        lines.append("%d %s %s: %s" % (pid, procs[pid].state, wchan, cmdline(pid)[:200]))
    return lines


def crash(proc: subprocess.Popen[str]) -> None:
    """The controller machine's crash: ansible-playbook and every process it started, at once.

    Killing its process group is not that: ansible-core 2.21 starts each worker in a process
    group (or session) of its own, so the worker watching a run would go on, fetch the run and
    write its result while the resumed controller does the same.
    """
    tree = descendants([proc.pid], snapshot())
    for pid in tree:  # stopped first, so that none starts anything while the others die
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while [p for p in tree if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in tree if alive(p)] == []


def hostvars(results: Path, **extra: Any) -> dict[str, Any]:
    values = {
        "heteromig_gpu_backend": "sim",
        "heteromig_sim_gpus": "1xH100-SXM5-80GB",
        "heteromig_host_pythonpath": str(ROOT / "collections"),
        "heteromig_results_dir": str(results),
        "heteromig_hetero_harness": "fake_loadgen",
        "heteromig_hetero_harness_profile_dirs": [str(FIXTURES / "profiles")],
        "heteromig_hetero_harness_vars": {"fake_bench": str(FIXTURES / "fake_bench.py")},
        "heteromig_hetero_main_benchmark_duration": 1500,
        "heteromig_hetero_start_time_buffer": 300,
        "heteromig_hetero_stop_grace": 2000,
    }
    values.update(extra)
    return values


def gpu_hosts_inventory(lab: SshLab) -> None:
    """The lab's hosts in the group the collection's playbooks target, ``gpu_hosts``."""
    path = lab.labdir / "gpu_hosts.yml"
    hosts = {name: lab.host_vars(name) for name in lab.names}
    path.write_text(yaml.safe_dump({"gpu_hosts": {"hosts": hosts}}, sort_keys=False))
    lab.inventory = path


def start_lab(
    ssh_lab: MakeLab,
    tmp_path: Path,
    names: list[str],
    slices: int = 3,
    hold: Path | None = None,
    **extra: Any,
) -> SshLab:
    """``hold``: every benchmark on these hosts stays in warm-up until that file exists."""
    # Each host's sessions get a TMPDIR of their own: a module killed with its host (a reboot,
    # a SIGKILL) leaves its AnsiballZ payload there, not in the machine's /tmp.
    temps = {n: tmp_path / "host-tmp" / n for n in names}
    for directory in temps.values():
        directory.mkdir(parents=True, exist_ok=True)
    env = {n: {"TMPDIR": str(temps[n])} for n in names}
    if hold is not None:
        for name in names:
            env[name][HOLD_ENV] = str(hold)
    lab = ssh_lab([HostSpec(n, hostvars(tmp_path / "results", **extra), env[n]) for n in names])
    for name in names:
        if slices:
            make_mig_slices(lab.hostdir(name) / "nvml-sim.json", slices)
    gpu_hosts_inventory(lab)
    return lab


def controller_tmp(lab: SshLab) -> Path:
    path = lab.labdir / "t"
    path.mkdir(exist_ok=True)
    return path


def spawn_playbook(
    lab: SshLab,
    playbook: Path,
    extravars: dict[str, Any],
    envvars: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """ansible-playbook in its own process group (like a terminal's), as lab.run_playbook sets it up."""
    inventory = lab.inventory or lab.write_inventory()
    env = dict(os.environ)
    env.update(envvars or {})
    env.update(
        {
            "PATH": "%s%s%s" % (Path(sys.executable).parent, os.pathsep, env.get("PATH", "")),
            "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
            "ANSIBLE_NOCOLOR": "1",
            LAB_MARKER: str(lab.labdir),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(lab.labdir / "tmp"),
            # a controller killed on purpose leaves multiprocessing's pymp-* directory in its
            # TMPDIR: the lab's, short enough for ansible-core's RPC socket (AF_UNIX, 108 bytes)
            "TMPDIR": str(controller_tmp(lab)),
        }
    )
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            str(playbook),
            "-e",
            json.dumps(extravars),
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_dir(lab: SshLab, host: str, run_id: str) -> Path:
    return lab.hostdir(host) / "runs" / run_id


def wait_for_phase(
    lab: SshLab, host: str, run_id: str, phases: set[str], timeout: float = 60
) -> dict:
    path = run_dir(lab, host, run_id) / "status.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            status = {}
        if status.get("phase") in phases:
            return status
        time.sleep(0.05)
    raise AssertionError("%s never reached %s (last: %s)" % (host, phases, status.get("phase")))


def benchmark_pids(directory: Path) -> list[int]:
    """Live processes whose command line names ``directory`` (benchmarks and runners)."""
    return sorted(pid for pid in snapshot() if str(directory) in cmdline(pid))


def result_of(run: LabRun, host: str, task: str = TASK) -> dict[str, Any]:
    return run.result(task, host).res


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_two_hosts_valid_run_and_results_fetched(ssh_lab: MakeLab, tmp_path: Path) -> None:
    # runargs full of shell metacharacters reach the main benchmark literally, as argv
    nasty = ["--x=$(touch {{ heteromig_host_root }}/pwned)", "; rm -rf / #", "`id`", "a'b\"c"]
    lab = start_lab(
        ssh_lab,
        tmp_path,
        ["h1", "h2"],
        heteromig_hetero_main_benchmark_runargs=["--echo-args", *nasty],
    )
    run = lab.run_playbook(PLAYBOOK)
    assert (run.rc, run.status) == (0, "successful"), run.stdout[-3000:]
    results = {h: result_of(run, h) for h in ("h1", "h2")}
    for host, res in results.items():
        literal = [
            arg.replace("{{ heteromig_host_root }}", str(lab.hostdir(host))) for arg in nasty
        ]
        assert res["main"]["command"][-4:] == literal
        echoed = [
            json.loads(line[len("ARGS ") :])
            for line in (Path(res["results_dir"]) / "main" / "stdout.log").read_text().splitlines()
            if line.startswith("ARGS ")
        ]
        assert len(echoed) == 1 and echoed[0][-4:] == literal, echoed
        assert not (lab.hostdir(host) / "pwned").exists()
    assert results["h1"]["run_id"] == results["h2"]["run_id"]  # one id for the playbook run
    for host, res in results.items():
        assert set(res) >= CONTRACT_KEYS and res["host"] == host
        assert res["verdict"] == "VALID", res["reasons"]
        assert res["shared_gpu"] is False and res["harness"] == "fake_loadgen"
        assert res["gpu"]["model"] == "H100-SXM5-80GB"
        main, bgs = res["main"], res["backgrounds"]
        assert set(main) >= BENCH_KEYS and all(set(b) >= BENCH_KEYS for b in bgs)
        assert [b["name"] for b in bgs] == ["bg-1", "bg-2"]  # 3 slices: main + 2 backgrounds
        assert {main["slice"]["uuid"], *(b["slice"]["uuid"] for b in bgs)} == {
            d["uuid"]
            for d in run.result(
                "Read GPUs, MIG profiles, instances and processes through NVML", host
            ).res["ansible_facts"]["heteromig_mig_devices"]
        }
        assert main["loadgen"]["result_validity"] == "VALID" and main["exit_code"] == 0
        assert all(b["signal"] == "SIGTERM" and b["scenario"] == "Offline" for b in bgs)
        assert isinstance(main["command"], list) and main["command"][0] == sys.executable
        fetched = Path(res["results_dir"])
        assert fetched == tmp_path / "results" / res["run_id"] / host
        assert (fetched / "main" / "mlperf_log_detail.txt").is_file()
        assert (fetched / "bg-2" / "stdout.log").read_text().count("running actual test.") == 1
        assert json.loads((fetched / "result.json").read_text())["verdict"] == "VALID"
        assert main["fetched_dir"] == str(fetched / "main")
        assert not benchmark_pids(run_dir(lab, host, res["run_id"]))
    # progress lines: the phase, readiness and elapsed time (main_running may fall between two
    # polls of a 1.5 s run on a loaded machine)
    assert re.search(
        r"hetero_run \[h1\] (main_running|done) \| [0-9.]+ s \| "
        r"backgrounds ready 2/2 \| main: (timed phase, [0-9.]+/[0-9.]+ s|exited with code 0 after)",
        run.stdout,
    ), run.stdout[-2000:]
    assert "hetero_run [h2] VALID | main samples_per_second" in run.stdout


@pytest.mark.slow
def test_the_agent_is_reached_directly_or_through_its_module(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    """h1 asks for the module transport, h2 takes the default (direct over ssh): both runs are
    VALID, and only h2's interpreter was asked to run the agent's commands as a program."""
    results = tmp_path / "results"
    specs = []
    for name, transport in (("h1", "module"), ("h2", None)):
        wrapper = tmp_path / ("python-" + name)
        wrapper.write_text(
            '#!/bin/sh\necho "$*" >> %s.calls\nexec %s "$@"\n' % (wrapper, sys.executable)
        )
        wrapper.chmod(0o755)
        extra: dict[str, Any] = {"heteromig_host_python": str(wrapper)}
        if transport:
            extra["heteromig_agent_transport"] = transport
        specs.append(HostSpec(name, hostvars(results, **extra)))
    lab = ssh_lab(specs)
    for name in ("h1", "h2"):
        make_mig_slices(lab.hostdir(name) / "nvml-sim.json", 2)
    gpu_hosts_inventory(lab)
    run = lab.run_playbook(PLAYBOOK)
    assert (run.rc, run.status) == (0, "successful"), run.stdout[-3000:]
    agent = "-m ansible_collections.heteromig.fleet.plugins.module_utils.agent._agent_commands"
    # the benchmarks run with it too (fake_bench.py ...)
    calls = {n: (tmp_path / ("python-%s.calls" % n)).read_text().splitlines() for n in ("h1", "h2")}
    for name in ("h1", "h2"):
        assert result_of(run, name)["verdict"] == "VALID", result_of(run, name)["reasons"]
    assert not [line for line in calls["h1"] if line.startswith(agent)]
    # the start, then at least one status (its long poll ends with the archive)
    assert sum(line == agent for line in calls["h2"]) >= 2, calls["h2"]


@pytest.mark.compat
def test_check_mode_is_a_dry_run(ssh_lab: MakeLab, tmp_path: Path) -> None:
    lab = start_lab(ssh_lab, tmp_path, ["h1"])
    nasty = ["--x=$(touch %s/pwned)" % lab.hostdir("h1"), "a b", "'"]
    run = lab.run_playbook(PLAYBOOKS / "hetero_check.yml", extravars={"runargs": nasty})
    assert run.rc == 0, run.stdout[-3000:]
    res = result_of(run, "h1", "Plan the run")
    assert res["verdict"] == "DRY_RUN" and res["changed"] is True
    assert res["main"]["command"][-3:] == nasty
    assert res["plan"]["benchmarks"][1]["argv"][:2] == [
        sys.executable,
        str(FIXTURES / "fake_bench.py"),
    ]
    assert not (lab.hostdir("h1") / "runs").exists()
    assert not (lab.hostdir("h1") / "pwned").exists()


@pytest.mark.compat
def test_bad_input_is_refused_with_clear_messages(ssh_lab: MakeLab, tmp_path: Path) -> None:
    results = tmp_path / "results"
    lab = ssh_lab([HostSpec("mig", hostvars(results)), HostSpec("nomig", hostvars(results))])
    make_mig_slices(lab.hostdir("mig") / "nvml-sim.json", 3)
    make_mig_slices(lab.hostdir("nomig") / "nvml-sim.json", 0)
    run = lab.run_playbook(PLAYBOOKS / "hetero_bad_input.yml")
    expected = {
        "Unknown benchmark": "harness fake_loadgen does not know the main benchmark 'gpt-j'; its "
        "benchmarks are fake-a, fake-b, fake-c",
        "Unknown scenario": "unknown scenario 'Batch'; scenarios are Offline, Server, "
        "SingleStream, MultiStream",
        "Scenario the main benchmark does not support": "main benchmark fake-c does not support the Server scenario",
        "More backgrounds than slices": "4 background benchmarks (fake-a, fake-b, fake-c, fake-a) "
        "but only 2 free slice(s)",
        "Zero duration": "main_benchmark_duration must be greater than 0 ms, got 0",
        "Negative duration": "start_time_buffer must not be negative, got -1 ms",
        "Unknown option": "main_benchmark_durration. Supported parameters include:",
        "Run id that climbs out of the runs directory": "run_id '../..' is not a safe name",
        "Absolute run id": "run_id '/etc' is not a safe name",
        "Run id with a newline": "run_id 'a\\nb' is not a safe name",
        "Unicode run id": "run_id 'ünïcode' is not a safe name",
        "Resume of a run id that climbs out": "run_id '../../..' is not a safe name",
        "Collect through the host module with a run id that climbs out": (
            "run_id '../../..' is not a safe name"
        ),
        "Stop through the host module with an absolute run id": "run_id '/tmp' is not a safe name",
        "Negative target QPS": "main_target_qps must be greater than 0.0, got -5",
        "Negative target latency": "main_target_latency_ns must be greater than 0, got -1",
        "Zero min query count": "main_min_query_count must be at least 1, got 0",
        "Empty scenario": "main_scenario is empty",
        "Empty readiness regex": "readiness_regexes: an empty regex matches every line",
        "Invalid environment variable name": "env: 'BAD NAME' is not a valid environment variable",
    }
    for task, message in expected.items():
        res = result_of(run, "mig", task)
        assert run.outcome(task, "mig") == "failed" and message in res["msg"], (
            task,
            res.get("msg"),
        )
        assert "Traceback" not in json.dumps(res)
    nasty = result_of(run, "mig", "Shell metacharacters in runargs")
    assert nasty["main"]["command"][-3:] == [
        "--x=$(touch %s/pwned)" % lab.hostdir("mig"),
        "; rm -rf / #",
        "`id`",
    ]
    # nothing of any refused run reached the host: no run directory, nothing archived
    assert not (lab.hostdir("mig") / "runs").exists() or not any(
        (lab.hostdir("mig") / "runs").iterdir()
    )
    assert not list(lab.hostdir("mig").rglob("results.tar.gz"))
    refused = result_of(run, "nomig", "Main slice that is not a MIG device")
    assert run.outcome("Main slice that is not a MIG device", "nomig") == "failed"
    assert "the main benchmark's slice is not a MIG device" in refused["msg"]
    assert "allow_shared_gpu" in refused["msg"]
    assert result_of(run, "mig", "Main slice that is not a MIG device")["verdict"] == "DRY_RUN"
    for host in ("mig", "nomig"):
        assert not (lab.hostdir(host) / "runs").exists()  # nothing was started anywhere


# ----------------------------------------------------------------------------------- faults
@pytest.mark.slow
def test_dropped_connection_mid_run_completes_and_fetches(ssh_lab: MakeLab, tmp_path: Path) -> None:
    lab = start_lab(
        ssh_lab,
        tmp_path,
        ["h1", "h2"],
        heteromig_hetero_main_benchmark_duration=4000,
        heteromig_hetero_lease_timeout=20000,
    )
    outcome: dict[str, LabRun] = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault(
            "run", lab.run_playbook(PLAYBOOK, extravars={"heteromig_hetero_run_id": "drop"})
        )
    )
    thread.start()
    try:
        wait_for_phase(lab, "h1", "drop", {"main_running"})
        time.sleep(0.5)  # a status long-poll is in flight
        lab.drop_connections("h1")
        time.sleep(1.0)
        lab.drop_connections("h1")
    finally:
        thread.join(120)
    run = outcome["run"]
    assert run.rc == 0, run.stdout[-3000:]
    res = result_of(run, "h1")
    assert res["verdict"] == "VALID", res["reasons"]
    assert (Path(res["results_dir"]) / "main" / "mlperf_log_summary.txt").is_file()
    # the drop hits the watch while it attaches or while it polls: either is retried and said
    assert (
        "hetero_run [h1] status poll failed" in run.stdout
        or "hetero_run [h1] cannot re-attach yet" in run.stdout
    ), run.stdout[-3000:]
    assert "hetero_run [h1] re-attached to run drop" in run.stdout
    assert result_of(run, "h2")["verdict"] == "VALID"


@pytest.mark.slow
def test_sigint_at_the_controller_leaves_no_orphans(ssh_lab: MakeLab, tmp_path: Path) -> None:
    lab = start_lab(
        ssh_lab,
        tmp_path,
        ["h1"],
        heteromig_hetero_main_benchmark_duration=600000,
        heteromig_hetero_lease_timeout=3000,
    )
    proc = spawn_playbook(lab, PLAYBOOK, {"heteromig_hetero_run_id": "ctrlc"})
    try:
        wait_for_phase(lab, "h1", "ctrlc", {"main_running"})
        # The run was started with a lease for the whole run (wait: false); Ctrl-C ends it
        # within lease_timeout once the watching task renews it with that (3 s) lease.
        lease = run_dir(lab, "h1", "ctrlc") / "lease"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(lease.read_text()).get("lease_s") == 3.0:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the watching task never renewed the lease")
        assert benchmark_pids(run_dir(lab, "h1", "ctrlc"))
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # seen once in CI and never reproduced: say what was still alive and where
            raise AssertionError(
                "ansible-playbook did not exit within 30 s of Ctrl-C (exit status %s); its "
                "processes: %s"
                % (proc.poll(), describe_processes(descendants([proc.pid], snapshot())))
            ) from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    status = wait_for_phase(lab, "h1", "ctrlc", {"done"}, timeout=30)  # lease 3 s + grace
    assert status["result"]["stop_reason"].startswith("the controller's lease expired")
    deadline = time.monotonic() + 10
    while benchmark_pids(run_dir(lab, "h1", "ctrlc")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert benchmark_pids(run_dir(lab, "h1", "ctrlc")) == [], "orphans after the lease expired"
    record = json.loads((run_dir(lab, "h1", "ctrlc") / "containment.json").read_text())
    if record["cgroup"]:  # the run's cgroup goes with it (one left per run would pile up)
        assert not os.path.exists(record["cgroup"]), record["cgroup"]
    signals = {b["name"]: b["signal"] for b in status["result"]["benchmarks"]}
    assert signals == {"main": "SIGTERM", "bg-1": "SIGTERM", "bg-2": "SIGTERM"}


@pytest.mark.compat
def test_resume_after_the_controller_crashed(ssh_lab: MakeLab, tmp_path: Path) -> None:
    lab = start_lab(
        ssh_lab,
        tmp_path,
        ["h1"],
        heteromig_hetero_main_benchmark_duration=3000,
        heteromig_hetero_lease_timeout=15000,
    )
    proc = spawn_playbook(lab, PLAYBOOK, {"heteromig_hetero_run_id": "crash"})
    try:
        wait_for_phase(lab, "h1", "crash", {"main_running"})
    finally:
        crash(proc)  # the controller dies without a word, its workers with it
    run = lab.run_playbook(PLAYBOOKS / "hetero_resume.yml", extravars={"run_id": "crash"})
    assert run.rc == 0, run.stdout[-3000:]
    res = result_of(run, "h1", "Re-attach, watch to the end, fetch the results")
    assert res["verdict"] == "VALID", res["reasons"]
    assert res["run_id"] == "crash" and res["stop_reason"] is None
    assert (Path(res["results_dir"]) / "main" / "mlperf_log_detail.txt").is_file()
    assert "hetero_run [h1] re-attached to run crash" in run.stdout


@pytest.mark.slow
def test_two_runs_on_one_host_at_once(ssh_lab: MakeLab, tmp_path: Path) -> None:
    hold = tmp_path / "release"
    lab = start_lab(ssh_lab, tmp_path, ["h1"], hold=hold)
    first = spawn_playbook(lab, PLAYBOOK, {"heteromig_hetero_run_id": "first"})
    with gate_opened_at_exit(first, hold):
        # the first run's benchmarks wait at the gate: it is in progress, whatever the load
        wait_for_phase(lab, "h1", "first", {"starting_backgrounds"}, timeout=120)
        second = lab.run_playbook(PLAYBOOK, extravars={"heteromig_hetero_run_id": "second"})
        hold.touch()
        out = first.communicate(timeout=180)[0]
    assert second.rc != 0
    res = result_of(second, "h1", START_TASK)
    assert second.outcome(START_TASK, "h1") == "failed"
    assert "another hetero run is in progress on this host: run first" in res["msg"]
    assert first.returncode == 0, out[-3000:]
    assert "hetero_run [h1] VALID" in out
    assert not run_dir(lab, "h1", "second").exists()


def test_local_inventory_keeps_the_run_short() -> None:
    """inventories/local's group_vars shorten the MLPerf defaults (600 s main) for this machine."""
    local = yaml.safe_load(
        (ROOT / "inventories" / "local" / "group_vars" / "gpu_hosts.yml").read_text()
    )
    assert local["heteromig_hetero_main_benchmark_duration"] <= 10000


@pytest.mark.slow
def test_embedded_harness_end_to_end(ssh_lab: MakeLab, tmp_path: Path) -> None:
    """heteromig_synthetic (the real embedded LoadGen harness) with engines built per profile."""
    lab = ssh_lab(
        [
            HostSpec(
                "h1",
                {
                    "heteromig_gpu_backend": "sim",
                    "heteromig_sim_gpus": "1xH100-SXM5-80GB",
                    "heteromig_results_dir": str(tmp_path / "results"),
                },
            )
        ]
    )
    make_mig_slices(lab.hostdir("h1") / "nvml-sim.json", 4)
    # the host runtime as the role host_runtime installs it: <host_root>/lib/ansible_collections
    (lab.hostdir("h1") / "lib").symlink_to(ROOT / "collections")
    run = lab.run_playbook(PLAYBOOKS / "hetero_synthetic.yml")
    assert run.rc == 0, run.stdout[-3000:]
    res = result_of(run, "h1", "Run synth-mlp-small Server with the edge set around it")
    assert res["verdict"] == "VALID", res["reasons"]
    assert res["harness"] == "heteromig_synthetic"
    main = res["main"]
    assert (
        main["scenario"] == "Server"
        and main["loadgen"]["metric"]["name"] == "completed_samples_per_second"
    )
    assert main["timed_window"]["source"] == "power_begin/power_end"
    # 3 free slices, 3 benchmarks in "all": one of each
    assert sorted(b["benchmark"] for b in res["backgrounds"]) == [
        "synth-conv-1d",
        "synth-mlp-large",
        "synth-mlp-small",
    ]
    assert all(b["stopped_by_runner"] for b in res["backgrounds"])
    assert (Path(res["results_dir"]) / "main" / "heteromig_harness.json").is_file()


@pytest.mark.slow
def test_every_host_runs_at_once_whatever_forks_is(ssh_lab: MakeLab, tmp_path: Path) -> None:
    """4 hosts, forks 2: before, the second pair started only when the first pair had ended.

    Every benchmark waits at a gate until all four runs are in progress at once (each host's
    background waits there): had a run held its worker to the end, the second pair would never
    start (the first pair cannot end) and the wait below fails. Each main's timed window then
    comes from its own LoadGen log (power_begin/power_end), and all four overlap: what is left
    between them is a main's start-up once the gate opens, short of its 10 s window even on a
    loaded machine.
    """
    names = ["h1", "h2", "h3", "h4"]
    hold = tmp_path / "release"
    lab = start_lab(
        ssh_lab,
        tmp_path,
        names,
        slices=2,
        hold=hold,
        heteromig_hetero_main_benchmark_duration=10000,
        heteromig_hetero_lease_timeout=10000,
    )
    proc = spawn_playbook(
        lab, PLAYBOOK, {"heteromig_hetero_run_id": "wide"}, {"ANSIBLE_FORKS": "2"}
    )
    with gate_opened_at_exit(proc, hold):
        deadline = time.monotonic() + 180
        while len(list(tmp_path.glob("release.waiting.*"))) < len(names):
            assert time.monotonic() < deadline, "not every host's background reached the gate"
            time.sleep(0.1)
        hold.touch()
        out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out[-3000:]
    windows = {}
    for name in names:
        res = json.loads((tmp_path / "results" / "wide" / name / "result.json").read_text())
        assert res["verdict"] == "VALID", (name, res["reasons"])
        window = res["main"]["timed_window"]
        assert window["source"] == "power_begin/power_end"
        windows[name] = (window["begin"], window["end"])
    latest_begin = max(begin for begin, _end in windows.values())
    earliest_end = min(end for _begin, end in windows.values())
    assert latest_begin < earliest_end, "the mains did not all run at once: %s" % windows
    started = [line for line in out.splitlines() if "started: main" in line]
    assert len(started) == 4, out[-3000:]


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): %s" % done.stderr.strip())


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def test_a_read_only_results_directory_is_refused_before_anything_starts(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    results = tmp_path / "ro-results"
    _mount_tmpfs(results, "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(results)], check=True)
        lab = start_lab(ssh_lab, tmp_path, ["h1"], heteromig_results_dir=str(results))
        run = lab.run_playbook(PLAYBOOK, extravars={"heteromig_hetero_run_id": "ro"})
    finally:
        _umount(results)
    assert run.rc != 0
    assert run.outcome(START_TASK, "h1") == "failed"
    msg = result_of(run, "h1", START_TASK)["msg"]
    assert "cannot write the results to %s" % results in msg and "Read-only file system" in msg
    assert "Nothing was started" in msg
    assert not run_dir(lab, "h1", "ro").exists()


@pytest.mark.slow
def test_a_full_results_directory_after_the_run_keeps_the_verdict_and_resume_fetches_again(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    results = tmp_path / "small-results"
    _mount_tmpfs(results, "32m")
    try:
        lab = start_lab(
            ssh_lab,
            tmp_path,
            ["h1"],
            slices=2,
            heteromig_results_dir=str(results),
            heteromig_hetero_main_benchmark_duration=3000,
        )
        proc = spawn_playbook(lab, PLAYBOOK, {"heteromig_hetero_run_id": "full"})
        try:
            wait_for_phase(lab, "h1", "full", {"main_running"})
            filler = results / "filler"
            with filler.open("wb") as handle, contextlib.suppress(OSError):
                while True:  # fill the directory to the last block (ENOSPC ends it)
                    handle.write(b"\0" * 4096)
                    handle.flush()
            out = proc.communicate(timeout=120)[0]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode != 0, out[-3000:]
        assert "hetero_run [h1] VALID" in out, out[-3000:]
        match = re.search(r"run full on h1 ended VALID, but .*", out)
        assert match, out[-3000:]
        message = match.group(0)
        assert "No space left on device" in message and "resume: true" in message
        assert str(run_dir(lab, "h1", "full")) in message  # where the results are safe
        host_dir = results / "full" / "h1"
        result_json = host_dir / "result.json"
        assert not result_json.exists() or json.loads(result_json.read_text())
        assert not list(results.rglob("*.partial-*")) and not list(results.rglob("*.tmp.*"))

        filler.unlink()
        again = lab.run_playbook(PLAYBOOKS / "hetero_resume.yml", extravars={"run_id": "full"})
        assert again.rc == 0, again.stdout[-3000:]
        res = result_of(again, "h1", "Re-attach, watch to the end, fetch the results")
        assert res["verdict"] == "VALID", res["reasons"]
        assert json.loads(result_json.read_text())["verdict"] == "VALID"
        assert (host_dir / "main" / "mlperf_log_detail.txt").is_file()
    finally:
        _umount(results)
