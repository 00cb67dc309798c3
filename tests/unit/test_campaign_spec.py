"""Campaign specs (plugin_utils/_campaign_spec): validation, expansion, engine combinations.

Expectations are written out by hand from docs/campaign.md, not computed by the code under test.
The built-in heteromig_synthetic profile is the harness: synth-mlp-small (all four scenarios),
synth-mlp-large (Offline, Server), synth-conv-1d (Offline, SingleStream, MultiStream); actions
run_harness, run_audit_test01, run_audit_test04 (no TEST05); sets all = the three,
datacenter = mlp-large + mlp-small, edge = conv-1d + mlp-small.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    SpecError,
    engine_combinations,
    hetero_run_options,
    layout_options,
    load_spec,
    parse_spec,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    load_profile,
)

SRC = "campaign.yml"

DEMO = """\
version: 1
campaign: local-demo
defaults:
  main_benchmark_duration: 5000
  start_time_buffer: 1000
  retries: 1
systems:
  - name: local-h100
    hosts: gpu_hosts
    layout: all-1g
    submission_name: DGX-H100_H100-SXM5-80GB-MIG_1x1g.10gb_TRT_HeteroMultiUse
benchmarks:
  synth-mlp-small:
    scenarios: [Offline, Server]
    modes: [performance, accuracy]
  synth-conv-1d:
    scenarios: [SingleStream]
    modes: [performance, TEST04]
cells:
  - match: {benchmark: synth-mlp-small, scenario: Server}
    set: {main_target_qps: 400}
  - match: {benchmark: synth-mlp-small, scenario: Server, mode: performance}
    set: {main_target_qps: auto}
