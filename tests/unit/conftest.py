"""Fixtures for the unit tests of the NVML simulator, the backend door and the GPU reader.

``/work/main/collections`` (the ``ansible_collections`` tree whose ``heteromig/fleet`` links to
the repository root) goes on ``sys.path`` here as well as in ``tests/conftest.py``, so this
directory also runs on its own (``pytest tests/unit``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_COLLECTIONS = Path(__file__).resolve().parents[2] / "collections"
if str(_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(_COLLECTIONS))

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (  # noqa: E402
    SimulatedNvml,
)

SimFactory = Callable[..., SimulatedNvml]


@pytest.fixture
def state_path(tmp_path: Path) -> str:
    """Where the simulator's state file lives for one test (the file does not exist yet)."""
    return str(tmp_path / "nvml-sim" / "state.json")


@pytest.fixture
def make_sim(state_path: str) -> Iterator[SimFactory]:
    """``make_sim("1xH100-SXM5-80GB")``: an initialised simulator on the test's state file.

    Every simulator made here is shut down at the end of the test (errors ignored: a test may
    already have shut it down).
    """
    made: list[SimulatedNvml] = []

    def factory(gpus: Any = None, path: str | None = None, init: bool = True) -> SimulatedNvml:
        nvml = SimulatedNvml(path or state_path, gpus)
        if init:
            nvml.nvmlInit()
        made.append(nvml)
        return nvml

    yield factory
    for nvml in made:
        with contextlib.suppress(Exception):  # already shut down by the test
            nvml.nvmlShutdown()
