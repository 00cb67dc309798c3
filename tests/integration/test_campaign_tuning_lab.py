"""Target-QPS tuning under hetero load, end to end (main_target_qps: auto, docs/campaign.md).

A campaign over the SSH lab (one host, a simulated H100 cut into two MIG slices): its Server
cell says ``main_target_qps: auto``. The benchmark is a synthetic device of *known capacity*
driven by the real MLPerf LoadGen (written below into the test's directory, with its harness
profile): it serves CAPACITY samples/s, so Offline measures about CAPACITY samples/s, and in
Server a target above CAPACITY makes its queue grow without bound (a short run would hide that,
so the device answers at once with three times the latency bound): LoadGen's verdict is VALID
iff target <= CAPACITY. That is the independent oracle the tuned value is checked against.

The playbook is playbooks/sweep.yml without its engine build (this harness has no engines).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import HostSpec, MakeLab
from lab.runner import REPO_ROOT

pytestmark = pytest.mark.integration

CAPACITY = 600.0  # samples/s of the fake device
# Far above the device's 1.7 ms service time: a scheduling stall of the loaded test machine
# (the CI runner missed a 50 ms bound at a target below the capacity) must not flip the oracle.
LATENCY_BOUND_NS = 400_000_000
CELL = "lab1/dev-a/Server/performance"

BENCH = r'''
"""A device of known capacity under real LoadGen (tests/integration/test_campaign_tuning_lab.py)."""
import argparse, heapq, os, threading, time
import mlperf_loadgen as lg

p = argparse.ArgumentParser()
p.add_argument("--log-dir", required=True)
p.add_argument("--scenario", default="Offline")
p.add_argument("--duration-ms", type=int, default=1000)
p.add_argument("--capacity", type=float, required=True)
p.add_argument("--latency-bound-ns", type=int, required=True)
p.add_argument("--target-qps", type=float, default=None)
args, _ = p.parse_known_args()
os.makedirs(args.log_dir, exist_ok=True)
service = 1.0 / args.capacity
overloaded = args.scenario == "Server" and (args.target_qps or 0) > args.capacity
heap, cond, stop = [], threading.Condition(), []

def device():
    # Offline: one batch served at `capacity` samples/s; Server: each query answered after one
    # service time, or after 3x the latency bound when the offered load exceeds the capacity
    while True:
        with cond:
            while not heap and not stop:
                cond.wait()
            if stop and not heap:
                return
            due, seq, ids = heap[0]
            wait = due - time.monotonic()
            if wait > 0:
                cond.wait(min(wait, 0.02))
                continue
            heapq.heappop(heap)
        lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])

counter = [0]

def issue(queries):
    now = time.monotonic()
    with cond:
        if args.scenario == "Offline":
            step = max(1, int(0.02 / service))
            for k in range(0, len(queries), step):
                chunk = [q.id for q in queries[k:k + step]]
                counter[0] += 1
                heapq.heappush(heap, (now + service * (k + len(chunk)), counter[0], chunk))
        else:
            delay = 3 * args.latency_bound_ns / 1e9 if overloaded else service
            for q in queries:
                counter[0] += 1
                heapq.heappush(heap, (now + delay, counter[0], [q.id]))
        cond.notify()

worker = threading.Thread(target=device, daemon=True)
worker.start()
sut = lg.ConstructSUT(issue, lambda: None)
qsl = lg.ConstructQSL(1024, 128, lambda s: None, lambda s: None)
settings = lg.TestSettings()
settings.scenario = getattr(lg.TestScenario, args.scenario)
settings.mode = lg.TestMode.PerformanceOnly
settings.min_duration_ms = args.duration_ms
settings.min_query_count = 1
settings.print_timestamps = True
settings.offline_expected_qps = args.capacity
settings.server_target_qps = args.target_qps or args.capacity / 2
settings.server_target_latency_ns = args.latency_bound_ns
log = lg.LogSettings()
log.log_output.outdir = args.log_dir
log.log_output.copy_summary_to_stdout = False
time.sleep(0.1)
print("[I] ts=%.6f running actual test." % time.time(), flush=True)
lg.StartTestWithLogSettings(sut, qsl, settings, log)
with cond:
    stop.append(True)
    cond.notify()
lg.DestroyQSL(qsl)
lg.DestroySUT(sut)
'''

PROFILE = {
    "name": "known_capacity",
    "description": "A synthetic device of known capacity under the real LoadGen.",
    "default_main_benchmark": "dev-a",
    "benchmarks": {
        "dev-a": {"scenarios": ["Offline", "Server"]},
        "dev-b": {"scenarios": ["Offline"]},
    },
    "background_sets": {"all": ["dev-a", "dev-b"]},
    "actions": {"run_harness": {}},
    "command": {
        "argv": [
            "{{ python }}",
            "{{ vars.bench }}",
            "--log-dir",
            "{{ log_dir }}",
            "--scenario",
            "{{ scenario }}",
            "--duration-ms",
            "{{ duration_ms }}",
            "--capacity",
            "{{ vars.capacity }}",
            "--latency-bound-ns",
            "{{ vars.latency_bound_ns }}",
            {
                "when": "target_qps is not none and scenario == 'Server'",
                "argv": ["--target-qps", "{{ target_qps }}"],
            },
        ],
        "env": {"PYTHONUNBUFFERED": "1"},
        "cwd": "{{ log_dir }}",
    },
}


def write_harness(root: Path) -> tuple[Path, Path]:
    profiles = root / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "known_capacity.yml").write_text(yaml.safe_dump(PROFILE, sort_keys=False))
    bench = root / "known_capacity_bench.py"
    bench.write_text(BENCH.lstrip())
    return profiles, bench


def sweep_without_engines(root: Path) -> Path:
    """playbooks/sweep.yml without the engine build (a harness of the profile has no engines)."""
    plays = yaml.safe_load((REPO_ROOT / "playbooks" / "sweep.yml").read_text())
    for play in plays:
        play["tasks"] = [
            t for t in play.get("tasks", []) if "heteromig.fleet.engine_build" not in t
        ]
    path = root / "sweep_no_engines.yml"
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def spec(profiles: Path, bench: Path, **tuning: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "campaign": "tunelab",
        "harness": "known_capacity",
        "harness_profile_dirs": [str(profiles)],
        "defaults": {
            "main_benchmark_duration": 2000,
            "start_time_buffer": 300,
            "end_time_buffer_min": 300,
            "stop_grace": 2000,
            "background_benchmarks": ["dev-b"],
            "lease_timeout": 6000,
            "reconnect_timeout": 2000,
            "poll_interval": 500,
            "retries": 0,
            "harness_vars": {
                "bench": str(bench),
                "capacity": CAPACITY,
                "latency_bound_ns": LATENCY_BOUND_NS,
            },
        },
        "systems": [
            {"name": "lab1", "hosts": "gpus", "gpus": [{"devices": [0], "layout": ["2x3g.40gb"]}]}
        ],
        "benchmarks": {"dev-a": {"scenarios": ["Server"], "modes": ["performance"]}},
        "cells": [
            {
                "match": {"benchmark": "dev-a", "scenario": "Server"},
                "set": {"main_target_qps": "auto", "tune_trial_duration": 1000, **tuning},
            }
        ],
    }


@pytest.mark.slow
def test_a_tune_cell_finds_the_known_capacity_confirms_it_and_reports_the_search(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    profiles, bench = write_harness(tmp_path / "harness")
    playbook = sweep_without_engines(tmp_path)
    lab = ssh_lab(
        [
            HostSpec(
                "g1",
                {
                    "heteromig_gpu_backend": "sim",
                    "heteromig_sim_gpus": "1xH100-SXM5-80GB",
                    "heteromig_host_pythonpath": str(REPO_ROOT / "collections"),
                },
            )
        ]
    )
    inventory = lab.labdir / "tune-inventory.yml"
    inventory.write_text(
        yaml.safe_dump({"all": {"children": {"gpus": {"hosts": {"g1": lab.host_vars("g1")}}}}})
    )
    lab.inventory = inventory
    campaign = tmp_path / "campaign"
    run = lab.run_playbook(
        playbook,
        extravars={
            "heteromig_campaign_dir": str(campaign),
            "heteromig_sweep": spec(profiles, bench),
        },
        timeout=400,
    )
    assert (run.rc, run.status) == (0, "successful"), run.stdout[-6000:]

    records = [json.loads(x) for x in (campaign / "ledger.jsonl").read_text().splitlines()]
    trials = [r for r in records if r["event"] == "trial"]
    [finished] = [r for r in records if r["event"] == "finished"]
    # the probe: a short Offline run whose samples/s is about the capacity
    probe = trials[0]
    assert probe["kind"] == "probe" and probe["target"] is None and probe["verdict"] == "VALID"
    assert 0.8 * CAPACITY <= probe["metric"]["value"] <= 1.05 * CAPACITY, probe
    short = [t for t in trials if t["kind"] == "trial"]
    confirms = [t for t in trials if t["kind"] == "confirm"]
    assert 2 <= len(short) <= 8
    # every short trial's verdict is the oracle's: VALID iff target <= CAPACITY
    for trial in short:
        assert (trial["verdict"] == "VALID") == (trial["target"] <= CAPACITY), trial
        assert trial["duration_ms"] == 1000 and not trial["failed"]
    # the value: the highest VALID target, within 3% below the capacity, confirmed at length
    value = finished["tuning"]["value"]
    assert CAPACITY * 0.97 <= value <= CAPACITY, finished["tuning"]
    assert confirms[-1]["target"] == value and confirms[-1]["verdict"] == "VALID"
    assert confirms[-1]["duration_ms"] == 2000
    assert finished["verdict"] == "VALID" and finished["failed"] is False
    result = json.loads((Path(finished["results_dir"]) / "result.json").read_text())
    assert result["verdict"] == "VALID"
    # every trial is its own hetero run, on the host, with its own id
    run_ids = [t["trial_run_id"] for t in trials]
    assert len(set(run_ids)) == len(run_ids)
    on_host = {p.name for p in (lab.hostdir("g1") / "runs").iterdir()}
    assert set(run_ids) <= on_host
    # the tuned file, keyed by system, benchmark and scenario
    tuned = yaml.safe_load((campaign / "tuned.yml").read_text())
    assert tuned["tuned"]["lab1"]["dev-a"]["Server"]["main_target_qps"] == value
    # the reports list the search
    document = json.loads((campaign / "campaign.json").read_text())
    [row] = document["cells"]
    assert row["tuning"]["value"] == value
    assert [t["target"] for t in row["tuning"]["trials"]] == [t["target"] for t in trials]
    markdown = (campaign / "campaign.md").read_text()
    assert "Tuning" in markdown and ("%g" % value) in markdown
    assert ("%g" % value) in (campaign / "campaign.html").read_text()
    # each too-high trial says why in the report: the device answers an overloaded run after
    # 3x the bound, so LoadGen's 99th percentile is over the 400 ms bound
    bound = "over the %g ms bound" % (LATENCY_BOUND_NS / 1e6)
    for trial in short:
        [line] = [
            x
            for x in markdown.splitlines()
            if x.startswith("| %d | trial | %g (" % (trial["index"], trial["target"]))
        ]
        if trial["verdict"] == "VALID":
            assert line.endswith(" |  |"), line
        else:
            assert "| too_high: LoadGen: performance constraints not satisfied: 99th" in line
            assert bound in line, line

    # a second campaign reuses the value: main_target_qps: tuned runs no trial
    again = spec(profiles, bench)
    again["campaign"] = "tunelab2"
    again["cells"][0]["set"] = {
        "main_target_qps": "tuned",
        "tuned_file": str(campaign / "tuned.yml"),
    }
    campaign2 = tmp_path / "campaign2"
    run2 = lab.run_playbook(
        playbook,
        extravars={"heteromig_campaign_dir": str(campaign2), "heteromig_sweep": again},
        timeout=200,
    )
    assert (run2.rc, run2.status) == (0, "successful"), run2.stdout[-6000:]
    records2 = [json.loads(x) for x in (campaign2 / "ledger.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records2] == ["claimed", "finished"]
    assert records2[-1]["verdict"] == "VALID"
    assert records2[-1]["tuning"]["value"] == value
    result2 = json.loads((Path(records2[-1]["results_dir"]) / "result.json").read_text())
    assert result2["verdict"] == "VALID"
