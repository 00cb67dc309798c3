"""Controller side of hetero_run without Ansible: harness profiles, slice choice, background sets,
command rendering and the plan (plugins/plugin_utils/_harness_profiles.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
    ALL_MODELS,
    MODELS,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._torch_models import (
    TORCH_MODELS,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    PlanError,
    available_profiles,
    expand_backgrounds,
    load_profile,
    make_quote,
    normalize_scenario,
    render_argv,
    split_args,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_plan import (
    build_plan,
    choose_slices,
    run_id_for,
)

ROOT = Path(__file__).resolve().parents[2]
TEST_PROFILES = ROOT / "tests" / "fixtures" / "hetero" / "profiles"
NASTY = ["--x=$(touch /tmp/pwned)", "a b", "'; rm -rf / #", "$HOME", "`id`", "*", "\\n", "&&", ""]


def mig(uuid: str, gpu: int, start: int, profile: str = "1g.10gb", gi: int | None = None) -> dict:
    return {
        "uuid": uuid,
        "gpu_index": gpu,
        "gpu_uuid": "GPU-%d" % gpu,
        "gpu_model": "H100-SXM5-80GB",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_instance_id": gi if gi is not None else 10 + start,
        "compute_instance_id": 0,
        "profile": profile,
        "placement": {"start": start, "size": 1},
    }


# GPU 0 has 2 slices, GPU 1 has 4: the main goes on GPU 1's first slice.
DEVICES = [mig("MIG-0-%d" % s, 0, s) for s in range(2)] + [
    mig("MIG-1-%d" % s, 1, s) for s in range(4)
]
GPUS = [
    {"index": 0, "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "model": "H100-SXM5-80GB"},
    {"index": 1, "uuid": "GPU-1", "name": "NVIDIA H100 80GB HBM3", "model": "H100-SXM5-80GB"},
]
OPTIONS: dict[str, Any] = {
    "harness": "heteromig_synthetic",
    "main_benchmark_duration": 600000,
    "start_time_buffer": 10000,
    "background_start_timeout": 600000,
    "end_time_buffer_min": 30000,
    "background_benchmark_timeout": 7200000,
    "stop_grace": 10000,
    "lease_timeout": 60000,
    "steady_window": 2000,
    "background_benchmark_duration": "automatic",
}


def plan(devices: Any = None, gpus: Any = None, **options: Any) -> dict[str, Any]:
    return build_plan(
        dict(OPTIONS, **options),
        host="h1",
        devices=DEVICES if devices is None else devices,
        gpus=GPUS if gpus is None else gpus,
        python="/usr/bin/python3",
        host_root="/var/lib/heteromig",
        host_pythonpath="/var/lib/heteromig/lib",
        backend={"name": "sim", "sim_state": "/var/lib/heteromig/nvml-sim.json"},
        run_id="r1",
    )


def arg_after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ---------------------------------------------------------------------------------- profiles
def test_builtin_profiles() -> None:
    assert {"heteromig_synthetic", "nvidia_mlperf"} <= set(available_profiles())
    assert "fake_loadgen" in available_profiles([str(TEST_PROFILES)])


def test_synthetic_profile_agrees_with_the_harness_models() -> None:
    profile = load_profile("heteromig_synthetic")
    assert set(profile.benchmarks) == set(ALL_MODELS)
    for name, model in ALL_MODELS.items():
        assert set(profile.scenarios(name)) == set(model.scenarios), name
    # the default sets hold the numpy models (any host); 'gpu' the PyTorch/CUDA ones
    for category in ("datacenter", "edge"):
        expected = sorted(n for n, m in MODELS.items() if category in m.categories)
        assert sorted(profile.background_sets[category]) == expected
    assert sorted(profile.background_sets["all"]) == sorted(MODELS)
    assert sorted(profile.background_sets["gpu"]) == sorted(TORCH_MODELS)


def test_nvidia_profile_matches_the_anchor_tables() -> None:
    profile = load_profile("nvidia_mlperf")
    assert profile.config_ver("dlrm", "default") == "hetero_high_accuracy"
    assert profile.config_ver("3d-unet", "default") == "hetero_high_accuracy"
    assert profile.config_ver("bert", "default") == "hetero"
    assert profile.config_ver("bert", "high") == "hetero_high_accuracy"
    assert profile.config_ver("resnet50", "high") == "hetero"
    assert profile.scenarios("ssd-mobilenet") == ["Offline", "SingleStream", "MultiStream"]
    assert "ssd-mobilenet" not in profile.background_sets["datacenter"]
    assert "dlrm" not in profile.background_sets["edge"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- a list\n", "must be a mapping"),
        ("name: other\n", "name 'other' must match the file name 'bad'"),
        ("name: bad\nbenchmarks: {}\n", "benchmarks must be a non-empty mapping"),
        ("name: bad\nbenchmarks: {a: {scenarios: [Batch]}}\n", "benchmarks.a.scenarios: Batch"),
        (
            "name: bad\nbenchmarks: {a: }\nbackground_sets: {all: [b]}\n",
            "background_sets.all names unknown benchmark 'b'",
        ),
        (
            "name: bad\nbenchmarks: {a: }\ncommand: {argv: [{shell: x}]}\n",
            "command.argv[0]: use {when: EXPR, argv: [...]}",
        ),
        (
            "name: bad\nbenchmarks: {a: }\nreadiness_regexes: ['(']\ncommand: {argv: [x]}\n",
            "is not a valid regex",
        ),
        (
            "name: bad\nbenchmarks: {a: }\nprogress_regex: 'x'\ncommand: {argv: [x]}\n",
            "needs a named group 'count'",
        ),
        ("name: bad\nbenchmarks: {a: }\ncolour: red\n", "unknown key(s) colour"),
        (
            "name: bad\nbenchmarks: {a: }\nactions: {run: {files: {'../x': y}}}\ncommand: {argv: [x]}\n",
            "actions.run.files must map plain file names",
        ),
        ("name: bad\nbenchmarks: {a: }\n", "command.argv must be a list"),
    ],
)
def test_bad_profiles_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.yml").write_text(content)
    with pytest.raises(PlanError, match=re.escape(message)):
        load_profile("bad", [str(tmp_path)])


def test_unknown_harness() -> None:
    with pytest.raises(
        PlanError, match=r"unknown harness 'nope'; known harness profiles: .*nvidia_mlperf"
    ):
        load_profile("nope")
    with pytest.raises(PlanError, match="profile name"):
        load_profile("../etc/passwd")


# ------------------------------------------------------------------------------- rendering
def test_render_argv_items() -> None:
    items = [
        "a{{ x }}",
        {"when": "flag", "argv": ["--flag", "{{ x }}"]},
        {"when": "not flag", "argv": ["--no"]},
        {"splat": "items"},
        {"splat": "none"},
    ]
    assert render_argv(items, {"x": 1, "flag": True, "items": ["p q", "r"], "none": None}) == [
        "a1",
        "--flag",
        "1",
        "p q",
        "r",
    ]
    with pytest.raises(PlanError, match=r"cannot render argv\[0\] 'a\{\{ x \}\}'.*undefined"):
        render_argv(items, {"flag": True, "items": []})
    with pytest.raises(PlanError, match="must give a list"):
        render_argv([{"splat": "x"}], {"x": "string"})


def test_split_args() -> None:
    assert split_args("--a 'b c' d", "o") == ["--a", "b c", "d"]
    assert split_args(["--a", 3], "o") == ["--a", "3"]
    assert split_args(None, "o") == []
    with pytest.raises(PlanError, match="cannot split"):
        split_args("'unclosed", "o")
    with pytest.raises(PlanError, match="must be a list of arguments"):
        split_args({"a": 1}, "o")


def test_synthetic_commands() -> None:
    p = plan(
        main_benchmark="synth-mlp-large",
        main_scenario="server",
        main_target_qps=150.0,
        main_benchmark_cmd_prefix="nsys profile -o main",
        main_action="run_audit_test04",
    )
    main, *bgs = p["benchmarks"]
    argv = main["argv"]
    assert argv[:3] == ["nsys", "profile", "-o"] and argv[4] == "/usr/bin/python3"
    assert argv[5:8] == [
        "-m",
        "ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_harness",
        "run",
    ]
    assert (
        arg_after(argv, "--model") == "synth-mlp-large"
        and arg_after(argv, "--scenario") == "Server"
    )
    assert arg_after(argv, "--server-target-qps") == "150.0"
    assert arg_after(argv, "--audit-test") == "TEST04"
    assert arg_after(argv, "--min-duration-ms") == "600000"
    assert arg_after(argv, "--log-dir") == "/var/lib/heteromig/runs/r1/main"
    assert arg_after(argv, "--engine-dir") == "/var/lib/heteromig/engines"
    assert "--min-query-count" not in argv and "--allow-shared-gpu" not in argv
    assert main["env"] == {
        "PYTHONPATH": "/var/lib/heteromig/lib",
        "PYTHONUNBUFFERED": "1",
        "CUDA_VISIBLE_DEVICES": "MIG-1-0",
        "HETEROMIG_GPU_BACKEND": "sim",
        "HETEROMIG_SIM_STATE": "/var/lib/heteromig/nvml-sim.json",
    }
    # backgrounds: Offline, min_query_count 1, min_duration = the run's timeout (automatic)
    assert [b["name"] for b in bgs] == ["bg-1", "bg-2", "bg-3"]
    assert [b["slice"]["uuid"] for b in bgs] == ["MIG-1-1", "MIG-1-2", "MIG-1-3"]
    for bench in bgs:
        assert bench["argv"][0] == "/usr/bin/python3"  # no cmd prefix
        assert arg_after(bench["argv"], "--scenario") == "Offline"
        assert arg_after(bench["argv"], "--min-query-count") == "1"
        assert arg_after(bench["argv"], "--min-duration-ms") == "7200000"
        assert bench["log_dir"] == "/var/lib/heteromig/runs/r1/" + bench["name"]
    assert p["choreography"]["background_mode"] == "automatic"
    assert p["expected_duration_s"] == 610.0


def test_runargs_with_shell_metacharacters_stay_literal_argv() -> None:
    p = plan(main_benchmark_runargs=NASTY, background_runargs="--x '$(id)'")
    assert p["benchmarks"][0]["argv"][-len(NASTY) :] == NASTY
    assert p["benchmarks"][1]["argv"][-2:] == ["--x", "$(id)"]


def test_nvidia_command_is_the_anchor_command() -> None:
    p = plan(
        harness="nvidia_mlperf",
        main_benchmark="bert",
        main_scenario="Server",
        main_accuracy_target="high",
        background_benchmarks=["dlrm", "resnet50"],
        harness_vars={"workdir": "/mlperf/closed/NVIDIA"},
    )
    main, bg1, bg2 = p["benchmarks"]
    assert main["argv"] == [
        "make",
        "run_harness",
        "RUN_ARGS=--benchmarks=bert --scenarios=server --config_ver=hetero_high_accuracy "
        "--min_duration=600000",
        "LOG_DIR=/var/lib/heteromig/runs/r1/main",
    ]
    assert bg1["argv"][2] == (
        "RUN_ARGS=--benchmarks=dlrm --scenarios=offline --config_ver=hetero_high_accuracy "
        "--min_duration=7200000 --min_query_count=1"
    )
    assert bg2["argv"][2].startswith(
        "RUN_ARGS=--benchmarks=resnet50 --scenarios=offline --config_ver=hetero "
    )
    assert main["cwd"] == "/mlperf/closed/NVIDIA"
    assert (
        main["env"]["CUDA_VISIBLE_DEVICES"] == "MIG-1-0"
        and bg2["env"]["CUDA_VISIBLE_DEVICES"] == "MIG-1-2"
    )


def test_nvidia_runargs_reach_the_harness_literally_through_make(tmp_path: Path) -> None:
    """make pastes RUN_ARGS into a shell recipe: every run argument must arrive unchanged."""
    (tmp_path / "Makefile").write_text(
        "run_harness:\n\t@python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' $(RUN_ARGS)\n"
    )
    p = plan(
        harness="nvidia_mlperf",
        main_benchmark="resnet50",
        main_benchmark_runargs=NASTY,
        verbose=True,
        harness_vars={"workdir": str(tmp_path)},
    )
    argv = p["benchmarks"][0]["argv"]
    assert len(argv) == 4  # make, action, RUN_ARGS=..., LOG_DIR=...
    done = subprocess.run(argv[:3], cwd=tmp_path, capture_output=True, text=True, check=True)
    import json

    received = json.loads(done.stdout)
    assert received[:4] == [
        "--benchmarks=resnet50",
        "--scenarios=offline",
        "--config_ver=hetero",
        "--min_duration=600000",
    ]
    assert received[4:] == ["--verbose", "--verbose_nvtx", *NASTY]
    assert not Path("/tmp/pwned").exists()
    assert make_quote("$x y") == "'$$x y'"


def test_accuracy_mode_and_target_for_nvidia() -> None:
    p = plan(harness="nvidia_mlperf", main_mode="AccuracyOnly", main_target_qps=100.0)
    assert "--test_mode=AccuracyOnly --offline_expected_qps=100.0" in p["benchmarks"][0]["argv"][2]


def test_audit_files_come_with_the_action() -> None:
    p = plan(
        harness="fake_loadgen",
        harness_profile_dirs=[str(TEST_PROFILES)],
        main_action="run_audit_test01",
        harness_vars={"fake_bench": "/x/fake_bench.py"},
    )
    assert "audit.config" in p["benchmarks"][0]["files"]
    assert p["benchmarks"][1]["files"] == {}
    assert p["progress_regex"].startswith("progress:")


# ---------------------------------------------------------------------------------- slices
def test_default_slices_follow_the_anchor() -> None:
    choice = choose_slices(DEVICES, GPUS, None, None, False)
    assert choice.main["uuid"] == "MIG-1-0" and not choice.shared_gpu
    assert [d["uuid"] for d in choice.backgrounds] == ["MIG-1-1", "MIG-1-2", "MIG-1-3"]
    assert choice.gpu["index"] == 1
    tie = [mig("MIG-a", 3, 0), mig("MIG-b", 2, 0)]
    assert choose_slices(tie, [], None, None, False).main["uuid"] == "MIG-b"  # lowest GPU index


def test_chosen_slices() -> None:
    choice = choose_slices(DEVICES, GPUS, "MIG-0-1", "all", False)
    assert choice.main["uuid"] == "MIG-0-1" and len(choice.backgrounds) == 5
    choice = choose_slices(DEVICES, GPUS, 2, ["MIG-0-0", 5], False)
    assert choice.main["uuid"] == "MIG-1-0"
    assert [d["uuid"] for d in choice.backgrounds] == ["MIG-0-0", "MIG-1-3"]
    facts = {"ansible_facts": {"heteromig_mig_devices": DEVICES}}
    assert choose_slices(facts, GPUS, "3", None, False).main["uuid"] == "MIG-1-1"
    assert (
        choose_slices({"mig_devices": DEVICES}, GPUS, None, None, False).main["uuid"] == "MIG-1-0"
    )


@pytest.mark.parametrize(
    ("main_slice", "background_slices", "message"),
    [
        (9, None, "main_slice index 9 is out of range: the host has 6 MIG device(s)"),
        ("MIG-nope", None, "main_slice 'MIG-nope' is not a MIG device of this host"),
        (None, ["MIG-1-0"], "background_slices names the main slice MIG-1-0"),
        (None, ["MIG-0-0", 0], "background_slices names MIG-0-0 twice"),
        (None, "some", "background_slices must be same_gpu, all or a list"),
        (True, None, "main_slice must be a MIG UUID or an index"),
    ],
)
def test_bad_slices(main_slice: Any, background_slices: Any, message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        choose_slices(DEVICES, GPUS, main_slice, background_slices, False)


def test_main_slice_not_a_mig_device_needs_permission() -> None:
    with pytest.raises(PlanError, match=r"this host has no MIG devices .* set allow_shared_gpu"):
        choose_slices([], GPUS, None, None, False)
    with pytest.raises(PlanError, match="main_slice GPU-1 is a whole GPU, not a MIG device"):
        choose_slices(DEVICES, GPUS, "GPU-1", None, False)
    choice = choose_slices([], GPUS, "gpu:1", None, True)
    assert choice.shared_gpu and choice.main["uuid"] == "GPU-1"
    with pytest.raises(PlanError, match="main_slice gpu:7 is not a GPU of this host"):
        choose_slices([], GPUS, "gpu:7", None, True)
    with pytest.raises(PlanError, match="needs the host's GPUs"):
        choose_slices([], [], None, None, True)
    with pytest.raises(PlanError, match="slices: every MIG device needs a 'uuid'"):
        choose_slices([{"profile": "1g.10gb"}], GPUS, None, None, False)
    with pytest.raises(PlanError, match="must be a gpu_facts or mig_layout result"):
        choose_slices({"changed": True}, GPUS, None, None, False)


def test_shared_gpu_plan_is_flagged_and_every_benchmark_shares_the_gpu() -> None:
    p = plan(devices=[], allow_shared_gpu=True, background_benchmarks=["synth-mlp-small"] * 3)
    assert p["shared_gpu"] is True and p["gpu"]["uuid"] == "GPU-0"
    assert {b["env"]["CUDA_VISIBLE_DEVICES"] for b in p["benchmarks"]} == {"GPU-0"}
    assert all("--allow-shared-gpu" in b["argv"] for b in p["benchmarks"])


# ------------------------------------------------------------------------------ backgrounds
def test_background_sets() -> None:
    synth = load_profile("heteromig_synthetic")
    nvidia = load_profile("nvidia_mlperf")
    assert expand_backgrounds(synth, "all", "synth-mlp-small", 3, fill=True) == [
        "synth-conv-1d",
        "synth-mlp-large",
        "synth-mlp-small",
    ]
    # fewer members than slices: repeated to fill every slice (the anchor left them idle)
    assert expand_backgrounds(synth, "edge", "synth-mlp-small", 5, fill=True) == [
        "synth-conv-1d",
        "synth-mlp-small",
        "synth-conv-1d",
        "synth-mlp-small",
        "synth-conv-1d",
    ]
    assert expand_backgrounds(synth, "edge", "synth-mlp-small", 5, fill=False) == [
        "synth-conv-1d",
        "synth-mlp-small",
    ]
    # more members than slices: the main benchmark is dropped first, then the list is cut
    assert expand_backgrounds(nvidia, "all", "bert", 6, fill=True) == [
        "3d-unet",
        "dlrm",
        "resnet50",
        "rnnt",
        "ssd-mobilenet",
        "ssd-resnet34",
    ]
    assert expand_backgrounds(nvidia, "datacenter", "bert", 2, fill=True) == ["3d-unet", "dlrm"]
    assert expand_backgrounds(nvidia, "none", "bert", 6, fill=True) == []
    assert expand_backgrounds(nvidia, "dlrm, bert", "bert", 6, fill=True) == ["dlrm", "bert"]
    assert expand_backgrounds(nvidia, "rnnt", "bert", 6, fill=True) == ["rnnt"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            ["bert", "dlrm", "rnnt", "resnet50"],
            "4 background benchmarks (bert, dlrm, rnnt, resnet50) but only 3 free slice(s)",
        ),
        ("gpt-j", "background_benchmarks 'gpt-j' is neither a set (all, datacenter, edge, none)"),
        (["bert", "gpt-j"], "does not know the background benchmark 'gpt-j'"),
        (
            ["3d-unet", {"x": 1}],
            "background_benchmarks must be all, none, datacenter, edge, or a list",
        ),
    ],
)
def test_bad_background_benchmarks(spec: Any, message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        expand_backgrounds(load_profile("nvidia_mlperf"), spec, "bert", 3, fill=True)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"main_benchmark": "gpt-j"},
            "harness heteromig_synthetic does not know the main benchmark 'gpt-j'",
        ),
        (
            {"main_scenario": "Batch"},
            "unknown scenario 'Batch'; scenarios are Offline, Server, SingleStream, MultiStream",
        ),
        (
            {"main_benchmark": "synth-conv-1d", "main_scenario": "Server"},
            "main benchmark synth-conv-1d does not support the Server scenario",
        ),
        (
            {"main_action": "run_audit_test05"},
            "harness heteromig_synthetic has no action 'run_audit_test05'",
        ),
        (
            {"main_benchmark_duration": 0},
            "main_benchmark_duration must be greater than 0 ms, got 0",
        ),
        ({"main_benchmark_duration": -5}, "main_benchmark_duration must be greater than 0 ms"),
        ({"background_start_timeout": 0}, "background_start_timeout must be greater than 0 ms"),
        ({"start_time_buffer": -1}, "start_time_buffer must not be negative"),
        ({"end_time_buffer_min": -1}, "end_time_buffer_min must not be negative"),
        ({"lease_timeout": 0}, "lease_timeout must be greater than 0 ms"),
        (
            {"background_benchmark_duration": 0},
            "background_benchmark_duration must be greater than 0 ms",
        ),
        (
            {"background_benchmark_duration": "soon"},
            "background_benchmark_duration must be a whole number",
        ),
        (
            {"background_benchmark_duration": 600000},
            "background_benchmark_duration (600000 ms) must be at least main_benchmark_duration",
        ),
        ({"main_benchmark_duration": 7200000}, "must be shorter than background_benchmark_timeout"),
        ({"start_time_buffer_mode": "steady"}, "steady needs a harness that reports progress"),
        ({"steady_tolerance": 2}, "steady_tolerance must be a fraction between 0 and 1"),
        (
            {"readiness_regexes": ["(unclosed"]},
            "readiness_regexes: '(unclosed' is not a valid regex",
        ),
        ({"main_mode": "Fast"}, "main_mode must be one of PerformanceOnly, AccuracyOnly"),
        ({"env": {"A": ["list"]}}, "env must map variable names to strings"),
        ({"background_benchmarks": ["synth-mlp-small"] * 4}, "4 background benchmarks"),
    ],
)
def test_bad_input_names_the_problem(options: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        plan(**options)


def test_wait_mode_and_plan_fields() -> None:
    p = plan(
        background_benchmark_duration=700000,
        main_benchmark_duration=60000,
        background_benchmarks="none",
        lenient=True,
        main_benchmark_immediate_start=True,
    )
    assert p["choreography"]["background_mode"] == "wait"
    assert (
        p["choreography"]["lenient"] is True and p["choreography"]["main_immediate_start"] is True
    )
    assert [b["name"] for b in p["benchmarks"]] == ["main"]
    assert p["expected_duration_s"] == 700.0
    assert p["format"] == "heteromig.hetero-plan" and p["lease_s"] == 60.0
    assert normalize_scenario("single_stream") == "SingleStream"


def test_run_id_format() -> None:
    run_id = run_id_for("seed", "20261122T051500Z")
    assert re.fullmatch(r"20261122T051500Z-[0-9a-f]{6}", run_id)
    assert (
        run_id == run_id_for("seed", "20261122T051500Z") != run_id_for("other", "20261122T051500Z")
    )
