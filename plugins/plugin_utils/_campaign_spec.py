# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Campaign specs: a matrix of hetero runs ("cells"), parsed and validated (controller only).

A campaign spec (YAML, docs/campaign.md) names systems (sets of identical hosts with one MIG
layout), benchmarks with their scenarios and modes, hetero_run defaults and per-cell overrides.
:func:`parse_spec` validates all of it before anything runs and expands it into :class:`Cell`
objects in a stable order; every problem is a :class:`SpecError` whose message names the file
and the exact place (``systems[1].hosts``, ``benchmarks.synth-mlp-small.scenarios[2]``).

Pure functions, except :func:`load_spec` (reads the spec file). The spec's vocabulary, its
strict YAML reading, hetero_run's option table and the checker that names each place are in
:mod:`_campaign_spec_check`. No Ansible imports.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    LayoutError,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec_check import (
    AUTO,
    NAME_RE,
    TUNED,
    TUNING_KEYS,
    Checker,
    SpecError,
    check_mode,
    check_scenario,
    hetero_run_options,
    is_int,
    is_number,
    read_spec_file,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    PlanError,
    Profile,
    expand_backgrounds,
    load_profile,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._submission_layout import (
    HETERO_SUFFIX,
    IMPLEMENTATION_REQUIRED,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._system_desc import (
    USER_FIELDS,
    user_fields_problem,
)

SPEC_VERSION = 1
# mode -> (hetero_run main_action, main_mode)
MODE_ACTIONS: dict[str, tuple[str, str]] = {
    "performance": ("run_harness", "PerformanceOnly"),
    "accuracy": ("run_harness", "AccuracyOnly"),
    "TEST01": ("run_audit_test01", "PerformanceOnly"),
    "TEST04": ("run_audit_test04", "PerformanceOnly"),
    "TEST05": ("run_audit_test05", "PerformanceOnly"),
}
DEFAULT_HARNESS = "heteromig_synthetic"
DEFAULT_RETRIES = 1
DEFAULT_MODES = ("performance",)
# Scenarios whose main_target_qps may be 'auto' (tuned by the campaign before the cell runs).
TUNABLE_SCENARIOS = ("Server", "SingleStream", "MultiStream")
# Seconds a cell costs on top of its main duration and start buffer in Cell.expected_s: starting
# the host runner, loading models and warming up before the start buffer counts, the end of the
# run (end_time_buffer_min, stopping the backgrounds) and fetching the logs. A round figure from
# the synthetic harness's runs (a few seconds each) plus NVIDIA-harness engine loading.
CELL_OVERHEAD_S = 60.0

_TOP_KEYS = (
    "version",
    "campaign",
    "harness",
    "harness_profile_dirs",
    "defaults",
    "systems",
    "benchmarks",
    "cells",
)
_SYSTEM_KEYS = (
    "name",
    "hosts",
    "layout",
    "gpus",
    "submission_name",
    "gpus_at_once",
    "system_desc",
    "implementation_desc",
)
_BENCHMARK_KEYS = ("scenarios", "modes")
_RULE_KEYS = ("match", "set")
_MATCH_KEYS = ("system", "benchmark", "scenario", "mode")
_SUBMISSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_MANY = 1 << 20  # "as many free slices as a set has members" for expand_backgrounds


# ---------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class System:
    name: str
    hosts: str
    layout: Any  # mig_layout 'layout' (string, list or mapping), or None
    layout_gpus: list[dict[str, Any]] | None  # mig_layout 'gpus', or None
    submission_name: str | None
    gpus_at_once: int
    # the submission's systems/<system>.json fields and measurements/<...>.json fields the user
    # gives (docs/campaign.md, "The submission tree")
    system_desc: dict[str, Any] = field(default_factory=dict)
    implementation_desc: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    id: str
    system: str
    benchmark: str
    scenario: str
    mode: str
    main_action: str
    main_mode: str
    options: dict[str, Any]
    retries: int
    expected_s: float
    tune: bool
    # tune_* settings given for the cell, and "use_tuned": true for main_target_qps: tuned
    tuning: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Campaign:
    name: str
    version: int
    harness: str
    harness_profile_dirs: list[str]
    systems: list[System]
    cells: list[Cell]
    defaults: dict[str, Any]
    source: str

    def system(self, name: str) -> System:
        for system in self.systems:
            if system.name == name:
                return system
        raise SpecError(
            "%s: campaign %s has no system %r; its systems are %s"
            % (self.source, self.name, name, ", ".join(s.name for s in self.systems))
        )


# ------------------------------------------------------------------------------- parsing
def load_spec(
    path: str, profile_loader: Callable[[str, Iterable[str] | None], Profile] = load_profile
) -> Campaign:
    """Read and parse a campaign spec file; every problem is a SpecError naming the file."""
    return parse_spec(read_spec_file(path), path, profile_loader)


def parse_spec(
    data: Any,
    source: str,
    profile_loader: Callable[[str, Iterable[str] | None], Profile] = load_profile,
    option_spec: Mapping[str, Mapping[str, Any]] | None = None,
) -> Campaign:
    """Validate a campaign spec's data and expand it into cells (see docs/campaign.md).

    ``source`` names the data in messages (the file path). ``option_spec`` is hetero_run's
    ARGUMENT_SPEC (default: ``_hetero_arg_spec``'s, by :func:`hetero_run_options`).
    """
    options = option_spec if option_spec is not None else hetero_run_options()
    check = Checker(source, options)
    if data is None:
        raise check.error("top level", "the spec is empty; it must be a mapping")
    top = check.mapping(data, "", _TOP_KEYS)

    # version
    if "version" not in top:
        raise check.error(
            "version", "is required (this heteromig writes version %d)" % SPEC_VERSION
        )
    version = top["version"]
    if not is_int(version) or version < 1:
        raise check.error("version", "must be a whole number >= 1, got %r" % (version,))
    if version > SPEC_VERSION:
        raise check.error(
            "version",
            "%d: this spec was written for a newer heteromig (this one reads spec versions up to "
            "%d); upgrade heteromig.fleet" % (version, SPEC_VERSION),
        )

    # name, harness
    if "campaign" not in top:
        raise check.error("campaign", "is required (the campaign's name)")
    name = check.name(top["campaign"], "campaign")
    harness = top.get("harness", DEFAULT_HARNESS)
    if harness is None:
        harness = DEFAULT_HARNESS
    if not isinstance(harness, str) or not NAME_RE.match(harness):
        raise check.error("harness", "must be a harness profile name, got %r" % (harness,))
    dirs_raw = top.get("harness_profile_dirs") or []
    if not isinstance(dirs_raw, list) or not all(isinstance(d, str) and d for d in dirs_raw):
        raise check.error("harness_profile_dirs", "must be a list of directories (strings)")
    profile_dirs = list(dirs_raw)
    try:
        profile = profile_loader(harness, profile_dirs)
    except PlanError as exc:
        raise check.error("harness", str(exc)) from None

    # defaults
    defaults = check.option_map(top.get("defaults") or {}, "defaults")

    # systems
    systems_raw = top.get("systems")
    if not isinstance(systems_raw, list) or not systems_raw:
        raise check.error("systems", "must be a non-empty list of systems")
    systems: list[System] = []
    for i, raw in enumerate(systems_raw):
        systems.append(_system(check, raw, "systems[%d]" % i, systems))

    # benchmarks
    benchmarks_raw = top.get("benchmarks")
    if not isinstance(benchmarks_raw, dict) or not benchmarks_raw:
        raise check.error("benchmarks", "must be a non-empty mapping of benchmark names")
    matrix: list[tuple[str, list[str], list[str]]] = []
    for bench, conf in benchmarks_raw.items():
        matrix.append(_benchmark(check, profile, bench, conf))

    # cell rules
    rules_raw = top.get("cells") or []
    if not isinstance(rules_raw, list):
        raise check.error("cells", "must be a list of {match, set} rules")
    rules = [_rule(check, raw, "cells[%d]" % i, systems, matrix) for i, raw in enumerate(rules_raw)]

    # expansion
    cells: list[Cell] = []
    used = [False] * len(rules)
    for system in systems:
        for bench, scenarios, modes in matrix:
            for scenario in scenarios:
                for mode in modes:
                    cells.append(
                        _cell(
                            check,
                            profile,
                            (system.name, bench, scenario, mode),
                            defaults,
                            rules,
                            used,
                            harness,
                            profile_dirs,
                        )
                    )
    for i, hit in enumerate(used):
        if not hit:
            raise check.error(
                "cells[%d].match" % i,
                "matches no cell of the campaign (check the names against systems and benchmarks)",
            )
    return Campaign(
        name=name,
        version=version,
        harness=harness,
        harness_profile_dirs=profile_dirs,
        systems=systems,
        cells=cells,
        defaults=defaults,
        source=source,
    )


def _system(check: Checker, raw: Any, where: str, earlier: list[System]) -> System:
    conf = check.mapping(raw, where, _SYSTEM_KEYS)
    if "name" not in conf:
        raise check.error(where + ".name", "is required")
    name = check.name(conf["name"], where + ".name")
    for i, other in enumerate(earlier):
        if other.name == name:
            raise check.error(
                where + ".name", "system %r is already defined as systems[%d]" % (name, i)
            )
    hosts = conf.get("hosts")
    if not isinstance(hosts, str) or not hosts.strip():
        raise check.error(
            where + ".hosts",
            "must be an inventory group or host pattern (a non-empty string), got %r" % (hosts,),
        )
    layout = conf.get("layout")
    gpus = conf.get("gpus")
    if layout is not None and gpus is not None:
        raise check.error(
            where, "give either layout (every GPU) or gpus (per GPU selector), not both"
        )
    if layout is not None or gpus is not None:
        key = "layout" if layout is not None else "gpus"
        if gpus is not None and (
            not isinstance(gpus, list) or not all(isinstance(g, dict) for g in gpus)
        ):
            raise check.error(where + ".gpus", "must be a list of {devices, layout} mappings")
        try:
            parse_gpu_entries(layout, gpus)
        except LayoutError as exc:
            raise check.error("%s.%s" % (where, key), str(exc)) from None
    submission = conf.get("submission_name")
    if submission is not None and (
        not isinstance(submission, str)
        or not _SUBMISSION_RE.match(submission)
        or not submission.endswith(HETERO_SUFFIX)
    ):
        raise check.error(
            where + ".submission_name",
            "must be a system name of the submission layout ending in %s (letters, digits and "
            "._+-), e.g. DGX-H100_H100-SXM5-80GB-MIG_1x1g.10gb_TRT%s; got %r"
            % (HETERO_SUFFIX, HETERO_SUFFIX, submission),
        )
    at_once = conf.get("gpus_at_once", 1)
    if not is_int(at_once) or at_once < 1:
        raise check.error(
            where + ".gpus_at_once", "must be a whole number >= 1, got %r" % (at_once,)
        )
    descs: dict[str, dict[str, Any]] = {}
    for key, allowed, what in (
        ("system_desc", USER_FIELDS, "system description"),
        ("implementation_desc", IMPLEMENTATION_REQUIRED, "implementation description"),
    ):
        problem = user_fields_problem(conf.get(key, {}), allowed, what)
        if problem:
            raise check.error("%s.%s" % (where, key), problem)
        descs[key] = dict(conf.get(key) or {})
    return System(
        name=name,
        hosts=hosts.strip(),
        layout=layout,
        layout_gpus=[dict(g) for g in gpus] if gpus is not None else None,
        submission_name=submission,
        gpus_at_once=at_once,
        system_desc=descs["system_desc"],
        implementation_desc=descs["implementation_desc"],
    )


def _benchmark(
    check: Checker, profile: Profile, bench: Any, conf: Any
) -> tuple[str, list[str], list[str]]:
    where = "benchmarks.%s" % bench
    if not isinstance(bench, str) or bench not in profile.benchmarks:
        close = difflib.get_close_matches(str(bench), list(profile.benchmarks), n=1)
        raise check.error(
            where,
            "unknown benchmark %r for harness %s%s; its benchmarks are %s"
            % (
                bench,
                profile.name,
                " (did you mean %s?)" % close[0] if close else "",
                ", ".join(sorted(profile.benchmarks)),
            ),
        )
    conf = check.mapping(conf, where, _BENCHMARK_KEYS)
    if "scenarios" not in conf:
        raise check.error(where + ".scenarios", "is required")
    supported = profile.scenarios(bench)
    scenarios: list[str] = []
    for i, item in enumerate(check.string_list(conf["scenarios"], where + ".scenarios")):
        place = "%s.scenarios[%d]" % (where, i)
        scenario = check_scenario(check, item, place)
        if scenario not in supported:
            raise check.error(
                place,
                "benchmark %s does not support the %s scenario (harness %s supports %s for it)"
                % (bench, scenario, profile.name, ", ".join(supported)),
            )
        if scenario in scenarios:
            raise check.error(
                place,
                "%s is already listed as scenarios[%d]: the cell would run twice"
                % (scenario, scenarios.index(scenario)),
            )
        scenarios.append(scenario)
    modes: list[str] = []
    modes_raw = conf.get("modes", list(DEFAULT_MODES))
    for i, item in enumerate(check.string_list(modes_raw, where + ".modes")):
        place = "%s.modes[%d]" % (where, i)
        mode = check_mode(check, item, place)
        if mode in modes:
            raise check.error(
                place,
                "%s is already listed as modes[%d]: the cell would run twice"
                % (mode, modes.index(mode)),
            )
        action, main_mode = MODE_ACTIONS[mode]
        if action not in profile.actions:
            raise check.error(
                place,
                "harness %s cannot run mode %s: its profile has no action %s (its actions are %s)"
                % (profile.name, mode, action, ", ".join(sorted(profile.actions))),
            )
        if main_mode == "AccuracyOnly" and profile.accuracy is None:
            raise check.error(
                place,
                "harness %s cannot run mode %s: its profile has no 'accuracy' section to judge "
                "an AccuracyOnly run" % (profile.name, mode),
            )
        modes.append(mode)
    return bench, scenarios, modes


@dataclass(frozen=True)
class _Rule:
    where: str
    match: dict[str, str]
    set: dict[str, Any]


def _rule(
    check: Checker,
    raw: Any,
    where: str,
    systems: list[System],
    matrix: list[tuple[str, list[str], list[str]]],
) -> _Rule:
    conf = check.mapping(raw, where, _RULE_KEYS)
    match_raw = conf.get("match") or {}
    match_raw = check.mapping(match_raw, where + ".match", _MATCH_KEYS)
    match: dict[str, str] = {}
    for key, value in match_raw.items():
        place = "%s.match.%s" % (where, key)
        if key == "system":
            names = [s.name for s in systems]
            if value not in names:
                raise check.error(
                    place, "no system named %r; systems are %s" % (value, ", ".join(names))
                )
            match[key] = value
        elif key == "benchmark":
            names = [b for b, _scenarios, _modes in matrix]
            if value not in names:
                raise check.error(
                    place,
                    "benchmark %r is not in the spec's benchmarks (%s)" % (value, ", ".join(names)),
                )
            match[key] = value
        elif key == "scenario":
            match[key] = check_scenario(check, value, place)
        else:
            match[key] = check_mode(check, value, place)
    if "set" not in conf:
        raise check.error(where + ".set", "is required (the options this rule sets)")
    settings = check.option_map(conf["set"], where + ".set")
    if not settings:
        raise check.error(where + ".set", "sets nothing")
    return _Rule(where, match, settings)


def _cell(
    check: Checker,
    profile: Profile,
    key: tuple[str, str, str, str],
    defaults: Mapping[str, Any],
    rules: list[_Rule],
    used: list[bool],
    harness: str,
    profile_dirs: list[str],
) -> Cell:
    system, bench, scenario, mode = key
    cell_id = "/".join(key)
    values = dict(zip(_MATCH_KEYS, key, strict=True))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for option, value in defaults.items():
        merged[option] = value
        origin[option] = "defaults.%s" % option
    for i, rule in enumerate(rules):
        if all(values[k] == v for k, v in rule.match.items()):
            used[i] = True
            for option, value in rule.set.items():
                merged[option] = value
                origin[option] = "%s.set.%s" % (rule.where, option)
    retries = merged.pop("retries", DEFAULT_RETRIES)
    if retries is None:
        retries = DEFAULT_RETRIES
    options = {k: v for k, v in merged.items() if v is not None}
    tuning = {k: options.pop(k) for k in TUNING_KEYS if k in options}
    tune = options.get("main_target_qps") == AUTO
    use_tuned = options.get("main_target_qps") == TUNED
    if tune or use_tuned:
        if scenario not in TUNABLE_SCENARIOS:
            raise check.error(
                origin["main_target_qps"],
                "main_target_qps: %s (tuning) applies to %s cells only; cell %s is %s"
                % (options["main_target_qps"], "/".join(TUNABLE_SCENARIOS), cell_id, scenario),
            )
        del options["main_target_qps"]
    if use_tuned:
        tuning["use_tuned"] = True
    action, main_mode = MODE_ACTIONS[mode]
    options.update(
        harness=harness,
        harness_profile_dirs=list(profile_dirs),
        main_benchmark=bench,
        main_scenario=scenario,
        main_mode=main_mode,
        main_action=action,
    )
    try:
        expand_backgrounds(profile, options.get("background_benchmarks"), bench, _MANY, False)
    except PlanError as exc:
        raise check.error(
            origin.get("background_benchmarks", "defaults"), "cell %s: %s" % (cell_id, exc)
        ) from None
    return Cell(
        id=cell_id,
        system=system,
        benchmark=bench,
        scenario=scenario,
        mode=mode,
        main_action=action,
        main_mode=main_mode,
        options=options,
        retries=int(retries),
        expected_s=expected_seconds(options, check.options),
        tune=tune,
        tuning=tuning,
    )


def _option_ms(
    options: Mapping[str, Any], spec: Mapping[str, Mapping[str, Any]], name: str, fallback: int
) -> int:
    value = options.get(name)
    if value is None:
        value = (spec.get(name) or {}).get("default", fallback)
    return int(value) if is_number(value) else fallback


def expected_seconds(
    options: Mapping[str, Any], spec: Mapping[str, Mapping[str, Any]] | None = None
) -> float:
    """A cell's wall time estimate: main duration + start buffer (hetero_run's defaults where
    unset) + CELL_OVERHEAD_S."""
    table = spec if spec is not None else hetero_run_options()
    duration = _option_ms(options, table, "main_benchmark_duration", 600000)
    buffer = _option_ms(options, table, "start_time_buffer", 10000)
    return duration / 1000.0 + buffer / 1000.0 + CELL_OVERHEAD_S


# ------------------------------------------------------------------------------- helpers
def layout_options(system: System) -> dict[str, Any]:
    """The mig_layout / mig_partition options of a system: {layout}, {gpus} or {} (none set)."""
    if system.layout is not None:
        return {"layout": system.layout}
    if system.layout_gpus is not None:
        return {"gpus": [dict(g) for g in system.layout_gpus]}
    return {}


def engine_combinations(
    campaign: Campaign,
    system_name: str,
    profile_loader: Callable[[str, Iterable[str] | None], Profile] = load_profile,
) -> list[dict[str, str]]:
    """Every engine the system's cells need, as heteromig.fleet.engine_build ``combinations``.

    Each cell's main benchmark in its scenario (``accuracy_target: "99.9"`` when the cell asks
    ``main_accuracy_target: high``; omitted, engine_build's default 99, otherwise), and every
    benchmark its ``background_benchmarks`` can name, in Offline. The number of free slices is
    not known here, so a set contributes all its members (the main benchmark included: with
    enough slices a set keeps it). Deduplicated, sorted by benchmark, scenario, target.
    """
    campaign.system(system_name)  # SpecError for an unknown system
    try:
        profile = profile_loader(campaign.harness, campaign.harness_profile_dirs)
    except PlanError as exc:
        raise SpecError("%s: harness: %s" % (campaign.source, exc)) from None
    found: set[tuple[str, str, str]] = set()
    for cell in campaign.cells:
        if cell.system != system_name:
            continue
        high = cell.options.get("main_accuracy_target") == "high"
        found.add((cell.benchmark, cell.scenario, "99.9" if high else ""))
        try:
            backgrounds = expand_backgrounds(
                profile, cell.options.get("background_benchmarks"), cell.benchmark, _MANY, False
            )
        except PlanError as exc:
            raise SpecError("%s: cell %s: %s" % (campaign.source, cell.id, exc)) from None
        for bench in backgrounds:
            found.add((bench, "Offline", ""))
    combos: list[dict[str, str]] = []
    for bench, scenario, target in sorted(found):
        combo = {"benchmark": bench, "scenario": scenario}
        if target:
            combo["accuracy_target"] = target
        combos.append(combo)
    return combos
