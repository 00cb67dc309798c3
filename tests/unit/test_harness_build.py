"""engine_build's controller side without Ansible: a harness profile's build section, its
validation and its rendering per combination (plugins/plugin_utils/_harness_build.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import HARNESS_MODULE
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_spec import (
    HARNESS_VERSION,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_build import plan_builds
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    PlanError,
    load_profile,
)

NASTY = ["--x=$(touch /tmp/pwned)", "a b", "'; rm -rf / #", "$HOME", "`id`", "*", "&&"]
PLACES = {
    "python": "/opt/py/bin/python3",
    "host_root": "/h",
    "host_pythonpath": "/h/lib",
    "engine_dir": "/h/engines",
}


def builds(**options: Any) -> list[dict[str, Any]]:
    return plan_builds(options, **PLACES)


# NVIDIA's hetero config_ver rules (field notes, section 1): 3d-unet and dlrm build one
# hetero_high_accuracy engine for both targets; bert has its own 99.9 engine; the others have
# only the 99 target.
@pytest.mark.parametrize(
    ("benchmark", "target", "config_ver"),
    [
        ("resnet50", "99", "hetero"),
        ("bert", "99", "hetero"),
        ("bert", "99.9", "hetero_high_accuracy"),
        ("3d-unet", "99", "hetero_high_accuracy"),
        ("3d-unet", "99.9", "hetero_high_accuracy"),
        ("dlrm", "99", "hetero_high_accuracy"),
        ("rnnt", "99", "hetero"),
        ("ssd-mobilenet", "99", "hetero"),
    ],
)
def test_nvidia_config_ver_comes_from_the_profile(
    benchmark: str, target: str, config_ver: str
) -> None:
    combo = {"benchmark": benchmark, "scenario": "Offline", "accuracy_target": target}
    (build,) = builds(harness="nvidia_mlperf", combinations=[combo])
    assert build["config_ver"] == config_ver
    assert build["commands"]["mig"] == {
        "argv": [
            "make",
            "generate_engines",
            "RUN_ARGS=--benchmarks=%s --scenarios=Offline --config_ver=%s"
            % (benchmark, config_ver),
        ],
        "env": {},
        "cwd": "/work",
    }
    assert build["checks"] == {} and build["stamp"] == {"code_revision": ""}


def test_nvidia_combinations_built_alike_appear_once() -> None:
    combos = [
        {"benchmark": "3d-unet", "scenario": "offline", "accuracy_target": "99"},
        {"benchmark": "3d-unet-99.9", "scenario": "Offline"},
        {"benchmark": "bert", "scenario": "Server", "accuracy_target": "99"},
        {"model": "bert", "scenario": "Server", "accuracy_target": "99.9"},
    ]
    found = builds(harness="nvidia_mlperf", combinations=combos)
    assert [(b["benchmark"], b["accuracy_target"], b["config_ver"]) for b in found] == [
        ("3d-unet", "99", "hetero_high_accuracy"),
        ("bert", "99", "hetero"),
        ("bert", "99.9", "hetero_high_accuracy"),
    ]


def test_nvidia_run_args_reach_make_literally(tmp_path: Path) -> None:
    """make pastes RUN_ARGS into a shell recipe: a real make shows what the build receives."""
    (tmp_path / "Makefile").write_text(
        "generate_engines:\n"
        "\t@python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' $(RUN_ARGS)\n"
    )
    (build,) = builds(
        harness="nvidia_mlperf",
        harness_vars={"workdir": str(tmp_path), "run_args": NASTY, "code_revision": "v3.0"},
        combinations=[{"benchmark": "bert", "scenario": "Server", "accuracy_target": "99.9"}],
    )
    command = build["commands"]["mig"]
    assert command["cwd"] == str(tmp_path) and build["stamp"] == {"code_revision": "v3.0"}
    done = subprocess.run(
        command["argv"], cwd=command["cwd"], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == [
        "--benchmarks=bert",
        "--scenarios=Server",
        "--config_ver=hetero_high_accuracy",
        *NASTY,
    ]
    assert not Path("/tmp/pwned").exists()


def test_synthetic_build_and_check_per_variant() -> None:
    (build,) = builds(
        harness="heteromig_synthetic",
        shared_gpu=True,
        force=True,
        combinations=[
            {"benchmark": "synth-conv-1d", "scenario": "single_stream", "accuracy_target": "99.9"}
        ],
    )
    assert (build["benchmark"], build["scenario"], build["accuracy_target"]) == (
        "synth-conv-1d",
        "SingleStream",
        "99.9",
    )
    args = [
        "--model",
        "synth-conv-1d",
        "--scenario",
        "SingleStream",
        "--accuracy-target",
        "99.9",
        "--engine-dir",
        "/h/engines",
    ]
    python = PLACES["python"]
    mig, shared = build["commands"]["mig"], build["commands"]["shared"]
    assert mig["argv"] == [python, "-m", HARNESS_MODULE, "build-engine", *args, "--json", "--force"]
    assert shared["argv"] == [*mig["argv"][:-1], "--allow-shared-gpu", "--force"]
    assert mig["env"] == shared["env"] == {"PYTHONPATH": "/h/lib"}
    check = build["checks"]["mig"]["argv"]
    assert check[:4] == [
        python,
        "-m",
        HARNESS_MODULE.replace("_loadgen_harness", "_engine_store"),
        "check",
    ]
    assert check[4:] == [*args, "--harness-version", HARNESS_VERSION]
    assert build["checks"]["shared"]["argv"] == [*check, "--allow-shared-gpu"]
    (plain,) = builds(
        harness="heteromig_synthetic",
        combinations=[{"benchmark": "synth-mlp-small", "scenario": "Offline"}],
    )
    assert set(plain["commands"]) == {"mig"} and "--force" not in plain["commands"]["mig"]["argv"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"combinations": [{"benchmark": "resnet50", "scenario": "Offline"}]},
            "harness heteromig_synthetic does not know the benchmark 'resnet50'; its benchmarks "
            "are synth-",
        ),
        (
            {"combinations": [{"benchmark": "synth-mlp-large", "scenario": "SingleStream"}]},
            "benchmark synth-mlp-large does not support the SingleStream scenario",
        ),
        (
            {"combinations": [{"benchmark": "synth-mlp-small", "scenario": "Sometimes"}]},
            "unknown scenario 'Sometimes'",
        ),
        ({"combinations": []}, "combinations is empty"),
        ({"combinations": [{"scenario": "Offline"}]}, "needs a benchmark"),
        (
            {
                "harness": "nvidia_mlperf",
                "combinations": [
                    {"benchmark": "resnet50", "scenario": "Offline", "accuracy_target": "99.9"}
                ],
            },
            "benchmark resnet50 of harness nvidia_mlperf has no high (99.9) accuracy variant",
        ),
        (
            {
                "harness": "nvidia_mlperf",
                "combinations": [
                    {"benchmark": "bert-99.9", "scenario": "Offline", "accuracy_target": "99"}
                ],
            },
            "benchmark bert-99.9 names accuracy target 99.9, but accuracy_target is 99",
        ),
        (
            {
                "harness": "heteromig_synthetic",
                "combinations": [
                    {"benchmark": "synth-mlp-small", "scenario": "Offline", "accuracy_target": "90"}
                ],
            },
            "accuracy_target must be 99 or 99.9, got '90'",
        ),
        ({"harness": "nope", "combinations": []}, "unknown harness 'nope'"),
    ],
)
def test_bad_input_names_the_problem(options: dict[str, Any], message: str) -> None:
    options.setdefault("harness", "heteromig_synthetic")
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        builds(**options)


PROFILE = """name: %s
benchmarks: {a: {scenarios: [Offline]}}
command: {argv: ["true"]}
"""


@pytest.mark.parametrize(
    ("build", "message"),
    [
        ("build: {argv: x}", "build.argv must be a list"),
        ("build: {argv: [a], shell: yes}", "build may only hold argv, check, cwd, env, stamp"),
        ("build: {argv: [{x: 1}]}", r"build.argv\[0\]: use \{when"),
        ("build: {argv: [a], env: {A: [1]}}", "build.env must map names to template strings"),
        ("build: {argv: [a], cwd: [1]}", "build.cwd must be a template string"),
        ("build: {argv: [a], check: {argv: [a], x: 1}}", "build.check may only hold argv, cwd"),
        ("build: {argv: [a], stamp: [1]}", "build.stamp must map names to template strings"),
    ],
)
def test_bad_build_sections_name_the_problem(tmp_path: Path, build: str, message: str) -> None:
    (tmp_path / "bad.yml").write_text(PROFILE % "bad" + build + "\n")
    with pytest.raises(PlanError, match=message):
        load_profile("bad", [str(tmp_path)])


def test_a_profile_without_build_is_refused_and_templates_are_checked(tmp_path: Path) -> None:
    (tmp_path / "plain.yml").write_text(PROFILE % "plain")
    with pytest.raises(PlanError, match="harness plain has no build command"):
        plan_builds(
            {
                "harness": "plain",
                "harness_profile_dirs": [str(tmp_path)],
                "combinations": [{"benchmark": "a", "scenario": "Offline"}],
            },
            **PLACES,
        )
    (tmp_path / "undef.yml").write_text(PROFILE % "undef" + "build: {argv: ['{{ vars.tool }}']}\n")
    with pytest.raises(PlanError, match=r"cannot render undef build\.argv"):
        plan_builds(
            {
                "harness": "undef",
                "harness_profile_dirs": [str(tmp_path)],
                "combinations": [{"benchmark": "a", "scenario": "Offline"}],
            },
            **PLACES,
        )
