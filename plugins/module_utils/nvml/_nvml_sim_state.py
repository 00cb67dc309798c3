# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The simulated NVML's shared half (runs on targets; private): the state file, its format, the
GPU spec it is created from, handle kinds and the errors. The reading half (``_nvml_sim``) and the
changing halves (``_nvml_sim_changes``, ``_nvml_sim_activity``) import it, and not each other.
"""

from __future__ import annotations

import errno
import json
import os
import re
from typing import Any, Dict, List, NoReturn, Optional, Tuple

try:
    import pynvml
except ImportError:  # reported by open_backend, which imports pynvml before this module
    pynvml = None

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    find_model,
    known_model_names,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_errors import BackendError

STATE_FORMAT = "heteromig.nvml-sim"
STATE_VERSION = 1
DRIVER_VERSION = "580.159.04"
NVML_VERSION = "13.580.159.04"
CUDA_DRIVER_VERSION = 13000

# Handle kinds, encoded into the (never dereferenced) pointer values of opaque handles.
KIND_DEVICE = 1
KIND_GPU_INSTANCE = 2
KIND_COMPUTE_INSTANCE = 3
KIND_MIG_DEVICE = 4
HANDLE_TAG = 0x5A << 52


class SimulatorError(BackendError):
    """The simulator's configuration or state file is unusable; the message says why."""


_SPEC_ITEM = re.compile(r"^\s*(?:(\d+)\s*[xX*]\s*)?([A-Za-z0-9][A-Za-z0-9 ._+-]*?)\s*$")


def _reset_flag(value: Any, item: Any) -> bool:
    """``reset_supported`` as a bool; bool("no") is True, so strings are read as Ansible does."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise SimulatorError(
        "reset_supported in simulated GPU entry %r must be true or false, got %r" % (item, value)
    )


def parse_gpu_spec(spec: Any) -> List[Dict[str, Any]]:
    """Normalise a description of simulated GPUs.

    Accepts ``"8xH100-SXM5-80GB"``, ``"2xA100-SXM4-40GB,1xA30"``, a list of such strings, or a
    list of mappings ``{model: ..., count: ..., reset_supported: ...}``. Returns one mapping
    per GPU: ``{"model": key, "reset_supported": bool}``.
    """
    if spec is None or spec == "" or spec == []:
        raise SimulatorError(
            "no simulated GPUs described: set heteromig_sim_gpus, e.g. '8xH100-SXM5-80GB'"
        )
    items: List[Any]
    if isinstance(spec, str):
        items = [part for part in spec.split(",") if part.strip()]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise SimulatorError(
            "simulated GPUs must be a string like '8xH100-SXM5-80GB' or a list, not %s"
            % type(spec).__name__
        )
    gpus: List[Dict[str, Any]] = []
    for item in items:
        reset_supported = True
        if isinstance(item, dict):
            unknown = set(item) - {"model", "count", "reset_supported"}
            if unknown:
                raise SimulatorError(
                    "unknown key(s) %s in simulated GPU entry %r; allowed: model, count, "
                    "reset_supported" % (", ".join(sorted(unknown)), item)
                )
            name = str(item.get("model", ""))
            count = item.get("count", 1)
            reset_supported = _reset_flag(item.get("reset_supported", True), item)
        else:
            match = _SPEC_ITEM.match(str(item))
            if not match:
                raise SimulatorError("cannot read simulated GPU entry %r" % (item,))
            count = int(match.group(1) or 1)
            name = match.group(2)
        model = find_model(name)
        if model is None:
            raise SimulatorError(
                "unknown simulated GPU model %r; known models: %s"
                % (name, ", ".join(known_model_names()))
            )
        if not isinstance(count, int) or isinstance(count, bool) or count < 1 or count > 64:
            raise SimulatorError(
                "GPU count for %s must be a whole number from 1 to 64, got %r" % (name, count)
            )
        gpus.extend(
            {"model": model.key, "reset_supported": reset_supported} for _copy in range(count)
        )
    if len(gpus) > 64:
        raise SimulatorError("at most 64 simulated GPUs per host, got %d" % len(gpus))
    return gpus


class StateFile:
    """The simulator's JSON state file, read here; ``_nvml_sim_changes`` writes it under an
    flock on ``<path>.lock``."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.lock_path = self.path + ".lock"
        # The last state read, keyed by the file's identity: every store replaces the file with
        # a new one, so an unchanged key means unchanged content. Real NVML answers a query in
        # microseconds; re-parsing the JSON state on each of the few hundred calls a planning
        # run makes would cost the simulator tens of milliseconds per host.
        self._cached: Optional[Tuple[Tuple[int, ...], Dict[str, Any]]] = None

    def _open_error(self, exc: OSError) -> SimulatorError:
        if exc.errno == errno.ENOENT:
            return SimulatorError("simulator state file %s does not exist" % self.path)
        return SimulatorError("cannot read simulator state file %s: %s" % (self.path, exc.strerror))

    def load(self) -> Dict[str, Any]:
        """The state as the file holds it now (parsed anew; see read for the cached one)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise self._open_error(exc) from exc
        return self._parse(text)

    def _parse(self, text: Any) -> Dict[str, Any]:
        # text: str, or UTF-8 bytes (an invalid byte is a ValueError, reported as corruption)
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise SimulatorError(
                "simulator state file %s is corrupt (%s); move it away to start from a fresh "
                "simulated host" % (self.path, exc)
            ) from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise SimulatorError(
                '%s is not a heteromig simulator state file (no \'"format": "%s"\'); move it '
                "away to start from a fresh simulated host" % (self.path, STATE_FORMAT)
            )
        version = state.get("version")
        if not isinstance(version, int) or version > STATE_VERSION:
            raise SimulatorError(
                "simulator state file %s was written by a newer heteromig (state version %r; "
                "this one reads version %d): upgrade the collection on the controller"
                % (self.path, version, STATE_VERSION)
            )
        for key in ("gpus", "processes", "faults", "spec"):
            if not isinstance(state.get(key), list):
                raise SimulatorError(
                    "simulator state file %s is corrupt: '%s' is missing or not a list"
                    % (self.path, key)
                )
        return state

    def forget(self) -> None:
        """Drop the state kept from the last read (the file was just replaced)."""
        self._cached = None

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def read(self) -> Dict[str, Any]:
        """The current state; callers must not modify it (it may be shared with later reads)."""
        # No lock: every store replaces the whole file atomically (os.replace), so an open
        # file is one complete state, and its fstat identifies that state.
        try:
            with open(self.path, "rb") as handle:
                st = os.fstat(handle.fileno())
                key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if self._cached is not None and self._cached[0] == key:
                    return self._cached[1]
                data = handle.read()
        except OSError as exc:
            raise self._open_error(exc) from exc
        state = self._parse(data)
        self._cached = (key, state)
        return state


def describe_spec(gpus: List[Dict[str, Any]]) -> str:
    counts: Dict[str, int] = {}
    for gpu in gpus:
        counts[gpu["model"]] = counts.get(gpu["model"], 0) + 1
    return ",".join("%dx%s" % (count, model) for model, count in counts.items())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def raise_nvml(code: int) -> NoReturn:
    raise pynvml.NVMLError(code)


def slot_free(occupied: List[Tuple[int, int]], start: int, size: int) -> bool:
    """Whether the placement [start, start + size) overlaps none of ``occupied``."""
    return all(start + size <= lo or start >= hi for lo, hi in occupied)
