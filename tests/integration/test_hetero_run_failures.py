"""heteromig.fleet.hetero_run failure paths over the SSH lab: real sshd hosts, real playbooks
(playbooks/hetero_run.yml), real runners and benchmarks (tests/fixtures/hetero/fake_bench.py
under the real LoadGen), real faults (a SIGKILLed runner, a rebooted host, a host cut off for
longer than lease + reconnect_timeout, a fetch that cannot pack the archive, an INVALID run with
fail_on_invalid). Each must end in a failed task with one accurate reason, and a report row
(hetero_report's results.jsonl and summary.json) that names the host and that reason."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_hetero_run import (
    PLAYBOOK,
    TASK,
    benchmark_pids,
    gpu_hosts_inventory,
    hostvars,
    make_mig_slices,
    result_of,
    run_dir,
    start_lab,
    wait_for_phase,
)

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from lab import HostSpec, LabRun, MakeLab, SshLab

pytestmark = pytest.mark.integration


class Background:
    """A playbook run in a thread (lab.run_playbook: events and reports), joined by ``result``."""

    def __init__(self, start: Callable[[], LabRun]) -> None:
        self._outcome: dict[str, LabRun] = {}
        self._thread = threading.Thread(target=lambda: self._outcome.setdefault("run", start()))
        self._thread.start()

    def result(self, timeout: float = 180) -> LabRun:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the playbook did not end within %.0f s" % timeout
        return self._outcome["run"]


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], LabRun]], Background]]:
    started: list[Background] = []

    def start(fn: Callable[[], LabRun]) -> Background:
        started.append(Background(fn))
        return started[-1]

    yield start
    for bg in started:  # a failed assertion must not leave a playbook thread behind
        bg._thread.join(240)


def report_rows(run: LabRun, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """hetero_report's records (results.jsonl) and summary rows (summary.json) of ``run_id``."""
    report = run.private_data_dir / "reports" / run_id
    records = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    summary = json.loads((report / "summary.json").read_text())
    return [r for r in records if r["hetero"]], summary["rows"]


def runner_pid(lab: SshLab, host: str, run_id: str) -> int:
    return int(json.loads((run_dir(lab, host, run_id) / "status.json").read_text())["pid"])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "%s: not within %.0f s" % (what, timeout)
        time.sleep(0.05)


