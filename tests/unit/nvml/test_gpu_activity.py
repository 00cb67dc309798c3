"""GPU activity sampling (module_utils/nvml/_gpu_activity) and the simulator's utilisation answers.

Expectations come from outside the code under test: the real H200 capture
(tests/fixtures/real-h200: the runner's sampler through real NVML while torch loaded the GPU, and
nvidia-smi sampling the same GPU alongside), numpy's percentile, the statistics module, and the
kernel's own accounting of a child's CPU time (``os.wait4``).
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pynvml
import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_runner import (
    validate_plan,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml import _gpu_activity as A
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes import (
    register_process,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_activity import (
    activity_facts,
    activity_row,
    render_activity_lanes,
)

REAL = Path(__file__).resolve().parents[2] / "fixtures" / "real-h200"
CAPTURE = json.loads((REAL / "gpu_activity_capture.json").read_text())


def nvidia_smi_samples() -> list[tuple[float, int, int]]:
    """(epoch seconds, utilization.gpu %, memory.used MiB) from nvidia-smi's CSV (UTC there)."""
    assert CAPTURE["utc_offset_s"] == 0, CAPTURE["clock_note"]
    rows = []
    with open(REAL / "nvidia_smi_util.csv", newline="") as handle:
        for stamp, util, mem in csv.reader(handle, skipinitialspace=True):
            when = datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").replace(
                tzinfo=datetime.UTC
            )
            rows.append((when.timestamp(), int(util), int(mem)))
    return rows


def phase(name: str) -> tuple[float, float]:
    window = CAPTURE["load"]["phases"][name]
    return window["begin"], window["end"]


# ------------------------------------------------------------------------------ pure functions
@pytest.mark.parametrize("q", [0, 10, 50, 90, 100])
@pytest.mark.parametrize("values", [[5.0], [3.0, 1.0], [0.0, 99.0, 100.0, 48.0, 51.0, 7.5, 7.5]])
def test_percentile_agrees_with_numpy(values: list[float], q: float) -> None:
    assert A.percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))


def test_percentile_of_nothing_is_none() -> None:
    assert A.percentile([], 50) is None


def test_window_stats_takes_the_samples_inside_the_window_and_skips_gaps() -> None:
    t = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    values = [90.0, None, 40.0, 60.0, 100.0, 0.0]
    stats = A.window_stats(t, values, 11.0, 14.0)
    assert stats == {
        "samples": 3,
        "median": statistics.median([40.0, 60.0, 100.0]),
        "p10": pytest.approx(float(numpy.percentile([40.0, 60.0, 100.0], 10))),
        "p90": pytest.approx(float(numpy.percentile([40.0, 60.0, 100.0], 90))),
        "min": 40.0,
        "max": 100.0,
    }
    assert A.window_stats(t, values, 20.0, 30.0) is None


def test_targets_group_mig_slices_by_gpu_instance_and_whole_gpus_by_uuid() -> None:
    def bench(name: str, **sl: Any) -> dict[str, Any]:
        return {"name": name, "slice": sl}

    plan = {
        "benchmarks": [
            bench(
                "main", uuid="MIG-a", gpu_index=0, gpu_instance_id=7, profile="1g.10gb", mig=True
            ),
            bench(
                "bg-1", uuid="MIG-b", gpu_index=0, gpu_instance_id=8, profile="1g.10gb", mig=True
            ),
            # a second compute instance of GPU instance 7
            bench(
                "bg-2", uuid="MIG-c", gpu_index=0, gpu_instance_id=7, profile="1g.10gb", mig=True
            ),
            bench("bg-3", uuid="MIG-d", gpu_index=1, gpu_instance_id=7, profile="3g.40gb"),
        ]
    }
    targets = A.targets_from_plan(plan)
    assert [(t["key"], t["scope"], t["uuid"], t["benchmarks"]) for t in targets] == [
        ("gpu0-gi7", "gpu_instance", "MIG-a", ["main", "bg-2"]),
        ("gpu0-gi8", "gpu_instance", "MIG-b", ["bg-1"]),
        ("gpu1-gi7", "gpu_instance", "MIG-d", ["bg-3"]),  # "mig" absent: from the UUID
    ]
    shared = {"benchmarks": [bench("main", uuid="GPU-x", gpu_index=3, mig=False)]}
    (whole,) = A.targets_from_plan(shared)
    assert (whole["key"], whole["scope"], whole["gpu_instance_id"]) == ("gpu3", "gpu", None)
    assert A.target_label(whole) == "GPU 3, whole GPU"
    assert A.target_label(targets[2]) == "GPU 1, GPU instance 7 (3g.40gb)"


