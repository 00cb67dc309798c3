"""heteromig.fleet.engine_build through ansible-playbook on a local simulated host.

The host (ansible_connection=local, its own host root) has two simulated GPUs with MIG enabled
and mixed profiles, created through the simulator's NVML API first. The playbook installs the
host runtime (role heteromig.fleet.host_runtime), reads the facts, then builds engines: a check
run, a build, a second build (nothing changes), and a build after one engine was corrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pynvml
import pytest
import yaml

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import HARNESS_MODULE
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import (
    _engine_spec as engine_spec,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _engine_store as store
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
    SimulatedNvml,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._runtime_sources import (
    runtime_sources,
)
from lab.runner import LabRun, run_playbook

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent

PARALLEL = 4
COMBINATIONS = [
    {"benchmark": "synth-mlp-small", "scenario": "offline"},
    {"model": "synth-conv-1d", "scenario": "SingleStream", "accuracy_target": "99.9"},
]
# (gpu index, GPU-instance profile id, compute-instance profile id) in creation order
LAYOUT = [
    (0, 19, 0),
    (0, 19, 0),
    (0, 14, 1),
    (0, 9, 2),  # H100: 1g.10gb x2, 2g.20gb, 3g.40gb
    (1, 9, 2),
    (1, 14, 1),
    (1, 19, 0),  # A100 40GB: 3g.20gb, 2g.10gb, 1g.5gb
]
EXPECTED_GROUPS = {
    ("H100-SXM5-80GB", "1g.10gb"),
    ("H100-SXM5-80GB", "2g.20gb"),
    ("H100-SXM5-80GB", "3g.40gb"),
    ("A100-SXM4-40GB", "3g.20gb"),
    ("A100-SXM4-40GB", "2g.10gb"),
    ("A100-SXM4-40GB", "1g.5gb"),
}

PLAYBOOK = """
- name: Build engines per MIG profile
  hosts: gpu_hosts
  gather_facts: false
  vars:
    build_args: &build
      backend: sim
      sim_state: "{{ heteromig_sim_state }}"
      host_root: "{{ heteromig_host_root }}"
      parallel: %(parallel)d
      combinations: %(combinations)s
  tasks:
    - name: Install the host runtime
      ansible.builtin.import_role:
        name: heteromig.fleet.host_runtime

    - name: Read the GPUs
      heteromig.fleet.gpu_facts:
        backend: sim
        sim_state: "{{ heteromig_sim_state }}"

    - name: Plan engines
      heteromig.fleet.engine_build:
        <<: *build
        mig_devices: "{{ heteromig_mig_devices }}"
      check_mode: true

    - name: Build engines
      heteromig.fleet.engine_build:
        <<: *build
        mig_devices: "{{ heteromig_mig_devices }}"
      register: first

    - name: Build engines again
      heteromig.fleet.engine_build: *build

    - name: Corrupt one engine
      ansible.builtin.copy:
        content: "not an engine"
        dest: "{{ first.engines[0].path }}"
        mode: "0644"

    - name: Build after the corruption
      heteromig.fleet.engine_build: *build

    - name: Build NVIDIA engines (make generate_engines, a stand-in make here)
      heteromig.fleet.engine_build: &nvidia
        backend: sim
        sim_state: "{{ heteromig_sim_state }}"
        host_root: "{{ heteromig_host_root }}"
        harness: nvidia_mlperf
        harness_vars:
          workdir: "{{ heteromig_host_root }}/closed/NVIDIA"
          code_revision: v3.0
        combinations:
          - {benchmark: 3d-unet, scenario: Offline, accuracy_target: "99"}
          - {benchmark: 3d-unet-99.9, scenario: Offline}
          - {benchmark: bert, scenario: server, accuracy_target: "99.9"}
      environment:
        PATH: "{{ heteromig_host_root }}/fakebin:{{ lookup('ansible.builtin.env', 'PATH') }}"

    - name: Build NVIDIA engines again
      heteromig.fleet.engine_build:
        <<: *nvidia
        # the shorthand for harness_vars.workdir renders the same command: nothing to build
        mlperf_dir: "{{ heteromig_host_root }}/closed/NVIDIA"
        harness_vars: {code_revision: v3.0}
      environment:
        PATH: "{{ heteromig_host_root }}/fakebin:{{ lookup('ansible.builtin.env', 'PATH') }}"
