"""Target-QPS tuning (main_target_qps: auto) against a fine scan of fixed targets.

    .venv/bin/python benchmarks/bench_tuning.py --repeat 3                 # from the probe
    .venv/bin/python benchmarks/bench_tuning.py --repeat 3 --starts probe,420

The device is the one of tests/integration/test_campaign_tuning_lab.py (imported from there, one
source): a synthetic benchmark of *known capacity* (600 samples/s) driven by the real MLPerf
LoadGen, through its own harness profile, with a second benchmark of that profile as the
background on the other MIG slice. One SSH-lab host (tests/lab), a simulated H100 cut into two
3g.40gb slices before anything runs. Each repetition:

1. **Tuning**, once per start of ``--starts`` (``probe``: the Offline probe; a number: the
   cell's ``tune_start``). A campaign (``playbooks/sweep.yml`` without its engine build, as the
   test runs it) of one Server cell with ``main_target_qps: auto``: short trials of 1 s (longer
   when LoadGen finds one too short for its target) and one 2 s confirmation, every one a real
   hetero run. Read from the ledger: the tuned value, the number of short trials (the repeated
   ones too) and how each INVALID trial was read.
2. **Fine scan.** The same hetero run (same cell options, background, 1 s trial length) at
   fixed targets: every 1% from 90% to 106% of the device's nominal capacity, plus 50%, 75%
   and 125% of it, one playbook looping ``heteromig.fleet.hetero_run`` over them with one run
   id each. The highest VALID target of the scan is the reference.

Targets: the tuned value within 3% of the scan's highest VALID target; at most 8 short trials.
Tunings and scan alternate (the starts of repetition 1, scan 1, the starts of repetition 2, ...).
One JSON line per run, then a summary per start with median and spread, the 1-minute load
average with each line and ``uptime`` at the start and the end.

``--device synthetic`` runs the same on the **embedded harness** instead (``heteromig_synthetic``:
a synthetic numpy model under the real LoadGen, on a simulated MIG slice, ``--model`` with a
``--background`` on the other slice), whose capacity is not known: it follows the machine and its
load. So each repetition runs the scan first, then the tunings (scan 1, tunings 1, scan 2, ...),
and the scan covers ``--scan-center`` x ``--scan-from`` to ``--scan-to``. The
playbook is the whole ``playbooks/sweep.yml`` (host runtime and engine build included); the
scan's playbook builds the same engines first (cached by content). The spread of the scans'
highest VALID targets is the noise the tuned values are read against::

    .venv/bin/python benchmarks/bench_tuning.py --device synthetic --repeat 3 \\
        --background synth-mlp-small --latency-ms 400 --trial-ms 2000 \\
        --scan-center 10000 --scan-from 0.4 --scan-to 2.0 --scan-step 0.1 --starts probe,10000

On a shared machine the scans disagree by far more than 3% (docs/benchmarks.md, "Tuning on
the embedded harness"): ``scan_noise`` in the summary says by how much. The scan's step is
``--scan-step`` of the center (1% by default).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _campaign_bench import ANSIBLE_PLAYBOOK, ROOT, loadavg, now_utc, playbook_env, spread

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "collections"))
from test_campaign_tuning_lab import CAPACITY, spec, sweep_without_engines, write_harness

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from lab import HostSpec, SshLab
from lab.sshlab import LAB_MARKER

SCAN = [0.50, 0.75] + [round(0.90 + 0.01 * i, 2) for i in range(17)] + [1.25]
HOST = "g1"


def make_slices(state: Path) -> None:
    import pynvml

    backend = open_backend("sim", str(state), "1xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    for _slice in range(2):
        instance = nvml.nvmlDeviceCreateGpuInstance(handle, 9)  # 3g.40gb
        nvml.nvmlGpuInstanceCreateComputeInstance(
            instance, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE
        )
    backend.close()


def tuning_spec(
    profiles: Path, bench: Path, name: str, tune_start: float | None = None
) -> dict[str, Any]:
    """The test's spec, its layout left out (the slices exist already), its own campaign name;
    ``tune_start`` replaces the Offline probe by that first target."""
    out = spec(profiles, bench, **({"tune_start": tune_start} if tune_start else {}))
    out["campaign"] = name
    for system in out["systems"]:
        system.pop("gpus", None)
        system.pop("layout", None)
    return out


def synthetic_spec(
    name: str,
    model: str,
    background: str,
    latency_ms: float,
    trial_ms: int,
    start: float | None,
    poll_ms: int = 500,
    lease_ms: int = 6000,
) -> dict[str, Any]:
    """One Server cell of the embedded harness, tuned (main_target_qps: auto), under the same
    settings as the known-capacity spec (a cell twice the trial length, the background on the
    other slice), its latency bound ``latency_ms``; ``poll_ms`` and ``lease_ms``: the hetero
    run's status long-poll and lease (each poll is a module call on the host: on a 2-core
    machine it competes with the main for the CPU)."""
    tuning: dict[str, Any] = {"main_target_qps": "auto", "tune_trial_duration": trial_ms}
    if start:
        tuning["tune_start"] = start
    return {
        "version": 1,
        "campaign": name,
        "harness": "heteromig_synthetic",
        "defaults": {
            "main_benchmark_duration": 2 * trial_ms,
            "main_target_latency_ns": int(latency_ms * 1e6),
            "start_time_buffer": 300,
            "end_time_buffer_min": 300,
            "stop_grace": 2000,
            "background_benchmarks": "none" if background == "none" else [background],
            "lease_timeout": lease_ms,
            "reconnect_timeout": 2000,
            "poll_interval": poll_ms,
            "retries": 0,
        },
        # the host's GPU is cut into two 3g.40gb slices before anything runs (make_slices)
        "systems": [{"name": "lab1", "hosts": "gpus"}],
        "benchmarks": {model: {"scenarios": ["Server"], "modes": ["performance"]}},
        "cells": [{"match": {"benchmark": model, "scenario": "Server"}, "set": tuning}],
    }


def _engine_tasks(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """The embedded harness's runtime and engines, as playbooks/sweep.yml sets them up."""
    model = next(iter(cell["benchmarks"]))
    wanted = {(model, "Server"), (model, "Offline")}
    backgrounds = cell["defaults"]["background_benchmarks"]
    wanted |= {(b, "Offline") for b in ([] if backgrounds == "none" else backgrounds)}
    return [
        {
            "name": "Install the host-side runtime",
            "ansible.builtin.include_role": {"name": "heteromig.fleet.host_runtime"},
        },
        {
            "name": "Read the MIG slices",
            "heteromig.fleet.gpu_facts": {
                "backend": "sim",
                "sim_state": "{{ heteromig_sim_state }}",
            },
        },
        {
            "name": "Build the engines",
            "heteromig.fleet.engine_build": {
                "harness": "heteromig_synthetic",
                "mig_devices": "{{ ansible_facts['heteromig_mig_devices'] }}",
                "host_root": "{{ heteromig_host_root }}",
                "combinations": [{"benchmark": b, "scenario": sc} for b, sc in sorted(wanted)],
            },
        },
    ]


