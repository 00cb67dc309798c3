"""playbooks/mig_reconfigure.yml (role mig_partition, module mig_layout) over the SSH lab.

One lab of real sshd hosts with mixed simulated GPU models; every host carries one scenario
of issue 3 in its inventory variables, and one run of the real playbook serves them all:

- h100 (8 x H100): all-1g applied, re-applied without change, then one GPU of eight changed;
- a100 (4 x A100 80GB, GPU 2 stuck in "pending enable"): two GPUs changed, reset one by one,
  the other two never touched;
- a30 (4 x A30): the named layout all-1g resolved for the A30 (4 x 1g.6gb);
- uneven (1 x H200): 3g+2g+1g+1g, which NVML's own lowest-free-start order cannot create;
- noreset / noreset-deny (A100 40GB that cannot be reset): reboot_required; the role reboots
  (simulated) where allowed and continues, and fails naming the GPUs where not;
- busy / drain (H100 with a process on a slice): refused naming the process, or drained;
- fault (2 x H100): an NVML failure injected midway; the previous layout is restored;
- badinput (1 x H100): a profile the GPU does not have, which fails in the planning play and
  again, reported and counted, in its batch;
- gone (1 x H100): its sshd is down, so it is unreachable when planned and gets no batch;
- oldnames (1 x H100): the deprecated mig_partition_* variable names, which still work and warn;
- conflict (1 x H100): heteromig_mig_layout and mig_partition_layout set to different values,
  which fails before anything changes.

GPU clients are stop/start/status commands of a fake service manager per host (a shell script
keeping "running" marker files in the host's directory), so the tests see exactly which were
stopped and started (restored in the reverse order). Hooks, units and boot persistence are
covered by tests/integration/test_mig_fleet_lab.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from sim_faults import inject_fault

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_apply import run_host
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes import (
    register_process,
)
from lab import HostSpec, LabRun, SshLab
from lab.runner import ANSIBLE_CFG
from lab.sshlab import LAB_MARKER

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAYBOOK = "playbooks/mig_reconfigure.yml"
PLAN = "Plan the MIG layout (changes nothing)"
APPLY = "Apply the MIG layout"
SUMMARY = "Summary of this batch"
FLEET = "What changed, per host"
SERVICES = ("nvidia-dcgm", "nvsm", "dcgm-exporter")
RUNNING = ("nvidia-dcgm", "dcgm-exporter")  # nvsm is installed but not running
ONE_BATCH = {
    "mig_reconfigure_hosts": "lab",
    "mig_reconfigure_serial": "100%",
    "mig_reconfigure_max_fail_percentage": 100,
}
SUCCEEDS = ["h100", "a100", "a30", "uneven", "noreset", "drain"]
FAILS = ["busy", "fault", "noreset-deny", "badinput", "conflict"]

FAKE_SERVICE = """#!/bin/sh
# fake service manager of a lab host: <status|stop|start> <service>
dir=$(dirname "$0")/services
case "$1" in
  status) test -e "$dir/$2.running" ;;
  stop) rm -f "$dir/$2.running"; echo "stop $2" >> "$dir/log" ;;
  start) touch "$dir/$2.running"; echo "start $2" >> "$dir/log" ;;
  *) exit 2 ;;