"""

STANDIN_PLAYBOOK = """
- name: Build with a test profile whose build command is a stand-in
  hosts: gpu_hosts
  gather_facts: false
  tasks:
    - name: Build with the stand-in profile
      heteromig.fleet.engine_build: &standin
        backend: sim
        sim_state: "{{ heteromig_sim_state }}"
        host_root: "{{ heteromig_host_root }}"
        harness: standin_build
        harness_profile_dirs: ["%(profiles)s"]
        harness_vars: &standin_vars
          tool: "%(tool)s"
          log: "{{ heteromig_host_root }}/standin.log"
          workdir: "{{ heteromig_host_root }}/standin-cwd"
          tag: first
        combinations:
          - {benchmark: alpha, scenario: Offline}
          - {benchmark: alpha-99.9, scenario: server}
          - {benchmark: alpha, scenario: offline, accuracy_target: "99"}
          - {benchmark: beta, scenario: Offline}

    - name: Build with the stand-in profile again
      heteromig.fleet.engine_build: *standin

    - name: Build with the stand-in profile and another stamp input
      heteromig.fleet.engine_build:
        <<: *standin
        harness_vars:
          <<: *standin_vars
          tag: second

    - name: Check-protocol build
      heteromig.fleet.engine_build: &checked
        backend: sim
        sim_state: "{{ heteromig_sim_state }}"
        host_root: "{{ heteromig_host_root }}"
        harness: standin_check
        harness_profile_dirs: ["%(profiles)s"]
        harness_vars: &checked_vars
          tool: "%(tool)s"
          log: "{{ heteromig_host_root }}/checked.log"
          tag: one
        combinations: [{benchmark: alpha, scenario: Offline}]

    - name: Check-protocol build again
      heteromig.fleet.engine_build: *checked

    - name: Check-protocol build, forced
      heteromig.fleet.engine_build:
        <<: *checked
        force: true

    - name: Check-protocol plan after an input changed
      heteromig.fleet.engine_build:
        <<: *checked
        harness_vars:
          <<: *checked_vars
          tag: two
      check_mode: true

    - name: Build with a profile that has no build section
      heteromig.fleet.engine_build:
        <<: *standin
        harness: standin_nobuild
      ignore_errors: true

    - name: Build a benchmark the profile does not know
      heteromig.fleet.engine_build:
        <<: *standin
        combinations: [{benchmark: gamma, scenario: Offline}]
      ignore_errors: true
"""

# Records how it was called, as NVIDIA's `make generate_engines` would be: cwd, slice, argv.
FAKE_MAKE = """#!/bin/sh
line="$PWD|$CUDA_VISIBLE_DEVICES"
for arg in "$@"; do line="$line|$arg"; done
printf '%s\\n' "$line" >> "$(dirname "$0")/../make.log"
"""


def make_host(root: Path) -> tuple[Path, dict[str, Any]]:
    state = root / "nvml-sim.json"
    nvml = SimulatedNvml(str(state), "1xH100-SXM5-80GB,1xA100-SXM4-40GB")
    nvml.nvmlInit()
    for index in (0, 1):
        nvml.nvmlDeviceSetMigMode(
            nvml.nvmlDeviceGetHandleByIndex(index), pynvml.NVML_DEVICE_MIG_ENABLE
        )
    nvml.sim_reset_gpu(1)  # Ampere applies a MIG mode change at a GPU reset
    for index, gi_profile, ci_profile in LAYOUT:
        gi = nvml.nvmlDeviceCreateGpuInstance(nvml.nvmlDeviceGetHandleByIndex(index), gi_profile)
        nvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile)
    facts = read_host(nvml)
    nvml.nvmlShutdown()
    return state, facts


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[LabRun, Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("engine-build")
    root = tmp / "host"
    root.mkdir()
    state, facts = make_host(root)
    (root / "closed/NVIDIA").mkdir(parents=True)
    (root / "fakebin").mkdir()
    (root / "fakebin/make").write_text(FAKE_MAKE)
    (root / "fakebin/make").chmod(0o755)
    inventory = tmp / "hosts.yml"
    inventory.write_text(yaml.safe_dump(host_inventory(root, state)))
    playbook = tmp / "engines.yml"
    playbook.write_text(
        PLAYBOOK
        % {
            "parallel": PARALLEL,
            "combinations": yaml.safe_dump(COMBINATIONS, default_flow_style=True).strip(),
        }
    )
    # Each synthetic engine_build call runs the profile's check once per engine (12 here, about
    # 0.14 CPU-s each: a Python start, docs/harness.md "Cost"), 48 in all; on the shared 2-core machine at a load of 25
    # that alone took minutes of wall time, so this playbook gets more than the default 240 s.
    run = run_playbook(playbook, inventory=inventory, private_data_dir=tmp / "runner", timeout=480)
    assert (run.rc, run.status) == (0, "successful"), run.stdout[-6000:]
    return run, root, facts


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> tuple[LabRun, Path, dict[str, Any]]:
    """The stand-in profile's builds on their own simulated host (no harness runtime needed)."""
    tmp = tmp_path_factory.mktemp("engine-build-standin")
    root = tmp / "host"
    root.mkdir()
    state, facts = make_host(root)
    (root / "standin-cwd").mkdir()
    inventory = tmp / "hosts.yml"
    inventory.write_text(yaml.safe_dump(host_inventory(root, state)))
    playbook = tmp / "standin.yml"
    playbook.write_text(
        STANDIN_PLAYBOOK % {"profiles": HERE / "profiles", "tool": HERE / "standin_build.py"}
    )
    run = run_playbook(playbook, inventory=inventory, private_data_dir=tmp / "runner", timeout=240)
    assert (run.rc, run.status) == (0, "successful"), run.stdout[-6000:]
    return run, root, facts


