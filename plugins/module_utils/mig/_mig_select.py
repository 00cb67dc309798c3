# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GPUs of a host as the planner sees them, and which layout entry manages which GPU.

- ``CurrentGpu``/``CurrentInstance``: a GPU's identity and its MIG state as read through NVML.
- GPUs are selected by index, UUID, PCI bus id or model name (``parse_selector``); the
  module's ``layout``/``gpus`` options become ``GpuEntry`` items (``parse_gpu_entries``), and
  ``assign_layouts`` detects selectors that match nothing and GPUs claimed by two different
  layouts.

Errors raise ``LayoutError``; nothing here changes any state. Private module (leading
underscore): not a public API of the collection.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    LayoutError,
    LayoutSpec,
    _int,
    _type_name,
    layout_spec_text,
    parse_layout,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    find_model,
    known_model_names,
)


# --------------------------------------------------------------------------- current state
class CurrentInstance(NamedTuple):
    """An existing GPU instance and its compute instances, as read through NVML."""

    gi_id: int
    profile_id: int
    profile: str
    start: int
    size: int
    compute: Tuple[Tuple[int, int], ...]  # (start, size) of each CI, sorted
    ci_ids: Tuple[int, ...] = ()

    @property
    def key(self) -> Tuple[int, int, Tuple[Tuple[int, int], ...]]:
        return (self.profile_id, self.start, self.compute)


class GpuIdentity(NamedTuple):
    """What selectors match on."""

    index: int  # type: ignore[assignment]  # NVML GPU index (shadows tuple.index)
    uuid: str
    pci_bus_id: str
    name: str
    model: Optional[str]
    pci_device_id: int = 0
    mig_capable: bool = True

    @property
    def label(self) -> str:
        return "GPU %d (%s, %s)" % (self.index, self.model or self.name, self.pci_bus_id)


class CurrentGpu(NamedTuple):
    identity: GpuIdentity
    mig_current: bool
    mig_pending: bool
    instances: Tuple[CurrentInstance, ...] = ()


# ------------------------------------------------------------------------------- selectors
_PCI_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-f]{4,8}):)?(?P<bus>[0-9a-f]{2}):(?P<device>[0-9a-f]{2})\.(?P<function>[0-7])$",
    re.IGNORECASE,
)
_UUID_RE = re.compile(r"^GPU-[0-9a-f-]{8,}$", re.IGNORECASE)


def normalise_pci_bus_id(text: str) -> Optional[str]:
    """``1b:00.0`` or ``0000:1B:00.0`` -> ``00000000:1B:00.0`` (NVML's form); None if not one."""
    match = _PCI_RE.match(text.strip())
    if not match:
        return None
    domain = int(match.group("domain") or "0", 16)
    return "%08X:%s:%s.%s" % (
        domain,
        match.group("bus").upper(),
        match.group("device").upper(),
        match.group("function"),
    )


class Selector(NamedTuple):
    kind: str  # index | uuid | pci_bus_id | model
    value: Any
    text: str

    def matches(self, gpu: GpuIdentity) -> bool:
        if self.kind == "index":
            return gpu.index == self.value
        if self.kind == "uuid":
            return gpu.uuid.lower() == self.value
        if self.kind == "pci_bus_id":
            return normalise_pci_bus_id(gpu.pci_bus_id) == self.value
        return model_matches(self.value, gpu)


def model_matches(value: str, gpu: GpuIdentity) -> bool:
    """A model selector: a catalog key/alias, an NVML name, or a PCI device id (0x20B010DE)."""
    if value.startswith("0x"):
        return gpu.pci_device_id == int(value, 16)
    model = find_model(value)
    if model is not None:
        return gpu.model == model.key or gpu.name.lower() == model.nvml_name.lower()
    return gpu.name.lower() == value


