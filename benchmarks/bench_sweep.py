"""A campaign's schedule against the ideal, and the re-run of a finished campaign.

    .venv/bin/python benchmarks/bench_sweep.py --repeat 3
    .venv/bin/python benchmarks/bench_sweep.py --repeat 3 --main-ms 10000

Each repetition starts a fresh SSH lab (tests/lab: 4 sshd hosts on loopback, each a simulated
H100 cut into two 3g.40gb slices before the campaign: the main benchmark on one, a background on
the other; the spec sets no layout, so the layout-and-engines play is the host runtime, GPU
discovery and the engine build) and runs
``playbooks/sweep.yml`` with a spec of 24 short cells on one system of those 4 hosts: the
embedded harness ``heteromig_synthetic`` (real LoadGen, synthetic models on numpy),
synth-mlp-small in Server, SingleStream and MultiStream, synth-conv-1d in SingleStream and
MultiStream, synth-mlp-large in Server, each in performance, accuracy, TEST01 and TEST04 mode. Then it runs the same command again.

1. **Schedule.** The wall time of the layout-and-engines play plus the cells play, against the
   ideal: that same layout-and-engines time (measured, one-time) plus the sum of every cell's
   run time divided by the 4 hosts. A cell's run time is what the run itself records in its
   result.json (fetched into the campaign directory): from its first benchmark launch to its
   last benchmark exit. Not the code's own estimate. Target: at most 1.15x. Printed too: the
   cells play alone against the sum / 4, the gaps between a host's consecutive cells, how far
   apart the hosts' last cells end, and the time from the last one to the end of the play.
2. **Re-run.** The same command on the finished campaign: every cell must be skipped (the ledger
   unchanged, no new run on any host) within 10 s for the 24 cells (the whole ansible-playbook).

Sweep and re-run alternate (sweep 1, re-run 1, sweep 2, ...). One JSON line per run, then a
summary with median and spread. The 1-minute load average is printed with every line: the 4
hosts' benchmarks, their sshd sessions and the controller share this machine's cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _campaign_bench import (
    ANSIBLE_PLAYBOOK,
    ROOT,
    loadavg,
    now_utc,
    play_starts,
    playbook_env,
    read_timing,
    spread,
)

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from lab import HostSpec, SshLab
from lab.sshlab import LAB_MARKER

SWEEP = ROOT / "playbooks" / "sweep.yml"
HOSTS = ["s1", "s2", "s3", "s4"]
MODES = ["performance", "accuracy", "TEST01", "TEST04"]


def sweep_spec(main_ms: int) -> dict[str, Any]:
    return {
        "version": 1,
        "campaign": "benchsweep",
        "harness": "heteromig_synthetic",
        "defaults": {
            "main_benchmark_duration": main_ms,
            "start_time_buffer": 500,
            "end_time_buffer_min": 300,
            "stop_grace": 2000,
            "background_benchmarks": ["synth-mlp-small"],
            "poll_interval": 1000,
            "retries": 0,
        },
        "systems": [
            # the hosts' GPUs are cut into two 3g.40gb slices before the campaign (make_slices)
            {"name": "sys4", "hosts": "sweep_hosts"}
        ],
        "benchmarks": {
            "synth-mlp-small": {
                "scenarios": ["Server", "SingleStream", "MultiStream"],
                "modes": MODES,
            },
            "synth-conv-1d": {"scenarios": ["SingleStream", "MultiStream"], "modes": MODES},
            "synth-mlp-large": {"scenarios": ["Server"], "modes": MODES},
        },
        # No Offline cell: an Offline run issues offline_expected_qps x min_duration samples up
        # front, so its length follows the machine's load (a fixed target) or it may end short
        # of its min duration (the harness's calibration under load); either would make the
        # schedule measure the calibration. Server cells run at a fixed target.
        "cells": [{"match": {"benchmark": "synth-mlp-large"}, "set": {"main_target_qps": 100}}],
    }


def ledger(campaign: Path) -> list[dict[str, Any]]:
    path = campaign / "ledger.jsonl"
    return (
        [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    )


def run_window(result_json: Path, on_host: Path) -> tuple[float, float]:
    """First benchmark launch and last benchmark exit, as the run recorded them.

    From the result fetched into the campaign directory, else (a run the controller took for
    lost has no timeline there) from the result the runner wrote on the host.
    """
    data = json.loads(result_json.read_text())
    if not data.get("timeline") and on_host.exists():
        data = json.loads(on_host.read_text())
    launches = [e["t"] for e in data["timeline"] if e["event"] == "launch"]
    exits = [e["t"] for e in data["timeline"] if e["event"] == "exit"]
    if not launches or not exits:
        raise SystemExit("%s: no launch or exit in the timeline" % result_json)
    return min(launches), max(exits)


def runs_on_hosts(lab: SshLab) -> set[str]:
    found = set()
    for host in HOSTS:
        runs = lab.hostdir(host) / "runs"
        if runs.is_dir():
            found |= {"%s/%s" % (host, p.name) for p in runs.iterdir()}
    return found


def playbook(
    lab: SshLab, work: Path, campaign: Path, spec: dict[str, Any], tag: str
) -> tuple[float, list[dict[str, Any]], str, int]:
    timing = work / ("timing-%s.jsonl" % tag)
    env = playbook_env(
        work,
        timing,
        **{
            LAB_MARKER: str(lab.labdir),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(lab.labdir / "tmp"),
        },
    )
    assert lab.inventory is not None
    argv = [
        ANSIBLE_PLAYBOOK,
        "-i",
        str(lab.inventory),
        str(SWEEP),
        "-e",
        json.dumps({"heteromig_sweep": spec, "heteromig_campaign_dir": str(campaign)}),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ansible-playbook, its workers and ssh clients (the hosts' sshd sessions, modules, runners
    # and benchmarks are children of the lab's sshd, not of this process)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    (work / ("cpu-%s.txt" % tag)).write_text("%.3f\n" % cpu)
    (work / ("output-%s.log" % tag)).write_text(done.stdout + done.stderr)
    if done.returncode != 0:  # a failed cell fails its host's task: recorded, not fatal
        print(
            "sweep %s: ansible-playbook exited %d (see %s)"
            % (tag, done.returncode, work / ("output-%s.log" % tag)),
            file=sys.stderr,
            flush=True,
        )
    return wall, read_timing(timing), done.stdout, done.returncode


def make_slices(state: Path) -> None:
    """Cut the host's simulated H100 into two 3g.40gb MIG slices (as mig_layout would)."""
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


