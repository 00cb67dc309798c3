"""A campaign's lanes (gpus_at_once) resuming after a controller stop, over the SSH lab.

Real sshd hosts with simulated GPUs, the real playbook (playbooks/sweep.yml) run as slice 1 of 2,
real hetero runs of the stand-in benchmark under the real LoadGen
(tests/fixtures/hetero/fake_bench.py through the user-defined harness profile fake_loadgen).
Host g1 has two H100s: its system runs two cells at once, one per GPU. The controller is stopped
with SIGINT (a Ctrl-C to its process group) while the two lanes' second cells run (a fifth cell
still pending), then the same command runs again: it must resume the two on their own GPUs
before it gives a lane the pending cell, and run nothing that was done before the stop.

**Gates, not sleeps.** Every benchmark process of the hosts gets fake_bench's gate variable
with a *relative* path, ``gate``: a benchmark resolves it in its working directory, its own log
directory (the profile's ``cwd: "{{ log_dir }}"``), so each benchmark of each run has a gate of
its own and waits in warm-up (not ready) until the test creates ``<log_dir>/gate``, leaving
``<log_dir>/gate.waiting.<pid>`` meanwhile. The test opens the first two runs' gates only
once both are waiting (both lanes in progress at once), the mains' gates together (their timed
windows overlap whatever the machine's load), and stops the controller while the next two runs
wait at theirs: the stop lands while both lanes run a cell. The next session's runs pass their
gates only once it has claimed them: the stopped runs are still going when it resumes them.

Every expectation comes from outside the code under test: the ledger file's lines, the run
directories and LoadGen's own logs on the host's disk, /proc (processes carrying a run's marker
or naming its directory), flock probes of the locks, and ``heteromig status`` (the reader a user
runs) for what the ledger says.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_hetero_run import FIXTURES, HOLD_ENV
from test_sweep_lab import SWEEP, assert_no_cell_valid_twice, expected_cells, wait_until

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_containment import (
    MARKER_ENV,
)
from lab import HostSpec, MakeLab, SshLab
from lab.runner import ANSIBLE_CFG, REPO_ROOT
from lab.sshlab import LAB_MARKER

pytestmark = pytest.mark.integration

GATE = "gate"  # relative: each benchmark's own gate in its log directory (see the docstring)
HOST = "g1"  # two GPUs, two lanes
SLICE = "1/2"
LEDGER = "ledger.slice-1of2.jsonl"
CELLS_AT_ONCE = 2


def spec() -> dict[str, Any]:
    """System ``lanes`` (g1, both GPUs cut in two, 2 cells at once) and system ``idle`` (g2).

    The split by hand (docs/campaign.md, "Slicing"): hosts in spec order of the systems, g1 then
    g2, dealt to slices 1 and 2; each system's cells go to its one host, so slice 1 is the five
    cells of ``lanes`` on g1, and slice 2 (never run here) those of ``idle``."""
    return {
        "version": 1,
        "campaign": "lanesresume",
        "harness": "fake_loadgen",
        "harness_profile_dirs": [str(FIXTURES / "profiles")],
        "defaults": {
            "harness_vars": {"fake_bench": str(FIXTURES / "fake_bench.py")},
            "main_benchmark_duration": 2000,
            "start_time_buffer": 300,
            "stop_grace": 2000,
            "background_benchmarks": ["fake-c"],
            "lease_timeout": 60000,
            "poll_interval": 500,
            # no retry: a cell the stop broke must show, not be run again and pass
            "retries": 0,
        },
        "systems": [
            {"name": "lanes", "hosts": "lanes", "layout": ["2x3g.40gb"], "gpus_at_once": 2},
            {"name": "idle", "hosts": "idle", "layout": ["2x3g.40gb"]},
        ],
        "benchmarks": {
            "fake-a": {"scenarios": ["Offline", "SingleStream"]},
            "fake-b": {"scenarios": ["Offline", "SingleStream"]},
            "fake-c": {"scenarios": ["Offline"]},
        },
    }


def start_lab(ssh_lab: MakeLab, tmp_path: Path) -> SshLab:
    groups = {"lanes": {HOST: "2xH100-SXM5-80GB"}, "idle": {"g2": "1xH100-SXM5-80GB"}}
    specs = []
    for hosts in groups.values():
        for name, gpus in hosts.items():
            # the host's sessions get a TMPDIR of their own: a module ended by the stop leaves
            # its payload there, not in the machine's /tmp
            temp = tmp_path / "host-tmp" / name
            temp.mkdir(parents=True)
            specs.append(
                HostSpec(
                    name,
                    {"heteromig_gpu_backend": "sim", "heteromig_sim_gpus": gpus},
                    {HOLD_ENV: GATE, "TMPDIR": str(temp)},
                )
            )
    lab = ssh_lab(specs)
    inventory = {
        "all": {
            "children": {
                group: {"hosts": {name: lab.host_vars(name) for name in hosts}}
                for group, hosts in groups.items()
            }
        }
    }
    lab.inventory = lab.labdir / "sweep-inventory.yml"
    lab.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return lab


class Controller:
    """``ansible-playbook playbooks/sweep.yml`` as a terminal runs it: its own process group,
    so that a Ctrl-C (SIGINT to the group) reaches it and everything it started; its output in
    a file (nobody has to read a pipe while the test opens gates)."""

    def __init__(self, lab: SshLab, campaign: Path, name: str) -> None:
        temp = lab.labdir / "t"  # short: ansible-core's RPC socket path must fit AF_UNIX
        temp.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "PATH": "%s%s%s" % (Path(sys.executable).parent, os.pathsep, env.get("PATH", "")),
                "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
                "ANSIBLE_NOCOLOR": "1",
                LAB_MARKER: str(lab.labdir),
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.control_dir),
                "ANSIBLE_LOCAL_TEMP": str(lab.labdir / "tmp"),
                "HETEROMIG_REPORT_DIR": str(campaign.parent / "hetero-reports"),
                "TMPDIR": str(temp),
            }
        )
        extravars = {
            "heteromig_sweep": spec(),
            "heteromig_campaign_dir": str(campaign),
            "heteromig_campaign_slice": SLICE,
        }
        self.log = campaign.parent / ("%s.log" % name)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "ansible-playbook"),
                    "-i",
                    str(lab.inventory),
                    str(SWEEP),
                    "-e",
                    json.dumps(extravars),
                ],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


@pytest.fixture
def controllers() -> Iterator[Callable[[SshLab, Path, str], Controller]]:
    started: list[Controller] = []

    def start(lab: SshLab, campaign: Path, name: str) -> Controller:
        started.append(Controller(lab, campaign, name))
        return started[-1]

    yield start
    for controller in started:  # a failed assertion must not leave ansible-playbook behind
        controller.close()


# ------------------------------------------------------------------ what the host's disk says
def lane_runs(lab: SshLab) -> dict[str, Path]:
    """Every run directory of the host's lanes, by run id."""
    return {p.name: p for p in lab.hostdir(HOST).glob("lanes/gpu*/runs/*") if p.is_dir()}


