"""The hetero_report callback over the SSH lab with the REAL heteromig.fleet.hetero_run.

playbooks/hetero_run.yml (gpu_facts, the fleet table, hetero_run) runs on four lab hosts with
simulated H100s cut into three 1g.10gb MIG slices and the fake_loadgen harness (real LoadGen,
tiny SUT; tests/fixtures/hetero):

- h1: a VALID run; before it, an isolated run of the same benchmark on h1 (no backgrounds) whose
  results.jsonl is the baseline of the interference comparison;
- h2: the main benchmark crashes mid-run: the run is INVALID;
- h3: a VALID run with the "edge" background set;
- h4: down: UNREACHABLE at the first task, long before hetero_run.

The HTML report is then opened in headless Chromium (Debian package ``chromium``, required):
its DOM is checked against the results the hosts returned, and a screenshot must show the page.
"""

from __future__ import annotations

import csv
import json
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hetero_report_support import (
    FAKE_HARNESS,
    HETERO_RUN_PLAYBOOK,
    browse,
    colours,
    decode_png,
    hetero_records,
    make_mig_slices,
    parse_dom,
    real_run_hostvars,
    shown_value,
)

from lab import HostSpec, LabRun, SshLab

pytestmark = pytest.mark.integration

TASK = "Run the main benchmark on one MIG slice, backgrounds on every other slice"
REPO_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def unreachable_tasks(run: Any) -> dict[str, str]:
    """Host -> the task at which it became unreachable (the first task that touched it)."""
    found: dict[str, str] = {}
    for result in run.task_results:
        if result.outcome == "unreachable":
            found.setdefault(result.host, result.task)
    return found


@dataclass
class RealRun:
    run: LabRun
    report: Path
    results: dict[str, dict[str, Any]]  # host -> the hetero_run result the host returned
    isolated: dict[str, Any]
    workdir: Path


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRun]:
    work = tmp_path_factory.mktemp("hetero-report-real")
    results, reports = work / "results", work / "reports"
    crash = {
        "fake_bench": str(FAKE_HARNESS / "fake_bench.py"),
        "fake": {"main": ["--crash-after", "0.3"]},
    }
    specs = [
        HostSpec("h1", real_run_hostvars(results)),
        HostSpec("h2", real_run_hostvars(results, heteromig_hetero_harness_vars=crash)),
        HostSpec("h3", real_run_hostvars(results, heteromig_hetero_background_benchmarks="edge")),
        HostSpec("h4", real_run_hostvars(results)),
    ]
    with SshLab(specs, work / "lab") as lab:
        for host in ("h1", "h2", "h3"):
            make_mig_slices(lab.hostdir(host) / "nvml-sim.json", 3)
        inventory = lab.labdir / "gpu_hosts.yml"  # the group the collection's playbooks target
        hosts = {name: lab.host_vars(name) for name in lab.names}
        inventory.write_text(yaml.safe_dump({"gpu_hosts": {"hosts": hosts}}, sort_keys=False))
        lab.inventory = inventory
        env = {"HETEROMIG_REPORT_DIR": str(reports)}
        isolated_run = lab.run_playbook(
            HETERO_RUN_PLAYBOOK,
            extravars={"heteromig_hetero_background_benchmarks": "none"},
            limit="h1",
            envvars=env,
            timeout=300,
        )
        isolated = isolated_run.result(TASK, "h1").res
        assert isolated["backgrounds"] == [] and isolated["verdict"] == "VALID", (
            isolated_run.stdout[-3000:]
        )
        baseline = reports / isolated["run_id"] / "results.jsonl"
        lab.stop_host("h4")
        run = lab.run_playbook(
            HETERO_RUN_PLAYBOOK,
            envvars={**env, "HETEROMIG_REPORT_BASELINES": str(baseline)},
            timeout=300,
        )
        got = {h: run.result(TASK, h).res for h in ("h1", "h2", "h3")}
        yield RealRun(run, reports / got["h1"]["run_id"], got, isolated, work)


def test_the_lab_ran_what_the_test_expects(real: RealRun) -> None:
    assert {h: r["verdict"] for h, r in real.results.items()} == {
        "h1": "VALID",
        "h2": "INVALID",
        "h3": "VALID",
    }
    assert len({r["run_id"] for r in real.results.values()}) == 1
    assert set(unreachable_tasks(real.run)) == {"h4"}
    assert real.results["h2"]["main"]["exit_code"] not in (0, None)
    assert [b["benchmark"] for b in real.results["h3"]["backgrounds"]] == ["fake-b", "fake-b"]