@pytest.mark.parametrize(
    ("value", "interval", "problem"),
    [
        (None, A.DEFAULT_INTERVAL_S, None),
        (0, 0.0, None),
        (1, 1.0, None),
        (0.05, A.DEFAULT_INTERVAL_S, "gpu_sample_interval_s must be 0 (off) or from 0.2 to 60"),
        ("1s", A.DEFAULT_INTERVAL_S, "gpu_sample_interval_s must be a number of seconds"),
        (True, A.DEFAULT_INTERVAL_S, "gpu_sample_interval_s must be a number of seconds"),
    ],
)
def test_interval_from_plan(value: Any, interval: float, problem: str | None) -> None:
    plan = {} if value is None else {A.PLAN_KEY: value}
    got_interval, got_problem = A.interval_from_plan(plan)
    assert got_interval == interval
    if problem is None:
        assert got_problem is None
    else:
        assert got_problem is not None and got_problem.startswith(problem)


def test_the_runner_refuses_a_plan_with_a_bad_interval(tmp_path: Path) -> None:
    plan = {
        "format": "heteromig.hetero-plan",
        "version": 2,
        "run_id": "r1",
        "run_dir": str(tmp_path / "runs" / "r1"),
        "benchmarks": [
            {
                "name": "main",
                "role": "main",
                "argv": ["true"],
                "log_dir": str(tmp_path / "main"),
                "slice": {"uuid": "GPU-x"},
            }
        ],
        A.PLAN_KEY: -1,
    }
    problems = validate_plan(plan)
    assert any("gpu_sample_interval_s must be 0 (off) or from 0.2" in p for p in problems)


# ------------------------------------------------------------------------- the real H200 capture
def test_real_capture_calls_say_what_nvml_offers_without_mig() -> None:
    calls = CAPTURE["calls"]
    assert CAPTURE["gpu_name"] == "NVIDIA H200" and CAPTURE["mig_mode"] == [0, 0]
    assert calls["nvmlDeviceGetUtilizationRates(gpu)"]["ok"] is True
    assert calls["nvmlGpmQueryDeviceSupport(gpu).isSupportedDevice"]["value"] == 1
    for gi in (0, 1):
        assert (
            calls["nvmlGpmMigSampleGet(gpu, %d)" % gi]["code"] == pynvml.NVML_ERROR_INVALID_ARGUMENT
        )
    assert (
        calls["nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)"]["code"] == pynvml.NVML_ERROR_NOT_FOUND
    )


def test_real_capture_sampler_agrees_with_nvidia_smi_phase_by_phase() -> None:
    record = CAPTURE["sampler"]
    assert record["state"] == A.STATE_SAMPLED and record["error"] is None
    (series,) = record["series"]
    assert series["scope"] == "gpu" and series["util_supported"] is True
    assert series["util_metric"] == A.METRIC_UTILIZATION_RATES and series["errors"] == {}
    total = CAPTURE["calls"]["nvmlDeviceGetMemoryInfo(gpu)"]["value"]["total"]
    assert series["memory_total_mib"] == total // (1024 * 1024)
    smi = nvidia_smi_samples()
    # each phase minus its first and last second (the driver's sample period lags the load)
    for name, low, high in (("full", 95, 100), ("half", 30, 70)):
        begin, end = phase(name)
        ours = A.window_stats(series["t"], series["util_pct"], begin + 1, end - 1)
        theirs = [u for t, u, _m in smi if begin + 1 <= t <= end - 1]
        assert ours is not None and ours["samples"] >= 10 and len(theirs) >= 10
        assert low <= ours["median"] <= high, (name, ours)
        assert abs(ours["median"] - statistics.median(theirs)) <= 5, (name, ours, theirs)
    idle = A.window_stats(
        series["t"], series["util_pct"], CAPTURE["idle_from"], phase("full")[0] - 1
    )
    assert idle is not None and idle["max"] == 0
    # memory: the load's allocation shows in both (nvidia-smi leaves out the driver's reserve)
    busy_mem = A.window_stats(series["t"], series["mem_used_mib"], *phase("full"))
    idle_mem = A.window_stats(
        series["t"], series["mem_used_mib"], CAPTURE["idle_from"], phase("full")[0] - 2
    )
    smi_busy = statistics.median(m for t, _u, m in smi if phase("full")[0] <= t <= phase("full")[1])
    smi_idle = statistics.median(m for t, _u, m in smi if t <= phase("full")[0] - 2)
    assert busy_mem and idle_mem
    assert abs((busy_mem["median"] - idle_mem["median"]) - (smi_busy - smi_idle)) <= 2


