# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: hetero_report
type: aggregate
short_description: Collect every host's hetero_run result into reports people read
version_added: 0.1.0
description:
  - Collects the result of every C(heteromig.fleet.hetero_run) task from every host as it
    arrives and appends it to C(results.jsonl) in the report directory. Each record is one
    complete line written with one C(write) and made durable with C(fsync) before the next
    task result is processed, so an interrupted playbook (Ctrl-C) keeps every finished result.
  - At the end of the playbook it writes C(summary.json), C(summary.csv), C(junit.xml) (one
    testcase per host and run, the reasons in failures), C(summary.md) and C(report.html), a
    self-contained page (no network; inline CSS, JavaScript and SVG) with a timeline per host
    (one lane per slice, the phases launch, ready, timed and end, the main benchmark's timed
    window highlighted). It prints a compact table (host, GPU, main benchmark, scenario,
    metric, verdict, reasons).
  - Hosts that were unreachable or failed (at the hetero_run task or before it), and hosts
    whose hetero_run never returned (interrupted run), appear as rows with their reason.
  - Where an isolated result (a hetero_run without backgrounds) and a heterogeneous result of
    the same GPU model, slice profile, benchmark and scenario exist, the reports show both and
    the interference in percent. Isolated results of earlier runs can be added with O(baselines).
  - While the play runs it prints one line per host and hetero_run task outcome at default
    verbosity, next to the stdout callback's own output. Per-phase progress of a running host
    comes from the hetero_run action itself, not from this callback.
  - If Ctrl-C stops the playbook, the summary files are still written from what finished when
    ansible-playbook exits (marked interrupted); C(results.jsonl) never depends on that.
  - A playbook without a hetero_run task writes nothing and prints nothing.
requirements:
  - Enable it, for example in C(ansible.cfg) C([defaults]) C(callbacks_enabled = heteromig.fleet.hetero_report).
options:
  output_dir:
    description:
      - Root directory of the reports. The files go into C(<output_dir>/<run_id>/), where
        C(<run_id>) is the run id of the first hetero_run result (C(report-<UTC time>) when no
        result carried one).
      - A relative path in C(ansible.cfg) is relative to that file's directory; from the
        environment, relative to the current directory.
    type: path
    default: results
    env:
      - name: HETEROMIG_REPORT_DIR
    ini:
      - section: callback_hetero_report
        key: output_dir
  formats:
    description:
      - Report files written at the end besides C(results.jsonl), which is always written.
      - C(json) is C(summary.json), C(csv) C(summary.csv), C(junit) C(junit.xml), C(md)
        C(summary.md), C(html) C(report.html).
    type: list
    elements: str
    choices: [json, csv, junit, md, html]
    default: [json, csv, junit, md, html]
    env:
      - name: HETEROMIG_REPORT_FORMATS
    ini:
      - section: callback_hetero_report
        key: formats
  actions:
    description:
      - Task actions whose results are hetero_run results (fully qualified or as written in
        the task). Results of other tasks only count as failures of hosts that never reached
        one of these.
    type: list
    elements: str
    default: [heteromig.fleet.hetero_run]
    env:
      - name: HETEROMIG_REPORT_ACTIONS
    ini:
      - section: callback_hetero_report
        key: actions
  baselines:
    description:
      - C(results.jsonl) files of earlier runs whose isolated results (hetero_run without
        backgrounds) serve as references for the interference comparison.
    type: list
    elements: path
    default: []
    env:
      - name: HETEROMIG_REPORT_BASELINES
    ini:
      - section: callback_hetero_report
        key: baselines
  show_table:
    description: Print the compact results table at the end of the playbook.
    type: bool
    default: true
    env:
      - name: HETEROMIG_REPORT_TABLE
    ini:
      - section: callback_hetero_report
        key: show_table
  progress:
    description: Print one line per host and hetero_run task outcome while the play runs.
    type: bool
    default: true
    env:
      - name: HETEROMIG_REPORT_PROGRESS
    ini:
      - section: callback_hetero_report
        key: progress
