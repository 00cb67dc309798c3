# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of hetero_run: harness profiles, their templates and the background sets.

Pure functions (plus reading profile files); the action plugin ``heteromig.fleet.hetero_run``
calls them (through ``_hetero_plan``, which builds the plan) and does the Ansible I/O. Everything here raises ``PlanError`` with a message that
names the problem; nothing is launched or changed before a plan builds.

A harness profile (``harness_profiles/<name>.yml``) is the one source of truth for how a
harness is run: its benchmarks and their scenarios, the background sets, the actions, the
readiness markers, and the command as Jinja2 templates. Every ``argv`` item renders to exactly
one argument; nothing is spliced into a shell.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ansible_collections.heteromig.fleet.plugins.module_utils._safe_names import (
    SAFE_NAME_PATTERN,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._mlperf_terms import SCENARIOS
from ansible_collections.heteromig.fleet.plugins.plugin_utils._regex_numbers import (
    number_at_least,
)

BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness_profiles")
MODES = ("PerformanceOnly", "AccuracyOnly")
ACCURACY_ONLY = "AccuracyOnly"
GROUP_SETS = ("all", "datacenter", "edge")
_NAME_RE = re.compile(r"\A%s\Z" % SAFE_NAME_PATTERN, re.ASCII)
_ENV_NAME_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z", re.ASCII)
_PROFILE_KEYS = {
    "name",
    "description",
    "default_main_benchmark",
    "benchmarks",
    "background_sets",
    "actions",
    "readiness_regexes",
    "progress_regex",
    "verbose_args",
    "command",
    "build",
    "accuracy",
}
# What a profile's ``accuracy`` section holds: the file its accuracy check writes (looked for in
# the benchmark's log directory, nested as the harness nests it) and the regexes of its verdict
# line, matched in that file and in the benchmark's output.
_ACCURACY_KEYS = {"file", "passed", "failed"}


class PlanError(Exception):
    """Bad input for a hetero run; the message names the problem."""


# ---------------------------------------------------------------------------------- Jinja
def make_quote(value: Any) -> str:
    """Quote for a shell command line that ``make`` builds: shell-quoted, ``$`` doubled."""
    return shlex.quote(str(value)).replace("$", "$$")


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.filters["shell_quote"] = lambda value: shlex.quote(str(value))
    env.filters["make_quote"] = make_quote
    env.filters["number_at_least"] = number_at_least
    return env


_ENV = _environment()


# ------------------------------------------------------------------------------- profiles
@dataclass
class Profile:
    name: str
    path: str
    description: str
    default_main_benchmark: str
    benchmarks: dict[str, dict[str, Any]]
    background_sets: dict[str, list[str]]
    actions: dict[str, dict[str, Any]]
    readiness_regexes: list[str]
    progress_regex: str | None
    verbose_args: list[str]
    command: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, str] | None = None
    build: dict[str, Any] | None = None  # engine builds: plugin_utils/_harness_build.py

    def scenarios(self, benchmark: str) -> list[str]:
        return list(self.benchmarks[benchmark].get("scenarios", SCENARIOS))

    def config_ver(self, benchmark: str, accuracy: str) -> str | None:
        conf = self.benchmarks[benchmark].get("config_ver")
        if isinstance(conf, str):
            return conf
        if isinstance(conf, Mapping):
            return conf.get(accuracy) or conf.get("default")
        return None


def profile_dirs(extra: Iterable[str] | None) -> list[str]:
    """User directories first (they may shadow a built-in profile), then the built-in one."""
    return [os.path.expanduser(d) for d in (extra or []) if d] + [BUILTIN_DIR]


def available_profiles(extra: Iterable[str] | None = None) -> list[str]:
    names: set[str] = set()
    for directory in profile_dirs(extra):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        names.update(e[:-4] for e in entries if e.endswith(".yml"))
    return sorted(names)