def start_lab(work: Path) -> SshLab:
    extra = {
        "heteromig_gpu_backend": "sim",
        "heteromig_sim_gpus": "1xH100-SXM5-80GB",
        "heteromig_host_pythonpath": str(ROOT / "collections"),
    }
    lab = SshLab([HostSpec(n, extra) for n in HOSTS], work / "lab")
    for name in HOSTS:
        make_slices(lab.hostdir(name) / "nvml-sim.json")
    inventory = {
        "all": {"children": {"sweep_hosts": {"hosts": {n: lab.host_vars(n) for n in HOSTS}}}}
    }
    path = lab.labdir / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    lab.inventory = path
    return lab


def sweep_once(work: Path, index: int, main_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = sweep_spec(main_ms)
    rep = work / ("rep%d" % index)
    rep.mkdir()
    lab = start_lab(rep)
    try:
        campaign = rep / "campaign"
        load_before = loadavg()
        wall, timing, _out, rc = playbook(lab, rep, campaign, spec, "sweep")
        plays = dict(play_starts(timing))
        names = [n for n, _t in play_starts(timing)]
        layout_t = plays[names[1]]
        cells_t = plays[names[2]]
        report_t = plays[names[3]]
        records = ledger(campaign)
        finished = [r for r in records if r["event"] == "finished"]
        claimed = {r["run_id"]: r["t"] for r in records if r["event"] == "claimed"}
        windows = []
        per_host: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        for record in finished:
            begin, end = run_window(
                Path(record["results_dir"]) / "result.json",
                lab.hostdir(record["host"]) / "runs" / record["run_id"] / "result.json",
            )
            windows.append(end - begin)
            per_host[record["host"]].append((claimed[record["run_id"]], begin, end, record["t"]))
        # where a host's time between two runs goes: its claim to the run's first launch (the
        # hetero_run start), the run's last exit to the ledger's finished record (the watch
        # seeing the end, fetching, the verdict), that record to the host's next claim
        gaps, start, fetch, between = [], [], [], []
        for spans in per_host.values():
            spans.sort()
            start += [b - c for c, b, _e, _f in spans]
            fetch += [f - e for _c, _b, e, f in spans]
            gaps += [s2[1] - s1[2] for s1, s2 in itertools.pairwise(spans)]
            between += [s2[0] - s1[3] for s1, s2 in itertools.pairwise(spans)]
        # how unevenly the hosts end: each host's last finished record, and from the last of
        # them to the end of the cells play (the hosts' loops ending)
        ends = [max(f for _c, _b, _e, f in spans) for spans in per_host.values()]
        verdicts: dict[str, int] = defaultdict(int)
        for record in finished:
            verdicts["failed" if record["failed"] else record["verdict"]] += 1
        layout_s = cells_t - layout_t
        cells_s = report_t - cells_t
        ideal_cells = sum(windows) / len(HOSTS)
        sweep = {
            "run": "sweep",
            "rep": index,
            "rc": rc,
            "cells": len(finished),
            "verdicts": dict(verdicts),
            "cells_per_host": {h: len(v) for h, v in sorted(per_host.items())},
            "playbook_wall_s": round(wall, 2),
            "plan_s": round(layout_t - plays[names[0]], 2),
            "layout_engines_s": round(layout_s, 2),
            "cells_play_s": round(cells_s, 2),
            # the report play and ansible-playbook's own start before its first play
            "report_and_startup_s": round(wall - (report_t - plays[names[0]]), 2),
            "controller_cpu_s": float((rep / "cpu-sweep.txt").read_text()),
            "sum_cell_runs_s": round(sum(windows), 2),
            "cell_run_s": spread(windows),
            "ideal_s": round(layout_s + ideal_cells, 2),
            "ratio": round((layout_s + cells_s) / (layout_s + ideal_cells), 3),
            "cells_only_ratio": round(cells_s / ideal_cells, 3),
            "gap_between_cells_s": spread(gaps) if gaps else None,
            "claim_to_launch_s": spread(start),
            "exit_to_finished_s": spread(fetch),
            "finished_to_next_claim_s": spread(between) if between else None,
            "host_end_spread_s": round(max(ends) - min(ends), 2),
            "last_finished_to_play_end_s": round(report_t - max(ends), 2),
            "loadavg_1m_before": load_before,
            "loadavg_1m": loadavg(),
        }
        print(json.dumps(sweep), flush=True)
        # the same command again: every cell skipped
        before_records = ledger(campaign)
        before_runs = runs_on_hosts(lab)
        load_before = loadavg()
        wall2, timing2, out2, rc2 = playbook(lab, rep, campaign, spec, "rerun")
        skipped = out2.count("\n  skip ")
        plays2 = play_starts(timing2)
        rerun = {
            "run": "rerun",
            "rep": index,
            "rc": rc2,
            "playbook_wall_s": round(wall2, 2),
            "plays_s": {
                name: round(t2 - t1, 2)
                for (name, t1), (_n, t2) in zip(
                    plays2, [*plays2[1:], ("end", timing2[-1]["t"])], strict=False
                )
            },
            "controller_cpu_s": float((rep / "cpu-rerun.txt").read_text()),
            "skipped_in_plan": skipped,
            "ledger_unchanged": ledger(campaign) == before_records,
            "no_new_run_on_hosts": runs_on_hosts(lab) == before_runs,
            "loadavg_1m_before": load_before,
            "loadavg_1m": loadavg(),
        }
        print(json.dumps(rerun), flush=True)
        if not (rerun["ledger_unchanged"] and rerun["no_new_run_on_hosts"] and skipped == 24):
            raise SystemExit("the re-run ran or claimed cells: %s" % rerun)
        return sweep, rerun
    finally:
        lab.close(check=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--main-ms", type=int, default=2000, help="main_benchmark_duration")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hm-bench-sweep-"))
    try:
        sweeps, reruns = [], []
        for index in range(args.repeat):
            sweep, rerun = sweep_once(work, index, args.main_ms)
            sweeps.append(sweep)
            reruns.append(rerun)
        summary = {
            "summary": "sweep",
            "date": now_utc(),
            "cpus": os.cpu_count(),
            "hosts": len(HOSTS),
            "cells": 24,
            "main_ms": args.main_ms,
            "repeat": args.repeat,
            "ratio": spread([s["ratio"] for s in sweeps]),
            "cells_only_ratio": spread([s["cells_only_ratio"] for s in sweeps]),
            "layout_engines_s": spread([s["layout_engines_s"] for s in sweeps]),
            "cells_play_s": spread([s["cells_play_s"] for s in sweeps]),
            "ideal_s": spread([s["ideal_s"] for s in sweeps]),
            "gap_between_cells_s": spread([s["gap_between_cells_s"]["median"] for s in sweeps]),
            "claim_to_launch_s": spread([s["claim_to_launch_s"]["median"] for s in sweeps]),
            "exit_to_finished_s": spread([s["exit_to_finished_s"]["median"] for s in sweeps]),
            "host_end_spread_s": spread([s["host_end_spread_s"] for s in sweeps]),
            "last_finished_to_play_end_s": spread(
                [s["last_finished_to_play_end_s"] for s in sweeps]
            ),
            "rerun_wall_s": spread([r["playbook_wall_s"] for r in reruns]),
            "loadavg_1m": spread([s["loadavg_1m"] for s in sweeps + reruns]),
        }
        print(json.dumps(summary), flush=True)
    finally:
        if args.keep:
            print("work directory kept: %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
