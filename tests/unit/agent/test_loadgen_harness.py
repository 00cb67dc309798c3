"""The embedded harness end to end: real LoadGen runs in subprocesses on simulated MIG slices.

Every run is short (a few hundred ms of timed phase). Runs that do not depend on each other are
started together, as benchmarks on the slices of one host would be.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml
import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import HARNESS_MODULE
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import (
    _engine_spec as engine_spec,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _engine_store as store
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
    SimulatedNvml,
)

COLLECTIONS = Path(__file__).resolve().parents[3] / "collections"
HARNESS = [sys.executable, "-m", HARNESS_MODULE]
# The readiness patterns of issue 4: NVIDIA's C++ harnesses and LoadGen's print_timestamps.
NVIDIA_READY = re.compile(r"running actual test\.$")
LOADGEN_START = re.compile(r"^Loadgen :: Perf mode start\. system_clock Timestamp = \d+$")
SHORT = ["--min-duration-ms", "300", "--warmup-ms", "50"]


@dataclass
class Host:
    """A simulated host: 1g.10gb x2, 2g.20gb, 2c.3g.40gb + 1c.3g.40gb on GPU 0; GPU 1 no MIG."""

    root: Path
    state: str
    engines: str
    mig: dict[str, list[str]]
    gpu1: str

    def env(self, device: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        env.update(
            PYTHONPATH=str(COLLECTIONS),
            HETEROMIG_GPU_BACKEND="sim",
            HETEROMIG_SIM_STATE=self.state,
        )
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        return env

    def start(self, args: list[str], device: str | None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            HARNESS + args,
            env=self.env(device),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(
        self,
        args: list[str],
        device: str | None,
        timeout: float = 60,
        prefix: list[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*(prefix or []), *HARNESS, *args],
            env=self.env(device),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_args(self, model: str, scenario: str, log_dir: Path, *extra: str) -> list[str]:
        return [
            "run",
            "--model",
            model,
            "--scenario",
            scenario,
            "--engine-dir",
            self.engines,
            "--log-dir",
            str(log_dir),
            *SHORT,
            *extra,
        ]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    root = tmp_path_factory.mktemp("harness-host")
    state = str(root / "nvml-sim.json")
    nvml = SimulatedNvml(state, "2xH100-SXM5-80GB")
    nvml.nvmlInit()
    gpu = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(gpu, pynvml.NVML_DEVICE_MIG_ENABLE)
    for profile_id, ci_profiles in ((19, [0]), (19, [0]), (14, [1]), (9, [1, 0])):
        gi = nvml.nvmlDeviceCreateGpuInstance(gpu, profile_id)
        for ci_profile in ci_profiles:
            nvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile)
    facts = read_host(nvml)
    nvml.nvmlShutdown()
    mig: dict[str, list[str]] = {}
    for device in facts["mig_devices"]:
        mig.setdefault(device["profile"], []).append(device["uuid"])
    engines = str(root / "engines")
    built = Host(root, state, engines, mig, facts["gpus"][1]["uuid"])
    wanted = [
        ("synth-mlp-small", "Offline", "99", "1g.10gb"),
        ("synth-mlp-small", "Server", "99", "1g.10gb"),
        ("synth-conv-1d", "SingleStream", "99.9", "2g.20gb"),
        ("synth-conv-1d", "MultiStream", "99", "2c.3g.40gb"),
    ]
    for model, scenario, accuracy, profile in wanted:
        target = engine_spec.resolve_target(mig[profile][0], backend="sim", sim_state=state)
        store.build_engine(engine_spec.spec_for_target(model, scenario, accuracy, target), engines)
    return built


def summary(log_dir: Path) -> str:
    return (log_dir / "mlperf_log_summary.txt").read_text()


def record(log_dir: Path) -> dict[str, Any]:
    return json.loads((log_dir / "heteromig_harness.json").read_text())


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at its end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ VALID runs
def test_offline_run_marker_timestamps_logs_and_nvml(
    host: Host, tmp_path: Path, reap: list
) -> None:
    device = host.mig["1g.10gb"][0]
    logs = tmp_path / "offline"
    args = host.run_args("synth-mlp-small", "Offline", logs, "--print-timestamps")
    args[args.index("--min-duration-ms") + 1] = "800"
    proc = host.start(args, device)
    reap.append(proc)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:  # the marker is flushed before LoadGen starts: read it live
        lines.append(line.rstrip("\n"))
        if NVIDIA_READY.search(lines[-1]):
            break
    # While the benchmark runs, NVML shows it as a compute process on its MIG device.
    nvml = SimulatedNvml(host.state)
    nvml.nvmlInit()
    try:
        on_slice = nvml.nvmlDeviceGetComputeRunningProcesses(nvml.nvmlDeviceGetHandleByUUID(device))
        processes = read_host(nvml)["gpus"][0]["processes"]
    finally:
        nvml.nvmlShutdown()
    assert [p.pid for p in on_slice] == [proc.pid]
    assert [(p["pid"], p["mig_uuid"]) for p in processes] == [(proc.pid, device)]
    # the rest from the same buffered reader (communicate() would skip what it already holds)
    lines += proc.stdout.read().splitlines()
    assert proc.stderr is not None
    err = proc.stderr.read()
    code = proc.wait(timeout=60)
    assert code == 0, err
    assert err == ""
    marker = next(i for i, line in enumerate(lines) if NVIDIA_READY.search(line))
    assert lines[marker] == "[I] [heteromig_harness] Starting running actual test."
    start = next(i for i, line in enumerate(lines) if LOADGEN_START.match(line))
    assert marker < start
    assert any(line.startswith("Loadgen :: Perf mode stop.") for line in lines[start:])
    assert "Result is : VALID" in summary(logs)
    detail = (logs / "mlperf_log_detail.txt").read_text()
    assert (
        '"key": "power_begin"' in detail and '"key": "result_validity", "value": "VALID"' in detail
    )
    data = record(logs)
    assert data["status"] == "completed" and data["exit_code"] == 0
    assert data["cuda_visible_devices"] == device
    assert data["device"]["uuid"] == device and data["device"]["profile"] == "1g.10gb"
    assert data["device"]["gpu_model"] == "H100-SXM5-80GB" and data["shared_gpu"] is False
    assert data["registered_on_simulator"] is True
    assert data["engine"]["built_for"]["profile"] == "1g.10gb"
    assert data["compute"]["kind"] == "numpy"
    assert data["loadgen"]["result_validity"] == "VALID"
    assert data["loadgen"]["samples_per_second"] > 0
    assert data["settings"]["print_timestamps"] is True
    assert data["settings"]["offline_expected_qps"] > 0
    assert data["marker"]["time"] <= data["test_started_at"] + 1
    assert set(data["log_files"]) >= {"mlperf_log_summary.txt", "mlperf_log_detail.txt"}
    # the process is gone, so NVML no longer lists it
    nvml = SimulatedNvml(host.state)
    nvml.nvmlInit()
    try:
        assert read_host(nvml)["gpus"][0]["processes"] == []
    finally:
        nvml.nvmlShutdown()


def test_server_valid_and_impossible_latency_invalid(
    host: Host, tmp_path: Path, reap: list
) -> None:
    good_dir, bad_dir = tmp_path / "valid", tmp_path / "invalid"
    first, second = host.mig["1g.10gb"]
    good = host.start(
        [
            *host.run_args("synth-mlp-small", "Server", good_dir, "--server-target-qps", "1500"),
            "--min-duration-ms",
            "400",
            # a 1 s bound at the 99th percentile: the default 100 ms was missed on a machine at
            # load 10 (a scheduling stall, not the harness), which this test is not about
            "--server-target-latency-ns",
            "1000000000",
        ],
        first,
    )
    bad = host.start(
        host.run_args("synth-mlp-small", "Server", bad_dir, "--server-target-latency-ns", "1"),
        second,
    )
    reap.extend([good, bad])
    for proc in (good, bad):
        code, _out, err = finish(proc)
        assert code == 0, err  # a completed run exits 0 whatever LoadGen's verdict
    assert "Result is : VALID" in summary(good_dir)
    assert record(good_dir)["loadgen"]["result_validity"] == "VALID"
    text = summary(bad_dir)
    assert "Result is : INVALID" in text
    assert "Performance constraints satisfied : NO" in text
    data = record(bad_dir)
    assert data["loadgen"]["result_validity"] == "INVALID"
    assert data["settings"]["server_target_latency_ns"] == 1
    assert data["status"] == "completed"


def test_stream_scenarios_valid(host: Host, tmp_path: Path, reap: list) -> None:
    single = host.start(
        host.run_args(
            "synth-conv-1d", "SingleStream", tmp_path / "ss", "--accuracy-target", "99.9"
        ),
        host.mig["2g.20gb"][0],
    )
    multi = host.start(
        host.run_args("synth-conv-1d", "multistream", tmp_path / "ms"), host.mig["2c.3g.40gb"][0]
    )
    reap.extend([single, multi])
    for proc, name, metric in ((single, "ss", "p90_latency_ns"), (multi, "ms", "p99_latency_ns")):
        code, _out, err = finish(proc)
        assert code == 0, err
        assert "Result is : VALID" in summary(tmp_path / name)
        assert record(tmp_path / name)["loadgen"][metric] > 0


# ------------------------------------------------------------------------------ accuracy
def test_accuracy_mode_checks_outputs(host: Host, tmp_path: Path, reap: list) -> None:
    device = host.mig["1g.10gb"][0]
    good = host.start(
        host.run_args("synth-mlp-small", "Offline", tmp_path / "good", "--mode", "AccuracyOnly"),
        device,
    )
    bad = host.start(
        host.run_args(
            "synth-mlp-small",
            "Offline",
            tmp_path / "bad",
            "--mode",
            "accuracy",
            "--inject-output-errors",
            "0.05",
        ),
        host.mig["1g.10gb"][1],
    )
    reap.extend([good, bad])
    code, out, err = finish(good)
    assert code == 0, err
    assert (tmp_path / "good" / "accuracy.txt").read_text().strip().endswith(": PASS")
    data = record(tmp_path / "good")
    assert data["mode"] == "AccuracyOnly"
    accuracy = data["accuracy"]
    assert (accuracy["checked_samples"], accuracy["expected_samples"]) == (1024, 1024)
    assert accuracy["accuracy"] == 1.0 and accuracy["passed"] is True
    assert "accuracy=100.0000% (1024 of 1024" in out

    code, _out, err = finish(bad)
    assert code == 3
    assert err.count("\n") == 1 and err.startswith(
        "heteromig_harness: error: accuracy check FAILED"
    )
    assert (tmp_path / "bad" / "accuracy.txt").read_text().strip().endswith(": FAIL")
    data = record(tmp_path / "bad")
    assert data["accuracy"]["passed"] is False and data["accuracy"]["accuracy"] < 0.99
    assert (data["status"], data["exit_code"]) == ("completed", 3)


# ------------------------------------------------------------------------------ shared GPU
def test_shared_gpu_mode_is_explicit_and_loud(host: Host, tmp_path: Path) -> None:
    build = [
        "build-engine",
        "--model",
        "synth-mlp-small",
        "--scenario",
        "Offline",
        "--engine-dir",
        host.engines,
        "--json",
    ]
    refused = host.run(build, host.gpu1)
    assert refused.returncode == 2
    assert "names a whole GPU" in refused.stderr and "--allow-shared-gpu" in refused.stderr
    built = host.run([*build, "--allow-shared-gpu"], host.gpu1)
    assert built.returncode == 0, built.stderr
    assert "SHARED GPU, NO MIG ISOLATION" in built.stdout
    result = json.loads(built.stdout.splitlines()[-1])
    assert (result["changed"], result["built_for"]["profile"]) == (True, "full-gpu")
    assert result["path"].endswith("/H100-SXM5-80GB/full-gpu.engine")
    again = json.loads(host.run([*build, "--allow-shared-gpu"], host.gpu1).stdout.splitlines()[-1])
    assert (again["changed"], again["action"], again["content_key"]) == (
        False,
        "cached",
        result["content_key"],
    )

    logs = tmp_path / "shared"
    run = host.run(
        [
            *host.run_args("synth-mlp-small", "Offline", logs, "--allow-shared-gpu"),
            "--min-duration-ms",
            "200",
        ],
        host.gpu1,
    )
    assert run.returncode == 0, run.stderr
    assert "!! SHARED GPU, NO MIG ISOLATION" in run.stdout
    assert "SHARED GPU, NO MIG ISOLATION on %s" % host.gpu1 in run.stderr
    data = record(logs)
    assert data["shared_gpu"] is True
    assert (data["device"]["kind"], data["device"]["profile"]) == ("gpu", "full-gpu")


# ------------------------------------------------------------------------------ bad input
def _bad_cases(host: Host, tmp_path: Path) -> dict[str, tuple[list[str], str | None, str]]:
    small = host.mig["1g.10gb"][0]
    engine = engine_spec.EngineSpec("synth-mlp-small", "Offline", "99", "H100-SXM5-80GB", "1g.10gb")
    corrupt = tmp_path / "corrupt.engine"
    corrupt.write_bytes(b'HETEROMIG-ENGINE 1\n40\n{"format": ')
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    logs = tmp_path / "logs"

    def run(model: str = "synth-mlp-small", scenario: str = "Offline", *extra: str) -> list[str]:
        return host.run_args(model, scenario, logs, *extra)

    def with_engine(path: str) -> list[str]:
        args = run()
        args[args.index("--engine-dir") : args.index("--engine-dir") + 2] = ["--engine", path]
        return args

    return {
        "unknown model": (
            run("resnet50"),
            small,
            "unknown model 'resnet50': the embedded harness offers",
        ),
        "unknown scenario": (run("synth-mlp-small", "Batch"), small, "unknown scenario 'Batch'"),
        "unsupported scenario": (
            run("synth-mlp-large", "SingleStream"),
            small,
            "model synth-mlp-large does not support the SingleStream scenario",
        ),
        "log dir under a file": (
            [*run()[:-6], "--log-dir", str(a_file / "logs"), *SHORT],
            small,
            "log directory %s cannot be created: Not a directory" % (a_file / "logs"),
        ),
        "log dir is a file": (
            [*run()[:-6], "--log-dir", str(a_file), *SHORT],
            small,
            "log directory %s cannot be created: File exists" % a_file,
        ),
        "missing engine": (
            with_engine(str(tmp_path / "nope.engine")),
            small,
            "does not exist: build it first",
        ),
        "corrupt engine": (with_engine(str(corrupt)), small, "is corrupt (truncated header)"),
        "engine of another profile": (
            with_engine(engine.path(host.engines)),
            host.mig["2g.20gb"][0],
            "as TensorRT refuses an engine built for another GPU model or MIG profile",
        ),
        "no engine for this profile": (
            run("synth-mlp-small", "Offline"),
            host.mig["2g.20gb"][0],
            "(engines exist for: H100-SXM5-80GB 1g.10gb",
        ),
        "whole GPU without shared mode": (run(), host.gpu1, "Pass --allow-shared-gpu"),
        "unknown device": (
            run(),
            "MIG-00000000-0000-0000-0000-000000000000",
            "knows no such device",
        ),
        "negative duration": (
            run("synth-mlp-small", "Offline", "--min-duration-ms", "-5"),
            small,
            "must be greater than zero",
        ),
        "zero query count": (
            run("synth-mlp-small", "Offline", "--min-query-count", "0"),
            small,
            "must be greater than zero",
        ),
        "missing log dir option": (
            [
                "run",
                "--model",
                "synth-mlp-small",
                "--scenario",
                "Offline",
                "--engine-dir",
                host.engines,
            ],
            small,
            "--log-dir",
        ),
        "no subcommand": ([], small, "required: COMMAND"),
    }


BAD = [
    "unknown model",
    "unknown scenario",
    "unsupported scenario",
    "log dir under a file",
    "log dir is a file",
    "missing engine",
    "corrupt engine",
    "engine of another profile",
    "no engine for this profile",
    "whole GPU without shared mode",
    "unknown device",
    "negative duration",
    "zero query count",
    "missing log dir option",
    "no subcommand",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_clear_line(host: Host, tmp_path: Path, case: str) -> None:
    args, device, message = _bad_cases(host, tmp_path)[case]
    done = host.run(args, device)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("heteromig_harness: error: ")
    assert message in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "logs" / "mlperf_log_summary.txt").exists()


def test_log_dir_that_cannot_be_created(host: Host, tmp_path: Path) -> None:
    """Works as root too: nothing can be created beneath a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    logs = blocker / "logs"
    done = host.run(host.run_args("synth-mlp-small", "Offline", logs), host.mig["1g.10gb"][0])
    assert done.returncode == 2 and "cannot be created" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# Root writes into read-only directories through CAP_DAC_OVERRIDE (and reads through
