# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which engine a process needs: the slice it runs on, the engine's content key and its path.

An engine is one synthetic model's weights prepared for one (model, scenario, accuracy target)
on one GPU model and one MIG profile, like a TensorRT engine. Its content key is the sha256 over
every input that determines the engine: the model definition, scenario, accuracy target, GPU
model, profile, harness version and engine format (``engine_inputs``, ``EngineSpec``).

Engines live at ``<engine_dir>/<model>/<scenario>/<accuracy>/<gpu model>/<profile>.engine``
(``engine_path``), so a benchmark finds the engine for its own slice.

This module also resolves ``CUDA_VISIBLE_DEVICES`` through NVML (real or simulated) to the GPU
model and profile a process runs on (``resolve_target``). The engine file, whether an engine is
current and fits, and building it are ``_engine_store``'s.

Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._mlperf_terms import (
    FULL_GPU_PROFILE,
    compute_slices,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BackendError,
    nvml_error_text,
    open_backend,
)

# Bump when the harness or the engine layout changes in a way that makes old engines wrong:
# it is part of every content key, so every engine is rebuilt once.
HARNESS_VERSION = "0.1.0"

# The engine file's format version (part of every content key) and its name's suffix; the file
# itself is _engine_store's.
ENGINE_FORMAT_VERSION = 1
ENGINE_SUFFIX = ".engine"

# The "profile" of a process with no GPU at all (a whole GPU's is _mlperf_terms.FULL_GPU_PROFILE).
CPU_PROFILE = "cpu"
CPU_MODEL = "cpu"

# Environment that tells the harness which NVML to resolve CUDA_VISIBLE_DEVICES through.
ENV_BACKEND = "HETEROMIG_GPU_BACKEND"
ENV_SIM_STATE = "HETEROMIG_SIM_STATE"

_NAME_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class EngineError(Exception):
    """An engine is missing, corrupt, stale or built for something else; the message says so."""


class TargetError(Exception):
    """CUDA_VISIBLE_DEVICES does not name a device this process may run on."""


# ---------------------------------------------------------------------------------------------
# Where a process runs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceTarget:
    """The device a harness process runs on, as far as engines are concerned."""

    kind: str  # "mig", "gpu" (whole GPU, shared, no MIG isolation) or "cpu" (no GPU named)
    gpu_model: str  # catalog key (H100-SXM5-80GB), a slug of the NVML name, or "cpu"
    profile: str  # MIG profile (1g.10gb, 1c.3g.40gb), "full-gpu" or "cpu"
    visible_devices: Optional[str] = None
    uuid: Optional[str] = None  # the MIG or GPU UUID the process runs on
    gpu_uuid: Optional[str] = None
    gpu_index: Optional[int] = None
    gpu_name: Optional[str] = None
    gpu_instance_id: Optional[int] = None
    compute_instance_id: Optional[int] = None
    memory_total_mib: Optional[int] = None
    backend: Optional[str] = None
    warnings: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def shared_gpu(self) -> bool:
        return self.kind == "gpu"

    def describe(self) -> str:
        if self.kind == "cpu":
            return "the CPU (CUDA_VISIBLE_DEVICES is not set)"
        if self.kind == "gpu":
            return "GPU %s (%s, whole GPU, shared, no MIG isolation)" % (self.uuid, self.gpu_model)
        return "%s (%s MIG %s)" % (self.uuid, self.gpu_model, self.profile)

    def as_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        data["shared_gpu"] = self.shared_gpu
        return data


def cpu_target() -> SliceTarget:
    return SliceTarget(kind="cpu", gpu_model=CPU_MODEL, profile=CPU_PROFILE)


def gpu_model_key(model: Optional[str], nvml_name: Optional[str]) -> str:
    """The catalog key of a GPU model, else a file-name-safe slug of its NVML name."""
    if model:
        return str(model)
    slug = _NAME_SAFE.sub("-", str(nvml_name or "unknown-gpu")).strip("-")
    return slug or "unknown-gpu"


_OLD_MIG = re.compile(r"^MIG-(GPU-[0-9A-Fa-f-]+)/(\d+)/(\d+)$")