def load_profile(name: str, extra_dirs: Iterable[str] | None = None) -> Profile:
    """Find ``<name>.yml`` in the user directories, then the built-in ones, and validate it."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PlanError("harness must be a profile name like 'heteromig_synthetic', got %r" % name)
    for directory in profile_dirs(extra_dirs):
        path = os.path.join(directory, name + ".yml")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    data = yaml.safe_load(handle)
            except (OSError, yaml.YAMLError) as exc:
                raise PlanError("cannot read harness profile %s: %s" % (path, exc)) from exc
            return parse_profile(data, path)
    raise PlanError(
        "unknown harness %r; known harness profiles: %s (user profiles go in harness_profile_dirs)"
        % (name, ", ".join(available_profiles(extra_dirs)) or "none")
    )


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlanError("%s must be a list of strings" % where)
    return list(value)


def parse_profile(data: Any, path: str) -> Profile:
    """Validate a profile's YAML data; PlanError names the file and the problem."""

    def bad(message: str) -> PlanError:
        return PlanError("harness profile %s: %s" % (path, message))

    if not isinstance(data, dict):
        raise bad("must be a mapping")
    unknown = set(data) - _PROFILE_KEYS
    if unknown:
        raise bad("unknown key(s) %s" % ", ".join(sorted(unknown)))
    name = data.get("name")
    expected = os.path.basename(path)[:-4]
    if name != expected:
        raise bad("name %r must match the file name %r" % (name, expected))
    benchmarks = data.get("benchmarks")
    if not isinstance(benchmarks, dict) or not benchmarks:
        raise bad("benchmarks must be a non-empty mapping")
    for bench, conf in benchmarks.items():
        if not isinstance(bench, str) or not _NAME_RE.match(bench):
            raise bad("benchmark name %r is not a plain name" % (bench,))
        if conf is None:
            benchmarks[bench] = conf = {}
        if not isinstance(conf, dict):
            raise bad("benchmarks.%s must be a mapping" % bench)
        scenarios = conf.get("scenarios", list(SCENARIOS))
        _str_list(scenarios, "benchmarks.%s.scenarios" % bench)
        wrong = [s for s in scenarios if s not in SCENARIOS]
        if wrong or not scenarios:
            raise bad(
                "benchmarks.%s.scenarios: %s; scenarios are %s"
                % (bench, ", ".join(wrong) or "empty", ", ".join(SCENARIOS))
            )
    sets = data.get("background_sets") or {}
    if not isinstance(sets, dict):
        raise bad("background_sets must be a mapping")
    for set_name, members in sets.items():
        for member in _str_list(members, "background_sets.%s" % set_name):
            if member not in benchmarks:
                raise bad("background_sets.%s names unknown benchmark %r" % (set_name, member))
    if "all" not in sets:
        sets["all"] = sorted(benchmarks)
    actions = data.get("actions") or {"run_harness": {}}
    if not isinstance(actions, dict):
        raise bad("actions must be a mapping")
    for action, conf in actions.items():
        if conf is None:
            actions[action] = conf = {}
        if not isinstance(conf, dict) or set(conf) - {"files"}:
            raise bad("actions.%s may only hold 'files'" % action)
        files = conf.get("files") or {}
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and "/" not in k and isinstance(v, str) for k, v in files.items()
        ):
            raise bad("actions.%s.files must map plain file names to text" % action)
    regexes = data.get("readiness_regexes")
    if regexes is not None:
        for regex in _str_list(regexes, "readiness_regexes"):
            _check_regex(regex, "readiness_regexes", path)
    progress = data.get("progress_regex")
    if progress is not None:
        _check_regex(progress, "progress_regex", path)
        if "(?P<count>" not in progress:
            raise bad("progress_regex needs a named group 'count' (the cumulative sample count)")
    command = _check_command(data.get("command"), "command", ("argv", "env", "cwd"), bad)
    build = data.get("build")
    if build is not None:
        _check_command(build, "build", ("argv", "env", "cwd", "check", "stamp"), bad)
        if build.get("check") is not None:
            _check_command(build["check"], "build.check", ("argv", "env", "cwd"), bad)
        stamp = build.get("stamp") or {}
        if not isinstance(stamp, dict) or not all(isinstance(v, str) for v in stamp.values()):
            raise bad("build.stamp must map names to template strings")
    accuracy = data.get("accuracy")
    if accuracy is not None:
        if (
            not isinstance(accuracy, dict)
            or set(accuracy) != _ACCURACY_KEYS
            or not all(isinstance(v, str) and v for v in accuracy.values())
        ):
            raise bad("accuracy must map exactly %s to strings" % ", ".join(sorted(_ACCURACY_KEYS)))
        if "/" in accuracy["file"] or accuracy["file"] in (".", ".."):
            raise bad("accuracy.file must be a plain file name, got %r" % accuracy["file"])
        for key in ("passed", "failed"):
            if "{{" not in accuracy[key] and "{%" not in accuracy[key]:  # else once rendered
                _check_regex(accuracy[key], "accuracy.%s" % key, path)
    default_main = data.get("default_main_benchmark") or sorted(benchmarks)[0]
    if default_main not in benchmarks:
        raise bad("default_main_benchmark %r is not one of its benchmarks" % default_main)
    return Profile(
        name=name,
        path=path,
        description=str(data.get("description") or ""),
        default_main_benchmark=default_main,
        benchmarks=benchmarks,
        background_sets={k: list(v) for k, v in sets.items()},
        actions=actions,
        readiness_regexes=list(regexes) if regexes else [],
        progress_regex=progress,
        verbose_args=_str_list(data.get("verbose_args") or [], "verbose_args"),
        command=command,
        accuracy=dict(accuracy) if accuracy else None,
        build=dict(build) if build is not None else None,
    )


