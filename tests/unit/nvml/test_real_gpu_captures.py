"""The simulator's H100 and H200 equal the real captures, field for field.

Sources of truth, all read-only:

* ``shared/fixtures/nvidia-smi/h100-80gb-hbm3-mig-disabled/``: ``nvidia-smi mig -lgip/-lgipp``
  and pynvml probes of a real H100 80GB HBM3 (driver 580.159.04, MIG disabled);
  ``tests/fixtures/real-h100/``: the ``gpu_facts`` module's output on that H100 through real
  NVML (the same ``read_host`` code this test runs on the simulator), and a probe of which call
  forms the driver answers;
* ``shared/fixtures/nvidia-smi/h200-141gb-mig-disabled/``: the same captures of a real H200
  141GB (driver 580.159.04, MIG disabled), ``gpu_facts`` output included.

The capture files are parsed here with small parsers; the simulator is queried only through
its pynvml-compatible functions.
"""

from __future__ import annotations

import ctypes
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml
import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
    SimulatedNvml,
)

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "fixtures" / "nvidia-smi"
REAL_H100 = REPO / "tests" / "fixtures" / "real-h100"


@dataclass(frozen=True)
class Capture:
    """Where one real GPU's capture files are."""

    sim_gpus: str  # the simulator's spec of that GPU
    directory: Path
    lgip: tuple[str, str | None]  # (file, section of smi_mig.txt or None for a file of its own)
    lgipp: tuple[str, str | None]
    probe: Path
    gpu_facts: Path


CAPTURES = {
    "H100": Capture(
        "1xH100-SXM5-80GB",
        SHARED / "h100-80gb-hbm3-mig-disabled",
        ("mig_lgip.txt", None),
        ("mig_lgipp.txt", None),
        REAL_H100 / "nvml_probe.txt",
        REAL_H100 / "gpu_facts.json",
    ),
    "H200": Capture(
        "1xH200-141GB",
        SHARED / "h200-141gb-mig-disabled",
        ("smi_mig.txt", "nvidia-smi mig -lgip"),
        ("smi_mig.txt", "nvidia-smi mig -lgipp"),
        SHARED / "h200-141gb-mig-disabled" / "nvml_probe_v2_names.txt",
        SHARED / "h200-141gb-mig-disabled" / "heteromig_gpu_facts_real.json",
    ),
}

# Fields of the gpu_facts GPU dict that identify the physical machine, or that depend on what
# the driver had allocated at that moment; every other field must be equal.
EXCLUDED_GPU_FIELDS = (
    "uuid",  # the physical GPU's UUID; the simulator derives one from the state file path
    "pci_bus_id",  # the real GPU sat on a VM's bus 00:06.0; the simulator uses DGX bus numbers
    "memory_used_mib",  # driver-reserved / allocated memory at capture time
)

PROFILE_INDICES = range(20)  # nvml.txt probed indices 0..19


def _read(path: Path) -> str:
    if not path.is_file():
        pytest.fail("real capture %s is missing (expected read-only in shared/)" % path)
    return path.read_text(encoding="utf-8")


def _capture(capture: Capture, name: str) -> str:
    return _read(capture.directory / name)