def resolve_target(
    visible_devices: Optional[str],
    allow_shared_gpu: bool = False,
    backend: Optional[str] = None,
    sim_state: Optional[str] = None,
    opener: Callable[..., Any] = open_backend,
) -> SliceTarget:
    """Resolve ``CUDA_VISIBLE_DEVICES`` to the GPU model and profile this process runs on.

    MIG UUIDs (``MIG-<uuid>`` and the pre-R470 ``MIG-GPU-<uuid>/<gi>/<ci>``) are looked up
    through NVML. A whole GPU (``GPU-<uuid>`` or an index) is only accepted with
    ``allow_shared_gpu``: the explicit "shared GPU, no MIG isolation" mode. Unset or empty means
    no GPU: the CPU target.
    """
    if visible_devices is None or not visible_devices.strip():
        return cpu_target()
    entries = [entry.strip() for entry in visible_devices.split(",") if entry.strip()]
    first = entries[0]
    warnings: List[str] = []
    if len(entries) > 1:
        warnings.append(
            "CUDA_VISIBLE_DEVICES names %d devices (%s); a benchmark uses one slice, the first: %s"
            % (len(entries), visible_devices, first)
        )
    name = backend or os.environ.get(ENV_BACKEND) or "nvml"
    state = sim_state or os.environ.get(ENV_SIM_STATE) or None
    try:
        opened = opener(name, state)
    except BackendError as exc:
        raise TargetError(
            "cannot resolve CUDA_VISIBLE_DEVICES=%s: %s" % (visible_devices, exc)
        ) from exc
    try:
        return _resolve(opened, visible_devices, first, allow_shared_gpu, warnings)
    except BackendError as exc:
        raise TargetError(
            "cannot resolve CUDA_VISIBLE_DEVICES=%s through NVML: %s" % (visible_devices, exc)
        ) from exc
    except opened.nvml.NVMLError as exc:
        raise TargetError(
            "CUDA_VISIBLE_DEVICES=%s: NVML (%s backend) knows no such device (%s)"
            % (visible_devices, opened.name, nvml_error_text(exc))
        ) from exc
    finally:
        opened.close()


def _resolve(
    opened: Any, visible: str, first: str, allow_shared: bool, warnings: List[str]
) -> SliceTarget:
    from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import (
        GpuReader,
    )

    nvml = opened.nvml
    reader = GpuReader(nvml)
    old = _OLD_MIG.match(first)
    if old or first.startswith("MIG-"):
        if old:
            parent = nvml.nvmlDeviceGetHandleByUUID(old.group(1))
        else:
            handle = nvml.nvmlDeviceGetHandleByUUID(first)
            parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        index = nvml.nvmlDeviceGetIndex(parent)
        gpu = reader.gpu(index, details=True)
        device = None
        for candidate in gpu["mig_devices"]:
            if old:
                ids = (candidate["gpu_instance_id"], candidate["compute_instance_id"])
                if ids == (int(old.group(2)), int(old.group(3))):
                    device = candidate
            elif candidate["uuid"] == first:
                device = candidate
        if device is None:
            raise TargetError(
                "CUDA_VISIBLE_DEVICES=%s: GPU %d has no such MIG device (it has %s)"
                % (visible, index, ", ".join(d["uuid"] for d in gpu["mig_devices"]) or "none")
            )
        return SliceTarget(
            kind="mig",
            gpu_model=gpu_model_key(gpu["model"], gpu["name"]),
            profile=device["profile"],
            visible_devices=visible,
            uuid=device["uuid"],
            gpu_uuid=gpu["uuid"],
            gpu_index=index,
            gpu_name=gpu["name"],
            gpu_instance_id=device["gpu_instance_id"],
            compute_instance_id=device["compute_instance_id"],
            memory_total_mib=device["memory_total_mib"],
            backend=opened.name,
            warnings=tuple(warnings),
        )
    if first.startswith("GPU-"):
        index = nvml.nvmlDeviceGetIndex(nvml.nvmlDeviceGetHandleByUUID(first))
    elif first.isdigit():
        index = int(first)
        warnings.append(
            "CUDA_VISIBLE_DEVICES=%s is an index: CUDA may order GPUs differently from NVML "
            "(set CUDA_DEVICE_ORDER=PCI_BUS_ID, or name the GPU by UUID)" % first
        )
    else:
        raise TargetError(
            "CUDA_VISIBLE_DEVICES=%s: %r is neither a MIG UUID, a GPU UUID nor a GPU index"
            % (visible, first)
        )
    gpu = reader.gpu(index, details=False)
    if gpu["mig_mode"]["current"] == "enabled":
        raise TargetError(
            "CUDA_VISIBLE_DEVICES=%s names GPU %d (%s), which has MIG enabled: name one of its "
            "MIG devices (MIG-<uuid>) instead" % (visible, index, gpu["uuid"])
        )
    if not allow_shared:
        raise TargetError(
            "CUDA_VISIBLE_DEVICES=%s names a whole GPU (%s, %s), not a MIG slice: benchmarks on "
            "it share the GPU with no MIG isolation. Pass --allow-shared-gpu to run in the "
            "explicit shared-GPU mode" % (visible, gpu["uuid"], gpu["name"])
        )
    return SliceTarget(
        kind="gpu",
        gpu_model=gpu_model_key(gpu["model"], gpu["name"]),
        profile=FULL_GPU_PROFILE,
        visible_devices=visible,
        uuid=gpu["uuid"],
        gpu_uuid=gpu["uuid"],
        gpu_index=index,
        gpu_name=gpu["name"],
        memory_total_mib=gpu["memory_total_mib"],
        backend=opened.name,
        warnings=tuple(warnings),
    )


