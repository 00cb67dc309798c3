"""read_host / GpuReader on simulated hosts: GPU instances, MIG devices, processes, profiles."""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pynvml
import pytest
from real_gpu_tables import CAPTURED, RealGpu, RealProfile, best, captured, noted

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    GpuBackend,
    open_backend,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import (
    placements_text,
    read_host,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes import (
    register_process,
)

ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
MIB = 1024 * 1024


def _gi(nvml: Any, handle: Any, profile_id: int) -> Any:
    return nvml.nvmlDeviceCreateGpuInstance(handle, profile_id)


def _ci(nvml: Any, gi: Any, ci_profile: int, start: int | None = None) -> Any:
    if start is None:
        return nvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile)
    placement = pynvml.c_nvmlComputeInstancePlacement_t()
    placement.start, placement.size = start, ci_profile + 1
    return nvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(
        gi, ci_profile, ctypes.byref(placement)
    )


def mig_uuids(nvml: Any) -> dict[tuple[int, int, int], str]:
    """(gpu index, GI id, CI id) -> MIG UUID, straight from NVML's MIG device handles."""
    result = {}
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        for mig_index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index)
            except pynvml.NVMLError_NotFound:
                continue
            key = (
                index,
                nvml.nvmlDeviceGetGpuInstanceId(mig),
                nvml.nvmlDeviceGetComputeInstanceId(mig),
            )
            result[key] = nvml.nvmlDeviceGetUUID(mig)
    return result


@pytest.fixture
def mixed(state_path: str) -> Iterator[tuple[GpuBackend, dict[str, Any]]]:
    """A100 40GB + A30 + H200, MIG enabled, a few instances and processes.

    GPU 0 (A100 40GB): 2g.10gb@0 (GI 3), 1g.5gb@2 (GI 9), 3g.20gb@4 (GI 2) split into
    2c (CI 1 @0) and 1c (CI 0 @2); this process runs on the 1c.3g.20gb device.
    GPU 1 (A30): 2g.12gb+me@0 (GI 1), 1g.6gb@2 (GI 5); a process that has exited ran on it.
    GPU 2 (H200): 4g.71gb@0 (GI 1) as two 2c, 3g.71gb@4 (GI 2) whole; a live child runs on it.
    """
    backend = open_backend("sim", state_path, "1xA100-SXM4-40GB,1xA30,1xH200")
    nvml = backend.nvml
    a100, a30, h200 = (nvml.nvmlDeviceGetHandleByIndex(i) for i in range(3))
    for handle in (a100, a30, h200):
        nvml.nvmlDeviceSetMigMode(handle, ENABLE)
    backend.reset_gpu(0)
    backend.reset_gpu(1)

    _ci(nvml, _gi(nvml, a100, 14), 1)
    _ci(nvml, _gi(nvml, a100, 19), 0)
    three = _gi(nvml, a100, 9)
    _ci(nvml, three, 0, start=2)
    _ci(nvml, three, 1)

    _ci(nvml, _gi(nvml, a30, 6), 1)
    _ci(nvml, _gi(nvml, a30, 14), 0)

    four = _gi(nvml, h200, 5)
    _ci(nvml, four, 1)
    _ci(nvml, four, 1)
    _ci(nvml, _gi(nvml, h200, 9), 2)

    uuids = mig_uuids(nvml)
    register_process(state_path, os.getpid(), uuids[(0, 2, 0)], "pytest-bench", 2048 * MIB)
    gone = subprocess.Popen(["true"])
    gone.wait()
    register_process(state_path, gone.pid, uuids[(1, 5, 0)], "exited", MIB)
    child = subprocess.Popen(["sleep", "60"])
    register_process(state_path, child.pid, uuids[(2, 2, 0)], "serve", 512 * MIB)
    try:
        yield backend, {"uuids": uuids, "child": child.pid}
    finally:
        child.kill()
        child.wait()
        backend.close()


def _gpu_instance(
    gi_id: int, profile: str, profile_id: int, start: int, size: int, cis: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": gi_id,
        "profile": profile,
        "profile_id": profile_id,
        "placement": {"start": start, "size": size},
        "compute_instances": cis,
    }


