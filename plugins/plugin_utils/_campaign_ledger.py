# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The campaign ledger: a durable JSONL record of every cell's claims and outcomes (controller).

One JSON object per line (docs/campaign.md, "The ledger")::

    {"v": 1, "t": 1763788560.2, "event": "claimed", "cell": "sys/bench/Server/performance",
     "host": "h1", "session": "s1", "run_id": "...", "attempt": 1, "resume": false}
    {"v": 1, "t": ..., "event": "finished", "cell": ..., "host": ..., "session": ...,
     "run_id": ..., "attempt": 1, "verdict": "VALID", "reasons": [], "metric": ...,
     "results_dir": ..., "failed": false}

Every write takes an exclusive ``flock`` of ``<ledger>.lock``, then appends one complete line
with a single ``write(2)`` on an ``O_APPEND`` descriptor and ``fsync(2)``s it
(:class:`_report_records.JsonlAppender`). A process killed in the middle of a write can leave a
torn last line: :func:`read` skips it with a warning, and the next write cuts it off first, so a
torn line never ends up in the middle of the file. :func:`claim_next` reads the ledger, picks a
cell and appends its claim under the same lock, so concurrent claimers (one controller worker
process per host) never get the same cell.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    CELL_OVERHEAD_S,
    Campaign,
    Cell,
    System,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_records import (
    JsonlAppender,
)

LEDGER_VERSION = 1
LEDGER = "ledger.jsonl"  # a campaign's ledger in its directory (one per slice when sliced)
RUNS = "runs"  # the campaign directory's folder of run results, runs/<run_id>/<host>/
CLAIMED = "claimed"
FINISHED = "finished"
VALID = "VALID"
INVALID = "INVALID"
STATES = ("pending", "in_flight", "done", "failed")

_SCENARIO_SHORT = {"Offline": "off", "Server": "srv", "SingleStream": "ss", "MultiStream": "ms"}
_MODE_SHORT = {
    "performance": "perf",
    "accuracy": "acc",
    "TEST01": "t01",
    "TEST04": "t04",
    "TEST05": "t05",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class LedgerError(Exception):
    """A ledger that cannot be trusted (garbled in the middle, or from a newer heteromig)."""


@dataclass(frozen=True)
class CellState:
    cell: str
    state: str  # pending | in_flight | done | failed
    attempts: int  # the highest attempt number claimed (0: never claimed)
    verdict: str | None  # of the latest finished attempt
    run_id: str | None  # of the latest claim
    host: str | None
    session: str | None
    last: dict[str, Any] | None  # the latest record of the cell that counted


@dataclass(frozen=True)
class Claim:
    cell: Cell
    attempt: int
    run_id: str
    resume: bool
    # a resumed claim's earlier claim record (not part of what the claim is)
    previous: dict[str, Any] | None = field(default=None, compare=False)


# ---------------------------------------------------------------------------- the file
@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """An exclusive flock of ``<path>.lock`` (created as needed) for the ``with`` block."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _repair_tail(path: str) -> int:
    """Make the file end in a newline before an append; returns the torn bytes cut off.

    A last line that is a whole JSON object without its newline gets the newline; anything else
    after the last newline is a torn write and is cut off. Call with the lock held.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return 0
        chunk = 4096
        start = size
        tail = b""
        while start > 0:
            start = max(0, start - chunk)
            tail = os.pread(fd, size - start, start)
            if b"\n" in tail:
                break
        cut = tail.rfind(b"\n") + 1  # 0 when the whole file is one torn line
        keep = start + cut
        fragment = tail[cut:]
        if _parse_line(fragment) is not None:
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, b"\n")
            os.fsync(fd)
            return 0
        os.ftruncate(fd, keep)
        os.fsync(fd)
        return size - keep
    finally:
        os.close(fd)


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _append_locked(path: str, record: Mapping[str, Any]) -> dict[str, Any]:
    entry = dict(record)
    entry.setdefault("v", LEDGER_VERSION)
    entry.setdefault("t", time.time())
    dropped = _repair_tail(path)
    if dropped:
        entry["dropped_torn_bytes"] = dropped
    appender = JsonlAppender(path)
    try:
        appender.append(entry)
    finally:
        appender.close()
    return entry


