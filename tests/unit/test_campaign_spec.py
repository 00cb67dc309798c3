"""Campaign specs (plugin_utils/_campaign_spec): the file, expansion, engine combinations (the
bad inputs are in test_campaign_spec_bad_input.py).

Expectations are written out by hand from docs/campaign.md, not computed by the code under test.
The built-in heteromig_synthetic profile is the harness: synth-mlp-small (all four scenarios),
synth-mlp-large (Offline, Server), synth-conv-1d (Offline, SingleStream, MultiStream); actions
run_harness, run_audit_test01, run_audit_test04 (no TEST05); sets all = the three,
datacenter = mlp-large + mlp-small, edge = conv-1d + mlp-small.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from campaign_spec_support import SRC, base

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    SpecError,
    engine_combinations,
    hetero_run_options,
    layout_options,
    load_spec,
    parse_spec,
)

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


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "campaign.yml"
    path.write_text(text, encoding="utf-8")
    return str(path)


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
