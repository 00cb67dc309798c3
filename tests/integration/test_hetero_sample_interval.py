"""hetero_run's gpu_sample_interval_s through ansible-playbook: the option and its playbook variable.

A local host (ansible_connection=local) in shared-GPU mode with one GPU given as ``gpus``: check
mode builds the plan the runner would get, so the test reads the interval the runner would
sample at. Bad values fail the task with a message naming the option and the value, and a run
asked for with one (not in check mode) starts nothing on the host.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_activity import (
    DEFAULT_INTERVAL_S,
)
from lab.runner import run_playbook

pytestmark = pytest.mark.integration

PLAYBOOK = """
- name: GPU sample interval
  hosts: gpu_hosts
  gather_facts: false
  module_defaults:
    heteromig.fleet.hetero_run:
      allow_shared_gpu: true
      slices: []
      gpus:
        - {index: 0, uuid: GPU-00000000-0000-0000-0000-000000000001, name: NVIDIA H200,
           model: H200-141GB}
      main_benchmark: synth-mlp-small
      main_benchmark_duration: 1000
      background_benchmarks: none
      host_root: "{{ heteromig_host_root }}"
  tasks:
    - name: Default
      heteromig.fleet.hetero_run: {}
      check_mode: true

    - name: From the playbook variable
      heteromig.fleet.hetero_run: {}
      vars:
        heteromig_hetero_gpu_sample_interval_s: 0.25
      check_mode: true

    - name: From the command line as text
      heteromig.fleet.hetero_run: {}
      vars:
        heteromig_hetero_gpu_sample_interval_s: "{{ interval_text }}"
      check_mode: true

    - name: Sampling off
      heteromig.fleet.hetero_run: {}
      vars:
        heteromig_hetero_gpu_sample_interval_s: 0
      check_mode: true

    - name: The task's option wins over the variable
      heteromig.fleet.hetero_run:
        gpu_sample_interval_s: 2
      vars:
        heteromig_hetero_gpu_sample_interval_s: 0.25
      check_mode: true

    - name: Negative
      heteromig.fleet.hetero_run:
        gpu_sample_interval_s: -1
      check_mode: true
      ignore_errors: true

    - name: Too short for GPM
      heteromig.fleet.hetero_run: {}
      vars:
        heteromig_hetero_gpu_sample_interval_s: 0.1
      check_mode: true
      ignore_errors: true

    - name: Not a number
      heteromig.fleet.hetero_run: {}
      vars:
        heteromig_hetero_gpu_sample_interval_s: fast
      check_mode: true
      ignore_errors: true

    - name: Bad value in a real run
      heteromig.fleet.hetero_run:
        gpu_sample_interval_s: 120
      ignore_errors: true
"""


def test_gpu_sample_interval_option_and_variable(tmp_path: Path) -> None:
    host_root = tmp_path / "host"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "gpu_hosts": {
                    "hosts": {
                        "h1": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "heteromig_host_root": str(host_root),
                            "heteromig_results_dir": str(tmp_path / "results"),
                        }
                    }
                }
            }
        )
    )
    playbook = tmp_path / "interval.yml"
    playbook.write_text(PLAYBOOK)
    run = run_playbook(
        playbook,
        inventory=inventory,
        private_data_dir=tmp_path / "runner",
        extravars={"interval_text": "1.5"},
    )

    def planned(task: str) -> float:
        result = run.result(task, "h1")
        assert result.outcome == "ok", result.res
        return result.res["plan"]["gpu_sample_interval_s"]

    assert planned("Default") == 0.5 == DEFAULT_INTERVAL_S  # the option's default is the runner's
    assert planned("From the playbook variable") == 0.25
    assert planned("From the command line as text") == 1.5
    assert planned("Sampling off") == 0
    assert planned("The task's option wins over the variable") == 2

    def refused(task: str) -> str:
        result = run.result(task, "h1")
        assert result.outcome == "failed", result.res
        assert "Traceback" not in str(result.res)
        return str(result.res["msg"])

    assert "gpu_sample_interval_s must be 0 (off) or from 0.2 to 60 seconds, got -1" in refused(
        "Negative"
    )
    assert "gpu_sample_interval_s must be 0 (off) or from 0.2 to 60 seconds, got 0.1" in refused(
        "Too short for GPM"
    )
    assert "gpu_sample_interval_s must be a number of seconds, got 'fast'" in refused(
        "Not a number"
    )
    assert "seconds, got 120" in refused("Bad value in a real run")
    # nothing was started or written on the host: no run directory, no lock
    assert not (host_root / "runs").exists()
    assert not (host_root / "hetero_run.lock").exists()
