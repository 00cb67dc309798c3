# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MIG-capable GPU models heteromig knows: the one source of truth for profile tables.

Each model lists its GPU-instance profiles as NVML reports them (profile index, the profile id
that ``nvidia-smi mig -lgip`` prints, instance count, memory, SMs, engines) and the placements
that ``nvidia-smi mig -lgipp`` prints. The simulator serves these tables through its NVML
functions; the planner and the real-NVML reader use them to name profiles.

Sources are recorded per model. ``H100-SXM5-80GB`` and ``H200-141GB`` equal real captures field
for field (tests/unit/nvml/test_real_gpu_captures.py); the other models come from published captures
and tables, and every field that is not confirmed is listed in the model's ``unconfirmed``
tuple.

Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# NVML_GPU_INSTANCE_PROFILE_* indices (pynvml constants), named here so the tables read well.
GI_1_SLICE = 0x0
GI_2_SLICE = 0x1
GI_3_SLICE = 0x2
GI_4_SLICE = 0x3
GI_7_SLICE = 0x4
GI_8_SLICE = 0x5
GI_6_SLICE = 0x6
GI_1_SLICE_REV1 = 0x7  # "+me": one slice with all media engines
GI_2_SLICE_REV1 = 0x8
GI_1_SLICE_REV2 = 0x9  # one compute slice with two memory slices (1g.20gb on H100)

# Profile indices at or above this bound were answered NVML_ERROR_INVALID_ARGUMENT by the real
# H100 (driver 580.159.04); indices below it that a GPU does not offer answer NOT_SUPPORTED.
DRIVER_GI_PROFILE_INDEX_BOUND = 17

# NVML_DEVICE_ARCH_* values.
ARCH_AMPERE = 7
ARCH_HOPPER = 9


@dataclass(frozen=True)
class GiProfile:
    """One GPU-instance profile of one GPU model."""

    index: int
    id: int
    name: str
    slice_count: int
    instance_count: int
    memory_mib: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int
    placement_starts: Tuple[int, ...]
    placement_size: int

    @property
    def placements(self) -> Tuple[Tuple[int, int], ...]:
        return tuple((start, self.placement_size) for start in self.placement_starts)


@dataclass(frozen=True)
class GpuModel:
    """A MIG-capable GPU model and its MIG geometry."""

    key: str
    nvml_name: str
    aliases: Tuple[str, ...]
    architecture: str
    arch_code: int
    cuda_capability: Tuple[int, int]
    memory_total_bytes: int
    pci_device_id: int
    pci_subsystem_id: int
    compute_slices: int
    memory_slices: int
    # Ampere applies a MIG mode change only after a GPU reset; Hopper applies it at once.
    mode_change_needs_reset: bool
    # Hopper does not keep MIG mode across a reboot or driver reload; Ampere does.
    mig_mode_persists: bool
    profiles: Tuple[GiProfile, ...]
    source: str
    unconfirmed: Tuple[str, ...] = ()
    # Memory the driver holds on an idle GPU with MIG disabled (NVML's memory.used).
    idle_reserved_bytes: int = 503316480  # 480 MiB: the H100 capture

    def profile_by_name(self, name: str) -> Optional[GiProfile]:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        return None

    def profile_by_id(self, profile_id: int) -> Optional[GiProfile]:
        for profile in self.profiles:
            if profile.id == profile_id:
                return profile
        return None

    def profile_by_index(self, index: int) -> Optional[GiProfile]:
        for profile in self.profiles:
            if profile.index == index:
                return profile
        return None

    @property
    def sms_per_compute_slice(self) -> int:
        one_slice = self.profile_by_index(GI_1_SLICE)
        return one_slice.multiprocessors if one_slice else 0


def _p(
    index: int,
    profile_id: int,
    name: str,
    slices: int,
    instances: int,
    memory_mib: int,
    sms: int,
    engines: Tuple[int, int, int, int, int],
    starts: Tuple[int, ...],
    size: int,
) -> GiProfile:
    copy_engines, decoders, encoders, jpegs, ofas = engines
    return GiProfile(
        index=index,
        id=profile_id,
        name=name,
        slice_count=slices,
        instance_count=instances,
        memory_mib=memory_mib,
        multiprocessors=sms,
        copy_engines=copy_engines,
        decoders=decoders,
        encoders=encoders,
        jpegs=jpegs,
        ofas=ofas,
        placement_starts=starts,
        placement_size=size,
    )


