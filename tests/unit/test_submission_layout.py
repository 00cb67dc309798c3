"""Export of hetero_run results to the MLPerf Inference submission layout (field notes, section 3).

The results are REAL LoadGen runs (tests/hetero_samples): a heterogeneous performance run, an
accuracy run, TEST01 and TEST04 audit runs, an INVALID run and an isolated run. The expected tree
is written out from the layout in /work/shared/notes/FIELD_NOTES.md section 3:

    closed/<Submitter>/systems/<system>.json
    results/<system>/<benchmark>/<Scenario>/performance/run_1/ and accuracy/
    compliance/<system>/<benchmark>/<Scenario>/TEST01|TEST04/
    measurements/<system>/<benchmark>/<Scenario>/
"""

from __future__ import annotations

import copy
import filecmp
import json
import shutil
from pathlib import Path
from typing import Any

import hetero_samples
import pytest
from hetero_samples import read_mllog

from ansible_collections.heteromig.fleet.plugins.plugin_utils._submission_layout import (
    HETERO_SUFFIX,
    IMPLEMENTATION_REQUIRED,
    SYSTEM_REQUIRED,
    apply_plan,
    check_layout,
    inspect_log_dir,
    plan_export,
    scenario_dir,
    system_name,
)

SYSTEM = "DGX-H100_H100-SXM5-80GB-MIG_1x1g.10gb_Synthetic_HeteroMultiUse"
BENCH = "synth-mlp-small"
EXPORTED = ("valid", "accuracy", "test01", "test04")


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return hetero_samples.build_samples(tmp_path_factory.getbasetemp() / "hetero-samples")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_system_name_follows_the_hetero_convention() -> None:
    # the field notes' example: DGX-A100_A100-SXM-80GB-MIG_1x1g.10gb_TRT_HeteroMultiUse
    gpu = {"model": "A100-SXM-80GB", "name": "NVIDIA A100-SXM4-80GB"}
    assert (
        system_name("DGX-A100", gpu, "1g.10gb", "TRT")
        == "DGX-A100_A100-SXM-80GB-MIG_1x1g.10gb_TRT_HeteroMultiUse"
    )
    assert system_name(
        "my lab/rack 1", {"name": "NVIDIA H100 80GB HBM3"}, "3g.40gb", "TRT"
    ).startswith("my-lab-rack-1_H100-80GB-HBM3-MIG_1x3g.40gb_TRT")
    assert system_name("x", gpu, "1g.10gb", "TRT").endswith(HETERO_SUFFIX)


def test_scenario_directory_names() -> None:
    assert [scenario_dir(s) for s in ("offline", "Server", "single_stream", "MultiStream")] == [
        "Offline",
        "Server",
        "SingleStream",
        "MultiStream",
    ]
    with pytest.raises(ValueError, match="unknown LoadGen scenario"):
        scenario_dir("Interactive-ish")