def append(path: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """Append one record durably (adds ``v`` and ``t`` where missing); returns what was written."""
    with locked(path):
        return _append_locked(path, record)


def read(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The ledger's records and warnings; a missing file is an empty ledger.

    A garbled last line (an interrupted write) is skipped with a warning; a garbled line
    anywhere else, or a record of a newer ledger version, raises LedgerError.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise LedgerError("cannot read the campaign ledger %s: %s" % (path, exc)) from None
    lines = data.split(b"\n")
    numbered = [(i + 1, raw) for i, raw in enumerate(lines) if raw.strip()]
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    for position, (number, raw) in enumerate(numbered):
        record = _parse_line(raw)
        if record is None:
            if position == len(numbered) - 1:
                warnings.append(
                    "campaign ledger %s line %d: truncated or garbled last line skipped (an "
                    "interrupted write; the next write cuts it off)" % (path, number)
                )
                continue
            raise LedgerError(
                "campaign ledger %s line %d is garbled (not a JSON object); the ledger cannot be "
                "trusted: repair or remove that line" % (path, number)
            )
        version = record.get("v", LEDGER_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise LedgerError(
                "campaign ledger %s line %d: bad ledger version %r" % (path, number, version)
            )
        if version > LEDGER_VERSION:
            raise LedgerError(
                "campaign ledger %s line %d was written by a newer version of heteromig (ledger "
                "version %d, this one reads up to %d)" % (path, number, version, LEDGER_VERSION)
            )
        records.append(record)
    return records, warnings


# --------------------------------------------------------------------------- the states
def _attempt(record: Mapping[str, Any]) -> int:
    value = record.get("attempt")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def cell_states(records: list[dict[str, Any]]) -> dict[str, CellState]:
    """Each cell's state from the records in ledger order (cells never claimed are absent).

    ``claimed`` makes a cell in_flight with that claim's run_id, host and session. A
    ``finished`` record for the latest claim's run_id makes it done (verdict VALID and not
    ``failed``) or failed (INVALID, or the task failed); a finished record of an older run
    (taken over since) is ignored.
    """
    states: dict[str, CellState] = {}
    for record in records:
        event = record.get("event")
        cell = record.get("cell")
        if event not in (CLAIMED, FINISHED) or not isinstance(cell, str):
            continue
        before = states.get(cell)
        if event == CLAIMED:
            states[cell] = CellState(
                cell=cell,
                state="in_flight",
                attempts=max(_attempt(record), before.attempts if before else 0),
                verdict=before.verdict if before else None,
                run_id=record.get("run_id"),
                host=record.get("host"),
                session=record.get("session"),
                last=record,
            )
            continue
        if before is None or before.state != "in_flight" or before.run_id != record.get("run_id"):
            continue
        verdict = record.get("verdict")
        good = verdict == VALID and not record.get("failed")
        states[cell] = CellState(
            cell=cell,
            state="done" if good else "failed",
            attempts=before.attempts,
            verdict=verdict if isinstance(verdict, str) else None,
            run_id=before.run_id,
            host=record.get("host", before.host),
            session=record.get("session", before.session),
            last=record,
        )
    return states


def _pending(cell: str) -> CellState:
    return CellState(cell, "pending", 0, None, None, None, None, None)


def state_of(states: Mapping[str, CellState], cell: Cell) -> CellState:
    return states.get(cell.id) or _pending(cell.id)


def retryable(state: CellState, cell: Cell) -> bool:
    """A failed/INVALID cell with attempts left (1 + retries attempts in all)."""
    return state.state == "failed" and state.attempts < 1 + cell.retries


# ---------------------------------------------------------------------------- claiming
def new_run_id(campaign: str, cell: Cell, attempt: int) -> str:
    """``<campaign>-<system>_<benchmark>_<scenario>_<mode>-a<attempt>-<8 hex>``, [A-Za-z0-9_.-]."""
    slug = "_".join(
        (
            cell.system[:24],
            cell.benchmark[:24],
            _SCENARIO_SHORT.get(cell.scenario, cell.scenario),
            _MODE_SHORT.get(cell.mode, cell.mode),
        )
    )
    text = "%s-%s-a%d-%s" % (campaign[:40], slug, attempt, secrets.token_hex(4))
    return _UNSAFE.sub("-", text)


def decide(
    campaign: Campaign, system: str, host: str, session: str, states: Mapping[str, CellState]
) -> Claim | None:
    """The claim rules (docs/campaign.md), without touching the ledger."""
    cells = [c for c in campaign.cells if c.system == system]
    # (a) this host's own unfinished claim of an earlier session: resume it
    for cell in cells:
        st = state_of(states, cell)
        if st.state == "in_flight" and st.host == host and st.session != session:
            return Claim(cell, st.attempts, str(st.run_id), True, dict(st.last or {}))
    # (b) a pending cell, or a failed/INVALID one with attempts left
    for cell in cells:
        st = state_of(states, cell)
        if st.state == "pending" or retryable(st, cell):
            return Claim(
                cell, st.attempts + 1, new_run_id(campaign.name, cell, st.attempts + 1), False
            )
    # (c) another host's unfinished claim of an earlier session (that host may be lost)
    for cell in cells:
        st = state_of(states, cell)
        if st.state == "in_flight" and st.host != host and st.session != session:
            return Claim(
                cell, st.attempts + 1, new_run_id(campaign.name, cell, st.attempts + 1), False
            )
    return None


def claim_next(
    path: str,
    campaign: Campaign,
    system: str | System,
    host: str,
    session: str,
    warn: Callable[[str], None] | None = None,
    header: Mapping[str, Any] | None = None,
    extra: Callable[[Claim], Mapping[str, Any]] | None = None,
) -> Claim | None:
    """Claim the next cell of ``system`` for ``host`` in ``session``, or None when none is left.

    Reads the ledger, decides by :func:`decide` and appends the ``claimed`` record, all under
    the ledger's lock. ``warn`` receives the reader's warnings (a torn last line). ``header``
    (a slice's ``slice`` record) is appended first when the ledger's latest record of its event
    differs from it in any of its keys. ``extra(claim)`` gives fields added to the claimed
    record (the GPU of a lane).
    """
    name = system.name if isinstance(system, System) else system
    campaign.system(name)  # SpecError for a system the campaign does not have
    with locked(path):
        records, warnings = read(path)
        for message in warnings:
            if warn is not None:
                warn(message)
        if header is not None:
            _ensure_locked(path, records, header)
        claim = decide(campaign, name, host, session, cell_states(records))
        if claim is None:
            return None
        _append_locked(
            path,
            {
                "event": CLAIMED,
                "cell": claim.cell.id,
                "host": host,
                "session": session,
                "run_id": claim.run_id,
                "attempt": claim.attempt,
                "resume": claim.resume,
                **(extra(claim) if extra is not None else {}),
            },
        )
        return claim


def _ensure_locked(path: str, records: list[dict[str, Any]], record: Mapping[str, Any]) -> bool:
    last = next((r for r in reversed(records) if r.get("event") == record["event"]), None)
    if last is not None and all(last.get(k) == v for k, v in record.items()):
        return False
    _append_locked(path, record)
    return True


def ensure(path: str, record: Mapping[str, Any]) -> bool:
    """Append ``record`` unless the ledger's latest record of its event has the same values for
    all of its keys (a slice's ``slice`` record); returns whether it was appended."""
    with locked(path):
        records, _warnings = read(path)
        return _ensure_locked(path, records, record)


def finish(
    path: str,
    claim: Claim,
    host: str,
    session: str,
    *,
    verdict: str | None,
    failed: bool,
    reasons: list[str] | None = None,
    metric: Any = None,
    results_dir: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Append the ``finished`` record of a claim (a convenience over :func:`append`)."""
    record = {
        "event": FINISHED,
        "cell": claim.cell.id,
        "host": host,
        "session": session,
        "run_id": claim.run_id,
        "attempt": claim.attempt,
        "verdict": verdict,
        "reasons": list(reasons or []),
        "metric": metric,
        "results_dir": results_dir,
        "failed": bool(failed),
    }
    record.update(extra)
    return append(path, record)


# ------------------------------------------------------------------------------ progress
def cell_estimate(cell: Cell, overhead_s: float | None = None) -> float:
    """A cell's expected wall time: its ``expected_s``, with the fixed CELL_OVERHEAD_S replaced
    by ``overhead_s`` (learned from the cells finished so far) when given; never below 0."""
    if overhead_s is None:
        return cell.expected_s
    return max(0.0, cell.expected_s - CELL_OVERHEAD_S + overhead_s)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def learned_overheads(campaign: Campaign, records: list[dict[str, Any]]) -> dict[str, float]:
    """Per system, the median overhead its finished cells really had (docs/campaign.md,
    "Progress"): for each attempt that ran to its end, its wall time (``finished`` minus its
    ``claimed`` record's ``t``) minus the cell's main duration and start buffer. Systems with
    no such attempt yet are absent (their ETA keeps CELL_OVERHEAD_S).

    Left out, as they do not measure one ordinary run: failed attempts (a host lost, a run that
    could not start), attempts resumed after their controller died (the claim's time is not the
    run's start), and tuned cells (their wall time holds the probe and the trials).
    """
    cells = {cell.id: cell for cell in campaign.cells}
    claimed: dict[str, float] = {}
    resumed: set[str] = set()
    samples: dict[str, list[float]] = {}
    for record in records:
        run_id = record.get("run_id")
        stamp = _number(record.get("t"))
        if not isinstance(run_id, str) or stamp is None:
            continue
        if record.get("event") == CLAIMED:
            if record.get("resume"):
                resumed.add(run_id)
            else:
                claimed.setdefault(run_id, stamp)
            continue
        cell = cells.get(str(record.get("cell")))
        if (
            record.get("event") != FINISHED
            or record.get("failed")
            or cell is None
            or cell.tune
            or cell.tuning.get("use_tuned")
            or run_id in resumed
            or run_id not in claimed
        ):
            continue
        wall = stamp - claimed[run_id]
        if wall >= 0:
            nominal = cell.expected_s - CELL_OVERHEAD_S
            samples.setdefault(cell.system, []).append(wall - nominal)
    return {system: statistics.median(values) for system, values in samples.items()}


def summary_counts(
    campaign: Campaign,
    states: Mapping[str, CellState],
    hosts_per_system: Mapping[str, int],
    now: float | None = None,
    overheads: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Counts for progress lines, over the campaign's cells (ledger cells not in it ignored).

    total; valid (done, VALID); exhausted (failed or INVALID with no attempt left); done (valid
    + exhausted: nothing more will run); invalid / failed (cells whose latest outcome is INVALID
    / a failed task, retrying or not); in_flight; pending (never claimed, or waiting for a
    retry). eta_s: per system, the estimate of its cells still to run (an in-flight cell
    counts what is left since its claim) divided by its hosts x gpus_at_once; the campaign's
    ETA is the largest (systems run side by side); None when a system has no hosts. A cell's
    estimate is :func:`cell_estimate` with the system's learned overhead from ``overheads``
    (:func:`learned_overheads`) where it has one, else its ``expected_s``; ``overhead_s`` says
    per system which overhead was used (None: the fixed CELL_OVERHEAD_S).
    """
    moment = time.time() if now is None else now
    learned = overheads or {}
    counts = {
        "total": 0,
        "done": 0,
        "valid": 0,
        "exhausted": 0,
        "invalid": 0,
        "failed": 0,
        "in_flight": 0,
        "pending": 0,
    }
    remaining: dict[str, float] = {s.name: 0.0 for s in campaign.systems}
    for cell in campaign.cells:
        st = state_of(states, cell)
        estimate = cell_estimate(cell, learned.get(cell.system))
        counts["total"] += 1
        if st.state == "done":
            counts["valid"] += 1
            counts["done"] += 1
            continue
        if st.state == "failed":
            if st.last is not None and st.last.get("failed"):
                counts["failed"] += 1
            else:
                counts["invalid"] += 1
            if not retryable(st, cell):
                counts["exhausted"] += 1
                counts["done"] += 1
                continue
            counts["pending"] += 1
            remaining[cell.system] += estimate
        elif st.state == "in_flight":
            counts["in_flight"] += 1
            started = _number((st.last or {}).get("t"))
            left = estimate
            if started is not None:
                left = max(0.0, estimate - max(0.0, moment - started))
            remaining[cell.system] += left
        else:
            counts["pending"] += 1
            remaining[cell.system] += estimate
    eta_by_system: dict[str, float | None] = {}
    for system in campaign.systems:
        hosts = int(hosts_per_system.get(system.name) or 0)
        if remaining[system.name] == 0:
            eta_by_system[system.name] = 0.0
        elif hosts <= 0:
            eta_by_system[system.name] = None
        else:
            eta_by_system[system.name] = remaining[system.name] / (hosts * system.gpus_at_once)
    etas = list(eta_by_system.values())
    result: dict[str, Any] = dict(counts)
    result["eta_s"] = (
        None if any(e is None for e in etas) else max([0.0, *(e or 0.0 for e in etas)])
    )
    result["eta_by_system"] = eta_by_system
    result["overhead_s"] = {s.name: learned.get(s.name) for s in campaign.systems}
    return result


def progress(
    campaign: Campaign,
    records: list[dict[str, Any]],
    hosts_per_system: Mapping[str, int],
    now: float | None = None,
) -> dict[str, Any]:
    """:func:`summary_counts` of a ledger's records, with the overheads learned from them."""
    return summary_counts(
        campaign,
        cell_states(records),
        hosts_per_system,
        now=now,
        overheads=learned_overheads(campaign, records),
    )