def lease_seconds(path: Path) -> float | None:
    """The lease length the runner's lease file holds now (None while it cannot be read)."""
    try:
        return float(json.loads(path.read_text())["lease_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def assert_failed_with(run: LabRun, host: str, run_id: str, reason: str | re.Pattern[str]) -> str:
    """The hetero_run task failed on ``host`` with one reason (matching ``reason``), also in
    hetero_report's record (results.jsonl) and row (summary.json); returns the reason."""
    assert run.outcome(TASK, host) == "failed", run.stdout[-3000:]
    res = result_of(run, host)
    assert res["run_id"] == run_id and res["host"] == host
    found = res["msg"]
    if isinstance(reason, str):
        assert found == reason, found
    else:
        assert reason.fullmatch(found), found
    assert found.count(". ") <= 2 and "Traceback" not in found
    records, rows = report_rows(run, run_id)
    [record] = [r for r in records if r["host"] == host]
    assert record["status"] == "failed" and record["msg"] == found
    [row] = [r for r in rows if r["host"] == host]
    if res["reasons"]:  # the run's one reason (without a result: the failure itself)
        [own] = res["reasons"]
        assert own == found or found.endswith(": " + own), (own, found)
        assert row["reasons"] == [own] and row["verdict"] == "INVALID" == res["verdict"]
    else:  # a verdict with no reason, the task failed after it: the failure is the row's reason
        assert row["verdict"] == "FAILED" and row["reasons"] == [
            "task %r failed: %s" % (TASK, found)
        ]
    return found


# ------------------------------------------------------------------------------ 1. runner killed
def test_runner_sigkilled_mid_run(ssh_lab: MakeLab, tmp_path: Path, background: Any) -> None:
    lab = start_lab(
        ssh_lab,
        tmp_path,
        ["h1"],
        heteromig_hetero_main_benchmark_duration=60000,
        heteromig_hetero_lease_timeout=6000,
    )
    play = background(
        lambda: lab.run_playbook(PLAYBOOK, extravars={"heteromig_hetero_run_id": "kill"})
    )
    wait_for_phase(lab, "h1", "kill", {"main_running"})
    pid = runner_pid(lab, "h1", "kill")
    left = {
        n
        for n, b in json.loads((run_dir(lab, "h1", "kill") / "status.json").read_text())[
            "benchmarks"
        ].items()
    }
    assert left == {"main", "bg-1", "bg-2"}
    os.kill(pid, signal.SIGKILL)
    run = play.result()
    path = run_dir(lab, "h1", "kill")
    reason = assert_failed_with(
        run,
        "h1",
        "kill",
        re.compile(
            r"the runner of run kill on h1 \(pid %d\) died before the run finished and wrote no "
            r"result(?:; it left (?P<left>[-\w, ]+) running, now stopped)? \(its logs: %s/runner.log "
            r"on the host\)" % (pid, re.escape(str(path)))
        ),
    )
    assert "rebooted" not in reason
    # the benchmarks it left behind no longer hold the slices
    assert benchmark_pids(path) == []
    # what the run left is fetched all the same
    assert (Path(result_of(run, "h1")["results_dir"]) / "bg-1" / "stdout.log").is_file()


# ------------------------------------------------------------------------------- 2. host reboot
def test_host_rebooted_mid_run(ssh_lab: MakeLab, tmp_path: Path, background: Any) -> None:
    """The reboot (SshLab.reboot_host): every process of the host SIGKILLed at once, its
    simulated GPUs rebooted as gpu_sim_reboot does (MIG instances gone, GPU processes ended),
    then sshd back in a fresh time namespace: the host's uptime starts again, its disk stays."""
    lab = start_lab(
        ssh_lab,
        tmp_path,
        ["h1"],
        heteromig_hetero_main_benchmark_duration=60000,
        heteromig_hetero_lease_timeout=6000,
    )
    state = lab.hostdir("h1") / "nvml-sim.json"

    def gpus_reboot() -> None:
        backend = open_backend("sim", str(state), "1xH100-SXM5-80GB")
        try:
            backend.reboot_simulated_host()
        finally:
            backend.close()

    play = background(
        lambda: lab.run_playbook(PLAYBOOK, extravars={"heteromig_hetero_run_id": "boot"})
    )
    wait_for_phase(lab, "h1", "boot", {"main_running"})
    before = time.time()
    lab.reboot_host("h1", while_down=gpus_reboot)
    uptime = subprocess.run(
        lab.ssh_argv("h1", "cat", "/proc/uptime"), capture_output=True, text=True, check=True
    ).stdout
    assert float(uptime.split()[0]) < time.time() - before + 5  # it did boot again
    run = play.result()
    reason = assert_failed_with(
        run,
        "h1",
        "boot",
        re.compile(
            r"h1 rebooted during run boot \(up since [-\d: ]+ UTC; the run started [-\d: ]+ UTC\): "
            r"every benchmark ended with it and the runner wrote no result \(its logs: "
            r"%s/runner.log on the host\)" % re.escape(str(run_dir(lab, "h1", "boot")))
        ),
    )
    assert "now stopped" not in reason and "pid" not in reason
    assert benchmark_pids(run_dir(lab, "h1", "boot")) == []


# --------------------------------------------------------------------- 3. connection lost too long
def test_connection_lost_for_longer_than_lease_and_reconnect(
    ssh_lab: MakeLab, tmp_path: Path, background: Any
) -> None:
    lab = start_lab(
        ssh_lab,
        tmp_path,
        ["h1"],
        heteromig_hetero_main_benchmark_duration=60000,
        heteromig_hetero_lease_timeout=5000,
        heteromig_hetero_reconnect_timeout=2000,
    )
    play = background(
        lambda: lab.run_playbook(PLAYBOOK, extravars={"heteromig_hetero_run_id": "cut"})
    )
    wait_for_phase(lab, "h1", "cut", {"main_running"})
    # hetero_run.yml starts the run with a lease for the whole run (wait: false); the cut is
    # made once the watching task holds it with its own 5 s lease
    lease = run_dir(lab, "h1", "cut") / "lease"
    wait_until(lambda: lease_seconds(lease) == 5.0, "the watching task's 5 s lease")
    lab.cut_off("h1")  # refused from now on; the runner and benchmarks keep running
    assert benchmark_pids(run_dir(lab, "h1", "cut"))
    run = play.result()
    path = run_dir(lab, "h1", "cut")
    assert_failed_with(
        run,
        "h1",
        "cut",
        re.compile(
            r"lost the connection to h1 for (?P<s>\d+) s \(lease 5 s \+ reconnect_timeout 2 s\): "
            r".*Connection refused.*\. The runner on h1 stops the run once the lease expires; what "
            r"it leaves stays in %s on the host \(hetero_run with resume: true and run_id: cut "
            r"fetches it\)" % re.escape(str(path))
        ),
    )
    # and so it did, by itself, with nobody connected
    status = wait_for_phase(lab, "h1", "cut", {"done"}, timeout=30)
    assert status["result"]["stop_reason"].startswith("the controller's lease expired")
    wait_until(lambda: not benchmark_pids(path), "the benchmarks end")


# -------------------------------------------------------------------------------- 4. fetch fails
@pytest.mark.slow
def test_fetch_failure_keeps_the_verdict_and_resume_fetches(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    lab = start_lab(ssh_lab, tmp_path, ["h1"], heteromig_hetero_lease_timeout=6000)
    path = run_dir(lab, "h1", "fetch")
    # the run's archive cannot be written: a directory holds its place (as a full disk or a
    # read-only run directory would make packing fail), from before the run starts
    (path / "results.tar.gz").mkdir(parents=True)
    run = lab.run_playbook(PLAYBOOK, extravars={"heteromig_hetero_run_id": "fetch"})
    res = result_of(run, "h1")
    assert res["verdict"] == "VALID" and res["reasons"] == [] and res["fetched_files"] == []
    assert_failed_with(
        run,
        "h1",
        "fetch",
        re.compile(
            r"run fetch on h1 ended VALID, but its results could not be fetched: .*Is a "
            r"directory.*\. They stay on the host in %s; hetero_run with resume: true and "
            r"run_id: fetch fetches them again" % re.escape(str(path))
        ),
    )
    # as the message says: once the archive can be written, resume fetches them, here through
    # the shipped playbook with its variables: nothing is planned, built or started again
    (path / "results.tar.gz").rmdir()
    runs_before = sorted(d.name for d in path.parent.iterdir())
    again = lab.run_playbook(
        PLAYBOOK, extravars={"heteromig_hetero_resume": True, "heteromig_hetero_run_id": "fetch"}
    )
    assert again.rc == 0, again.stdout[-3000:]
    for task in (
        "Plan the engines the run needs (a dry run of the run, nothing starts)",
        "Build one engine per benchmark, scenario and MIG profile (cached by content)",
        "Start the run on every host (main on one MIG slice, backgrounds on the others)",
    ):
        assert again.outcome(task, "h1") == "skipped", task
    resumed = result_of(again, "h1")
    assert resumed["verdict"] == "VALID" and resumed["results_dir"] == res["results_dir"]
    assert (Path(resumed["results_dir"]) / "main" / "mlperf_log_detail.txt").is_file()
    assert sorted(d.name for d in path.parent.iterdir()) == runs_before  # no new run


# -------------------------------------------------------------------- 5. fail_on_invalid, INVALID
def test_fail_on_invalid_with_a_main_loadgen_finds_invalid(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    """Server at twice what the SUT can serve (50 us a sample, one Python sleep each): the real
    LoadGen finds the latency bound broken and says INVALID; fail_on_invalid fails the task."""
    lab = start_lab(
        ssh_lab,
        tmp_path,
        ["h1"],
        heteromig_hetero_main_scenario="Server",
        heteromig_hetero_main_benchmark_duration=600,
        heteromig_hetero_main_benchmark_runargs=["--sample-us", "50"],
        heteromig_hetero_lease_timeout=6000,
        heteromig_hetero_fail_on_invalid=True,
    )
    run = lab.run_playbook(PLAYBOOK, extravars={"heteromig_hetero_run_id": "invalid"})
    res = result_of(run, "h1")
    loadgen = res["main"]["loadgen"]
    assert loadgen["result_validity"] == "INVALID", loadgen
    assert loadgen["invalid_reason"].startswith("Reduce target QPS")
    assert res["main"]["exit_code"] == 0 and res["verdict"] == "INVALID"
    assert all(b["signal"] == "SIGTERM" and b["stopped_by_runner"] for b in res["backgrounds"])
    [reason] = res["reasons"]
    assert reason.startswith("the main benchmark's LoadGen result is INVALID: "), reason
    assert "latency constraint not met" in reason
    assert_failed_with(run, "h1", "invalid", "hetero run invalid on h1 is INVALID: " + reason)


# ------------------------------------------------------------------------------------- loops
LOOP_PLAYBOOK = """\
- name: Two runs, one per loop item
  hosts: gpu_hosts
  gather_facts: false
  tasks:
    - name: Read the MIG slices
      heteromig.fleet.gpu_facts:
        backend: sim
        sim_state: "{{ heteromig_sim_state }}"
        sim_gpus: "{{ heteromig_sim_gpus }}"
    - name: Run each main benchmark in turn
      heteromig.fleet.hetero_run:
        main_benchmark: "{{ item }}"
      loop: [fake-a, fake-b]
"""


def test_loop_items_get_one_run_id_each_shared_by_the_hosts(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    lab = start_lab(ssh_lab, tmp_path, ["h1", "h2"], heteromig_hetero_main_benchmark_duration=800)
    playbook = tmp_path / "loop.yml"
    playbook.write_text(LOOP_PLAYBOOK)
    run = lab.run_playbook(playbook)
    assert run.rc == 0, run.stdout[-3000:]
    ids: dict[str, list[str]] = {}
    for host in ("h1", "h2"):
        items = run.result("Run each main benchmark in turn", host).res["results"]
        assert [i["item"] for i in items] == ["fake-a", "fake-b"]
        assert [i["main"]["benchmark"] for i in items] == ["fake-a", "fake-b"]
        assert all(i["verdict"] == "VALID" for i in items), [i.get("msg") for i in items]
        ids[host] = [i["run_id"] for i in items]
        for i in items:
            assert (run_dir(lab, host, i["run_id"]) / "result.json").is_file()
    assert ids["h1"] == ids["h2"] and ids["h1"][0] != ids["h1"][1], ids


# ---------------------------------------------------------------------------- other time zone
def test_valid_run_with_controller_and_hosts_in_tokyo(ssh_lab: MakeLab, tmp_path: Path) -> None:
    """LoadGen writes power_begin/power_end in UTC whatever TZ is (fixed in 0de1611): with the
    controller and the hosts 9 hours ahead of UTC (and the suite in New York) the run is VALID
    and its timed window is LoadGen's."""
    tokyo = {"TZ": "Asia/Tokyo"}
    lab = ssh_lab([HostSpec("h1", hostvars(tmp_path / "results"), env=tokyo)])
    make_mig_slices(lab.hostdir("h1") / "nvml-sim.json", 3)
    gpu_hosts_inventory(lab)
    zone = subprocess.run(
        lab.ssh_argv("h1", "date", "+%Z"), capture_output=True, text=True, check=True
    ).stdout
    assert zone.strip() == "JST"  # the host's sessions do run in Tokyo
    assert time.strftime("%Z") != "JST"
    run = lab.run_playbook(PLAYBOOK, extravars={"heteromig_hetero_run_id": "tokyo"}, envvars=tokyo)
    assert run.rc == 0, run.stdout[-3000:]
    res = result_of(run, "h1")
    assert res["verdict"] == "VALID", res["reasons"]
    main = res["main"]
    assert main["loadgen"]["result_validity"] == "VALID"
    assert main["timed_window"]["source"] == "power_begin/power_end"
    # LoadGen's window is the runner's clock's, not 9 hours off
    assert main["launched_at"] < main["loadgen"]["power_begin"] < main["ended_at"]
