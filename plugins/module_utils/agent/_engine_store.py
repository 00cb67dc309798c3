# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-slice engines: what an engine is built for, where it lives, and whether it may run here.

An engine is one synthetic model's weights prepared for one (model, scenario, accuracy target)
on one GPU model and one MIG profile, like a TensorRT engine. It is a single file:

    HETEROMIG-ENGINE 1\\n
    <header length in bytes>\\n
    <header: UTF-8 JSON>
    <payload: the weight tensors, raw little-endian, back to back>

The header records what the engine was built for, its content key (sha256 over every input
that determines the engine: the model definition, scenario, accuracy target, GPU model,
profile, harness version and engine format), the tensor table and the payload's sha256.

Engines live at ``<engine_dir>/<model>/<scenario>/<accuracy>/<gpu model>/<profile>.engine``, so
a benchmark finds the engine for its own slice, and a rebuild replaces the file in place. A
build whose content key matches a sound file changes nothing.

This module also resolves ``CUDA_VISIBLE_DEVICES`` through NVML (real or simulated) to the GPU
model and profile a process runs on (``resolve_target``), and answers the embedded harness
profile's build check (``python -m ..._engine_store check``, ``check_engine``): whether the engine
for this slice is current, building nothing.

numpy is imported only where weights are built or loaded.

Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

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

ENGINE_FORMAT = "heteromig.engine"
ENGINE_FORMAT_VERSION = 1
ENGINE_MAGIC = b"HETEROMIG-ENGINE 1\n"
ENGINE_SUFFIX = ".engine"
_MAX_HEADER = 1 << 20

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
# The engine file
# ---------------------------------------------------------------------------------------------
def _corrupt(path: str, why: str) -> EngineError:
    return EngineError(
        "engine %s is corrupt (%s): rebuild it (heteromig.fleet.engine_build, or the harness's "
        "build-engine command)" % (path, why)
    )


def read_header(path: str) -> Dict[str, Any]:
    """The engine's header; EngineError (missing, unreadable, corrupt) otherwise."""
    try:
        with open(path, "rb") as handle:
            return _read_header(handle, path)[0]
    except OSError as exc:
        raise _open_error(path, exc) from exc


def _open_error(path: str, exc: OSError) -> EngineError:
    if exc.errno == errno.ENOENT:
        return EngineError(
            "engine %s does not exist: build it first (heteromig.fleet.engine_build, or the "
            "harness's build-engine command)" % path
        )
    return EngineError("cannot read engine %s: %s" % (path, exc.strerror or exc))