def shared_gpu_banner(target: SliceTarget) -> str:
    """The loud notice printed whenever a benchmark runs on a whole, shared GPU."""
    line = "!" * 78
    return "\n".join(
        (
            line,
            "!! SHARED GPU, NO MIG ISOLATION: this benchmark runs on the whole GPU %s"
            % target.uuid,
            "!! (%s). Every benchmark on this GPU shares its SMs and memory; results are not"
            % (target.gpu_name or target.gpu_model),
            "!! comparable to MIG-isolated runs. Engine profile: %s." % FULL_GPU_PROFILE,
            line,
        )
    )


def batch_size(scenario: str, profile: str) -> int:
    """The largest batch an engine for ``scenario`` on ``profile`` runs (grows with slices)."""
    if scenario == "SingleStream":
        return 1
    if scenario == "MultiStream":
        return 8
    base = 64 if scenario == "Offline" else 16
    return base * min(compute_slices(profile), 7)


# ---------------------------------------------------------------------------------------------
# Content keys and paths
# ---------------------------------------------------------------------------------------------
def engine_inputs(
    model_definition: Dict[str, Any],
    scenario: str,
    accuracy_target: str,
    gpu_model: str,
    profile: str,
) -> Dict[str, Any]:
    """Every input that determines an engine; its sha256 is the content key."""
    return {
        "engine_format": ENGINE_FORMAT_VERSION,
        "harness_version": HARNESS_VERSION,
        "model": model_definition,
        "scenario": scenario,
        "accuracy_target": accuracy_target,
        "gpu_model": gpu_model,
        "profile": profile,
        "batch_size": batch_size(scenario, profile),
        "precision": precision_for(accuracy_target),
    }


def content_key(inputs: Dict[str, Any]) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def precision_for(accuracy_target: str) -> str:
    """High accuracy keeps float32 weights; the default target stores float16-rounded weights."""
    return "fp32" if accuracy_target == "99.9" else "fp16"


def _path_part(value: str) -> str:
    part = _NAME_SAFE.sub("_", value)
    if part in ("", ".", ".."):
        raise EngineError("%r cannot be used as part of an engine path" % value)
    return part


def engine_path(
    engine_dir: str, model: str, scenario: str, accuracy_target: str, gpu_model: str, profile: str
) -> str:
    return os.path.join(
        engine_dir,
        _path_part(model),
        _path_part(scenario),
        _path_part(accuracy_target),
        _path_part(gpu_model),
        _path_part(profile) + ENGINE_SUFFIX,
    )


# ---------------------------------------------------------------------------------------------
# What an engine is for
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineSpec:
    """One engine to build or to use: a model combination on one GPU model and profile."""

    model: str
    scenario: str
    accuracy_target: str
    gpu_model: str
    profile: str

    def inputs(self) -> Dict[str, Any]:
        from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
            check_combination,
        )

        definition = check_combination(self.model, self.scenario, self.accuracy_target)
        return engine_inputs(
            definition.definition(),
            self.scenario,
            self.accuracy_target,
            self.gpu_model,
            self.profile,
        )

    def key(self) -> str:
        return content_key(self.inputs())

    def path(self, engine_dir: str) -> str:
        return engine_path(
            engine_dir,
            self.model,
            self.scenario,
            self.accuracy_target,
            self.gpu_model,
            self.profile,
        )

    def built_for(self) -> Dict[str, str]:
        return {
            "model": self.model,
            "scenario": self.scenario,
            "accuracy_target": self.accuracy_target,
            "gpu_model": self.gpu_model,
            "profile": self.profile,
        }


def spec_for_target(
    model: str, scenario: str, accuracy_target: str, target: SliceTarget
) -> EngineSpec:
    return EngineSpec(model, scenario, accuracy_target, target.gpu_model, target.profile)
