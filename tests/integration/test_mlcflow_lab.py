"""The mlcommons_mlcflow harness profile over the SSH lab: a hetero run through mlcr (a stand-in mlcr that
runs the real mlcflow CLI and real LoadGen, tests/mlcflow/standin_mlcr.py) on simulated MIG
slices, with the models and datasets fetched first."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from test_hetero_run import make_mig_slices

from lab import HostSpec, MakeLab

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "mlcflow" / "standin_mlcr.py"
TASK = "Run resnet50 SingleStream through MLCFlow with Offline backgrounds around it"

# Importing mlc creates $HOME/MLC: only the stand-in imports it, with MLC_REPOS set.
if importlib.util.find_spec("mlc") is None:
    pytest.skip(
        "the stand-in mlcr runs the real mlcflow CLI: pip install mlcflow",
        allow_module_level=True,
    )


def test_mlcflow_hetero_run_is_valid_and_its_logs_are_found(
    ssh_lab: MakeLab, tmp_path: Path
) -> None:
    mlcr = tmp_path / "bin" / "mlcr"
    mlcr.parent.mkdir()
    mlcr.write_text('#!/bin/sh\nexec "%s" "%s" "$@"\n' % (sys.executable, STANDIN))
    mlcr.chmod(0o755)
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    lab = ssh_lab(
        [
            HostSpec(
                "h1",
                {
                    "heteromig_gpu_backend": "sim",
                    "heteromig_sim_gpus": "1xH100-SXM5-80GB",
                    "heteromig_host_pythonpath": str(ROOT / "collections"),
                    "heteromig_results_dir": str(tmp_path / "results"),
                    "mlcr": str(mlcr),
                    "mlc_repos": str(tmp_path / "MLC" / "repos"),
                },
                {"TMPDIR": str(host_tmp)},
            )
        ]
    )
    make_mig_slices(lab.hostdir("h1") / "nvml-sim.json", 3)
    run = lab.run_playbook(ROOT / "tests" / "integration" / "playbooks" / "mlcflow_run.yml")
    assert run.rc == 0, run.stdout[-4000:]
    res = run.result(TASK, "h1").res
    assert res["verdict"] == "VALID", res["reasons"]
    assert res["harness"] == "mlcommons_mlcflow"
    main = res["main"]
    assert main["command"][:3] == [
        str(mlcr),
        "run-mlperf,inference,_performance-only",
        "--model=resnet50",
    ]
    assert main["loadgen"]["result_validity"] == "VALID"
    # LoadGen's logs where MLCFlow puts them under --results_dir, found and fetched
    logs = [f for f in main["loadgen"]["log_files"] if f.endswith("mlperf_log_summary.txt")]
    assert logs and "/resnet50/singlestream/performance/run_1/" in logs[0], logs
    assert logs[0].startswith("valid_results/")
    fetched = Path(res["results_dir"]) / "main" / logs[0]
    assert "Result is : VALID" in fetched.read_text()
    call = json.loads((fetched.parent / "standin_mlcr_call.json").read_text())
    assert call["env_CUDA_VISIBLE_DEVICES"] == main["slice"]["uuid"]
    assert "resnet50.SingleStream.min_duration = 1500" in call["user_conf"]
    # the backgrounds ran on the other slices through the main's timed phase, then were stopped
    backgrounds = res["backgrounds"]
    assert sorted(b["benchmark"] for b in backgrounds) == ["resnet50", "retinanet"]
    assert len({b["slice"]["uuid"] for b in backgrounds} | {main["slice"]["uuid"]}) == 3
    assert all(b["ready_at"] is not None and b["stopped_by_runner"] for b in backgrounds)