def test_real_capture_sampling_is_cheap() -> None:
    # CPU time the sampler spent per sample on the H200 (2 NVML calls): well under a millisecond
    assert CAPTURE["sampler_samples_taken"] >= 80
    assert CAPTURE["sampler_cpu_s_per_sample"] < 0.001


def test_real_capture_a_mig_target_without_mig_is_reported_not_invented() -> None:
    (series,) = CAPTURE["mig_plan_sampler"]["series"]
    assert series["util_supported"] is False
    assert (
        "no NVML device with UUID MIG-" in series["util_why"] and "Not Found" in series["util_why"]
    )
    assert series["util_pct"] == [None] and series["mem_used_mib"] == [None]
    assert sum(series["errors"].values()) == 1


def test_report_lane_of_the_real_capture() -> None:
    record = dict(CAPTURE["sampler"])
    begin, end = phase("full")
    record["main_window"] = {"begin": begin, "end": end, "source": "test"}
    record["during_main"] = A.main_window_summary(record, record["main_window"])
    row = activity_row({"gpu_activity": record})
    assert row is not None
    (series,) = row["series"]
    real = CAPTURE["sampler"]["series"][0]
    pairs = zip(real["t"], real["util_pct"], strict=True)
    inside = [u for t, u in pairs if begin <= t <= end and u is not None]
    assert series["during_main"]["util_pct"]["median"] == statistics.median(inside)
    (fact,) = activity_facts(row)
    assert fact.startswith(
        "GPU 0, whole GPU (main): median %.0f%% busy" % statistics.median(inside)
    )
    t0, t1 = record["series"][0]["t"][0], record["series"][0]["t"][-1]
    svg, height = render_activity_lanes(row, lambda t: (t - t0) * 10, t0, t1, 100, 300, 900)
    text = "\n".join(svg)
    assert height > 0 and 'data-series="gpu0"' in text
    drawn = sum(1 for u in record["series"][0]["util_pct"] if u is not None)
    assert 'class="activity-util" data-points="%d"' % drawn in text
    assert 'data-util-median-main="%.3f"' % statistics.median(inside) in text


