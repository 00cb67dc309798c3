# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of ``heteromig.fleet.hetero_run`` (controller only): ``ARGUMENT_SPEC``, the one
table of their names, types, choices and defaults (documented in plugins/modules/hetero_run.py),
and the prefix of the variables that set them. No Ansible import: the campaign spec's checker
(``_campaign_spec_check``), which must not import Ansible, reads the same table.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_activity import (
    DEFAULT_INTERVAL_S,
)

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    # harness and benchmarks
    "harness": {"type": "str", "default": "heteromig_synthetic"},
    "harness_profile_dirs": {"type": "list", "elements": "path", "default": []},
    "harness_vars": {"type": "dict", "default": {}},
    "main_benchmark": {"type": "str"},
    "main_scenario": {"type": "str", "default": "Offline"},
    "main_action": {"type": "str", "default": "run_harness"},
    "main_mode": {
        "type": "str",
        "default": "PerformanceOnly",
        "choices": ["PerformanceOnly", "AccuracyOnly"],
    },
    "main_accuracy_target": {"type": "str", "default": "default", "choices": ["default", "high"]},
    "main_benchmark_duration": {"type": "int", "default": 600000},
    "main_benchmark_timeout": {"type": "int"},
    "main_benchmark_runargs": {"type": "raw"},
    "main_benchmark_cmd_prefix": {"type": "raw"},
    "main_min_query_count": {"type": "int"},
    "main_target_qps": {"type": "float"},
    "main_target_latency_ns": {"type": "int"},
    "background_benchmarks": {"type": "raw", "default": "all"},
    "background_benchmark_duration": {"type": "raw", "default": "automatic"},
    "background_benchmark_timeout": {"type": "int", "default": 7200000},
    "background_target_qps": {"type": "float"},
    "background_runargs": {"type": "raw"},
    "fill_slices": {"type": "bool", "default": True},
    # slices
    "slices": {"type": "raw"},
    "gpus": {"type": "list", "elements": "dict"},
    "main_slice": {"type": "raw"},
    "background_slices": {"type": "raw", "default": "same_gpu"},
    "allow_shared_gpu": {"type": "bool", "default": False},
    # choreography
    "readiness_regexes": {"type": "list", "elements": "str"},
    "background_start_timeout": {"type": "int", "default": 600000},
    "start_time_buffer": {"type": "int", "default": 10000},
    "start_time_buffer_mode": {"type": "str", "default": "fixed", "choices": ["fixed", "steady"]},
    "steady_window": {"type": "int", "default": 2000},
    "steady_tolerance": {"type": "float", "default": 0.05},
    "main_benchmark_immediate_start": {"type": "bool", "default": False},
    "end_time_buffer_min": {"type": "int", "default": 30000},
    "stop_grace": {"type": "int", "default": 10000},
    "lenient": {"type": "bool", "default": False},
    "verbose": {"type": "bool", "default": False},
    "verbose_all": {"type": "bool", "default": False},
    "env": {"type": "dict", "default": {}},
    "max_output_bytes": {"type": "int", "default": 256 * 1024 * 1024},
    "gpu_sample_interval_s": {"type": "raw", "default": DEFAULT_INTERVAL_S},
    # running and watching
    "run_id": {"type": "str"},
    "resume": {"type": "bool", "default": False},
    "results_dir": {"type": "path"},
    "fetch": {"type": "bool", "default": True},
    "host_root": {"type": "path"},
    "host_pythonpath": {"type": "str"},
    "backend": {"type": "str", "choices": ["nvml", "sim"]},
    "sim_state": {"type": "path"},
    "lease_timeout": {"type": "int", "default": 60000},
    "reconnect_timeout": {"type": "int", "default": 120000},
    "poll_interval": {"type": "int", "default": 15000},
    "fail_on_invalid": {"type": "bool", "default": False},
    "wait": {"type": "bool", "default": True},
}

OPTION_VAR_PREFIX = "heteromig_hetero_"