"""


def base() -> dict[str, Any]:
    return {
        "version": 1,
        "campaign": "c1",
        "defaults": {"main_benchmark_duration": 5000, "start_time_buffer": 1000},
        "systems": [{"name": "sysA", "hosts": "gpu_hosts", "layout": "all-1g"}],
        "benchmarks": {
            "synth-mlp-small": {"scenarios": ["Offline", "Server"], "modes": ["performance"]},
            "synth-conv-1d": {"scenarios": ["SingleStream"], "modes": ["performance", "TEST04"]},
        },
    }


def spec_error(data: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, SRC)
    message = str(info.value)
    assert message.startswith(SRC + ": "), message
    return message


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "campaign.yml"
    path.write_text(text, encoding="utf-8")
    return str(path)


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


# ---------------------------------------------------------------------------- the file
def test_load_spec_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yml")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == path + ": campaign spec not found"


def test_load_spec_not_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\ncampaign: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(path + ": not valid YAML")


def test_load_spec_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- version: 1\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == path + ": top level: must be a mapping, got list"


def test_load_spec_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing\n")
    with pytest.raises(SpecError, match="empty"):
        load_spec(path)


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        ("version: 1\nversion: 1\n", "version", 2, 1),
        (
            DEMO.replace(
                "    modes: [performance, TEST04]\n",
                "    modes: [performance]\n    modes: [TEST04]\n",
            ),
            "modes",
            19,
            18,
        ),
        (DEMO + "benchmarks: {}\n", "benchmarks", 24, 12),
        (
            DEMO.replace(
                "set: {main_target_qps: 400}", "set: {main_target_qps: 400, main_target_qps: 300}"
            ),
            "main_target_qps",
            21,
            21,
        ),
    ],
    ids=["top", "nested", "repeated-section", "flow-mapping"],
)
def test_load_spec_duplicate_keys(
    tmp_path: Path, text: str, key: str, line: int, first: int
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(path + ": not valid YAML: ")
    assert "line %d: duplicate key %r (first given at line %d)" % (line, key, first) in str(
        info.value
    )


def test_load_spec_demo(tmp_path: Path) -> None:
    campaign = load_spec(write(tmp_path, DEMO))
    assert campaign.name == "local-demo"
    assert campaign.version == 1
    assert campaign.harness == "heteromig_synthetic"
    assert campaign.harness_profile_dirs == []
    assert campaign.source.endswith("campaign.yml")
    assert campaign.defaults == {
        "main_benchmark_duration": 5000,
        "start_time_buffer": 1000,
        "retries": 1,
    }
    (system,) = campaign.systems
    assert system.name == "local-h100"
    assert system.hosts == "gpu_hosts"
    assert system.layout == "all-1g"
    assert system.layout_gpus is None
    assert system.submission_name == "DGX-H100_H100-SXM5-80GB-MIG_1x1g.10gb_TRT_HeteroMultiUse"
    assert system.gpus_at_once == 1
    assert [c.id for c in campaign.cells] == [
        "local-h100/synth-mlp-small/Offline/performance",
        "local-h100/synth-mlp-small/Offline/accuracy",
        "local-h100/synth-mlp-small/Server/performance",
        "local-h100/synth-mlp-small/Server/accuracy",
        "local-h100/synth-conv-1d/SingleStream/performance",
        "local-h100/synth-conv-1d/SingleStream/TEST04",
    ]
    common = {
        "harness": "heteromig_synthetic",
        "harness_profile_dirs": [],
        "main_benchmark_duration": 5000,
        "start_time_buffer": 1000,
    }
    by_id = {c.id: c for c in campaign.cells}
    tuned = by_id["local-h100/synth-mlp-small/Server/performance"]
    assert tuned.tune is True
    assert tuned.options == {
        **common,
        "main_benchmark": "synth-mlp-small",
        "main_scenario": "Server",
        "main_mode": "PerformanceOnly",
        "main_action": "run_harness",
    }
    accuracy = by_id["local-h100/synth-mlp-small/Server/accuracy"]
    assert accuracy.tune is False
    assert accuracy.options == {
        **common,
        "main_target_qps": 400,
        "main_benchmark": "synth-mlp-small",
        "main_scenario": "Server",
        "main_mode": "AccuracyOnly",
        "main_action": "run_harness",
    }
    audit = by_id["local-h100/synth-conv-1d/SingleStream/TEST04"]
    assert (audit.system, audit.benchmark, audit.scenario, audit.mode) == (
        "local-h100",
        "synth-conv-1d",
        "SingleStream",
        "TEST04",
    )
    assert (audit.main_action, audit.main_mode) == ("run_audit_test04", "PerformanceOnly")
    assert audit.options["main_action"] == "run_audit_test04"
    # 5 s main + 1 s start buffer + 60 s overhead
    assert {c.expected_s for c in campaign.cells} == {66.0}
    assert {c.retries for c in campaign.cells} == {1}


# --------------------------------------------------------------------------- expansion
def test_order_systems_then_benchmarks_scenarios_modes() -> None:
    data = {
        "version": 1,
        "campaign": "order",
        "systems": [{"name": "zeta", "hosts": "z"}, {"name": "alpha", "hosts": "a"}],
        "benchmarks": {
            "synth-mlp-small": {
                "scenarios": ["Server", "Offline"],
                "modes": ["TEST01", "performance"],
            },
            "synth-conv-1d": {"scenarios": ["MultiStream"]},
        },
    }
    campaign = parse_spec(data, SRC)
    assert [c.id for c in campaign.cells] == [
        "zeta/synth-mlp-small/Server/TEST01",
        "zeta/synth-mlp-small/Server/performance",
        "zeta/synth-mlp-small/Offline/TEST01",
        "zeta/synth-mlp-small/Offline/performance",
        "zeta/synth-conv-1d/MultiStream/performance",
        "alpha/synth-mlp-small/Server/TEST01",
        "alpha/synth-mlp-small/Server/performance",
        "alpha/synth-mlp-small/Offline/TEST01",
        "alpha/synth-mlp-small/Offline/performance",
        "alpha/synth-conv-1d/MultiStream/performance",
    ]
    first = campaign.cells[0]
    assert (first.main_action, first.main_mode) == ("run_audit_test01", "PerformanceOnly")
    # no defaults: hetero_run's 600000 ms + 10000 ms, + 60 s; retries 1
    assert first.expected_s == 670.0
    assert first.retries == 1
    assert first.options == {
        "harness": "heteromig_synthetic",
        "harness_profile_dirs": [],
        "main_benchmark": "synth-mlp-small",
        "main_scenario": "Server",
        "main_mode": "PerformanceOnly",
        "main_action": "run_audit_test01",
    }


def test_scenario_and_mode_names_are_normalised() -> None:
    data = base()
    data["benchmarks"] = {"synth-mlp-small": {"scenarios": ["single_stream"], "modes": ["test01"]}}
    campaign = parse_spec(data, SRC)
    assert [c.id for c in campaign.cells] == ["sysA/synth-mlp-small/SingleStream/TEST01"]


def test_overrides_apply_in_order_and_null_clears() -> None:
    data = base()
    data["defaults"]["retries"] = 2
    data["defaults"]["lenient"] = True
    data["systems"].append({"name": "sysB", "hosts": "b", "gpus_at_once": 2})
    data["cells"] = [
        {"match": {"scenario": "Server"}, "set": {"main_target_qps": 400, "retries": 0}},
        {"match": {"system": "sysB", "scenario": "Server"}, "set": {"main_target_qps": 250.5}},
        {"match": {"system": "sysB", "mode": "TEST04"}, "set": {"lenient": None}},
        {
            "match": {
                "system": "sysA",
                "benchmark": "synth-mlp-small",
                "scenario": "Server",
                "mode": "performance",
            },
            "set": {"main_target_qps": "auto", "main_benchmark_duration": 9000},
        },
        {"match": {"system": "sysA", "scenario": "Server"}, "set": {"start_time_buffer": 0}},
    ]
    campaign = parse_spec(data, SRC)
    by_id = {c.id: c for c in campaign.cells}
    a_server = by_id["sysA/synth-mlp-small/Server/performance"]
    assert a_server.tune is True
    assert "main_target_qps" not in a_server.options
    assert a_server.options["main_benchmark_duration"] == 9000
    assert a_server.options["start_time_buffer"] == 0
    assert a_server.retries == 0
    assert a_server.expected_s == 69.0  # 9 s + 0 s + 60 s
    b_server = by_id["sysB/synth-mlp-small/Server/performance"]
    assert b_server.tune is False
    assert b_server.options["main_target_qps"] == 250.5
    assert b_server.retries == 0
    assert b_server.options["lenient"] is True
    b_audit = by_id["sysB/synth-conv-1d/SingleStream/TEST04"]
    assert "lenient" not in b_audit.options
    assert b_audit.retries == 2
    assert by_id["sysA/synth-mlp-small/Offline/performance"].retries == 2
    assert campaign.systems[1].gpus_at_once == 2


def test_auto_allowed_for_single_and_multi_stream() -> None:
    data = base()
    data["benchmarks"]["synth-conv-1d"]["scenarios"] = ["SingleStream", "MultiStream"]
    data["cells"] = [{"match": {"benchmark": "synth-conv-1d"}, "set": {"main_target_qps": "auto"}}]
    campaign = parse_spec(data, SRC)
    assert [c.id for c in campaign.cells if c.tune] == [
        "sysA/synth-conv-1d/SingleStream/performance",
        "sysA/synth-conv-1d/SingleStream/TEST04",
        "sysA/synth-conv-1d/MultiStream/performance",
        "sysA/synth-conv-1d/MultiStream/TEST04",
    ]


def test_a_later_number_undoes_auto() -> None:
    data = base()
    data["cells"] = [
        {"match": {"scenario": "Server"}, "set": {"main_target_qps": "auto"}},
        {"match": {"scenario": "Server"}, "set": {"main_target_qps": 100}},
    ]
    cell = next(c for c in parse_spec(data, SRC).cells if c.scenario == "Server")
    assert cell.tune is False
    assert cell.options["main_target_qps"] == 100


def test_harness_profile_dirs_reach_the_options(tmp_path: Path) -> None:
    data = base()
    data["harness_profile_dirs"] = [str(tmp_path)]
    campaign = parse_spec(data, SRC)
    assert campaign.harness_profile_dirs == [str(tmp_path)]
    assert campaign.cells[0].options["harness_profile_dirs"] == [str(tmp_path)]


def test_layout_options() -> None:
    data = base()
    data["systems"] = [
        {"name": "a", "hosts": "a", "layout": "all-1g"},
        {"name": "b", "hosts": "b", "gpus": [{"devices": [0], "layout": "all-1g"}]},
        {"name": "c", "hosts": "c"},
        {"name": "d", "hosts": "d", "layout": ["3g.40gb", "2x1g.10gb"]},
    ]
    systems = parse_spec(data, SRC).systems
    assert layout_options(systems[0]) == {"layout": "all-1g"}
    assert layout_options(systems[1]) == {"gpus": [{"devices": [0], "layout": "all-1g"}]}
    assert layout_options(systems[2]) == {}
    assert layout_options(systems[3]) == {"layout": ["3g.40gb", "2x1g.10gb"]}


# ---------------------------------------------------------------- engine combinations
def test_engine_combinations_demo(tmp_path: Path) -> None:
    campaign = load_spec(write(tmp_path, DEMO))
    # mains: mlp-small Offline + Server, conv-1d SingleStream; backgrounds ('all'): the three
    # benchmarks in Offline
    assert engine_combinations(campaign, "local-h100") == [
        {"benchmark": "synth-conv-1d", "scenario": "Offline"},
        {"benchmark": "synth-conv-1d", "scenario": "SingleStream"},
        {"benchmark": "synth-mlp-large", "scenario": "Offline"},
        {"benchmark": "synth-mlp-small", "scenario": "Offline"},
        {"benchmark": "synth-mlp-small", "scenario": "Server"},
    ]


def test_engine_combinations_sets_lists_and_high_accuracy() -> None:
    data = base()
    data["systems"].append({"name": "sysB", "hosts": "b"})
    data["defaults"]["background_benchmarks"] = "none"
    data["cells"] = [
        {
            "match": {"system": "sysA", "scenario": "Server"},
            "set": {"background_benchmarks": "edge"},
        },
        {"match": {"system": "sysA", "mode": "TEST04"}, "set": {"main_accuracy_target": "high"}},
        {
            "match": {"system": "sysB", "benchmark": "synth-conv-1d"},
            "set": {"background_benchmarks": ["synth-mlp-large", "synth-mlp-large"]},
        },
    ]
    campaign = parse_spec(data, SRC)
    assert engine_combinations(campaign, "sysA") == [
        {"benchmark": "synth-conv-1d", "scenario": "Offline"},  # edge background
        {"benchmark": "synth-conv-1d", "scenario": "SingleStream"},
        {"benchmark": "synth-conv-1d", "scenario": "SingleStream", "accuracy_target": "99.9"},
        {"benchmark": "synth-mlp-small", "scenario": "Offline"},  # main and edge background
        {"benchmark": "synth-mlp-small", "scenario": "Server"},
    ]
    assert engine_combinations(campaign, "sysB") == [
        {"benchmark": "synth-conv-1d", "scenario": "SingleStream"},
        {"benchmark": "synth-mlp-large", "scenario": "Offline"},
        {"benchmark": "synth-mlp-small", "scenario": "Offline"},
        {"benchmark": "synth-mlp-small", "scenario": "Server"},
    ]


def test_engine_combinations_unknown_system() -> None:
    campaign = parse_spec(base(), SRC)
    with pytest.raises(SpecError, match="has no system 'sysZ'; its systems are sysA"):
        engine_combinations(campaign, "sysZ")


def test_engine_combinations_fit_engine_build() -> None:
    """Every dict has exactly engine_build's combinations suboptions, with its choices."""
    data = base()
    data["cells"] = [{"match": {"mode": "performance"}, "set": {"main_accuracy_target": "high"}}]
    for combo in engine_combinations(parse_spec(data, SRC), "sysA"):
        assert set(combo) <= {"benchmark", "scenario", "accuracy_target"}
        assert combo.get("accuracy_target", "99") in ("99", "99.9")


# ------------------------------------------------------------------ hetero_run options
def test_option_table_read_from_the_action_plugin() -> None:
    table = hetero_run_options()
    assert table["main_benchmark_duration"] == {"type": "int", "default": 600000}
    assert table["start_time_buffer"] == {"type": "int", "default": 10000}
    assert table["main_target_qps"] == {"type": "float"}
    assert table["max_output_bytes"]["default"] == 256 * 1024 * 1024
    assert table["main_mode"]["choices"] == ["PerformanceOnly", "AccuracyOnly"]


@pytest.mark.skipif(importlib.util.find_spec("ansible") is None, reason="needs ansible-core")
def test_option_table_equals_argument_spec() -> None:
    from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_arg_spec import (
        ARGUMENT_SPEC,
    )

    assert hetero_run_options() == ARGUMENT_SPEC