# --------------------------------------------------------------------------- the simulator
@pytest.fixture
def spinner() -> Iterator[subprocess.Popen[bytes]]:
    """A child that keeps one CPU busy; killed and reaped by the test (or here)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def mig_sim(state: str, gpus: str, profile_id: int, count: int) -> list[dict[str, Any]]:
    """MIG enabled on GPU 0 of a simulated host, ``count`` instances; their slices."""
    backend = open_backend("sim", state, gpus)
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    backend.reset_gpu(0)  # Ampere applies the mode on a reset; Hopper already has
    slices = []
    for _n in range(count):
        nvml.nvmlGpuInstanceCreateComputeInstance(
            nvml.nvmlDeviceCreateGpuInstance(handle, profile_id), 0
        )
    for index in range(count):
        mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        slices.append(
            {
                "uuid": nvml.nvmlDeviceGetUUID(mig),
                "gpu_index": 0,
                "gpu_instance_id": nvml.nvmlDeviceGetGpuInstanceId(mig),
                "profile": "x",
                "mig": True,
            }
        )
    backend.close()
    return slices


def plan_for(state: str, slices: list[dict[str, Any]], interval: float = 0.25) -> dict[str, Any]:
    names = ["main"] + ["bg-%d" % i for i in range(1, len(slices))]
    return {
        "backend": {"name": "sim", "sim_state": state},
        A.PLAN_KEY: interval,
        "benchmarks": [{"name": n, "slice": s} for n, s in zip(names, slices, strict=True)],
    }


def test_sim_gpm_utilisation_is_the_registered_processes_cpu_time(
    state_path: str, spinner: subprocess.Popen[bytes], live_child: subprocess.Popen[bytes]
) -> None:
    slices = mig_sim(state_path, "1xH100-SXM5-80GB", 19, 2)
    register_process(state_path, spinner.pid, slices[0]["uuid"], "busy", 3 << 30)
    register_process(state_path, live_child.pid, slices[1]["uuid"], "idle", 1 << 30)
    sampler = A.ActivitySampler(plan_for(state_path, slices))
    sampler.open()
    sampler.sample()  # starts each GPM interval at once (the spinner has barely run)
    time.sleep(1.5)
    sampler.sample()
    spinner.kill()
    _pid, _status, usage = os.wait4(spinner.pid, 0)
    sampler.close()
    busy, idle = sampler.record()["series"]
    assert busy["util_supported"] and busy["util_metric"] == A.METRIC_GPM_GRAPHICS_UTIL
    period = busy["t"][1] - busy["t"][0]
    kernel = 100.0 * (usage.ru_utime + usage.ru_stime) / period
    assert busy["util_pct"][0] is None  # one GPM sample is no interval yet
    # the CPU it used before the first sample (start-up, ~10 ms ticks) is the only difference
    assert busy["util_pct"][1] == pytest.approx(min(100.0, kernel), abs=8.0)
    assert idle["util_pct"] == [None, 0.0]
    # memory as the processes registered it
    assert busy["mem_used_mib"] == [3072, 3072] and idle["mem_used_mib"] == [1024, 1024]
    # the 1g.10gb instance's memory: the real H100's (tests/fixtures/real-h100/gpu_facts.json)
    facts = json.loads((REAL.parent / "real-h100" / "gpu_facts.json").read_text())
    profiles = {p["name"]: p["memory_mib"] for p in facts["heteromig_gpus"][0]["profiles"]}
    assert busy["memory_total_mib"] == idle["memory_total_mib"] == profiles["1g.10gb"]
    spinner.returncode = -9  # reaped by wait4 above


def test_sim_answers_not_supported_where_real_nvml_does(make_sim: Any, state_path: str) -> None:
    nvml = make_sim("1xH200-141GB")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    calls = CAPTURE["calls"]
    # MIG disabled: the real H200's answers
    assert nvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice == 1
    sample = nvml.nvmlGpmSampleAlloc()
    for gi in (0, 1):
        with pytest.raises(pynvml.NVMLError) as err:
            nvml.nvmlGpmMigSampleGet(handle, gi, sample)
        assert err.value.value == calls["nvmlGpmMigSampleGet(gpu, %d)" % gi]["code"]
    with pytest.raises(pynvml.NVMLError) as err:
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)
    assert err.value.value == calls["nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)"]["code"]
    assert nvml.nvmlDeviceGetUtilizationRates(handle).gpu == 0  # nothing registered: idle
    nvml.nvmlGpmSampleFree(sample)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlGpmSampleFree(sample)  # freed twice
    # MIG enabled: NVML's documentation: no utilisation rates for the GPU or its MIG devices
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    nvml.nvmlGpuInstanceCreateComputeInstance(nvml.nvmlDeviceCreateGpuInstance(handle, 19), 0)
    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)
    for target in (handle, mig):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            nvml.nvmlDeviceGetUtilizationRates(target)


def test_sampler_on_an_ampere_mig_slice_says_nvml_offers_no_utilisation(
    state_path: str, live_child: subprocess.Popen[bytes]
) -> None:
    slices = mig_sim(state_path, "1xA100-SXM4-80GB", 19, 1)
    register_process(state_path, live_child.pid, slices[0]["uuid"], "bench", 2 << 30)
    sampler = A.ActivitySampler(plan_for(state_path, slices))
    sampler.open()
    sampler.sample()
    sampler.sample()
    sampler.close()
    (series,) = sampler.record()["series"]
    assert series["util_supported"] is False and series["util_pct"] == [None, None]
    assert "GPM" in series["util_why"] and "Not Supported on MIG devices" in series["util_why"]
    assert series["mem_used_mib"] == [2048, 2048]  # memory is still sampled, per MIG device
    row = activity_row({"gpu_activity": A.activity_result(sampler, None)})
    assert row is not None
    assert "utilisation not offered by NVML" in activity_facts(row)[0]


def test_sampler_whole_gpu_on_the_simulator_uses_utilisation_rates(
    make_sim: Any, state_path: str, live_child: subprocess.Popen[bytes]
) -> None:
    nvml = make_sim("1xH100-SXM5-80GB")
    uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(0))
    register_process(state_path, live_child.pid, uuid, "bench", 5 << 30)
    plan = plan_for(state_path, [{"uuid": uuid, "gpu_index": 0, "mig": False}])
    sampler = A.ActivitySampler(plan)
    sampler.open()
    sampler.sample()
    sampler.close()
    (series,) = sampler.record()["series"]
    assert series["util_metric"] == A.METRIC_UTILIZATION_RATES and series["util_pct"] == [0.0]
    # the simulated H100 keeps 480 MiB reserved, as the real H100 capture shows
    assert series["mem_used_mib"] == [5 * 1024 + 480]


def test_a_backend_that_cannot_be_opened_is_recorded_not_raised(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-state.json")
    plan = plan_for(missing, [{"uuid": "GPU-x", "gpu_index": 0, "mig": False}])
    sampler = A.ActivitySampler(plan)
    sampler.open()
    sampler.sample()
    sampler.close()
    record = sampler.record()
    assert record["state"] == A.STATE_FAILED and record["series"] == []
    assert "cannot open NVML (sim backend)" in record["error"] and missing in record["error"]
    row = activity_row({"gpu_activity": record})
    assert row is not None and activity_facts(row)[0].startswith("GPU activity: cannot open NVML")


def test_sampling_off_takes_no_sample(state_path: str) -> None:
    sampler = A.ActivitySampler(plan_for(state_path, [{"uuid": "GPU-x"}], interval=0))
    sampler.open()
    assert not sampler.due(time.time() + 3600)
    assert sampler.record()["state"] == A.STATE_OFF


def test_a_long_run_keeps_at_most_max_points(
    make_sim: Any, state_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(A, "MAX_POINTS", 8)
    nvml = make_sim("1xH100-SXM5-80GB")
    uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(0))
    sampler = A.ActivitySampler(plan_for(state_path, [{"uuid": uuid, "gpu_index": 0}]))
    sampler.open()
    stamps = [1000.0 + i for i in range(8)]
    for t in stamps:
        sampler.sample(t)
    sampler.close()
    record = sampler.record()
    assert record["series"][0]["t"] == stamps[::2]
    assert (record["interval_s"], record["decimation"]) == (0.5, 2)


def test_sim_utilisation_rates_cover_the_time_since_the_last_call(
    make_sim: Any, state_path: str, spinner: subprocess.Popen[bytes]
) -> None:
    nvml = make_sim("1xH100-SXM5-80GB")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    register_process(state_path, spinner.pid, nvml.nvmlDeviceGetUUID(handle), "busy")
    nvml.nvmlDeviceGetUtilizationRates(handle)  # opens the period
    start = time.monotonic()
    time.sleep(1.5)
    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
    period = time.monotonic() - start
    spinner.kill()
    _pid, _status, usage = os.wait4(spinner.pid, 0)
    spinner.returncode = -9
    kernel = 100.0 * (usage.ru_utime + usage.ru_stime) / period
    assert rates.memory == 0  # memory bandwidth is not modelled
    assert rates.gpu == pytest.approx(min(100.0, kernel), abs=8.0)


def test_sim_gpm_metrics_get_checks_its_request(make_sim: Any) -> None:
    nvml = make_sim("1xH100-SXM5-80GB")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    first, second = nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = 2
    request.sample1, request.sample2 = first, second
    request.metrics[0].metricId = pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL
    request.metrics[1].metricId = pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlGpmMetricsGet(request)  # samples allocated but never taken
    nvml.nvmlGpmSampleGet(handle, first)
    nvml.nvmlGpmSampleGet(handle, second)
    nvml.nvmlGpmMetricsGet(request)
    assert request.metrics[0].nvmlReturn == pynvml.NVML_SUCCESS
    assert request.metrics[0].value == 0.0  # nothing registered on the GPU
    assert request.metrics[1].nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED  # not modelled
    request.version = 99
    with pytest.raises(pynvml.NVMLError) as err:
        nvml.nvmlGpmMetricsGet(request)
    assert err.value.value == pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    ampere = make_sim("1xA100-SXM4-80GB", path=state_path_of(nvml) + ".a100")
    assert (
        ampere.nvmlGpmQueryDeviceSupport(ampere.nvmlDeviceGetHandleByIndex(0)).isSupportedDevice
        == 0
    )
    with pytest.raises(pynvml.NVMLError_NotSupported):
        ampere.nvmlGpmSampleGet(ampere.nvmlDeviceGetHandleByIndex(0), ampere.nvmlGpmSampleAlloc())


def state_path_of(nvml: Any) -> str:
    return str(nvml._file.path)
