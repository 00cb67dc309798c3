"""hetero_run results for the report and export tests, made by the product itself.

Every sample is one real HeteroMIG run on this machine; nothing of the product is re-implemented
here, so a sample's shape, verdict and reasons are the product's:

- the host is the NVML simulator (``_nvml_sim``) with MIG slices made through its NVML API and
  read back by ``_gpu_inventory.read_host``, as gpu_facts reads them;
- the task's options are validated by the hetero_run action's own ``ARGUMENT_SPEC``
  (``_hetero_options``, so every option has the action's default) and the plan is built by ``_harness_profiles.build_plan``:
  the embedded harness ``heteromig_synthetic`` (real MLPerf LoadGen, synthetic models), or the
  test harness profile ``fake_loadgen`` (tests/fixtures/hetero) where a fault is needed;
- the engines are built by ``_engine_store.build_engine`` (what the harness's ``build-engine``
  and the engine_build module run);
- the run is the host runner's (``_run_control.start`` + ``poll_status``, as the hetero_runner
  module calls them), which judges the verdict;
- the logs are packed by ``_run_control.archive`` and unpacked by the action's
  ``extract_archive`` (``_hetero_results``) into ``<results root>/<run_id>/<host>/``, and the result is
  ``_hetero_contract.contract_result`` (what the action returns), written to ``result.json``
  there as the action writes it.

:func:`build_samples` makes the standard set once per directory (cached on disk) and returns
``{name: result}``; tests get it through a session fixture, so unit and integration tests of one
pytest session share one set. :func:`read_mllog` and :func:`power_time` are the tests' own
reading of LoadGen's logs (independent of the product's parser), for expected values.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import (
    _engine_spec as engine_spec,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _engine_store as store
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_control as runner
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_harness import (
    build_parser,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_files import pid_runs
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
    SimulatedNvml,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_arg_spec import (
    ARGUMENT_SPEC,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_contract import (
    contract_result,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_plan import (
    build_plan,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_results import (
    extract_archive,
)

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = str(ROOT / "collections")  # the host runtime's ansible_collections tree
FAKE_HARNESS = ROOT / "tests" / "fixtures" / "hetero"

SAMPLE_RUN_ID = "20261122T051500Z-ab12cd"
ISOLATED_RUN_ID = "20261122T050000Z-iso001"

# Simulated hosts: GPU spec of the NVML simulator and the GPU instance profiles made on GPU 0
# (19 = 1g.10gb, 14 = 2g.20gb on both 80 GB models), each with one compute instance.
HOSTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "dgx-h100-01": ("1xH100-SXM5-80GB", (19, 19, 14)),
    "dgx-h100-02": ("1xH100-SXM5-80GB", (19, 19)),
    "dgx-h100-03": ("1xH100-SXM5-80GB", (19, 19)),
    "dgx-a100-01": ("1xA100-SXM4-80GB", (19, 19)),
}

# Options of every sample (short runs); a sample's own options override them.
COMMON: dict[str, Any] = {
    "harness": "heteromig_synthetic",
    "main_benchmark": "synth-mlp-small",
    "main_benchmark_duration": 500,
    "start_time_buffer": 300,
    "background_start_timeout": 60000,
    "background_benchmark_timeout": 60000,
    # the Offline backgrounds' LoadGen query: 2000/s x 60 s x 1.1 samples, more than they can
    # do before the runner stops them after the main benchmark
    "background_target_qps": 2000,
    "stop_grace": 5000,
    "lease_timeout": 60000,
}
FAKE_LOADGEN: dict[str, Any] = {
    "harness": "fake_loadgen",
    "harness_profile_dirs": [str(FAKE_HARNESS / "profiles")],
    "main_benchmark": "fake-a",
}


def _accuracy_passed(result: Mapping[str, Any]) -> bool:
    text = Path(result["main"]["fetched_dir"], "accuracy.txt").read_text()
    return text.strip().endswith(": PASS")


def _background_ended_early(result: Mapping[str, Any]) -> bool:
    """The first background exited before the main's LoadGen timed phase ended (its log)."""
    log = read_mllog(Path(result["main"]["fetched_dir"]) / "mlperf_log_detail.txt")
    ended = result["backgrounds"][0]["ended_at"]
    return "power_end" in log and ended is not None and ended < power_time(log["power_end"])


@dataclass(frozen=True)
class Sample:
    """One run: host, run id, hetero_run options, and what the run is made to show."""

    host: str
    run_id: str
    options: Mapping[str, Any]
    verdict: str = "VALID"
    # what else must hold (read from the run's own files), else the run is made again
    check: Callable[[Mapping[str, Any]], bool] | None = None
    base: Mapping[str, Any] = field(default_factory=lambda: COMMON)