def _accuracy_check(profile: Profile, context: Mapping[str, Any]) -> dict[str, str]:
    """The profile's accuracy section for one benchmark: its regexes may be templates."""
    check = dict(profile.accuracy or {})
    for key in ("passed", "failed"):
        where = "%s accuracy.%s" % (profile.name, key)
        check[key] = render_template(check[key], context, where)
        _check_regex(check[key], where, profile.path)
    return check


def _check_regex(regex: str, where: str, path: str) -> None:
    try:
        re.compile(regex)
    except re.error as exc:
        raise PlanError(
            "%s in %s: %r is not a valid regex: %s" % (where, path, regex, exc)
        ) from exc


def _check_command(section: Any, where: str, keys: tuple[str, ...], bad: Any) -> dict[str, Any]:
    """command, build and build.check: argv items, env templates, a cwd template."""
    if not isinstance(section, dict) or not isinstance(section.get("argv"), list):
        raise bad("%s.argv must be a list" % where)
    if set(section) - set(keys) - {"env"}:
        raise bad("%s may only hold %s" % (where, ", ".join(sorted(set(keys) | {"env"}))))
    _check_items(section["argv"], where + ".argv", bad)
    env = section.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise bad("%s.env must map names to template strings" % where)
    if not isinstance(section.get("cwd") or "", str):
        raise bad("%s.cwd must be a template string" % where)
    return section


def _check_items(items: list[Any], where: str, bad: Any) -> None:
    for index, item in enumerate(items):
        here = "%s[%d]" % (where, index)
        if isinstance(item, str):
            continue
        if not isinstance(item, dict):
            raise bad("%s must be a template string or a mapping" % here)
        keys = set(item)
        if keys == {"splat"} or keys == {"when", "splat"}:
            continue
        if keys == {"when", "argv"} and isinstance(item["argv"], list):
            _check_items(item["argv"], here + ".argv", bad)
            continue
        raise bad("%s: use {when: EXPR, argv: [...]}, {splat: EXPR} or {when:, splat:}" % here)


# ------------------------------------------------------------------------------ rendering
def render_template(template: str, context: Mapping[str, Any], where: str) -> str:
    try:
        return _ENV.from_string(template).render(context)
    except (TemplateError, ValueError) as exc:  # ValueError: a filter's (number_at_least)
        raise PlanError("cannot render %s %r: %s" % (where, template, exc)) from exc


def evaluate(expression: str, context: Mapping[str, Any], where: str) -> Any:
    try:
        return _ENV.compile_expression(str(expression), undefined_to_none=False)(**context)
    except TemplateError as exc:
        raise PlanError("cannot evaluate %s %r: %s" % (where, expression, exc)) from exc