_ALL7 = (0, 1, 2, 3, 4, 5, 6)

# Real capture: ../shared/fixtures/nvidia-smi/h100-80gb-hbm3-mig-disabled (driver 580.159.04).
H100_SXM5_80GB = GpuModel(
    key="H100-SXM5-80GB",
    nvml_name="NVIDIA H100 80GB HBM3",
    aliases=("H100", "H100-80GB", "H100-SXM", "H100-80GB-HBM3"),
    architecture="hopper",
    arch_code=ARCH_HOPPER,
    cuda_capability=(9, 0),
    memory_total_bytes=85520809984,
    pci_device_id=0x233010DE,
    pci_subsystem_id=0x16C110DE,
    compute_slices=7,
    memory_slices=8,
    mode_change_needs_reset=False,
    mig_mode_persists=False,
    profiles=(
        _p(GI_1_SLICE, 19, "1g.10gb", 1, 7, 9984, 16, (1, 1, 0, 1, 0), _ALL7, 1),
        _p(GI_1_SLICE_REV1, 20, "1g.10gb+me", 1, 1, 9984, 16, (1, 1, 0, 1, 1), _ALL7, 1),
        _p(GI_1_SLICE_REV2, 15, "1g.20gb", 1, 4, 20096, 26, (1, 1, 0, 1, 0), (0, 2, 4, 6), 2),
        _p(GI_2_SLICE, 14, "2g.20gb", 2, 3, 20096, 32, (2, 2, 0, 2, 0), (0, 2, 4), 2),
        _p(GI_3_SLICE, 9, "3g.40gb", 3, 2, 40448, 60, (3, 3, 0, 3, 0), (0, 4), 4),
        _p(GI_4_SLICE, 5, "4g.40gb", 4, 1, 40448, 64, (4, 4, 0, 4, 0), (0,), 4),
        _p(GI_7_SLICE, 0, "7g.80gb", 7, 1, 81152, 132, (8, 7, 0, 7, 1), (0,), 8),
    ),
    source="real capture, H100 80GB HBM3, driver 580.159.04 (shared/fixtures/nvidia-smi)",
)

A100_SXM4_80GB = GpuModel(
    key="A100-SXM4-80GB",
    nvml_name="NVIDIA A100-SXM4-80GB",
    aliases=("A100-80GB", "A100-SXM-80GB"),
    architecture="ampere",
    arch_code=ARCH_AMPERE,
    cuda_capability=(8, 0),
    memory_total_bytes=85899345920,
    pci_device_id=0x20B210DE,
    pci_subsystem_id=0x147F10DE,
    compute_slices=7,
    memory_slices=8,
    mode_change_needs_reset=True,
    mig_mode_persists=True,
    profiles=(
        _p(GI_1_SLICE, 19, "1g.10gb", 1, 7, 9728, 14, (1, 0, 0, 0, 0), _ALL7, 1),
        _p(GI_1_SLICE_REV1, 20, "1g.10gb+me", 1, 1, 9728, 14, (1, 1, 0, 1, 1), _ALL7, 1),
        _p(GI_1_SLICE_REV2, 15, "1g.20gb", 1, 4, 19968, 14, (1, 1, 0, 0, 0), (0, 2, 4, 6), 2),
        _p(GI_2_SLICE, 14, "2g.20gb", 2, 3, 19968, 28, (2, 1, 0, 0, 0), (0, 2, 4), 2),
        _p(GI_3_SLICE, 9, "3g.40gb", 3, 2, 40192, 42, (3, 2, 0, 0, 0), (0, 4), 4),
        _p(GI_4_SLICE, 5, "4g.40gb", 4, 1, 40192, 56, (4, 2, 0, 0, 0), (0,), 4),
        _p(GI_7_SLICE, 0, "7g.80gb", 7, 1, 80896, 98, (7, 5, 0, 1, 1), (0,), 8),
    ),
    source="published captures (names, ids, counts, SMs, placements); 1g.20gb needs driver >= 525",
    unconfirmed=("memory_mib", "engines", "pci_ids", "memory_total_bytes"),
)