def gpu_of(run_dir: Path) -> int:
    """The lane (GPU index) of a run directory ``.../lanes/gpu<N>/runs/<run_id>``."""
    return int(run_dir.parent.parent.name.removeprefix("gpu"))


def waiting(lab: SshLab) -> dict[str, set[str]]:
    """Run id -> the names of its benchmarks waiting at a gate still closed."""
    out: dict[str, set[str]] = {}
    for mark in lab.hostdir(HOST).glob("lanes/gpu*/runs/*/*/%s.waiting.*" % GATE):
        bench = mark.parent
        if not (bench / GATE).exists():
            out.setdefault(bench.parent.name, set()).add(bench.name)
    return out


def open_gates(lab: SshLab, run_id: str, benches: set[str]) -> None:
    for bench in benches:
        (lane_runs(lab)[run_id] / bench / GATE).touch()


def loadgen_window(run_dir: Path) -> tuple[datetime, datetime]:
    """The main's timed window, from LoadGen's own detail log (power_begin/power_end; both in
    the host's local time, the same for every run of the host)."""
    found: dict[str, datetime] = {}
    for line in (run_dir / "main" / "mlperf_log_detail.txt").read_text().splitlines():
        if line.startswith(":::MLLOG "):
            record = json.loads(line[len(":::MLLOG ") :])
            if record["key"] in ("power_begin", "power_end"):
                found[record["key"]] = datetime.strptime(record["value"], "%m-%d-%Y %H:%M:%S.%f")
    return found["power_begin"], found["power_end"]


