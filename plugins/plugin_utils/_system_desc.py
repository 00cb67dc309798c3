# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``systems/<system>.json`` of an MLPerf Inference submission, controller only.

The fields and the rules are the MLPerf Inference submission checker's (v5.x,
``tools/submission/submission_checker.py`` of mlcommons/inference):

- every field of :data:`REQUIRED_FIELDS` must be present (``field X is missing``);
- the fields of :data:`MEANINGFUL_FIELDS` must not be empty (``requires a meaningful
  response``); the others may be empty strings;
- a field outside the lists draws a warning (``field X is unknown``);
- ``submitter`` and ``division`` must match the directories; ``status`` is one of
  :data:`STATUS_VALUES` and ``system_type`` one of :data:`SYSTEM_TYPES`.

:func:`describe` fills what can be known: the host from ``heteromig_host`` (module
heteromig.fleet.host_facts), the driver and CUDA from ``heteromig_nvml`` (gpu_facts), the
accelerator and its MIG slice from the hetero_run result, the framework from the harness and the
host's package versions. What nobody knows is left empty and named in ``unknown``; what the user
sets (``system_desc``) wins over everything but the names the layout fixes (division,
submitter, system_name). Pure functions: no I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REQUIRED_FIELDS = (
    "division",
    "submitter",
    "status",
    "system_name",
    "number_of_nodes",
    "host_processor_model_name",
    "host_processors_per_node",
    "host_processor_core_count",
    "host_memory_capacity",
    "host_storage_capacity",
    "host_storage_type",
    "accelerators_per_node",
    "accelerator_model_name",
    "accelerator_memory_capacity",
    "framework",
    "operating_system",
    "system_type",
    "other_software_stack",
    "host_processor_frequency",
    "host_processor_caches",
    "host_memory_configuration",
    "host_processor_interconnect",
    "host_networking",
    "host_networking_topology",
    "accelerator_frequency",
    "accelerator_host_interconnect",
    "accelerator_interconnect",
    "accelerator_interconnect_topology",
    "accelerator_memory_configuration",
    "accelerator_on-chip_memories",
    "cooling",
    "hw_notes",
    "sw_notes",
    "host_network_card_count",
    "system_type_detail",
)
MEANINGFUL_FIELDS = (
    "division",
    "submitter",
    "system_type",
    "status",
    "system_name",
    "number_of_nodes",
    "host_processor_model_name",
    "host_processors_per_node",
    "host_processor_core_count",
    "host_memory_capacity",
    "host_memory_configuration",
    "host_storage_capacity",
    "host_storage_type",
    "host_networking",
    "host_network_card_count",
    "host_networking_topology",
    "accelerators_per_node",
    "accelerator_model_name",
    "accelerator_memory_capacity",
    "accelerator_host_interconnect",
    "accelerator_memory_configuration",
    "accelerator_interconnect",
    "cooling",
    "framework",
    "operating_system",
    "other_software_stack",
)
# fields of power submissions: the checker knows them (no "unknown" warning)
POWER_FIELDS = (
    "power_management",
    "filesystem",
    "boot_firmware_version",
    "management_firmware_version",
    "other_hardware",
    "number_of_type_nics_installed",
    "nics_enabled_firmware",
    "nics_enabled_os",
    "nics_enabled_connected",
    "network_speed_mbit",
    "power_supply_quantity_and_rating_watts",
    "power_supply_details",
    "disk_drives",
    "disk_controllers",
    "system_power_only",
)
STATUS_VALUES = ("available", "preview", "rdi")
SYSTEM_TYPES = ("datacenter", "edge", "datacenter,edge", "edge,datacenter")
# fields the layout fixes: a user's value for them is ignored
FIXED_FIELDS = ("division", "submitter", "system_name")


# what a user may set in a system description (a sweep spec's system_desc)
USER_FIELDS = tuple(f for f in REQUIRED_FIELDS + POWER_FIELDS if f not in FIXED_FIELDS)

FACT_NAMES = ("heteromig_host", "heteromig_nvml", "heteromig_gpus")