A100_SXM4_40GB = GpuModel(
    key="A100-SXM4-40GB",
    nvml_name="NVIDIA A100-SXM4-40GB",
    aliases=("A100-40GB", "A100-SXM-40GB", "A100"),
    architecture="ampere",
    arch_code=ARCH_AMPERE,
    cuda_capability=(8, 0),
    memory_total_bytes=42949672960,
    pci_device_id=0x20B010DE,
    pci_subsystem_id=0x134F10DE,
    compute_slices=7,
    memory_slices=8,
    mode_change_needs_reset=True,
    mig_mode_persists=True,
    profiles=(
        _p(GI_1_SLICE, 19, "1g.5gb", 1, 7, 4864, 14, (1, 0, 0, 0, 0), _ALL7, 1),
        _p(GI_1_SLICE_REV1, 20, "1g.5gb+me", 1, 1, 4864, 14, (1, 1, 0, 1, 1), _ALL7, 1),
        _p(GI_1_SLICE_REV2, 15, "1g.10gb", 1, 4, 9856, 14, (1, 1, 0, 0, 0), (0, 2, 4, 6), 2),
        _p(GI_2_SLICE, 14, "2g.10gb", 2, 3, 9856, 28, (2, 1, 0, 0, 0), (0, 2, 4), 2),
        _p(GI_3_SLICE, 9, "3g.20gb", 3, 2, 19968, 42, (3, 2, 0, 0, 0), (0, 4), 4),
        _p(GI_4_SLICE, 5, "4g.20gb", 4, 1, 19968, 56, (4, 2, 0, 0, 0), (0,), 4),
        _p(GI_7_SLICE, 0, "7g.40gb", 7, 1, 40192, 98, (7, 5, 0, 1, 1), (0,), 8),
    ),
    source="published captures (names, ids, counts, SMs, memory, placements)",
    unconfirmed=("engines", "pci_ids"),
)

A30_24GB = GpuModel(
    key="A30-24GB",
    nvml_name="NVIDIA A30",
    aliases=("A30",),
    architecture="ampere",
    arch_code=ARCH_AMPERE,
    cuda_capability=(8, 0),
    memory_total_bytes=25769803776,
    pci_device_id=0x20B710DE,
    pci_subsystem_id=0x153210DE,
    compute_slices=4,
    memory_slices=4,
    mode_change_needs_reset=True,
    mig_mode_persists=True,
    profiles=(
        _p(GI_1_SLICE, 14, "1g.6gb", 1, 4, 5836, 14, (1, 0, 0, 0, 0), (0, 1, 2, 3), 1),
        _p(GI_1_SLICE_REV1, 21, "1g.6gb+me", 1, 1, 5836, 14, (1, 1, 0, 1, 1), (0, 1, 2, 3), 1),
        _p(GI_2_SLICE, 5, "2g.12gb", 2, 2, 11904, 28, (2, 2, 0, 0, 0), (0, 2), 2),
        _p(GI_2_SLICE_REV1, 6, "2g.12gb+me", 2, 1, 11904, 28, (2, 2, 0, 1, 1), (0, 2), 2),
        _p(GI_4_SLICE, 0, "4g.24gb", 4, 1, 23936, 56, (4, 4, 0, 1, 1), (0,), 4),
    ),
    source="published capture (names, ids, counts, SMs, placements)",
    unconfirmed=("memory_mib", "engines", "pci_ids"),
)


def _scaled(h100_mib: int, total_mib: int) -> int:
    """Profile memory scaled from the H100 80GB capture, rounded to 128 MiB (unconfirmed)."""
    return round(h100_mib * total_mib / 81559 / 128.0) * 128


