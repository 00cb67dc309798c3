"""The campaign report (plugin_utils/_campaign_report): rows from hand-written ledger records,
and their markdown, CSV, JUnit and HTML renderings, with every expected value written out."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_report import (
    HOST_FACTS_DIR,
    cell_rows,
    kept_host_facts,
    render_campaign_html,
    render_csv,
    render_junit,
    render_markdown,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    parse_spec,
)

NOW = 1767225600.0  # 2026-01-01 00:00:00 UTC
T1 = 1767229200.0  # 2026-01-01 01:00:00 UTC
T2 = 1767229230.5  # 2026-01-01 01:00:30 UTC
QPS = {"name": "samples_per_second", "value": 1234.5, "unit": "samples/s"}


def small_campaign() -> Campaign:
    """Two systems x synth-mlp-small/Offline x (performance, accuracy, TEST04): six cells."""
    return parse_spec(
        {
            "version": 1,
            "campaign": "demo",
            "systems": [{"name": "sa", "hosts": "ga"}, {"name": "sb", "hosts": "gb"}],
            "benchmarks": {
                "synth-mlp-small": {
                    "scenarios": ["Offline"],
                    "modes": ["performance", "accuracy", "TEST04"],
                }
            },
        },
        "spec.yml",
    )


def claimed(cell: str, host: str, run_id: str, attempt: int = 1, t: float = T1) -> dict[str, Any]:
    return {
        "v": 1,
        "t": t,
        "event": "claimed",
        "cell": cell,
        "host": host,
        "session": "s1",
        "run_id": run_id,
        "attempt": attempt,
        "resume": False,
    }


def finished(
    cell: str,
    host: str,
    run_id: str,
    verdict: str,
    *,
    attempt: int = 1,
    failed: bool = False,
    reasons: list[str] | None = None,
    metric: dict[str, Any] | None = None,
    results_dir: str | None = None,
    t: float = T2,
) -> dict[str, Any]:
    return {
        "v": 1,
        "t": t,
        "event": "finished",
        "cell": cell,
        "host": host,
        "session": "s1",
        "run_id": run_id,
        "attempt": attempt,
        "verdict": verdict,
        "reasons": reasons or [],
        "metric": metric,
        "results_dir": results_dir,
        "failed": failed,
    }


PERF_A = "sa/synth-mlp-small/Offline/performance"
ACC_A = "sa/synth-mlp-small/Offline/accuracy"
T04_A = "sa/synth-mlp-small/Offline/TEST04"
PERF_B = "sb/synth-mlp-small/Offline/performance"
ACC_B = "sb/synth-mlp-small/Offline/accuracy"
T04_B = "sb/synth-mlp-small/Offline/TEST04"


def records(base: str = "/c") -> list[dict[str, Any]]:
    """sa: performance VALID, accuracy INVALID then VALID on a retry, TEST04 failed (host lost);
    sb: performance INVALID, accuracy in flight, TEST04 never claimed."""
    return [
        claimed(PERF_A, "h1", "r-pa"),
        claimed(ACC_A, "h2", "r-aa"),
        finished(PERF_A, "h1", "r-pa", "VALID", metric=QPS, results_dir=base + "/runs/r-pa/h1"),
        finished(ACC_A, "h2", "r-aa", "INVALID", reasons=["accuracy FAIL"]),
        claimed(ACC_A, "h1", "r-aa2", attempt=2),
        finished(ACC_A, "h1", "r-aa2", "VALID", attempt=2, results_dir=base + "/runs/r-aa2/h1"),
        claimed(T04_A, "h2", "r-ta"),
        finished(T04_A, "h2", "r-ta", "INVALID", failed=True, reasons=["lost the connection"]),
        claimed(PERF_B, "h3", "r-pb"),
        finished(
            PERF_B,
            "h3",
            "r-pb",
            "INVALID",
            reasons=["min duration not satisfied", "late start"],
            metric={"name": "samples_per_second", "value": 99, "unit": "samples/s"},
        ),
        claimed(ACC_B, "h3", "r-ab"),
        {"v": 1, "t": T2, "event": "note", "cell": ACC_B},  # other events are ignored
    ]


def test_cell_rows_from_the_ledger() -> None:
    rows = cell_rows(small_campaign(), records())
    assert [r["id"] for r in rows] == [PERF_A, ACC_A, T04_A, PERF_B, ACC_B, T04_B]
    got = {r["id"]: (r["state"], r["verdict"], r["attempts"], r["host"], r["run_id"]) for r in rows}
    assert got == {
        PERF_A: ("done", "VALID", 1, "h1", "r-pa"),
        ACC_A: ("done", "VALID", 2, "h1", "r-aa2"),
        T04_A: ("failed", "FAILED", 1, "h2", "r-ta"),
        PERF_B: ("failed", "INVALID", 1, "h3", "r-pb"),
        ACC_B: ("in_flight", "NOT_RUN", 1, "h3", "r-ab"),
        T04_B: ("pending", "NOT_RUN", 0, None, None),
    }
    by_id = {r["id"]: r for r in rows}
    assert by_id[PERF_A]["metric"] == QPS and by_id[PERF_A]["finished_at"] == T2
    assert by_id[PERF_A]["results_dir"] == "/c/runs/r-pa/h1"
    assert by_id[PERF_A]["kind"] == "performance run"
    assert by_id[T04_A]["kind"] == "compliance audit TEST04"
    assert by_id[T04_A]["reasons"] == ["lost the connection"]
    assert by_id[PERF_B]["reasons"] == ["min duration not satisfied", "late start"]
    # a cell in flight says nothing of a finish
    assert (by_id[ACC_B]["finished_at"], by_id[ACC_B]["metric"], by_id[ACC_B]["reasons"]) == (
        None,
        None,
        [],
    )
    assert (by_id[ACC_B]["system"], by_id[ACC_B]["benchmark"], by_id[ACC_B]["scenario"]) == (
        "sb",
        "synth-mlp-small",
        "Offline",
    )


def test_a_finished_record_of_a_run_taken_over_changes_nothing() -> None:
    ledger = [
        claimed(PERF_A, "h1", "old"),
        claimed(PERF_A, "h2", "new", attempt=2),
        finished(PERF_A, "h1", "old", "VALID", metric=QPS),  # the old run's late word
    ]
    [row] = [r for r in cell_rows(small_campaign(), ledger) if r["id"] == PERF_A]
    assert (row["state"], row["verdict"], row["host"], row["run_id"], row["attempts"]) == (
        "in_flight",
        "NOT_RUN",
        "h2",
        "new",
        2,
    )


def test_markdown() -> None:
    campaign = small_campaign()
    text = render_markdown(campaign, cell_rows(campaign, records()), NOW)
    assert text == (
        "# Campaign demo\n"
        "\n"
        "Generated 2026-01-01 00:00:00 UTC.\n"
        "\n"
        "## System sa\n"
        "\n"
        "| benchmark / scenario | performance | accuracy | TEST04 |\n"
        "|---|---|---|---|\n"
        "| synth-mlp-small / Offline | VALID (samples_per_second 1234.5 samples/s) | VALID "
        "| FAILED |\n"
        "\n"
        "## System sb\n"
        "\n"
        "| benchmark / scenario | performance | accuracy | TEST04 |\n"
        "|---|---|---|---|\n"
        "| synth-mlp-small / Offline | INVALID (samples_per_second 99 samples/s) | NOT_RUN "
        "| NOT_RUN |\n"
        "\n"
        "6 cell(s): FAILED=1, INVALID=1, NOT_RUN=2, VALID=2\n"
    )


def test_csv() -> None:
    campaign = small_campaign()
    text = render_csv(cell_rows(campaign, records()))
    table = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == (
        "id,system,benchmark,scenario,mode,verdict,attempts,host,run_id,metric_name,"
        "metric_value,metric_unit,finished_at_utc,gpus_at_once,gpu,reasons"
    )
    assert table[0] == {
        "id": PERF_A,
        "system": "sa",
        "benchmark": "synth-mlp-small",
        "scenario": "Offline",
        "mode": "performance",
        "verdict": "VALID",
        "attempts": "1",
        "host": "h1",
        "run_id": "r-pa",
        "metric_name": "samples_per_second",
        "metric_value": "1234.5",
        "metric_unit": "samples/s",
        "finished_at_utc": "2026-01-01 01:00:30 UTC",
        "gpus_at_once": "1",  # ran alone on its host (no gpus_at_once in its record)
        "gpu": "",
        "reasons": "",
    }
    assert table[3]["reasons"] == "min duration not satisfied; late start"
    assert table[3]["verdict"] == "INVALID" and table[3]["metric_value"] == "99"
    assert table[5] == {
        "id": T04_B,
        "system": "sb",
        "benchmark": "synth-mlp-small",
        "scenario": "Offline",
        "mode": "TEST04",
        "verdict": "NOT_RUN",
        "attempts": "0",
        "host": "",
        "run_id": "",
        "metric_name": "",
        "metric_value": "",
        "metric_unit": "",
        "finished_at_utc": "",
        "gpus_at_once": "",
        "gpu": "",
        "reasons": "",
    }
    assert len(table) == 6


def test_junit() -> None:
    campaign = small_campaign()
    suite = ElementTree.fromstring(render_junit(campaign, cell_rows(campaign, records())))
    assert suite.tag == "testsuite"
    assert (suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        "campaign demo",
        "6",
        "2",
        "2",
    )
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("demo.sa", "synth-mlp-small/Offline/performance"),
        ("demo.sa", "synth-mlp-small/Offline/accuracy"),
        ("demo.sa", "synth-mlp-small/Offline/TEST04"),
        ("demo.sb", "synth-mlp-small/Offline/performance"),
        ("demo.sb", "synth-mlp-small/Offline/accuracy"),
        ("demo.sb", "synth-mlp-small/Offline/TEST04"),
    ]
    assert [[child.tag for child in case] for case in cases] == [
        [],
        [],
        ["failure"],
        ["failure"],
        ["skipped"],
        ["skipped"],
    ]
    failure = cases[2].find("failure")
    assert failure is not None
    assert (failure.get("message"), failure.text) == ("FAILED on h2", "lost the connection")
    failure = cases[3].find("failure")
    assert failure is not None
    assert (failure.get("message"), failure.text) == (
        "INVALID on h3",
        "min duration not satisfied\nlate start",
    )
    skipped = [case.find("skipped") for case in cases[4:]]
    assert [s.get("message") if s is not None else None for s in skipped] == [
        "not run (in_flight)",
        "not run (pending)",
    ]


def test_html_links_each_finished_cell_to_its_run_report(tmp_path: Path) -> None:
    campaign = small_campaign()
    directory = tmp_path / "campaign"
    rows = cell_rows(campaign, records(str(directory)))
    page = render_campaign_html(campaign, rows, str(directory), NOW)
    assert page.startswith("<!DOCTYPE html>\n")
    assert '<body data-report="heteromig-campaign" data-cells="6">' in page
    assert "<h1>Campaign demo</h1>" in page
    assert "Generated 2026-01-01 00:00:00 UTC. All times are UTC." in page
    assert page.count("<h2>System sa</h2>") == 1 and page.count("<h2>System sb</h2>") == 1
    assert (
        "<tr><th>benchmark / scenario</th><th>performance run</th><th>accuracy run</th>"
        "<th>compliance audit TEST04</th></tr>"
    ) in page
    assert (
        '<td class="VALID" data-cell="%s" data-gpus-at-once="1" title="performance run">'
        '<a href="runs/r-pa/h1/report.html">VALID</a>'
        "<br><small>samples_per_second 1234.5 samples/s</small></td>" % PERF_A
    ) in page
    assert (
        '<td class="VALID" data-cell="%s" data-gpus-at-once="1" title="accuracy run">'
        '<a href="runs/r-aa2/h1/report.html">VALID</a></td>' % ACC_A
    ) in page
    # no results: no link; reasons in the title, escaped
    assert (
        '<td class="FAILED" data-cell="%s" data-gpus-at-once="1" title="lost the connection">'
        "FAILED</td>" % T04_A
    ) in page
    assert (
        '<td class="NOT_RUN" data-cell="%s" data-gpus-at-once="" title="compliance audit TEST04">'
        "NOT_RUN</td>" % T04_B
    ) in page
    assert page.count("<a href=") == 2
    hostile = records(str(directory))
    hostile[3] = finished(ACC_A, "h2", "r-aa", "INVALID", reasons=['<script>"x"</script>'])
    hostile[4:6] = []
    page = render_campaign_html(campaign, cell_rows(campaign, hostile), str(directory), NOW)
    assert "<script>" not in page
    assert 'title="&lt;script&gt;&quot;x&quot;&lt;/script&gt;">INVALID</td>' in page


def test_host_facts_are_kept_for_runs_that_touch_no_host(tmp_path: Path) -> None:
    """A re-run gathers facts only on the hosts with cells left: the others come back from the
    campaign directory, and a damaged copy is ignored rather than trusted."""
    h1 = {"heteromig_host": {"cpu": {"model_name": "AMD EPYC 9654"}}}
    h2 = {"heteromig_host": {"cpu": {"model_name": "Intel Xeon 8480"}}}
    first = kept_host_facts(str(tmp_path), {"h1": h1, "h2": h2})
    assert first == {"h1": h1, "h2": h2}
    # the next run only reached h2, whose facts changed (a new kernel, say)
    h2_new = {"heteromig_host": {"cpu": {"model_name": "Intel Xeon 8480+"}}}
    assert kept_host_facts(str(tmp_path), {"h2": h2_new}) == {"h1": h1, "h2": h2_new}
    (tmp_path / HOST_FACTS_DIR / "h1.json").write_text("{not json")
    assert kept_host_facts(str(tmp_path), {}) == {"h2": h2_new}
    assert kept_host_facts(str(tmp_path / "never-written"), {}) == {}
    # a host whose inventory name is not a plain file name is used, never written as a path
    odd = {"heteromig_host": {"cpu": {"model_name": "x"}}}
    assert kept_host_facts(str(tmp_path), {"../escape": odd})["../escape"] == odd
    assert not (tmp_path / "escape.json").exists()
    assert sorted(p.name for p in (tmp_path / HOST_FACTS_DIR).iterdir()) == ["h1.json", "h2.json"]