def test_reports_hold_every_host(real: RealRun) -> None:
    assert sorted(p.name for p in real.report.iterdir()) == [
        "junit.xml",
        "report.html",
        "results.jsonl",
        "summary.csv",
        "summary.json",
        "summary.md",
    ]
    records = hetero_records(real.report / "results.jsonl")
    assert sorted(r["host"] for r in records) == ["h1", "h2", "h3"]
    for rec in records:
        assert rec["action"] == "heteromig.fleet.hetero_run" and rec["status"] == "ok"
        returned = real.results[rec["host"]]
        assert {
            k: rec["result"][k]
            for k in ("run_id", "verdict", "reasons", "main", "backgrounds", "timeline")
        } == {
            k: returned[k]
            for k in ("run_id", "verdict", "reasons", "main", "backgrounds", "timeline")
        }
    summary = json.loads((real.report / "summary.json").read_text())
    rows = {r["host"]: r for r in summary["rows"]}
    assert {h: r["verdict"] for h, r in rows.items()} == {
        "h1": "VALID",
        "h2": "INVALID",
        "h3": "VALID",
        "h4": "UNREACHABLE",
    }
    assert rows["h2"]["reasons"] == real.results["h2"]["reasons"] and rows["h2"]["reasons"]
    first = unreachable_tasks(real.run)["h4"]
    # the report names the task with its role prefix ("role : task")
    reason = rows["h4"]["reasons"][0]
    assert reason.startswith("unreachable at task '") and first + "':" in reason, reason
    assert rows["h1"]["coverage"] == "2/2" and rows["h3"]["coverage"] == "2/2"
    # h1 and h3 ran the isolated run's benchmark on the same slice profile of the same GPU model
    # (h2's INVALID run is not compared); both refer to h1's isolated run from the baseline
    pairs = {p["host"]: p for p in summary["comparisons"]}
    assert sorted(pairs) == ["h1", "h3"]
    iso = real.isolated["main"]["loadgen"]["metric"]["value"]
    for host, pair in pairs.items():
        het = real.results[host]["main"]["loadgen"]["metric"]["value"]
        assert (pair["isolated_value"], pair["hetero_value"], pair["isolated_host"]) == (
            iso,
            het,
            "h1",
        )
        assert pair["isolated_run_id"] == real.isolated["run_id"]
        assert pair["isolated_source"] == "baseline"
        assert pair["interference_pct"] == pytest.approx((iso - het) / iso * 100)
    with (real.report / "summary.csv").open(newline="") as handle:
        assert [(r["host"], r["verdict"]) for r in csv.DictReader(handle)] == [
            ("h1", "VALID"),
            ("h2", "INVALID"),
            ("h3", "VALID"),
            ("h4", "UNREACHABLE"),
        ]
    suite = ET.parse(real.report / "junit.xml").getroot().find("testsuite")
    assert suite is not None and (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
    ) == ("4", "1", "1")
    failure = suite.find("testcase[@classname='hetero_run.h2']/failure")
    assert failure is not None and failure.get("message") == "INVALID: " + "; ".join(
        real.results["h2"]["reasons"]
    )


def test_output_lines_and_table(real: RealRun) -> None:
    out = real.run.stdout
    lines = out.splitlines()
    progress = [line for line in lines if line.startswith("hetero_report: [")]
    assert sorted(line.split()[2:4] for line in progress) == [
        ["h1", "VALID,"],
        ["h2", "INVALID,"],
        ["h3", "VALID,"],
    ]
    # the action's own verdict line comes first, then the stdout callback's, then ours
    h2_action = next(
        i for i, line in enumerate(lines) if line.startswith("hetero_run [h2] INVALID")
    )
    h2_ours = next(
        i for i, line in enumerate(lines) if line.startswith("hetero_report: [") and " h2 " in line
    )
    assert h2_action < h2_ours
    table = out[out.index("HETERO RUN REPORT [%s]" % real.results["h1"]["run_id"]) :].splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("host "))
    rows = {line.split()[0]: line for line in table[header + 2 : header + 6]}
    assert sorted(rows) == ["h1", "h2", "h3", "h4"]
    assert "fake-a" in rows["h1"] and "VALID" in rows["h1"] and "vs isolated" in rows["h1"]
    assert "INVALID" in rows["h2"] and real.results["h2"]["reasons"][0][:40] in rows["h2"]
    assert "UNREACHABLE" in rows["h4"]
    assert table[header + 6] == "4 run(s): VALID=2 INVALID=1 UNREACHABLE=1"
    assert out.index("PLAY RECAP") < out.index("HETERO RUN REPORT")