_NVL_MIB = 95830
H100_NVL_94GB = GpuModel(
    key="H100-NVL-94GB",
    nvml_name="NVIDIA H100 NVL",
    aliases=("H100-NVL", "H100NVL"),
    architecture="hopper",
    arch_code=ARCH_HOPPER,
    cuda_capability=(9, 0),
    memory_total_bytes=_NVL_MIB * 1024 * 1024,
    pci_device_id=0x232110DE,
    pci_subsystem_id=0x183910DE,
    compute_slices=7,
    memory_slices=8,
    mode_change_needs_reset=False,
    mig_mode_persists=False,
    profiles=(
        _p(GI_1_SLICE, 19, "1g.12gb", 1, 7, _scaled(9984, _NVL_MIB), 16, (1, 1, 0, 1, 0), _ALL7, 1),
        _p(
            GI_1_SLICE_REV1,
            20,
            "1g.12gb+me",
            1,
            1,
            _scaled(9984, _NVL_MIB),
            16,
            (1, 1, 0, 1, 1),
            _ALL7,
            1,
        ),
        _p(
            GI_1_SLICE_REV2,
            15,
            "1g.24gb",
            1,
            4,
            _scaled(20096, _NVL_MIB),
            26,
            (1, 1, 0, 1, 0),
            (0, 2, 4, 6),
            2,
        ),
        _p(
            GI_2_SLICE,
            14,
            "2g.24gb",
            2,
            3,
            _scaled(20096, _NVL_MIB),
            32,
            (2, 2, 0, 2, 0),
            (0, 2, 4),
            2,
        ),
        _p(
            GI_3_SLICE, 9, "3g.47gb", 3, 2, _scaled(40448, _NVL_MIB), 60, (3, 3, 0, 3, 0), (0, 4), 4
        ),
        _p(GI_4_SLICE, 5, "4g.47gb", 4, 1, _scaled(40448, _NVL_MIB), 64, (4, 4, 0, 4, 0), (0,), 4),
        _p(GI_7_SLICE, 0, "7g.94gb", 7, 1, _scaled(81152, _NVL_MIB), 132, (8, 7, 0, 7, 1), (0,), 8),
    ),
    source="published capture (names, ids, counts, SMs); placements as on other 8-slice GPUs",
    unconfirmed=("memory_mib", "engines", "pci_ids", "memory_total_bytes"),
)

# Real capture: ../shared/fixtures/nvidia-smi/h200-141gb-mig-disabled (driver 580.159.04).
H200_141GB = GpuModel(
    key="H200-141GB",
    nvml_name="NVIDIA H200",
    aliases=("H200", "H200-SXM"),
    architecture="hopper",
    arch_code=ARCH_HOPPER,
    cuda_capability=(9, 0),
    memory_total_bytes=150754820096,
    pci_device_id=0x233510DE,
    pci_subsystem_id=0x18BF10DE,
    compute_slices=7,
    memory_slices=8,
    mode_change_needs_reset=False,
    mig_mode_persists=False,
    profiles=(
        _p(GI_1_SLICE, 19, "1g.18gb", 1, 7, 16384, 16, (1, 1, 0, 1, 0), _ALL7, 1),
        _p(GI_1_SLICE_REV1, 20, "1g.18gb+me", 1, 1, 16384, 16, (1, 1, 0, 1, 1), _ALL7, 1),
        _p(GI_1_SLICE_REV2, 15, "1g.35gb", 1, 4, 33280, 26, (1, 1, 0, 1, 0), (0, 2, 4, 6), 2),
        _p(GI_2_SLICE, 14, "2g.35gb", 2, 3, 33280, 32, (2, 2, 0, 2, 0), (0, 2, 4), 2),
        _p(GI_3_SLICE, 9, "3g.71gb", 3, 2, 71424, 60, (3, 3, 0, 3, 0), (0, 4), 4),
        _p(GI_4_SLICE, 5, "4g.71gb", 4, 1, 71424, 64, (4, 4, 0, 4, 0), (0,), 4),
        _p(GI_7_SLICE, 0, "7g.141gb", 7, 1, 143360, 132, (8, 7, 0, 7, 1), (0,), 8),
    ),
    source="real capture, H200 141GB, driver 580.159.04 (shared/fixtures/nvidia-smi)",
    idle_reserved_bytes=644939776,  # 615 MiB in the capture
)

