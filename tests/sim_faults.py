"""Fault injection into a simulated host's NVML (tests only; never shipped to hosts).

The simulator honours the ``faults`` its state file lists (``_nvml_sim_changes._maybe_fault``);
this writes one there, under the state's lock, as every change does.
"""

from __future__ import annotations

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes import update
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_state import StateFile


def inject_fault(state_path: str, function: str, error: int, skip: int = 0, times: int = 1) -> None:
    """Make the simulator's ``function`` fail with NVML error ``error`` after ``skip`` calls."""
    with update(StateFile(state_path)) as state:
        state["faults"].append(
            {"function": function, "error": error, "skip": skip, "remaining": times}
        )