SAMPLES: dict[str, Sample] = {
    # VALID: two backgrounds (1g.10gb and 2g.20gb) cover the main timed phase; the runner stops
    # them after the main benchmark ends
    "valid": Sample(
        "dgx-h100-01",
        SAMPLE_RUN_ID,
        {"background_benchmarks": ["synth-conv-1d", "synth-mlp-large"]},
    ),
    # the same benchmark alone on the same slice profile: the isolated reference
    "isolated": Sample("dgx-h100-01", ISOLATED_RUN_ID, {"background_benchmarks": "none"}),
    # INVALID: LoadGen says min duration not met (its expected QPS is far too low), and the
    # background finishes while the main benchmark is still warming up (lenient: a warning,
    # the run goes on), so it does not cover the main timed phase. The main's 6 s warmup leaves
    # the background ~4.5 s to exit in on a busy machine (1.5 s left 0.4-0.9 s: CI missed it)
    "invalid": Sample(
        "dgx-h100-02",
        SAMPLE_RUN_ID,
        {
            "background_benchmarks": ["synth-conv-1d"],
            "main_benchmark_duration": 400,
            "main_target_qps": 100,
            "main_benchmark_runargs": ["--warmup-ms", "6000"],
            "background_benchmark_duration": 400,
            "background_target_qps": None,
            "start_time_buffer": 0,
            "end_time_buffer_min": 0,
            "lenient": True,
        },
        verdict="INVALID",
        check=_background_ended_early,
    ),
    # VALID Server run on an A100
    "server": Sample(
        "dgx-a100-01",
        SAMPLE_RUN_ID,
        {
            "background_benchmarks": ["synth-conv-1d"],
            "main_scenario": "Server",
            "main_benchmark_duration": 1000,
            "main_min_query_count": 500,
            "main_target_qps": 500,
            "main_target_latency_ns": 200_000_000,
        },
    ),
    # INVALID: the main benchmark crashes (exit 4) in its timed phase, no LoadGen result
    # (fake_bench's --crash-after; the embedded harness has no such fault)
    "crash": Sample(
        "dgx-h100-03",
        SAMPLE_RUN_ID,
        {
            **FAKE_LOADGEN,
            "background_benchmarks": ["fake-b"],
            "harness_vars": {
                "fake_bench": str(FAKE_HARNESS / "fake_bench.py"),
                "fake": {"main": ["--crash-after", "0.25"]},
            },
        },
        verdict="INVALID",
    ),
    # for the submission export: an accuracy run and the compliance audits of the "valid" one
    "accuracy": Sample(
        "dgx-h100-01",
        SAMPLE_RUN_ID,
        {"background_benchmarks": ["synth-conv-1d"], "main_mode": "AccuracyOnly"},
        check=_accuracy_passed,
    ),
    "test01": Sample(
        "dgx-h100-01",
        SAMPLE_RUN_ID,
        {"background_benchmarks": ["synth-conv-1d"], "main_action": "run_audit_test01"},
    ),
    "test04": Sample(
        "dgx-h100-01",
        SAMPLE_RUN_ID,
        {"background_benchmarks": ["synth-conv-1d"], "main_action": "run_audit_test04"},
    ),
}
ATTEMPTS = 3  # a run that misses its verdict on a busy machine is made again
RUN_LIMIT_S = 120  # a sample run still going after this is stopped (and comes out INVALID)


# ------------------------------------------------------------------------------ LoadGen logs


def read_mllog(path: Path) -> dict[str, Any]:
    """``{key: value}`` of the ``:::MLLOG`` lines of a LoadGen detail log (last value wins)."""
    values: dict[str, Any] = {}
    errors = 0
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return values
    for line in text.splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG ") :])
        except ValueError:
            continue  # a line torn by a kill
        values[entry["key"]] = entry.get("value")
        if entry.get("metadata", {}).get("is_error"):
            errors += 1
    values["_error_lines"] = errors
    return values


def power_time(text: str) -> float:
    """LoadGen's power_begin/power_end (``MM-DD-YYYY HH:MM:SS.mmm``, UTC) as epoch seconds."""
    dt = datetime.datetime.strptime(text, "%m-%d-%Y %H:%M:%S.%f")
    return dt.replace(tzinfo=datetime.UTC).timestamp()


# ------------------------------------------------------------------------------ hosts


@dataclass
class SimHost:
    """A simulated host: its NVML simulator state and what gpu_facts would read from it."""

    name: str
    state: str
    facts: dict[str, Any]


def make_host(name: str, directory: Path) -> SimHost:
    gpus, profiles = HOSTS[name]
    directory.mkdir(parents=True, exist_ok=True)
    state = str(directory / "nvml-sim.json")
    if os.path.exists(state):
        os.unlink(state)  # left by an earlier build that failed: the slices would not fit again
    nvml = SimulatedNvml(state, gpus)
    nvml.nvmlInit()
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
        if nvml.nvmlDeviceGetMigMode(handle)[0] != pynvml.NVML_DEVICE_MIG_ENABLE:
            nvml.sim_reset_gpu(0)  # Ampere applies the MIG mode at a GPU reset (nvidia-smi -r)
        for profile in profiles:
            instance = nvml.nvmlDeviceCreateGpuInstance(handle, profile)
            nvml.nvmlGpuInstanceCreateComputeInstance(instance, 0)
        facts = read_host(nvml)
    finally:
        nvml.nvmlShutdown()
    return SimHost(name, state, facts)