def parse_selector(value: Any, where: str) -> Selector:
    """One GPU selector: an index, a GPU UUID, a PCI bus id or a model name (or a mapping)."""
    if isinstance(value, dict):
        if len(value) != 1:
            raise LayoutError(
                "%s: a selector mapping has exactly one of index, uuid, pci_bus_id, model; got %r"
                % (where, value)
            )
        kind, raw = next(iter(value.items()))
        if kind == "index":
            return Selector("index", _int(raw, where + ".index"), str(raw))
        if not isinstance(raw, str) or not raw.strip():
            raise LayoutError("%s.%s must be a non-empty string, not %r" % (where, kind, raw))
        if kind == "uuid":
            if not _UUID_RE.match(raw.strip()):
                raise LayoutError("%s.uuid %r is not a GPU UUID (GPU-...)" % (where, raw))
            return Selector("uuid", raw.strip().lower(), raw)
        if kind == "pci_bus_id":
            bus = normalise_pci_bus_id(raw)
            if bus is None:
                raise LayoutError(
                    "%s.pci_bus_id %r is not a PCI bus id such as 00000000:1B:00.0" % (where, raw)
                )
            return Selector("pci_bus_id", bus, raw)
        if kind == "model":
            return Selector("model", _model_value(raw, where + ".model"), raw)
        raise LayoutError(
            "%s: unknown selector key %r; use index, uuid, pci_bus_id or model" % (where, kind)
        )
    if isinstance(value, bool):
        raise LayoutError("%s: %r is not a GPU selector" % (where, value))
    if isinstance(value, int):
        return Selector("index", _int(value, where), str(value))
    if not isinstance(value, str) or not value.strip():
        raise LayoutError(
            "%s must be a GPU index, UUID, PCI bus id or model name, not %r" % (where, value)
        )
    text = value.strip()
    if text.isdigit():
        return Selector("index", int(text), text)
    if text.upper().startswith("MIG-"):
        raise LayoutError(
            "%s: %s is a MIG device UUID; select the GPU by its GPU-... UUID, index, PCI bus id "
            "or model" % (where, text)
        )
    if _UUID_RE.match(text):
        return Selector("uuid", text.lower(), text)
    bus = normalise_pci_bus_id(text)
    if bus is not None:
        return Selector("pci_bus_id", bus, text)
    return Selector("model", _model_value(text, where), text)


def _model_value(text: str, where: str) -> str:
    text = text.strip()
    if re.match(r"^0x[0-9a-f]{8}$", text, re.IGNORECASE):
        return text.lower()
    model = find_model(text)
    if model is not None:
        return model.key.lower()
    if text.upper().startswith("NVIDIA "):
        return text.lower()  # an NVML device name of a model missing from the catalog
    raise LayoutError(
        "%s: %r is not a GPU index, UUID (GPU-...), PCI bus id (00000000:1B:00.0), PCI device "
        "id (0x233010DE) or known model name (%s, their aliases, or an NVML name such as "
        "'NVIDIA H100 80GB HBM3')" % (where, text, ", ".join(known_model_names()))
    )


class GpuEntry(NamedTuple):
    """One entry of the module's ``gpus`` option: which GPUs, and their layout."""

    where: str
    devices: Optional[Tuple[Selector, ...]]  # None: all GPUs
    models: Tuple[str, ...]  # model filter, ANDed with devices; () = any model
    layout: LayoutSpec
    optional: bool = False

    @property
    def selector_text(self) -> str:
        parts = [
            "devices: all"
            if self.devices is None
            else "devices: [%s]" % ", ".join(s.text for s in self.devices)
        ]
        if self.models:
            parts.append("model: %s" % ", ".join(self.models))
        return ", ".join(parts)

    def matches(self, gpu: GpuIdentity) -> bool:
        if self.models and not any(model_matches(m, gpu) for m in self.models):
            return False
        return self.devices is None or any(s.matches(gpu) for s in self.devices)


def _as_list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else [value]