def scan_playbook(work: Path, cell: dict[str, Any], targets: list[float], tag: str) -> Path:
    """One hetero run per target, the tuning cell's options otherwise."""
    synthetic = cell["harness"] == "heteromig_synthetic"
    options = dict(cell["defaults"])
    options.pop("retries", None)
    options.update(
        harness=cell["harness"],
        harness_profile_dirs=cell.get("harness_profile_dirs") or [],
        main_benchmark=next(iter(cell["benchmarks"])),
        main_scenario="Server",
        main_benchmark_duration=cell["cells"][0]["set"]["tune_trial_duration"],
        main_target_qps="{{ item.1 }}",
        run_id="scan-%s-{{ item.0 }}" % tag,
        results_dir=str(work / ("scan-%s" % tag)),
    )
    plays = [
        {
            "name": "Fine scan of fixed Server targets",
            "hosts": "gpus",
            "gather_facts": False,
            # as playbooks/sweep.yml: the GPU modules (engine_build's check) on the simulator
            **(
                {
                    "module_defaults": {
                        "group/heteromig.fleet.gpu": {
                            "backend": "{{ heteromig_gpu_backend }}",
                            "sim_state": "{{ heteromig_sim_state }}",
                            "sim_gpus": "{{ heteromig_sim_gpus }}",
                        }
                    }
                }
                if synthetic
                else {}
            ),
            "tasks": [
                *(
                    _engine_tasks(cell)
                    if synthetic
                    else [
                        {
                            "name": "Read the MIG slices",
                            "heteromig.fleet.gpu_facts": {
                                "backend": "sim",
                                "sim_state": "{{ heteromig_sim_state }}",
                            },
                        }
                    ]
                ),
                {
                    "name": "One hetero run per fixed target",
                    "heteromig.fleet.hetero_run": options,
                    "loop": [[i, t] for i, t in enumerate(targets)],
                    # a run that fails (a runner lost under load) is recorded as FAILED, and
                    # the scan goes on
                    "ignore_errors": True,
                },
            ],
        }
    ]
    path = work / ("scan-%s.yml" % tag)
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def run(lab: SshLab, work: Path, playbook: Path, extravars: dict[str, Any], tag: str) -> float:
    env = playbook_env(
        work,
        work / ("timing-%s.jsonl" % tag),
        **{
            LAB_MARKER: str(lab.labdir),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(lab.labdir / "tmp"),
        },
    )
    assert lab.inventory is not None
    argv = [ANSIBLE_PLAYBOOK, "-i", str(lab.inventory), str(playbook)]
    argv += ["-e", json.dumps(extravars)] if extravars else []
    start = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    (work / ("output-%s.log" % tag)).write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit("%s failed (rc %d):\n%s" % (tag, done.returncode, done.stdout[-5000:]))
    return wall


def tune_once(lab: SshLab, work: Path, sweep: Path, cell: dict[str, Any], tag: str) -> dict:
    campaign = work / ("campaign-%s" % tag)
    load_before = loadavg()
    wall = run(
        lab,
        work,
        sweep,
        {"heteromig_sweep": cell, "heteromig_campaign_dir": str(campaign)},
        "tune-%s" % tag,
    )
    records = [json.loads(x) for x in (campaign / "ledger.jsonl").read_text().splitlines()]
    trials = [r for r in records if r["event"] == "trial"]
    [finished] = [r for r in records if r["event"] == "finished"]
    tuning = finished["tuning"]
    return {
        "run": "tuning",
        "rep": tag,
        "value": tuning["value"],
        "verdict": finished["verdict"],
        "start": tuning["start"],
        "start_from": tuning["start_from"],
        "short_trials": sum(1 for t in trials if t["kind"] == "trial"),
        "confirmations": sum(1 for t in trials if t["kind"] == "confirm"),
        "trials": [
            (t["kind"], t["target"], t.get("duration_ms"), t["verdict"], t.get("cause"))
            for t in trials
        ],
        "why": [(t["target"], (t.get("why") or "")[:200]) for t in trials if t.get("why")],
        "lengthened": sum(
            1 for t in trials if t["kind"] == "trial" and t.get("cause") == "too_short"
        ),
        "playbook_wall_s": round(wall, 2),
        "loadavg_1m_before": load_before,
        "loadavg_1m": loadavg(),
    }


def scan_once(
    lab: SshLab,
    work: Path,
    cell: dict[str, Any],
    tag: str,
    targets: list[float] | None = None,
    fine_from: float | None = None,
) -> dict:
    """Every target of ``targets`` (default: SCAN of the known capacity) as one hetero run;
    ``fine_from``: the lowest target of the fine part (default 90% of the capacity)."""
    if targets is None:
        targets = [round(CAPACITY * f, 1) for f in SCAN]
        fine_from = CAPACITY * SCAN[2]
    load_before = loadavg()
    wall = run(lab, work, scan_playbook(work, cell, targets, tag), {}, "scan-%s" % tag)
    verdicts, reasons, p99_ms, completed = {}, {}, {}, {}
    for index, target in enumerate(targets):
        found = list(
            (work / ("scan-%s" % tag) / ("scan-%s-%d" % (tag, index))).glob("*/result.json")
        )
        if len(found) != 1:
            verdicts[target] = "FAILED"
            reasons[str(target)] = "no result.json (%d found)" % len(found)
            continue
        data = json.loads(found[0].read_text())
        verdicts[target] = data["verdict"]
        if data["reasons"]:
            reasons[str(target)] = data["reasons"][0][:160]
        loadgen = (data.get("main") or {}).get("loadgen") or {}
        latency = loadgen.get("latency_ns") or {}
        if latency.get("p99") is not None:
            p99_ms[str(target)] = round(latency["p99"] / 1e6, 2)
        if (loadgen.get("metric") or {}).get("value") is not None:
            completed[str(target)] = round(loadgen["metric"]["value"], 1)
    valid = [t for t, v in verdicts.items() if v == "VALID"]
    highest = max(valid) if valid else None
    fine = [t for t in targets if t >= (fine_from or 0)]
    return {
        "run": "scan",
        "rep": tag,
        "highest_valid": highest,
        # the fine part is monotonic when every target of it below the highest VALID one is
        # VALID too (50% of the capacity gives too few queries in 1 s for LoadGen's early
        # stopping: INVALID whatever the device)
        "fine_monotonic": highest is not None
        and all(verdicts[t] == "VALID" for t in fine if t <= highest),
        # the highest VALID target at the top of the scan says nothing of the limit
        "highest_is_top": highest is not None and highest == max(targets),
        "lowest_valid_in_fine": min((t for t in fine if verdicts[t] == "VALID"), default=None),
        "verdicts": {str(t): v for t, v in verdicts.items()},
        "p99_ms": p99_ms,
        "completed_per_s": completed,
        "reasons": reasons,
        "playbook_wall_s": round(wall, 2),
        "loadavg_1m_before": load_before,
        "loadavg_1m": loadavg(),
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def start_of(word: str) -> float | None:
    """``probe`` -> None (the Offline probe), else the tune_start number."""
    if word.strip().lower() == "probe":
        return None
    value = float(word)
    if math.isnan(value) or value <= 0:
        raise SystemExit("--starts: %r is neither 'probe' nor a number > 0" % word)
    return value


def summarize(tunes: list[dict], reference: float | None) -> dict[str, Any]:
    found = [t["value"] for t in tunes if t["value"] is not None]
    errors = [abs(v - reference) / reference for v in found if reference is not None]
    own = [t["vs_own_scan"] for t in tunes if t.get("vs_own_scan") is not None]
    return {
        # the synthetic device: each tuning against the scan run right before it
        **(
            {"vs_own_scan": spread(own), "own_within_3pct": [abs(e) <= 0.03 for e in own]}
            if own
            else {}
        ),
        "runs": len(tunes),
        "tuned_value": spread(found) if found else None,
        "nothing_found": sum(1 for t in tunes if t["value"] is None),
        "error_vs_reference": spread(errors) if errors else None,
        # a run that found nothing is not within 3%
        "within_3pct": [e <= 0.03 for e in errors] + [False] * (len(tunes) - len(errors)),
        "short_trials": spread([t["short_trials"] for t in tunes]),
        "lengthened": [t["lengthened"] for t in tunes],
        "at_most_8_trials": [t["short_trials"] <= 8 for t in tunes],
        "tuning_wall_s": spread([t["playbook_wall_s"] for t in tunes]),
    }


def synthetic_reps(
    args: argparse.Namespace, lab: SshLab, work: Path, starts: list[float | None], before: str
) -> int:
    """The embedded harness: scan, then each start's tuning, per repetition (module doc)."""
    steps = round((args.scan_to - args.scan_from) / args.scan_step)
    targets = [
        float("%.4g" % (args.scan_center * (args.scan_from + args.scan_step * i)))
        for i in range(steps + 1)
    ]
    tunes: dict[str, list[dict]] = {}
    scans: list[dict] = []
    for index in range(args.repeat):
        probe = synthetic_spec(
            "benchscan%d" % index,
            args.model,
            args.background,
            args.latency_ms,
            args.trial_ms,
            None,
            args.poll_ms,
            args.lease_ms,
        )
        scan = scan_once(lab, work, probe, str(index), targets, targets[0])
        scan["uptime"] = uptime()
        print(json.dumps(scan), flush=True)
        scans.append(scan)
        if args.scan_only:
            continue
        for number, start in enumerate(starts):
            tag = "%d-%d" % (index, number)
            cell = synthetic_spec(
                "benchtune%d%d" % (index, number),
                args.model,
                args.background,
                args.latency_ms,
                args.trial_ms,
                start,
                args.poll_ms,
                args.lease_ms,
            )
            tune = tune_once(lab, work, ROOT / "playbooks" / "sweep.yml", cell, tag)
            if tune["value"] is not None and scan["highest_valid"]:
                tune["vs_own_scan"] = round(tune["value"] / scan["highest_valid"] - 1, 4)
            tune["uptime"] = uptime()
            print(json.dumps(tune), flush=True)
            tunes.setdefault("probe" if start is None else "%g" % start, []).append(tune)
    highest = [s["highest_valid"] for s in scans if s["highest_valid"] is not None]
    reference = statistics.median(highest) if highest else None
    every = [t for runs in tunes.values() for t in runs]
    summary = {
        "summary": "tuning",
        "device": "synthetic",
        "date": now_utc(),
        "cpus": os.cpu_count(),
        "model": args.model,
        "background": args.background,
        "latency_ms": args.latency_ms,
        "trial_ms": args.trial_ms,
        "poll_ms": args.poll_ms,
        "lease_ms": args.lease_ms,
        "scan": [targets[0], targets[-1], len(targets)],
        "starts": list(tunes),
        "repeat": args.repeat,
        "highest_valid": spread(highest) if highest else None,
        # the noise the tuned values are read against: how far apart the scans' limits are
        "scan_noise": round((max(highest) - min(highest)) / reference, 4) if highest else None,
        "scans_fine_monotonic": [s["fine_monotonic"] for s in scans],
        "scans_highest_is_top": [s["highest_is_top"] for s in scans],
        "reference_highest_valid": reference,
        "by_start": {start: summarize(runs, reference) for start, runs in tunes.items()},
        "loadavg_1m": spread([r["loadavg_1m"] for r in every + scans]),
        "uptime_before": before,
        "uptime_after": uptime(),
    }
    print(json.dumps(summary), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--starts",
        default="probe",
        help="comma-separated starts tuned in turn each repetition: 'probe' (the Offline "
        "probe) or a number (the cell's tune_start), e.g. probe,420",
    )
    parser.add_argument(
        "--tune-start",
        type=float,
        default=None,
        help="the same as --starts <number> (one start)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--device",
        choices=["known", "synthetic"],
        default="known",
        help="known: the test's device of known capacity; synthetic: the embedded harness",
    )
    synthetic = parser.add_argument_group("--device synthetic")
    synthetic.add_argument("--model", default="synth-mlp-small", help="the main benchmark")
    synthetic.add_argument(
        "--background", default="synth-mlp-small", help="the background benchmark, or none"
    )
    synthetic.add_argument("--latency-ms", type=float, default=100.0, help="the latency bound")
    synthetic.add_argument("--trial-ms", type=int, default=1000, help="short trial length")
    synthetic.add_argument("--scan-center", type=float, help="the target the scan is around")
    synthetic.add_argument("--scan-from", type=float, default=0.80, help="of the center")
    synthetic.add_argument("--scan-to", type=float, default=1.15, help="of the center")
    synthetic.add_argument("--scan-step", type=float, default=0.01, help="of the center")
    synthetic.add_argument("--scan-only", action="store_true", help="scans, no tuning")
    synthetic.add_argument(
        "--poll-ms", type=int, default=500, help="hetero_run poll_interval (the test's 500)"
    )
    synthetic.add_argument(
        "--lease-ms", type=int, default=6000, help="hetero_run lease_timeout (the test's 6000)"
    )
    args = parser.parse_args()
    if args.device == "synthetic" and not args.scan_center:
        raise SystemExit("--device synthetic needs --scan-center (its capacity is not known)")
    starts = [args.tune_start] if args.tune_start else [start_of(w) for w in args.starts.split(",")]
    uptime_before = uptime()
    work = Path(tempfile.mkdtemp(prefix="hm-bench-tune-"))
    lab = None
    try:
        profiles, bench = write_harness(work / "harness")
        sweep = sweep_without_engines(work)
        lab = SshLab(
            [
                HostSpec(
                    HOST,
                    {
                        "heteromig_gpu_backend": "sim",
                        "heteromig_sim_gpus": "1xH100-SXM5-80GB",
                        "heteromig_host_pythonpath": str(ROOT / "collections"),
                    },
                )
            ],
            work / "lab",
        )
        make_slices(lab.hostdir(HOST) / "nvml-sim.json")
        inventory = lab.labdir / "inventory.yml"
        inventory.write_text(
            yaml.safe_dump({"all": {"children": {"gpus": {"hosts": {HOST: lab.host_vars(HOST)}}}}})
        )
        lab.inventory = inventory
        tunes: dict[str, list[dict]] = {}
        scans = []
        if args.device == "synthetic":
            return synthetic_reps(args, lab, work, starts, uptime_before)
        for index in range(args.repeat):
            for number, start in enumerate(starts):
                tag = "%d-%d" % (index, number)
                cell = tuning_spec(profiles, bench, "benchtune%d%d" % (index, number), start)
                tune = tune_once(lab, work, sweep, cell, tag)
                print(json.dumps(tune), flush=True)
                tunes.setdefault("probe" if start is None else "%g" % start, []).append(tune)
            scan = scan_once(lab, work, cell, str(index))
            print(json.dumps(scan), flush=True)
            scans.append(scan)
        highest = [s["highest_valid"] for s in scans if s["highest_valid"] is not None]
        reference = min(highest) if highest else None
        every = [t for runs in tunes.values() for t in runs]
        summary = {
            "summary": "tuning",
            "date": now_utc(),
            "cpus": os.cpu_count(),
            "capacity_nominal": CAPACITY,
            "starts": list(tunes),
            "repeat": args.repeat,
            "highest_valid": spread(highest) if highest else None,
            "scans_fine_monotonic": [s["fine_monotonic"] for s in scans],
            "reference_highest_valid": reference,
            "by_start": {start: summarize(runs, reference) for start, runs in tunes.items()},
            "loadavg_1m": spread([r["loadavg_1m"] for r in every + scans]),
            "uptime_before": uptime_before,
            "uptime_after": uptime(),
        }
        print(json.dumps(summary), flush=True)
    finally:
        if lab is not None:
            lab.close(check=False)
        if args.keep:
            print("work directory kept: %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
