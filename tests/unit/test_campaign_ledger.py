"""The campaign ledger (plugin_utils/_campaign_ledger): durability, cell states, claim rules.

Expectations are written out by hand from the rules in docs/campaign.md.
"""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    LEDGER_VERSION,
    Claim,
    LedgerError,
    append,
    cell_states,
    claim_next,
    finish,
    read,
    summary_counts,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    parse_spec,
)

A = "sysA/synth-mlp-small/Offline/performance"
B = "sysA/synth-mlp-small/Server/performance"
C = "sysA/synth-conv-1d/SingleStream/performance"
D = "sysB/synth-mlp-small/Offline/performance"


def campaign(retries: int = 1, systems: int = 1) -> Campaign:
    data = {
        "version": 1,
        "campaign": "camp",
        "defaults": {
            "main_benchmark_duration": 5000,
            "start_time_buffer": 1000,
            "retries": retries,
        },
        "systems": [{"name": "sysA", "hosts": "a"}, {"name": "sysB", "hosts": "b"}][:systems],
        "benchmarks": {
            "synth-mlp-small": {"scenarios": ["Offline", "Server"]},
            "synth-conv-1d": {"scenarios": ["SingleStream"]},
        },
    }
    return parse_spec(data, "campaign.yml")


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return str(tmp_path / "state" / "ledger.jsonl")