def parse_gpu_entries(layout: Any = None, gpus: Any = None) -> List[GpuEntry]:
    """The module's ``layout`` (every GPU) or ``gpus`` (per-selector) options as entries."""
    if layout is not None and gpus is not None:
        raise LayoutError("give either layout (every GPU) or gpus (per GPU), not both")
    if layout is not None:
        return [GpuEntry("layout", None, (), parse_layout(layout, "layout"))]
    if gpus is None:
        raise LayoutError("no layout given: set layout, gpus or a mig-parted config")
    if not isinstance(gpus, list) or not gpus:
        raise LayoutError("gpus must be a non-empty list of {devices, model, layout} entries")
    entries = []
    for position, raw in enumerate(gpus):
        where = "gpus[%d]" % position
        if not isinstance(raw, dict):
            raise LayoutError(
                "%s must be a mapping with devices and layout, not %s" % (where, _type_name(raw))
            )
        unknown = set(raw) - {"devices", "model", "layout", "optional"}
        if unknown:
            raise LayoutError(
                "%s: unknown key(s) %s; allowed: devices, model, layout, optional"
                % (where, ", ".join(sorted(map(str, unknown))))
            )
        if "layout" not in raw:
            raise LayoutError("%s: layout is required" % where)
        devices_raw = raw.get("devices", "all")
        devices: Optional[Tuple[Selector, ...]]
        if isinstance(devices_raw, str) and devices_raw.strip().lower() == "all":
            devices = None
        else:
            items = _as_list(devices_raw)
            if not items:
                raise LayoutError("%s.devices is empty; use 'all' or list GPUs" % where)
            devices = tuple(
                parse_selector(item, "%s.devices[%d]" % (where, i)) for i, item in enumerate(items)
            )
        models_raw = raw.get("model")
        models: Tuple[str, ...] = ()
        if models_raw is not None:
            models = tuple(_model_value(str(m), "%s.model" % where) for m in _as_list(models_raw))
        optional = raw.get("optional", False)
        if not isinstance(optional, bool):
            raise LayoutError("%s.optional must be true or false, not %r" % (where, optional))
        entries.append(
            GpuEntry(
                where, devices, models, parse_layout(raw["layout"], where + ".layout"), optional
            )
        )
    return entries


def assign_layouts(entries: Sequence[GpuEntry], gpus: Sequence[GpuIdentity]) -> Dict[int, GpuEntry]:
    """Which entry manages which GPU (by index). GPUs no entry selects are left alone.

    Errors: a selector that matches no GPU (unless the entry is optional), and a GPU that two
    entries claim with different layouts.
    """
    assigned: Dict[int, GpuEntry] = {}
    problems: List[str] = []
    for entry in entries:
        reported = False
        if entry.devices is not None:
            for selector in entry.devices:
                if not any(selector.matches(gpu) for gpu in gpus) and not entry.optional:
                    reported = True
                    problems.append(
                        "%s: selector %r matches no GPU on this host (GPUs: %s)"
                        % (entry.where, selector.text, _gpu_list(gpus))
                    )
        matched = [gpu for gpu in gpus if entry.matches(gpu)]
        if entry.devices is None:
            # 'all' skips GPUs without MIG; explicit selectors keep them (and fail in planning)
            matched = [gpu for gpu in matched if gpu.mig_capable]
        if not matched and not entry.optional and not reported:
            problems.append(
                "%s (%s) matches no GPU on this host (GPUs: %s); set optional: true to allow that"
                % (entry.where, entry.selector_text, _gpu_list(gpus))
            )
        for gpu in matched:
            previous = assigned.get(gpu.index)
            if previous is not None and previous.layout != entry.layout:
                problems.append(
                    "%s is claimed by %s (%s) with layout %s and by %s (%s) with layout %s; a GPU "
                    "gets one layout"
                    % (
                        gpu.label,
                        previous.where,
                        previous.selector_text,
                        layout_spec_text(previous.layout),
                        entry.where,
                        entry.selector_text,
                        layout_spec_text(entry.layout),
                    )
                )
                continue
            assigned.setdefault(gpu.index, entry)
    if problems:
        raise LayoutError("; ".join(_unique(problems)))
    return assigned


def _gpu_list(gpus: Sequence[GpuIdentity]) -> str:
    if not gpus:
        return "none"
    return ", ".join(
        "%d %s %s %s" % (g.index, g.model or g.name, g.uuid, g.pci_bus_id) for g in gpus
    )


def _unique(items: Iterable[str]) -> List[str]:
    seen: List[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen
