"""gpu_facts over real SSH: three GPU models, every bad input of issue 2, an unreachable host.

One lab and one run of playbooks/gpu_inventory.yml serve all the tests of this module: each
host carries one case, and each test reads its host's outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ansible
import pytest
import yaml

from lab import HostSpec, LabRun, SshLab

pytestmark = pytest.mark.integration

TASK = "Read GPUs, MIG profiles, instances and processes through NVML"
TABLE_TASK = "Print the fleet's GPU and MIG inventory"

GOOD_HOSTS = {
    "h100": "2xH100-SXM5-80GB",
    "a100": "2xA100-SXM4-40GB",
    "a30": "1xA30-24GB",
}
NEWER_STATE = {"format": "heteromig.nvml-sim", "version": 99, "gpus": []}
CORRUPT_STATE = '{"format": "heteromig.nvml-sim", "version": 1, "gpus": ['


def _sim(gpus: str) -> dict[str, Any]:
    return {"heteromig_gpu_backend": "sim", "heteromig_sim_gpus": gpus}


def _specs() -> list[HostSpec]:
    specs = [HostSpec(name, _sim(gpus)) for name, gpus in GOOD_HOSTS.items()]
    specs += [
        HostSpec("unknown-model", _sim("2xH300-SXM6-99GB")),
        HostSpec("typo-backend", {"heteromig_gpu_backend": "simm"}),
        HostSpec("no-driver", {"heteromig_gpu_backend": "nvml"}),
        HostSpec("corrupt-state", _sim("1xH100")),
        HostSpec("newer-state", _sim("1xH100")),
        HostSpec("gone", _sim("1xH100")),
    ]
    return specs


def write_fleet_inventory(lab: SshLab, path: Path) -> Path:
    """The lab's hosts in the group the collection's playbooks target, ``gpu_hosts``."""
    hosts = {name: lab.host_vars(name) for name in lab.names}
    path.write_text(yaml.safe_dump({"gpu_hosts": {"hosts": hosts}}, sort_keys=False))
    return path


class Fleet:
    def __init__(self, lab: SshLab, run: LabRun) -> None:
        self.lab = lab
        self.run = run

    def ok_facts(self, host: str) -> dict[str, Any]:
        result = self.run.result(TASK, host)
        assert result.outcome == "ok", f"{host}: {result.outcome}: {result.res.get('msg')}"
        facts: dict[str, Any] = result.res["ansible_facts"]
        return facts

    def failure(self, host: str) -> str:
        result = self.run.result(TASK, host)
        assert result.outcome == "failed", f"{host} should fail, got {result.outcome}"
        msg: str = result.res["msg"]
        # ansible-core >= 2.19 attaches an 'exception' key to every fail_json (shown at -vvv);
        # a crash instead reads "MODULE FAILURE" with the Python traceback on stderr.
        assert not msg.startswith("MODULE FAILURE"), f"{host} crashed: {result.res}"
        assert "Traceback" not in msg + str(result.res.get("module_stderr", "")), result.res
        return msg


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    lab = SshLab(_specs(), tmp_path_factory.mktemp("gpu-facts-lab"))
    try:
        corrupt = lab.hostdir("corrupt-state") / "nvml-sim.json"
        corrupt.write_text(CORRUPT_STATE)
        newer = lab.hostdir("newer-state") / "nvml-sim.json"
        newer.write_text(json.dumps(NEWER_STATE))
        lab.stop_host("gone")
        inventory = write_fleet_inventory(lab, lab.labdir / "fleet.yml")
        run = lab.run_playbook("playbooks/gpu_inventory.yml", inventory=inventory, timeout=240)
        yield Fleet(lab, run)
    finally:
        lab.close()


@pytest.mark.parametrize("host", sorted(GOOD_HOSTS))
def test_each_host_reports_its_own_gpu_model(fleet: Fleet, host: str) -> None:
    facts = fleet.ok_facts(host)
    count, model = GOOD_HOSTS[host].split("x", 1)
    gpus = facts["heteromig_gpus"]
    assert [gpu["model"] for gpu in gpus] == [model] * int(count)
    assert facts["heteromig_nvml"]["backend"] == "sim"
    assert facts["heteromig_nvml"]["simulated"] is True
    assert len({gpu["uuid"] for gpu in gpus}) == len(gpus), "GPU UUIDs must be distinct"


def test_profiles_follow_each_model(fleet: Fleet) -> None:
    names = {
        host: [p["name"] for p in fleet.ok_facts(host)["heteromig_gpus"][0]["profiles"]]
        for host in GOOD_HOSTS
    }
    assert names["h100"] == [
        "1g.10gb",
        "1g.10gb+me",
        "1g.20gb",
        "2g.20gb",
        "3g.40gb",
        "4g.40gb",
        "7g.80gb",
    ]
    assert names["a100"] == [
        "1g.5gb",
        "1g.5gb+me",
        "1g.10gb",
        "2g.10gb",
        "3g.20gb",
        "4g.20gb",
        "7g.40gb",
    ]
    assert names["a30"] == ["1g.6gb", "1g.6gb+me", "2g.12gb", "2g.12gb+me", "4g.24gb"]
    a30 = {p["name"]: p for p in fleet.ok_facts("a30")["heteromig_gpus"][0]["profiles"]}
    assert a30["2g.12gb"]["placements_text"] == "{0,2}:2"
    assert a30["1g.6gb"]["id"] == 14


def test_host_state_stays_on_its_own_host(fleet: Fleet) -> None:
    for host in GOOD_HOSTS:
        state = json.loads((fleet.lab.hostdir(host) / "nvml-sim.json").read_text())
        assert len(state["gpus"]) == int(GOOD_HOSTS[host].split("x")[0])


def test_unknown_simulated_model_is_named(fleet: Fleet) -> None:
    msg = fleet.failure("unknown-model")
    assert "unknown simulated GPU model 'H300-SXM6-99GB'" in msg
    assert "H100-SXM5-80GB" in msg, "the error should list the known models"
    assert not (fleet.lab.hostdir("unknown-model") / "nvml-sim.json").exists()


def test_misspelled_backend_is_named(fleet: Fleet) -> None:
    msg = fleet.failure("typo-backend")
    assert "backend" in msg and "simm" in msg and "nvml, sim" in msg


def test_missing_nvml_library_is_named_without_fallback(fleet: Fleet) -> None:
    msg = fleet.failure("no-driver")
    assert "libnvidia-ml.so.1" in msg
    assert not (fleet.lab.hostdir("no-driver") / "nvml-sim.json").exists()


def test_corrupt_state_file_is_named_and_left_alone(fleet: Fleet) -> None:
    msg = fleet.failure("corrupt-state")
    assert "corrupt" in msg and "nvml-sim.json" in msg
    assert (fleet.lab.hostdir("corrupt-state") / "nvml-sim.json").read_text() == CORRUPT_STATE


def test_newer_state_file_is_named_and_left_alone(fleet: Fleet) -> None:
    msg = fleet.failure("newer-state")
    assert "newer heteromig" in msg and "version 99" in msg
    state = json.loads((fleet.lab.hostdir("newer-state") / "nvml-sim.json").read_text())
    assert state == NEWER_STATE


def test_unreachable_host_does_not_stop_the_others(fleet: Fleet) -> None:
    assert fleet.run.outcome(TASK, "gone") == "unreachable"
    assert fleet.run.hosts(TASK, "ok") == set(GOOD_HOSTS)


def test_fleet_table_lists_every_host(fleet: Fleet) -> None:
    table = fleet.run.result(TABLE_TASK, "localhost").res["msg"]
    rows = [line.split()[0] for line in table[2:]]
    assert rows.count("h100") == 2 and rows.count("a100") == 2 and rows.count("a30") == 1
    for host in ("gone", "unknown-model", "typo-backend", "no-driver"):
        line = next(line for line in table if line.startswith(host + " "))
        assert "no GPU facts (unreachable or failed)" in line


@pytest.mark.compat
@pytest.mark.skipif(
    tuple(int(x) for x in ansible.__version__.split(".")[:2]) >= (2, 21),
    reason="paramiko was removed in ansible-core 2.21; this runs in the 2.19 compatibility cell",
)
def test_gpu_facts_through_paramiko(tmp_path: Path) -> None:
    lab = SshLab([HostSpec("h100", _sim("1xH100")), HostSpec("a30", _sim("1xA30"))], tmp_path)
    try:
        hosts = {name: lab.host_vars(name, "paramiko") for name in lab.names}
        inventory = tmp_path / "fleet.yml"
        inventory.write_text(yaml.safe_dump({"gpu_hosts": {"hosts": hosts}}, sort_keys=False))
        run = lab.run_playbook("playbooks/gpu_inventory.yml", inventory=inventory, timeout=180)
        assert run.hosts(TASK, "ok") == {"h100", "a30"}, run.stdout[-2000:]
        facts = run.result(TASK, "a30").res["ansible_facts"]
        assert facts["heteromig_gpus"][0]["model"] == "A30-24GB"
    finally:
        lab.close()
