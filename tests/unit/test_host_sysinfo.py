"""Host facts of the system description (plugins/module_utils/_host_sysinfo.py).

On this machine the facts are checked against independent readers: util-linux's ``lscpu`` and
``lsblk``, the C library's sysconf (the kernel's totalram is MemTotal), Python's own os-release
parser and ``uname``. The parsers are also checked on hand-written files of machines this
machine is not (two sockets, ARM, NVMe and SATA disks, InfiniBand).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils._host_sysinfo import (
    gather,
    parse_cpuinfo,
    parse_meminfo,
    parse_os_release,
    read_disks,
    read_gpu_links,
    read_network,
)


def _lscpu() -> dict[str, str]:
    out = subprocess.run(
        ["lscpu"], check=True, capture_output=True, text=True, env={"LC_ALL": "C"}
    ).stdout
    fields = {}
    for line in out.splitlines():
        key, _sep, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


@pytest.mark.skipif(shutil.which("lscpu") is None, reason="util-linux lscpu is not installed")
def test_cpu_facts_agree_with_lscpu() -> None:
    cpu = gather()["cpu"]
    lscpu = _lscpu()
    assert cpu["model_name"] == lscpu["Model name"]
    assert cpu["sockets"] == int(lscpu["Socket(s)"])
    assert cpu["cores_per_socket"] == int(lscpu["Core(s) per socket"])
    assert cpu["logical_cpus"] == int(lscpu["CPU(s)"])
    # lscpu sums the L1d caches over the instances; cpu0's one is the sum divided by the count
    l1d = lscpu.get("L1d cache", "")
    if l1d.endswith("instances)") or l1d.endswith("instance)"):
        size, unit = l1d.split()[:2]
        count = int(l1d.split("(")[1].split()[0])
        total = float(size) * {"KiB": 1024, "MiB": 1024**2}[unit]
        [mine] = [c for c in cpu["caches"] if c["level"] == 1 and c["type"] == "Data"]
        assert mine["size_bytes"] * count == total


def test_memory_os_and_kernel_agree_with_independent_readers() -> None:
    facts = gather()
    # sysinfo(2)'s totalram, which /proc/meminfo prints as MemTotal
    assert facts["memory_bytes"] == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    release = platform.freedesktop_os_release()
    assert facts["os"]["pretty_name"] == release["PRETTY_NAME"]
    assert facts["os"]["version_id"] == release.get("VERSION_ID")
    assert facts["os"]["kernel"] == os.uname().release
    assert facts["os"]["machine"] == os.uname().machine


@pytest.mark.skipif(shutil.which("lsblk") is None, reason="util-linux lsblk is not installed")
def test_disks_agree_with_lsblk() -> None:
    out = subprocess.run(
        ["lsblk", "-b", "-d", "-n", "-o", "NAME,SIZE,TYPE,RM"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    expected = {}
    for line in out.splitlines():
        name, size, kind, removable = line.split()
        if kind == "disk" and removable == "0" and int(size) > 0 and not name.startswith("zram"):
            expected[name] = int(size)
    assert {d["name"]: d["size_bytes"] for d in gather()["disks"]} == expected


def test_package_versions_are_the_installed_ones() -> None:
    packages = gather()["packages"]
    import numpy

    assert packages["numpy"] == numpy.__version__
    assert packages["mlcommons-loadgen"] == metadata.version("mlcommons-loadgen")
    assert "torch" not in packages or packages["torch"] == metadata.version("torch")


TWO_SOCKETS = "\n\n".join(
    "processor\t: %d\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C\n"
    "physical id\t: %d\nsiblings\t: 4\ncore id\t\t: %d\ncpu cores\t: 2\n" % (n, n // 4, n % 2)
    for n in range(8)
)
# an arm64 kernel: no model name, no physical id, no cpu cores
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n\nprocessor\t: 1\nCPU part\t: 0xd0c\n"


def test_cpuinfo_parsing() -> None:
    assert parse_cpuinfo(TWO_SOCKETS) == {
        "model_name": "Intel(R) Xeon(R) Platinum 8480C",
        "sockets": 2,
        "cores_per_socket": 2,
        "logical_cpus": 8,
    }
    assert parse_cpuinfo(ARM) == {
        "model_name": None,
        "sockets": None,
        "cores_per_socket": None,
        "logical_cpus": 2,
    }
    assert parse_cpuinfo("") == {
        "model_name": None,
        "sockets": None,
        "cores_per_socket": None,
        "logical_cpus": None,
    }


def test_meminfo_and_os_release_parsing() -> None:
    assert parse_meminfo("MemTotal:       2113378304 kB\nMemFree: 1 kB\n") == 2113378304 * 1024
    assert parse_meminfo("MemFree: 1 kB\n") is None
    text = 'NAME="Ubuntu"\nVERSION_ID="22.04"\n# comment\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\nID=ubuntu\n'
    assert parse_os_release(text) == {
        "NAME": "Ubuntu",
        "VERSION_ID": "22.04",
        "PRETTY_NAME": "Ubuntu 22.04.4 LTS",
        "ID": "ubuntu",
    }
    assert parse_os_release("PRETTY_NAME='A \\\"b\\\"'\n") == {"PRETTY_NAME": 'A "b"'}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_disks_and_network_of_a_server(tmp_path: Path) -> None:
    block = tmp_path / "block"
    for name, sectors, rotational, removable in (
        ("nvme0n1", 7501476528, 0, 0),
        ("sda", 1953525168, 1, 0),
        ("sdb", 937703088, 0, 0),
        ("sdc", 31457280, 0, 1),  # a USB stick
        ("loop0", 1000, 0, 0),
        ("zram0", 0, 0, 0),
        ("vda", 2097152, 1, 0),
    ):
        _write(block / name / "size", "%d\n" % sectors)
        _write(block / name / "queue" / "rotational", "%d\n" % rotational)
        _write(block / name / "removable", "%d\n" % removable)
    assert read_disks(str(block)) == [
        {"name": "nvme0n1", "size_bytes": 7501476528 * 512, "kind": "NVMe SSD"},
        {"name": "sda", "size_bytes": 1953525168 * 512, "kind": "HDD"},
        {"name": "sdb", "size_bytes": 937703088 * 512, "kind": "SSD"},
        {"name": "vda", "size_bytes": 2097152 * 512, "kind": None},
    ]
    net = tmp_path / "net"
    for name, kind, speed, device in (
        ("ib0", "32", "400000", "0000:1a:00.0"),
        ("eno1", "1", "-1", "0000:03:00.0"),
        ("lo", "772", "", None),
    ):
        _write(net / name / "type", kind + "\n")
        _write(net / name / "speed", speed + "\n")
        if device:
            (tmp_path / "devices" / device).mkdir(parents=True)
            (net / name / "device").symlink_to(tmp_path / "devices" / device)
    assert read_network(str(net)) == [
        {"name": "eno1", "type": "Ethernet", "speed_mbps": None, "device": "0000:03:00.0"},
        {"name": "ib0", "type": "InfiniBand", "speed_mbps": 400000, "device": "0000:1a:00.0"},
    ]
    assert read_disks(str(tmp_path / "missing")) == [] and read_network(str(tmp_path)) == []


def test_gather_under_an_empty_root_knows_nothing(tmp_path: Path) -> None:
    facts = gather(str(tmp_path), pythonpath=[str(tmp_path)])
    assert facts["cpu"]["model_name"] is None and facts["cpu"]["caches"] == []
    assert facts["memory_bytes"] is None and facts["os"]["pretty_name"] is None
    assert facts["os"]["kernel"] is None and facts["disks"] == [] and facts["network"] == []


def test_gpu_pcie_links(tmp_path: Path) -> None:
    pci = tmp_path / "pci"
    for name, vendor, klass, speed, width in (
        ("0000:1b:00.0", "0x10de", "0x030200", "32.0 GT/s PCIe", "16"),  # an H100 (3D controller)
        ("0000:03:00.0", "0x15b3", "0x020700", "32.0 GT/s PCIe", "16"),  # a ConnectX NIC
        ("0000:00:06.0", "0x10de", "0x068000", "8.0 GT/s PCIe", "4"),  # an NVSwitch bridge
    ):
        _write(pci / name / "vendor", vendor + "\n")
        _write(pci / name / "class", klass + "\n")
        _write(pci / name / "max_link_speed", speed + "\n")
        _write(pci / name / "max_link_width", width + "\n")
    _write(pci / "0000:1b:00.0" / "current_link_speed", "2.5 GT/s PCIe\n")  # idle: downclocked
    assert read_gpu_links(str(pci)) == {
        "0000:1b:00.0": {
            "max_speed": "32.0 GT/s PCIe",
            "current_speed": "2.5 GT/s PCIe",
            "max_width": 16,
            "current_width": None,
        }
    }
    assert read_gpu_links(str(tmp_path / "none")) == {}
