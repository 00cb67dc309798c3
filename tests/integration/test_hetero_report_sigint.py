"""results.jsonl keeps every finished hetero_run result when ansible-playbook is interrupted.

Three lab hosts replay recorded results (REAL LoadGen runs, tests/hetero_samples): h1 and h2 at
once, h3 only after two minutes. As soon as h1's and h2's results are in the JSONL file the
whole process group of ansible-playbook gets the signal, like a Ctrl-C in a terminal:

- SIGINT: ansible-playbook stops without running v2_playbook_on_stats. The JSONL holds h1 and
  h2, byte-complete; the summaries are still written at exit, marked interrupted, with h3 as a
  NO_RESULT row.
- SIGKILL: nothing runs at the end at all; the JSONL still holds h1 and h2.

Neither leaves anything in the system's temporary directory: the controller's and the hosts'
temporary files (TMPDIR, Ansible's local temp, AnsiballZ's payload directory of h3's module,
which the interruption kills before it can remove it) go into the test's own directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from fnmatch import fnmatch
from pathlib import Path

import hetero_samples
import pytest
from hetero_report_support import (
    PLAYBOOK,
    REPLAY_ACTIONS,
    as_returned,
    hetero_records,
    replay_sources,
)

from lab import HostSpec, MakeLab
from lab.runner import ANSIBLE_CFG, REPO_ROOT
from lab.sshlab import LAB_MARKER

pytestmark = pytest.mark.integration

# AnsiballZ unpacks a module into tempfile.mkdtemp(prefix="ansible_<module>_payload_") in the
# module process's temporary directory, and removes it when the module ends
REPLAY_PAYLOAD = "ansible_*hetero_run_replay_payload_*"


def _system_temp_entries() -> set[Path]:
    """What is in /tmp and in this process's temporary directory (when that is elsewhere)."""
    found: set[Path] = set()
    for directory in sorted({Path("/tmp"), Path(tempfile.gettempdir())}):
        found.update(directory.iterdir())
    return found


def _leaked_payloads(before: set[Path], settle_s: float = 60.0) -> list[Path]:
    """Replay payload directories new in the system's temporary directory since ``before`` that
    are still there after ``settle_s`` (the running modules of other tests remove theirs)."""
    deadline = time.monotonic() + settle_s
    while True:
        left = sorted(p for p in _system_temp_entries() - before if fnmatch(p.name, REPLAY_PAYLOAD))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_playbook_keeps_finished_results(
    ssh_lab: MakeLab,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    sig: signal.Signals,
    request: pytest.FixtureRequest,
) -> None:
    samples = hetero_samples.build_samples(tmp_path_factory.getbasetemp() / "hetero-samples")
    sources = replay_sources(
        samples, {"h1": "valid", "h2": "server", "h3": "valid"}, tmp_path / "replay"
    )
    temp = {name: tmp_path / "tmp" / name for name in ("h1", "h2", "h3")}
    # The controller's TMPDIR holds ansible-core's RPC socket: an AF_UNIX path must stay under
    # 108 bytes, which a TMPDIR inside tmp_path (a long test name) exceeds. A short directory of
    # its own instead, removed at the end like everything else of this test.
    temp["controller"] = Path(tempfile.mkdtemp(prefix="hmsig-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(temp["controller"], ignore_errors=True))
    for directory in temp.values():
        directory.mkdir(parents=True, exist_ok=True)
    before = _system_temp_entries()
    lab = ssh_lab(
        [
            HostSpec(
                "h1", {"heteromig_replay_src": str(sources["h1"])}, {"TMPDIR": str(temp["h1"])}
            ),
            HostSpec(
                "h2", {"heteromig_replay_src": str(sources["h2"])}, {"TMPDIR": str(temp["h2"])}
            ),
            HostSpec(
                "h3",
                {"heteromig_replay_src": str(sources["h3"]), "heteromig_replay_delay": 120},
                {"TMPDIR": str(temp["h3"])},
            ),
        ]
    )
    inventory = lab.write_inventory()
    reports = tmp_path / "reports"
    jsonl = reports / hetero_samples.SAMPLE_RUN_ID / "results.jsonl"
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": "%s%s%s" % (bindir, os.pathsep, os.environ.get("PATH", "")),
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.control_dir),
        "ANSIBLE_LOCAL_TEMP": str(lab.labdir / "tmp"),
        "TMPDIR": str(temp["controller"]),
        LAB_MARKER: str(lab.labdir),
        "HETEROMIG_REPORT_DIR": str(reports),
        "HETEROMIG_REPORT_ACTIONS": REPLAY_ACTIONS,
        "PYTHONFAULTHANDLER": "1",  # SIGABRT below dumps every thread's stack if it hangs
    }
    log = (tmp_path / "playbook.log").open("w")
    proc = subprocess.Popen(
        [str(bindir / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOK)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if jsonl.exists() and len(hetero_records(jsonl)) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, (
            "ansible-playbook ended early:\n" + (tmp_path / "playbook.log").read_text()
        )
        finished = hetero_records(jsonl)
        assert sorted(r["host"] for r in finished) == ["h1", "h2"]
        # h3's module is sleeping, unpacked in h3's own temporary directory
        while time.monotonic() < deadline and not list(temp["h3"].glob(REPLAY_PAYLOAD)):
            time.sleep(0.1)
        assert list(temp["h3"].glob(REPLAY_PAYLOAD)), sorted(temp["h3"].iterdir())
        os.killpg(proc.pid, sig)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGABRT)
            time.sleep(2)
            pytest.fail(
                "ansible-playbook did not exit after %s:\n%s"
                % (sig.name, (tmp_path / "playbook.log").read_text()[-8000:])
            )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    out = (tmp_path / "playbook.log").read_text()

    # every line of the file is a complete record; nothing was lost or torn
    lines = jsonl.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    kept = hetero_records(jsonl)
    assert [r["seq"] for r in kept] == [r["seq"] for r in finished]
    for rec in kept:
        source = json.loads(sources[rec["host"]].read_text())
        assert {k: v for k, v in rec["result"].items() if k != "changed"} == as_returned(source)
    assert "h3" not in {r["host"] for r in kept}

    summary_path = jsonl.parent / "summary.json"
    if sig == signal.SIGINT:
        assert rc != 0 and "User interrupted execution" in out, out[-3000:]
        assert "PLAY RECAP" not in out  # v2_playbook_on_stats never ran
        summary = json.loads(summary_path.read_text())
        assert summary["interrupted"] is True
        assert {r["host"]: r["verdict"] for r in summary["rows"]} == {
            "h1": "VALID",
            "h2": "VALID",
            "h3": "NO_RESULT",
        }
        assert "HETERO RUN REPORT [%s] (INTERRUPTED)" % hetero_samples.SAMPLE_RUN_ID in out
        for name in ("summary.csv", "junit.xml", "summary.md", "report.html"):
            assert (jsonl.parent / name).stat().st_size > 0, name
    else:
        assert rc == -signal.SIGKILL
        assert not summary_path.exists()  # nothing ran at the end: the JSONL is all there is

    # nothing of this run in the system's temporary directory. Only the replay module's payload
    # could be this run's; another test running the replay module at the same time (pytest's
    # other worker: test_hetero_report_replay) has its payload there while its module runs, and
    # removes it when the module ends. A payload this run leaked (a killed module's) stays.
    assert _leaked_payloads(before) == []
    # h1's and h2's modules ended and removed theirs
    assert [list(temp[h].glob(REPLAY_PAYLOAD)) for h in ("h1", "h2")] == [[], []]
