# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a campaign spec's values may be, and how a bad one is named (controller only).

The vocabulary of a sweep spec (modes, the options each cell sets, the tuning keys), the strict
YAML reading of a spec file (a key given twice is an error), hetero_run's option table
(``_hetero_arg_spec``), and :class:`Checker`, whose every error names the file and the
place. :mod:`_campaign_spec` parses a spec with them. No Ansible imports.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    SCENARIOS,
    PlanError,
    normalize_scenario,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_arg_spec import (
    ARGUMENT_SPEC,
)

MODES = ("performance", "accuracy", "TEST01", "TEST04", "TEST05")
AUTO = "auto"
TUNED = "tuned"  # main_target_qps: tuned -> the value of the tuned file (docs/campaign.md)

# Options each cell sets itself, and options given at the spec's top level.
CELL_OPTIONS = ("main_benchmark", "main_scenario", "main_mode", "main_action")
RESERVED_OPTIONS = (*CELL_OPTIONS, "run_id", "resume")
TOP_LEVEL_OPTIONS = ("harness", "harness_profile_dirs")
# Tuning settings (docs/campaign.md, "Tuning"): not hetero_run options, kept in Cell.tuning.
TUNING_KEYS = (
    "tune_start",
    "tune_trial_duration",
    "tune_tolerance",
    "tune_max_trials",
    "tuned_file",
)
EXTRA_KEYS = ("retries", *TUNING_KEYS)  # not hetero_run options, accepted next to them

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(Exception):
    """A bad campaign spec; the message names the file and the place."""


# ------------------------------------------------------------------- hetero_run options
def hetero_run_options() -> dict[str, dict[str, Any]]:
    """hetero_run's ARGUMENT_SPEC (``_hetero_arg_spec``): the option names, types, choices and
    defaults, as the action checks them. A copy: the caller may change it."""
    return copy.deepcopy(ARGUMENT_SPEC)


