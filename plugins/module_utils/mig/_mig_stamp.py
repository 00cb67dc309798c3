# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's record of the MIG layout ``mig_layout`` last applied there.

After a run that applied a layout (or found it applied) outside check mode, the module stores
the result a run of the same request would give on the GPUs as they are now, under a key made
of three digests:

- the request (every option that decides the plan, and the text of a mig-parted file);
- the code that plans (the sources of the planner and of the NVML reading, as shipped);
- the host's MIG state (``MigStateReader.host_state()``: every GPU's identity, MIG mode,
  GPU and compute instances with their placements, and each model's profiles).

The plan is a pure function of those three, so a later run whose key matches gets that result
without planning again; any difference (another layout asked for, an instance created by
hand, a new collection version, a replaced GPU) misses, and the run plans as usual. Check mode
only reads the record. A missing, unreadable or foreign record is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import pkgutil
import tempfile
from typing import Any, Dict, Mapping, Optional

STAMP_FORMAT = "heteromig.mig-layout-stamp"
STAMP_VERSION = 1
STAMP_NAME = "mig_layout-stamp.json"
# Where hosts with real GPUs keep it (simulated hosts: beside their simulator state file).
NVML_STAMP_DIR = "/var/lib/heteromig"

_PLUGINS = "ansible_collections.heteromig.fleet.plugins"
# Everything a plan depends on, besides the request and the state.
_PLANNER_SOURCES = (
    ("module_utils.nvml", "_gpu_catalog.py"),
    ("module_utils.nvml", "_gpu_inventory.py"),
    ("module_utils.mig", "_mig_apply.py"),
    ("module_utils.mig", "_mig_commands.py"),
    ("module_utils.mig", "_mig_host.py"),
    ("module_utils.mig", "_mig_layout_run.py"),
    ("module_utils.mig", "_mig_layout_spec.py"),
    ("module_utils.mig", "_mig_packing.py"),
    ("module_utils.mig", "_mig_parted.py"),
    ("module_utils.mig", "_mig_plan.py"),
    ("module_utils.mig", "_mig_select.py"),
    ("module_utils.mig", "_mig_stamp.py"),
    ("module_utils.mig", "_mig_state.py"),
    ("modules", "mig_layout.py"),
)
# Options that change what a run returns, not what it plans.
# Hooks, GPU clients and boot persistence act around a change, never on the plan.
_NOT_PLANNING = frozenset(
    (
        "return_mig_devices",
        "return_gpu_states",
        "stamp",
        "deprecated_variables",
        "hooks",
        "hooks_file",
        "hooks_timeout",
        "gpu_clients",
        "boot_persistence",
        "boot_config_dir",
        "boot_runtime_dir",
        "boot_unit_dir",
        "boot_after",
    )
)


def default_stamp_path(backend: str, sim_state: Optional[str]) -> str:
    if backend == "sim" and sim_state:
        return os.path.join(os.path.dirname(os.path.abspath(sim_state)), STAMP_NAME)
    return os.path.join(NVML_STAMP_DIR, STAMP_NAME)


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def planner_digest() -> str:
    """Digest of the planning code as it runs here (read from the module's payload)."""
    sha = hashlib.sha256()
    for package, name in _PLANNER_SOURCES:
        sha.update(("%s/%s\0" % (package, name)).encode())
        data = pkgutil.get_data("%s.%s" % (_PLUGINS, package), name)
        if data is None and package != "modules":
            # a module_utils package always answers (the module itself is not in one in a
            # checkout): a file missing here would leave the stamp blind to its changes
            raise FileNotFoundError("the planner's source %s/%s is not readable" % (package, name))
        sha.update(data or b"")
    return sha.hexdigest()


def stamp_key(
    request: Mapping[str, Any], host_state: Mapping[str, Any], planner: Optional[str] = None
) -> str:
    """The key of a plan: request options (``_NOT_PLANNING`` ones left out), code, state."""
    planning = {name: value for name, value in request.items() if name not in _NOT_PLANNING}
    return _digest(
        {
            "format": STAMP_FORMAT,
            "version": STAMP_VERSION,
            "planner": planner or planner_digest(),
            "request": planning,
            "state": host_state,
        }
    )


class LayoutStamp:
    """The record file: ``lookup`` a key, ``store`` a result under a key (atomically)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def lookup(self, key: str) -> Optional[Dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        if (
            not isinstance(data, dict)
            or data.get("format") != STAMP_FORMAT
            or data.get("version") != STAMP_VERSION
            or data.get("key") != key
            or not isinstance(data.get("result"), dict)
        ):
            return None
        return data["result"]

    def store(self, key: str, result: Mapping[str, Any]) -> None:
        """Write the record; OSError if the directory cannot be created or written."""
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        data = {
            "format": STAMP_FORMAT,
            "version": STAMP_VERSION,
            "key": key,
            "result": dict(result),
        }
        fd, tmp = tempfile.mkstemp(prefix=".mig_layout-stamp.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