def test_html_report_in_chromium(real: RealRun) -> None:
    dom = parse_dom(browse(real.report / "report.html", real.workdir, "--dump-dom").stdout)
    (body,) = dom.find_all("body")
    assert body.attrs.get("data-js") == "ready"  # the inline script ran: nothing to fetch
    runs = [tr for tr in dom.find_all("tr") if "data-run" in tr.attrs]
    assert [(r.attrs["data-host"], r.attrs["data-verdict"]) for r in runs] == [
        ("h1", "VALID"),
        ("h2", "INVALID"),
        ("h3", "VALID"),
        ("h4", "UNREACHABLE"),
    ]
    for host, res in real.results.items():
        (svg,) = dom.find_all("svg", "timeline", data_host=host)
        lanes = svg.find_all("g", "lane")
        # one lane per slice, the main benchmark's first
        assert [g.attrs["data-lane"] for g in lanes] == ["main"] + [
            b["name"] for b in res["backgrounds"]
        ]
        uuids = [res["main"]["slice"]["uuid"]] + [b["slice"]["uuid"] for b in res["backgrounds"]]
        assert len(set(uuids)) == len(lanes)
        assert [g.attrs["data-slice"].split()[0] for g in lanes] == ["1g.10gb"] * len(lanes)
        for lane, bench in zip(lanes, [res["main"], *res["backgrounds"]], strict=True):
            phases = lane.find_all("rect", "phase")
            assert phases and float(phases[0].attrs["data-begin"]) == bench["launched_at"]
            assert phases[0].attrs["data-phase"] == "launch"
            assert {p.attrs["data-phase"] for p in phases} <= {"launch", "ready", "timed", "end"}
        window = res["main"]["timed_window"]
        if window:  # the crashed main of h2 never reached its power_end
            timed = lanes[0].find_all("rect", "phase", data_phase="timed")
            assert [(float(r.attrs["data-begin"]), float(r.attrs["data-end"])) for r in timed] == [
                (window["begin"], window["end"])
            ]
            (band,) = [r for r in svg.find_all("rect", "main-window") if "data-begin" in r.attrs]
            assert (float(band.attrs["data-begin"]), float(band.attrs["data-end"])) == (
                window["begin"],
                window["end"],
            )
    # values shown in h1's card: times relative to the first launch, the result
    (card,) = dom.find_all("article", data_host="h1")
    h1 = real.results["h1"]
    t0 = min(b["launched_at"] for b in [h1["main"], *h1["backgrounds"]])
    (main_row,) = card.find_all("tr", data_lane="main")
    cells = [td.text() for td in main_row.find_all("td")]
    assert cells[5] == "%.2f s" % (h1["main"]["launched_at"] - t0)
    assert cells[7] == "%.2f s" % (h1["main"]["timed_window"]["begin"] - t0)
    assert cells[8] == "%.2f s" % (h1["main"]["timed_window"]["end"] - t0)
    validity, figure = cells[11].split(" ", 1)
    assert validity == "VALID"
    assert shown_value(figure) == pytest.approx(h1["main"]["loadgen"]["metric"]["value"], abs=0.051)
    for bg in h1["backgrounds"]:
        (row,) = card.find_all("tr", data_lane=bg["name"])
        assert row.find_all("td")[-1].text() == "yes"
    (card2,) = dom.find_all("article", data_host="h2")
    assert [li.text() for li in card2.find_all("li")] == real.results["h2"]["reasons"]
    (card4,) = dom.find_all("article", data_host="h4")
    assert "No timeline: unreachable." in card4.text()
    (table,) = dom.find_all("table", id="comparisons")
    (pair,) = table.find_all("tr", data_host="h1")
    cells = [td.text() for td in pair.find_all("td")]
    assert shown_value(cells[4]) == pytest.approx(
        real.isolated["main"]["loadgen"]["metric"]["value"], abs=0.051
    )
    assert shown_value(cells[5]) == pytest.approx(
        h1["main"]["loadgen"]["metric"]["value"], abs=0.051
    )


