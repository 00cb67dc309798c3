# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of engine_build: a harness profile's ``build`` section, rendered per build.

A harness profile says how its benchmarks run (``command``) and, beside it, how their engines are
built (``build``), so that runs and builds come from one source::

    build:
      argv: [...]            # rendered like command.argv: one argument per item, no shell
      env: {NAME: template}
      cwd: template
      check:                 # optional: a command that says, building nothing, whether the
        argv: [...]          # engine is current (one JSON line: action cached|build|rebuild,
        env: {NAME: template}  # reason, path, content_key); without it the host keeps a stamp
      stamp: {name: template}  # optional: more inputs of that stamp (a code revision, ...)

The action plugin ``heteromig.fleet.engine_build`` renders, per combination of benchmark,
scenario and accuracy target, the command for a MIG slice and (with ``shared_gpu``) for a whole
GPU; the module runs them on the host, once per GPU model and profile, and knows nothing of any
profile. Pure functions; errors are ``PlanError`` with a message that names the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_spec import (
    HARNESS_VERSION,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    PlanError,
    Profile,
    load_profile,
    normalize_scenario,
    render_argv,
    render_template,
)

ACCURACY_TARGETS = ("99", "99.9")
# accuracy target -> the key of a benchmark's config_ver mapping in a profile
_LEVELS = {"99": "default", "99.9": "high"}


# --------------------------------------------------------------------------- combinations
def split_benchmark(profile: Profile, name: str, target: str | None) -> tuple[str, str]:
    """'bert-99.9' -> ('bert', '99.9') when the profile knows 'bert' but not 'bert-99.9'."""
    if name not in profile.benchmarks:
        for suffix in ("99.9", "99"):
            stem = name[: -len(suffix) - 1]
            if name.endswith("-" + suffix) and stem in profile.benchmarks:
                if target not in (None, suffix):
                    raise PlanError(
                        "benchmark %s names accuracy target %s, but accuracy_target is %s"
                        % (name, suffix, target)
                    )
                return stem, suffix
    return name, target or "99"


def config_ver_for(profile: Profile, benchmark: str, target: str) -> str | None:
    """The profile's config_ver of a benchmark at an accuracy target (99: default, 99.9: high)."""
    if target not in ACCURACY_TARGETS:
        raise PlanError(
            "accuracy_target must be %s, got %r" % (" or ".join(ACCURACY_TARGETS), target)
        )
    conf = profile.benchmarks[benchmark].get("config_ver")
    if conf is None or isinstance(conf, str):
        return conf
    level = _LEVELS[target]
    if level not in conf:
        raise PlanError(
            "benchmark %s of harness %s has no %s accuracy variant (config_ver has %s)"
            % (
                benchmark,
                profile.name,
                "high (99.9)" if level == "high" else "default (99)",
                ", ".join(sorted(conf)),
            )
        )
    return str(conf[level])


def normalize_combinations(profile: Profile, raw: Any) -> list[dict[str, Any]]:
    """Validated combinations; those the profile builds alike (one config_ver) appear once."""
    if not isinstance(raw, list) or not raw:
        raise PlanError("combinations is empty: name at least one benchmark and scenario")
    seen: set[tuple[str, str, str]] = set()
    combos = []
    for entry in raw:
        if not isinstance(entry, Mapping) or "scenario" not in entry:
            raise PlanError("every combination needs a benchmark and a scenario, got %r" % entry)
        name = entry.get("benchmark", entry.get("model"))
        if not isinstance(name, str) or not name:
            raise PlanError("every combination needs a benchmark, got %r" % (dict(entry),))
        given = entry.get("accuracy_target")
        benchmark, target = split_benchmark(profile, name, None if given is None else str(given))
        if benchmark not in profile.benchmarks:
            raise PlanError(
                "harness %s does not know the benchmark %r; its benchmarks are %s"
                % (profile.name, benchmark, ", ".join(sorted(profile.benchmarks)))
            )
        scenario = normalize_scenario(entry["scenario"])
        if scenario not in profile.scenarios(benchmark):
            raise PlanError(
                "benchmark %s does not support the %s scenario (harness %s supports %s for it)"
                % (benchmark, scenario, profile.name, ", ".join(profile.scenarios(benchmark)))
            )
        config_ver = config_ver_for(profile, benchmark, target)
        identity = (benchmark, scenario, config_ver if config_ver is not None else target)
        if identity in seen:
            continue
        seen.add(identity)
        combos.append(
            {
                "benchmark": benchmark,
                "scenario": scenario,
                "accuracy_target": target,
                "config_ver": config_ver,
            }
        )
    return combos


# ------------------------------------------------------------------------------ rendering
def _render(section: Mapping[str, Any], context: Mapping[str, Any], where: str) -> dict[str, Any]:
    env = {
        key: render_template(value, context, "%s.env.%s" % (where, key))
        for key, value in (section.get("env") or {}).items()
    }
    cwd = section.get("cwd")
    return {
        "argv": render_argv(section["argv"], context, where + ".argv"),
        "env": env,
        "cwd": render_template(cwd, context, where + ".cwd") if cwd else None,
    }


def plan_builds(
    options: Mapping[str, Any],
    *,
    python: str,
    host_root: str,
    host_pythonpath: str,
    engine_dir: str,
) -> list[dict[str, Any]]:
    """What the engine_build module runs: per combination, the commands for a slice and a GPU.

    ``options`` are the task's: harness, harness_profile_dirs, harness_vars, combinations,
    shared_gpu and force.
    """
    harness = options.get("harness") or "heteromig_synthetic"
    profile = load_profile(harness, options.get("harness_profile_dirs"))
    if profile.build is None:
        raise PlanError(
            "harness %s has no build command (its profile %s has no 'build' section): its runs "
            "need no engines built per MIG profile" % (profile.name, profile.path)
        )
    combos = normalize_combinations(profile, options.get("combinations"))
    harness_vars = options.get("harness_vars") or {}
    if not isinstance(harness_vars, Mapping):
        raise PlanError("harness_vars must be a mapping, got %r" % (harness_vars,))
    base = {
        "python": python,
        "host_root": host_root,
        "host_pythonpath": host_pythonpath,
        "engine_dir": engine_dir,
        "vars": dict(harness_vars),
        "force": bool(options.get("force")),
        "harness_version": HARNESS_VERSION,
    }
    variants = {"mig": False, "shared": True} if options.get("shared_gpu") else {"mig": False}
    build = profile.build
    builds = []
    for combo in combos:
        rendered: dict[str, Any] = dict(combo, harness=profile.name, commands={}, checks={})
        for variant, shared in variants.items():
            context = dict(base, shared_gpu=shared, **combo)
            where = "%s build" % profile.name
            rendered["commands"][variant] = _render(build, context, where)
            if build.get("check"):
                rendered["checks"][variant] = _render(build["check"], context, where + ".check")
        context = dict(base, shared_gpu=False, **combo)
        rendered["stamp"] = {
            key: render_template(value, context, "%s build.stamp.%s" % (profile.name, key))
            for key, value in (build.get("stamp") or {}).items()
        }
        builds.append(rendered)
    return builds