# CAP_DAC_READ_SEARCH). As root (CI runs as root) the harness runs without those capabilities,
# still as uid 0 -- the owner of the test's files, of the venv's Python under /root and of the
# engines -- so the directory's own mode bits decide, as they do for an unprivileged user.
# setpriv is util-linux, part of every Debian system. Dropping a capability from the bounding
# set needs CAP_SETPCAP, which root has.
DAC_CAPS = "-dac_override,-dac_read_search"
UNPRIVILEGED = (
    [
        "setpriv",
        "--inh-caps=" + DAC_CAPS,
        "--ambient-caps=" + DAC_CAPS,
        "--bounding-set=" + DAC_CAPS,
    ]
    if os.geteuid() == 0
    else []
)


def test_the_unprivileged_prefix_really_lacks_the_privilege(tmp_path: Path) -> None:
    """Guards the test below: under UNPRIVILEGED a read-only directory refuses a new file."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = "import sys; open(sys.argv[1] + '/probe', 'w')"
    probe = subprocess.run(
        [*UNPRIVILEGED, sys.executable, "-c", code, str(locked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 1 and "PermissionError" in probe.stderr, probe
    assert not (locked / "probe").exists()
    allowed = subprocess.run(
        [*UNPRIVILEGED, sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert allowed.returncode == 0, allowed.stderr  # the owner's own writable directory: fine


def test_read_only_log_dir(host: Host, tmp_path: Path) -> None:
    logs = tmp_path / "ro"
    logs.mkdir(mode=0o500)
    done = host.run(
        host.run_args("synth-mlp-small", "Offline", logs),
        host.mig["1g.10gb"][0],
        prefix=UNPRIVILEGED,
    )
    assert done.returncode == 2 and "is not writable" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert list(logs.iterdir()) == []


# ------------------------------------------------------------------------------ small commands
def test_models_version_and_inspect(host: Host) -> None:
    listed = json.loads(host.run(["models", "--json"], None).stdout)
    assert [m["name"] for m in listed] == [
        "synth-bert-large",
        "synth-conv-1d",
        "synth-mlp-large",
        "synth-mlp-small",
        "synth-resnet50",
    ]
    assert listed[2]["scenarios"] == ["Server", "Offline"]
    version = host.run(["--version"], None)
    assert version.stdout.strip() == "heteromig_harness %s" % engine_spec.HARNESS_VERSION
    path = engine_spec.EngineSpec(
        "synth-mlp-small", "Server", "99", "H100-SXM5-80GB", "1g.10gb"
    ).path(host.engines)
    header = json.loads(host.run(["inspect-engine", path], None).stdout)
    assert header["built_for"]["scenario"] == "Server" and header["batch_size"] == 16


def test_cpu_target_needs_a_cpu_engine(host: Host, tmp_path: Path) -> None:
    """No CUDA_VISIBLE_DEVICES: the CPU target, which no slice engine fits."""
    args = host.run_args("synth-mlp-small", "Offline", tmp_path / "cpu")
    refused = host.run(args, None)
    assert refused.returncode == 2 and "on cpu (CPU, no GPU)" in refused.stderr
    built = host.run(
        [
            "build-engine",
            "--model",
            "synth-mlp-small",
            "--scenario",
            "Offline",
            "--engine-dir",
            str(tmp_path / "e"),
        ],
        None,
    )
    assert built.returncode == 0, built.stderr
    args[args.index("--engine-dir") + 1] = str(tmp_path / "e")
    started = time.time()
    done = host.run([*args[:-4], "--min-duration-ms", "100", "--warmup-ms", "0"], None)
    assert done.returncode == 0, done.stderr
    assert record(tmp_path / "cpu")["device"]["kind"] == "cpu"
    assert time.time() - started < 30
