"""Fixtures of the NVML simulator tests (test_nvml_sim_*.py): ``h100`` and ``live_child``.

``make_sim`` and ``state_path`` come from tests/unit/conftest.py; constants and plain helpers
from nvml_sim_helpers.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pynvml
import pytest
from nvml_sim_helpers import ENABLE, SimFactory


@pytest.fixture
def h100(make_sim: SimFactory) -> tuple[Any, Any]:
    """An H100 with MIG enabled (Hopper applies at once): (nvml, device handle)."""
    nvml = make_sim("1xH100-SXM5-80GB")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_SUCCESS
    return nvml, handle


@pytest.fixture
def live_child() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose pid can be registered; killed and reaped at the end."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
