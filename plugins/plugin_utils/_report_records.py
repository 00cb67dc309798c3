# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Records of hetero_run outcomes and the durable JSONL file that holds them (controller only).

A *record* is one host's outcome of one task, as the ``heteromig.fleet.hetero_report`` callback
saw it: a hetero_run result (the contract of docs/hetero_result_contract.md, under ``result``),
or a failure/unreachable/skip without such a result. Records are plain JSON-able dicts::

    {"schema": 1, "seq": 3, "received_at": 1763788560.2, "host": "h1", "task": "Run",
     "task_uuid": "...", "action": "heteromig.fleet.hetero_run", "hetero": true,
     "status": "ok|failed|unreachable|skipped", "msg": null, "result": {...} | null}

Durability: :class:`JsonlAppender` writes each record as ONE complete line with a single
``write(2)`` on an ``O_APPEND`` descriptor, then ``fsync(2)``. Only the callback (one thread of
the controller's main process) writes, so lines never interleave; a crash or a kill in the middle
of a write can at worst leave a torn *last* line, which :func:`read_jsonl` skips. Rewriting the
whole file through a temporary file and ``rename(2)`` per record would also be atomic, but costs
O(n) per record (O(n^2) per run) and a reader racing the rename could see an older file; appends
cost O(1) and the file only ever grows.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

RECORD_SCHEMA = 1
STATUSES = ("ok", "failed", "unreachable", "skipped")

# Keys of the contract that mark a result as a hetero_run result.
_CONTRACT_KEYS = frozenset(("run_id", "verdict", "main", "timeline"))
# Keys Ansible adds to every result that the report has no use for.
_DROP_KEYS = frozenset(("invocation", "exception", "_ansible_no_log", "_ansible_verbose_always"))


def is_contract_result(result: Any) -> bool:
    """True when ``result`` looks like a hetero_run result (has the contract's key fields)."""
    return isinstance(result, Mapping) and set(result) >= _CONTRACT_KEYS


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy: tuples become lists, NaN/inf become None, unknown objects strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def result_items(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-item results of a task result: ``[result]``, or a loop's ``results`` list."""
    items = result.get("results")
    if not is_contract_result(result) and isinstance(items, list) and items:
        return [item for item in items if isinstance(item, Mapping)]
    return [result]


def message_of(result: Mapping[str, Any]) -> str | None:
    """The human message of a failed/unreachable/skipped result (``msg``, stderr, reason)."""
    for key in ("msg", "stderr", "skip_reason", "skipped_reason", "module_stderr"):
        value = result.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def make_record(
    *,
    seq: int,
    received_at: float,
    host: str,
    task: str,
    task_uuid: str,
    action: str,
    hetero: bool,
    status: str,
    result: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One record (see the module docstring); ``result`` is the raw (item) result of the task."""
    if status not in STATUSES:
        raise ValueError("status must be one of %s, not %r" % (", ".join(STATUSES), status))
    body = None
    msg = None
    if result is not None:
        msg = message_of(result)
        if is_contract_result(result):
            body = {k: v for k, v in result.items() if k not in _DROP_KEYS}
    return _jsonable(
        {
            "schema": RECORD_SCHEMA,
            "seq": seq,
            "received_at": received_at,
            "host": host,
            "task": task,
            "task_uuid": task_uuid,
            "action": action,
            "hetero": hetero,
            "status": status,
            "msg": msg,
            "result": body,
        }
    )


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One record as one JSONL line (UTF-8, no embedded newline, trailing ``\\n``)."""
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


class JsonlAppender:
    """Appends records to a JSONL file, each durable (fsync) before :meth:`append` returns."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        created = not os.path.exists(path)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:  # make the new directory entry itself durable
            _fsync_dir(directory)

    def append(self, record: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise ValueError("append to a closed JsonlAppender (%s)" % self.path)
        data = encode_line(record)
        written = os.write(self._fd, data)
        while written < len(data):  # regular files: only on ENOSPC-like partial writes
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_jsonl(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Records from JSONL text lines; blank lines, a torn line and non-objects are skipped."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue  # a torn last line of an interrupted write
        if isinstance(value, dict):
            yield value


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every complete record of a JSONL file (missing file: empty list)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return list(parse_jsonl(handle))
    except FileNotFoundError:
        return []


def write_atomic(path: str, text: str) -> None:
    """Write a whole file through a temporary file and rename (readers never see half)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
