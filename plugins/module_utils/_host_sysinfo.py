# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host facts for an MLPerf system description, read on the target (no NVML: GPUs, driver and
CUDA come from gpu_facts).

What is read, and from where:

- CPU: ``/proc/cpuinfo`` (model name, sockets from ``physical id``, cores per socket from
  ``cpu cores``, logical CPUs), the maximum frequency from
  ``/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq`` and the caches from
  ``/sys/devices/system/cpu/cpu0/cache/index*``;
- memory: ``MemTotal`` of ``/proc/meminfo`` (what the kernel manages, a little less than what is
  installed);
- OS: ``/etc/os-release`` (``/usr/lib/os-release`` as the fallback), the kernel from
  ``/proc/sys/kernel/osrelease``;
- storage: the whole disks of ``/sys/block`` (loop, ram, zram, device-mapper and md devices
  left out), their size and kind (NVMe, or the kernel's rotational flag for SCSI/SATA disks;
  a virtual disk's kind is not known);
- network: interfaces of ``/sys/class/net`` backed by a device (virtual ones left out), their
  link type and speed;
- the PCIe links of the NVIDIA GPUs (``/sys/bus/pci/devices``: vendor 0x10de, display class);
- software: versions of the Python packages the harnesses use, found by importlib.metadata.

Every reader returns None (or leaves a key out) for what it cannot read: nothing is guessed.
:func:`gather` collects them all under a root directory (``/`` on a host; tests pass a tree).
"""

from __future__ import annotations

import os
import platform
import re
import sys
from typing import Any, Dict, Iterable, List, Optional

FACTS_VERSION = 1
# Python distributions whose versions describe the software stack (harnesses and NVML).
PACKAGES = (
    "mlcommons-loadgen",
    "numpy",
    "torch",
    "tensorrt",
    "onnxruntime",
    "onnxruntime-gpu",
    "nvidia-ml-py",
)
_VIRTUAL_DISK = re.compile(r"^(loop|ram|zram|dm-|md|sr|fd|nbd)")
_ARPHRD = {"1": "Ethernet", "32": "InfiniBand"}


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def parse_cpuinfo(text: str) -> Dict[str, Any]:
    """Model name, sockets, cores per socket and logical CPUs from /proc/cpuinfo's text.

    A field that the file does not carry (``physical id`` in some VMs, ``model name`` on many
    ARM kernels) is None.
    """
    blocks: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current.setdefault(key.strip().lower(), value.strip())
    if current:
        blocks.append(current)
    cpus = [b for b in blocks if "processor" in b]
    models = [b["model name"] for b in cpus if b.get("model name")]
    sockets = {b["physical id"] for b in cpus if "physical id" in b}
    cores: Optional[int] = None
    per_package = [b["cpu cores"] for b in cpus if b.get("cpu cores", "").isdigit()]
    if per_package:
        cores = int(per_package[0])
    elif sockets and all("core id" in b for b in cpus):
        cores = len({(b["physical id"], b["core id"]) for b in cpus}) // len(sockets)
    return {
        "model_name": models[0] if models else None,
        "sockets": len(sockets) or None,
        "cores_per_socket": cores,
        "logical_cpus": len(cpus) or None,
    }


def parse_meminfo(text: str) -> Optional[int]:
    """MemTotal in bytes (None if absent)."""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def parse_os_release(text: str) -> Dict[str, str]:
    """The KEY=value pairs of os-release (quotes and escapes removed)."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _sep, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[key.strip()] = value
    return values


def _size_text(size: str) -> Optional[int]:
    """sysfs cache size ``48K`` / ``2048K`` / ``32M`` in bytes."""
    match = re.match(r"^\s*(\d+)\s*([KMG]?)", size or "")
    if not match:
        return None
    return int(match.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[match.group(2)]


def read_caches(cpu_dir: str) -> List[Dict[str, Any]]:
    """cpu0's caches: [{level, type, size_bytes}] from ``<cpu_dir>/cache/index*``."""
    base = os.path.join(cpu_dir, "cache")
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith("index"))
    except OSError:
        return []
    caches = []
    for name in names:
        level = (_read(os.path.join(base, name, "level")) or "").strip()
        kind = (_read(os.path.join(base, name, "type")) or "").strip()
        size = _size_text(_read(os.path.join(base, name, "size")) or "")
        if level.isdigit() and size is not None:
            caches.append({"level": int(level), "type": kind or None, "size_bytes": size})
    return caches


def read_disks(sys_block: str) -> List[Dict[str, Any]]:
    """Whole disks: [{name, size_bytes, kind}] where kind is NVMe, SSD, HDD or None."""
    try:
        names = sorted(os.listdir(sys_block))
    except OSError:
        return []
    disks = []
    for name in names:
        if _VIRTUAL_DISK.match(name):
            continue
        path = os.path.join(sys_block, name)
        if (_read(os.path.join(path, "removable")) or "0").strip() == "1":
            continue
        sectors = (_read(os.path.join(path, "size")) or "").strip()
        if not sectors.isdigit() or int(sectors) == 0:
            continue
        rotational = (_read(os.path.join(path, "queue", "rotational")) or "").strip()
        kind: Optional[str] = None
        if name.startswith("nvme"):
            kind = "NVMe SSD"
        elif name.startswith(("sd", "hd")) and rotational in ("0", "1"):
            # SCSI/SATA disks: the kernel's rotational flag tells an SSD from a spinning disk;
            # virtual disks (vd*, xvd*) report the flag without meaning it, so their kind stays
            # unknown
            kind = "SSD" if rotational == "0" else "HDD"
        disks.append({"name": name, "size_bytes": int(sectors) * 512, "kind": kind})
    return disks


def read_network(sys_net: str) -> List[Dict[str, Any]]:
    """Interfaces backed by a device: [{name, type, speed_mbps, device}] (virtual ones left out)."""
    try:
        names = sorted(os.listdir(sys_net))
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(sys_net, name)
        device = os.path.join(path, "device")
        if not os.path.exists(device):
            continue
        kind = _ARPHRD.get((_read(os.path.join(path, "type")) or "").strip())
        speed_text = (_read(os.path.join(path, "speed")) or "").strip()
        speed = int(speed_text) if speed_text.isdigit() and int(speed_text) > 0 else None
        found.append(
            {
                "name": name,
                "type": kind,
                "speed_mbps": speed,
                "device": os.path.basename(os.path.realpath(device)),
            }
        )
    return found


def read_gpu_links(sys_pci: str) -> Dict[str, Dict[str, Any]]:
    """PCIe links of the NVIDIA display/3D controllers: {bus id: {max_speed, max_width,
    current_speed, current_width}} from ``/sys/bus/pci/devices`` (speeds as the kernel writes
    them, ``32.0 GT/s PCIe``)."""
    try:
        names = sorted(os.listdir(sys_pci))
    except OSError:
        return {}
    links: Dict[str, Dict[str, Any]] = {}
    for name in names:
        path = os.path.join(sys_pci, name)
        vendor = (_read(os.path.join(path, "vendor")) or "").strip().lower()
        klass = (_read(os.path.join(path, "class")) or "").strip().lower()
        if vendor != "0x10de" or not klass.startswith("0x03"):
            continue
        link: Dict[str, Any] = {}
        for key in ("max_link_speed", "current_link_speed"):
            text = (_read(os.path.join(path, key)) or "").strip()
            link[key.replace("_link", "")] = text or None
        for key in ("max_link_width", "current_link_width"):
            text = (_read(os.path.join(path, key)) or "").strip()
            link[key.replace("_link", "")] = int(text) if text.isdigit() else None
        links[name.lower()] = link
    return links


def package_versions(
    names: Iterable[str] = PACKAGES, path: Optional[List[str]] = None
) -> Dict[str, str]:
    """{distribution: version} of the installed ones among ``names`` (searched in ``path``,
    default sys.path)."""
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8 has no importlib.metadata
        return {}
    found: Dict[str, str] = {}
    wanted = {n.lower().replace("_", "-"): n for n in names}
    for dist in metadata.distributions(path=path if path is not None else sys.path):
        name = str(dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name in wanted and wanted[name] not in found:
            found[wanted[name]] = str(dist.version)
    return found


def gather(root: str = "/", pythonpath: Optional[List[str]] = None) -> Dict[str, Any]:
    """Every host fact under ``root``; ``pythonpath`` is searched for packages before sys.path."""

    def at(*parts: str) -> str:
        return os.path.join(root, *parts)

    cpuinfo = parse_cpuinfo(_read(at("proc", "cpuinfo")) or "")
    cpu_dir = at("sys", "devices", "system", "cpu", "cpu0")
    khz = (_read(os.path.join(cpu_dir, "cpufreq", "cpuinfo_max_freq")) or "").strip()
    cpuinfo["max_mhz"] = int(khz) // 1000 if khz.isdigit() else None
    cpuinfo["caches"] = read_caches(cpu_dir)
    meminfo = _read(at("proc", "meminfo"))
    release_text = _read(at("etc", "os-release"))
    if release_text is None:
        release_text = _read(at("usr", "lib", "os-release"))
    release = parse_os_release(release_text or "")
    kernel = (_read(at("proc", "sys", "kernel", "osrelease")) or "").strip() or None
    search = list(pythonpath or []) + list(sys.path)
    return {
        "version": FACTS_VERSION,
        "cpu": cpuinfo,
        "memory_bytes": parse_meminfo(meminfo) if meminfo else None,
        "os": {
            "pretty_name": release.get("PRETTY_NAME") or None,
            "id": release.get("ID") or None,
            "version_id": release.get("VERSION_ID") or None,
            "kernel": kernel,
            "machine": platform.machine() or None,
        },
        "disks": read_disks(at("sys", "block")),
        "network": read_network(at("sys", "class", "net")),
        "gpu_links": read_gpu_links(at("sys", "bus", "pci", "devices")),
        "python": {
            "executable": sys.executable,
            "version": platform.python_version(),
        },
        "packages": package_versions(path=search),
    }