def test_export_builds_the_submission_tree(
    tmp_path: Path, samples: dict[str, dict[str, Any]]
) -> None:
    results = [samples[n] for n in ("valid", "accuracy", "test01", "test04", "invalid", "isolated")]
    duplicate = copy.deepcopy(samples["valid"])
    duplicate["host"] = "dgx-h100-02"
    plan = plan_export(
        [*results, duplicate], submitter="ACME", platform="DGX-H100", inspect=inspect_log_dir
    )
    written = apply_plan(plan, str(tmp_path))
    root = "closed/ACME"
    perf = "%s/results/%s/%s/Offline/performance/run_1" % (root, SYSTEM, BENCH)
    acc = "%s/results/%s/%s/Offline/accuracy" % (root, SYSTEM, BENCH)
    comp = "%s/compliance/%s/%s/Offline" % (root, SYSTEM, BENCH)
    meas = "%s/measurements/%s/%s/Offline" % (root, SYSTEM, BENCH)
    expected = {
        "%s/systems/%s.json" % (root, SYSTEM),
        perf + "/mlperf_log_summary.txt",
        perf + "/mlperf_log_detail.txt",
        acc + "/mlperf_log_summary.txt",
        acc + "/mlperf_log_detail.txt",
        acc + "/mlperf_log_accuracy.json",
        acc + "/accuracy.txt",
        comp + "/TEST01/performance/run_1/mlperf_log_summary.txt",
        comp + "/TEST01/performance/run_1/mlperf_log_detail.txt",
        comp + "/TEST01/accuracy/mlperf_log_accuracy.json",
        comp + "/TEST04/performance/run_1/mlperf_log_summary.txt",
        comp + "/TEST04/performance/run_1/mlperf_log_detail.txt",
        meas + "/README.md",
        "%s/%s_heteromig_synthetic_Offline.json" % (meas, SYSTEM),
    }
    assert _files(tmp_path) == expected
    assert sorted(written) == sorted(str(tmp_path / p) for p in expected)
    # the LoadGen files are the run's own, byte for byte
    sources = {
        "TEST01": "test01",
        "TEST04": "test04",
        "accuracy": "accuracy",
        "performance": "valid",
    }
    for rel in expected:
        if not rel.endswith((".txt", ".json")) or "/systems/" in rel or "/measurements/" in rel:
            continue
        slot = next(s for s in sources if "/%s/" % s in rel)
        src = Path(samples[sources[slot]]["main"]["fetched_dir"]) / Path(rel).name
        assert filecmp.cmp(src, tmp_path / rel, shallow=False), rel
    # the accuracy run is VALID by its accuracy check (its accuracy.txt says PASS), so the export
    # of VALID results only files it under accuracy/
    assert samples["accuracy"]["verdict"] == "VALID" and samples["accuracy"]["reasons"] == []
    assert (tmp_path / acc / "accuracy.txt").read_text().strip().endswith(": PASS")
    assert read_mllog(tmp_path / acc / "mlperf_log_detail.txt")["effective_test_mode"] == (
        "AccuracyOnly"
    )
    assert [(e["slot"], e["host"]) for e in plan.exported] == [
        ("performance", "dgx-h100-01"),
        ("accuracy", "dgx-h100-01"),
        ("TEST01", "dgx-h100-01"),
        ("TEST04", "dgx-h100-01"),
    ]
    reasons = [s["reason"] for s in plan.skipped]
    invalid = samples["invalid"]["reasons"]
    assert invalid[0].startswith("the main benchmark's LoadGen result is INVALID: ")
    assert reasons[0] == "verdict INVALID: " + "; ".join(invalid)
    assert reasons[1] == "not a heterogeneous run (no background benchmarks)"
    assert reasons[2] == "%s/%s/Offline/performance is already filled by dgx-h100-01 (run %s)" % (
        SYSTEM,
        BENCH,
        hetero_samples.SAMPLE_RUN_ID,
    )


def test_system_description(tmp_path: Path, samples: dict[str, dict[str, Any]]) -> None:
    plan = plan_export(
        [samples["valid"]],
        submitter="ACME",
        platform="DGX-H100",
        inspect=inspect_log_dir,
        division="open",
        system_desc={"framework": "TensorRT", "accelerators_per_node": 8, "division": "closed"},
    )
    apply_plan(plan, str(tmp_path))
    desc = json.loads((tmp_path / "open/ACME/systems" / (SYSTEM + ".json")).read_text())
    assert desc["system_name"] == SYSTEM and desc["submitter"] == "ACME"
    assert desc["division"] == "open"  # the export's division wins over system_desc
    assert desc["framework"] == "TensorRT" and desc["accelerators_per_node"] == 8  # user's value
    assert desc["accelerator_model_name"] == "NVIDIA H100 80GB HBM3 (1x1g.10gb MIG)"
    assert desc["accelerator_memory_capacity"] == "10 GB" and desc["number_of_nodes"] == 1


