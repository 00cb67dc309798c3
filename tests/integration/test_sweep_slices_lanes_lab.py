"""Campaign job slicing and gpus_at_once over the SSH lab (playbooks/sweep.yml).

Real sshd hosts with simulated GPUs, the real playbook and hetero runs, the real ledgers.
Slicing: two playbook runs, one per slice, and the report merges their ledgers into one
campaign. gpus_at_once: a host with two GPUs runs two cells at once, one per GPU, and the
results and the report say so. Expectations come from what happened (the ledgers, the files
the campaign wrote, the runs on the hosts' disks) and from the split rule of docs/campaign.md
worked out by hand.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_sweep_lab import (
    H100,
    REPORT_TASK,
    assert_no_cell_valid_twice,
    base_spec,
    expected_cells,
    only_system,
    run_ids_on,
    start_lab,
    sweep,
)

from lab import MakeLab, SshLab

pytestmark = pytest.mark.integration


# hetero_run's default lease (60 s), not base_spec's 6 s: these tests lose no host, and at a load
# average of 27 on this machine the controller's status polls came more than 6 s apart, so every
# run was stopped by its lease
LEASE = {"lease_timeout": 60000}


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == event]


def report_rows(campaign: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in json.loads((campaign / "campaign.json").read_text())["cells"]}


# ---------------------------------------------------------------------------- slicing
def three_cells() -> dict[str, Any]:
    """The H100 system alone (two hosts), three SingleStream cells with a light background."""
    spec = only_system(base_spec(background_benchmarks=["synth-conv-1d"], **LEASE), "h100")
    spec["benchmarks"] = {
        "synth-mlp-small": {"scenarios": ["SingleStream"]},
        "synth-conv-1d": {"scenarios": ["SingleStream"], "modes": ["performance", "TEST04"]},
    }
    spec["cells"] = []
    return spec


@pytest.mark.timeout(900)  # three playbook runs
@pytest.mark.slow
def test_two_slices_as_two_playbook_runs_merge_into_one_campaign(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    lab = start_lab(ssh_lab, {"h100": {"h1": H100, "h2": H100}})
    campaign = tmp_path / "campaign"
    spec = three_cells()
    cells = expected_cells(spec)
    assert len(cells) == 3
    # the split by hand (docs/campaign.md, "Slicing"): hosts h1, h2 -> slices 1, 2; the
    # system's cells in spec order go to h1, h2, h1
    slice_1 = [cells[0], cells[2]]
    slice_2 = [cells[1]]
    first = campaign / "ledger.slice-1of2.jsonl"
    second = campaign / "ledger.slice-2of2.jsonl"

    run = sweep(lab, campaign, {"heteromig_sweep": spec, "heteromig_campaign_slice": "1/2"})
    assert (run.rc, run.status) == (0, "successful"), run.stdout[-4000:]
    records = read_ledger(first)
    assert not second.exists() and not (campaign / "ledger.jsonl").exists()
    [top] = events(records, "slice")
    assert (top["slice"], top["campaign"], top["cells"], top["hosts"]) == (
        "1/2",
        "labsweep",
        slice_1,
        ["h1"],
    )
    assert sorted(r["cell"] for r in events(records, "claimed")) == sorted(slice_1)
    assert {r["host"] for r in events(records, "claimed")} == {"h1"}
    assert run_ids_on(lab, "h2") == set()  # slice 2's host did nothing
    assert run_ids_on(lab, "h1") == {r["run_id"] for r in events(records, "finished")}
    # its report: slice 1's cells VALID, slice 2's not run yet, and it says so
    rows = report_rows(campaign)
    assert {c: rows[c]["verdict"] for c in cells} == {
        **{c: "VALID" for c in slice_1},
        **{c: "NOT_RUN" for c in slice_2},
    }
    assert "slice 2/2 has not run yet (no ledger.slice-2of2.jsonl): its 1 cell(s) are NOT_RUN" in (
        " ".join(run.stdout.split())
    )

    run = sweep(lab, campaign, {"heteromig_sweep": spec, "heteromig_campaign_slice": "2/2"})
    assert (run.rc, run.status) == (0, "successful"), run.stdout[-4000:]
    assert read_ledger(first) == records  # slice 2 never wrote slice 1's ledger
    records_2 = read_ledger(second)
    assert sorted(r["cell"] for r in events(records_2, "claimed")) == sorted(slice_2)
    assert {r["host"] for r in events(records_2, "claimed")} == {"h2"}
    assert run_ids_on(lab, "h2") == {r["run_id"] for r in events(records_2, "finished")}

    # the merged report: every cell exactly once, VALID, from its own slice
    both = [r for r in records + records_2 if r["event"] != "slice"]
    assert_no_cell_valid_twice(both)
    assert Counter(r["cell"] for r in events(both, "claimed")) == Counter(cells)
    document = json.loads((campaign / "campaign.json").read_text())
    assert [row["id"] for row in document["cells"]] == cells
    assert all(row["verdict"] == "VALID" and row["attempts"] == 1 for row in document["cells"])
    finished = {r["cell"]: r for r in events(both, "finished")}
    assert {row["id"]: row["run_id"] for row in document["cells"]} == {
        c: finished[c]["run_id"] for c in cells
    }
    assert [(s["slice"], s["ledger"], s["cells"]) for s in document["slices"]] == [
        ("1/2", "ledger.slice-1of2.jsonl", slice_1),
        ("2/2", "ledger.slice-2of2.jsonl", slice_2),
    ]
    with (campaign / "campaign.csv").open(newline="") as handle:
        assert sorted(r["id"] for r in csv.DictReader(handle)) == sorted(cells)
    exported = run.result(REPORT_TASK, "localhost").res["submission"]["exported"]
    assert len(exported) == len(cells)

    # slice 1 again with another spec: nothing to run, but its report refuses to merge a
    # slice 2 that last ran the old spec, and says what to do
    changed = three_cells()
    changed["defaults"]["retries"] = 2
    run = sweep(lab, campaign, {"heteromig_sweep": changed, "heteromig_campaign_slice": "1/2"})
    assert run.rc != 0
    failure = run.result(REPORT_TASK, "localhost")
    assert failure.outcome == "failed"
    message = " ".join(str(failure.res.get("msg")).split())
    assert message.startswith("campaign: slice 2/2 (ledger.slice-2of2.jsonl): it last ran a "), (
        message
    )
    assert "run slice 2/2 again with this spec (its done cells are skipped) before the report" in (
        message
    )
    assert "Traceback" not in run.stdout
    assert events(read_ledger(first), "claimed") == events(records, "claimed")  # nothing re-ran


# ------------------------------------------------------------------------ gpus_at_once
def two_gpu_spec() -> dict[str, Any]:
    """One system of one host with two H100s, each cut in two; two SingleStream cells, two at
    once. The second run starts when the start of the first returned (17 s later on this
    loaded 2-core machine, and each run's backgrounds took 25-35 s to be ready), so the mains
    last 30 s for their timed windows to overlap."""
    spec = only_system(base_spec(main_benchmark_duration=30000, **LEASE), "h100")
    spec["systems"][0].pop("gpus")
    spec["systems"][0].update(layout=["2x3g.40gb"], gpus_at_once=2)
    spec["benchmarks"] = {
        "synth-mlp-small": {"scenarios": ["SingleStream"]},
        "synth-conv-1d": {"scenarios": ["SingleStream"]},
    }
    spec["cells"] = []
    return spec


def lane_runs(lab: SshLab, host: str, gpu: int) -> set[str]:
    runs = lab.hostdir(host) / "lanes" / ("gpu%d" % gpu) / "runs"
    return {p.name for p in runs.iterdir()} if runs.is_dir() else set()


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_two_gpus_at_once_run_two_cells_side_by_side_and_say_so(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    lab = start_lab(ssh_lab, {"h100": {"g1": "2xH100-SXM5-80GB"}})
    campaign = tmp_path / "campaign"
    spec = two_gpu_spec()
    cells = expected_cells(spec)
    run = sweep(lab, campaign, {"heteromig_sweep": spec})
    assert (run.rc, run.status) == (0, "successful"), run.stdout[-4000:]
    records = read_ledger(campaign / "ledger.jsonl")
    claimed = {r["cell"]: r for r in events(records, "claimed")}
    finished = {r["cell"]: r for r in events(records, "finished")}
    assert sorted(claimed) == sorted(cells) == sorted(finished)
    assert Counter(r["cell"] for r in events(records, "claimed")) == Counter(cells)
    # one cell per GPU, each marked with the GPU and with 2 at once
    assert sorted(claimed[c]["gpu"] for c in cells) == [0, 1]
    for cell in cells:
        record = finished[cell]
        assert record["verdict"] == "VALID" and record["failed"] is False, record
        assert (record["gpu"], record["gpus_at_once"]) == (claimed[cell]["gpu"], 2)
        # the run lived in its lane's host root on the host, and nowhere else
        assert record["run_id"] in lane_runs(lab, "g1", record["gpu"])
    assert run_ids_on(lab, "g1") == set()
    # each run's main and backgrounds stayed on its lane's GPU
    results = {
        c: json.loads((Path(finished[c]["results_dir"]) / "result.json").read_text()) for c in cells
    }
    for cell, result in results.items():
        gpu = finished[cell]["gpu"]
        assert result["gpu"]["index"] == gpu
        assert result["main"]["slice"]["gpu_index"] == gpu
        for background in result["backgrounds"]:
            assert background["slice"]["gpu_index"] == gpu
    # and the two mains' timed windows overlap: they ran at the same time
    windows = sorted(
        (r["main"]["timed_window"]["begin"], r["main"]["timed_window"]["end"])
        for r in results.values()
    )
    starts = sorted(r["t"] for r in events(records, "claimed"))
    assert windows[1][0] < windows[0][1], (windows, "claims at", starts)
    # the report marks them: campaign.json, the CSV, the Markdown matrix and the HTML
    rows = report_rows(campaign)
    for cell in cells:
        assert (rows[cell]["gpus_at_once"], rows[cell]["gpu"]) == (2, finished[cell]["gpu"])
    with (campaign / "campaign.csv").open(newline="") as handle:
        table = {r["id"]: r for r in csv.DictReader(handle)}
    assert {c: (table[c]["gpus_at_once"], table[c]["gpu"]) for c in cells} == {
        c: ("2", str(finished[c]["gpu"])) for c in cells
    }
    markdown = (campaign / "campaign.md").read_text()
    for cell in cells:
        assert "[GPU %d, 2 at once]" % finished[cell]["gpu"] in markdown
    page = (campaign / "campaign.html").read_text()
    assert page.count('data-gpus-at-once="2"') == len(cells)
