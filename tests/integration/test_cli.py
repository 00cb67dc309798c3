"""The ``heteromig`` console script (heteromig_cli/, docs/cli.md) end to end.

Each test drives the real console script, ``.venv/bin/heteromig`` (made by scripts/bootstrap
from pyproject.toml's [project.scripts]), against an inventories/local-shaped inventory in
tmp_path: localhost over the local connection with one simulated H100 whose three 1g.10gb MIG
slices are made up front (the tests do not depend on the mig_partition role), host state, results
and campaign directories all under tmp_path, and runs of a few seconds. The checkout's
heteromig_cli goes first on PYTHONPATH, so the script runs the code under test even when the
venv's installed copy is older (bootstrap reinstalls only when pyproject.toml changes).

Checked: exit codes (0 VALID, 1 an INVALID cell, 2 bad usage and a bad spec, 130 Ctrl-C), the
progress display (plain lines in a pipe, the status line on a terminal), ``status`` and
``report`` of a run and of a campaign, Ctrl-C mid-cell then the same command resuming it, and a
re-run that runs no cell. The command's private ansible-runner directories must not outlive it.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pynvml
import pytest
import yaml

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HETEROMIG = ROOT / ".venv" / "bin" / "heteromig"
MIG_1G_10GB = 19  # the simulator's GPU instance profile id of 1g.10gb


def make_mig_slices(state: Path, count: int = 3) -> None:
    """An H100 with MIG enabled and ``count`` 1g.10gb slices, in the simulator's state file."""
    backend = open_backend("sim", str(state), "1xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    for _slice in range(count):
        instance = nvml.nvmlDeviceCreateGpuInstance(handle, MIG_1G_10GB)
        nvml.nvmlGpuInstanceCreateComputeInstance(instance, 0)
    backend.close()


class Lab:
    """One tmp_path's inventory, host state and directories, and the command run against them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.host_root = tmp_path / "host"
        self.results = tmp_path / "results"
        self.tmp = tmp_path / "tmp"  # TMPDIR of the command: its runner dirs must not stay
        for directory in (self.host_root, self.results, self.tmp):
            directory.mkdir()
        make_mig_slices(self.host_root / "nvml-sim.json")
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "heteromig_gpu_backend": "sim",
            "heteromig_sim_gpus": "1xH100-SXM5-80GB",
            "heteromig_host_root": str(self.host_root),
            "heteromig_sim_state": str(self.host_root / "nvml-sim.json"),
            # playbooks/hetero_run.yml: a short SingleStream main (it runs until LoadGen's
            # minimum query count is met too, so it is VALID on a loaded machine as well)
            "heteromig_hetero_main_scenario": "SingleStream",
            "heteromig_hetero_main_benchmark_duration": 2000,
            "heteromig_hetero_start_time_buffer": 500,
            "heteromig_hetero_stop_grace": 3000,
            "heteromig_engine_combinations": [
                {"benchmark": "synth-mlp-small", "scenario": "SingleStream"},
                {"benchmark": "synth-mlp-small", "scenario": "Offline"},
                {"benchmark": "synth-mlp-large", "scenario": "Offline"},
                {"benchmark": "synth-conv-1d", "scenario": "Offline"},
            ],
        }
        self.inventory = tmp_path / "hosts.yml"
        self.inventory.write_text(
            yaml.safe_dump({"gpu_hosts": {"hosts": {"localhost": host}}}, sort_keys=False)
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("ANSIBLE_CONFIG", "HETEROMIG_REPORT_DIR", "HETEROMIG_COLLECTION"):
            env.pop(name, None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["TMPDIR"] = str(self.tmp)
        env["ANSIBLE_LOCAL_TEMP"] = str(self.tmp_path / "ansible-local")
        return env

    def spec(self, name: str, campaign: str, benchmarks: dict[str, Any], **defaults: Any) -> Path:
        spec = {
            "version": 1,
            "campaign": campaign,
            "harness": "heteromig_synthetic",
            "defaults": {
                "main_benchmark_duration": 2000,
                "start_time_buffer": 500,
                "stop_grace": 3000,
                "retries": 1,
                **defaults,
            },
            "systems": [{"name": "sim", "hosts": "gpu_hosts"}],
            "benchmarks": benchmarks,
        }
        path = self.tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def argv(self, *args: str | Path) -> list[str]:
        return [str(HETEROMIG), *(str(a) for a in args)]

    def run(self, *args: str | Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args),
            cwd=self.tmp_path,  # not the checkout: the command finds its collection itself
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.assert_no_runner_dirs()
        return done

    def assert_no_runner_dirs(self) -> None:
        left = sorted(p.name for p in self.tmp.iterdir() if p.name.startswith("heteromig-"))
        assert not left, "the command left its private runner directories: %s" % left


def explain(done: subprocess.CompletedProcess[str]) -> str:
    return "rc %s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        done.returncode,
        done.stdout[-6000:],
        done.stderr[-3000:],
    )


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    assert HETEROMIG.is_file(), "no %s: run `bash scripts/bootstrap --tests`" % HETEROMIG
    return Lab(tmp_path)


def ledger(campaign: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (campaign / "ledger.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ run
@pytest.mark.slow
def test_run_valid_then_status_and_report(lab: Lab) -> None:
    done = lab.run("run", "-i", lab.inventory, "-e", "heteromig_results_dir=%s" % lab.results)
    assert done.returncode == 0, explain(done)
    out = done.stdout
    # plain progress lines (not a terminal): every play counted, the plays' own lines through
    assert re.search(r"^\[\d+:\d\d\] play 1/5, task 1: ", out, re.M), explain(done)
    assert re.search(r"^\[\d+:\d\d\] play 5/5, task \d+: Run the main benchmark", out, re.M)
    assert re.search(r"^hetero_run \[localhost\] VALID \| main p90_latency_ns", out, re.M), out
    assert "\x1b[2K" not in out
    match = re.search(r"^heteromig run: localhost VALID .*\| run (\S+)$", out, re.M)
    assert match, explain(done)
    run_dir = lab.results / match.group(1)
    # the reports follow heteromig_results_dir (not the checkout's results/)
    assert (run_dir / "results.jsonl").is_file()
    assert (run_dir / "localhost").is_dir()
    assert "HTML: %s" % (run_dir / "report.html") in out

    status = lab.run("status", run_dir)
    assert status.returncode == 0, explain(status)
    rows = status.stdout.splitlines()
    assert rows[0].split() == [
        "host",
        "run",
        "id",
        "main",
        "benchmark",
        "scenario",
        "verdict",
        "metric",
    ]
    assert rows[2].split()[:5] == [
        "localhost",
        match.group(1),
        "synth-mlp-small",
        "SingleStream",
        "VALID",
    ]

    report = lab.run("report", run_dir)
    assert report.returncode == 0, explain(report)
    assert "1 run(s): VALID=1" in report.stdout
    assert report.stdout.rstrip().endswith("HTML: %s" % (run_dir / "report.html"))


# ------------------------------------------------------------------------------ bad input
def test_bad_usage_and_bad_spec_exit_2_before_anything_runs(lab: Lab) -> None:
    no_command = lab.run()
    assert no_command.returncode == 2, explain(no_command)
    assert "usage: heteromig" in no_command.stderr

    missing = lab.run("sweep", "-i", lab.inventory, lab.tmp_path / "nope.yml")
    assert missing.returncode == 2, explain(missing)
    assert "sweep spec %s not found" % (lab.tmp_path / "nope.yml") in missing.stderr

    nothing = lab.run("status", lab.tmp_path / "nothing-here")
    assert nothing.returncode == 2, explain(nothing)

    # an unknown benchmark, on a terminal: the status line is drawn, the error printed above it
    spec = lab.spec("bad.yml", "cli-bad", {"synth-nope": {"scenarios": ["Offline"]}})
    campaign = lab.tmp_path / "campaign-bad"
    rc, out = run_on_terminal(
        lab, "sweep", "-i", lab.inventory, spec, "-e", "heteromig_campaign_dir=%s" % campaign
    )
    assert rc == 2, out
    assert "unknown benchmark 'synth-nope' for harness heteromig_synthetic" in out
    assert "the campaign stopped before any cell ran" in out
    assert re.search(r"\r\x1b\[2K\[\d+:\d\d\] play 1/4 \| \d+ task\(s\) done \| Validate", out), out
    assert not campaign.exists()  # no ledger: nothing ran
    assert not (lab.host_root / "runs").exists()


def run_on_terminal(lab: Lab, *args: str | Path, timeout: float = 90) -> tuple[int, str]:
    """The command with its stdout and stderr on a pseudo-terminal: (exit code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        lab.argv(*args),
        cwd=lab.tmp_path,
        env=lab.env(),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready = select.select([master], [], [], 1.0)[0]
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    lab.assert_no_runner_dirs()
    return rc, b"".join(chunks).decode("utf-8", "replace")


# ------------------------------------------------------------------------------ sweep
def test_sweep_with_an_invalid_cell_exits_1(lab: Lab) -> None:
    # Offline with a target of 1 sample/s: LoadGen issues a handful of samples, the run ends
    # long before its minimum duration: "min duration not satisfied", INVALID every time
    spec = lab.spec(
        "invalid.yml",
        "cli-invalid",
        {"synth-mlp-small": {"scenarios": ["Offline"]}},
        main_target_qps=1,
        retries=0,
    )
    campaign = lab.tmp_path / "campaign-invalid"
    done = lab.run("sweep", "-i", lab.inventory, spec, "-e", "heteromig_campaign_dir=%s" % campaign)
    assert done.returncode == 1, explain(done)
    assert re.search(
        r"^campaign \[localhost\] sim/synth-mlp-small/Offline/performance INVALID .*\| campaign "
        r"1/1 done, 0 VALID, 1 INVALID, 0 failed",
        done.stdout,
        re.M,
    ), explain(done)
    assert "min duration not satisfied" in done.stdout
    status = lab.run("status", "--campaign-dir", campaign)
    assert status.returncode == 1, explain(status)
    assert re.search(
        r"^sim/synth-mlp-small/Offline/performance\s+failed\s+INVALID\s+1\s", status.stdout, re.M
    )


@pytest.mark.slow
def test_sweep_ctrl_c_then_resume_then_nothing_left(lab: Lab) -> None:
    spec = lab.spec(
        "sweep.yml",
        "cli-sweep",
        {
            "synth-mlp-small": {"scenarios": ["SingleStream"]},
            "synth-conv-1d": {"scenarios": ["SingleStream"]},
        },
    )
    campaign = lab.tmp_path / "campaign"
    args = ("sweep", "-i", lab.inventory, spec, "-e", "heteromig_campaign_dir=%s" % campaign)
    first_cell = "sim/synth-mlp-small/SingleStream/performance"

    # 1. Ctrl-C once the first cell's run is going on the host (as a terminal sends it: to the
    #    command's process group): 130, the cell stays claimed in the ledger
    log = lab.tmp_path / "interrupted.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            lab.argv(*args),
            cwd=lab.tmp_path,
            env=lab.env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 90
            while "main_running" not in log.read_text() and proc.poll() is None:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    lab.assert_no_runner_dirs()
    assert rc == 130, text
    assert "heteromig: interrupted: stopping ansible-playbook as Ctrl-C does" in text
    assert re.search(r"^%s\s+in_flight\s" % re.escape(first_cell), text, re.M), text
    claims = [r for r in ledger(campaign) if r["event"] == "claimed"]
    assert [r["cell"] for r in claims] == [first_cell], claims
    assert not [r for r in ledger(campaign) if r["event"] == "finished"]
    run_id = claims[0]["run_id"]

    # 2. the same command: the cell is resumed (same run), the other one runs, every cell VALID
    resumed = lab.run(*args)
    assert resumed.returncode == 0, explain(resumed)
    text = resumed.stdout
    assert "campaign [localhost] resumes cell %s (attempt 1, run %s)" % (first_cell, run_id) in text
    assert re.search(
        r"^campaign \[localhost\] sim/synth-conv-1d/SingleStream/performance VALID .*\| campaign 2/2 done, 2 VALID",
        text,
        re.M,
    ), text
    assert re.search(
        r"^\[\d+:\d\d\] play 3/4, task \d+: Run the next cell of the system$", text, re.M
    )
    assert "heteromig sweep: 2 cell(s) claimed in this session" in text
    assert "summary %s (HTML: %s)" % (campaign / "campaign.md", campaign / "campaign.html") in text

    # 3. status and report of the campaign
    status = lab.run("status", campaign)
    assert status.returncode == 0, explain(status)
    lines = status.stdout.splitlines()
    assert lines[0].split()[:4] == ["cell", "state", "verdict", "attempts"]
    assert re.search(
        r"^%s\s+done\s+VALID\s+1\s+localhost\s.*%s$" % (re.escape(first_cell), run_id),
        status.stdout,
        re.M,
    ), status.stdout
    assert lines[-1] == "campaign %s: 2 cell(s): done=2" % campaign
    report = lab.run("report", campaign)
    assert report.returncode == 0, explain(report)
    assert report.stdout.startswith("# Campaign cli-sweep")
    assert "2 cell(s): VALID=2" in report.stdout
    assert report.stdout.rstrip().endswith("HTML: %s" % (campaign / "campaign.html"))

    # 4. again: nothing left to run (no claim, no hetero run), still 0; --check plans the same
    records = len(ledger(campaign))
    again = lab.run(*args)
    assert again.returncode == 0, explain(again)
    assert "2 cell(s): 0 to run, 2 skipped" in again.stdout
    assert "starts cell" not in again.stdout and "hetero_run [" not in again.stdout
    assert "heteromig sweep: 0 cell(s) claimed in this session" in again.stdout
    assert len(ledger(campaign)) == records
    check = lab.run(*args, "--check")
    assert check.returncode == 0, explain(check)
    assert "check mode: the plan above is what would run" in check.stdout
    assert len(ledger(campaign)) == records


# ------------------------------------------------------------------------------ slices
def test_status_merges_the_slice_ledgers_of_a_campaign(lab: Lab) -> None:
    """``status`` of a campaign run in slices (docs/campaign.md, "Slicing"): its ledgers are
    written here by the collection's own writer (claim_next with the slice's ``slice`` record,
    append), as two slice runs write them; the states expected are what this test made."""
    from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
        append,
        claim_next,
    )
    from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_slices import (
        Slice,
        header,
        partition,
    )
    from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
        Campaign,
        parse_spec,
    )

    spec = {
        "version": 1,
        "campaign": "sliced",
        "defaults": {"main_benchmark_duration": 5000, "retries": 0},
        "systems": [{"name": "sysA", "hosts": "a"}, {"name": "sysB", "hosts": "b"}],
        "benchmarks": {
            "synth-mlp-small": {"scenarios": ["Offline", "Server"]},
            "synth-conv-1d": {"scenarios": ["SingleStream"]},
        },
    }
    camp = parse_spec(spec, "sliced.yml")
    hosts = {"sysA": ["a1", "a2"], "sysB": ["b1", "b2"]}
    split = partition(camp, hosts, 2)
    campaign = lab.tmp_path / "campaign"
    campaign.mkdir()
    expected: dict[str, tuple[str, str, str]] = {}  # cell -> (state, verdict, slice)

    def finish(path: Path, claim: Any, host: str, verdict: str) -> None:
        append(
            str(path),
            {
                "event": "finished",
                "cell": claim.cell.id,
                "run_id": claim.run_id,
                "host": host,
                "session": "s",
                "attempt": claim.attempt,
                "verdict": verdict,
                "failed": False,
                "metric": {"name": "samples_per_second", "value": 1.5, "unit": "samples/s"},
            },
        )

    claims: dict[str, Any] = {}
    for index in (1, 2):
        piece = Slice(index, 2)
        view = Campaign(
            **{**camp.__dict__, "cells": [c for c in camp.cells if c.id in split.cells(index)]}
        )
        top = header(camp, piece, split.cells(index), split.hosts(index))
        path = campaign / piece.ledger
        for host in split.hosts(index):
            system = "sysA" if host.startswith("a") else "sysB"
            if index == 2 and system == "sysB":
                continue  # slice 2's sysB host has not started: its cells are pending
            first = True
            while claim := claim_next(str(path), view, system, host, "s", header=top):
                claims[claim.cell.id] = claim
                if index == 2:  # slice 2's sysA host is running its first cell
                    expected[claim.cell.id] = ("in_flight", "-", piece.label)
                    break
                verdict = "INVALID" if system == "sysB" and first else "VALID"
                finish(path, claim, host, verdict)
                expected[claim.cell.id] = (
                    "done" if verdict == "VALID" else "failed",
                    verdict,
                    piece.label,
                )
                first = False
        for cell in split.cells(index):
            expected.setdefault(cell, ("pending", "-", piece.label))
    assert sorted(expected) == sorted(c.id for c in camp.cells)
    states = {s for s, _v, _p in expected.values()}
    assert states == {"done", "failed", "in_flight", "pending"}, expected  # all four shown
    assert sorted(p.name for p in campaign.glob("*.jsonl")) == [
        "ledger.slice-1of2.jsonl",
        "ledger.slice-2of2.jsonl",
    ]

    status = lab.run("status", campaign)
    assert status.returncode == 1, explain(status)  # not every cell is done
    lines = status.stdout.splitlines()
    assert lines[0].split() == [
        "cell",
        "state",
        "verdict",
        "attempts",
        "host",
        "metric",
        "run",
        "id",
        "slice",
    ]
    shown = {}
    for line in lines[2:-1]:
        words = line.split()
        shown[words[0]] = (words[1], words[2], words[-1])
    assert shown == expected, status.stdout
    counts = {s: [v[0] for v in expected.values()].count(s) for s in states}
    assert lines[-1] == (
        "campaign %s: %d cell(s): done=%d failed=%d in_flight=%d pending=%d (slices 1/2, 2/2)"
        % (
            campaign,
            len(expected),
            counts["done"],
            counts["failed"],
            counts["in_flight"],
            counts["pending"],
        )
    )
    assert status.stderr == "", status.stderr
    # the slice ledger's own file name, or --campaign-dir, finds the same campaign
    by_file = lab.run("status", campaign / "ledger.slice-2of2.jsonl")
    assert by_file.stdout == status.stdout, explain(by_file)
    assert lab.run("status", "--campaign-dir", campaign).stdout == status.stdout

    # a slice that has not run: named in a warning, and the exit code says not done
    (campaign / "ledger.slice-2of2.jsonl").rename(lab.tmp_path / "slice-2.jsonl")
    alone = lab.run("status", campaign)
    assert alone.returncode == 1, explain(alone)
    assert (
        "heteromig: warning: slice 2/2 has no ledger (ledger.slice-2of2.jsonl): it has not run "
        "yet, or has no host; its cells are not known here" in alone.stderr
    ), alone.stderr
    assert {line.split()[0] for line in alone.stdout.splitlines()[2:-1]} == set(split.cells(1))
    (lab.tmp_path / "slice-2.jsonl").rename(campaign / "ledger.slice-2of2.jsonl")

    # both slices run to the end (the sysB host of slice 2 too): every cell done -> 0
    for index in (1, 2):
        piece = Slice(index, 2)
        path = campaign / piece.ledger
        for cell, claim in claims.items():
            if split.cell_slice[cell] == index and expected[cell][0] == "in_flight":
                finish(path, claim, claim.cell.system, "VALID")
        view = Campaign(
            **{**camp.__dict__, "cells": [c for c in camp.cells if c.id in split.cells(index)]}
        )
        top = header(camp, piece, split.cells(index), split.hosts(index))
        for host in split.hosts(index):
            system = "sysA" if host.startswith("a") else "sysB"
            while claim := claim_next(str(path), view, system, host, "s2", header=top):
                finish(path, claim, host, "VALID")
    # slice 1's INVALID cell stays failed (retries: 0): drop it from the "all done" check
    failed = [c for c, v in expected.items() if v[0] == "failed"]
    status = lab.run("status", campaign)
    assert status.returncode == 1, explain(status)
    final = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[2:-1]}
    assert {c for c, s in final.items() if s != "done"} == set(failed), status.stdout