def lines(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# ------------------------------------------------------------------------ durability
def test_missing_file_is_an_empty_ledger(ledger: str) -> None:
    assert read(ledger) == ([], [])


def test_append_adds_version_and_time(ledger: str) -> None:
    append(ledger, {"event": "claimed", "cell": A})
    append(ledger, {"event": "finished", "cell": A, "v": 1, "t": 12.5})
    records, warnings = read(ledger)
    assert warnings == []
    assert records[0]["v"] == 1 and isinstance(records[0]["t"], float)
    assert records[1] == {"event": "finished", "cell": A, "v": 1, "t": 12.5}
    with open(ledger, "rb") as handle:
        raw = handle.read()
    assert raw.count(b"\n") == 2 and raw.endswith(b"\n")


def test_truncated_last_line_is_skipped_with_a_warning(ledger: str) -> None:
    append(ledger, {"event": "claimed", "cell": A, "t": 1.0})
    append(ledger, {"event": "claimed", "cell": B, "t": 2.0})
    with open(ledger, "ab") as handle:
        handle.write(b'{"event": "claimed", "cell": "sysA/synth-co')  # a torn write
    records, warnings = read(ledger)
    assert [r["cell"] for r in records] == [A, B]
    assert warnings == [
        "campaign ledger %s line 3: truncated or garbled last line skipped (an interrupted "
        "write; the next write cuts it off)" % ledger
    ]
    # the next write cuts the torn line off, so it never ends up in the middle
    written = append(ledger, {"event": "claimed", "cell": C, "t": 3.0})
    assert written["dropped_torn_bytes"] == len(b'{"event": "claimed", "cell": "sysA/synth-co')
    records, warnings = read(ledger)
    assert [r["cell"] for r in records] == [A, B, C]
    assert warnings == []


def test_last_line_without_its_newline_is_kept(ledger: str) -> None:
    Path(ledger).parent.mkdir(parents=True)
    Path(ledger).write_bytes(b'{"v": 1, "t": 1.0, "event": "claimed", "cell": "X"}')
    assert [r["cell"] for r in read(ledger)[0]] == ["X"]
    append(ledger, {"event": "claimed", "cell": "Y", "t": 2.0})
    assert [r["cell"] for r in lines(ledger)] == ["X", "Y"]


def test_whole_file_one_torn_line(ledger: str) -> None:
    Path(ledger).parent.mkdir(parents=True)
    Path(ledger).write_bytes(b'{"v": 1, "ev')
    records, warnings = read(ledger)
    assert records == [] and len(warnings) == 1 and "line 1" in warnings[0]
    append(ledger, {"event": "claimed", "cell": "Y", "t": 2.0})
    assert [r["cell"] for r in lines(ledger)] == ["Y"]


def test_garbled_line_in_the_middle_is_an_error(ledger: str) -> None:
    Path(ledger).parent.mkdir(parents=True)
    Path(ledger).write_text(
        '{"v": 1, "event": "claimed", "cell": "X"}\n'
        "not json at all\n"
        '{"v": 1, "event": "claimed", "cell": "Y"}\n',
        encoding="utf-8",
    )
    with pytest.raises(LedgerError) as info:
        read(ledger)
    assert "campaign ledger %s line 2 is garbled" % ledger in str(info.value)


def test_non_object_line_in_the_middle_is_an_error(ledger: str) -> None:
    Path(ledger).parent.mkdir(parents=True)
    Path(ledger).write_text('[1, 2]\n{"v": 1, "cell": "Y"}\n', encoding="utf-8")
    with pytest.raises(LedgerError, match="line 1 is garbled"):
        read(ledger)


def test_newer_ledger_version_is_refused(ledger: str) -> None:
    append(ledger, {"event": "claimed", "cell": A})
    append(ledger, {"event": "claimed", "cell": B, "v": 2})
    with pytest.raises(LedgerError) as info:
        read(ledger)
    assert (
        "line 2 was written by a newer version of heteromig (ledger version 2, this one reads "
        "up to 1)" in str(info.value)
    )
    assert LEDGER_VERSION == 1


def test_blank_lines_are_ignored(ledger: str) -> None:
    Path(ledger).parent.mkdir(parents=True)
    Path(ledger).write_text('\n{"v": 1, "cell": "X"}\n\n', encoding="utf-8")
    assert read(ledger) == ([{"v": 1, "cell": "X"}], [])


# ------------------------------------------------------------------------ cell states
def rec(
    event: str, cell: str, run_id: str, host: str = "h1", session: str = "s1", **kw: Any
) -> dict[str, Any]:
    return {"event": event, "cell": cell, "run_id": run_id, "host": host, "session": session, **kw}


def test_cell_states() -> None:
    records = [
        rec("claimed", A, "r1", attempt=1),
        rec("claimed", B, "r2", attempt=1),
        rec("finished", A, "r1", attempt=1, verdict="VALID", failed=False),
        rec("finished", B, "r2", attempt=1, verdict="INVALID", failed=False),
        rec("claimed", C, "r3", attempt=1, host="h2"),
        rec("finished", C, "r3", attempt=1, verdict="VALID", failed=True, host="h2"),
        rec("claimed", D, "r4", attempt=1, host="h3", session="s0"),
        {"event": "note", "cell": A},  # other events are ignored
    ]
    states = cell_states(records)
    assert sorted(states) == sorted([A, B, C, D])
    a, b, c, d = states[A], states[B], states[C], states[D]
    assert (a.state, a.attempts, a.verdict, a.run_id, a.host, a.session) == (
        "done",
        1,
        "VALID",
        "r1",
        "h1",
        "s1",
    )
    assert (b.state, b.verdict) == ("failed", "INVALID")
    assert (c.state, c.verdict, c.host) == ("failed", "VALID", "h2")  # the task failed
    assert (d.state, d.attempts, d.verdict, d.host, d.session) == ("in_flight", 1, None, "h3", "s0")
    assert d.last == records[6]


def test_finished_record_of_a_run_taken_over_is_ignored() -> None:
    records = [
        rec("claimed", A, "r1", attempt=1, host="h1", session="s1"),
        rec("claimed", A, "r2", attempt=2, host="h2", session="s2"),
        rec("finished", A, "r1", attempt=1, verdict="VALID", failed=False, host="h1"),
    ]
    state = cell_states(records)[A]
    assert (state.state, state.attempts, state.run_id, state.host) == ("in_flight", 2, "r2", "h2")


# ------------------------------------------------------------------------ claim rules
RUN_ID = re.compile(r"^camp-sysA_synth-mlp-small_off_perf-a1-[0-9a-f]{8}$")


def test_first_claims_in_campaign_order(ledger: str) -> None:
    camp = campaign()
    first = claim_next(ledger, camp, "sysA", "h1", "s1")
    assert first is not None
    assert (first.cell.id, first.attempt, first.resume) == (A, 1, False)
    assert RUN_ID.match(first.run_id), first.run_id
    second = claim_next(ledger, camp, camp.systems[0], "h2", "s1")
    assert second is not None and (second.cell.id, second.attempt) == (B, 1)
    assert second.run_id != first.run_id
    (r1, r2) = lines(ledger)
    assert {
        k: r1[k] for k in ("event", "cell", "host", "session", "run_id", "attempt", "resume", "v")
    } == {
        "event": "claimed",
        "cell": A,
        "host": "h1",
        "session": "s1",
        "run_id": first.run_id,
        "attempt": 1,
        "resume": False,
        "v": 1,
    }
    assert r2["cell"] == B and r2["host"] == "h2"


def test_done_cells_are_never_claimed_again(ledger: str) -> None:
    camp = campaign()
    for host in ("h1", "h2", "h3"):
        claim = claim_next(ledger, camp, "sysA", host, "s1")
        assert claim is not None
        finish(ledger, claim, host, "s1", verdict="VALID", failed=False, metric=10.0)
    assert claim_next(ledger, camp, "sysA", "h1", "s1") is None
    assert claim_next(ledger, camp, "sysA", "h9", "s2") is None
    finished = [r for r in lines(ledger) if r["event"] == "finished"]
    assert [r["cell"] for r in finished] == [A, B, C]
    assert finished[0]["verdict"] == "VALID" and finished[0]["metric"] == 10.0
    assert finished[0]["reasons"] == [] and finished[0]["failed"] is False


def test_retries_then_give_up(ledger: str) -> None:
    camp = campaign(retries=1)  # two attempts per cell
    a1 = claim_next(ledger, camp, "sysA", "h1", "s1")
    assert a1 is not None and a1.cell.id == A
    finish(ledger, a1, "h1", "s1", verdict="INVALID", failed=False, reasons=["min duration"])
    # A is failed with 1 of 2 attempts: first in campaign order again, attempt 2
    a2 = claim_next(ledger, camp, "sysA", "h1", "s1")
    assert a2 is not None and (a2.cell.id, a2.attempt, a2.resume) == (A, 2, False)
    assert "-a2-" in a2.run_id and a2.run_id != a1.run_id
    finish(ledger, a2, "h1", "s1", verdict=None, failed=True, reasons=["host lost"])
    # out of attempts: B and C next, then nothing
    b = claim_next(ledger, camp, "sysA", "h1", "s1")
    assert b is not None and (b.cell.id, b.attempt) == (B, 1)
    finish(ledger, b, "h1", "s1", verdict="VALID", failed=False)
    c = claim_next(ledger, camp, "sysA", "h1", "s1")
    assert c is not None and c.cell.id == C
    finish(ledger, c, "h1", "s1", verdict="VALID", failed=False)
    assert claim_next(ledger, camp, "sysA", "h1", "s1") is None
    # a new session does not retry a cell out of attempts either
    assert claim_next(ledger, camp, "sysA", "h1", "s2") is None


def test_zero_retries_means_one_attempt(ledger: str) -> None:
    camp = campaign(retries=0)
    a = claim_next(ledger, camp, "sysA", "h1", "s1")
    assert a is not None and a.cell.id == A
    finish(ledger, a, "h1", "s1", verdict="INVALID", failed=False)
    nxt = claim_next(ledger, camp, "sysA", "h1", "s1")
    assert nxt is not None and nxt.cell.id == B


def test_in_flight_in_this_session_is_left_alone(ledger: str) -> None:
    camp = campaign()
    for host in ("h1", "h2", "h3"):
        assert claim_next(ledger, camp, "sysA", host, "s1") is not None
    # all three in flight in s1: nobody else gets one, not even the same host
    assert claim_next(ledger, camp, "sysA", "h4", "s1") is None
    assert claim_next(ledger, camp, "sysA", "h1", "s1") is None


def test_resume_after_a_dead_session(ledger: str) -> None:
    camp = campaign()
    a = claim_next(ledger, camp, "sysA", "h1", "s1")
    assert a is not None and a.cell.id == A
    # the controller dies; session s2 starts. h2 does not take A over while cells are pending.
    b = claim_next(ledger, camp, "sysA", "h2", "s2")
    assert b is not None and (b.cell.id, b.resume) == (B, False)
    # h1 resumes its own run: same run id and attempt
    again = claim_next(ledger, camp, "sysA", "h1", "s2")
    assert again == Claim(a.cell, 1, a.run_id, True)
    assert lines(ledger)[-1]["resume"] is True
    assert lines(ledger)[-1]["session"] == "s2"
    # resumed in s2: in flight in this session now, so h1 gets C next, not A a second time
    c = claim_next(ledger, camp, "sysA", "h1", "s2")
    assert c is not None and (c.cell.id, c.resume) == (C, False)
    finish(ledger, again, "h1", "s2", verdict="VALID", failed=False)
    assert cell_states(read(ledger)[0])[A].state == "done"


def test_take_over_a_lost_hosts_cell_only_when_nothing_is_pending(ledger: str) -> None:
    camp = campaign()
    a = claim_next(ledger, camp, "sysA", "h1", "s1")
    assert a is not None and a.cell.id == A
    # session s2 without h1: h2 works through the pending cells first
    b = claim_next(ledger, camp, "sysA", "h2", "s2")
    assert b is not None and b.cell.id == B
    finish(ledger, b, "h2", "s2", verdict="VALID", failed=False)
    c = claim_next(ledger, camp, "sysA", "h2", "s2")
    assert c is not None and c.cell.id == C
    finish(ledger, c, "h2", "s2", verdict="VALID", failed=False)
    # now only A is left, claimed by h1 in s1: taken over with a new attempt and run id
    taken = claim_next(ledger, camp, "sysA", "h2", "s2")
    assert taken is not None
    assert (taken.cell.id, taken.attempt, taken.resume) == (A, 2, False)
    assert taken.run_id != a.run_id
    # h1 comes back in s2: A is in flight in this session (h2's), nothing to resume
    assert claim_next(ledger, camp, "sysA", "h1", "s2") is None
    # h1's old run reporting late does not change A's state
    finish(ledger, a, "h1", "s2", verdict="VALID", failed=False)
    state = cell_states(read(ledger)[0])[A]
    assert (state.state, state.run_id, state.host) == ("in_flight", taken.run_id, "h2")


def test_claims_stay_within_the_system(ledger: str) -> None:
    camp = campaign(systems=2)
    claims = []
    while (claim := claim_next(ledger, camp, "sysB", "hb", "s1")) is not None:
        claims.append(claim.cell.id)
        finish(ledger, claim, "hb", "s1", verdict="VALID", failed=False)
    assert claims == [
        D,
        "sysB/synth-mlp-small/Server/performance",
        "sysB/synth-conv-1d/SingleStream/performance",
    ]
    first_a = claim_next(ledger, camp, "sysA", "ha", "s1")
    assert first_a is not None and first_a.cell.id == A


def test_unknown_system(ledger: str) -> None:
    from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import SpecError

    with pytest.raises(SpecError, match="no system 'sysZ'"):
        claim_next(ledger, campaign(), "sysZ", "h1", "s1")


def test_claim_reports_a_torn_last_line(ledger: str) -> None:
    camp = campaign()
    assert claim_next(ledger, camp, "sysA", "h1", "s1") is not None
    with open(ledger, "ab") as handle:
        handle.write(b'{"event": "cla')
    seen: list[str] = []
    claim = claim_next(ledger, camp, "sysA", "h2", "s1", warn=seen.append)
    assert claim is not None and claim.cell.id == B
    assert len(seen) == 1 and "line 2" in seen[0]
    assert [r["cell"] for r in lines(ledger)] == [A, B]


# ------------------------------------------------------------------------ concurrency
def _claimer(path: str, camp: Campaign, host: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    got = []
    while (claim := claim_next(path, camp, "sysA", host, "s1")) is not None:
        got.append(claim.cell.id)
    out.put((host, got))


def _race(ledger: str, camp: Campaign, hosts: int) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(hosts)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_claimer, args=(ledger, camp, "h%d" % i, barrier, out))
        for i in range(hosts)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=60) for _proc in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return [cell for _host, got in results for cell in got]