def summary(run_dir: Path) -> tuple[str, int]:
    """The main's LoadGen summary on the host: its text and its modification time."""
    path = run_dir / "main" / "mlperf_log_summary.txt"
    return path.read_text(), path.stat().st_mtime_ns


# ------------------------------------------------------------------------- processes, locks
def run_processes(lab: SshLab) -> list[str]:
    """Live processes of the host's lane runs, read from /proc: a benchmark carries its run's
    marker (MARKER_ENV=<run dir>) in its environment, a runner names its run directory."""
    lanes = str(lab.hostdir(HOST) / "lanes") + "/"
    marker = ("%s=%s" % (MARKER_ENV, lanes)).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] in "ZX":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if lanes in cmdline or any(item.startswith(marker) for item in environ):
            found.append("%s %s" % (entry.name, cmdline))
    return found


def run_processes_of(lab: SshLab, run_id: str) -> list[str]:
    return [p for p in run_processes(lab) if "/runs/%s/" % run_id in p or "/runs/%s " % run_id in p]


def lock_held(path: Path) -> bool:
    """Whether a process holds an flock of ``path`` (probed, shared and non-blocking)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# ------------------------------------------------------------------------- the ledger
def ledger(campaign: Path) -> list[dict[str, Any]]:
    path = campaign / LEDGER
    if not path.exists():
        return []
    # whole lines only: read while the controller appends, the last one may be half written
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]


def of(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == event]


def status(campaign: Path, tmp_path: Path) -> dict[str, list[str]]:
    """``heteromig status`` of the campaign directory: cell -> its line's columns (cell, state,
    verdict, attempts, host, metric..., run id, slice); a cell listed twice fails."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "heteromig_cli", "status", "--campaign-dir", str(campaign)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # slice 2 never ran: a warning, and exit 1 (its cells are unknown), whatever slice 1 did
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "slice 2/2 has no ledger" in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["cell", "state", "verdict", "attempts"], done.stdout
    assert set(lines[1].replace(" ", "")) == {"-"}, done.stdout
    rows: dict[str, list[str]] = {}
    for line in lines[2:-1]:
        columns = line.split()
        assert columns[0] not in rows, "cell %s listed twice:\n%s" % (columns[0], done.stdout)
        rows[columns[0]] = columns
    return rows