def build_engines(plan: Mapping[str, Any], host: SimHost) -> None:
    """The engines the plan's embedded-harness commands look for, each built for its slice."""
    harness_args = build_parser()
    for bench in plan["benchmarks"]:
        argv = bench["argv"]
        if "run" not in argv:
            continue  # not the embedded harness (fake_loadgen needs no engine)
        args = harness_args.parse_args(argv[argv.index("run") :])
        target = engine_spec.resolve_target(
            bench["env"]["CUDA_VISIBLE_DEVICES"], backend="sim", sim_state=host.state
        )
        spec = engine_spec.spec_for_target(args.model, args.scenario, args.accuracy_target, target)
        store.build_engine(spec, args.engine_dir)


# ------------------------------------------------------------------------------ one run


def run_sample(sample: Sample, host: SimHost, workdir: Path) -> dict[str, Any]:
    """Run ``sample`` on ``host`` (host root and results root in ``workdir``); its result."""
    validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate({**sample.base, **sample.options})
    if validation.error_messages:
        raise ValueError("; ".join(validation.error_messages))
    options = validation.validated_parameters
    host_root = str(workdir / "host")
    results_root = workdir / "results"
    plan = build_plan(
        options,
        host=host.name,
        devices=host.facts["mig_devices"],
        gpus=host.facts["gpus"],
        python=sys.executable,
        host_root=host_root,
        host_pythonpath=COLLECTIONS,
        backend={"name": "sim", "sim_state": host.state},
        run_id=sample.run_id,
    )
    build_engines(plan, host)
    status = runner.start(plan, host_root, sys.executable, COLLECTIONS, check_layout_first=True)
    stop_at = time.monotonic() + RUN_LIMIT_S
    stopped = False
    while not status.get("done") and status.get("runner_alive", True):
        if time.monotonic() > stop_at + 30:
            raise RuntimeError("sample run %s did not stop: %s" % (plan["run_dir"], status))
        if time.monotonic() > stop_at and not stopped:
            runner.request_stop(plan["run_dir"], "the sample run took too long")
            stopped = True
        # as the action polls: each status call renews the lease
        status = runner.poll_status(plan["run_dir"], status.get("seq"), 1.0, plan["lease_s"])
    if not status.get("done"):
        raise RuntimeError(
            "the runner of sample run %s died: %s"
            % (plan["run_dir"], status.get("runner_log_tail"))
        )
    while pid_runs(status.get("pid"), plan["run_dir"]):
        time.sleep(0.01)  # it writes result.json and exits; pack what it left
    results_dir = results_root / sample.run_id / host.name
    packed = runner.archive(plan["run_dir"])
    results_dir.mkdir(parents=True, exist_ok=True)
    extract_archive(packed["archive"], str(results_dir))
    result = contract_result(plan, status["result"], str(results_dir))
    result["fetched_files"] = [f["path"] for f in packed["files"]]
    with open(results_dir / "result.json", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, sort_keys=True)
    return {**result, "changed": True}


def build_samples(basedir: Path) -> dict[str, dict[str, Any]]:
    """Run every sample of :data:`SAMPLES` once (cached in ``basedir``); ``{name: result}``."""
    basedir.mkdir(parents=True, exist_ok=True)
    done = basedir / "samples.json"
    failed = basedir / "failed.txt"
    with (basedir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return json.loads(done.read_text())
        if failed.exists():  # every later test that needs the samples fails with the same cause
            raise RuntimeError("the samples could not be built: " + failed.read_text())
        try:
            results = _build_all(basedir)
        except BaseException as exc:  # pytest-timeout's Failed too: no test waits for it again
            failed.write_text("%s: %s" % (type(exc).__name__, exc))
            raise
        done.write_text(json.dumps(results, indent=1))
        return results


def _build_all(basedir: Path) -> dict[str, dict[str, Any]]:
    hosts = {name: make_host(name, basedir / "sim" / name) for name in HOSTS}
    engines = str(basedir / "engines")
    results = {}
    for name, sample in SAMPLES.items():
        # one engine store for every host (engines are keyed by GPU model and profile)
        options = {"harness_vars": {"engine_dir": engines}, **sample.options}
        sample = dataclasses.replace(sample, options=options)
        for attempt in range(1, ATTEMPTS + 1):
            result = run_sample(sample, hosts[sample.host], basedir / name / ("try%d" % attempt))
            missed = []
            if result["verdict"] != sample.verdict:
                missed.append("came out %s, not %s" % (result["verdict"], sample.verdict))
            elif sample.check is not None and not sample.check(result):
                missed.append("failed its check %s" % sample.check.__name__)
            if not missed:
                break
        else:
            raise RuntimeError(
                "sample %r %s after %d runs (machine too busy?); reasons of the last run: %s"
                % (name, missed[0], ATTEMPTS, result["reasons"])
            )
        results[name] = result
    return results


def as_host(result: Mapping[str, Any], host: str) -> dict[str, Any]:
    """A copy of ``result`` attributed to inventory host ``host`` (for replays in the lab)."""
    copy = json.loads(json.dumps(result))
    copy["host"] = host
    return copy
