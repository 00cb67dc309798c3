"""The mlcommons_mlcflow harness profile: the mlcr command it renders, run through the real mlcflow CLI with
a stand-in script (tests/mlcflow/standin_mlcr.py, real LoadGen), where LoadGen's logs land, its
readiness marker and its accuracy verdicts."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    read_accuracy,
    read_loadgen_dir,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    PlanError,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_plan import (
    build_plan,
)

# Importing mlc creates $HOME/MLC: only the stand-in imports it, with MLC_REPOS set.
if importlib.util.find_spec("mlc") is None:
    pytest.skip(
        "the stand-in mlcr runs the real mlcflow CLI: pip install mlcflow",
        allow_module_level=True,
    )

STANDIN = Path(__file__).resolve().parents[1] / "mlcflow" / "standin_mlcr.py"
SLICES = [
    {"uuid": "MIG-%d" % i, "gpu_index": 0, "profile": "1g.18gb", "placement": {"start": i}}
    for i in range(3)
]
OPTIONS: dict[str, Any] = {
    "harness": "mlcommons_mlcflow",
    "main_benchmark": "resnet50",
    "background_benchmarks": ["retinanet"],
    "main_benchmark_duration": 600000,
    "start_time_buffer": 10000,
    "background_start_timeout": 600000,
    "end_time_buffer_min": 30000,
    "background_benchmark_timeout": 7200000,
    "stop_grace": 10000,
    "lease_timeout": 60000,
    "steady_window": 2000,
}


def plan(root: Path | None = None, **options: Any) -> dict[str, Any]:
    host_root = str(root or "/var/lib/heteromig")
    return build_plan(
        dict(OPTIONS, **options),
        host="h1",
        devices=SLICES,
        gpus=[],
        python="/usr/bin/python3",
        host_root=host_root,
        host_pythonpath=host_root + "/lib",
        backend={"name": "nvml"},
        run_id="r1",
    )


def test_renders_the_official_mlcr_command() -> None:
    """The MLPerf guide's command (docs.mlcommons.org/inference), one argv item per option."""
    main, background = plan()["benchmarks"]
    log_dir = "/var/lib/heteromig/runs/r1/main"
    assert main["argv"] == [
        "mlcr",
        "run-mlperf,inference,_performance-only",
        "--model=resnet50",
        "--implementation=reference",
        "--framework=onnxruntime",
        "--device=cuda",
        "--scenario=Offline",
        "--execution_mode=valid",
        "--results_dir=" + log_dir,
        "--env.CUDA_VISIBLE_DEVICES=MIG-0",
        "--min_duration=600000",
        "--rerun",
        "--quiet",
    ]
    assert main["cwd"] == log_dir and main["env"]["CUDA_VISIBLE_DEVICES"] == "MIG-0"
    assert "--model=retinanet" in background["argv"]
    assert background["env"]["CUDA_VISIBLE_DEVICES"] == "MIG-1"
    assert "--env.CUDA_VISIBLE_DEVICES=MIG-1" in background["argv"]
    tuned = plan(
        main_scenario="SingleStream",
        main_mode="AccuracyOnly",
        main_target_latency_ns=2500000,
        main_min_query_count=1024,
        verbose=True,
        main_benchmark_runargs=["--threads=4"],
        harness_vars={
            "mlcr": "/opt/mlc/bin/mlcr",
            "framework": "pytorch",
            "device": "cpu",
            "execution_mode": "test",
            "test_query_count": 100,
            "category": "edge",
            "tags": "_r5.1-dev",
        },
    )["benchmarks"][0]["argv"]
    assert tuned[:2] == ["/opt/mlc/bin/mlcr", "run-mlperf,inference,_accuracy-only,_r5.1-dev"]
    for arg in (
        "--framework=pytorch",
        "--device=cpu",
        "--execution_mode=test",
        "--category=edge",
        "--test_query_count=100",
        "--min_query_count=1024",
        "--singlestream_target_latency=2.5",
        "-v",
    ):
        assert arg in tuned, arg
    assert tuned[-1] == "--threads=4"
    server = plan(main_scenario="Server", main_target_qps=1500.0)["benchmarks"][0]["argv"]
    assert "--server_target_qps=1500.0" in server and "--scenario=Server" in server


def test_an_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(PlanError) as info:
        plan(main_benchmark="resnet")
    assert str(info.value) == (
        "harness mlcommons_mlcflow does not know the main benchmark 'resnet'; its benchmarks are "
        "bert-99, bert-99.9, resnet50, retinanet"
    )
    with pytest.raises(PlanError, match="main benchmark bert-99 does not support the MultiStream"):
        plan(main_benchmark="bert-99", main_scenario="MultiStream")
    with pytest.raises(
        PlanError, match=r"is neither a set .* nor a benchmark of harness mlcommons_mlcflow"
    ):
        plan(background_benchmarks="gptj-99")