esac
"""

SCENARIOS: dict[str, dict[str, Any]] = {
    "h100": {"heteromig_sim_gpus": "8xH100-SXM5-80GB", "heteromig_mig_layout": "all-1g"},
    "a100": {
        "heteromig_sim_gpus": "4xA100-SXM4-80GB",
        "heteromig_mig_gpus": [{"devices": [0, 2], "layout": "all-balanced"}],
    },
    "a30": {"heteromig_sim_gpus": "4xA30-24GB", "heteromig_mig_layout": "all-1g"},
    "uneven": {
        "heteromig_sim_gpus": "1xH200-141GB",
        "heteromig_mig_layout": ["3g.71gb", "2g.35gb", "1g.18gb", "1g.18gb"],
    },
    "noreset": {
        "heteromig_sim_gpus": [{"model": "A100-SXM4-40GB", "count": 2, "reset_supported": False}],
        "heteromig_mig_layout": "all-1g",
        "heteromig_mig_allow_reboot": True,
    },
    "noreset-deny": {
        "heteromig_sim_gpus": [{"model": "A100-SXM4-40GB", "count": 2, "reset_supported": False}],
        "heteromig_mig_layout": "all-1g",
    },
    "busy": {"heteromig_sim_gpus": "2xH100-SXM5-80GB", "heteromig_mig_layout": "all-7g"},
    "drain": {
        "heteromig_sim_gpus": "1xH100-SXM5-80GB",
        "heteromig_mig_layout": "all-7g",
        "heteromig_mig_drain": True,
        "heteromig_mig_drain_timeout": 2,
    },
    "fault": {
        "heteromig_sim_gpus": "2xH100-SXM5-80GB",
        "heteromig_mig_gpus": [{"devices": [0], "layout": "all-2g"}],
    },
    "badinput": {"heteromig_sim_gpus": "1xH100-SXM5-80GB", "heteromig_mig_layout": ["5g.50gb"]},
    # down before the first run: unreachable when planned, so no batch and no change
    "gone": {"heteromig_sim_gpus": "1xH100-SXM5-80GB", "heteromig_mig_layout": "all-1g"},
    # the old names of release 0.1 (layout, drain timeout, reboot permission); the GPU clients
    # of every host use the new name, and this host's old names must not disturb them
    "oldnames": {
        "heteromig_sim_gpus": "1xH100-SXM5-80GB",
        "mig_partition_layout": "all-2g",
        "mig_partition_drain_timeout": 5,
        "mig_partition_allow_reboot": False,
    },
    "conflict": {
        "heteromig_sim_gpus": "1xH100-SXM5-80GB",
        "heteromig_mig_layout": "all-1g",
        "mig_partition_layout": "all-7g",
    },
}


class Worker:
    """A process registered on a simulated MIG slice.

    ``sleep`` runs under a shell that waits for it, so it is reaped the moment it dies (this
    machine's pid 1 reaps nothing, and a zombie would still look alive to the simulator).
    """

    def __init__(self) -> None:
        self.shell = subprocess.Popen(
            ["sh", "-c", "sleep 600 & echo $!; wait"], stdout=subprocess.PIPE, text=True
        )
        assert self.shell.stdout is not None
        self.pid = int(self.shell.stdout.readline())

    def alive(self) -> bool:
        return self.shell.poll() is None

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.shell.wait(10)


class Fleet:
    def __init__(self, lab: SshLab) -> None:
        self.lab = lab
        self.runs: dict[str, LabRun] = {}
        self.workers: dict[str, Worker] = {}
        self.before: dict[str, list[dict[str, Any]]] = {}
        self.logs: dict[str, list[str]] = {}

    def state_path(self, host: str) -> Path:
        return self.lab.hostdir(host) / "nvml-sim.json"

    def gpus(self, host: str) -> list[dict[str, Any]]:
        gpus: list[dict[str, Any]] = json.loads(self.state_path(host).read_text())["gpus"]
        return gpus

    def service_log(self, host: str) -> list[str]:
        log = self.lab.hostdir(host) / "services" / "log"
        return log.read_text().splitlines() if log.exists() else []

    def running(self, host: str) -> set[str]:
        return {
            p.name.removesuffix(".running")
            for p in (self.lab.hostdir(host) / "services").glob("*.running")
        }

    def ok(self, run: str, task: str, host: str) -> dict[str, Any]:
        result = self.runs[run].result(task, host)
        assert result.outcome == "ok", f"{host}: {task}: {result.outcome}: {result.res.get('msg')}"
        return result.res

    def failure(self, run: str, host: str) -> str:
        result = self.runs[run].result(SUMMARY, host)
        assert result.outcome == "failed", f"{host}: expected a failure, got {result.outcome}"
        msg: str = result.res["msg"]
        assert "Traceback" not in msg and "MODULE FAILURE" not in msg, msg
        return msg


def _prepare(lab: SshLab, fleet: Fleet) -> None:
    for host in lab.names:
        hostdir = lab.hostdir(host)
        script = hostdir / "svc.sh"
        script.write_text(FAKE_SERVICE)
        script.chmod(0o755)
        (hostdir / "services").mkdir()
        for service in RUNNING:
            (hostdir / "services" / f"{service}.running").touch()
    # the simulated GPUs and what they carried before the run (set up through the simulator)
    for host in lab.names:
        open_backend(
            "sim", str(fleet.state_path(host)), SCENARIOS[host]["heteromig_sim_gpus"]
        ).close()
    for host in ("busy", "drain", "fault"):
        backend = open_backend(
            "sim", str(fleet.state_path(host)), SCENARIOS[host]["heteromig_sim_gpus"]
        )
        run_host(backend, parse_gpu_entries("all-1g"))
        backend.close()
    a100 = open_backend("sim", str(fleet.state_path("a100")), "4xA100-SXM4-80GB")
    a100.nvml.nvmlDeviceSetMigMode(
        a100.nvml.nvmlDeviceGetHandleByIndex(2), pynvml.NVML_DEVICE_MIG_ENABLE
    )
    a100.close()
    for host in ("busy", "drain"):
        worker = Worker()
        fleet.workers[host] = worker
        slice_uuid = fleet.gpus(host)[-1]["gpu_instances"][0]["compute_instances"][0]["uuid"]
        register_process(str(fleet.state_path(host)), worker.pid, slice_uuid, "mlperf-bench")
    # the third GPU-instance creation of the run fails once
    inject_fault(
        str(fleet.state_path("fault")),
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        pynvml.NVML_ERROR_UNKNOWN,
        skip=2,
    )
    for host in lab.names:
        fleet.before[host] = fleet.gpus(host)


def _check_diff(lab: SshLab, extravars: dict[str, Any], limit: str) -> LabRun:
    """``ansible-playbook --check --diff`` of the playbook (lab.run_playbook has no cmdline)."""
    import sys

    import ansible_runner

    rundir = lab.labdir / "runs" / "check-diff"
    rundir.mkdir(parents=True)
    runner = ansible_runner.run(
        private_data_dir=str(rundir),
        project_dir=str(Path(ANSIBLE_CFG).parent),
        playbook=str(Path(ANSIBLE_CFG).parent / PLAYBOOK),
        inventory=str(lab.inventory),
        extravars=extravars,
        limit=limit,
        cmdline="--check --diff",
        quiet=True,
        timeout=240,
        cancel_callback=lambda: False,
        envvars={
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
            "ANSIBLE_NOCOLOR": "1",
            "HETEROMIG_REPORT_DIR": str(rundir / "reports"),
            LAB_MARKER: str(lab.labdir),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(lab.labdir / "tmp"),
            "ANSIBLE_PARAMIKO_LOOK_FOR_KEYS": "False",
        },
    )
    with runner.stdout as out:
        stdout = out.read()
    return LabRun(
        rc=int(runner.rc if runner.rc is not None else -1),
        status=str(runner.status),
        stdout=stdout,
        events=list(runner.events),
        private_data_dir=rundir,
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("mig-lab")
    specs = []
    for name, hostvars in SCENARIOS.items():
        svc = str(base / name / "svc.sh")
        specs.append(
            HostSpec(
                name,
                {
                    "heteromig_gpu_backend": "sim",
                    # GPU clients as stop/start commands of the fake service manager, in this order;
                    # those not running are left alone
                    "heteromig_mig_gpu_clients": [
                        {
                            "name": service,
                            "stop": [svc, "stop", service],
                            "start": [svc, "start", service],
                            "status": [svc, "status", service],
                            "order": order,
                        }
                        for order, service in enumerate(SERVICES)
                    ],
                    **hostvars,
                },
            )
        )
    lab = SshLab(specs, base)
    fleet = Fleet(lab)
    try:
        _prepare(lab, fleet)
        lab.stop_host("gone")
        fleet.runs["first"] = lab.run_playbook(PLAYBOOK, extravars=ONE_BATCH, timeout=240)
        fleet.runs["again"] = lab.run_playbook(
            PLAYBOOK, extravars=ONE_BATCH, limit=",".join(SUCCEEDS), timeout=240
        )
        fleet.before["h100-again"] = fleet.gpus("h100")
        fleet.logs["h100-again"] = fleet.service_log("h100")
        # a30 has no GPU 3 of that model: its layout already matches, so it never reaches a batch
        fleet.runs["one-gpu"] = lab.run_playbook(
            PLAYBOOK,
            extravars={
                **ONE_BATCH,
                "heteromig_mig_layout": None,
                "heteromig_mig_gpus": [
                    {
                        "devices": [3],
                        "model": "H100-SXM5-80GB",
                        "layout": "all-balanced",
                        "optional": True,
                    }
                ],
            },
            limit="h100,a30",
            timeout=240,
        )
        fleet.before["h100-check"] = fleet.gpus("h100")
        fleet.logs["h100-check"] = fleet.service_log("h100")
        fleet.runs["check-diff"] = _check_diff(
            lab,
            {
                **ONE_BATCH,
                "heteromig_mig_layout": None,
                "heteromig_mig_gpus": [{"devices": [0], "layout": "all-balanced"}],
            },
            "h100",
        )
        yield fleet
    finally:
        for worker in fleet.workers.values():
            worker.stop()
        lab.close()


# ------------------------------------------------------------------------ apply, re-apply
def test_first_run_outcomes(fleet: Fleet) -> None:
    run = fleet.runs["first"]
    assert run.hosts(SUMMARY, "ok") == {*SUCCEEDS, "oldnames"}, run.stdout[-3000:]
    assert run.hosts(SUMMARY, "failed") == set(FAILS)


def test_the_planning_play_changes_nothing(fleet: Fleet) -> None:
    run = fleet.runs["first"]
    for host in SUCCEEDS:
        first_plan = run.results(PLAN, host)[0]
        assert first_plan.outcome == "ok" and first_plan.res["changed"] is False, host
        assert first_plan.res["would_change"] is True, host
    # the bad input failed its plan in the planning play too, and was sent to a batch
    assert run.results(PLAN, "badinput")[0].outcome == "failed"


def test_apply_returns_every_slice(fleet: Fleet) -> None:
    result = fleet.ok("first", APPLY, "h100")
    assert result["changed"] and len(result["gpus"]) == 8
    devices = result["mig_devices"]
    assert len(devices) == 56
    assert {d["profile"] for d in devices} == {"1g.10gb"}
    for key in (
        "uuid",
        "gpu_index",
        "gpu_instance_id",
        "compute_instance_id",
        "profile",
        "placement",
    ):
        assert all(key in d for d in devices), key
    assert len({d["uuid"] for d in devices}) == 56


def test_second_run_changes_nothing_and_stops_no_service(fleet: Fleet) -> None:
    run = fleet.runs["again"]
    assert run.rc == 0, run.stdout[-3000:]
    for host in SUCCEEDS:
        plan = fleet.ok("again", PLAN, host)
        assert plan["would_change"] is False, (host, plan["gpus"])
        assert run.stats["changed"].get(host, 0) == 0
        assert run.results(APPLY, host) == []
        assert run.results(SUMMARY, host) == []
    # no host changes, so the batch play has no host at all (and no warning about that)
    assert "PLAY [Reconfigure MIG, batch by batch]" in run.stdout
    assert "skipping: no hosts matched" in run.stdout
    assert "WARNING" not in run.stdout
    # what the first run applied, it recorded: the second run plans nothing again
    assert fleet.ok("again", PLAN, "h100")["plan_reused"] is True
    assert "before" not in fleet.ok("again", PLAN, "h100")["gpus"][0]
    lines = fleet.ok("again", FLEET, "h100")["msg"]
    assert "h100: unchanged (8 GPUs already match; 56 MIG devices)" in lines
    assert "a30: unchanged (4 GPUs already match; 16 MIG devices)" in lines
    # services were stopped and started exactly once, in the first run, not in the second
    assert fleet.logs["h100-again"] == [
        "stop nvidia-dcgm",
        "stop dcgm-exporter",
        "start dcgm-exporter",
        "start nvidia-dcgm",
    ]


def test_named_layout_resolves_per_model(fleet: Fleet) -> None:
    a30 = fleet.ok("first", APPLY, "a30")["mig_devices"]
    assert [d["profile"] for d in a30] == ["1g.6gb"] * 16
    h100 = fleet.ok("first", APPLY, "h100")["mig_devices"]
    assert [d["profile"] for d in h100] == ["1g.10gb"] * 56


def test_change_one_gpu_of_eight(fleet: Fleet) -> None:
    result = fleet.ok("one-gpu", APPLY, "h100")
    assert [g["index"] for g in result["gpus"] if g["changed"]] == [3]
    before, after = fleet.before["h100-again"], fleet.gpus("h100")
    for index in (0, 1, 2, 4, 5, 6, 7):
        assert after[index] == before[index], f"GPU {index} was touched"
        ids = sorted(gi["id"] for gi in after[index]["gpu_instances"])
        assert ids == [7, 8, 9, 10, 11, 12, 13]
    assert sorted((gi["start"], gi["size"]) for gi in after[3]["gpu_instances"]) == [
        (0, 2),
        (2, 1),
        (3, 1),
        (4, 4),
    ]
    summary = fleet.ok("one-gpu", SUMMARY, "h100")["msg"]
    assert summary.startswith("h100: changed GPU 3 (H100-SXM5-80GB) to all-balanced;")


def test_only_the_hosts_that_change_go_to_the_batches(fleet: Fleet) -> None:
    run = fleet.runs["one-gpu"]
    assert fleet.ok("one-gpu", PLAN, "a30")["would_change"] is False
    assert run.results(APPLY, "a30") == [] and run.results(SUMMARY, "a30") == []
    assert [r.outcome for r in run.results(SUMMARY, "h100")] == ["ok"]
    lines = fleet.ok("one-gpu", FLEET, "h100")["msg"]
    # no GPU of the a30 is managed by this request, so none is counted
    assert lines == [lines[0], "a30: unchanged (0 GPUs already match; 0 MIG devices)"]
    assert lines[0].startswith("h100: changed GPU 3 (H100-SXM5-80GB) to all-balanced;")


# -------------------------------------------------------------------------- mode changes
def test_ampere_resets_only_the_gpus_that_change(fleet: Fleet) -> None:
    result = fleet.ok("first", APPLY, "a100")
    changed = {g["index"]: g for g in result["gpus"]}
    assert sorted(changed) == [0, 2]
    assert changed[0]["reset"] and changed[2]["reset"]
    assert changed[2]["before"]["mig_pending"] and not changed[2]["before"]["mig_enabled"]
    after = fleet.gpus("a100")
    for index in (1, 3):
        assert after[index] == fleet.before["a100"][index]
        assert (after[index]["mig_current"], after[index]["mig_pending"]) == (0, 0)
    for index in (0, 2):
        assert (after[index]["mig_current"], after[index]["mig_pending"]) == (1, 1)
        assert len(after[index]["gpu_instances"]) == 4
    assert "reset GPU 0, 2" in fleet.ok("first", SUMMARY, "a100")["msg"]


def test_hopper_mode_change_needs_no_reset(fleet: Fleet) -> None:
    result = fleet.ok("first", APPLY, "h100")
    assert not any(g["reset"] for g in result["gpus"])
    assert all(g["actions"][0] == "enabled MIG" for g in result["gpus"])


def test_reset_impossible_reboots_when_allowed_then_continues(fleet: Fleet) -> None:
    run = fleet.runs["first"]
    assert run.outcome("Reboot the simulated GPUs", "noreset") == "ok"
    after = fleet.ok("first", "Apply the MIG layout after the reboot", "noreset")
    assert not after["reboot_required"] and len(after["mig_devices"]) == 14
    assert "rebooted" in fleet.ok("first", SUMMARY, "noreset")["msg"]


def test_reset_impossible_without_permission_names_the_gpus(fleet: Fleet) -> None:
    msg = fleet.failure("first", "noreset-deny")
    assert "GPU(s) 0, 1 could not be reset to apply a MIG mode change" in msg
    assert "Not Supported" in msg and "heteromig_mig_allow_reboot=true" in msg
    gpus = fleet.gpus("noreset-deny")
    assert [(g["mig_current"], g["mig_pending"]) for g in gpus] == [(0, 1), (0, 1)]
    assert (
        fleet.runs["first"].results("Reboot the simulated GPUs", "noreset-deny") == []
        or fleet.runs["first"].outcome("Reboot the simulated GPUs", "noreset-deny") != "ok"
    )


# ------------------------------------------------------------------------ busy and drain
def test_busy_gpu_is_refused_naming_the_process(fleet: Fleet) -> None:
    msg = fleet.failure("first", "busy")
    worker = fleet.workers["busy"]
    assert f"pid {worker.pid} (mlperf-bench) on GPU 1 GPU instance 7, compute instance 0" in msg
    assert "nothing was changed" in msg
    assert fleet.gpus("busy") == fleet.before["busy"]
    assert worker.alive()
    # refused at planning: no service was stopped
    assert fleet.service_log("busy") == []


def test_drain_terminates_the_process(fleet: Fleet) -> None:
    worker = fleet.workers["drain"]
    assert worker.shell.wait(10) == 0  # its sleep was terminated, so the shell's wait returned
    result = fleet.ok("first", APPLY, "drain")
    assert [p["pid"] for p in result["gpus"][0]["drained"]] == [worker.pid]
    assert [d["profile"] for d in result["mig_devices"]] == ["7g.80gb"]
    assert f"drained pid {worker.pid}" in fleet.ok("first", SUMMARY, "drain")["msg"]


# ----------------------------------------------------------------------- faults, uneven
def test_nvml_failure_midway_rolls_back_and_restores_services(fleet: Fleet) -> None:
    msg = fleet.failure("first", "fault")
    assert (
        "changing GPU 0 (H100-SXM5-80GB, 00000000:1B:00.0) failed: Unknown Error (NVML error 999)"
        in msg
    )
    assert "Its previous layout was restored" in msg
    before, after = fleet.before["fault"], fleet.gpus("fault")
    assert [
        sorted((gi["profile_id"], gi["start"], gi["id"]) for gi in g["gpu_instances"])
        for g in after
    ] == [
        sorted((gi["profile_id"], gi["start"], gi["id"]) for gi in g["gpu_instances"])
        for g in before
    ]
    assert fleet.service_log("fault") == [
        "stop nvidia-dcgm",
        "stop dcgm-exporter",
        "start dcgm-exporter",
        "start nvidia-dcgm",
    ]
    assert fleet.running("fault") == set(RUNNING)


def test_services_are_restored_when_a_reboot_is_refused(fleet: Fleet) -> None:
    assert fleet.service_log("noreset-deny")[-2:] == ["start dcgm-exporter", "start nvidia-dcgm"]
    assert fleet.running("noreset-deny") == set(RUNNING)


def test_uneven_layout_is_created(fleet: Fleet) -> None:
    devices = fleet.ok("first", APPLY, "uneven")["mig_devices"]
    assert [(d["profile"], d["placement"]["start"]) for d in devices] == [
        ("2g.35gb", 0),
        ("1g.18gb", 2),
        ("1g.18gb", 3),
        ("3g.71gb", 4),
    ]


def test_fleet_summary_lists_every_host(fleet: Fleet) -> None:
    lines = fleet.ok("first", FLEET, "h100")["msg"]
    assert len(lines) == len(SCENARIOS)
    by_host = {line.split(":", 1)[0]: line for line in lines}
    assert set(by_host) == set(SCENARIOS)
    for host in FAILS:
        assert by_host[host].startswith(f"{host}: FAILED: ")
    assert by_host["a30"].startswith("a30: changed GPU 0, 1, 2, 3 (A30-24GB) to all-1g;")
    assert "stopped and restarted nvidia-dcgm, dcgm-exporter" in by_host["a30"]


def test_an_unreachable_host_gets_no_batch(fleet: Fleet) -> None:
    run = fleet.runs["first"]
    assert run.outcome(PLAN, "gone") == "unreachable"
    assert run.results(APPLY, "gone") == [] and run.results(SUMMARY, "gone") == []
    assert fleet.gpus("gone") == fleet.before["gone"]
    lines = fleet.ok("first", FLEET, "h100")["msg"]
    assert "gone: not reached (unreachable, or the rollout stopped before it)" in lines


def test_bad_input_fails_in_its_batch_and_changes_nothing(fleet: Fleet) -> None:
    msg = fleet.failure("first", "badinput")
    assert "unknown profile 5g.50gb: H100-SXM5-80GB offers" in msg
    assert fleet.gpus("badinput") == fleet.before["badinput"]
    assert fleet.service_log("badinput") == []
    assert fleet.runs["first"].results(APPLY, "badinput") == []


# ------------------------------------------------------------------ old variable names
def test_old_variable_names_still_work_and_warn(fleet: Fleet) -> None:
    run = fleet.runs["first"]
    result = fleet.ok("first", APPLY, "oldnames")
    assert [d["profile"] for d in result["mig_devices"]] == ["2g.20gb"] * 3
    assert fleet.ok("first", SUMMARY, "oldnames")["msg"].startswith(
        "oldnames: changed GPU 0 (H100-SXM5-80GB) to all-2g;"
    )
    # the planning task warns once per old name, naming the new variable (the module's
    # deprecation, the same in both plays)
    plan = run.results(PLAN, "oldnames")[0].res
    messages = sorted(d["msg"] for d in plan["deprecations"])
    assert messages == [
        "the variable mig_partition_allow_reboot is deprecated: set heteromig_mig_allow_reboot instead",
        "the variable mig_partition_drain_timeout is deprecated: set heteromig_mig_drain_timeout instead",
        "the variable mig_partition_layout is deprecated: set heteromig_mig_layout instead",
    ]
    assert (
        "[DEPRECATION WARNING]: the variable mig_partition_layout is deprecated: "
        "set heteromig_mig_layout instead" in run.stdout
    )
    # hosts that set the new names only get no warning
    assert (
        "deprecations" not in run.results(PLAN, "h100")[0].res
        or run.results(PLAN, "h100")[0].res["deprecations"] == []
    )


def test_old_and_new_name_set_differently_fails_and_changes_nothing(fleet: Fleet) -> None:
    msg = fleet.failure("first", "conflict")
    assert (
        "heteromig_mig_layout and its deprecated old name mig_partition_layout are both set, "
        "to different values; set only the new name. Nothing was changed."
    ) in msg
    assert fleet.gpus("conflict") == fleet.before["conflict"]
    assert fleet.service_log("conflict") == []
    assert fleet.runs["first"].results(APPLY, "conflict") == []
    assert fleet.runs["first"].results(PLAN, "conflict")[0].outcome == "failed"


# --------------------------------------------------------------------- --check --diff
def test_check_diff_shows_slices_and_nvidia_smi_commands_and_changes_nothing(fleet: Fleet) -> None:
    run = fleet.runs["check-diff"]
    assert run.rc == 0, run.stdout[-3000:]
    result = fleet.ok("check-diff", APPLY, "h100")
    gpu0 = result["gpus"][0]
    # GPU 0 carries 7 x 1g.10gb (GPU instances 7..13 at starts 0..6): the balanced layout keeps
    # the 1g at 2 and 3, and creates 2g.20gb (id 14) at 0 and 3g.40gb (id 9) at 4
    commands = [
        "nvidia-smi mig -i 0 -gi 7,8,11,12,13 -dci",
        "nvidia-smi mig -i 0 -gi 7,8,11,12,13 -dgi",
        "nvidia-smi mig -i 0 -cgi 14:0,9:4 -C",
    ]
    assert gpu0["nvidia_smi_commands"] == commands
    assert [(s["profile"], s["placement"]["start"], s["kept"]) for s in gpu0["planned_slices"]] == [
        ("2g.20gb", 0, False),
        ("1g.10gb", 2, True),
        ("1g.10gb", 3, True),
        ("3g.40gb", 4, False),
    ]
    out = run.stdout
    assert "equivalent nvidia-smi commands:" in out
    for command in commands:
        assert f"    {command}\n" in out
    assert "  3g.40gb  id 9   placement 4:4  memory slices 4-7" in out
    # nothing changed, no service stopped or started
    assert fleet.gpus("h100") == fleet.before["h100-check"]
    assert fleet.service_log("h100") == fleet.logs["h100-check"]
    # the summary counts the planned MIG devices: GPU 0 goes from 7 to 4; GPU 3 has 4 and the
    # six others 7 each (53 now, 50 planned)
    summary = fleet.ok("check-diff", SUMMARY, "h100")["msg"]
    assert summary.startswith("h100: would change GPU 0 (H100-SXM5-80GB) to all-balanced;"), summary
    assert summary.endswith("50 MIG devices planned (53 now)"), summary


def test_the_summary_counts_applied_devices_after_a_change(fleet: Fleet) -> None:
    assert fleet.ok("first", SUMMARY, "h100")["msg"].endswith("56 MIG devices applied")
    assert fleet.ok("first", SUMMARY, "a30")["msg"].endswith("16 MIG devices applied")