def test_accuracy_mode_is_read_from_the_logs(samples: dict[str, dict[str, Any]]) -> None:
    info = inspect_log_dir(samples["accuracy"]["main"]["fetched_dir"])
    assert info.test_mode == "AccuracyOnly" and "accuracy.txt" in info.files
    perf = inspect_log_dir(samples["valid"]["main"]["fetched_dir"])
    assert perf.test_mode == "PerformanceOnly" and perf.result_validity == "VALID"
    assert inspect_log_dir("/nonexistent/dir").files == []


def test_check_reports_what_the_submission_checker_would(
    tmp_path: Path, samples: dict[str, dict[str, Any]]
) -> None:
    plan = plan_export(
        [samples[n] for n in EXPORTED],
        submitter="ACME",
        platform="DGX-H100",
        inspect=inspect_log_dir,
    )
    apply_plan(plan, str(tmp_path))
    problems = check_layout(str(tmp_path), "closed", "ACME")
    root = tmp_path / "closed/ACME"
    base = "%s/%s/Offline" % (SYSTEM, BENCH)
    found = {
        (p["severity"], str(Path(p["path"]).relative_to(root)), p["message"]) for p in problems
    }
    # without host facts only what the results tell is filled (the checker's meaningful fields,
    # in its order, less division, submitter, system_name, the node/accelerator counts, the
    # accelerator's name and memory, and HBM3 from the GPU's NVML name)
    unset = [
        "system_type",
        "status",
        "host_processor_model_name",
        "host_processors_per_node",
        "host_processor_core_count",
        "host_memory_capacity",
        "host_memory_configuration",
        "host_storage_capacity",
        "host_storage_type",
        "host_networking",
        "host_network_card_count",
        "host_networking_topology",
        "accelerator_host_interconnect",
        "accelerator_interconnect",
        "cooling",
        "framework",
        "operating_system",
        "other_software_stack",
    ]
    assert plan.system_info[SYSTEM]["unknown"] == unset
    assert found == {
        (
            "error",
            "systems/%s.json" % SYSTEM,
            "fields that need a meaningful value are empty: %s" % ", ".join(unset),
        ),
        # the sample runs last half a second, not the 600 s the rules require
        (
            "error",
            "results/%s/performance/run_1" % base,
            "min_duration 500 ms is below the required 600000 ms",
        ),
        ("error", "measurements/%s" % base, "missing user.conf"),
        (
            "error",
            "measurements/%s/%s_heteromig_synthetic_Offline.json" % (base, SYSTEM),
            "fields missing: %s" % ", ".join(IMPLEMENTATION_REQUIRED),
        ),
        (
            "error",
            "compliance/%s/TEST01" % base,
            "missing verify_performance.txt (from the MLPerf compliance verification script)",
        ),
        (
            "error",
            "compliance/%s/TEST01" % base,
            "missing verify_accuracy.txt (from the MLPerf compliance verification script)",
        ),
        (
            "error",
            "compliance/%s/TEST01/accuracy" % base,
            "missing files: baseline_accuracy.txt, compliance_accuracy.txt",
        ),
        (
            "error",
            "compliance/%s/TEST04" % base,
            "missing verify_performance.txt (from the MLPerf compliance verification script)",
        ),
        ("warning", "code", "no code/ directory: add the benchmark code"),
    }
    desc = json.loads((root / "systems" / (SYSTEM + ".json")).read_text())
    assert set(desc) == set(SYSTEM_REQUIRED)  # every field present, the unknown ones empty
    assert desc["accelerator_memory_configuration"] == "HBM3"