def user_fields_problem(
    values: Any, allowed: Sequence[str], what: str = "system description"
) -> str | None:
    """Why ``values`` (fields a user gives for a ``what``) cannot be used, or None: a mapping
    of known field names to strings or numbers; ``status`` and ``system_type`` take the
    checker's values."""
    if not isinstance(values, Mapping):
        return "must be a mapping of %s fields, got %s" % (what, type(values).__name__)
    for key, value in values.items():
        if key in FIXED_FIELDS and what == "system description":
            return "%s is set by the submission layout, not by the spec" % key
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            return "%r is no %s field%s" % (
                key,
                what,
                " (did you mean %s?)" % close[0] if close else "",
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return "%s must be a string or a number, got %r" % (key, value)
    if "status" in values and values["status"] not in STATUS_VALUES:
        return "status must be one of %s, got %r" % (", ".join(STATUS_VALUES), values["status"])
    if "system_type" in values and values["system_type"] not in SYSTEM_TYPES:
        return "system_type must be one of %s, got %r" % (
            ", ".join(SYSTEM_TYPES),
            values["system_type"],
        )
    return None


def facts_from_hostvars(hostvars: Mapping[str, Any], hosts: set[str]) -> dict[str, dict[str, Any]]:
    """{host: {heteromig_host, heteromig_nvml, heteromig_gpus}} of those ``hosts`` whose facts
    the playbook run gathered (host_facts, gpu_facts), from Ansible's ``hostvars``; hosts
    without any are left out."""
    found: dict[str, dict[str, Any]] = {}
    for host in sorted(hosts):
        if host not in hostvars:
            continue
        facts = hostvars[host].get("ansible_facts") or {}
        picked = {
            name: facts[name] for name in FACT_NAMES if isinstance(facts.get(name), (Mapping, list))
        }
        if picked:
            found[host] = picked
    return found


@dataclass
class SystemDesc:
    """A system description, where each value came from, and what stays unknown."""

    fields: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # meaningful fields nobody could fill
    conflicts: list[str] = field(default_factory=list)  # hosts of one system that disagree


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _bytes_text(size: float) -> str:
    """``25276071936`` -> ``24 GiB``; from 1 TiB on, ``1.5 TiB``."""
    gib = size / 1024**3
    if gib >= 1024:
        return "%s TiB" % ("%.1f" % (gib / 1024)).rstrip("0").rstrip(".")
    return "%d GiB" % round(gib)


def _cache_text(caches: Sequence[Mapping[str, Any]]) -> str:
    """``L1d 32 KiB, L1i 32 KiB, L2 512 KiB, L3 32 MiB`` (per core as cpu0 sees them)."""
    parts = []
    for cache in caches:
        kind = {"Data": "d", "Instruction": "i"}.get(str(cache.get("type")), "")
        size = int(cache.get("size_bytes") or 0)
        if size >= 1024**2 and size % 1024**2 == 0:
            text = "%d MiB" % (size // 1024**2)
        else:
            text = "%d KiB" % (size // 1024)
        parts.append("L%s%s %s" % (cache.get("level"), kind, text))
    return ", ".join(parts)


def _storage(disks: Sequence[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    if not disks:
        return None, None
    capacity = _bytes_text(sum(int(d.get("size_bytes") or 0) for d in disks))
    kinds: dict[str, int] = {}
    for disk in disks:
        kinds[str(disk.get("kind"))] = kinds.get(str(disk.get("kind")), 0) + 1
    if "None" in kinds:
        return capacity, None  # a disk whose kind the kernel does not tell
    return capacity, ", ".join("%dx %s" % (n, k) for k, n in sorted(kinds.items()))


def _networking(links: Sequence[Mapping[str, Any]]) -> str | None:
    if not links:
        return None
    counts: dict[str, int] = {}
    for link in links:
        kind = str(link.get("type") or "network interface")
        speed = link.get("speed_mbps")
        if speed:
            text = "%s %s Gbit/s" % (kind, ("%.1f" % (speed / 1000)).rstrip("0").rstrip("."))
        else:
            text = "%s (link speed not reported)" % kind
        counts[text] = counts.get(text, 0) + 1
    return ", ".join("%dx %s" % (n, t) for t, n in sorted(counts.items()))


def cuda_text(version: Any) -> str | None:
    """NVML's CUDA driver version ``12040`` -> ``12.4``."""
    if not isinstance(version, int) or isinstance(version, bool) or version <= 0:
        return None
    return "%d.%d" % (version // 1000, (version % 1000) // 10)


def framework_text(harness: str | None, packages: Mapping[str, str]) -> str | None:
    """The framework of a harness as the host's packages say; None when they do not tell."""
    if harness == "heteromig_synthetic":
        if "numpy" not in packages:
            return None
        parts = ["heteromig synthetic models on NumPy %s" % packages["numpy"]]
        if "torch" in packages:
            parts.append("PyTorch %s" % packages["torch"])
        return ", ".join(parts)
    if harness == "nvidia_mlperf" and "tensorrt" in packages:
        return "TensorRT %s" % packages["tensorrt"]
    return None


def _software(nvml: Mapping[str, Any], host: Mapping[str, Any]) -> str | None:
    parts = []
    simulated = " (simulated NVML)" if nvml.get("simulated") else ""
    if nvml.get("driver_version"):
        parts.append("NVIDIA driver %s%s" % (nvml["driver_version"], simulated))
    cuda = cuda_text(nvml.get("cuda_driver_version"))
    if cuda:
        parts.append("CUDA %s (driver API%s)" % (cuda, ", simulated NVML" if simulated else ""))
    osinfo = host.get("os") or {}
    if osinfo.get("kernel"):
        parts.append("Linux kernel %s" % osinfo["kernel"])
    python = (host.get("python") or {}).get("version")
    if python:
        parts.append("Python %s" % python)
    for name, version in sorted((host.get("packages") or {}).items()):
        parts.append("%s %s" % (name, version))
    return ", ".join(parts) or None


_PCIE_GEN = {"2.5": 1, "5.0": 2, "5": 2, "8.0": 3, "8": 3, "16.0": 4, "32.0": 5, "64.0": 6}


def pcie_text(links: Mapping[str, Any], bus_id: Any) -> str | None:
    """``PCIe Gen5 x16`` of the GPU at NVML's ``bus_id`` (``00000000:1b:00.0``), from the host's
    sysfs links (``0000:1b:00.0``); the link's maximum, as the slot and the GPU negotiate it."""
    if not bus_id:
        return None
    domain, _sep, rest = str(bus_id).lower().partition(":")
    link = links.get("%04x:%s" % (int(domain, 16), rest)) if rest else None
    if not isinstance(link, Mapping):
        return None
    speed = str(link.get("max_speed") or "").split(" ", maxsplit=1)[0]
    width = link.get("max_width")
    if speed not in _PCIE_GEN or not width:
        return None
    return "PCIe Gen%d x%d" % (_PCIE_GEN[speed], width)


def memory_type(gpu_name: str) -> str | None:
    """``NVIDIA H100 80GB HBM3`` -> ``HBM3`` (only when NVML's name carries it)."""
    match = re.search(r"\b(HBM\w*|GDDR\w*)\b", gpu_name or "")
    return match.group(1) if match else None


def host_fields(
    host: Mapping[str, Any],
    nvml: Mapping[str, Any],
    harness: str | None,
    gpu_bus_id: Any = None,
) -> dict[str, tuple[Any, str]]:
    """{field: (value, source)} of what host_facts and gpu_facts tell; None where they don't."""
    cpu = host.get("cpu") or {}
    memory = host.get("memory_bytes")
    capacity, kind = _storage(host.get("disks") or [])
    links = host.get("network") or []
    facts = "host_facts"
    return {
        "host_processor_model_name": (cpu.get("model_name"), facts + " (/proc/cpuinfo)"),
        "host_processors_per_node": (cpu.get("sockets"), facts + " (/proc/cpuinfo)"),
        "host_processor_core_count": (cpu.get("cores_per_socket"), facts + " (/proc/cpuinfo)"),
        "host_processor_frequency": (
            "%d MHz" % cpu["max_mhz"] if cpu.get("max_mhz") else None,
            facts + " (cpufreq)",
        ),
        "host_processor_caches": (_cache_text(cpu.get("caches") or []) or None, facts),
        "host_memory_capacity": (
            _bytes_text(memory) if memory else None,
            facts + " (/proc/meminfo MemTotal)",
        ),
        "host_storage_capacity": (capacity, facts + " (/sys/block)"),
        "host_storage_type": (kind, facts + " (/sys/block)"),
        "host_networking": (_networking(links), facts + " (/sys/class/net)"),
        "host_network_card_count": (
            len({link.get("device") for link in links}) if links else None,
            facts + " (/sys/class/net)",
        ),
        "operating_system": ((host.get("os") or {}).get("pretty_name"), facts + " (os-release)"),
        "framework": (
            framework_text(harness, host.get("packages") or {}),
            "harness %s and the host's packages" % harness,
        ),
        "other_software_stack": (_software(nvml, host), "gpu_facts and host_facts"),
        "accelerator_host_interconnect": (
            pcie_text(host.get("gpu_links") or {}, gpu_bus_id),
            facts + " (/sys/bus/pci max link of the GPU)",
        ),
        "hw_notes": (
            "GPUs simulated by heteromig's NVML simulator: not a hardware measurement"
            if nvml.get("simulated")
            else None,
            "gpu_facts (heteromig_nvml.simulated)",
        ),
    }


def describe(
    name: str,
    *,
    division: str,
    submitter: str,
    gpu: Mapping[str, Any],
    profile: str,
    accelerator_memory: str | None,
    harness: str | None,
    host: Mapping[str, Any] | None = None,
    nvml: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SystemDesc:
    """The description of one hetero system (one MIG slice of ``gpu``, ``profile``)."""
    values: dict[str, tuple[Any, str]] = {
        "number_of_nodes": (1, "a hetero system is one slice of one host"),
        "accelerators_per_node": (1, "a hetero system is one slice of one host"),
        "accelerator_model_name": (
            "%s (1x%s MIG)" % (str(gpu.get("name") or gpu.get("model") or "GPU"), profile),
            "hetero_run result (gpu, slice profile)",
        ),
        "accelerator_memory_capacity": (accelerator_memory, "the slice profile's name"),
        "accelerator_memory_configuration": (
            memory_type(str(gpu.get("name") or "")),
            "NVML device name",
        ),
        "sw_notes": (
            "Heterogeneous MIG run: the benchmark ran on one %s slice while background "
            "benchmarks kept the GPU's other slices busy (heteromig.fleet)." % profile,
            "export",
        ),
    }
    if host is not None or nvml is not None:
        values.update(host_fields(host or {}, nvml or {}, harness, gpu.get("pci_bus_id")))
    desc: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in REQUIRED_FIELDS:
        value, source = values.get(key, (None, ""))
        if not _empty(value):
            desc[key] = value
            sources[key] = source
        else:
            desc[key] = ""
    for key, value in (overrides or {}).items():
        if key in FIXED_FIELDS:
            continue
        desc[key] = value
        sources[key] = "system_desc"
    desc.update(division=division, submitter=submitter, system_name=name)
    for key in FIXED_FIELDS:
        sources[key] = "export"
    unknown = [k for k in MEANINGFUL_FIELDS if _empty(desc.get(k))]
    return SystemDesc(fields=desc, sources=sources, unknown=unknown)


def compare_hosts(
    first: str,
    first_fields: Mapping[str, tuple[Any, str]],
    other: str,
    other_fields: Mapping[str, tuple[Any, str]],
) -> list[str]:
    """Fields on which two hosts of one system disagree, in words."""
    return [
        "%s: %s has %r, %s has %r" % (k, first, first_fields[k][0], other, other_fields[k][0])
        for k in sorted(first_fields)
        if k in other_fields and first_fields[k][0] != other_fields[k][0]
    ]


def check_desc(desc: Mapping[str, Any], division: str, submitter: str) -> list[tuple[str, str]]:
    """(severity, message) of what the submission checker says about a system description."""
    problems: list[tuple[str, str]] = []
    missing = [k for k in REQUIRED_FIELDS if k not in desc]
    if missing:
        problems.append(("error", "fields missing: %s" % ", ".join(missing)))
    empty = [k for k in MEANINGFUL_FIELDS if k in desc and _empty(desc[k])]
    if empty:
        problems.append(
            ("error", "fields that need a meaningful value are empty: %s" % ", ".join(empty))
        )
    known = set(REQUIRED_FIELDS) | set(POWER_FIELDS)
    extra = sorted(k for k in desc if k not in known)
    if extra:
        problems.append(("warning", "unknown fields: %s" % ", ".join(extra)))
    if str(desc.get("submitter") or "").lower() != submitter.lower():
        problems.append(("error", "submitter %r is not %r" % (desc.get("submitter"), submitter)))
    if desc.get("division") != division:
        problems.append(("error", "division %r is not %r" % (desc.get("division"), division)))
    status = desc.get("status")
    if not _empty(status) and str(status).lower() not in STATUS_VALUES:
        problems.append(
            ("error", "status %r is not one of %s" % (status, ", ".join(STATUS_VALUES)))
        )
    kind = desc.get("system_type")
    if not _empty(kind) and str(kind).replace(" ", "").lower() not in SYSTEM_TYPES:
        problems.append(
            ("error", "system_type %r is not datacenter, edge or datacenter,edge" % (kind,))
        )
    return problems