def test_concurrent_claimers_never_share_a_cell(ledger: str) -> None:
    data = {
        "version": 1,
        "campaign": "race",
        "systems": [{"name": "sysA", "hosts": "a"}],
        "benchmarks": {
            "synth-mlp-small": {
                "scenarios": ["Offline", "Server", "SingleStream", "MultiStream"],
                "modes": ["performance", "accuracy", "TEST01", "TEST04"],
            },
        },
    }
    camp = parse_spec(data, "race.yml")
    assert len(camp.cells) == 16
    claimed = _race(ledger, camp, 4)
    assert sorted(claimed) == sorted(c.id for c in camp.cells)  # each exactly once
    assert len(lines(ledger)) == 16


def test_more_claimers_than_cells(ledger: str) -> None:
    camp = campaign()  # three cells in sysA
    claimed = _race(ledger, camp, 8)
    assert sorted(claimed) == sorted([A, B, C])
    records = lines(ledger)
    assert len(records) == 3
    assert len({r["host"] for r in records}) <= 3
    assert len({r["run_id"] for r in records}) == 3


# ---------------------------------------------------------------------------- summary
def test_summary_counts() -> None:
    camp = campaign(retries=1, systems=2)  # 3 cells per system, 66 s each
    sysb_server = "sysB/synth-mlp-small/Server/performance"
    records = [
        # A: done
        rec("claimed", A, "r1", attempt=1, t=100.0),
        rec("finished", A, "r1", attempt=1, verdict="VALID", failed=False, t=166.0),
        # B: INVALID twice: out of attempts
        rec("claimed", B, "r2", attempt=1, t=100.0),
        rec("finished", B, "r2", attempt=1, verdict="INVALID", failed=False, t=166.0),
        rec("claimed", B, "r3", attempt=2, t=170.0),
        rec("finished", B, "r3", attempt=2, verdict="INVALID", failed=False, t=236.0),
        # C: in flight since t=200 (26 s of its 66 s gone at now=226)
        rec("claimed", C, "r4", attempt=1, t=200.0),
        # D: the task failed once, a retry is left
        rec("claimed", D, "r5", attempt=1, host="hb", t=100.0),
        rec("finished", D, "r5", attempt=1, verdict=None, failed=True, host="hb", t=110.0),
        # sysB Server: pending; sysB SingleStream: never claimed (pending)
        {"event": "claimed", "cell": "gone/cell/Offline/performance", "run_id": "x", "attempt": 1},
    ]
    states = cell_states(records)
    counts = summary_counts(camp, states, {"sysA": 2, "sysB": 1}, now=226.0)
    assert sysb_server not in states
    assert counts == {
        "total": 6,
        "done": 2,  # A valid + B out of attempts
        "valid": 1,
        "exhausted": 1,
        "invalid": 1,
        "failed": 1,
        "in_flight": 1,
        "pending": 3,  # D (retry), sysB Server, sysB SingleStream
        # sysA: C has 40 s left, over 2 hosts = 20; sysB: 3 x 66 s on 1 host = 198
        "eta_s": 198.0,
        "eta_by_system": {"sysA": 20.0, "sysB": 198.0},
        "overhead_s": {"sysA": None, "sysB": None},  # none learned: CELL_OVERHEAD_S
    }


def test_summary_eta_unknown_without_hosts() -> None:
    camp = campaign()
    counts = summary_counts(camp, {}, {}, now=0.0)
    assert counts["pending"] == 3 and counts["eta_s"] is None
    assert counts["eta_by_system"] == {"sysA": None}
    assert summary_counts(camp, {}, {"sysA": 3}, now=0.0)["eta_s"] == 66.0