def host_inventory(root: Path, state: Path) -> dict[str, Any]:
    return {
        "gpu_hosts": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "heteromig_host_root": str(root),
                    "heteromig_sim_state": str(state),
                    "host_runtime_install": False,
                }
            }
        }
    }


def engines(run: LabRun, task: str) -> list[dict[str, Any]]:
    return run.result(task, "localhost").res["engines"]


def test_check_mode_plans_one_engine_per_profile_and_combination(built: tuple) -> None:
    run, _root, facts = built
    plan = run.result("Plan engines", "localhost").res
    assert plan["changed"] is True
    assert {(p["gpu_model"], p["profile"]) for p in plan["profiles"]} == EXPECTED_GROUPS
    ones = next(p for p in plan["profiles"] if p["profile"] == "1g.10gb")
    assert len(ones["devices"]) == 2
    entries = plan["engines"]
    assert len(entries) == len(COMBINATIONS) * len(EXPECTED_GROUPS)
    assert {e["action"] for e in entries} == {"would_build"}
    assert all(e["started_at"] is None for e in entries)
    assert {(e["benchmark"], e["scenario"], e["accuracy_target"]) for e in entries} == {
        ("synth-mlp-small", "Offline", "99"),
        ("synth-conv-1d", "SingleStream", "99.9"),
    }
    assert all(e["command"][1:4] == ["-m", HARNESS_MODULE, "build-engine"] for e in entries)
    slices = {d["uuid"]: (d["gpu_model"], d["profile"]) for d in facts["mig_devices"]}
    assert all(slices[e["device_uuid"]] == (e["gpu_model"], e["profile"]) for e in entries)


def test_builds_run_per_profile_in_parallel_bounded(built: tuple) -> None:
    run, root, _facts = built
    result = run.result("Build engines", "localhost").res
    assert result["changed"] is True
    assert result["engine_dir"] == str(root / "engines")
    entries = result["engines"]
    assert {e["action"] for e in entries} == {"built"}
    # every engine file exists and records what it was built for
    for entry in entries:
        header = store.read_header(entry["path"])
        assert header["content_key"] == entry["content_key"]
        assert header["built_for"] == {
            "model": entry["benchmark"],
            "scenario": entry["scenario"],
            "accuracy_target": entry["accuracy_target"],
            "gpu_model": entry["gpu_model"],
            "profile": entry["profile"],
        }
        assert header["built_on"]["device"]["uuid"] == entry["device_uuid"]
    # the two 1g.10gb builds went to the two different 1g.10gb slices
    ones = {e["device_uuid"] for e in entries if e["profile"] == "1g.10gb"}
    assert len(ones) == 2
    # builds overlapped in time, never more than `parallel` at once
    events = sorted(
        [(e["started_at"], 1, e["profile"]) for e in entries]
        + [(e["finished_at"], -1, e["profile"]) for e in entries]
    )
    running, peak = 0, 0
    for _time, step, _profile in events:
        running += step
        peak = max(peak, running)
    assert 2 <= peak <= PARALLEL, peak
    first = entries[: len(EXPECTED_GROUPS)]  # one combination over every profile
    overlapping = [
        (a["profile"], b["profile"])
        for a in first
        for b in first
        if a is not b and a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
    ]
    assert overlapping and all(x != y for x, y in overlapping)
    # the builds registered on their slices and are gone: NVML lists no process now
    nvml = SimulatedNvml(str(root / "nvml-sim.json"))
    nvml.nvmlInit()
    try:
        assert [gpu["processes"] for gpu in read_host(nvml)["gpus"]] == [[], []]
    finally:
        nvml.nvmlShutdown()


