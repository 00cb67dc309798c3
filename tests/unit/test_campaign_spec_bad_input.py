"""Campaign specs (plugin_utils/_campaign_spec): every bad input named at its place.

Each case changes one thing in the good base spec (campaign_spec_support.base) and expects the
words of the error, written out by hand from docs/campaign.md, not computed by the code under
test. Split from test_campaign_spec.py, which keeps the file loading, expansion and engine
combinations.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from campaign_spec_support import SRC, base

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    SpecError,
    parse_spec,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    load_profile,
)


def spec_error(data: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, SRC)
    message = str(info.value)
    assert message.startswith(SRC + ": "), message
    return message


# ------------------------------------------------------------------------- bad inputs
def _set(path: list[Any], value: Any) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _del(path: list[Any]) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _cells(*rules: dict[str, Any]) -> Any:
    return _set(["cells"], list(rules))


BAD = [
    # (id, mutation, substrings every one of which the message must contain)
    (
        "unknown benchmark",
        _set(["benchmarks", "synth-mlp-tiny"], {"scenarios": ["Offline"]}),
        [
            "benchmarks.synth-mlp-tiny:",
            "unknown benchmark 'synth-mlp-tiny'",
            "synth-conv-1d, synth-mlp-large, synth-mlp-small",
        ],
    ),
    (
        "unknown scenario",
        _set(["benchmarks", "synth-mlp-small", "scenarios"], ["Offline", "Offlien"]),
        ["benchmarks.synth-mlp-small.scenarios[1]:", "unknown scenario 'Offlien'"],
    ),
    (
        "unsupported scenario",
        _set(["benchmarks", "synth-conv-1d", "scenarios"], ["SingleStream", "Server"]),
        [
            "benchmarks.synth-conv-1d.scenarios[1]:",
            "does not support the Server scenario",
            "Offline, SingleStream, MultiStream",
        ],
    ),
    (
        "scenario twice",
        _set(["benchmarks", "synth-mlp-small", "scenarios"], ["Offline", "Server", "offline"]),
        ["benchmarks.synth-mlp-small.scenarios[2]:", "already listed as scenarios[0]"],
    ),
    (
        "empty scenarios",
        _set(["benchmarks", "synth-mlp-small", "scenarios"], []),
        ["benchmarks.synth-mlp-small.scenarios:", "non-empty list"],
    ),
    (
        "unknown mode",
        _set(["benchmarks", "synth-mlp-small", "modes"], ["perf"]),
        ["benchmarks.synth-mlp-small.modes[0]:", "unknown mode 'perf'", "TEST05"],
    ),
    (
        "mode twice",
        _set(["benchmarks", "synth-conv-1d", "modes"], ["TEST04", "performance", "test04"]),
        ["benchmarks.synth-conv-1d.modes[2]:", "already listed as modes[0]"],
    ),
    (
        "mode without an action in the profile",
        _set(["benchmarks", "synth-conv-1d", "modes"], ["TEST05"]),
        ["benchmarks.synth-conv-1d.modes[0]:", "heteromig_synthetic", "TEST05", "run_audit_test05"],
    ),
    (
        "two systems with one name",
        _set(
            ["systems"],
            [{"name": "sysA", "hosts": "a"}, {"name": "sysA", "hosts": "b"}],
        ),
        ["systems[1].name:", "already defined as systems[0]"],
    ),
    (
        "system without hosts",
        _del(["systems", 0, "hosts"]),
        ["systems[0].hosts:", "inventory group or host pattern"],
    ),
    (
        "system hosts not a string",
        _set(["systems", 0, "hosts"], ["h1", "h2"]),
        ["systems[0].hosts:"],
    ),
    (
        "system name with a slash",
        _set(["systems", 0, "name"], "a/b"),
        ["systems[0].name:", "plain name"],
    ),
    (
        "layout and gpus",
        _set(["systems", 0, "gpus"], [{"devices": [0], "layout": "all-1g"}]),
        ["systems[0]:", "not both"],
    ),
    (
        "bad layout",
        _set(["systems", 0, "layout"], ["3g.40gb", "zz"]),
        ["systems[0].layout:", "'zz'"],
    ),
    (
        "gpus not a list of mappings",
        _set(["systems", 0], {"name": "sysA", "hosts": "h", "gpus": "all-1g"}),
        ["systems[0].gpus:", "list of {devices, layout}"],
    ),
    (
        "gpus entry without layout",
        _set(["systems", 0], {"name": "sysA", "hosts": "h", "gpus": [{"devices": [0]}]}),
        ["systems[0].gpus:", "layout is required"],
    ),
    (
        "submission name without the hetero suffix",
        _set(["systems", 0, "submission_name"], "DGX-H100_H100-SXM5-80GB-MIG_1x1g.10gb_TRT"),
        ["systems[0].submission_name:", "_HeteroMultiUse"],
    ),
    (
        "gpus_at_once 0",
        _set(["systems", 0, "gpus_at_once"], 0),
        ["systems[0].gpus_at_once:", ">= 1"],
    ),
    (
        "unknown system key",
        _set(["systems", 0, "host"], "x"),
        ["systems[0].host:", "unknown key", "did you mean hosts"],
    ),
    (
        "no systems",
        _set(["systems"], []),
        ["systems:", "non-empty list"],
    ),
    (
        "negative retries",
        _set(["defaults", "retries"], -1),
        ["defaults.retries:", ">= 0", "-1"],
    ),
    (
        "retries not a number",
        _set(["defaults", "retries"], "2"),
        ["defaults.retries:", ">= 0"],
    ),
    (
        "negative retries in a cell rule",
        _cells({"match": {"benchmark": "synth-conv-1d"}, "set": {"retries": -2}}),
        ["cells[0].set.retries:", ">= 0"],
    ),
    (
        "negative start_time_buffer",
        _set(["defaults", "start_time_buffer"], -1),
        ["defaults.start_time_buffer:", "must not be negative"],
    ),
    (
        "negative timeout",
        _set(["defaults", "background_benchmark_timeout"], -5),
        ["defaults.background_benchmark_timeout:", "must not be negative"],
    ),
    (
        "negative end buffer in a rule",
        _cells({"match": {}, "set": {"end_time_buffer_min": -1}}),
        ["cells[0].set.end_time_buffer_min:", "must not be negative"],
    ),
    (
        "zero main duration",
        _set(["defaults", "main_benchmark_duration"], 0),
        ["defaults.main_benchmark_duration:", "greater than 0"],
    ),
    (
        "negative background duration",
        _set(["defaults", "background_benchmark_duration"], -3),
        ["defaults.background_benchmark_duration:", "'automatic'"],
    ),
    (
        "duration as a string",
        _set(["defaults", "main_benchmark_duration"], "5000"),
        ["defaults.main_benchmark_duration:", "whole number", "'5000'"],
    ),
    (
        "bool as a string",
        _set(["defaults", "lenient"], "yes"),
        ["defaults.lenient:", "true or false"],
    ),
    (
        "value outside the choices",
        _set(["defaults", "start_time_buffer_mode"], "fast"),
        ["defaults.start_time_buffer_mode:", "fixed, steady"],
    ),
    (
        "qps auto for an Offline cell",
        _cells({"match": {"benchmark": "synth-mlp-small"}, "set": {"main_target_qps": "auto"}}),
        [
            "cells[0].set.main_target_qps:",
            "auto",
            "sysA/synth-mlp-small/Offline/performance",
        ],
    ),
    (
        "qps auto in the defaults reaches an Offline cell",
        _set(["defaults", "main_target_qps"], "auto"),
        ["defaults.main_target_qps:", "Offline"],
    ),
    (
        "qps neither a number nor auto",
        _set(["defaults", "main_target_qps"], "fast"),
        ["defaults.main_target_qps:", "a number or 'auto'"],
    ),
    (
        "unknown option with a suggestion",
        _set(["defaults", "main_benchmark_durations"], 5000),
        [
            "defaults.main_benchmark_durations:",
            "no option 'main_benchmark_durations'",
            "did you mean main_benchmark_duration",
        ],
    ),
    (
        "unknown option in a cell rule",
        _cells({"match": {}, "set": {"start_buffer": 3}}),
        ["cells[0].set.start_buffer:", "did you mean start_time_buffer"],
    ),
    (
        "an option the cell sets",
        _set(["defaults", "main_scenario"], "Server"),
        ["defaults.main_scenario:", "set by each cell"],
    ),
    (
        "run_id in a rule",
        _cells({"match": {}, "set": {"run_id": "x"}}),
        ["cells[0].set.run_id:", "set by each cell"],
    ),
    (
        "harness among the defaults",
        _set(["defaults", "harness"], "nvidia_mlperf"),
        ["defaults.harness:", "top level"],
    ),
    (
        "newer spec version",
        _set(["version"], 2),
        ["version:", "written for a newer heteromig", "up to 1"],
    ),
    (
        "no version",
        _del(["version"]),
        ["version:", "required"],
    ),
    (
        "version as a string",
        _set(["version"], "1"),
        ["version:", "whole number"],
    ),
    (
        "bad campaign name",
        _set(["campaign"], "local demo"),
        ["campaign:", "plain name"],
    ),
    (
        "unknown top-level key",
        _set(["benchmark"], {}),
        ["benchmark:", "unknown key", "did you mean benchmarks"],
    ),
    (
        "unknown harness",
        _set(["harness"], "nope_harness"),
        ["harness:", "unknown harness 'nope_harness'"],
    ),
    (
        "unknown benchmark key",
        _set(["benchmarks", "synth-mlp-small", "scenario"], ["Offline"]),
        ["benchmarks.synth-mlp-small.scenario:", "did you mean scenarios"],
    ),
    (
        "rule matching an unknown benchmark",
        _cells({"match": {"benchmark": "synth-mlp-large"}, "set": {"lenient": True}}),
        ["cells[0].match.benchmark:", "not in the spec's benchmarks"],
    ),
    (
        "rule matching an unknown system",
        _cells({"match": {"system": "sysB"}, "set": {"lenient": True}}),
        ["cells[0].match.system:", "no system named 'sysB'"],
    ),
    (
        "rule matching an unknown mode",
        _cells({"match": {"mode": "accuracy-only"}, "set": {"lenient": True}}),
        ["cells[0].match.mode:", "unknown mode"],
    ),
    (
        "rule matching no cell",
        _cells(
            {
                "match": {"benchmark": "synth-conv-1d", "scenario": "Offline"},
                "set": {"lenient": True},
            }
        ),
        ["cells[0].match:", "matches no cell"],
    ),
    (
        "rule without set",
        _cells({"match": {}}),
        ["cells[0].set:", "required"],
    ),
    (
        "unknown rule key",
        _cells({"when": {}, "set": {"lenient": True}}),
        ["cells[0].when:", "unknown key"],
    ),
    (
        "background list naming an unknown benchmark",
        _set(["defaults", "background_benchmarks"], ["synth-mlp-small", "synth-nope"]),
        ["defaults.background_benchmarks:", "synth-nope"],
    ),
    (
        "background list as a wrong type",
        _set(["defaults", "background_benchmarks"], 3),
        ["defaults.background_benchmarks:", "background_benchmarks must be"],
    ),
    (
        "system description field misspelt",
        _set(["systems", 0, "system_desc"], {"coolling": "air"}),
        ["systems[0].system_desc:", "'coolling' is no system description field", "cooling"],
    ),
    (
        "system description setting a field the layout fixes",
        _set(["systems", 0, "system_desc"], {"system_name": "mine"}),
        ["systems[0].system_desc:", "system_name is set by the submission layout"],
    ),
    (
        "system description status the checker refuses",
        _set(["systems", 0, "system_desc"], {"status": "Available"}),
        ["systems[0].system_desc:", "status must be one of available, preview, rdi"],
    ),
    (
        "system description with a list value",
        _set(["systems", 0, "system_desc"], {"cooling": ["air"]}),
        ["systems[0].system_desc:", "cooling must be a string or a number"],
    ),
    (
        "implementation description field misspelt",
        _set(["systems", 0, "implementation_desc"], {"retrainig": "no"}),
        ["systems[0].implementation_desc:", "no implementation description field", "retraining"],
    ),
    (
        "implementation description not a mapping",
        _set(["systems", 0, "implementation_desc"], "fp16"),
        ["systems[0].implementation_desc:", "must be a mapping"],
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_spec_names_the_place(mutate: Any, expected: list[str]) -> None:
    data = base()
    parse_spec(copy.deepcopy(data), SRC)  # the base itself is good
    mutate(data)
    message = spec_error(data)
    for text in expected:
        assert text in message, message


def test_top_level_not_a_mapping() -> None:
    assert "must be a mapping" in spec_error(["version", 1])
    assert "empty" in spec_error(None)


def test_accuracy_mode_needs_an_accuracy_section() -> None:
    synthetic = load_profile("heteromig_synthetic")
    no_accuracy = dataclasses.replace(synthetic, accuracy=None)
    data = base()
    data["benchmarks"]["synth-mlp-small"]["modes"] = ["performance", "accuracy"]
    with pytest.raises(SpecError) as info:
        parse_spec(data, SRC, lambda name, dirs: no_accuracy)
    assert "benchmarks.synth-mlp-small.modes[1]:" in str(info.value)
    assert "no 'accuracy' section" in str(info.value)
