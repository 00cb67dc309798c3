# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one door to NVML: real pynvml, or the simulator, chosen explicitly per host.

Everything in the collection that reads or changes GPUs receives a ``GpuBackend`` from
``open_backend`` and calls ``backend.nvml.<pynvml function>``. Which NVML sits behind it is
decided by the ``backend`` option alone (``heteromig_gpu_backend`` in inventories). There is no
fallback: a host without a driver fails with a message naming the missing library.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_errors import BackendError

BACKENDS = ("nvml", "sim")

# Argument spec shared by every module that talks to GPUs (documented by the
# heteromig.fleet.gpu_backend doc fragment).
BACKEND_ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = {
    "backend": {"type": "str", "default": "nvml", "choices": list(BACKENDS)},
    "sim_state": {"type": "path"},
    "sim_gpus": {"type": "raw"},
}


# (argv) -> (rc, stdout, stderr), e.g. AnsibleModule.run_command
RunCommand = Callable[[List[str]], Tuple[int, str, str]]


# NVML error codes in the words nvidia-smi uses, so messages read the same as on real hosts
# (pynvml's own str() asks libnvidia-ml for the text, which a simulated host does not have).
_NVML_ERROR_TEXT = {
    1: "Uninitialized",
    2: "Invalid Argument",
    3: "Not Supported",
    4: "Insufficient Permissions",
    6: "Not Found",
    7: "Insufficient Size",
    9: "Driver Not Loaded",
    10: "Timeout",
    12: "NVML Shared Library Not Found",
    13: "Function Not Found",
    15: "GPU is lost",
    16: "GPU requires restart",  # nvmlErrorString (pynvml carries the same table)
    19: "In use by another client",
    20: "Insufficient Memory",
    23: "Insufficient Resources",
    29: "Invalid State",
    999: "Unknown Error",
}


def nvml_error_text(exc: BaseException) -> str:
    """'In use by another client (NVML error 19)' for an NVMLError; str() for anything else."""
    code = getattr(exc, "value", None)
    if isinstance(code, int):
        return "%s (NVML error %d)" % (_NVML_ERROR_TEXT.get(code, "NVML error"), code)
    return str(exc)


class GpuBackend:
    """An opened NVML (real or simulated) plus the operations NVML itself does not offer."""

    def __init__(
        self, name: str, nvml: Any, sim: Any = None, run_command: Optional[RunCommand] = None
    ) -> None:
        self.name = name
        self.nvml = nvml
        self._sim = sim
        self._run_command = run_command

    @property
    def simulated(self) -> bool:
        return self._sim is not None

    def reset_gpu(self, index: int) -> None:
        """Reset one GPU (applies a pending MIG mode on Ampere). NVML has no call for this."""
        if self._sim is not None:
            self._sim.sim_reset_gpu(index)
            return
        if self._run_command is None:
            raise BackendError(
                "cannot reset GPU %d: no command runner was given to open_backend" % index
            )
        rc, out, err = self._run_command(["nvidia-smi", "--gpu-reset", "-i", str(index)])
        if rc != 0:
            raise BackendError(
                "nvidia-smi could not reset GPU %d: %s" % (index, (out + err).strip())
            )

    def reboot_simulated_host(self) -> None:
        if self._sim is None:
            raise BackendError("only a simulated host can be rebooted through the backend")
        self._sim.sim_reboot()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()


@contextlib.contextmanager
def opened_backend(
    params: Mapping[str, Any],
    fail: Callable[[str], Any],
    doing: str,
    backend: Optional[str] = None,
    run_command: Optional[RunCommand] = None,
) -> Iterator[GpuBackend]:
    """The backend a GPU module's options name (``BACKEND_ARGUMENT_SPEC``), open for the block.

    Every GPU module does the same around its work: a BackendError, opening NVML or inside the
    block, reaches ``fail`` with its own message, an NVML error as "<doing> failed: <NVML's
    words>", and NVML is shut down whatever happens. ``fail`` does not return (a module's
    ``fail_json``, or a function that raises its own error).
    """
    try:
        opened = open_backend(
            backend or params["backend"],
            params.get("sim_state"),
            params.get("sim_gpus"),
            run_command,
        )
    except BackendError as exc:
        fail(str(exc))
        raise
    try:
        yield opened
    except BackendError as exc:
        fail(str(exc))
        raise
    except opened.nvml.NVMLError as exc:
        fail("%s failed: %s" % (doing, nvml_error_text(exc)))
        raise
    finally:
        opened.close()


def register_process(
    backend: str,
    sim_state: Optional[str],
    pid: int,
    device_uuid: str,
    name: str,
    used_memory: int = 0,
) -> bool:
    """Show ``pid`` on its GPU or MIG device in NVML, as a CUDA context does; True if recorded.

    On real GPUs the driver does this when the process creates its context: nothing to do. A
    simulated host records the process in its state file (SimulatorError when the device is
    unknown there).
    """
    if backend != "sim":
        return False
    if not sim_state:
        raise BackendError("backend 'sim' needs a simulator state file to register pid %d" % pid)
    from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes import (
        register_process as record_process,
    )

    record_process(sim_state, pid, device_uuid, name, used_memory)
    return True


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        import sys

        raise BackendError(
            "the Python package nvidia-ml-py (module pynvml) is not installed for %s on this "
            "host; install it with '%s -m pip install nvidia-ml-py' (role "
            "heteromig.fleet.host_runtime does this)" % (sys.executable, sys.executable)
        ) from exc
    return pynvml


def open_backend(
    backend: str,
    sim_state: Optional[str] = None,
    sim_gpus: Any = None,
    run_command: Optional[RunCommand] = None,
) -> GpuBackend:
    """Open and initialise NVML for ``backend`` ('nvml' or 'sim').

    ``run_command`` runs the few operations NVML has no call for (a GPU reset through
    nvidia-smi); modules pass ``module.run_command``.
    """
    if backend not in BACKENDS:
        raise BackendError(
            "unknown GPU backend %r: choose one of %s" % (backend, ", ".join(BACKENDS))
        )
    pynvml = _import_pynvml()
    if backend == "sim":
        from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
            SimulatedNvml,
        )

        if not sim_state:
            raise BackendError(
                "backend 'sim' needs a simulator state file: set sim_state "
                "(heteromig_sim_state in the inventory)"
            )
        sim = SimulatedNvml(sim_state, sim_gpus)
        sim.nvmlInit()
        return GpuBackend("sim", sim, sim=sim)

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound as exc:
        raise BackendError(
            "NVML shared library libnvidia-ml.so.1 was not found on this host: the NVIDIA driver "
            "is not installed. Install the driver, or, for simulated GPUs, set "
            "heteromig_gpu_backend: sim"
        ) from exc
    except pynvml.NVMLError_DriverNotLoaded as exc:
        raise BackendError(
            "the NVIDIA kernel driver is not loaded on this host (NVML: %s); load it "
            "(modprobe nvidia) or check 'nvidia-smi'" % nvml_error_text(exc)
        ) from exc
    except pynvml.NVMLError as exc:
        raise BackendError(
            "NVML could not be initialised on this host: %s" % nvml_error_text(exc)
        ) from exc
    return GpuBackend("nvml", pynvml, run_command=run_command)