# ---------------------------------------------------------------------------- YAML input
class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__("line %d: duplicate key %r (first given at line %d)" % (line, key, first))


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the constructor below reports it
            continue
        line = key_node.start_mark.line + 1
        if first is not None:
            raise _DuplicateKey(key, line, first)
        seen[key] = line
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=True))


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_spec_file(path: str) -> Any:
    """The YAML data of a campaign spec file; every problem is a SpecError naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise SpecError("%s: campaign spec not found" % path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("%s: cannot read the campaign spec: %s" % (path, exc)) from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError("%s: not valid YAML: %s" % (path, exc)) from None


# ------------------------------------------------------------------------------ checking
def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "path": "a path (string)",
    "list": "a list",
    "dict": "a mapping",
}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return is_int(value)
    if kind == "float":
        return is_number(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("str", "path"):
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, list)
    if kind == "dict":
        return isinstance(value, dict)
    return True  # raw


def _is_duration(name: str) -> bool:
    return any(word in name for word in ("duration", "timeout", "buffer"))


class Checker:
    """Validation helpers that know the file the data came from."""

    def __init__(self, source: str, options: Mapping[str, Mapping[str, Any]]) -> None:
        self.source = source
        self.options = options

    def error(self, where: str, message: str) -> SpecError:
        return SpecError("%s: %s: %s" % (self.source, where, message) if where else message)

    def mapping(self, value: Any, where: str, keys: Iterable[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where or "top level", "must be a mapping, got %s" % _type_name(value))
        allowed = list(keys)
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                raise self.error(
                    "%s.%s" % (where, key) if where else str(key),
                    "unknown key%s; allowed: %s"
                    % (" (did you mean %s?)" % close[0] if close else "", ", ".join(allowed)),
                )
        return value

    def string_list(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not value:
            raise self.error(where, "must be a non-empty list, got %r" % (value,))
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error("%s[%d]" % (where, i), "must be a string, got %r" % (item,))
        return list(value)

    def name(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise self.error(
                where, "must be a plain name ([A-Za-z0-9][A-Za-z0-9_.-]*), got %r" % (value,)
            )
        return value

    def option(self, name: Any, value: Any, where: str, *, reserved_ok: bool = False) -> None:
        """One hetero_run option (or ``retries``) as a spec gives it in defaults or a cell rule."""
        if name in RESERVED_OPTIONS and not reserved_ok:
            raise self.error(
                where,
                "%s is set by each cell (from benchmarks, their scenarios and modes, and the "
                "ledger); it cannot be given here" % name,
            )
        if name in TOP_LEVEL_OPTIONS:
            raise self.error(where, "%s is given at the top level of the spec, not here" % name)
        if name == "retries":
            if not is_int(value) or value < 0:
                raise self.error(where, "must be a whole number >= 0, got %r" % (value,))
            return
        if name in TUNING_KEYS:
            self.tuning_key(name, value, where)
            return
        spec = self.options.get(name) if isinstance(name, str) else None
        if spec is None:
            known = [*self.options, *EXTRA_KEYS]
            close = difflib.get_close_matches(str(name), known, n=1)
            raise self.error(
                where,
                "hetero_run has no option %r%s (see ansible-doc heteromig.fleet.hetero_run)"
                % (name, "; did you mean %s?" % close[0] if close else ""),
            )
        if value is None:  # null: back to hetero_run's default
            return
        if name == "main_target_qps" and value in (AUTO, TUNED):
            return
        if name == "background_benchmark_duration":
            if isinstance(value, str) and value.strip().lower() == "automatic":
                return
            if not is_int(value) or value <= 0:
                raise self.error(
                    where, "must be 'automatic' or a whole number of ms > 0, got %r" % (value,)
                )
            return
        kind = str(spec.get("type") or "raw")
        if not _type_ok(kind, value):
            raise self.error(
                where,
                "must be %s%s, got %r (%s)"
                % (
                    _TYPE_WORDS.get(kind, kind),
                    " or 'auto' or 'tuned'" if name == "main_target_qps" else "",
                    value,
                    _type_name(value),
                ),
            )
        choices = spec.get("choices")
        if choices is not None and value not in choices:
            raise self.error(
                where, "must be one of %s, got %r" % (", ".join(map(str, choices)), value)
            )
        elements = spec.get("elements")
        if kind == "list" and elements:
            for i, item in enumerate(value):
                if not _type_ok(str(elements), item):
                    raise self.error(
                        "%s[%d]" % (where, i),
                        "must be %s, got %r" % (_TYPE_WORDS.get(str(elements), elements), item),
                    )
        if is_number(value):
            if name == "main_benchmark_duration" and value <= 0:
                raise self.error(where, "must be greater than 0 ms, got %r" % (value,))
            if _is_duration(name) and value < 0:
                raise self.error(where, "must not be negative, got %r" % (value,))
            if name in ("main_target_qps", "background_target_qps") and value <= 0:
                raise self.error(where, "must be greater than 0, got %r" % (value,))

    def tuning_key(self, name: str, value: Any, where: str) -> None:
        """A tune_* setting (null: back to the default)."""
        if value is None:
            return
        if name == "tune_start":
            if not is_number(value) or value <= 0:
                raise self.error(
                    where,
                    "must be a number > 0 (a target QPS, e.g. from isolation), got %r" % (value,),
                )
        elif name == "tune_trial_duration":
            if not is_int(value) or value <= 0:
                raise self.error(where, "must be a whole number of ms > 0, got %r" % (value,))
        elif name == "tune_tolerance":
            if not is_number(value) or not 0.001 <= value <= 0.15:
                raise self.error(
                    where,
                    "must be a fraction between 0.001 and 0.15 (0.025 is 2.5%%), got %r" % (value,),
                )
        elif name == "tune_max_trials":
            if not is_int(value) or not 1 <= value <= 30:
                raise self.error(where, "must be a whole number from 1 to 30, got %r" % (value,))
        elif not isinstance(value, str) or not value.strip():
            raise self.error(where, "must be a path (a non-empty string), got %r" % (value,))

    def option_map(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, "must be a mapping of options, got %s" % _type_name(value))
        for key, item in value.items():
            self.option(key, item, "%s.%s" % (where, key))
        return dict(value)


def _canonical_mode(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    for mode in MODES:
        if mode.lower() == value.strip().lower():
            return mode
    return None


def check_scenario(check: Checker, value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise check.error(where, "must be a scenario name, got %r" % (value,))
    try:
        return normalize_scenario(value)
    except PlanError:
        raise check.error(
            where, "unknown scenario %r; scenarios are %s" % (value, ", ".join(SCENARIOS))
        ) from None


def check_mode(check: Checker, value: Any, where: str) -> str:
    mode = _canonical_mode(value)
    if mode is None:
        raise check.error(where, "unknown mode %r; modes are %s" % (value, ", ".join(MODES)))
    return mode