def _compute_instance(
    uuids: dict[tuple[int, int, int], str],
    gpu: int,
    gi_id: int,
    ci_id: int,
    profile: str,
    ci_profile: int,
    start: int,
) -> dict[str, Any]:
    slices = ci_profile + 1 if ci_profile < 4 else 7
    return {
        "id": ci_id,
        "profile_id": ci_profile,
        "profile": profile,
        "slice_count": slices,
        "placement": {"start": start, "size": slices},
        "mig_uuid": uuids[(gpu, gi_id, ci_id)],
    }


def test_gpu_instances_and_compute_instances(mixed: tuple[GpuBackend, dict[str, Any]]) -> None:
    backend, info = mixed
    uuids = info["uuids"]
    gpus = read_host(backend.nvml)["gpus"]

    def ci(gpu: int, gi_id: int, ci_id: int, name: str, ci_profile: int, start: int) -> Any:
        return _compute_instance(uuids, gpu, gi_id, ci_id, name, ci_profile, start)

    expected = [
        [
            _gpu_instance(3, "2g.10gb", 14, 0, 2, [ci(0, 3, 0, "2g.10gb", 1, 0)]),
            _gpu_instance(9, "1g.5gb", 19, 2, 1, [ci(0, 9, 0, "1g.5gb", 0, 0)]),
            _gpu_instance(
                2,
                "3g.20gb",
                9,
                4,
                4,
                [
                    ci(0, 2, 1, "2c.3g.20gb", 1, 0),
                    ci(0, 2, 0, "1c.3g.20gb", 0, 2),
                ],
            ),
        ],
        [
            _gpu_instance(1, "2g.12gb+me", 6, 0, 2, [ci(1, 1, 0, "2g.12gb+me", 1, 0)]),
            _gpu_instance(5, "1g.6gb", 14, 2, 1, [ci(1, 5, 0, "1g.6gb", 0, 0)]),
        ],
        [
            _gpu_instance(
                1,
                "4g.71gb",
                5,
                0,
                4,
                [
                    ci(2, 1, 0, "2c.4g.71gb", 1, 0),
                    ci(2, 1, 1, "2c.4g.71gb", 1, 2),
                ],
            ),
            _gpu_instance(2, "3g.71gb", 9, 4, 4, [ci(2, 2, 0, "3g.71gb", 2, 0)]),
        ],
    ]
    for gpu, want in zip(gpus, expected, strict=True):
        assert gpu["gpu_instances"] == want, "GPU %d (%s) GPU instances" % (
            gpu["index"],
            gpu["model"],
        )
    assert [(g["model"], g["architecture"], g["cuda_capability"]) for g in gpus] == [
        ("A100-SXM4-40GB", "ampere", "8.0"),
        ("A30-24GB", "ampere", "8.0"),
        ("H200-141GB", "hopper", "9.0"),
    ]
    for gpu in gpus:
        assert gpu["mig_mode"] == {"current": "enabled", "pending": "enabled"}
        assert gpu["mig_change_pending"] is False


def h200_mib(profile: str) -> int:
    memory = captured("H200-141GB").profile(profile).memory_mib
    assert memory is not None
    return memory


