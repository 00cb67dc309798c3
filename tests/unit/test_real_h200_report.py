"""The report of a real hetero run on an H200 draws the GPU activity lanes with the captured values.

Capture: tests/fixtures/real-h200/hetero-run-2026-12-03/ (issue 18; docs/hardware.md), two VALID
runs of ``playbooks/hetero_run.yml -i tests/hardware/shared-gpu.yml`` on one NVIDIA H200 with
MIG disabled, driver 580.159.04, real NVML: ``main-alone`` (synth-resnet50, no backgrounds) and
``main-with-backgrounds`` (synth-resnet50 under synth-bert-large and synth-resnet50). Each folder
holds the runner's ``result.json`` as fetched from the host, and the hetero_report callback's
``results.jsonl``, ``report.html`` and ``summary.md`` as written on that machine.

The report is rebuilt here from the captured ``results.jsonl`` the way the callback builds it;
every expected value is computed in this file from the runner's raw samples in ``result.json``
(``statistics.median`` over the samples inside the main's timed window, the SVG geometry read
back into percent), never from the report code's own statistics.
"""

from __future__ import annotations

import json
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_aggregate import (
    build_summary,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_html import render_html
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_records import read_jsonl

CAPTURE = Path(__file__).resolve().parent.parent / "fixtures/real-h200/hetero-run-2026-12-03"
RUNS = ("main-alone", "main-with-backgrounds")
LANE_H = 40.0  # px; the lane's height, read back from its background rect below


class _Svg(HTMLParser):
    """The host timelines' <svg> attributes and the activity lanes' elements."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[dict[str, str]] = []
        self.lanes: list[dict[str, Any]] = []
        self._lane: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg" and "data-t0" in a:
            self.svgs.append(a)
        if tag == "g" and a.get("class") == "activity-lane":
            self._lane = {"attrs": a, "children": []}
            self.lanes.append(self._lane)
        elif self._lane is not None and tag in ("rect", "path", "polyline", "text"):
            self._lane["children"].append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self._lane = None


def _parse(html_text: str) -> _Svg:
    parser = _Svg()
    parser.feed(html_text)
    return parser


def _capture(run: str) -> dict[str, Any]:
    return json.loads((CAPTURE / run / "result.json").read_text())


def _rebuilt_html(run: str) -> str:
    records = read_jsonl(str(CAPTURE / run / "results.jsonl"))
    return render_html(build_summary(records, generated_at=0.0))


def _main_window_util(capture: dict[str, Any]) -> list[float]:
    """The captured utilisation samples inside the main's timed window (the oracle's input)."""
    activity = capture["gpu_activity"]
    (series,) = activity["series"]
    begin, end = activity["main_window"]["begin"], activity["main_window"]["end"]
    return [
        float(u)
        for t, u in zip(series["t"], series["util_pct"], strict=True)
        if u is not None and begin <= t <= end
    ]


def _child(lane: dict[str, Any], tag: str, cls: str) -> dict[str, str]:
    found = [a for t, a in lane["children"] if t == tag and a.get("class") == cls]
    assert len(found) == 1, (tag, cls, lane["children"])
    return found[0]


def test_capture_is_a_valid_real_nvml_run() -> None:
    """The fixture is what the brief asks for: VALID, real NVML samples of the whole GPU."""
    alone, loaded = _capture("main-alone"), _capture("main-with-backgrounds")
    for capture in (alone, loaded):
        assert capture["verdict"] == "VALID" and capture["shared_gpu"] is True
        activity = capture["gpu_activity"]
        assert (activity["state"], activity["backend"]) == ("sampled", "nvml")
        (series,) = activity["series"]
        assert series["scope"] == "gpu" and series["util_supported"] is True
        assert series["util_metric"] == "nvmlDeviceGetUtilizationRates.gpu"
        assert series["memory_total_mib"] == 143771  # the H200's memory as NVML reports it
    assert alone["backgrounds"] == [] and len(loaded["backgrounds"]) == 2
    # the callback's record carries the same samples the runner wrote on the host
    for run in RUNS:
        (record,) = read_jsonl(str(CAPTURE / run / "results.jsonl"))
        assert record["result"]["gpu_activity"] == _capture(run)["gpu_activity"]


@pytest.mark.parametrize("run", RUNS)
def test_rebuilt_report_draws_the_captured_samples(run: str) -> None:
    capture = _capture(run)
    (series,) = capture["gpu_activity"]["series"]
    html_text = _rebuilt_html(run)
    svg = _parse(html_text)
    assert len(svg.svgs) == 1 and len(svg.lanes) == 1
    lane = svg.lanes[0]
    attrs = lane["attrs"]
    inside = _main_window_util(capture)
    assert attrs["data-series"] == "gpu0" and attrs["data-scope"] == "gpu"
    assert attrs["data-benchmarks"] == ",".join(series["benchmarks"])
    assert attrs["data-util-supported"] == "true"
    assert int(attrs["data-util-samples-main"]) == len(inside)
    assert float(attrs["data-util-median-main"]) == pytest.approx(statistics.median(inside))

    # the filled step chart: every captured sample on the timeline's time axis, in order, at
    # its captured height; the axis spans the captured timeline
    t0, t1 = float(svg.svgs[0]["data-t0"]), float(svg.svgs[0]["data-t1"])
    events = [e["t"] for e in capture["timeline"]]
    assert min(events) <= t0 < t1 <= max(events)
    drawn = [
        (t, float(u))
        for t, u in zip(series["t"], series["util_pct"], strict=True)
        if u is not None and t0 <= t <= t1
    ]
    assert len(drawn) >= len(series["t"]) - 2  # at most the edge samples fall off the axis
    rect = _child(lane, "rect", "activity-bg")
    top, height = float(rect["y"]), float(rect["height"])
    assert height == LANE_H
    path = _child(lane, "path", "activity-util")
    assert int(path["data-points"]) == len(drawn)
    points = [(float(x), float(y)) for x, y in re.findall(r"L(-?[\d.]+) (-?[\d.]+)", path["d"])][
        :-1
    ]  # the last L closes the area back to the lane's foot
    assert len(points) == len(drawn)
    xs = [point[0] for point in points]
    assert xs == sorted(xs)
    percents = [(top + height - point[1]) / height * 100.0 for point in points]
    captured = [sample[1] for sample in drawn]
    assert percents == pytest.approx(captured, abs=0.005 / height * 100 * 1.01)

    # memory used, as a line scaled to the GPU's memory
    mem = _child(lane, "polyline", "activity-mem")
    mem_drawn = [
        float(m)
        for t, m in zip(series["t"], series["mem_used_mib"], strict=True)
        if m is not None and t0 <= t <= t1
    ]
    ys = [float(p.split(",")[1]) for p in mem["points"].split()]
    assert len(ys) == len(mem_drawn) == int(mem["data-points"])
    total = float(series["memory_total_mib"])
    # the SVG keeps 2 decimals of a pixel: 0.005 px of a 40 px lane is about 18 MiB of 143,771
    resolution = total * 0.005 / height
    drawn_mib = [(top + height - y) / height * total for y in ys]
    assert drawn_mib == pytest.approx(mem_drawn, abs=resolution * 1.01)

    # the sentence under the timeline states the main window's median from the capture
    sentence = "median %.0f%% busy during the main&#x27;s timed window" % statistics.median(inside)
    assert sentence in html_text
    assert "VALID" in html_text


@pytest.mark.parametrize("run", RUNS)
def test_report_written_on_the_h200_shows_the_same_lanes(run: str) -> None:
    """The callback's own report.html from the device run has the lanes the rebuild draws."""
    written = _parse((CAPTURE / run / "report.html").read_text())
    rebuilt = _parse(_rebuilt_html(run))
    assert [lane["attrs"] for lane in written.lanes] == [lane["attrs"] for lane in rebuilt.lanes]
    for lane_w, lane_r in zip(written.lanes, rebuilt.lanes, strict=True):
        for tag, cls in (("path", "activity-util"), ("polyline", "activity-mem")):
            assert _child(lane_w, tag, cls) == _child(lane_r, tag, cls)


def test_main_alone_busy_and_backgrounds_fill_the_gpu() -> None:
    """Issue 18's point, from the runner's own samples: the main alone keeps the H200 at least
    90 % busy in its timed window, and with the two backgrounds every sample there reads 100 %."""
    alone = _main_window_util(_capture("main-alone"))
    loaded = _main_window_util(_capture("main-with-backgrounds"))
    assert len(alone) >= 10 and statistics.median(alone) >= 90.0
    assert len(loaded) >= 10 and min(loaded) == 100.0