# ----------------------------------------------------------------- through the stand-in mlcr
def mlcr_env(tmp_path: Path) -> dict[str, str]:
    """PATH with a `mlcr` that runs the stand-in; the MLC repos in tmp_path."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "mlcr"
    wrapper.write_text('#!/bin/sh\nexec "%s" "%s" "$@"\n' % (sys.executable, STANDIN))
    wrapper.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = "%s%s%s" % (bindir, os.pathsep, env.get("PATH", ""))
    env["MLC_REPOS"] = str(tmp_path / "MLC" / "repos")
    return env


def run(bench: dict[str, Any], env: dict[str, str], **extra: str) -> subprocess.CompletedProcess:
    os.makedirs(bench["log_dir"], exist_ok=True)
    full = dict(env, **bench["env"], **extra)
    return subprocess.run(
        bench["argv"],
        cwd=bench["cwd"],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )


def fetch(env: dict[str, str], *commands: str) -> None:
    """The prefetch commands docs/harness.md gives, through the same mlcr."""
    for command in commands:
        done = subprocess.run(
            ["mlcr", command, "-j"],
            env=env,
            # mlcflow logs to .mlc-log.txt in its working directory: keep it in tmp_path
            cwd=Path(env["MLC_REPOS"]).parents[1],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_run_needs_its_model_and_dataset_fetched_first(tmp_path: Path) -> None:
    env = mlcr_env(tmp_path)
    main = plan(tmp_path, harness_vars={"execution_mode": "test"})["benchmarks"][0]
    done = run(main, env)
    assert done.returncode == 1
    assert (
        "fetch them first with mlcr get,ml-model,resnet50; mlcr get,dataset,imagenet,_validation"
        in done.stdout
    )
    assert not list(Path(main["log_dir"]).rglob("mlperf_log_*"))


def test_performance_run_logs_land_where_the_runner_finds_them(tmp_path: Path) -> None:
    env = mlcr_env(tmp_path)
    fetch(env, "get,ml-model,resnet50,_onnx", "get,dataset,imagenet,validation,_full")
    # test mode runs test_query_count queries; SingleStream is VALID from 64 (early stopping)
    p = plan(
        tmp_path,
        main_scenario="SingleStream",
        harness_vars={"execution_mode": "test", "test_query_count": 100},
    )
    main = p["benchmarks"][0]
    done = run(main, env)
    assert done.returncode == 0, done.stdout[-3000:]
    lines = done.stdout.splitlines()
    ready = [
        i for i, line in enumerate(lines) if any(re.search(r, line) for r in p["readiness_regexes"])
    ]
    assert ready and "INFO:main:starting TestScenario.SingleStream" in lines[ready[0]]
    result_line = next(i for i, line in enumerate(lines) if line.startswith("Result is"))
    assert ready[0] < result_line  # the marker comes before LoadGen's test
    loadgen = read_loadgen_dir(main["log_dir"])
    assert loadgen["result_validity"] == "VALID"
    layout = "test_results/%s-reference-gpu-onnxruntime-vdefault-default_config/resnet50/" % (
        os.uname().nodename
    )
    assert layout + "singlestream/performance/run_1/mlperf_log_summary.txt" in loadgen["log_files"]
    call = json.loads(
        (
            Path(main["log_dir"]) / layout / "singlestream/performance/run_1/standin_mlcr_call.json"
        ).read_text()
    )
    assert call["tags"] == ["run-mlperf", "inference", "_performance-only"]
    assert call["run_args"]["env"] == {"CUDA_VISIBLE_DEVICES": "MIG-0"}
    assert call["env_CUDA_VISIBLE_DEVICES"] == "MIG-0"
    assert "resnet50.SingleStream.min_query_count = 100" in call["user_conf"]


@pytest.mark.parametrize(
    ("benchmark", "fetches", "value", "passed"),
    [
        ("resnet50", ("get,ml-model,resnet50,_onnx", "get,dataset,imagenet,validation,_full"),
         "76.014", True),
        ("resnet50", ("get,ml-model,resnet50,_onnx", "get,dataset,imagenet,validation,_full"),
         "75.6", False),
        ("retinanet", ("get,ml-model,retinanet,_onnx", "get,dataset,openimages,_validation"),
         "37.2", True),
        ("bert-99.9", ("get,ml-model,bert-large,_onnx", "get,dataset,squad,validation"),
         "90.5", False),
        ("bert-99", ("get,ml-model,bert-large,_onnx", "get,dataset,squad,validation"),
         "90.5", True),
    ],
)  # fmt: skip
def test_accuracy_runs_are_judged_against_the_mlperf_target(
    tmp_path: Path, benchmark: str, fetches: tuple[str, ...], value: str, passed: bool
) -> None:
    """The value the accuracy script prints against MLPerf's target (76.46 x 0.99 for resnet50,
    37.55 x 0.99 for retinanet, 90.874 x 0.99 / x 0.999 for bert)."""
    env = mlcr_env(tmp_path)
    fetch(env, *fetches)
    p = plan(
        tmp_path,
        main_benchmark=benchmark,
        main_mode="AccuracyOnly",
        background_benchmarks="none",
        harness_vars={"execution_mode": "test"},
    )
    main = p["benchmarks"][0]
    done = run(main, env, STANDIN_MLCR_ACCURACY=value)
    assert done.returncode == 0, done.stdout[-3000:]
    verdict = read_accuracy(main["log_dir"], main["accuracy_check"])
    assert verdict["passed"] is passed, verdict
    assert verdict["source"].endswith("/%s/offline/accuracy/accuracy.txt" % benchmark)
    assert value in verdict["summary"]