def test_mig_devices(mixed: tuple[GpuBackend, dict[str, Any]]) -> None:
    backend, info = mixed
    uuids = info["uuids"]
    nvml = backend.nvml
    host = read_host(nvml)
    assert host["mig_devices"] == [d for g in host["gpus"] for d in g["mig_devices"]]
    got = [
        (
            d["gpu_index"],
            d["mig_index"],
            d["gpu_instance_id"],
            d["compute_instance_id"],
            d["gpu_instance_profile"],
            d["gpu_instance_profile_id"],
            d["profile"],
            d["compute_instance_profile_id"],
            d["placement"]["start"],
            d["placement"]["size"],
            d["compute_placement"]["start"],
            d["compute_placement"]["size"],
            d["memory_total_mib"],
        )
        for d in host["mig_devices"]
    ]
    assert got == [
        (0, 0, 3, 0, "2g.10gb", 14, "2g.10gb", 1, 0, 2, 0, 2, 9856),
        (0, 1, 9, 0, "1g.5gb", 19, "1g.5gb", 0, 2, 1, 0, 1, 4864),
        (0, 2, 2, 1, "3g.20gb", 9, "2c.3g.20gb", 1, 4, 4, 0, 2, 19968),
        (0, 3, 2, 0, "3g.20gb", 9, "1c.3g.20gb", 0, 4, 4, 2, 1, 19968),
        (1, 0, 1, 0, "2g.12gb+me", 6, "2g.12gb+me", 1, 0, 2, 0, 2, 11904),
        (1, 1, 5, 0, "1g.6gb", 14, "1g.6gb", 0, 2, 1, 0, 1, 5836),
        (2, 0, 1, 0, "4g.71gb", 5, "2c.4g.71gb", 1, 0, 4, 0, 2, h200_mib("4g.71gb")),
        (2, 1, 1, 1, "4g.71gb", 5, "2c.4g.71gb", 1, 0, 4, 2, 2, h200_mib("4g.71gb")),
        (2, 2, 2, 0, "3g.71gb", 9, "3g.71gb", 2, 4, 4, 0, 3, h200_mib("3g.71gb")),
    ]
    # A100 and A30 memory sizes are unconfirmed catalog values (no capture, the field notes give
    # none); the H200's are the real capture's (nvml.txt): a MIG device has its profile's memory
    for device in host["mig_devices"]:
        gpu = host["gpus"][device["gpu_index"]]
        key = (device["gpu_index"], device["gpu_instance_id"], device["compute_instance_id"])
        assert device["uuid"] == uuids[key]
        assert device["uuid"].startswith("MIG-")
        assert (device["gpu_uuid"], device["gpu_model"], device["gpu_name"]) == (
            gpu["uuid"],
            gpu["model"],
            gpu["name"],
        )
        handle = nvml.nvmlDeviceGetHandleByUUID(device["uuid"])
        assert nvml.nvmlDeviceGetName(handle).endswith(" MIG " + device["gpu_instance_profile"])


def test_processes_map_to_their_mig_device(mixed: tuple[GpuBackend, dict[str, Any]]) -> None:
    backend, info = mixed
    uuids = info["uuids"]
    gpus = read_host(backend.nvml)["gpus"]
    assert gpus[0]["processes"] == [
        {
            "pid": os.getpid(),
            "name": "pytest-bench",
            "used_memory_mib": 2048,
            "gpu_instance_id": 2,
            "compute_instance_id": 0,
            "mig_uuid": uuids[(0, 2, 0)],
        }
    ]
    assert gpus[1]["processes"] == [], "a process that exited must not be reported"
    assert gpus[2]["processes"] == [
        {
            "pid": info["child"],
            "name": "serve",
            "used_memory_mib": 512,
            "gpu_instance_id": 2,
            "compute_instance_id": 0,
            "mig_uuid": uuids[(2, 2, 0)],
        }
    ]
    assert gpus[0]["memory_used_mib"] == 480 + 2048
    assert gpus[1]["memory_used_mib"] == 480


# The ``mixed`` fixture's layout per GPU: (profile, start) of each GPU instance.
MIXED_LAYOUT = {
    "A100-SXM4-40GB": [("2g.10gb", 0), ("1g.5gb", 2), ("3g.20gb", 4)],
    "A30-24GB": [("2g.12gb+me", 0), ("1g.6gb", 2)],
    "H200-141GB": [("4g.71gb", 0), ("3g.71gb", 4)],
}


def remaining_capacity(real: RealGpu, layout: list[tuple[str, int]], profile: RealProfile) -> int:
    """How many more instances of ``profile`` fit beside ``layout``, from the real table alone.

    At most its instance count less those present, within the compute slices left, and only as
    many as there are pairwise disjoint free placements (exhaustive search: tables are tiny).
    """
    occupied = 0
    for name, start in layout:
        occupied |= ((1 << real.profile(name).size) - 1) << start
    compute_left = real.compute_slices - sum(real.profile(n).slice_count for n, _s in layout)
    limit = min(
        profile.instance_count - sum(1 for n, _s in layout if n == profile.name),
        compute_left // profile.slice_count,
    )
    masks = [((1 << profile.size) - 1) << s for s in profile.starts]

    def most(position: int, taken: int) -> int:
        found = 0
        for index in range(position, len(masks)):
            if not taken & masks[index]:
                found = max(found, 1 + most(index + 1, taken | masks[index]))
        return found

    return max(0, min(limit, most(0, occupied)))


def expected_profiles(key: str) -> list[tuple[str, int, str, int]]:
    """(name, id, placements text, remaining) in ``mig -lgip`` order, from the real sources."""
    real = best(key)
    profiles = list(real.profiles)
    if real.facts is not None:  # a capture: the order real gpu_facts printed them in
        order = [p["id"] for p in real.facts["profiles"]]
        profiles.sort(key=lambda p: order.index(p.id))
    return [
        (p.name, p.id, p.placements_text, remaining_capacity(real, MIXED_LAYOUT[key], p))
        for p in profiles
    ]


