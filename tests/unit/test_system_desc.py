"""systems/<system>.json (plugins/plugin_utils/_system_desc.py).

GPU, driver and CUDA come from the real H200 capture (gpu_facts on a real H200, its
``nvidia-smi`` output beside it); expected values are read from the nvidia-smi files, which
gpu_facts never reads. The field lists and rules are the MLPerf Inference submission checker's
(v5.x ``SYSTEM_DESC_REQUIRED_FIELDS`` / ``SYSTEM_DESC_MEANINGFUL_RESPONSE_REQUIRED_FIELDS``),
written out here by hand.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._system_desc import (
    MEANINGFUL_FIELDS,
    REQUIRED_FIELDS,
    check_desc,
    cuda_text,
    describe,
    facts_from_hostvars,
    framework_text,
    pcie_text,
)

H200 = Path("/work/shared/fixtures/nvidia-smi/h200-141gb-mig-disabled")
HOST: dict[str, Any] = {
    "version": 1,
    "cpu": {
        "model_name": "Intel(R) Xeon(R) Platinum 8480C",
        "sockets": 2,
        "cores_per_socket": 56,
        "logical_cpus": 224,
        "max_mhz": 3800,
        "caches": [
            {"level": 1, "type": "Data", "size_bytes": 49152},
            {"level": 1, "type": "Instruction", "size_bytes": 32768},
            {"level": 2, "type": "Unified", "size_bytes": 2097152},
            {"level": 3, "type": "Unified", "size_bytes": 110100480},
        ],
    },
    "memory_bytes": 2113378304 * 1024,
    "os": {"pretty_name": "Ubuntu 22.04.4 LTS", "kernel": "5.15.0-105-generic"},
    "disks": [
        {"name": "nvme0n1", "size_bytes": 3840755982336, "kind": "NVMe SSD"},
        {"name": "nvme1n1", "size_bytes": 3840755982336, "kind": "NVMe SSD"},
    ],
    "network": [
        {"name": "ib0", "type": "InfiniBand", "speed_mbps": 400000, "device": "0000:1a:00.0"},
        {"name": "ib1", "type": "InfiniBand", "speed_mbps": 400000, "device": "0000:1b:00.0"},
    ],
    "python": {"version": "3.10.12"},
    "packages": {"numpy": "1.26.4", "mlcommons-loadgen": "6.0.17", "tensorrt": "10.2.0"},
}


@pytest.fixture(scope="module")
def h200() -> dict[str, Any]:
    facts = json.loads((H200 / "heteromig_gpu_facts_real.json").read_text())
    with (H200 / "smi_query.csv").open() as handle:
        first = next(csv.DictReader(handle))
    row = {k.strip(): v.strip() for k, v in first.items()}
    smi = (H200 / "smi.txt").read_text()
    return {
        "gpu": facts["heteromig_gpus"][0],
        "nvml": facts["heteromig_nvml"],
        "smi_name": row["name"],
        "smi_driver": row["driver_version"],
        "smi_cuda": re.search(r"CUDA Version: (\S+)", smi).group(1),  # type: ignore[union-attr]
    }


def test_the_checker_field_lists() -> None:
    assert len(REQUIRED_FIELDS) == 35 and len(set(REQUIRED_FIELDS)) == 35
    assert set(MEANINGFUL_FIELDS) <= set(REQUIRED_FIELDS) and len(MEANINGFUL_FIELDS) == 26


def test_a_described_h200_slice(h200: dict[str, Any]) -> None:
    desc = describe(
        "DGX-H200_H200-141GB-MIG_1x1g.18gb_TRT_HeteroMultiUse",
        division="closed",
        submitter="ACME",
        gpu=h200["gpu"],
        profile="1g.18gb",
        accelerator_memory="18 GB",
        harness="nvidia_mlperf",
        host=HOST,
        nvml=h200["nvml"],
        overrides={"status": "available", "system_type": "datacenter", "submitter": "Other"},
    )
    fields = desc.fields
    assert set(fields) == set(REQUIRED_FIELDS)
    assert fields["accelerator_model_name"] == "%s (1x1g.18gb MIG)" % h200["smi_name"]
    assert fields["accelerators_per_node"] == 1 and fields["number_of_nodes"] == 1
    software = fields["other_software_stack"]
    assert "NVIDIA driver %s" % h200["smi_driver"] in software
    assert "CUDA %s (driver API)" % h200["smi_cuda"] in software
    assert "Linux kernel 5.15.0-105-generic" in software and "tensorrt 10.2.0" in software
    assert fields["framework"] == "TensorRT 10.2.0"
    assert fields["host_processor_model_name"] == "Intel(R) Xeon(R) Platinum 8480C"
    assert fields["host_processors_per_node"] == 2 and fields["host_processor_core_count"] == 56
    assert fields["host_processor_frequency"] == "3800 MHz"
    assert fields["host_processor_caches"] == "L1d 48 KiB, L1i 32 KiB, L2 2 MiB, L3 105 MiB"
    assert fields["host_memory_capacity"] == "2 TiB"  # 2113378304 kB = 1.97 TiB
    assert fields["host_storage_capacity"] == "7 TiB"  # 2x 3.84 TB = 6.99 TiB
    assert fields["host_storage_type"] == "2x NVMe SSD"
    assert fields["host_networking"] == "2x InfiniBand 400 Gbit/s"
    assert fields["host_network_card_count"] == 2
    assert fields["operating_system"] == "Ubuntu 22.04.4 LTS"
    # the user's values win, except for the names the layout fixes
    assert fields["status"] == "available" and fields["submitter"] == "ACME"
    assert desc.sources["status"] == "system_desc"
    assert desc.sources["host_processor_model_name"] == "host_facts (/proc/cpuinfo)"
    # what no host or GPU fact tells; "H200" carries no memory type in NVML's name
    assert desc.unknown == [
        "host_memory_configuration",
        "host_networking_topology",
        "accelerator_host_interconnect",
        "accelerator_memory_configuration",
        "accelerator_interconnect",
        "cooling",
    ]
    assert [m for _s, m in check_desc(fields, "closed", "ACME")] == [
        "fields that need a meaningful value are empty: %s" % ", ".join(desc.unknown)
    ]


def test_unknowns_are_left_empty_not_invented() -> None:
    desc = describe(
        "S",
        division="open",
        submitter="ACME",
        gpu={"name": "NVIDIA H100 80GB HBM3"},
        profile="1g.10gb",
        accelerator_memory="10 GB",
        harness="my_harness",
        host={"cpu": {}, "os": {}, "packages": {"numpy": "2.0"}},
        nvml={},
    )
    assert desc.fields["framework"] == "" and "framework" in desc.unknown
    assert desc.fields["host_processor_model_name"] == "" and desc.fields["status"] == ""
    assert desc.fields["accelerator_memory_configuration"] == "HBM3"
    assert desc.fields["other_software_stack"] == "numpy 2.0"


def test_framework_and_cuda_texts() -> None:
    assert framework_text("heteromig_synthetic", {"numpy": "2.2.1"}) == (
        "heteromig synthetic models on NumPy 2.2.1"
    )
    assert framework_text("heteromig_synthetic", {"numpy": "2.2.1", "torch": "2.5.0"}) == (
        "heteromig synthetic models on NumPy 2.2.1, PyTorch 2.5.0"
    )
    assert framework_text("nvidia_mlperf", {"numpy": "2.2.1"}) is None
    assert framework_text("heteromig_synthetic", {}) is None
    assert cuda_text(12040) == "12.4" and cuda_text(13000) == "13.0"
    assert cuda_text(None) is None and cuda_text(True) is None


def test_check_desc_follows_the_checker() -> None:
    full = {k: "x" for k in REQUIRED_FIELDS}
    full.update(division="closed", submitter="acme", status="Available", system_type="edge")
    assert check_desc(full, "closed", "ACME") == []  # submitter compared case-insensitively
    bad = dict(full, status="soon", system_type="cloud", division="open", extra_field=1)
    del bad["cooling"]
    bad["hw_notes"] = ""  # not a meaningful field: may be empty
    bad["framework"] = ""
    assert check_desc(bad, "closed", "Other") == [
        ("error", "fields missing: cooling"),
        ("error", "fields that need a meaningful value are empty: framework"),
        ("warning", "unknown fields: extra_field"),
        ("error", "submitter 'acme' is not 'Other'"),
        ("error", "division 'open' is not 'closed'"),
        ("error", "status 'soon' is not one of available, preview, rdi"),
        ("error", "system_type 'cloud' is not datacenter, edge or datacenter,edge"),
    ]


def test_pcie_link_of_the_gpu(h200: dict[str, Any]) -> None:
    bus = h200["gpu"]["pci_bus_id"]  # NVML's 8-digit domain: 00000000:00:06.0
    links = {"0000:00:06.0": {"max_speed": "32.0 GT/s PCIe", "max_width": 16}}
    assert pcie_text(links, bus) == "PCIe Gen5 x16"
    assert pcie_text({"0000:00:06.0": {"max_speed": "16.0 GT/s PCIe", "max_width": 8}}, bus) == (
        "PCIe Gen4 x8"
    )
    assert pcie_text(links, "00000000:1b:00.0") is None and pcie_text(links, None) is None
    assert pcie_text({"0000:00:06.0": {"max_speed": "weird", "max_width": 16}}, bus) is None
    desc = describe(
        "S",
        division="closed",
        submitter="ACME",
        gpu=dict(h200["gpu"]),
        profile="1g.18gb",
        accelerator_memory="18 GB",
        harness="nvidia_mlperf",
        host=dict(HOST, gpu_links=links),
        nvml=h200["nvml"],
    )
    assert desc.fields["accelerator_host_interconnect"] == "PCIe Gen5 x16"
    assert "accelerator_host_interconnect" not in desc.unknown


def test_facts_from_hostvars() -> None:
    hostvars = {
        "a": {"ansible_facts": {"heteromig_host": {"cpu": {}}, "heteromig_gpus": [], "other": 1}},
        "b": {"ansible_facts": {}},
        "c": {"ansible_facts": {"heteromig_nvml": {"driver_version": "580.159.04"}}},
    }
    assert facts_from_hostvars(hostvars, {"a", "b", "c", "gone"}) == {
        "a": {"heteromig_host": {"cpu": {}}, "heteromig_gpus": []},
        "c": {"heteromig_nvml": {"driver_version": "580.159.04"}},
    }


def test_export_plan_takes_each_system_from_its_hosts_facts(h200: dict[str, Any]) -> None:
    from ansible_collections.heteromig.fleet.plugins.plugin_utils._submission_layout import (
        LogDirInfo,
        plan_export,
    )

    def result(host: str, bench: str) -> dict[str, Any]:
        return {
            "run_id": "r1",
            "host": host,
            "verdict": "VALID",
            "harness": "nvidia_mlperf",
            "gpu": {k: h200["gpu"][k] for k in ("index", "name", "model", "uuid")},
            "main": {
                "benchmark": bench,
                "scenario": "Offline",
                "action": "run_harness",
                "slice": {"profile": "1g.18gb"},
                "fetched_dir": "/logs/%s/%s" % (host, bench),
            },
            "backgrounds": [{"benchmark": "bert"}],
        }

    other_cpu = dict(HOST, cpu=dict(HOST["cpu"], model_name="AMD EPYC 9654"))
    links = {"0000:00:06.0": {"max_speed": "32.0 GT/s PCIe", "max_width": 16}}
    facts = {
        "gpu-b": {
            "heteromig_host": dict(HOST, gpu_links=links),
            "heteromig_nvml": h200["nvml"],
            "heteromig_gpus": [h200["gpu"]],
        },
        "gpu-c": {"heteromig_host": other_cpu, "heteromig_nvml": h200["nvml"]},
    }
    plan = plan_export(
        # gpu-a has no facts: the system takes gpu-b's, and gpu-c's other CPU is a conflict
        [result("gpu-a", "resnet50"), result("gpu-b", "bert"), result("gpu-c", "3d-unet")],
        submitter="ACME",
        platform="DGX-H200",
        inspect=lambda _path: LogDirInfo(files=["mlperf_log_summary.txt"], test_mode=None),
        host_facts=facts,
        system_desc={"cooling": "air"},
    )
    [name] = plan.systems
    info = plan.system_info[name]
    assert info["host"] == "gpu-b"
    assert info["conflicts"] == [
        "host_processor_model_name: gpu-b has 'Intel(R) Xeon(R) Platinum 8480C', "
        "gpu-c has 'AMD EPYC 9654'"
    ]
    fields = plan.systems[name]
    assert fields["host_processor_model_name"] == "Intel(R) Xeon(R) Platinum 8480C"
    assert fields["accelerator_host_interconnect"] == "PCIe Gen5 x16"  # via gpu-b's bus id
    assert fields["cooling"] == "air" and info["sources"]["cooling"] == "system_desc"
    assert "cooling" not in info["unknown"] and "status" in info["unknown"]
    assert json.loads(plan.writes["closed/ACME/systems/%s.json" % name]) == fields