def test_second_build_changes_nothing(built: tuple) -> None:
    run, _root, _facts = built
    again = run.result("Build engines again", "localhost").res
    assert again["changed"] is False
    assert {e["action"] for e in again["engines"]} == {"cached"}
    assert all(e["started_at"] is None for e in again["engines"])
    first = {e["path"]: e["content_key"] for e in engines(run, "Build engines")}
    assert {e["path"]: e["content_key"] for e in again["engines"]} == first


def test_corrupt_engine_is_rebuilt_alone(built: tuple) -> None:
    run, _root, _facts = built
    after = run.result("Build after the corruption", "localhost").res
    assert after["changed"] is True
    corrupted = engines(run, "Build engines")[0]["path"]
    actions = {e["path"]: (e["action"], e["reason"]) for e in after["engines"]}
    action, reason = actions.pop(corrupted)
    assert action == "rebuilt" and "is corrupt" in reason
    assert {a for a, _reason in actions.values()} == {"cached"}
    assert (
        store.read_header(corrupted)["content_key"]
        == engines(run, "Build engines")[0]["content_key"]
    )


def test_host_runtime_is_installed(built: tuple) -> None:
    run, root, _facts = built
    installed = root / "lib/ansible_collections/heteromig/fleet/plugins/module_utils"
    source = Path(store.__file__).resolve().parents[1]
    shipped = sorted(runtime_sources())
    assert sorted(p.relative_to(installed).as_posix() for p in installed.rglob("*.py")) == shipped
    assert "agent/_loadgen_harness.py" in shipped
    for name in shipped:
        assert (installed / name).read_bytes() == (source / name).read_bytes(), name
    assert (root / "engines").is_dir()
    synced = run.result("Install and check the host-side runtime", "localhost").res
    assert synced["harness_version"] == engine_spec.HARNESS_VERSION
    assert synced["checked"] == "full"
    assert synced["files_written"] == shipped


def test_nvidia_mlperf_runs_make_generate_engines_per_profile(built: tuple) -> None:
    run, root, facts = built
    result = run.result(
        "Build NVIDIA engines (make generate_engines, a stand-in make here)", "localhost"
    ).res
    entries = result["engines"]
    # 3d-unet 99 and 99.9 share one engine (hetero_high_accuracy); bert 99.9 has its own
    assert len(entries) == 2 * len(EXPECTED_GROUPS)
    assert {(e["benchmark"], e["config_ver"]) for e in entries} == {
        ("3d-unet", "hetero_high_accuracy"),
        ("bert", "hetero_high_accuracy"),
    }
    assert {e["action"] for e in entries} == {"built"}
    calls = (root / "make.log").read_text().splitlines()
    assert len(calls) == len(entries)
    slices = {d["uuid"]: (d["gpu_model"], d["profile"]) for d in facts["mig_devices"]}
    seen = set()
    for call in calls:
        cwd, device, *argv = call.split("|")
        assert cwd == str(root / "closed/NVIDIA")
        assert argv[0] == "generate_engines" and len(argv) == 2
        seen.add((argv[1], slices[device]))
    expected = {
        ("RUN_ARGS=--benchmarks=%s --scenarios=%s --config_ver=hetero_high_accuracy" % (b, s), g)
        for b, s in (("3d-unet", "Offline"), ("bert", "Server"))
        for g in EXPECTED_GROUPS
    }
    assert seen == expected
    again = run.result("Build NVIDIA engines again", "localhost").res
    assert again["changed"] is False and {e["action"] for e in again["engines"]} == {"cached"}
    assert len((root / "make.log").read_text().splitlines()) == len(entries)


def standin_calls(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "standin.log").read_text().splitlines()]