def test_remaining_capacity_oracle_by_hand() -> None:
    """The oracle on cases worked out by hand from the real H100 placement table."""
    real = captured("H100-SXM5-80GB")
    one, me, big_one, two = (
        real.profile(n) for n in ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb")
    )
    assert remaining_capacity(real, [], one) == 7
    assert remaining_capacity(real, [], big_one) == 4
    assert remaining_capacity(real, [("1g.10gb", 1)], big_one) == 3  # pair 0-1 is broken
    assert remaining_capacity(real, [("1g.10gb", 1), ("1g.10gb", 3)], two) == 1  # only 4-5
    assert remaining_capacity(real, [("3g.40gb", 0), ("2g.20gb", 4)], one) == 1  # 6; 7 is no start
    assert remaining_capacity(real, [("1g.10gb", 0)], me) == 1
    assert remaining_capacity(real, [("1g.10gb+me", 0)], me) == 0  # one +me per GPU
    six = [("1g.10gb", s) for s in range(6)]
    assert remaining_capacity(real, six, big_one) == 1  # at 6: slices 6-7, the last compute slice
    assert remaining_capacity(real, [*six, ("1g.10gb", 6)], big_one) == 0


@pytest.mark.parametrize("key", CAPTURED)
def test_remaining_capacity_oracle_equals_real_nvml_on_an_empty_gpu(key: str) -> None:
    real = captured(key)
    assert real.facts is not None
    remaining = {p["id"]: p["remaining"] for p in real.facts["profiles"]}
    assert {p.id: remaining_capacity(real, [], p) for p in real.profiles} == remaining


def test_profiles_in_mig_lgip_order_with_remaining_capacity(
    mixed: tuple[GpuBackend, dict[str, Any]],
) -> None:
    backend, _unused0 = mixed
    for gpu in read_host(backend.nvml)["gpus"]:
        got = [(p["name"], p["id"], p["placements_text"], p["remaining"]) for p in gpu["profiles"]]
        assert got == expected_profiles(gpu["model"]), "GPU %d (%s) profiles" % (
            gpu["index"],
            gpu["model"],
        )
        for profile in gpu["profiles"]:
            assert placements_text(profile["placements"]) == profile["placements_text"]


def test_profile_order_rule(mixed: tuple[GpuBackend, dict[str, Any]]) -> None:
    """By slices, then memory; a '+me' profile right after its plain twin."""
    backend, _unused0 = mixed
    for gpu in read_host(backend.nvml)["gpus"]:
        profiles = gpu["profiles"]
        keys = [(p["slice_count"], p["memory_mib"]) for p in profiles]
        assert keys == sorted(keys), "GPU %d: not ordered by (slices, memory)" % gpu["index"]
        names = [p["name"] for p in profiles]
        for position, name in enumerate(names):
            if name.endswith("+me"):
                assert names[position - 1] == name[: -len("+me")], names


def test_placements_text() -> None:
    assert placements_text([{"start": s, "size": 1} for s in range(7)]) == "{0,1,2,3,4,5,6}:1"
    assert placements_text([{"start": 0, "size": 4}, {"start": 4, "size": 4}]) == "{0,4}:4"
    assert placements_text([{"start": 0, "size": 8}]) == "{0}:8"
    assert placements_text([]) == "{}:0"


def test_details_false_reads_only_identity_and_mode(
    mixed: tuple[GpuBackend, dict[str, Any]],
) -> None:
    backend, _unused0 = mixed
    host = read_host(backend.nvml, details=False)
    assert host["mig_devices"] == []
    for gpu in host["gpus"]:
        assert (gpu["profiles"], gpu["gpu_instances"], gpu["mig_devices"], gpu["processes"]) == (
            [],
            [],
            [],
            [],
        )
        assert gpu["mig_mode"]["current"] == "enabled" and gpu["mig_capable"] is True