# ---------------------------------------------------------------------------------- the test
@pytest.mark.timeout(600)
@pytest.mark.slow
def test_lanes_stopped_mid_cell_resume_on_their_gpus_and_rerun_nothing_done(
    ssh_lab: MakeLab, tmp_path: Path, controllers: Callable[[SshLab, Path, str], Controller]
) -> None:
    # the gates rest on the profile starting each benchmark in its own log directory
    profile = yaml.safe_load((FIXTURES / "profiles" / "fake_loadgen.yml").read_text())
    assert profile["command"]["cwd"] == "{{ log_dir }}", profile["command"]
    lab = start_lab(ssh_lab, tmp_path)
    campaign = tmp_path / "campaign"
    cells = [c for c in expected_cells(spec()) if c.startswith("lanes/")]
    assert len(cells) == 5
    first_run = controllers(lab, campaign, "first")

    def running() -> None:
        assert first_run.proc.poll() is None, first_run.output()[-4000:]

    def both_lanes(runs: dict[str, set[str]], bench: str, old: set[str]) -> list[str] | None:
        """Run ids of runs not in ``old`` whose ``bench`` waits at its gate, when every lane
        has one."""
        running()
        found = [r for r, benches in runs.items() if r not in old and bench in benches]
        dirs = lane_runs(lab)
        if len({gpu_of(dirs[r]) for r in found}) < CELLS_AT_ONCE:
            return None
        return sorted(found)

    # 1. both lanes' first runs are in progress at once: their backgrounds wait at their gates
    first = wait_until(lambda: both_lanes(waiting(lab), "bg-1", set()), "a run on each lane", 300)
    assert len(first) == CELLS_AT_ONCE, first
    for run_id in first:
        open_gates(lab, run_id, {"bg-1"})
    # the mains, once both are ready to start, at the same moment
    wait_until(lambda: both_lanes(waiting(lab), "main", set()) == first, "both mains", 120)
    for run_id in first:
        open_gates(lab, run_id, {"main"})
    # 2. the next cell on each lane: stop the controller while both wait at their gates
    second = wait_until(
        lambda: both_lanes(waiting(lab), "bg-1", set(first)), "the next cell on each lane", 240
    )
    assert len(second) == CELLS_AT_ONCE, second
    os.killpg(first_run.proc.pid, signal.SIGINT)
    rc = first_run.proc.wait(120)
    output = first_run.output()
    assert rc != 0, output[-4000:]

    # --------------------------------------------------------------- after the stop
    before = ledger(campaign)
    claimed = {r["run_id"]: r for r in of(before, "claimed")}
    finished = {r["run_id"]: r for r in of(before, "finished")}
    assert sorted(claimed) == sorted(first + second), (claimed, first, second)
    [pending] = set(cells) - {r["cell"] for r in claimed.values()}
    assert len({r["session"] for r in before if r["event"] != "slice"}) == 1
    dirs = lane_runs(lab)
    assert sorted(dirs) == sorted(claimed)  # the host ran exactly the runs the ledger claimed
    for run_id, claim in claimed.items():
        assert (claim["host"], claim["gpus_at_once"]) == (HOST, CELLS_AT_ONCE), claim
        assert claim["gpu"] == gpu_of(dirs[run_id]), claim  # on its claim's lane
    # the first two finished VALID, by LoadGen too; the next two were left in flight
    assert sorted(finished) == first, finished
    for run_id in first:
        assert finished[run_id]["verdict"] == "VALID" and not finished[run_id]["failed"]
        assert "Result is : VALID" in summary(dirs[run_id])[0]
    done_before = {run_id: summary(dirs[run_id]) for run_id in first}
    # and the two lanes really ran at once: the mains' LoadGen windows overlap
    windows = [loadgen_window(dirs[run_id]) for run_id in first]
    assert max(w[0] for w in windows) < min(w[1] for w in windows), windows
    # what a user reads: the two done, the two in flight, the fifth pending, each cell once
    rows = status(campaign, tmp_path)
    assert sorted(rows) == sorted(cells), rows
    assert rows[pending][1:5] == ["pending", "-", "0", "-"], rows[pending]
    for run_id, claim in claimed.items():
        row = rows[claim["cell"]]
        state = "done" if run_id in first else "in_flight"
        verdict = "VALID" if run_id in first else "-"
        assert row[1:5] == [state, verdict, "1", HOST], row
        assert row[-2:] == [run_id, SLICE], row
    # the stopped runs go on on the host (their benchmarks at the gates, their lanes locked);
    # nothing is left of the finished ones
    for run_id in second:
        assert run_processes_of(lab, run_id), (run_id, run_processes(lab))
        assert lock_held(dirs[run_id].parent.parent / "hetero_run.lock"), run_id
    for run_id in first:
        assert run_processes_of(lab, run_id) == [], run_processes(lab)
    assert not lock_held(campaign / (LEDGER + ".lock"))

    # --------------------------------------------------------------- the same command again
    # a run's gates open only once the new session has claimed it: the stopped runs are still
    # going when it resumes them, and it watches them to their end
    again = controllers(lab, campaign, "again")
    while again.proc.poll() is None:
        claimed_now = {r["run_id"] for r in of(ledger(campaign)[len(before) :], "claimed")}
        for run_id, benches in waiting(lab).items():
            if run_id in claimed_now:
                open_gates(lab, run_id, benches)
        time.sleep(0.05)
    assert again.proc.returncode == 0, again.output()[-4000:]

    records = ledger(campaign)
    assert records[: len(before)] == before  # appended to, never rewritten
    new = records[len(before) :]
    # the two stopped cells were resumed first, by their host on their own GPU, same run id
    # and attempt; then the pending cell, anew; nothing finished VALID before the stop ran again
    new_claims = of(new, "claimed")
    assert sorted(r["run_id"] for r in new_claims[:2]) == second, new
    for record in new_claims[:2]:
        first_claim = claimed[record["run_id"]]
        assert record["resume"] is True and record["session"] != first_claim["session"]
        for key in ("cell", "host", "attempt", "gpu", "gpus_at_once"):
            assert record[key] == first_claim[key], (key, record, first_claim)
    [fresh] = new_claims[2:]
    assert (fresh["cell"], fresh["resume"], fresh["attempt"]) == (pending, False, 1), fresh
    assert fresh["run_id"] not in claimed and fresh["session"] == new_claims[0]["session"]
    assert sorted(r["run_id"] for r in of(new, "finished")) == sorted([*second, fresh["run_id"]])
    # the stop landed mid-run: the stopped cells' mains wrote LoadGen's summary after their
    # resume (the gates kept them from starting before it)
    resumed_at = {r["run_id"]: r["t"] for r in new_claims}
    for run_id in second:
        written = summary(lane_runs(lab)[run_id])[1] / 1e9
        assert written > resumed_at[run_id], (run_id, written, resumed_at[run_id])
    assert_no_cell_valid_twice([r for r in records if r["event"] != "slice"])
    valid = Counter(
        r["cell"] for r in of(records, "finished") if r["verdict"] == "VALID" and not r["failed"]
    )
    assert valid == Counter({c: 1 for c in cells}), valid
    # the host: exactly the five runs, each main's LoadGen VALID once; the runs finished before
    # the stop untouched
    claimed[fresh["run_id"]] = fresh
    dirs = lane_runs(lab)
    assert sorted(dirs) == sorted(claimed)
    assert fresh["gpu"] == gpu_of(dirs[fresh["run_id"]]), fresh
    assert not (lab.hostdir(HOST) / "runs").exists()  # no run outside the lanes
    for run_id in claimed:
        assert "Result is : VALID" in summary(dirs[run_id])[0], run_id
        summaries = list(dirs[run_id].glob("main/**/mlperf_log_summary.txt"))
        assert len(summaries) == 1, summaries
    assert {run_id: summary(dirs[run_id]) for run_id in first} == done_before
    assert not (lab.hostdir("g2") / "lanes").exists() and not (lab.hostdir("g2") / "runs").exists()
    # what a user reads now: every cell once, done and VALID, with its first run id (and, from
    # the report's campaign.json, slice 2's cells, pending)
    rows = status(campaign, tmp_path)
    idle = [c for c in expected_cells(spec()) if c.startswith("idle/")]
    assert sorted(rows) == sorted(cells + idle), rows
    assert {c: rows[c][1] for c in idle} == {c: "pending" for c in idle}
    for run_id, claim in claimed.items():
        assert rows[claim["cell"]][1:5] == ["done", "VALID", "1", HOST], rows[claim["cell"]]
        assert rows[claim["cell"]][-2:] == [run_id, SLICE]
    # nothing of the stopped runs is left on the host, and nothing holds a lock
    assert run_processes(lab) == []
    for gpu in range(CELLS_AT_ONCE):
        assert not lock_held(lab.hostdir(HOST) / "lanes" / ("gpu%d" % gpu) / "hetero_run.lock")
    assert not lock_held(campaign / (LEDGER + ".lock"))