def _command_output(capture: Capture, where: tuple[str, str | None]) -> str:
    """A file of its own, or one ``### <command>`` section of a combined file."""
    name, section = where
    text = _capture(capture, name)
    if section is None:
        return text
    parts = re.split(r"^### (.+)$", text, flags=re.M)
    sections = {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    assert section in sections, "%s has no section %r" % (name, section)
    return sections[section]


# ---------------------------------------------------------------------- capture parsers
@dataclass(frozen=True)
class LgipRow:
    name: str
    profile_id: int
    free: int
    total: int
    memory_gib: str
    p2p: bool
    sm: int
    dec: int
    enc: int
    ce: int
    jpeg: int
    ofa: int


_LGIP_FIRST = re.compile(
    r"^\|\s+(?P<gpu>\d+)\s+MIG (?P<name>\S+)\s+(?P<id>\d+)\s+(?P<free>\d+)/(?P<total>\d+)\s+"
    r"(?P<mem>[\d.]+)\s+(?P<p2p>Yes|No)\s+(?P<sm>\d+)\s+(?P<dec>\d+)\s+(?P<enc>\d+)\s+\|$"
)
_LGIP_SECOND = re.compile(r"^\|\s+(?P<ce>\d+)\s+(?P<jpeg>\d+)\s+(?P<ofa>\d+)\s+\|$")


def parse_lgip(text: str) -> list[LgipRow]:
    """``nvidia-smi mig -lgip``: one row per profile over two table lines, in printed order."""
    lines = text.splitlines()
    rows: list[LgipRow] = []
    for position, line in enumerate(lines):
        first = _LGIP_FIRST.match(line)
        if not first:
            continue
        second = _LGIP_SECOND.match(lines[position + 1])
        assert second, "mig_lgip.txt: no CE/JPEG/OFA line after %r" % line
        rows.append(
            LgipRow(
                name=first["name"],
                profile_id=int(first["id"]),
                free=int(first["free"]),
                total=int(first["total"]),
                memory_gib=first["mem"],
                p2p=first["p2p"] == "Yes",
                sm=int(first["sm"]),
                dec=int(first["dec"]),
                enc=int(first["enc"]),
                ce=int(second["ce"]),
                jpeg=int(second["jpeg"]),
                ofa=int(second["ofa"]),
            )
        )
    return rows


_LGIPP = re.compile(r"Profile ID\s+(\d+) Placements?\s*:\s*\{([\d,]*)\}:(\d+)\s*$")


def parse_lgipp(text: str) -> dict[int, list[tuple[int, int]]]:
    """``nvidia-smi mig -lgipp``: profile id -> [(start, size), ...]."""
    result: dict[int, list[tuple[int, int]]] = {}
    for line in text.splitlines():
        match = _LGIPP.search(line)
        if match:
            size = int(match[3])
            result[int(match[1])] = [(int(s), size) for s in match[2].split(",") if s]
    return result


_NVML_PROFILE = re.compile(
    r"^ profile (\d+) id (\d+) slices (\d+) inst (\d+) mem (\d+) sm (\d+) copy (\d+) dec (\d+) "
    r"enc (\d+) jpg (\d+) ofa (\d+)$"
)
_NVML_PROFILE_FIELDS = (
    "id",
    "sliceCount",
    "instanceCount",
    "memorySizeMB",
    "multiprocessorCount",
    "copyEngineCount",
    "decoderCount",
    "encoderCount",
    "jpegCount",
    "ofaCount",
)
_NVML_ERR = re.compile(r"^ profile (\d+) (?:v\d )?err (NVMLError_\w+)\((\d+)\)$")


@dataclass
class NvmlCapture:
    driver: str
    nvml: str
    index: int
    name: str
    uuid: str
    mig_mode: list[int]
    max_mig: int
    profiles: dict[int, dict[str, int]]
    errors: dict[int, tuple[str, int]]
    procs: str


def parse_nvml_txt(text: str) -> NvmlCapture:
    lines = text.splitlines()
    driver = re.fullmatch(r"driver (\S+) nvml (\S+)", lines[0])
    device = re.fullmatch(r"(\d+) (.+) (GPU-[0-9a-f-]+)", lines[1])
    assert driver and device, "nvml.txt: unexpected header %r" % lines[:2]
    capture = NvmlCapture(
        driver=driver[1],
        nvml=driver[2],
        index=int(device[1]),
        name=device[2],
        uuid=device[3],
        mig_mode=[],
        max_mig=-1,
        profiles={},
        errors={},
        procs="",
    )
    for line in lines[2:]:
        if line.startswith(" mig mode "):
            capture.mig_mode = json.loads(line[len(" mig mode ") :])
        elif line.startswith(" max mig "):
            capture.max_mig = int(line[len(" max mig ") :])
        elif line.startswith(" procs "):
            capture.procs = line[len(" procs ") :]
        elif match := _NVML_PROFILE.match(line):
            values = [int(v) for v in match.groups()]
            capture.profiles[values[0]] = dict(zip(_NVML_PROFILE_FIELDS, values[1:], strict=True))
        elif match := _NVML_ERR.match(line):
            capture.errors[int(match[1])] = (match[2], int(match[3]))
        elif line.endswith("/pynvml.py"):
            continue  # the H200 capture ends with the path of the pynvml it used
        else:
            raise AssertionError("nvml.txt: unparsed line %r" % line)
    return capture


_PLACEMENTS = re.compile(
    r"^profile idx (\d+) id (\d+) count-query ok (\d+) placements ((?:\d+:\d+,?)+)$"
)


def parse_nvml_placements(text: str) -> dict[int, tuple[int, int, list[tuple[int, int]]]]:
    """nvml_placements.txt: profile index -> (profile id, queried count, [(start, size)])."""
    result = {}
    for line in text.splitlines():
        match = _PLACEMENTS.match(line)
        assert match, "nvml_placements.txt: unparsed line %r" % line
        pairs = [tuple(int(x) for x in p.split(":")) for p in match[4].split(",")]
        result[int(match[1])] = (
            int(match[2]),
            int(match[3]),
            list(pairs),
        )
    return result


@dataclass
class DeviceInfo:
    name: str
    bus_id: str
    device_id: int
    subsystem_id: int
    memory_total: int
    memory_free: int
    memory_used: int
    arch: int
    compute_capability: tuple[int, int]
    is_mig_device_handle: int
    remaining: dict[int, tuple[int, int]]  # profile index -> (profile id, remaining)


def parse_device_info(text: str) -> DeviceInfo:
    fields: dict[str, Any] = {"remaining": {}}
    for line in text.splitlines():
        if line.startswith("name "):
            fields["name"] = line[len("name ") :]
        elif match := re.fullmatch(
            r"pci busId (\S+) deviceId (0x[0-9a-f]+) subsys (0x[0-9a-f]+)", line
        ):
            fields["bus_id"] = match[1]
            fields["device_id"] = int(match[2], 16)
            fields["subsystem_id"] = int(match[3], 16)
        elif match := re.fullmatch(r"memory total (\d+) free (\d+) used (\d+)", line):
            fields["memory_total"], fields["memory_free"], fields["memory_used"] = (
                int(match[1]),
                int(match[2]),
                int(match[3]),
            )
        elif match := re.fullmatch(r"arch (\d+) cc \((\d+), (\d+)\)", line):
            fields["arch"] = int(match[1])
            fields["compute_capability"] = (int(match[2]), int(match[3]))
        elif match := re.fullmatch(r"nvmlDeviceIsMigDeviceHandle c_uint\((\d+)\)", line):
            fields["is_mig_device_handle"] = int(match[1])
        elif match := re.fullmatch(r"profile idx (\d+) id (\d+) (?:.* )?remaining (\d+)", line):
            # the H200 capture also tried calls its pynvml lacked before "remaining"
            fields["remaining"][int(match[1])] = (int(match[2]), int(match[3]))
        elif line.startswith(
            ("nvmlDeviceGetPersistenceMode", "nvmlDeviceGetComputeMode", "pynvml version")
        ):
            continue  # not part of the simulated surface
        else:
            raise AssertionError("nvml_device_info.txt: unparsed line %r" % line)
    return DeviceInfo(**fields)


@dataclass
class ProbeCapture:
    v2_names: dict[int, str]
    v1_ids: dict[int, int]
    errors: dict[tuple[int, int], tuple[str, int]]  # (index, version) -> (class, code)
    gpu_instances_of_19: int
    processes: str


def parse_probe(text: str) -> ProbeCapture:
    probe = ProbeCapture({}, {}, {}, -1, "")
    for line in text.splitlines()[3:]:
        if match := re.fullmatch(r" profile (\d+) v2 id (\d+) name '([^']*)'", line):
            probe.v2_names[int(match[1])] = match[3]
        elif match := re.fullmatch(r" profile (\d+) v1 id (\d+) name b''", line):
            probe.v1_ids[int(match[1])] = int(match[2])
        elif match := re.fullmatch(r" profile (\d+) v(\d) err (NVMLError_\w+)\((\d+)\)", line):
            probe.errors[(int(match[1]), int(match[2]))] = (match[3], int(match[4]))
        elif match := re.fullmatch(r" gpu instances of profile 19: (\d+)", line):
            probe.gpu_instances_of_19 = int(match[1])
        elif line.startswith(" processes "):
            probe.processes = line[len(" processes ") :]
        else:
            raise AssertionError("nvml_probe.txt: unparsed line %r" % line)
    return probe


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(params=sorted(CAPTURES))
def capture(request: pytest.FixtureRequest) -> Capture:
    return CAPTURES[request.param]


@pytest.fixture
def sim(state_path: str, capture: Capture) -> Any:
    nvml = SimulatedNvml(state_path, capture.sim_gpus)
    nvml.nvmlInit()
    yield nvml
    nvml.nvmlShutdown()


def _text(value: Any) -> str:
    """pynvml structures hand char arrays back as str (its _PrintableStructure); bytes too."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _handle(nvml: Any) -> Any:
    return nvml.nvmlDeviceGetHandleByIndex(0)


def _sim_profile(nvml: Any, index: int, version: int = 2) -> Any:
    """(info, None) or (None, NVMLError) for one profile index."""
    try:
        return nvml.nvmlDeviceGetGpuInstanceProfileInfo(_handle(nvml), index, version), None
    except pynvml.NVMLError as exc:
        return None, exc


def _sim_placements(nvml: Any, profile_id: int) -> tuple[int, list[tuple[int, int]]]:
    """The two-step placement query the capture ran: NULL array for the count, then the array."""
    handle = _handle(nvml)
    count = ctypes.c_uint(0)
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, ctypes.byref(count))
    queried = count.value
    array = (pynvml.c_nvmlGpuInstancePlacement_t * queried)()
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, ctypes.byref(count))
    return queried, [(array[i].start, array[i].size) for i in range(count.value)]


# ---------------------------------------------------------------------- a. raw captures
def test_parsers_read_every_capture_row(capture: Capture) -> None:
    """Guards the parsers themselves: a silently skipped row would weaken every comparison."""
    assert len(parse_lgip(_command_output(capture, capture.lgip))) == 7
    assert len(parse_lgipp(_command_output(capture, capture.lgipp))) == 7
    nvml_txt = parse_nvml_txt(_capture(capture, "nvml.txt"))
    assert sorted([*nvml_txt.profiles, *nvml_txt.errors]) == list(PROFILE_INDICES)
    assert len(parse_nvml_placements(_capture(capture, "nvml_placements.txt"))) == 7
    assert len(parse_device_info(_capture(capture, "nvml_device_info.txt")).remaining) == 7


@pytest.mark.parametrize("index", PROFILE_INDICES)
def test_profile_info_by_index_equals_nvml_txt(sim: Any, capture: Capture, index: int) -> None:
    real = parse_nvml_txt(_capture(capture, "nvml.txt"))
    info, error = _sim_profile(sim, index)
    if index in real.errors:
        real_class, real_code = real.errors[index]
        assert error is not None, (
            "profile index %d: real NVML raised %s, simulator returned id %d"
            % (
                index,
                real_class,
                info.id,
            )
        )
        assert (type(error).__name__, error.value) == (real_class, real_code), (
            "profile index %d: real %s(%d), simulator %s(%d)"
            % (index, real_class, real_code, type(error).__name__, error.value)
        )
        return
    assert error is None, "profile index %d: real NVML answered, simulator raised %r" % (
        index,
        error,
    )
    expected = real.profiles[index]
    got = {field: getattr(info, field) for field in _NVML_PROFILE_FIELDS}
    assert got == expected, "profile index %d differs: %s" % (
        index,
        {f: (expected[f], got[f]) for f in expected if expected[f] != got[f]},
    )


@pytest.mark.parametrize("version", [2, 1])
def test_profile_info_call_forms_equal_probe(sim: Any, capture: Capture, version: int) -> None:
    """The probe of call forms: v2 carries 'MIG <name>', v1 has no name field."""
    probe = parse_probe(_read(capture.probe))
    probed = sorted({*probe.v2_names, *(i for i, _unused0 in probe.errors)})
    assert probed == list(range(18)), "probe covers indices %s" % probed
    for index in probed:
        info, error = _sim_profile(sim, index, version)
        if (index, version) in probe.errors:
            assert error is not None, "index %d v%d: real raised, simulator answered" % (
                index,
                version,
            )
            assert (type(error).__name__, error.value) == probe.errors[(index, version)]
        elif version == 2:
            assert error is None, "index %d v2: simulator raised %r" % (index, error)
            assert _text(info.name) == probe.v2_names[index], "index %d v2 name" % index
        else:
            assert error is None, "index %d v1: simulator raised %r" % (index, error)
            assert info.id == probe.v1_ids[index]
            assert not hasattr(info, "name"), "v1 structure has no name (real: b'')"


def test_names_and_lgip_columns_equal_mig_lgip(sim: Any, capture: Capture) -> None:
    rows = parse_lgip(_command_output(capture, capture.lgip))
    handle = _handle(sim)
    by_id = {}
    for index in PROFILE_INDICES:
        info, _unused0 = _sim_profile(sim, index)
        if info is not None:
            by_id[info.id] = info
    assert sorted(by_id) == sorted(row.profile_id for row in rows), "profile id sets differ"
    for row in rows:
        info = by_id[row.profile_id]
        got = LgipRow(
            name=_text(info.name).removeprefix("MIG "),
            profile_id=info.id,
            free=sim.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, info.id),
            total=info.instanceCount,
            memory_gib="%.2f" % (info.memorySizeMB / 1024.0),
            p2p=bool(info.isP2pSupported),
            sm=info.multiprocessorCount,
            dec=info.decoderCount,
            enc=info.encoderCount,
            ce=info.copyEngineCount,
            jpeg=info.jpegCount,
            ofa=info.ofaCount,
        )
        assert got == row, "-lgip row for profile id %d: real %r, simulator %r" % (
            row.profile_id,
            row,
            got,
        )


def test_profile_order_equals_mig_lgip(sim: Any, capture: Capture) -> None:
    """read_host lists profiles in the order nvidia-smi mig -lgip prints them."""
    rows = parse_lgip(_command_output(capture, capture.lgip))
    profiles = read_host(sim)["gpus"][0]["profiles"]
    assert [p["name"] for p in profiles] == [row.name for row in rows]
    assert [p["id"] for p in profiles] == [row.profile_id for row in rows]


def test_placements_equal_lgipp_and_nvml_placements(sim: Any, capture: Capture) -> None:
    lgipp = parse_lgipp(_command_output(capture, capture.lgipp))
    nvml_placements = parse_nvml_placements(_capture(capture, "nvml_placements.txt"))
    for index, (profile_id, real_count, real_placements) in nvml_placements.items():
        info, error = _sim_profile(sim, index)
        assert error is None and info.id == profile_id, "index %d should be profile id %d" % (
            index,
            profile_id,
        )
        count, placements = _sim_placements(sim, profile_id)
        assert count == real_count, "profile %d: count query real %d, simulator %d" % (
            profile_id,
            real_count,
            count,
        )
        assert placements == real_placements, "profile %d placements (nvml_placements.txt)" % (
            profile_id
        )
        assert placements == lgipp[profile_id], "profile %d placements (-lgipp)" % profile_id
    assert sorted(lgipp) == sorted(pid for pid, _unused1, _unused0 in nvml_placements.values())


def test_remaining_capacity_equals_nvml_device_info(sim: Any, capture: Capture) -> None:
    device_info = parse_device_info(_capture(capture, "nvml_device_info.txt"))
    handle = _handle(sim)
    got = {}
    for index, (profile_id, _unused0) in device_info.remaining.items():
        info, error = _sim_profile(sim, index)
        assert error is None, "index %d: simulator raised %r" % (index, error)
        got[index] = (info.id, sim.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, profile_id))
    assert got == device_info.remaining


def test_device_identity_equals_nvml_device_info(sim: Any, capture: Capture) -> None:
    real = parse_device_info(_capture(capture, "nvml_device_info.txt"))
    handle = _handle(sim)
    pci = sim.nvmlDeviceGetPciInfo(handle)
    memory = sim.nvmlDeviceGetMemoryInfo(handle)
    mig_flag = sim.nvmlDeviceIsMigDeviceHandle(handle)
    got = {
        "name": sim.nvmlDeviceGetName(handle),
        "device_id": pci.pciDeviceId,
        "subsystem_id": pci.pciSubSystemId,
        "memory_total": memory.total,
        # An idle real GPU had memory reserved by the driver (H100 480 MiB, H200 615 MiB).
        "memory_free": memory.free,
        "memory_used": memory.used,
        "arch": sim.nvmlDeviceGetArchitecture(handle),
        "compute_capability": tuple(sim.nvmlDeviceGetCudaComputeCapability(handle)),
        "is_mig_device_handle": int(getattr(mig_flag, "value", mig_flag)),
    }
    expected = {key: getattr(real, key) for key in got}
    assert got == expected, "differs: %s" % {
        k: (expected[k], got[k]) for k in got if got[k] != expected[k]
    }
    # The bus id is the machine's; only its format must match NVML's.
    busid = _text(pci.busId)
    assert re.fullmatch(r"[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]", busid), busid
    assert re.fullmatch(r"[0-9a-fA-F]{8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]", real.bus_id)


def test_device_header_mig_mode_and_processes_equal_nvml_txt(sim: Any, capture: Capture) -> None:
    real = parse_nvml_txt(_capture(capture, "nvml.txt"))
    handle = sim.nvmlDeviceGetHandleByIndex(real.index)
    assert sim.nvmlSystemGetDriverVersion() == real.driver
    assert sim.nvmlSystemGetNVMLVersion() == real.nvml
    assert sim.nvmlDeviceGetName(handle) == real.name
    assert sim.nvmlDeviceGetMigMode(handle) == real.mig_mode == [0, 0]
    assert sim.nvmlDeviceGetMaxMigDeviceCount(handle) == real.max_mig == 0
    assert str(sim.nvmlDeviceGetComputeRunningProcesses(handle)) == real.procs == "[]"
    uuid = sim.nvmlDeviceGetUUID(handle)
    pattern = r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert re.fullmatch(pattern, real.uuid), "capture UUID format"
    assert re.fullmatch(pattern, uuid), "simulator UUID %r is not in NVML's format" % uuid


def test_gpu_instances_with_mig_disabled_equal_probe(sim: Any, capture: Capture) -> None:
    """Real GPUs, MIG disabled: nvmlDeviceGetGpuInstances succeeds with a count of 0."""
    probe = parse_probe(_read(capture.probe))
    count = ctypes.c_uint(8)
    array = (pynvml.c_nvmlGpuInstance_t * 8)()
    sim.nvmlDeviceGetGpuInstances(_handle(sim), 19, array, ctypes.byref(count))
    assert count.value == probe.gpu_instances_of_19 == 0
    assert probe.processes == "[]"


# ---------------------------------------------------------------------- b. gpu_facts output
def test_read_host_equals_real_gpu_facts(sim: Any, capture: Capture) -> None:
    facts = json.loads(_read(capture.gpu_facts))
    host = read_host(sim)
    assert len(host["gpus"]) == len(facts["heteromig_gpus"]) == 1
    real_gpu = dict(facts["heteromig_gpus"][0])
    sim_gpu = json.loads(json.dumps(host["gpus"][0]))  # the JSON round trip the module makes
    for field in EXCLUDED_GPU_FIELDS:
        assert field in real_gpu and field in sim_gpu, "excluded field %r must exist" % field
        del real_gpu[field], sim_gpu[field]
    assert sorted(sim_gpu) == sorted(real_gpu), "GPU fact keys differ"
    differences: dict[str, Any] = {
        key: {"real": real_gpu[key], "simulator": sim_gpu[key]}
        for key in real_gpu
        if real_gpu[key] != sim_gpu[key]
    }
    if "profiles" in differences and len(real_gpu["profiles"]) == len(sim_gpu["profiles"]):
        # Name the differing fields of each differing profile rather than dumping all seven.
        differences["profiles"] = [
            {
                "real profile": real["name"],
                **{
                    field: {"real": real.get(field), "simulator": sim.get(field)}
                    for field in sorted({*real, *sim})
                    if real.get(field) != sim.get(field)
                },
            }
            for real, sim in zip(real_gpu["profiles"], sim_gpu["profiles"], strict=True)
            if real != sim
        ]
    assert not differences, "simulated GPU differs from the real gpu_facts output: %s" % (
        json.dumps(differences, indent=1, sort_keys=True)
    )
    assert host["mig_devices"] == facts["heteromig_mig_devices"] == []
    real_nvml = {
        k: v for k, v in facts["heteromig_nvml"].items() if k not in ("backend", "simulated")
    }
    assert host["system"] == real_nvml