def test_a_profiles_build_command_is_what_runs(standin: tuple) -> None:
    """The stand-in profile's rendered build runs per combination and GPU model/profile."""
    run, root, facts = standin
    first = run.result("Build with the stand-in profile", "localhost").res
    # alpha Offline 99 twice (alpha and alpha at 99): one build; alpha-99.9 is alpha at 99.9
    assert [(e["benchmark"], e["scenario"], e["config_ver"]) for e in first["engines"]] == [
        (b, s, c)
        for b, s, c in (
            ("alpha", "Offline", "lo"),
            ("alpha", "Server", "hi"),
            ("beta", "Offline", "one"),
        )
        for _group in EXPECTED_GROUPS
    ]
    assert {e["action"] for e in first["engines"]} == {"built"}
    calls = standin_calls(root)[: len(first["engines"])]
    slices = {d["uuid"]: (d["gpu_model"], d["profile"]) for d in facts["mig_devices"]}
    log = str(root / "standin.log")
    expected = {
        (
            (
                "--log",
                log,
                "--benchmark",
                b,
                "--scenario",
                s,
                "--config-ver",
                c,
            ),
            group,
        )
        for b, s, c in (
            ("alpha", "Offline", "lo"),
            ("alpha", "Server", "hi"),
            ("beta", "Offline", "one"),
        )
        for group in EXPECTED_GROUPS
    }
    assert {(tuple(c["argv"]), slices[c["device"]]) for c in calls} == expected
    assert len(calls) == len(expected)
    assert {(c["cwd"], c["tag"], c["backend"]) for c in calls} == {
        (str(root / "standin-cwd"), "first", "sim")
    }
    for entry in first["engines"]:
        assert entry["command"][1:] == [
            str(HERE / "standin_build.py"),
            "--log",
            log,
            "--benchmark",
            entry["benchmark"],
            "--scenario",
            entry["scenario"],
            "--config-ver",
            entry["config_ver"],
        ]
        assert entry["cwd"] == str(root / "standin-cwd")
        assert entry["path"].startswith(str(root / "engines/standin_build/"))
    # the stamps hold: a second call runs nothing; another stamp input rebuilds everything
    again = run.result("Build with the stand-in profile again", "localhost").res
    assert again["changed"] is False and {e["action"] for e in again["engines"]} == {"cached"}
    second = run.result("Build with the stand-in profile and another stamp input", "localhost").res
    assert {(e["action"], e["reason"]) for e in second["engines"]} == {
        ("rebuilt", "build inputs changed since the last build")
    }
    later = standin_calls(root)[len(first["engines"]) :]
    assert len(later) == len(second["engines"]) and {c["tag"] for c in later} == {"second"}


def test_profiles_without_a_build_or_the_benchmark_are_refused(standin: tuple) -> None:
    run, _root, _facts = standin
    nobuild = run.result("Build with a profile that has no build section", "localhost")
    assert nobuild.outcome == "failed"
    assert "harness standin_nobuild has no build command" in nobuild.res["msg"]
    unknown = run.result("Build a benchmark the profile does not know", "localhost")
    assert unknown.outcome == "failed" and (
        "harness standin_build does not know the benchmark 'gamma'; its benchmarks are "
        "alpha, beta" in unknown.res["msg"]
    )


def test_a_profiles_check_decides_whether_its_build_runs(standin: tuple) -> None:
    """The check protocol with a stand-in: build, cached (no build), forced, and check mode."""
    run, root, _facts = standin
    calls = [json.loads(line) for line in (root / "checked.log").read_text().splitlines()]
    checks = [c for c in calls if "--check" in c["argv"]]
    builds = [c for c in calls if "--check" not in c["argv"]]
    groups = len(EXPECTED_GROUPS)
    first = run.result("Check-protocol build", "localhost").res["engines"]
    assert [(e["action"], e["reason"]) for e in first] == [("built", "stand-in: build")] * groups
    for entry in first:  # the key and path come from the check; the build reported the same
        assert entry["path"].startswith(str(root / "engines/standin_check/alpha-lo-"))
        assert Path(entry["path"]).read_text() == entry["content_key"]
    again = run.result("Check-protocol build again", "localhost").res
    assert again["changed"] is False
    assert {(e["action"], e["started_at"]) for e in again["engines"]} == {("cached", None)}
    forced = run.result("Check-protocol build, forced", "localhost").res["engines"]
    assert {(e["action"], e["reason"]) for e in forced} == {("rebuilt", "force: true")}
    assert [e["content_key"] for e in forced] == [e["content_key"] for e in first]
    plan = run.result("Check-protocol plan after an input changed", "localhost").res["engines"]
    assert {(e["action"], e["reason"]) for e in plan} == {("would_rebuild", "stand-in: rebuild")}
    # checks: first, again, plan (none when forced); builds: first and forced, none in check mode
    assert len(checks) == 3 * groups and len(builds) == 2 * groups
    assert [b for b in builds if "--force" in b["argv"]] == builds[groups:]