def test_html_screenshot_shows_the_report(real: RealRun) -> None:
    shot = real.workdir / "report.png"
    browse(
        real.report / "report.html",
        real.workdir,
        "--window-size=1400,1300",
        "--screenshot=%s" % shot,
    )
    width, height, rows, bpp = decode_png(shot)
    assert (width, height) == (1400, 1300)
    counts = colours(rows, bpp)
    assert max(counts.values()) < 0.95 * width * height, "the page is (almost) one colour"
    assert len(counts) > 50
    # the report's own colours are on screen: the VALID badge and the phase bars
    expected = {
        "VALID badge": (0x1A, 0x7F, 0x37),
        "launch phase": (0x8C, 0x95, 0x9F),
        "timed phase": (0x2F, 0x81, 0xF7),
    }
    for name, rgb in expected.items():
        assert counts.get(rgb, 0) > 200, "%s colour missing from the screenshot %s" % (name, shot)


def test_gpu_activity_samples_and_lanes(real: RealRun) -> None:
    """Every run's result carries the NVML samples of its GPU instances (GPM on the simulated
    H100), and the HTML draws one activity lane per instance under the host's timeline."""
    facts = json.loads((REPO_FIXTURES / "real-h100" / "gpu_facts.json").read_text())
    (h100,) = facts["heteromig_gpus"]
    memory_1g = {p["name"]: p["memory_mib"] for p in h100["profiles"]}["1g.10gb"]
    dom = parse_dom(browse(real.report / "report.html", real.workdir, "--dump-dom").stdout)
    for host, res in real.results.items():
        activity = res["gpu_activity"]
        assert (activity["state"], activity["error"], activity["backend"]) == (
            "sampled",
            None,
            "sim",
        )
        benches = [res["main"], *res["backgrounds"]]
        # one series per GPU instance, named after the benchmark that ran on it
        assert {s["key"]: s["benchmarks"] for s in activity["series"]} == {
            "gpu0-gi%d" % b["slice"]["gpu_instance_id"]: [b["name"]] for b in benches
        }
        first_launch = min(b["launched_at"] for b in benches)
        last_end = max(b["ended_at"] for b in benches)
        for series in activity["series"]:
            assert series["util_supported"] is True and series["errors"] == {}
            assert series["util_metric"] == "GPM GRAPHICS_UTIL"
            assert series["memory_total_mib"] == memory_1g  # the real H100's 1g.10gb
            t = series["t"]
            assert len(t) >= 3 and t == sorted(t)
            assert first_launch - 1 <= t[0] and t[-1] <= last_end + 3
            assert series["util_pct"][0] is None  # the first GPM sample opens the interval
            assert all(0 <= u <= 100 for u in series["util_pct"][1:])
        window = res["main"]["timed_window"]
        during = {d["key"]: d for d in activity["during_main"]}
        main_key = "gpu0-gi%d" % res["main"]["slice"]["gpu_instance_id"]
        if window:
            assert activity["main_window"] == window
            main_series = next(s for s in activity["series"] if s["key"] == main_key)
            inside = [
                u
                for ts, u in zip(main_series["t"], main_series["util_pct"], strict=True)
                if window["begin"] <= ts <= window["end"] and u is not None
            ]
            stats = during[main_key]["util_pct"]
            if inside:
                assert stats["median"] == statistics.median(inside)
                assert stats["samples"] == len(inside)
            else:
                assert stats is None
        (svg,) = dom.find_all("svg", "timeline", data_host=host)
        t0, t1 = float(svg.attrs["data-t0"]), float(svg.attrs["data-t1"])
        lanes = svg.find_all("g", "activity-lane")
        assert [g.attrs["data-series"] for g in lanes] == [s["key"] for s in activity["series"]]
        for lane, series in zip(lanes, activity["series"], strict=True):
            drawn = [
                u
                for ts, u in zip(series["t"], series["util_pct"], strict=True)
                if t0 <= ts <= t1 and u is not None
            ]
            paths = lane.find_all("path", "activity-util")
            assert [int(p.attrs["data-points"]) for p in paths] == ([len(drawn)] if drawn else [])
            assert lane.attrs["data-util-supported"] == "true"
        # this run's card (a skipped hetero_run task of the same host has a card of its own)
        (card,) = dom.find_all("article", data_host=host, data_verdict=res["verdict"])
        sentences = [p.text() for p in card.find_all("p", "activity-fact")]
        assert len(sentences) == len(activity["series"])
        if window and during[main_key]["util_pct"]:
            median = during[main_key]["util_pct"]["median"]
            assert any(
                s.startswith(
                    "GPU 0, GPU instance %s (1g.10gb) (main): median %.0f%% busy"
                    % (res["main"]["slice"]["gpu_instance_id"], median)
                )
                for s in sentences
            ), sentences
