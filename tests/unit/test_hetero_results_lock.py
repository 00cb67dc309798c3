"""Two controllers copying one run's results at once (plugins/plugin_utils/_hetero_results.py).

A resume started while the workers of a dead ansible-playbook still watch the run makes two
processes replace the host's copy and write its result.json into the same directory. Here two
real processes do what the action does (unpack beside, replace whole, write result.json) many
times over, each with its own contents; neither may fail, and the copy left must be one of theirs,
whole, with its own result.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_results import (
    results_lock,
)

COLLECTIONS = str(Path(__file__).resolve().parents[2] / "collections")
ROUNDS = 150

# one controller: its own files, put in place and given their result.json, ROUNDS times
COPIER = r"""
import os, sys
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_results import (
    install_results, write_result,
)
results_dir, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(rounds):
    staging = "%s.partial-%d" % (results_dir, os.getpid())
    os.makedirs(os.path.join(staging, "main"))
    for n in range(20):
        with open(os.path.join(staging, "main", "log%d.txt" % n), "w") as handle:
            handle.write(name)
    install_results(staging, results_dir)
    write_result(results_dir, {"writer": name, "round": i})
"""


def test_two_controllers_never_interleave_their_copies(tmp_path: Path) -> None:
    results_dir = tmp_path / "results" / "20261204T000000Z-abc123" / "host-a"
    env = {**os.environ, "PYTHONPATH": COLLECTIONS}
    copiers = [
        subprocess.Popen(
            [sys.executable, "-c", COPIER, str(results_dir), name, str(ROUNDS)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    errors = [copier.communicate(timeout=120)[1] for copier in copiers]
    assert [copier.returncode for copier in copiers] == [0, 0], errors

    result = json.loads((results_dir / "result.json").read_text())
    assert result["writer"] in ("first", "second")
    logs = sorted((results_dir / "main").iterdir())
    assert len(logs) == 20
    assert {log.read_text() for log in logs} == {result["writer"]}
    # nothing left beside the copy: no staging directory, no temporary file, no lock file
    assert sorted(p.name for p in results_dir.parent.iterdir()) == ["host-a"]
    assert sorted(p.name for p in results_dir.iterdir()) == ["main", "result.json"]


def test_the_lock_holds_off_another_process(tmp_path: Path) -> None:
    results_dir = tmp_path / "run" / "host-a"
    waiter = (
        "import sys, time\n"
        "from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_results import "
        "results_lock\n"
        "with results_lock(sys.argv[1]):\n"
        "    print(time.time())\n"
    )
    with results_lock(str(results_dir)):
        other = subprocess.Popen(
            [sys.executable, "-c", waiter, str(results_dir)],
            env={**os.environ, "PYTHONPATH": COLLECTIONS},
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        assert other.poll() is None  # still waiting for the lock
        released = time.time()
    out = other.communicate(timeout=60)[0]
    assert other.returncode == 0
    assert float(out) >= released