def render_argv(items: Sequence[Any], context: Mapping[str, Any], where: str = "argv") -> list[str]:
    """Render argv items: each string is one argument; see the module docstring for mappings."""
    argv: list[str] = []
    for index, item in enumerate(items):
        here = "%s[%d]" % (where, index)
        if isinstance(item, str):
            argv.append(render_template(item, context, here))
            continue
        if "when" in item and not evaluate(str(item["when"]), context, here + ".when"):
            continue
        if "splat" in item:
            values = evaluate(str(item["splat"]), context, here + ".splat")
            if values is None:
                continue
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise PlanError("%s.splat %r must give a list" % (here, item["splat"]))
            argv.extend(str(v) for v in values)
        else:
            argv.extend(render_argv(item["argv"], context, here + ".argv"))
    return argv


def split_args(value: Any, option: str) -> list[str]:
    """An option given as a list of arguments, or as one string split like a shell would."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise PlanError(
                "%s: cannot split %r into arguments: %s" % (option, value, exc)
            ) from exc
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise PlanError("%s must be a list of arguments or a string, got %r" % (option, value))


# --------------------------------------------------------------------------- benchmarks
def normalize_scenario(value: Any) -> str:
    text = str(value or "").replace("_", "").replace("-", "").lower()
    for scenario in SCENARIOS:
        if scenario.lower() == text:
            return scenario
    raise PlanError("unknown scenario %r; scenarios are %s" % (value, ", ".join(SCENARIOS)))


def check_benchmark(profile: Profile, benchmark: str, scenario: str, role: str) -> None:
    if benchmark not in profile.benchmarks:
        raise PlanError(
            "harness %s does not know the %s benchmark %r; its benchmarks are %s"
            % (profile.name, role, benchmark, ", ".join(sorted(profile.benchmarks)))
        )
    if scenario not in profile.scenarios(benchmark):
        raise PlanError(
            "%s benchmark %s does not support the %s scenario (harness %s supports %s for it)"
            % (role, benchmark, scenario, profile.name, ", ".join(profile.scenarios(benchmark)))
        )


def expand_backgrounds(
    profile: Profile, spec: Any, main_benchmark: str, free_slices: int, fill: bool
) -> list[str]:
    """Background benchmarks for ``free_slices`` slices, from a set name or an explicit list.

    Sets ('all', 'datacenter', 'edge', or any the profile defines) behave as the anchor's: the
    members sorted, the main benchmark dropped when there are more members than slices, then cut
    to the slices; with ``fill`` a set smaller than the free slices is repeated until every slice
    has a background. 'none' gives none. An explicit list (or comma-separated string) is used as
    given and must fit the free slices.
    """
    if spec is None:
        spec = "all"
    if isinstance(spec, str) and "," not in spec.strip():
        name = spec.strip()
        if name == "none" or name == "":
            return []
        if name in profile.background_sets:
            members = sorted(profile.background_sets[name])
            if len(members) > free_slices and main_benchmark in members:
                members.remove(main_benchmark)
            members = members[:free_slices]
            if fill and members and len(members) < free_slices:
                members = [members[i % len(members)] for i in range(free_slices)]
            return members
        if name not in profile.benchmarks:
            raise PlanError(
                "background_benchmarks %r is neither a set (%s, none) nor a benchmark of harness "
                "%s (%s)"
                % (
                    name,
                    ", ".join(sorted(profile.background_sets)),
                    profile.name,
                    ", ".join(sorted(profile.benchmarks)),
                )
            )
        listed = [name]
    elif isinstance(spec, str):
        listed = [part.strip() for part in spec.split(",") if part.strip()]
    elif isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec):
        listed = [s.strip() for s in spec]
    else:
        raise PlanError(
            "background_benchmarks must be all, none, datacenter, edge, or a list of benchmarks; "
            "got %r" % (spec,)
        )
    for bench in listed:
        check_benchmark(profile, bench, "Offline", "background")
    if len(listed) > free_slices:
        raise PlanError(
            "%d background benchmarks (%s) but only %d free slice(s) besides the main "
            "benchmark's: name fewer backgrounds, or more slices"
            % (len(listed), ", ".join(listed), free_slices)
        )
    return listed
