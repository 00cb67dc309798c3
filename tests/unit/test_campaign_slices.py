"""Job slicing of a campaign (plugin_utils/_campaign_slices): the split and the merge.

The expected splits are dealt out by hand from the rule in docs/campaign.md ("Slicing"):
hosts round-robin over slices in spec order of systems and name order of hosts; a system's
cells round-robin over its hosts in name order, each going to its host's slice.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    append,
    claim_next,
    ensure,
    read,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_slices import (
    Slice,
    SliceError,
    check_start,
    header,
    ledger_slice,
    merge,
    parse_slice,
    partition,
    read_ledgers,
    spec_hash,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    parse_spec,
)

A1 = "sysA/synth-mlp-small/Offline/performance"
A2 = "sysA/synth-mlp-small/Server/performance"
A3 = "sysA/synth-conv-1d/SingleStream/performance"
B1 = "sysB/synth-mlp-small/Offline/performance"
B2 = "sysB/synth-mlp-small/Server/performance"
B3 = "sysB/synth-conv-1d/SingleStream/performance"


def spec(**defaults: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "campaign": "big",
        "defaults": {"main_benchmark_duration": 5000, **defaults},
        "systems": [{"name": "sysA", "hosts": "a"}, {"name": "sysB", "hosts": "b"}],
        "benchmarks": {
            "synth-mlp-small": {"scenarios": ["Offline", "Server"]},
            "synth-conv-1d": {"scenarios": ["SingleStream"]},
        },
    }


def campaign(**defaults: Any) -> Campaign:
    return parse_spec(spec(**defaults), "big.yml")


# ------------------------------------------------------------------------- the setting
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("", None),
        ("1/1", None),  # one slice is the whole campaign
        ("2/4", Slice(2, 4)),
        (" 3 / 3 ", Slice(3, 3)),
    ],
)
def test_parse_slice(given: Any, expected: Slice | None) -> None:
    assert parse_slice(given) == expected


@pytest.mark.parametrize("given", ["0/2", "3/2", "2", "a/b", "1/0", "-1/2", 2, "1/2/3"])
def test_a_bad_slice_is_refused_with_the_setting_named(given: Any) -> None:
    with pytest.raises(SliceError) as err:
        parse_slice(given)
    assert str(err.value) == (
        "heteromig_campaign_slice must be K/N, this run's slice K of N slices with 1 <= K <= N "
        "(e.g. 2/4), got %r" % (given,)
    )


def test_ledger_names() -> None:
    assert Slice(2, 4).ledger == "ledger.slice-2of4.jsonl"
    assert ledger_slice("ledger.slice-2of4.jsonl") == Slice(2, 4)
    assert ledger_slice("ledger.jsonl") is None
    assert ledger_slice("ledger.slice-2of4.jsonl.lock") is None


# ------------------------------------------------------------------------- the split
def test_two_slices_by_hand() -> None:
    # hosts dealt in order a1 a2 a3 a4 b1 -> slices 1 2 1 2 1 (inventory order does not matter)
    split = partition(campaign(), {"sysA": ["a3", "a1", "a4", "a2"], "sysB": ["b1"]}, 2)
    assert split.host_slice == {"a1": 1, "a2": 2, "a3": 1, "a4": 2, "b1": 1}
    # sysA's cells to a1, a2, a3 -> slices 1, 2, 1; sysB's all to b1 -> slice 1
    assert split.cell_slice == {A1: 1, A2: 2, A3: 1, B1: 1, B2: 1, B3: 1}
    assert split.hosts(2) == ["a2", "a4"]
    assert split.cells(2) == [A2]


def test_one_host_per_system_spreads_systems_over_slices() -> None:
    split = partition(campaign(), {"sysA": ["a1"], "sysB": ["b1"]}, 3)
    assert split.host_slice == {"a1": 1, "b1": 2}
    assert split.cells(1) == [A1, A2, A3] and split.cells(2) == [B1, B2, B3]
    assert split.cells(3) == [] and split.hosts(3) == []


@pytest.mark.parametrize(
    ("hosts_a", "hosts_b", "count"), list(itertools.product([1, 2, 3, 5], [1, 4], [1, 2, 3, 4, 7]))
)
def test_every_cell_in_exactly_one_slice_that_has_a_host_of_its_system(
    hosts_a: int, hosts_b: int, count: int
) -> None:
    camp = campaign()
    hosts = {
        "sysA": ["a%d" % i for i in range(hosts_a)],
        "sysB": ["b%d" % i for i in range(hosts_b)],
    }
    split = partition(camp, hosts, count)
    per_slice = [split.cells(i) for i in range(1, count + 1)]
    everything = [c for cells in per_slice for c in cells]
    assert sorted(everything) == sorted(c.id for c in camp.cells)  # each cell exactly once
    for index, cells in enumerate(per_slice, start=1):
        mine = set(split.hosts(index))
        for cell in cells:
            system = cell.split("/")[0]
            assert mine & set(hosts[system]), (cell, index)  # a host of its system runs it
    # and the split does not depend on the order the inventory lists the hosts in
    again = partition(camp, {k: list(reversed(v)) for k, v in hosts.items()}, count)
    assert again == split


# ------------------------------------------------------------------------- spec hash
def test_spec_hash_follows_the_parsed_spec_not_the_file() -> None:
    assert spec_hash(campaign()) == spec_hash(parse_spec(spec(), "elsewhere.yml"))
    assert spec_hash(campaign()) != spec_hash(campaign(start_time_buffer=2000))
    assert spec_hash(campaign()).startswith("sha256:")


# ---------------------------------------------------------------------- before a slice
def test_check_start_refuses_a_directory_split_otherwise() -> None:
    camp = campaign()
    first = header(camp, Slice(1, 2), [A1, A3], ["a1"])
    ok = {"ledger.slice-1of2.jsonl": [first]}
    check_start(Slice(1, 2), [A1, A3], ok)  # the same slice again
    check_start(Slice(2, 2), [A2, B1], ok)  # the other slice
    with pytest.raises(
        SliceError,
        match=r"slice 1/2: its ledger ledger.slice-1of2.jsonl was "
        r"started with cells .* the hosts changed",
    ):
        check_start(Slice(1, 2), [A1], ok)
    with pytest.raises(
        SliceError,
        match=r"slice 2/2 would run cells that slice 1/2 already "
        r"has in ledger.slice-1of2.jsonl: %s" % A3,
    ):
        check_start(Slice(2, 2), [A2, A3], ok)
    with pytest.raises(SliceError, match=r"a slice of a 2-way split; this run asks for slice 1/3"):
        check_start(Slice(1, 3), [A1], ok)
    with pytest.raises(SliceError, match=r"holds slice ledgers \(ledger.slice-1of2.jsonl\)"):
        check_start(None, [A1, A2, A3, B1, B2, B3], ok)
    plain = {"ledger.jsonl": [{"event": "claimed", "cell": A1, "run_id": "r"}]}
    with pytest.raises(SliceError, match=r"holds 1 record\(s\) of an unsliced run"):
        check_start(Slice(1, 2), [A1, A3], plain)
    check_start(None, [A1], plain)
    check_start(Slice(1, 2), [A1], {"ledger.jsonl": []})  # an empty ledger is no run


# --------------------------------------------------------------------------- the merge
def cell_records(cell: str, run_id: str, host: str, verdict: str = "VALID") -> list[dict]:
    return [
        {
            "v": 1,
            "t": 1.0,
            "event": "claimed",
            "cell": cell,
            "run_id": run_id,
            "host": host,
            "session": "s",
            "attempt": 1,
            "resume": False,
        },
        {
            "v": 1,
            "t": 2.0,
            "event": "finished",
            "cell": cell,
            "run_id": run_id,
            "host": host,
            "session": "s",
            "attempt": 1,
            "verdict": verdict,
            "failed": False,
            "reasons": [],
        },
    ]


def two_slices(camp: Campaign) -> dict[str, list[dict[str, Any]]]:
    one = [dict(header(camp, Slice(1, 2), [A1, A3, B1, B2, B3], ["a1", "b1"]), v=1)]
    one += (
        cell_records(A1, "r1", "a1") + cell_records(A3, "r3", "a1") + cell_records(B1, "r4", "b1")
    )
    two = [dict(header(camp, Slice(2, 2), [A2], ["a2"]), v=1), *cell_records(A2, "r2", "a2")]
    return {"ledger.slice-1of2.jsonl": one, "ledger.slice-2of2.jsonl": two}


def test_merge_joins_the_slices_in_order() -> None:
    camp = campaign()
    merged = merge(camp, two_slices(camp))
    finished = [(r["cell"], r["run_id"]) for r in merged.records if r["event"] == "finished"]
    assert finished == [(A1, "r1"), (A3, "r3"), (B1, "r4"), (A2, "r2")]
    assert [(s["slice"], s["ledger"], s["cells"]) for s in merged.slices] == [
        ("1/2", "ledger.slice-1of2.jsonl", [A1, A3, B1, B2, B3]),
        ("2/2", "ledger.slice-2of2.jsonl", [A2]),
    ]
    assert merged.missing == [] and merged.warnings == []


def test_merge_names_a_slice_that_has_not_run() -> None:
    camp = campaign()
    ledgers = two_slices(camp)
    del ledgers["ledger.slice-2of2.jsonl"]
    plan = {A1: 1, A3: 1, B1: 1, B2: 1, B3: 1, A2: 2}
    merged = merge(camp, ledgers, plan)
    assert merged.missing == ["2/2"]
    assert merged.warnings == [
        "slice 2/2 has not run yet (no ledger.slice-2of2.jsonl): its 1 cell(s) are NOT_RUN"
    ]
    # a slice the plan gives no cell is not missing
    assert merge(camp, ledgers, {c: 1 for c in plan}).missing == []


def test_an_unsliced_ledger_is_itself() -> None:
    camp = campaign()
    records = cell_records(A1, "r1", "a1")
    merged = merge(camp, {"ledger.jsonl": records})
    assert merged.records == records and merged.slices == [] and merged.missing == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"campaign": "other"},
            r"slice 2/2 \(ledger.slice-2of2.jsonl\): campaign 'other', not 'big'",
        ),
        ({"spec_version": 2}, r"slice 2/2 \(ledger.slice-2of2.jsonl\): spec version 2, not 1"),
        ({"v": 0}, r"slice 2/2 \(ledger.slice-2of2.jsonl\): ledger version 0, not 1"),
        (
            {"spec_hash": "sha256:0000"},
            r"slice 2/2 \(ledger.slice-2of2.jsonl\): it last ran a different spec "
            r"\(sha256:0000, this one is sha256:[0-9a-f]{64}\): run slice 2/2 again with this "
            r"spec \(its done cells are skipped\) before the report",
        ),
        ({"slice": "1/2"}, r"slice 2/2 \(ledger.slice-2of2.jsonl\): it says it is slice '1/2'"),
    ],
)
def test_mismatched_slices_are_refused(change: dict[str, Any], message: str) -> None:
    camp = campaign()
    ledgers = two_slices(camp)
    ledgers["ledger.slice-2of2.jsonl"][0].update(change)
    with pytest.raises(SliceError, match=message):
        merge(camp, ledgers)


def test_a_later_spec_in_every_slice_merges_and_in_one_is_refused() -> None:
    old, new = campaign(), campaign(retries=3)
    ledgers = two_slices(old)
    with pytest.raises(SliceError, match=r"slice 1/2 .*it last ran a different spec"):
        merge(new, ledgers)
    for name, records in ledgers.items():  # each slice ran again with the new spec
        records.append(dict(header(new, ledger_slice(name), records[0]["cells"], []), v=1))
    assert len(merge(new, ledgers).slices) == 2
    ledgers["ledger.slice-2of2.jsonl"].pop()  # slice 2 did not
    with pytest.raises(SliceError, match=r"^slice 2/2 .*it last ran a different spec"):
        merge(new, ledgers)


def test_merge_refuses_what_would_count_a_cell_twice() -> None:
    camp = campaign()
    ledgers = two_slices(camp)
    both = dict(ledgers, **{"ledger.jsonl": cell_records(A1, "r0", "a1")})
    with pytest.raises(SliceError, match=r"holds both ledger.jsonl \(2 record\(s\) of an "):
        merge(camp, both)
    overlap = two_slices(camp)
    overlap["ledger.slice-2of2.jsonl"][0]["cells"] = [A2, A1]
    with pytest.raises(
        SliceError,
        match=r"cell %s is in slice 1/2 \(ledger.slice-1of2.jsonl\) and in slice 2/2 "
        r"\(ledger.slice-2of2.jsonl\)" % A1,
    ):
        merge(camp, overlap)
    stray = two_slices(camp)
    stray["ledger.slice-2of2.jsonl"] += cell_records(B2, "r9", "a2")
    with pytest.raises(SliceError, match=r"ran cells that are not in its slice record: %s" % B2):
        merge(camp, stray)
    mixed = two_slices(camp)
    mixed["ledger.slice-1of3.jsonl"] = mixed.pop("ledger.slice-2of2.jsonl")
    with pytest.raises(SliceError, match=r"slices of different splits"):
        merge(camp, mixed)
    headless = two_slices(camp)
    headless["ledger.slice-2of2.jsonl"].pop(0)
    with pytest.raises(SliceError, match=r"ledger.slice-2of2.jsonl has no slice record"):
        merge(camp, headless)


# ------------------------------------------------------------- on disk, with the claimer
def test_slices_claim_only_their_cells_and_read_back_merged(tmp_path: Path) -> None:
    camp = campaign()
    split = partition(camp, {"sysA": ["a1", "a2"], "sysB": ["b1"]}, 2)
    # a1 -> 1, a2 -> 2, b1 -> 1; sysA cells to a1 a2 a1; sysB all to b1
    assert split.cells(1) == [A1, A3, B1, B2, B3] and split.cells(2) == [A2]
    for index, hosts in ((1, ["a1", "b1"]), (2, ["a2"])):
        piece = Slice(index, 2)
        view = Campaign(
            **{**camp.__dict__, "cells": [c for c in camp.cells if c.id in split.cells(index)]}
        )
        top = header(camp, piece, split.cells(index), hosts)
        path = str(tmp_path / piece.ledger)
        for host in hosts:
            system = "sysA" if host.startswith("a") else "sysB"
            while claim := claim_next(path, view, system, host, "s%d" % index, header=top):
                append(
                    path,
                    {
                        "event": "finished",
                        "cell": claim.cell.id,
                        "run_id": claim.run_id,
                        "host": host,
                        "session": "s%d" % index,
                        "attempt": claim.attempt,
                        "verdict": "VALID",
                        "failed": False,
                    },
                )
        records, _warnings = read(path)
        assert [r["event"] for r in records].count("slice") == 1  # written once, first
        assert records[0]["event"] == "slice"
    # a later run of slice 2 with another spec and nothing to claim: its report writes the
    # slice record once (ensure), and the merge then wants slice 1 run with that spec too
    newer = campaign(retries=4)
    top = header(newer, Slice(2, 2), split.cells(2), ["a2"])
    path = str(tmp_path / Slice(2, 2).ledger)
    assert ensure(path, top) is True and ensure(path, top) is False
    with pytest.raises(SliceError, match=r"^slice 1/2 .*it last ran a different spec"):
        merge(newer, read_ledgers(str(tmp_path))[0])
    assert ensure(path, header(camp, Slice(2, 2), split.cells(2), ["a2"])) is True  # back
    ledgers, warnings = read_ledgers(str(tmp_path))
    assert sorted(ledgers) == ["ledger.slice-1of2.jsonl", "ledger.slice-2of2.jsonl"]
    assert warnings == []
    merged = merge(camp, ledgers, split.cell_slice)
    done = sorted(r["cell"] for r in merged.records if r["event"] == "finished")
    assert done == sorted(c.id for c in camp.cells)  # every cell once
    second = tmp_path / "ledger.slice-2of2.jsonl"  # as if another campaign's slice
    lines = [json.loads(line) for line in second.read_text().splitlines()]
    [latest] = [line for line in lines if line["event"] == "slice"][-1:]
    latest["campaign"] = "x"
    second.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(SliceError, match=r"campaign 'x', not 'big'"):
        merge(camp, read_ledgers(str(tmp_path))[0])