def test_check_passes_a_complete_export(tmp_path: Path, samples: dict[str, dict[str, Any]]) -> None:
    """With what the submitter and the MLPerf compliance scripts add, only the short duration
    of the sample runs (and the missing code/) remain."""
    results = []
    for name in EXPORTED:
        result = copy.deepcopy(samples[name])
        logs = tmp_path / "logs" / name
        shutil.copytree(result["main"]["fetched_dir"], logs)
        result["main"]["fetched_dir"] = str(logs)
        results.append(result)
    # stand-ins for files written by tools outside this project (the harness's user.conf, the
    # compliance verification scripts' outputs)
    (tmp_path / "logs/valid/user.conf").write_text("*.Offline.target_qps = 2000\n")
    for name in ("test01", "test04"):
        (tmp_path / "logs" / name / "verify_performance.txt").write_text("TEST PASS\n")
    (tmp_path / "logs/test01/verify_accuracy.txt").write_text("TEST PASS\n")
    (tmp_path / "logs/test01/baseline_accuracy.txt").write_text("accuracy=95.833%\n")
    (tmp_path / "logs/test01/compliance_accuracy.txt").write_text("accuracy=95.833%\n")
    system_desc: dict[str, Any] = {
        k: "x" for k in SYSTEM_REQUIRED if k not in ("division", "submitter", "system_name")
    }
    system_desc.update(
        status="available",
        system_type="datacenter",
        number_of_nodes=1,
        accelerators_per_node=1,
        accelerator_model_name="NVIDIA H100 (1x1g.10gb MIG)",
    )
    plan = plan_export(
        results,
        submitter="ACME",
        platform="DGX-H100",
        inspect=inspect_log_dir,
        system_desc=system_desc,
        implementation_desc={k: "fp32" for k in IMPLEMENTATION_REQUIRED},
    )
    dest = tmp_path / "sub"
    apply_plan(plan, str(dest))
    (dest / "closed/ACME/code").mkdir()
    problems = check_layout(str(dest), "closed", "ACME")
    assert [p["message"] for p in problems] == [
        "min_duration 500 ms is below the required 600000 ms"
    ]
    # a TEST04 verification that failed is caught
    (
        dest / "closed/ACME/compliance" / SYSTEM / BENCH / "Offline/TEST04/verify_performance.txt"
    ).write_text("TEST FAIL\n")
    assert "no TEST PASS" in [p["message"] for p in check_layout(str(dest), "closed", "ACME")]


def test_check_catches_invalid_results_and_stray_files(
    tmp_path: Path, samples: dict[str, dict[str, Any]]
) -> None:
    plan = plan_export(
        [samples["invalid"]],
        submitter="ACME",
        platform="DGX-H100",
        inspect=inspect_log_dir,
        only_valid=False,
    )
    apply_plan(plan, str(tmp_path))
    run_1 = tmp_path / "closed/ACME/results" / SYSTEM / BENCH / "Offline/performance/run_1"
    (run_1 / "mlperf_log_trace.json").write_text("")
    messages = {
        p["message"]
        for p in check_layout(str(tmp_path), "closed", "ACME")
        if Path(p["path"]) == run_1
    }
    assert messages == {
        "result_validity is INVALID, not VALID",
        "unexpected files: mlperf_log_trace.json",
        "min_duration 400 ms is below the required 600000 ms",
    }


def test_nothing_to_export(tmp_path: Path, samples: dict[str, dict[str, Any]]) -> None:
    plan = plan_export(
        [samples["crash"], samples["isolated"]],
        submitter="ACME",
        platform="P",
        inspect=inspect_log_dir,
    )
    assert plan.exported == [] and plan.copies == [] and plan.writes == {}
    assert [s["reason"].split(":")[0] for s in plan.skipped] == [
        "verdict INVALID",
        "not a heterogeneous run (no background benchmarks)",
    ]
    with pytest.raises(ValueError, match="division"):
        plan_export([], submitter="A", platform="P", inspect=inspect_log_dir, division="closd")
    assert (
        check_layout(str(tmp_path), "closed", "ACME")[0]["message"] == "no systems under results/"
    )