"""

import atexit
import datetime
import os
import time
from collections.abc import Mapping
from typing import Any

from ansible import constants as C
from ansible.plugins.callback import CallbackBase

from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_aggregate import (
    build_summary,
    row_from_record,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_html import render_html
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_records import (
    JsonlAppender,
    make_record,
    read_jsonl,
    result_items,
    write_atomic,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_render import (
    progress_line,
    render_csv,
    render_json,
    render_junit,
    render_markdown,
    render_table,
)

FILES = {
    "json": ("summary.json", render_json),
    "csv": ("summary.csv", render_csv),
    "junit": ("junit.xml", render_junit),
    "md": ("summary.md", render_markdown),
    "html": ("report.html", render_html),
}
JSONL = "results.jsonl"
_COLORS = {
    "VALID": C.COLOR_OK,
    "DRY_RUN": C.COLOR_SKIP,
    "SKIPPED": C.COLOR_SKIP,
    "INVALID": C.COLOR_ERROR,
    "FAILED": C.COLOR_ERROR,
    "UNREACHABLE": C.COLOR_UNREACHABLE,
    "NO_RESULT": C.COLOR_UNREACHABLE,
}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "heteromig.fleet.hetero_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: Any = None) -> None:
        super().__init__(display=display)
        self._pid = os.getpid()
        self._started_at = time.time()
        self._seq = 0
        self._records: list[dict[str, Any]] = []  # this run's records, in arrival order
        self._unwritten: list[dict[str, Any]] = []  # records waiting for the report directory
        self._started: dict[tuple[str, str], str] = {}  # (host, task uuid) -> task name
        self._hetero_seen = False
        self._writer: JsonlAppender | None = None
        self._report_dir: str | None = None
        self._finished = False
        self._warned = False
        self._output_dir = "results"
        self._formats: list[str] = list(FILES)
        self._actions: set[str] = {"heteromig.fleet.hetero_run"}
        self._baselines: list[str] = []
        self._show_table = True
        self._progress = True
        atexit.register(self._at_exit)

    def set_options(
        self, task_keys: Any = None, var_options: Any = None, direct: Any = None
    ) -> None:
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self._output_dir = str(self.get_option("output_dir"))
        formats = [str(f).strip().lower() for f in self.get_option("formats") or []]
        unknown = sorted(set(formats) - set(FILES))
        if unknown:
            self._display.warning(
                "hetero_report: unknown formats ignored: %s (choices: %s)"
                % (", ".join(unknown), ", ".join(FILES))
            )
        self._formats = [f for f in FILES if f in formats]
        self._actions = {str(a).strip() for a in self.get_option("actions") or [] if str(a).strip()}
        self._baselines = [str(p) for p in self.get_option("baselines") or []]
        self._show_table = bool(self.get_option("show_table"))
        self._progress = bool(self.get_option("progress"))

    # ------------------------------------------------------------------ task classification

    def _is_hetero(self, task: Any) -> bool:
        action = str(getattr(task, "action", "") or "")
        if action in self._actions:
            return True
        if "{{" in action:  # resolving a templated action here would only warn
            return False
        return str(getattr(task, "resolved_action", "") or "") in self._actions

    # ------------------------------------------------------------------ events

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        if self._is_hetero(task) and not self._hetero_seen:
            self._hetero_seen = True
            # failures of hosts that left the play before this task become rows from now on
            self._unwritten = [r for r in self._records if not r["hetero"]]

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        if self._is_hetero(task):
            self._started[(host.get_name(), task._uuid)] = task.get_name()

    def v2_runner_on_ok(self, result: Any) -> None:
        self._collect(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._collect(result, "failed", ignore_errors=ignore_errors)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._collect(result, "unreachable")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._collect(result, "skipped")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._finish(interrupted=False)

    # ------------------------------------------------------------------ collection

    def _collect(self, result: Any, status: str, ignore_errors: bool = False) -> None:
        task = result.task
        hetero = self._is_hetero(task)
        if not hetero and (status in ("ok", "skipped") or ignore_errors):
            return  # other tasks only matter when they take a host out of the play
        host = result.host.get_name()
        raw = result.result
        if hetero and status == "ok" and isinstance(raw, Mapping) and raw.get("hetero_run_started"):
            # hetero_run wait=false only started the run; the task that watches it reports it
            self._started.pop((host, task._uuid), None)
            return
        action = (
            str(getattr(task, "resolved_action", None) or task.action)
            if hetero
            else str(task.action)
        )
        for item in result_items(raw) if hetero else [raw]:
            self._seq += 1
            record = make_record(
                seq=self._seq,
                received_at=time.time(),
                host=host,
                task=task.get_name(),
                task_uuid=str(task._uuid),
                action=action,
                hetero=hetero,
                status=status,
                result=item,
            )
            self._records.append(record)
            if hetero or self._hetero_seen:
                self._store(record)
            if hetero and self._progress:
                self._show_progress(record)

    def _store(self, record: dict[str, Any]) -> None:
        """Append ``record`` to results.jsonl now, or keep it until the directory is known."""
        self._unwritten.append(record)
        if self._writer is None:
            run_id = (record.get("result") or {}).get("run_id")
            if not run_id:
                return
            try:
                self._open(str(run_id))
            except OSError as exc:
                self._write_failed(exc)
                return
        self._flush_unwritten()

    def _flush_unwritten(self) -> None:
        if self._writer is None:
            raise AssertionError("the results writer must be open before flushing")
        try:
            while self._unwritten:
                self._writer.append(self._unwritten[0])
                self._unwritten.pop(0)
        except OSError as exc:  # kept in memory; retried with the next record and at the end
            self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            self._display.warning("hetero_report: cannot write the results file: %s" % exc)

    def _open(self, run_id: str) -> None:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id) or "run"
        self._report_dir = os.path.join(self._output_dir, safe)
        self._writer = JsonlAppender(os.path.join(self._report_dir, JSONL))
        self._display.vv("hetero_report: appending results to %s" % self._writer.path)

    def _show_progress(self, record: dict[str, Any]) -> None:
        row = row_from_record(record)
        done = sum(1 for r in self._records if r["hetero"])
        self._display.display(
            "hetero_report: " + progress_line(row, done, len(self._started)),
            color=_COLORS.get(row["verdict"]),
        )

    # ------------------------------------------------------------------ the end

    def _at_exit(self) -> None:
        # Ctrl-C: v2_playbook_on_stats never ran. Only the process that loaded the callback.
        if os.getpid() == self._pid and not self._finished:
            try:
                self._finish(interrupted=True)
            except Exception as exc:  # never turn an interrupted run into a traceback
                self._display.warning("hetero_report: could not write the reports: %s" % exc)

    def _finish(self, interrupted: bool) -> None:
        if self._finished:
            return
        self._finished = True
        if not self._hetero_seen:
            return
        written: list[str] = []
        try:
            if self._writer is None:
                stamp = datetime.datetime.fromtimestamp(self._started_at, datetime.UTC)
                self._open(stamp.strftime("report-%Y%m%dT%H%M%SZ"))
            # A Ctrl-C between a record's write and its removal from the queue would write it
            # twice: what the file already holds is not written again.
            # (seq, received_at): the file may also hold an earlier playbook run's records
            in_file = {(r.get("seq"), r.get("received_at")) for r in read_jsonl(self._writer.path)}
            self._unwritten = [
                r for r in self._unwritten if (r.get("seq"), r.get("received_at")) not in in_file
            ]
            self._flush_unwritten()
            self._writer.close()
            if not self._unwritten:
                written.append(self._writer.path)
        except OSError as exc:
            self._write_failed(exc)
        baseline_records = []
        for path in self._baselines:
            found = read_jsonl(path)
            if not found:
                self._display.warning("hetero_report: baseline %s has no results" % path)
            baseline_records += [r for r in found if r.get("hetero")]
        summary = build_summary(
            self._records,
            started=[(host, uuid, name) for (host, uuid), name in self._started.items()],
            baseline_records=baseline_records,
            interrupted=interrupted,
            generated_at=time.time(),
            report_dir=os.path.abspath(self._report_dir) if self._report_dir else None,
        )
        if written and self._report_dir:
            try:
                for fmt in self._formats:
                    name, render = FILES[fmt]
                    path = os.path.join(self._report_dir, name)
                    write_atomic(path, render(summary))
                    written.append(path)
            except OSError as exc:
                self._display.warning("hetero_report: cannot write the reports: %s" % exc)
        if self._show_table:
            title = "HETERO RUN REPORT [%s]" % (", ".join(summary["run_ids"]) or "no run id")
            self._display.banner(title + (" (INTERRUPTED)" if interrupted else ""))
            for line in render_table(summary):
                self._display.display(line)
        if written:
            self._display.display(
                "hetero_report: reports in %s: %s"
                % (
                    os.path.abspath(os.path.dirname(written[0])),
                    " ".join(os.path.basename(p) for p in written),
                )
            )
