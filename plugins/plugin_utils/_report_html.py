# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Self-contained HTML report of a summary (see _report_aggregate.build_summary).

One file, no network: inline CSS, inline JavaScript (filtering and sorting only; the report is
complete without it) and inline SVG. A Content-Security-Policy forbids every external load.

Per host and run: verdict, reasons, GPU, and a timeline with one lane per slice (the main
benchmark first), the phases launch / ready / timed / end as coloured bars, exit/kill markers,
and the main benchmark's timed window as a highlighted band across every lane, so one sees at a
glance whether the backgrounds covered it. Under the slices, one GPU activity lane per GPU or
MIG GPU instance the run used (NVML utilisation and memory samples, _report_activity), with
the median utilisation during the main's timed window stated above the timeline. Elements carry ``data-*`` attributes (absolute epoch
seconds, phase names, verdicts) for tools and tests.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_activity import (
    activity_facts,
    render_activity_lanes,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_aggregate import (
    PHASES,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_render import (
    counts_line,
    table_cells,
)

LABEL_W = 300  # px left of the plot: lane labels
PLOT_W = 900
LANE_H = 30
LANE_GAP = 8
TOP = 28  # axis labels
BOTTOM = 24  # legend

_CSS = """
:root { --ok:#1a7f37; --bad:#cf222e; --err:#8250df; --skip:#6e7781; --ink:#1f2328; --mute:#656d76;
  --line:#d0d7de; --bg:#ffffff; --band:#fff3b0; --bandline:#d4a72c;
  --launch:#8c959f; --ready:#e3b341; --timed:#2f81f7; --timed-main:#1a7f37; --end:#afb8c1; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  background: var(--bg); margin: 0 24px 48px; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 17px; margin: 0 0 6px; }
.meta { color: var(--mute); margin: 0 0 12px; }
.banner { background: #fff8c5; border: 1px solid var(--bandline); padding: 8px 12px; margin: 8px 0; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; cursor: pointer; user-select: none; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-weight: 600;
  font-size: 12px; letter-spacing: .02em; }
.v-VALID { background: var(--ok); } .v-INVALID, .v-FAILED { background: var(--bad); }
.v-UNREACHABLE, .v-NO_RESULT { background: var(--err); } .v-DRY_RUN, .v-SKIPPED { background: var(--skip); }
.controls button { margin-right: 6px; padding: 3px 10px; border: 1px solid var(--line); background: #f6f8fa;
  border-radius: 6px; cursor: pointer; } .controls button.on { background: var(--ink); color: #fff; }
article.host-run { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin: 14px 0; }
article.host-run.hidden, tr.hidden { display: none; }
ul.reasons { margin: 4px 0 8px; padding-left: 20px; color: var(--bad); }
svg.timeline { display: block; margin: 8px 0; background: #fff; }
svg .lane-bg { fill: #f6f8fa; } svg .lane-label { font-size: 12px; fill: var(--ink); font-weight: 600; }
svg .lane-slice { font-size: 10.5px; fill: var(--mute); }
svg .axis { font-size: 11px; fill: var(--mute); } svg .tick { stroke: var(--line); }
svg .phase-launch { fill: var(--launch); } svg .phase-ready { fill: var(--ready); }
svg .phase-timed { fill: var(--timed); } svg .lane-main .phase-timed { fill: var(--timed-main); }
svg .phase-end { fill: var(--end); }
svg .main-window { fill: var(--band); fill-opacity: .55; stroke: var(--bandline); stroke-width: 1.5;
  stroke-dasharray: 4 3; }
svg .marker { stroke: var(--bad); stroke-width: 2; } svg .marker-exit { stroke: var(--ink); }
svg .uncovered .lane-bg { fill: #ffebe9; }
svg .legend { font-size: 11px; fill: var(--ink); }
svg .activity-bg { fill: #f6f8fa; } svg .activity-util { fill: var(--timed); fill-opacity: .45;
  stroke: var(--timed); stroke-width: 1; } svg .activity-mem { fill: none; stroke: var(--bad);
  stroke-width: 1.2; } svg .activity-why { font-size: 11px; fill: var(--mute); }
div.activity p { margin: 2px 0; } div.activity { margin: 4px 0 8px; }
.cov-no { color: var(--bad); font-weight: 600; } .cov-yes { color: var(--ok); }
.small { color: var(--mute); font-size: 12px; }
"""

_JS = """
(function () {
  var body = document.body;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll('#runs tbody tr')); }
  function arts() { return Array.prototype.slice.call(document.querySelectorAll('article.host-run')); }
  function show(mode) {
    var keep = function (v) { return mode === 'all' || (v !== 'VALID' && v !== 'DRY_RUN'); };
    rows().forEach(function (r) { r.classList.toggle('hidden', !keep(r.dataset.verdict)); });
    arts().forEach(function (a) { a.classList.toggle('hidden', !keep(a.dataset.verdict)); });
    document.querySelectorAll('.controls button').forEach(function (b) {
      b.classList.toggle('on', b.dataset.mode === mode); });
    body.dataset.filter = mode;
  }
  document.querySelectorAll('.controls button').forEach(function (b) {
    b.addEventListener('click', function () { show(b.dataset.mode); }); });
  document.querySelectorAll('#runs th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var tbody = document.querySelector('#runs tbody');
      var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
      rows().sort(function (a, b) {
        var x = a.children[col].textContent, y = b.children[col].textContent;
        return asc ? x.localeCompare(y, undefined, {numeric: true}) : y.localeCompare(x, undefined, {numeric: true});
      }).forEach(function (r) { tbody.appendChild(r); });
    });
  });
  var bad = rows().filter(function (r) { return r.dataset.verdict !== 'VALID' && r.dataset.verdict !== 'DRY_RUN'; });
  var note = document.getElementById('js-note');
  if (note) { note.textContent = rows().length + ' run(s), ' + bad.length + ' not VALID'; }
  show('all');
  body.dataset.js = 'ready';
})();
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _rel(t: float | None, t0: float | None) -> str:
    if t is None or t0 is None:
        return "-"
    return "%.2f s" % (t - t0)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _badge(verdict: str) -> str:
    return '<span class="badge v-%s">%s</span>' % (_e(verdict), _e(verdict))


def _ticks(span: float) -> float:
    """A tick step giving 5..10 ticks over ``span`` seconds."""
    step = 0.001
    for _attempt in range(30):
        for mult in (1, 2, 5):
            if span / (step * mult) <= 10:
                return step * mult
        step *= 10
    return step


def render_timeline(row: Mapping[str, Any]) -> str:
    """The SVG timeline of one row ('' when it has none)."""
    tl = row.get("timeline") or {}
    lanes: Sequence[Mapping[str, Any]] = tl.get("lanes") or []
    t0, t1 = tl.get("t0"), tl.get("t1")
    if not lanes or t0 is None or t1 is None:
        return ""
    span = max(float(t1) - float(t0), 1e-3)
    covered = {b.get("name"): b.get("covered") for b in row.get("backgrounds") or []}

    def x(t: float) -> float:
        return LABEL_W + (float(t) - float(t0)) / span * PLOT_W

    activity_svg, activity_h = render_activity_lanes(
        row.get("gpu_activity"),
        x,
        float(t0),
        float(t1),
        TOP + len(lanes) * (LANE_H + LANE_GAP),
        LABEL_W,
        PLOT_W,
    )
    height = TOP + len(lanes) * (LANE_H + LANE_GAP) + activity_h + BOTTOM
    width = LABEL_W + PLOT_W + 20
    out = [
        '<svg class="timeline" xmlns="http://www.w3.org/2000/svg" role="img" data-host="%s" '
        'data-t0="%r" data-t1="%r" width="%d" height="%d" viewBox="0 0 %d %d">'
        % (_e(row.get("host")), float(t0), float(t1), width, height, width, height),
        "<title>Timeline of %s: one lane per slice</title>" % _e(row.get("host")),
    ]
    step = _ticks(span)
    n = 0
    while n * step <= span + 1e-9:
        tx = LABEL_W + n * step / span * PLOT_W
        out.append(
            '<line class="tick" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>'
            % (tx, TOP - 6, tx, height - BOTTOM)
        )
        out.append(
            '<text class="axis" x="%.1f" y="%d" text-anchor="middle">%gs</text>'
            % (tx, TOP - 10, round(n * step, 6))
        )
        n += 1
    for i, lane in enumerate(lanes):
        y = TOP + i * (LANE_H + LANE_GAP)
        cov = covered.get(lane.get("name"))
        classes = ["lane", "lane-%s" % ("main" if lane.get("role") == "main" else "background")]
        if cov is False:
            classes.append("uncovered")
        out.append(
            '<g class="%s" data-lane="%s" data-role="%s" data-slice="%s"%s>'
            % (
                " ".join(classes),
                _e(lane.get("name")),
                _e(lane.get("role")),
                _e(lane.get("slice")),
                "" if cov is None else ' data-covered="%s"' % ("true" if cov else "false"),
            )
        )
        out.append(
            '<rect class="lane-bg" x="%d" y="%d" width="%d" height="%d"/>'
            % (LABEL_W, y, PLOT_W, LANE_H)
        )
        label = "%s \u00b7 %s %s" % (
            lane.get("name"),
            lane.get("benchmark") or "?",
            lane.get("scenario") or "?",
        )
        out.append(
            '<text class="lane-label" x="6" y="%d">%s</text>' % (y + 12, _e(_clip(label, 44)))
        )
        out.append(
            '<text class="lane-slice" x="6" y="%d">%s</text>'
            % (y + 25, _e(_clip("slice " + str(lane.get("slice")), 50)))
        )
        for seg in lane.get("segments") or []:
            x0, x1 = x(seg["begin"]), x(seg["end"])
            out.append(
                '<rect class="phase phase-%s" data-phase="%s" data-begin="%r" data-end="%r" x="%.2f" y="%d" '
                'width="%.2f" height="%d"><title>%s: %s \u2013 %s</title></rect>'
                % (
                    _e(seg["phase"]),
                    _e(seg["phase"]),
                    float(seg["begin"]),
                    float(seg["end"]),
                    x0,
                    y + 3,
                    max(x1 - x0, 1.0),
                    LANE_H - 6,
                    _e(seg["phase"]),
                    _rel(seg["begin"], t0),
                    _rel(seg["end"], t0),
                )
            )
        for marker in lane.get("markers") or []:
            mx = x(marker["t"])
            out.append(
                '<line class="marker marker-%s" data-event="%s" data-t="%r" x1="%.2f" y1="%d" x2="%.2f" y2="%d">'
                "<title>%s at %s%s</title></line>"
                % (
                    _e(marker["event"]),
                    _e(marker["event"]),
                    float(marker["t"]),
                    mx,
                    y,
                    mx,
                    y + LANE_H,
                    _e(marker["event"]),
                    _rel(marker["t"], t0),
                    (": " + _e(marker.get("detail"))) if marker.get("detail") else "",
                )
            )
        out.append("</g>")
    out.extend(activity_svg)
    window = tl.get("main_window")
    if window:
        wx0, wx1 = x(window["begin"]), x(window["end"])
        out.append(
            '<rect class="main-window" data-begin="%r" data-end="%r" x="%.2f" y="%d" width="%.2f" height="%d">'
            "<title>main benchmark timed window: %s \u2013 %s</title></rect>"
            % (
                float(window["begin"]),
                float(window["end"]),
                wx0,
                TOP - 4,
                max(wx1 - wx0, 1.0),
                len(lanes) * (LANE_H + LANE_GAP) + activity_h,
                _rel(window["begin"], t0),
                _rel(window["end"], t0),
            )
        )
    ly = height - 8
    lx = LABEL_W
    for phase in PHASES:
        out.append(
            '<rect class="phase-%s" x="%d" y="%d" width="14" height="10"/>' % (phase, lx, ly - 9)
        )
        out.append('<text class="legend" x="%d" y="%d">%s</text>' % (lx + 18, ly, phase))
        lx += 80
    out.append('<rect class="main-window" x="%d" y="%d" width="14" height="10"/>' % (lx, ly - 9))
    out.append(
        '<text class="legend" x="%d" y="%d">main benchmark timed window</text>' % (lx + 18, ly)
    )
    if activity_h:
        lx += 210
        out.append(
            '<rect class="activity-util" x="%d" y="%d" width="14" height="10"/>' % (lx, ly - 9)
        )
        out.append('<text class="legend" x="%d" y="%d">GPU utilisation</text>' % (lx + 18, ly))
        lx += 120
        out.append(
            '<line class="activity-mem" x1="%d" y1="%d" x2="%d" y2="%d"/>'
            % (lx, ly - 4, lx + 14, ly - 4)
        )
        out.append('<text class="legend" x="%d" y="%d">memory used</text>' % (lx + 18, ly))
    out.append("</svg>")
    return "\n".join(out)


def _bench_table(row: Mapping[str, Any]) -> str:
    tl = row.get("timeline") or {}
    t0 = tl.get("t0")
    bgs = {b.get("name"): b for b in row.get("backgrounds") or []}
    main = row.get("main") or {}
    out = [
        '<table class="benchmarks"><thead><tr><th>lane</th><th>role</th><th>benchmark</th><th>scenario</th>'
        "<th>slice</th><th>launch</th><th>ready</th><th>timed begin</th><th>timed end</th><th>end</th>"
        "<th>exit</th><th>result</th><th>covers main</th></tr></thead><tbody>"
    ]
    for lane in tl.get("lanes") or []:
        times = lane.get("times") or {}
        if lane.get("role") == "main":
            result = "%s %s" % (main.get("result_validity") or "-", main.get("metric_text") or "")
            exit_code, sig, cov = main.get("exit_code"), main.get("signal"), ""
        else:
            bg = bgs.get(lane.get("name")) or {}
            result = ""
            exit_code, sig = bg.get("exit_code"), bg.get("signal")
            covered = bg.get("covered")
            cov = '<span class="%s" title="%s">%s</span>' % (
                "cov-yes" if covered else "cov-no",
                _e(bg.get("why")),
                {True: "yes", False: "NO", None: "?"}[covered],
            )
        exit_text = "-" if exit_code is None and not sig else (sig or str(exit_code))
        out.append(
            '<tr data-lane="%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>'
            '<td class="num">%s</td><td class="num">%s</td><td class="num">%s</td><td class="num">%s</td>'
            '<td class="num">%s</td><td>%s</td><td class="result">%s</td><td>%s</td></tr>'
            % (
                _e(lane.get("name")),
                _e(lane.get("name")),
                _e(lane.get("role")),
                _e(lane.get("benchmark")),
                _e(lane.get("scenario")),
                _e(lane.get("slice")),
                _rel(times.get("launch"), t0),
                _rel(times.get("ready"), t0),
                _rel(times.get("timed_begin"), t0),
                _rel(times.get("timed_end"), t0),
                _rel(times.get("end"), t0),
                _e(exit_text),
                _e(result.strip()),
                cov,
            )
        )
    out.append("</tbody></table>")
    return "".join(out)


def _article(index: int, row: Mapping[str, Any]) -> str:
    main = row.get("main") or {}
    head = '<article class="host-run" id="run-%d" data-host="%s" data-verdict="%s">' % (
        index,
        _e(row.get("host")),
        _e(row.get("verdict")),
    )
    title = "<h2>%s %s</h2>" % (_e(row.get("host")), _badge(str(row.get("verdict"))))
    facts = []
    if main:
        facts.append(
            "main <b>%s</b> %s on %s"
            % (_e(main.get("benchmark")), _e(main.get("scenario")), _e(row.get("gpu_label")))
        )
        facts.append('result <b class="metric">%s</b>' % _e(main.get("metric_text")))
    if row.get("backgrounds"):
        facts.append(
            'backgrounds covering the main timed phase: <b class="coverage">%s</b>'
            % _e(row.get("coverage"))
        )
    if row.get("run_id"):
        facts.append("run <code>%s</code>" % _e(row.get("run_id")))
    if row.get("harness"):
        facts.append("harness %s" % _e(row.get("harness")))
    inter = row.get("interference")
    if inter and inter.get("interference_pct") is not None:
        facts.append(
            'isolated %s \u2192 hetero %s: <b class="interference">%.1f%% %s</b>'
            % (
                _e(inter["isolated_text"]),
                _e(inter["hetero_text"]),
                abs(inter["interference_pct"]),
                "slower" if inter["interference_pct"] >= 0 else "faster",
            )
        )
    parts = [head, title, '<p class="facts">%s</p>' % " \u00b7 ".join(facts) if facts else ""]
    if row.get("reasons"):
        parts.append(
            '<ul class="reasons">%s</ul>' % "".join("<li>%s</li>" % _e(r) for r in row["reasons"])
        )
    facts_activity = activity_facts(row.get("gpu_activity"))
    if facts_activity:
        parts.append(
            '<div class="activity">%s</div>'
            % "".join('<p class="activity-fact">%s</p>' % f for f in facts_activity)
        )
    svg = render_timeline(row)
    if svg:
        parts.append(svg)
        parts.append(_bench_table(row))
    else:
        parts.append(
            '<p class="small no-timeline">No timeline: %s.</p>'
            % _e(str(row.get("verdict")).lower().replace("_", " "))
        )
    if row.get("results_dir"):
        parts.append('<p class="small">results: <code>%s</code></p>' % _e(row.get("results_dir")))
    parts.append("</article>")
    return "\n".join(p for p in parts if p)


def render_html(summary: Mapping[str, Any], title: str = "Heterogeneous MIG run report") -> str:
    rows = summary.get("rows") or []
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>%s</title>" % _e(title),
        "<style>%s</style></head>" % _CSS,
        '<body data-report="heteromig-hetero-run" data-total="%d">' % len(rows),
        "<h1>%s</h1>" % _e(title),
        '<p class="meta">run id(s): <code id="run-ids">%s</code> \u00b7 generated %s (all times '
        'in this report are UTC) \u00b7 <span id="counts">%s</span>'
        ' \u00b7 <span id="js-note"></span></p>'
        % (
            _e(", ".join(summary.get("run_ids") or []) or "-"),
            _e(_utc(summary.get("generated_at"))),
            _e(counts_line(summary)),
        ),
    ]
    if summary.get("interrupted"):
        out.append(
            '<p class="banner" id="interrupted">The playbook was interrupted: this report holds the results that finished.</p>'
        )
    out.append(
        '<div class="controls"><button data-mode="all">all runs</button><button data-mode="bad">not VALID only</button></div>'
    )
    out.append(
        '<table id="runs"><thead><tr>%s<th>coverage</th></tr></thead><tbody>'
        % "".join(
            "<th>%s</th>" % _e(h)
            for h in ("host", "GPU", "main benchmark", "scenario", "metric", "verdict", "reasons")
        )
    )
    for i, row in enumerate(rows):
        cells = table_cells(row, 120)
        cells_html = "".join("<td>%s</td>" % _e(c) for c in cells[:5])
        cells_html += "<td>%s</td>" % _badge(cells[5])
        cells_html += '<td title="%s">%s</td>' % (
            _e("; ".join(row.get("reasons") or [])),
            _e(cells[6]),
        )
        cells_html += "<td>%s</td>" % _e(row.get("coverage"))
        out.append(
            '<tr data-host="%s" data-verdict="%s" data-run="run-%d">%s</tr>'
            % (_e(row.get("host")), _e(row.get("verdict")), i, cells_html)
        )
    out.append("</tbody></table>")
    pairs = summary.get("comparisons") or []
    if pairs:
        out.append(
            '<h2>Isolated vs heterogeneous</h2><table id="comparisons"><thead><tr><th>host</th><th>benchmark</th>'
            "<th>scenario</th><th>slice</th><th>isolated</th><th>hetero</th><th>interference</th></tr></thead><tbody>"
        )
        for p in pairs:
            pct = p.get("interference_pct")
            out.append(
                '<tr data-host="%s" data-interference="%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td>'
                '<td class="num">%s%s</td><td class="num">%s</td><td class="num">%s</td></tr>'
                % (
                    _e(p["host"]),
                    "" if pct is None else "%.6f" % pct,
                    _e(p["host"]),
                    _e(p["benchmark"]),
                    _e(p["scenario"]),
                    _e(p.get("profile")),
                    _e(p["isolated_text"]),
                    "" if p["isolated_host"] == p["host"] else " (%s)" % _e(p["isolated_host"]),
                    _e(p["hetero_text"]),
                    "-"
                    if pct is None
                    else "%.1f%% %s" % (abs(pct), "slower" if pct >= 0 else "faster"),
                )
            )
        out.append("</tbody></table>")
    out.append('<section id="hosts">')
    out += [_article(i, row) for i, row in enumerate(rows)]
    out.append("</section>")
    out.append(
        '<p class="small">Reasons in the table are shortened; each run\'s card lists all.</p>'
    )
    out.append("<script>%s</script>" % _JS)
    out.append("</body></html>")
    return "\n".join(out) + "\n"
