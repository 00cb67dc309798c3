"""Renderers of the report (text table, progress line, CSV, JUnit, Markdown, HTML).

The summary is built from REAL LoadGen runs (tests/hetero_samples) plus an unreachable host;
the expected values come from those results and the log files, not from the renderers.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import hetero_samples
import pytest
from hetero_samples import power_time, read_mllog

from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_aggregate import (
    build_summary,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_html import render_html
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_render import (
    CSV_COLUMNS,
    TABLE_HEADER,
    progress_line,
    render_csv,
    render_json,
    render_junit,
    render_markdown,
    render_table,
)

HOSTS = {"h1": "valid", "h2": "invalid", "h3": "server", "h5": "crash"}


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return hetero_samples.build_samples(tmp_path_factory.getbasetemp() / "hetero-samples")


def _rec(
    host: str,
    result: dict[str, Any] | None,
    seq: int,
    status: str = "ok",
    hetero: bool = True,
    msg: str | None = None,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "host": host,
        "task": "Run" if hetero else "Ping",
        "task_uuid": "u",
        "hetero": hetero,
        "status": status,
        "msg": msg,
        "result": result,
    }


@pytest.fixture(scope="module")
def summary(samples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    recs = [
        _rec(
            "h4", None, 1, "unreachable", hetero=False, msg="Failed to connect to the host via ssh"
        )
    ]
    for seq, (host, name) in enumerate(HOSTS.items(), start=2):
        result = hetero_samples.as_host(samples[name], host)
        recs.append(_rec(host, result, seq, "ok" if result["verdict"] == "VALID" else "failed"))
    baseline = [_rec("h1", hetero_samples.as_host(samples["isolated"], "h1"), 1)]
    return build_summary(
        recs, baseline_records=baseline, generated_at=1795325000.0, report_dir="/tmp/r"
    )


def _rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["host"]: r for r in summary["rows"]}


def test_table_has_one_line_per_host_with_verdict_and_reasons(
    summary: dict[str, Any], samples: dict[str, dict[str, Any]]
) -> None:
    lines = render_table(summary)
    header = lines[0].split()
    assert header[:2] == ["host", "gpu"] and lines[0].startswith("host") and "verdict" in lines[0]
    assert set(lines[1]) <= {"-", " "}
    body = {line.split()[0]: line for line in lines[2:-1]}
    assert sorted(body) == ["h1", "h2", "h3", "h4", "h5"]
    assert "VALID" in body["h1"] and "synth-mlp-small" in body["h1"] and "Offline" in body["h1"]
    metric = samples["valid"]["main"]["loadgen"]["metric"]["value"]
    shown = re.search(r"Offline\s+([\d,.]+) samples/s", body["h1"])
    assert shown and float(shown.group(1).replace(",", "")) == pytest.approx(metric, abs=0.051)
    assert "vs isolated" in body["h1"]
    # h2's one reason is longer than the column: cut, with an ellipsis
    (reason,) = samples["invalid"]["reasons"]
    shown = body["h2"][body["h2"].index("INVALID") + len("INVALID") :].strip()
    assert len(reason) > 70 and len(shown) == 70
    assert shown == reason[:69] + "\u2026"
    assert "UNREACHABLE" in body["h4"] and "unreachable at task 'Ping'" in body["h4"]
    # h5's first reason, and how many more
    crash = samples["crash"]["reasons"]
    assert len(crash) == 2 and crash[0] == "the main benchmark exited with code 4"
    assert re.search(r"INVALID\s+the main benchmark exited with code 4 \(\+1 more\)$", body["h5"])
    assert lines[-1] == "5 run(s): VALID=2 INVALID=2 UNREACHABLE=1"
    assert len(TABLE_HEADER) == 7


def test_progress_line(summary: dict[str, Any]) -> None:
    rows = _rows(summary)
    assert progress_line(rows["h1"], 1, 4) == "[1/4] h1 VALID, backgrounds 2/2 covered"
    assert progress_line(rows["h2"], 2, 1) == "[2/2] h2 INVALID, backgrounds 0/1 covered"
    # without a hetero_run result (the action printed nothing), the reason is on the line
    assert progress_line(rows["h4"], 5, 5) == (
        "[5/5] h4 UNREACHABLE: unreachable at task 'Ping': Failed to connect to the host via ssh"
    )


def test_csv_round_trips(summary: dict[str, Any], samples: dict[str, dict[str, Any]]) -> None:
    parsed = list(csv.DictReader(io.StringIO(render_csv(summary))))
    assert tuple(parsed[0]) == CSV_COLUMNS
    by_host = {r["host"]: r for r in parsed}
    assert sorted(by_host) == ["h1", "h2", "h3", "h4", "h5"]
    h1 = by_host["h1"]
    assert h1["verdict"] == "VALID" and h1["run_id"] == hetero_samples.SAMPLE_RUN_ID
    assert float(h1["metric_value"]) == samples["valid"]["main"]["loadgen"]["metric"]["value"]
    assert h1["backgrounds"] == "synth-conv-1d synth-mlp-large" and h1["coverage"] == "2/2"
    iso = samples["isolated"]["main"]["loadgen"]["metric"]["value"]
    het = samples["valid"]["main"]["loadgen"]["metric"]["value"]
    assert float(h1["isolated_value"]) == iso
    assert float(h1["interference_pct"]) == pytest.approx((iso - het) / iso * 100, abs=1e-3)
    assert by_host["h2"]["reasons"] == "; ".join(samples["invalid"]["reasons"])
    assert by_host["h3"]["metric_name"] == "completed_samples_per_second"
    assert by_host["h4"]["verdict"] == "UNREACHABLE" and by_host["h4"]["metric_value"] == ""


def test_junit_one_testcase_per_host_and_run(
    summary: dict[str, Any], samples: dict[str, dict[str, Any]]
) -> None:
    root = ET.fromstring(render_junit(summary))
    (suite,) = root.findall("testsuite")
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == ("5", "2", "1", "0")
    cases = {c.get("classname", ""): c for c in suite.findall("testcase")}
    assert sorted(cases) == [
        "hetero_run.h1",
        "hetero_run.h2",
        "hetero_run.h3",
        "hetero_run.h4",
        "hetero_run.h5",
    ]
    assert (
        cases["hetero_run.h1"].find("failure") is None
        and cases["hetero_run.h1"].find("error") is None
    )
    assert cases["hetero_run.h1"].get("name") == "h1 synth-mlp-small/Offline"
    failure = cases["hetero_run.h2"].find("failure")
    assert failure is not None and failure.get("type") == "INVALID"
    assert failure.get("message") == "INVALID: " + "; ".join(samples["invalid"]["reasons"])
    assert failure.text == "\n".join("- " + r for r in samples["invalid"]["reasons"])
    error = cases["hetero_run.h4"].find("error")
    assert (
        error is not None
        and error.get("type") == "UNREACHABLE"
        and "Failed to connect" in error.get("message", "")
    )
    props = {p.get("name"): p.get("value") for p in cases["hetero_run.h1"].iter("property")}
    assert props["verdict"] == "VALID" and props["coverage"] == "2/2"
    timeline = _rows(summary)["h1"]["timeline"]
    assert float(cases["hetero_run.h1"].get("time", "0")) == pytest.approx(
        timeline["t1"] - timeline["t0"], abs=1e-3
    )


def test_markdown(summary: dict[str, Any], samples: dict[str, dict[str, Any]]) -> None:
    md = render_markdown(summary)
    runs = md.split("## Runs\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert runs[0].startswith("| host | gpu | main benchmark | scenario | metric | verdict |")
    assert [line.split("|")[1].strip() for line in runs[2:]] == ["h1", "h2", "h3", "h4", "h5"]
    assert [line.split("|")[6].strip() for line in runs[2:]] == [
        "VALID",
        "INVALID",
        "VALID",
        "UNREACHABLE",
        "INVALID",
    ]
    for reason in samples["invalid"]["reasons"]:
        assert "- " + reason in md
    assert "## Background coverage of the main benchmark's timed phase" in md
    assert re.search(r"\| h2 \| bg-1 \| synth-conv-1d \| 1g.10gb \| \*\*NO\*\* \| ended ", md)
    assert "## Isolated vs heterogeneous" in md
    pct = _rows(summary)["h1"]["interference"]["interference_pct"]
    assert "%.1f%% %s" % (abs(pct), "slower" if pct >= 0 else "faster") in md


def test_json_is_the_summary(summary: dict[str, Any]) -> None:
    assert json.loads(render_json(summary)) == json.loads(json.dumps(summary))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def test_html_is_self_contained_with_a_timeline_per_run(
    summary: dict[str, Any], samples: dict[str, dict[str, Any]]
) -> None:
    page = render_html(summary)
    parser = _Tags()
    parser.feed(page)
    tags = parser.tags
    # nothing to fetch: no external scripts, styles, images or links
    assert not [
        t for t, a in tags if t in ("link", "img", "iframe") or (t == "script" and "src" in a)
    ]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    csp = [a for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]
    svgs = [a for t, a in tags if t == "svg" and "timeline" in a.get("class", "")]
    assert sorted(a["data-host"] for a in svgs) == [
        "h1",
        "h2",
        "h3",
        "h5",
    ]  # h4: unreachable, no timeline
    lanes = [a for t, a in tags if t == "g" and "lane" in a.get("class", "").split()]
    assert len(lanes) == sum(1 + len(samples[n]["backgrounds"]) for n in HOSTS.values())
    windows = [
        a for t, a in tags if t == "rect" and a.get("class") == "main-window" and "data-begin" in a
    ]
    # every main has a timed window: LoadGen's power window, or for the crashed main (no LoadGen
    # log at all) the runner's from its readiness marker to its exit
    assert [(float(w["data-begin"]), float(w["data-end"])) for w in windows] == [
        (samples[n]["main"]["timed_window"]["begin"], samples[n]["main"]["timed_window"]["end"])
        for n in HOSTS.values()
    ]
    log = read_mllog(Path(samples["valid"]["main"]["fetched_dir"]) / "mlperf_log_detail.txt")
    assert (float(windows[0]["data-begin"]), float(windows[0]["data-end"])) == (
        pytest.approx(power_time(log["power_begin"])),
        pytest.approx(power_time(log["power_end"])),
    )
    crash = samples["crash"]["main"]
    assert (float(windows[3]["data-begin"]), float(windows[3]["data-end"])) == (
        crash["ready_at"],
        crash["ended_at"],
    )
    phases = {a["data-phase"] for t, a in tags if t == "rect" and "data-phase" in a}
    assert phases == {"launch", "ready", "timed", "end"}
    rows = [a for t, a in tags if t == "tr" and "data-verdict" in a and "data-run" in a]
    assert [(a["data-host"], a["data-verdict"]) for a in rows] == [
        ("h1", "VALID"),
        ("h2", "INVALID"),
        ("h3", "VALID"),
        ("h4", "UNREACHABLE"),
        ("h5", "INVALID"),
    ]
    uncovered = [a for t, a in tags if t == "g" and a.get("data-covered") == "false"]
    assert [a["data-lane"] for a in uncovered] == ["bg-1"]  # h2's background ended too early
    assert "No timeline: unreachable." in page


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_reports_are_the_same_in_every_time_zone_and_say_utc(
    summary: dict[str, Any], zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered under UTC and under ``zone``, every report is byte for byte the same."""
    renderers = (render_html, render_markdown, render_csv, render_table, render_junit)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    in_utc = [render(summary) for render in renderers]
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        elsewhere = [render(summary) for render in renderers]
    finally:
        monkeypatch.undo()
        time.tzset()
    assert elsewhere == in_utc
    html = in_utc[0]
    # 1795325000 is 2026-11-22 05:23:20 UTC (and 2026-11-22 00:23:20 in New York)
    assert "generated 2026-11-22 05:23:20 UTC (all times in this report are UTC)" in html