def _read_header(handle: Any, path: str) -> Tuple[Dict[str, Any], int]:
    magic = handle.read(len(ENGINE_MAGIC))
    if magic != ENGINE_MAGIC:
        raise _corrupt(path, "it does not start with %r" % ENGINE_MAGIC.decode().strip())
    length_line = handle.readline(32)
    try:
        length = int(length_line.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise _corrupt(path, "unreadable header length") from None
    if length <= 0 or length > _MAX_HEADER:
        raise _corrupt(path, "header length %d out of range" % length)
    raw = handle.read(length)
    if len(raw) != length:
        raise _corrupt(path, "truncated header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _corrupt(path, "header is not JSON: %s" % exc) from None
    if not isinstance(header, dict) or header.get("format") != ENGINE_FORMAT:
        raise _corrupt(path, "not a %s header" % ENGINE_FORMAT)
    version = header.get("format_version")
    if version != ENGINE_FORMAT_VERSION:
        raise EngineError(
            "engine %s has format version %r; this harness reads version %d: rebuild it"
            % (path, version, ENGINE_FORMAT_VERSION)
        )
    for key in ("content_key", "built_for", "tensors", "payload_sha256", "payload_size"):
        if key not in header:
            raise _corrupt(path, "header lacks %r" % key)
    return header, len(ENGINE_MAGIC) + len(length_line) + length


def read_engine(path: str, verify: bool = True) -> Tuple[Dict[str, Any], bytes]:
    """Header and payload bytes; with ``verify`` the payload's size and sha256 are checked."""
    try:
        with open(path, "rb") as handle:
            header, _offset = _read_header(handle, path)
            payload = handle.read()
    except OSError as exc:
        raise _open_error(path, exc) from exc
    if verify:
        if len(payload) != header["payload_size"]:
            raise _corrupt(
                path, "payload is %d bytes, header says %d" % (len(payload), header["payload_size"])
            )
        if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            raise _corrupt(path, "payload checksum mismatch")
    return header, payload


def load_tensors(header: Dict[str, Any], payload: bytes, path: str = "engine") -> Dict[str, Any]:
    """The weight tensors of a verified engine, as float32 numpy arrays."""
    import numpy as np

    tensors: Dict[str, Any] = {}
    for entry in header["tensors"]:
        try:
            start, size = int(entry["offset"]), int(entry["nbytes"])
            dtype = np.dtype(entry["dtype"]).newbyteorder("<")
            array = np.frombuffer(payload, dtype=dtype, count=size // dtype.itemsize, offset=start)
            tensors[entry["name"]] = array.reshape(entry["shape"]).astype(np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise _corrupt(path, "bad tensor entry %r: %s" % (entry, exc)) from None
    return tensors


def write_engine(path: str, header: Dict[str, Any], tensors: List[Tuple[str, Any]]) -> None:
    """Write an engine atomically (temporary file in the same directory, then rename)."""
    chunks: List[bytes] = []
    table: List[Dict[str, Any]] = []
    offset = 0
    for name, array in tensors:
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        table.append(
            {
                "name": name,
                "dtype": array.dtype.str.lstrip("<>|="),
                "shape": list(array.shape),
                "offset": offset,
                "nbytes": len(data),
            }
        )
        chunks.append(data)
        offset += len(data)
    payload = b"".join(chunks)
    full = dict(
        header,
        format=ENGINE_FORMAT,
        format_version=ENGINE_FORMAT_VERSION,
        tensors=table,
        payload_size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    )
    raw = json.dumps(full, sort_keys=True, indent=1).encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".engine.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(ENGINE_MAGIC)
            handle.write(b"%d\n" % len(raw))
            handle.write(raw)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def _build_lock(path: str) -> Iterator[None]:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# What an engine is for, and whether it fits
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


def cache_status(spec: EngineSpec, path: str) -> Tuple[str, str]:
    """('cached', '') if ``path`` holds a sound engine with ``spec``'s key; else (action, why).

    action is 'build' (no engine yet) or 'rebuild' (stale or corrupt), why says which.
    """
    if not os.path.exists(path):
        return "build", "no engine at %s" % path
    try:
        header, _payload = read_engine(path, verify=True)
    except EngineError as exc:
        return "rebuild", str(exc)
    expected = spec.key()
    if header.get("content_key") != expected:
        changed = _changed_inputs(header.get("inputs"), spec.inputs())
        return "rebuild", "content key changed (%s)" % (", ".join(changed) or "inputs differ")
    return "cached", ""


def _changed_inputs(old: Any, new: Dict[str, Any]) -> List[str]:
    if not isinstance(old, dict):
        return []
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def check_fits(
    header: Dict[str, Any],
    path: str,
    target: SliceTarget,
    model: str,
    scenario: str,
    accuracy_target: str,
) -> None:
    """Refuse an engine built for another device, profile, model, scenario or harness."""
    built = header.get("built_for") or {}
    device = (built.get("gpu_model"), built.get("profile"))
    if device != (target.gpu_model, target.profile):
        raise EngineError(
            "engine %s was built for %s %s, but this process runs on %s: refusing to run it, as "
            "TensorRT refuses an engine built for another GPU model or MIG profile. Build an "
            "engine for %s %s (heteromig.fleet.engine_build)"
            % (
                path,
                device[0],
                _profile_words(device[1]),
                target.describe(),
                target.gpu_model,
                _profile_words(target.profile),
            )
        )
    wanted = {"model": model, "scenario": scenario, "accuracy_target": accuracy_target}
    wrong = [
        "%s %s (wanted %s)" % (key, built.get(key), value)
        for key, value in wanted.items()
        if built.get(key) != value
    ]
    if wrong:
        raise EngineError(
            "engine %s was built for another benchmark: %s" % (path, "; ".join(wrong))
        )
    if header.get("harness_version") != HARNESS_VERSION:
        raise EngineError(
            "engine %s was built by harness version %s; this harness is version %s: rebuild it"
            % (path, header.get("harness_version"), HARNESS_VERSION)
        )
    try:
        spec = EngineSpec(model, scenario, accuracy_target, target.gpu_model, target.profile)
        expected = spec.key()
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    if header.get("content_key") != expected:
        raise EngineError(
            "engine %s is stale: its content key %s differs from %s (the model definition "
            "changed): rebuild it" % (path, str(header.get("content_key"))[:12], expected[:12])
        )


def _profile_words(profile: Optional[str]) -> str:
    if profile == FULL_GPU_PROFILE:
        return "(whole GPU, shared, no MIG isolation)"
    if profile == CPU_PROFILE:
        return "(CPU, no GPU)"
    return "MIG %s" % profile


def other_profiles(engine_dir: str, spec: EngineSpec) -> List[str]:
    """'<gpu model> <profile>' of the engines that exist for ``spec``'s benchmark (for errors)."""
    base = os.path.join(
        engine_dir,
        _path_part(spec.model),
        _path_part(spec.scenario),
        _path_part(spec.accuracy_target),
    )
    found: List[str] = []
    try:
        models = sorted(os.listdir(base))
    except OSError:
        return []
    for gpu_model in models:
        try:
            names = sorted(os.listdir(os.path.join(base, gpu_model)))
        except OSError:
            continue
        found.extend(
            "%s %s" % (gpu_model, name[: -len(ENGINE_SUFFIX)])
            for name in names
            if name.endswith(ENGINE_SUFFIX)
        )
    return found


def locate_engine(
    engine_dir: Optional[str],
    engine: Optional[str],
    model: str,
    scenario: str,
    accuracy_target: str,
    target: SliceTarget,
) -> Tuple[str, Dict[str, Any], bytes]:
    """Find, verify and check the engine for this process; (path, header, payload)."""
    spec = spec_for_target(model, scenario, accuracy_target, target)
    if engine:
        path = engine
    elif engine_dir:
        path = spec.path(engine_dir)
        if not os.path.exists(path):
            others = other_profiles(engine_dir, spec)
            raise EngineError(
                "no engine for %s %s %s on %s %s under %s%s: build it first "
                "(heteromig.fleet.engine_build, or the harness's build-engine command)"
                % (
                    model,
                    scenario,
                    accuracy_target,
                    target.gpu_model,
                    _profile_words(target.profile),
                    engine_dir,
                    " (engines exist for: %s)" % ", ".join(others) if others else "",
                )
            )
    else:
        raise EngineError("no engine given: pass --engine PATH or --engine-dir DIR")
    header, payload = read_engine(path, verify=True)
    check_fits(header, path, target, model, scenario, accuracy_target)
    return path, header, payload


def build_engine(
    spec: EngineSpec,
    engine_dir: Optional[str] = None,
    output: Optional[str] = None,
    target: Optional[SliceTarget] = None,
    force: bool = False,
) -> Dict[str, Any]:
    """Build (or keep) the engine for ``spec``; returns path, key, changed, action and reason."""
    import numpy as np

    from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
        check_combination,
    )

    model = check_combination(spec.model, spec.scenario, spec.accuracy_target)
    if output:
        path = output
    elif engine_dir:
        path = spec.path(engine_dir)
    else:
        raise EngineError("no engine location: pass --engine-dir DIR or --output PATH")
    inputs = spec.inputs()
    key = content_key(inputs)
    result: Dict[str, Any] = {
        "path": path,
        "content_key": key,
        "built_for": spec.built_for(),
        "changed": False,
    }
    try:
        with _build_lock(path):
            action, reason = ("rebuild", "forced") if force else cache_status(spec, path)
            if action == "cached":
                result.update(action="cached", reason="content key %s matches" % key[:12])
                return result
            weights = model.weights()
            dtype = np.float32 if inputs["precision"] == "fp32" else np.float16
            tensors = [
                (name, weights[name].astype(dtype)) for name, _shape in model.tensor_shapes()
            ]
            header = {
                "content_key": key,
                "inputs": inputs,
                "built_for": spec.built_for(),
                "harness_version": HARNESS_VERSION,
                "precision": inputs["precision"],
                "batch_size": inputs["batch_size"],
                "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "built_on": {
                    "host": socket.gethostname(),
                    "device": target.as_dict() if target else None,
                },
            }
            write_engine(path, header, tensors)
    except OSError as exc:
        raise EngineError("cannot write engine %s: %s" % (path, exc.strerror or exc)) from exc
    result.update(changed=True, action=action, reason=reason)
    return result


# ---------------------------------------------------------------------------------------------
# Build stamps (engine_build, for profiles whose build has no check) and the check command
# ---------------------------------------------------------------------------------------------
def stamp_path(
    engine_dir: str,
    harness: str,
    benchmark: str,
    scenario: str,
    variant: str,
    gpu_model: str,
    profile: str,
) -> str:
    """Where engine_build records a finished build whose engine the harness keeps itself."""
    return os.path.join(
        engine_dir,
        _path_part(harness),
        _path_part(benchmark),
        _path_part(scenario),
        _path_part(variant),
        _path_part(gpu_model),
        _path_part(profile) + ".stamp",
    )


def check_engine(
    model: str,
    scenario: str,
    accuracy_target: str,
    engine_dir: str,
    allow_shared_gpu: bool = False,
    harness_version: Optional[str] = None,
) -> Dict[str, Any]:
    """Whether the engine for this process's slice is current: the profile's build check.

    Builds nothing. ``action`` is 'cached', 'build' or 'rebuild', with ``reason``, ``path`` and
    ``content_key``. ``harness_version`` is the controller's: another one here is an error.
    """
    if harness_version is not None and harness_version != HARNESS_VERSION:
        raise EngineError(
            "the harness on this host is version %s, the controller's collection has %s: re-run "
            "the role heteromig.fleet.host_runtime so that the host runs this collection's "
            "harness" % (HARNESS_VERSION, harness_version)
        )
    target = resolve_target(os.environ.get("CUDA_VISIBLE_DEVICES"), allow_shared_gpu)
    spec = spec_for_target(model, scenario, accuracy_target, target)
    path = spec.path(engine_dir)
    key = spec.key()
    action, reason = cache_status(spec, path)
    if action == "cached":
        reason = "content key %s matches" % key[:12]
    return {"action": action, "reason": reason, "path": path, "content_key": key}


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m ..._engine_store check ...``: one JSON line, exit 0; 2 with an error line."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="heteromig_engine_store")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="is the engine for this slice current?")
    check.add_argument("--model", required=True)
    check.add_argument("--scenario", required=True)
    check.add_argument("--accuracy-target", default="99")
    check.add_argument("--engine-dir", required=True)
    check.add_argument("--allow-shared-gpu", action="store_true")
    check.add_argument("--harness-version")
    args = parser.parse_args(argv)
    try:
        result = check_engine(
            args.model,
            args.scenario,
            args.accuracy_target,
            args.engine_dir,
            args.allow_shared_gpu,
            args.harness_version,
        )
    except (EngineError, TargetError, ValueError) as exc:
        sys.stderr.write("heteromig_engine_store: error: %s\n" % exc)
        return 2
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