# NVIDIA's HeteroMIG documentation lists the A100 PCIe 80GB as a MIG GPU. Its MIG geometry is the
# A100 80GB's (same GA100 die, 7 compute and 8 memory slices); nothing here is from a capture.
A100_PCIE_80GB = GpuModel(
    key="A100-PCIE-80GB",
    nvml_name="NVIDIA A100 80GB PCIe",
    aliases=("A100-PCIe-80GB", "A100-80GB-PCIe"),
    architecture="ampere",
    arch_code=ARCH_AMPERE,
    cuda_capability=(8, 0),
    memory_total_bytes=85899345920,
    pci_device_id=0x20B510DE,
    pci_subsystem_id=0x153310DE,
    compute_slices=7,
    memory_slices=8,
    mode_change_needs_reset=True,
    mig_mode_persists=True,
    profiles=A100_SXM4_80GB.profiles,
    source="published profile table of the A100 80GB (names, ids, counts, SMs, placements)",
    unconfirmed=(
        "memory_mib",
        "engines",
        "pci_ids",
        "memory_total_bytes",
        "idle_reserved_bytes",
    ),
)

MODELS: Tuple[GpuModel, ...] = (
    H100_SXM5_80GB,
    A100_SXM4_80GB,
    A100_SXM4_40GB,
    A30_24GB,
    H100_NVL_94GB,
    H200_141GB,
    A100_PCIE_80GB,
)

_BY_NAME: Dict[str, GpuModel] = {}
for _model in MODELS:
    for _name in (_model.key, _model.nvml_name, *_model.aliases):
        _BY_NAME[_name.lower()] = _model


def known_model_names() -> Tuple[str, ...]:
    return tuple(model.key for model in MODELS)


def find_model(name: str) -> Optional[GpuModel]:
    """Look a model up by catalog key, alias or the name NVML reports (case-insensitive)."""
    return _BY_NAME.get(name.strip().lower())


def model_for_nvml_name(nvml_name: str) -> Optional[GpuModel]:
    """The catalog model whose NVML device name equals ``nvml_name``, if any."""
    for model in MODELS:
        if model.nvml_name == nvml_name:
            return model
    return None


def derived_profile_name(slice_count: int, memory_mib: int) -> str:
    """A profile name for a GPU missing from the catalog: compute slices, memory rounded up.

    NVIDIA names profiles by compute slices and memory in GB; rounding the GiB figure up gives
    the right name for every profile of the H100 80GB and A100 40GB captures.
    """
    return "%dg.%dgb" % (slice_count, math.ceil(memory_mib / 1024.0))


# NVML_COMPUTE_INSTANCE_PROFILE_* index for a compute instance of N compute slices.
CI_PROFILE_INDEX_BY_SLICES: Dict[int, int] = {
    1: 0x0,
    2: 0x1,
    3: 0x2,
    4: 0x3,
    7: 0x4,
    8: 0x5,
    6: 0x6,
}


def compute_instance_slice_options(gi_slices: int) -> Tuple[int, ...]:
    """Compute-instance sizes (in compute slices) a GPU instance of ``gi_slices`` offers."""
    return tuple(size for size in (1, 2, 3, 4, 7) if size <= gi_slices)


def compute_instance_starts(gi_slices: int, ci_slices: int) -> Tuple[int, ...]:
    """Valid start slices of a compute instance inside its GPU instance.

    Starts are aligned to the power of two at or above the size, as GPU-instance placements
    are: a 3c in a 7g starts at 0 or 4 (``-lcipp`` ``{0,4}:3``), so 4c + 3c fills a 7g.
    """
    if ci_slices == gi_slices:
        return (0,)
    step = 1
    while step < ci_slices:
        step *= 2
    return tuple(range(0, gi_slices - ci_slices + 1, step))


def compute_instance_name(gi_profile: GiProfile, ci_slices: int) -> str:
    """``1c.3g.40gb`` for a partial compute instance, the GI profile's name for a full one."""
    if ci_slices == gi_profile.slice_count:
        return gi_profile.name
    return "%dc.%s" % (ci_slices, gi_profile.name)


def gpu_instance_id_for(model: GpuModel, start: int, size: int) -> int:
    """The GPU-instance id NVML gives an instance of ``size`` memory slices at ``start``.

    Ids follow the binary-tree order of the memory slices (the whole GPU is 0, its halves 1 and
    2, quarters 3..6, eighths 7..14), as in published ``nvidia-smi mig -lgi`` listings.
    """
    return model.memory_slices // size - 1 + start // size