def test_pending_ampere_mode_is_reported(state_path: str) -> None:
    backend = open_backend("sim", state_path, "1xA30")
    nvml = backend.nvml
    nvml.nvmlDeviceSetMigMode(nvml.nvmlDeviceGetHandleByIndex(0), ENABLE)
    gpu = read_host(nvml)["gpus"][0]
    assert gpu["mig_mode"] == {"current": "disabled", "pending": "enabled"}
    assert gpu["mig_change_pending"] is True
    assert (gpu["gpu_instances"], gpu["mig_devices"]) == ([], [])
    assert [p["name"] for p in gpu["profiles"]] == [p.name for p in noted("A30-24GB").profiles]
    backend.close()


class _Proxy:
    """An NVML whose named functions are replaced; everything else goes to the simulator."""

    def __init__(self, inner: Any, **overrides: Callable[..., Any]) -> None:
        self._inner = inner
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._inner, name)


def _v1_only(nvml: Any) -> Callable[..., Any]:
    def profile_info(handle: Any, index: int, version: int = 2) -> Any:
        if version != 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index, 1)

    return profile_info


def test_driver_without_v2_profile_info_names_profiles_from_the_catalog(
    mixed: tuple[GpuBackend, dict[str, Any]],
) -> None:
    backend, _unused0 = mixed
    nvml = backend.nvml
    proxy = _Proxy(nvml, nvmlDeviceGetGpuInstanceProfileInfo=_v1_only(nvml))
    assert read_host(proxy) == read_host(nvml)


def test_gpu_missing_from_the_catalog(state_path: str) -> None:
    backend = open_backend("sim", state_path, "1xH100")
    nvml = backend.nvml

    def name(handle: Any) -> str:
        real = nvml.nvmlDeviceGetName(handle)
        return real.replace("NVIDIA H100 80GB HBM3", "NVIDIA Future GPU")

    # With v2 profile info the names come from NVML itself.
    gpu = read_host(_Proxy(nvml, nvmlDeviceGetName=name))["gpus"][0]
    assert (gpu["name"], gpu["model"]) == ("NVIDIA Future GPU", None)
    real = captured("H100-SXM5-80GB").facts
    assert real is not None
    real_names = [p["name"] for p in real["profiles"]]
    assert real_names == [
        "1g.10gb",
        "1g.10gb+me",
        "1g.20gb",
        "2g.20gb",
        "3g.40gb",
        "4g.40gb",
        "7g.80gb",
    ]
    assert [p["name"] for p in gpu["profiles"]] == real_names
    # Without v2 they are derived from slices and memory (a '+me' twin cannot be told apart).
    proxy = _Proxy(nvml, nvmlDeviceGetName=name, nvmlDeviceGetGpuInstanceProfileInfo=_v1_only(nvml))
    derived = [p["name"] for p in read_host(proxy)["gpus"][0]["profiles"]]
    assert [derived[i] for i in (0, 2, 3, 4, 5, 6)] == [real_names[i] for i in (0, 2, 3, 4, 5, 6)]
    backend.close()


def test_gpu_without_mig(state_path: str) -> None:
    backend = open_backend("sim", state_path, "1xH100")
    nvml = backend.nvml

    def not_supported(*args: Any) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    gpu = read_host(_Proxy(nvml, nvmlDeviceGetMigMode=not_supported))["gpus"][0]
    assert gpu["mig_capable"] is False
    assert gpu["mig_mode"] == {"current": "disabled", "pending": "disabled"}
    assert (gpu["profiles"], gpu["gpu_instances"], gpu["mig_devices"]) == ([], [], [])
    backend.close()


# Fields of a gpu_facts GPU entry that identify the physical machine: the simulator derives its
# own UUID from the state file and puts GPUs on DGX bus numbers. Every other field is compared.
MACHINE_FIELDS = ("uuid", "pci_bus_id")


@pytest.mark.parametrize("key", CAPTURED)
def test_captured_gpu_reads_like_the_real_gpu_facts(state_path: str, key: str) -> None:
    """MIG disabled, idle: read_host on the simulated GPU equals gpu_facts on the real one."""
    real = captured(key).facts
    assert real is not None
    backend = open_backend("sim", state_path, "1x" + key)
    try:
        host = read_host(backend.nvml)
    finally:
        backend.close()
    (gpu,) = host["gpus"]
    assert gpu["profiles"] == real["profiles"]  # ids, indices, counts, memory, SMs, engines
    for field in sorted(set(real) | set(gpu)):
        if field not in MACHINE_FIELDS:
            assert gpu.get(field) == real.get(field), field
    assert host["mig_devices"] == []
