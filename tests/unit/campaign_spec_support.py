"""The base campaign spec of test_campaign_spec.py and test_campaign_spec_bad_input.py (not a
test module): one good spec, written out by hand from docs/campaign.md."""

from __future__ import annotations

from typing import Any

SRC = "campaign.yml"


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
