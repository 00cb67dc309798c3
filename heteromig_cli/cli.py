"""``heteromig``: run hetero runs and campaigns of heteromig.fleet, and show their results.

    heteromig run    [-i INVENTORY] [-e VARS]... [--check] [-f FORKS] [-l LIMIT] [-v]
    heteromig sweep  [-i INVENTORY] SPEC.yml [-e VARS]... [--check] [-f FORKS] [-l LIMIT] [-v]
    heteromig status [--campaign-dir DIR | CAMPAIGN | RESULTS_DIR]
    heteromig report CAMPAIGN_DIR | RESULTS_DIR

Exit codes (docs/cli.md): 0 every run or cell VALID; 1 any INVALID, failed or not run; 2 bad
usage, or the playbook stopped before any run (a bad spec, an unreachable inventory, ...);
130 interrupted by Ctrl-C (143: SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from heteromig_cli import EXIT_INTERRUPTED, EXIT_NOT_VALID, EXIT_USAGE, EXIT_VALID, views
from heteromig_cli import collection as collection_mod
from heteromig_cli.collection import Collection, CollectionNotFound
from heteromig_cli.driver import PlaybookRun, run_playbook
from heteromig_cli.progress import Progress

PROG = "heteromig"


class UsageError(Exception):
    """Bad arguments found after parsing (a missing file, ...): exit code 2."""


# ------------------------------------------------------------------------------ arguments
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run heteromig.fleet hetero runs and submission campaigns through "
        "ansible-runner, and show their results.",
        epilog="Exit codes: 0 every run/cell VALID, 1 any INVALID or failed, 2 bad usage or the "
        "playbook stopped before any run, 130 Ctrl-C. See docs/cli.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def playbook_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-i",
            "--inventory",
            action="append",
            default=[],
            metavar="INVENTORY",
            help="inventory file, directory or host list (repeatable; default: ansible.cfg's)",
        )
        p.add_argument(
            "-e",
            "--extra-vars",
            action="append",
            default=[],
            metavar="VARS",
            help="extra variables as ansible-playbook takes them: key=value, YAML/JSON, @file",
        )
        p.add_argument("--check", action="store_true", help="check mode: plan, change nothing")
        p.add_argument("-f", "--forks", type=int, metavar="FORKS", help="parallel hosts")
        p.add_argument("-l", "--limit", metavar="PATTERN", help="only these hosts")
        p.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="show ansible-playbook's own output instead of the progress display",
        )

    run = sub.add_parser("run", help="one hetero run on every host (playbooks/hetero_run.yml)")
    playbook_options(run)
    sweep = sub.add_parser("sweep", help="a submission campaign (playbooks/sweep.yml)")
    playbook_options(sweep)
    sweep.add_argument("spec", metavar="SPEC.yml", help="the sweep spec (docs/campaign.md)")

    status = sub.add_parser("status", help="a campaign's cells, or a run's rows")
    group = status.add_mutually_exclusive_group(required=True)
    group.add_argument("--campaign-dir", metavar="DIR", help="the campaign's directory")
    group.add_argument(
        "target",
        nargs="?",
        metavar="CAMPAIGN",
        help="a campaign directory or name (results/campaigns/NAME), or a run's results "
        "directory or id (results/RUN_ID)",
    )
    report = sub.add_parser("report", help="a campaign's summary or a run's report table")
    report.add_argument("target", metavar="CAMPAIGN_DIR|RESULTS_DIR")
    return parser


# ------------------------------------------------------------------------------ helpers
def _extravars(values: Sequence[str]) -> list[dict[str, Any]]:
    """The -e values as mappings, in order (what cannot be read is left out)."""
    from ansible.parsing.splitter import parse_kv

    found: list[dict[str, Any]] = []
    for value in values:
        data: Any = None
        try:
            if value.startswith("@"):
                data = yaml.safe_load(Path(value[1:]).expanduser().read_text(encoding="utf-8"))
            elif value.lstrip().startswith(("{", "[")):
                data = yaml.safe_load(value)
            else:
                data = parse_kv(value)
        except Exception:  # ansible-playbook reports a bad -e itself
            data = None
        if isinstance(data, dict):
            found.append(data)
    return found


def _extravar(values: Sequence[Mapping[str, Any]], name: str) -> Any:
    result = None
    for data in values:
        if name in data:
            result = data[name]
    return result


def _absolute_extra(values: Sequence[str]) -> list[str]:
    """-e @file relative to the current directory (the playbook runs elsewhere)."""
    out = []
    for value in values:
        if value.startswith("@") and not value.startswith("@@"):
            path = Path(value[1:]).expanduser()
            if not path.is_file():
                raise UsageError("extra-vars file %s not found" % path)
            value = "@" + str(path.resolve())
        out.append(value)
    return out


def _inventory_args(values: Sequence[str]) -> list[str]:
    args = []
    for value in values:
        path = Path(value).expanduser()
        if path.exists():
            value = str(path.resolve())
        elif "," not in value:
            raise UsageError("inventory %s not found" % value)
        args += ["-i", value]
    return args


def _count_plays(playbook: Path, root: Path, depth: int = 0) -> int | None:
    """How many plays a playbook runs (following import_playbook), None when unknown."""
    if depth > 5:
        return None
    try:
        plays = yaml.safe_load(playbook.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(plays, list):
        return None
    total = 0
    for play in plays:
        if not isinstance(play, dict):
            return None
        target = play.get("import_playbook") or play.get("ansible.builtin.import_playbook")
        if target is None:
            total += 1
            continue
        target = str(target)
        if "{{" in target:
            return None
        if target.startswith("heteromig.fleet."):
            path = root / "playbooks" / (target.split(".", 2)[2] + ".yml")
        else:
            path = playbook.parent / target
        count = _count_plays(path, root, depth + 1)
        if count is None:
            return None
        total += count
    return total


def _progress(args: argparse.Namespace, playbook: Path, collection: Collection) -> Progress:
    return Progress(
        sys.stdout,
        tty=sys.stdout.isatty(),
        verbose=args.verbose,
        total_plays=_count_plays(playbook, collection.root),
    )


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def _failures(run: PlaybookRun, out: TextIO) -> None:
    for failure in run.failures:
        _say(
            out,
            "heteromig:   %s [%s] %s: %s"
            % (failure.outcome, failure.host, failure.task, failure.message),
        )


def _interrupted(run: PlaybookRun) -> int:
    return EXIT_INTERRUPTED if run.signal in (None, 2) else 128 + int(run.signal or 0)


# ------------------------------------------------------------------------------ run
def cmd_run(args: argparse.Namespace, collection: Collection, out: TextIO) -> int:
    playbook = collection.playbook("hetero_run.yml")
    cmdline = _inventory_args(args.inventory)
    extra = _absolute_extra(args.extra_vars)
    for value in extra:
        cmdline += ["-e", value]
    if args.check:
        cmdline.append("--check")
    env = collection.environment(dict(os.environ))
    results = _extravar(_extravars(extra), "heteromig_results_dir")
    report_root = Path(os.environ.get("HETEROMIG_REPORT_DIR") or collection.default_results)
    if results and "HETEROMIG_REPORT_DIR" not in os.environ:
        # the reports go next to the per-host results, as the lab tests put them
        report_root = collection.workdir / Path(str(results)).expanduser()
        env["HETEROMIG_REPORT_DIR"] = str(report_root)
    report_root = collection.workdir / report_root
    run = run_playbook(
        playbook,
        workdir=collection.workdir,
        env=env,
        progress=_progress(args, playbook, collection),
        cmdline=cmdline,
        forks=args.forks,
        limit=args.limit,
    )
    run_ids = sorted({str(r.get("run_id")) for r in run.hetero_results.values() if r.get("run_id")})
    hosts = sorted(run.hetero_started | set(run.hetero_results))
    verdicts = {h: str(run.hetero_results.get(h, {}).get("verdict") or "NO_RESULT") for h in hosts}
    for host in hosts:
        result = run.hetero_results.get(host, {})
        metric = ((result.get("main") or {}).get("loadgen") or {}).get("metric") or {}
        _say(
            out,
            "heteromig run: %s %s%s%s"
            % (
                host,
                verdicts[host],
                " | %s %s %s" % (metric.get("name"), metric.get("value"), metric.get("unit"))
                if metric
                else "",
                " | run %s" % result["run_id"] if result.get("run_id") else "",
            ),
        )
    for run_id in run_ids:
        directory = report_root / run_id
        html = directory / "report.html"
        if html.is_file():
            _say(out, "heteromig run: report %s (HTML: %s)" % (directory, html))
    if run.signal is not None:
        _say(out, "heteromig run: interrupted (runs still going on the hosts keep running there)")
        return _interrupted(run)
    if not run.hetero_started:
        if run.rc != 0 or run.failures:
            _say(out, "heteromig run: the playbook stopped before any hetero run started:")
            _failures(run, out)
            return EXIT_USAGE
        _say(out, "heteromig run: no host ran a hetero run (no MIG slices? see above)")
        return EXIT_NOT_VALID
    good = {"VALID", "DRY_RUN"} if args.check else {"VALID"}
    if run.rc == 0 and not run.failures and all(v in good for v in verdicts.values()):
        _say(out, "heteromig run: %d host(s), every run %s" % (len(hosts), "/".join(sorted(good))))
        return EXIT_VALID
    if run.failures:
        _say(out, "heteromig run: failures:")
        _failures(run, out)
    _say(
        out,
        "heteromig run: not every run is VALID (%s)"
        % ", ".join("%s %s" % (h, v) for h, v in verdicts.items()),
    )
    return EXIT_NOT_VALID


# ------------------------------------------------------------------------------ sweep
def _spec_args(spec: Path) -> list[str]:
    """A file holding the variable heteromig_sweep goes in as -e @file, a bare spec as
    heteromig_sweep_file (its errors then name the file and the place in it)."""
    if not spec.is_file():
        raise UsageError("sweep spec %s not found" % spec)
    try:
        data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    if isinstance(data, dict) and "heteromig_sweep" in data:
        return ["-e", "@" + str(spec)]
    return ["-e", json.dumps({"heteromig_sweep_file": str(spec)})]


def cmd_sweep(args: argparse.Namespace, collection: Collection, out: TextIO) -> int:
    playbook = collection.playbook("sweep.yml")
    cmdline = _inventory_args(args.inventory)
    cmdline += _spec_args(Path(args.spec).expanduser().resolve())
    for value in _absolute_extra(args.extra_vars):
        cmdline += ["-e", value]
    if args.check:
        cmdline.append("--check")
    run = run_playbook(
        playbook,
        workdir=collection.workdir,
        env=collection.environment(dict(os.environ)),
        progress=_progress(args, playbook, collection),
        cmdline=cmdline,
        forks=args.forks,
        limit=args.limit,
    )
    plan = run.campaign_plan
    if plan is None:
        if run.signal is not None:
            _say(out, "heteromig sweep: interrupted before the campaign was planned")
            return _interrupted(run)
        _say(out, "heteromig sweep: the campaign stopped before any cell ran:")
        _failures(run, out)
        return EXIT_USAGE
    directory = Path(str(plan["campaign_dir"]))
    cells = [
        cell
        for system in (plan.get("systems") or {}).values()
        for cell in list(system.get("to_run") or []) + list(system.get("skipped") or [])
    ]
    if args.check:
        if run.rc != 0:
            _failures(run, out)
            return EXIT_USAGE
        _say(out, "heteromig sweep: check mode: the plan above is what would run")
        return EXIT_VALID
    lines, _warnings = views.campaign_cells(directory, collection, cells)
    session = plan.get("session")
    claimed = _claimed_in(directory, collection, session)
    views.print_cells(lines, out, "campaign %s" % plan.get("campaign"))
    _say(
        out,
        "heteromig sweep: %d cell(s) claimed in this session (%s); ledger %s"
        % (claimed, session, plan.get("ledger") or directory / views.LEDGER),
    )
    html = directory / "campaign.html"
    if html.is_file() and run.signal is None:
        _say(out, "heteromig sweep: summary %s (HTML: %s)" % (directory / "campaign.md", html))
    if run.signal is not None:
        _say(
            out,
            "heteromig sweep: interrupted; cells in flight stay claimed in the ledger: the same "
            "command resumes them",
        )
        return _interrupted(run)
    if run.rc != 0 and not claimed:
        _say(out, "heteromig sweep: the campaign stopped before any cell ran:")
        _failures(run, out)
        return EXIT_USAGE
    if run.rc == 0 and views.all_valid(lines):
        return EXIT_VALID
    if run.failures:
        _failures(run, out)
    return EXIT_NOT_VALID


def _claimed_in(directory: Path, collection: Collection, session: Any) -> int:
    """Claims of this session in the campaign's ledgers (its slice's, when sliced)."""
    try:
        records = views.read_campaign(directory, collection).records
    except views.NotFound:
        return 0
    return sum(1 for r in records if r.get("event") == "claimed" and r.get("session") == session)


# ------------------------------------------------------------------------------ status/report
def cmd_status(args: argparse.Namespace, collection: Collection, out: TextIO) -> int:
    target = views.locate(args.target, args.campaign_dir, collection)
    if target.kind == "campaign":
        lines, warnings = views.campaign_cells(target.path, collection)
        for warning in warnings:
            _say(sys.stderr, "heteromig: warning: %s" % warning)
        views.print_cells(lines, out, "campaign %s" % target.path)
        # a slice with no ledger: its cells are unknown unless campaign.json lists them
        unknown = (
            views.slices_missing(target.path, collection)
            and not (target.path / "campaign.json").is_file()
        )
        return EXIT_VALID if views.all_valid(lines) and not unknown else EXIT_NOT_VALID
    summary = views.run_summary(target.path, collection)
    views.print_rows(summary, out)
    return EXIT_VALID if views.run_ok(summary) else EXIT_NOT_VALID


def cmd_report(args: argparse.Namespace, collection: Collection, out: TextIO) -> int:
    target = views.locate(args.target, None, collection)
    if target.kind == "campaign":
        lines, _warnings = views.campaign_cells(target.path, collection)
        summary = target.path / "campaign.md"
        if summary.is_file():
            out.write(summary.read_text(encoding="utf-8").rstrip("\n") + "\n\n")
        else:
            _say(out, "(no campaign summary yet: `heteromig sweep` writes it at the end)")
            views.print_cells(lines, out, "campaign %s" % target.path)
        html = target.path / "campaign.html"
        _say(out, "HTML: %s" % (html if html.is_file() else "(not written yet)"))
        return EXIT_VALID if views.all_valid(lines) else EXIT_NOT_VALID
    run_summary = views.run_summary(target.path, collection)
    views.print_run_table(run_summary, out, collection)
    html = target.path / "report.html"
    _say(out, "HTML: %s" % (html if html.is_file() else "(not written)"))
    return EXIT_VALID if views.run_ok(run_summary) else EXIT_NOT_VALID


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "status": cmd_status, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 on bad usage
    try:
        collection = collection_mod.find()
        return COMMANDS[args.command](args, collection, sys.stdout)
    except (UsageError, CollectionNotFound, views.NotFound) as exc:
        _say(sys.stderr, "%s: error: %s" % (PROG, exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `heteromig status ... | head`
        return EXIT_VALID


if __name__ == "__main__":
    sys.exit(main())
