"""MIG profile tables of real GPUs, read from sources that owe nothing to the catalog.

Tests compare the catalog, the simulator, the reader and the planner against these; nothing here
imports the collection. Two kinds of source, both read-only:

* real captures (``captured()``): the H100 80GB HBM3 and the H200 141GB, MIG disabled, driver
  580.159.04: pynvml's profile info (``nvml.txt``), its possible placements
  (``nvml_placements.txt``), the v2 profile names (``nvml_probe*.txt``) and, for the whole
  ``gpu_facts`` output through real NVML, ``gpu_facts.json`` / ``heteromig_gpu_facts_real.json``;
* the field notes (``FIELD_NOTES``): ``shared/notes/FIELD_NOTES.md`` section 4, transcribed by hand
  below, for the models no capture covers (names, profile ids, instance counts, placements,
  whether a MIG mode change needs a reset).

``shared/`` is ``/work/shared`` on a workstation and ``../shared`` beside the clone in CI: both
are the repository's parent directory. A missing capture fails the test that needs it (a skip
would let a test that can fail pass without checking anything).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SMI = SHARED / "fixtures" / "nvidia-smi"
NOTES = SHARED / "notes" / "FIELD_NOTES.md"


@dataclass(frozen=True)
class RealProfile:
    """One GPU-instance profile as the real GPU (or the field notes) reports it."""

    name: str
    id: int
    instance_count: int
    slice_count: int
    starts: tuple[int, ...]
    size: int  # memory slices per placement
    index: int | None = None  # NVML profile index (captures only)
    memory_mib: int | None = None
    multiprocessors: int | None = None
    engines: tuple[int, int, int, int, int] | None = None  # copy, dec, enc, jpeg, ofa

    @property
    def placements_text(self) -> str:
        return "{%s}:%d" % (",".join(str(s) for s in self.starts), self.size)


@dataclass(frozen=True)
class RealGpu:
    """A GPU's MIG geometry from one independent source."""

    key: str  # the catalog key the simulator models it under
    source: str
    nvml_name: str | None
    profiles: tuple[RealProfile, ...]
    mode_change_needs_reset: bool
    memory_total_bytes: int | None = None
    facts: dict[str, Any] | None = None  # the real gpu_facts GPU entry (captures only)

    @property
    def memory_slices(self) -> int:
        return max(s + p.size for p in self.profiles for s in p.starts)

    @property
    def compute_slices(self) -> int:
        return max(p.slice_count for p in self.profiles)

    def profile(self, name: str) -> RealProfile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise KeyError("%s has no profile %s" % (self.key, name))


# ------------------------------------------------------------------------ real captures
_CAPTURES = {
    # catalog key: (capture directory, v2-names probe, real gpu_facts output)
    "H100-SXM5-80GB": (
        SMI / "h100-80gb-hbm3-mig-disabled",
        REPO / "tests" / "fixtures" / "real-h100" / "nvml_probe.txt",
        REPO / "tests" / "fixtures" / "real-h100" / "gpu_facts.json",
    ),
    "H200-141GB": (
        SMI / "h200-141gb-mig-disabled",
        SMI / "h200-141gb-mig-disabled" / "nvml_probe_v2_names.txt",
        SMI / "h200-141gb-mig-disabled" / "heteromig_gpu_facts_real.json",
    ),
}
CAPTURED = tuple(_CAPTURES)

_PROFILE = re.compile(
    r"^ profile (\d+) id (\d+) slices (\d+) inst (\d+) mem (\d+) sm (\d+) copy (\d+) dec (\d+) "
    r"enc (\d+) jpg (\d+) ofa (\d+)$"
)
_PLACEMENTS = re.compile(r"^profile idx (\d+) id (\d+) count-query ok (\d+) placements ([\d:,]+)$")
_V2_NAME = re.compile(r"^ profile (\d+) v2 id (\d+) name 'MIG ([^']+)'$")
_DEVICE = re.compile(r"^\d+ (.+) GPU-[0-9a-f-]+$")
_MEMORY = re.compile(r"^memory total (\d+) free \d+ used \d+$")


def _read(path: Path) -> str:
    if not path.is_file():
        pytest.fail(
            "real capture %s is missing (expected read-only in shared/ beside the repo)" % path
        )
    return path.read_text(encoding="utf-8")


def captured(key: str) -> RealGpu:
    """The real capture of ``key`` (a catalog key in ``CAPTURED``), parsed from its files."""
    directory, probe, facts_path = _CAPTURES[key]
    nvml_lines = _read(directory / "nvml.txt").splitlines()
    device = _DEVICE.match(nvml_lines[1])
    assert device, "nvml.txt: unexpected device line %r" % nvml_lines[1]
    rows = {}
    for line in nvml_lines:
        if match := _PROFILE.match(line):
            rows[int(match[1])] = [int(v) for v in match.groups()]
    names = {}
    for line in _read(probe).splitlines():
        if match := _V2_NAME.match(line):
            names[int(match[1])] = (int(match[2]), match[3])
    placements = {}
    for line in _read(directory / "nvml_placements.txt").splitlines():
        if line.startswith("profile idx"):
            match = _PLACEMENTS.match(line)
            assert match, "nvml_placements.txt: unparsed line %r" % line
            pairs = [tuple(int(x) for x in p.split(":")) for p in match[4].split(",")]
            assert len(pairs) == int(match[3]), line
            placements[int(match[1])] = (int(match[2]), pairs)
    memory_total = None
    for line in _read(directory / "nvml_device_info.txt").splitlines():
        if match := _MEMORY.match(line):
            memory_total = int(match[1])
    assert rows and set(rows) == set(names) == set(placements), (
        "%s: the capture files disagree on which profile indices exist" % key
    )
    profiles = []
    for index, row in sorted(rows.items()):
        _index, pid, slices, instances, memory, sms, ce, dec, enc, jpg, ofa = row
        assert names[index][0] == pid == placements[index][0], (key, index)
        pairs = placements[index][1]
        sizes = {size for _start, size in pairs}
        assert len(sizes) == 1, (key, index, pairs)
        profiles.append(
            RealProfile(
                name=names[index][1],
                id=pid,
                instance_count=instances,
                slice_count=slices,
                starts=tuple(start for start, _size in pairs),
                size=sizes.pop(),
                index=index,
                memory_mib=memory,
                multiprocessors=sms,
                engines=(ce, dec, enc, jpg, ofa),
            )
        )
    facts = json.loads(_read(facts_path))
    (gpu,) = facts["heteromig_gpus"]
    assert facts["heteromig_nvml"]["simulated"] is False, facts_path
    return RealGpu(
        key=key,
        source=str(directory),
        nvml_name=device[1],
        profiles=tuple(profiles),
        mode_change_needs_reset=False,  # Hopper (field notes 4: "apply without a reset")
        memory_total_bytes=memory_total,
        facts=gpu,
    )


# ---------------------------------------------------------------------- the field notes
# FIELD_NOTES.md section 4, "Published profile tables" and "Placements on 8-memory-slice GPUs".
# name: (profile id, max instances, compute slices (the name's Ng), placement starts, size)
_P8 = {  # the 8-memory-slice placements the notes list for A100, H100, H100 NVL and H200
    "1g": ((0, 1, 2, 3, 4, 5, 6), 1),
    "1g+me": ((0, 1, 2, 3, 4, 5, 6), 1),
    "1g-2": ((0, 2, 4, 6), 2),  # the 1g.20gb class: one compute slice, two memory slices
    "2g": ((0, 2, 4), 2),
    "3g": ((0, 4), 4),
    "4g": ((0,), 4),
    "7g": ((0,), 8),
}


def _eight(one: str, two: str, three: str, four: str, seven: str, big_one: str) -> list[Any]:
    """A row of the notes for an 8-memory-slice GPU: its profile names, ids 19/20/15/14/9/5/0."""
    return [
        (one, 19, 7, 1, *_P8["1g"]),
        (one + "+me", 20, 1, 1, *_P8["1g+me"]),
        (big_one, 15, 4, 1, *_P8["1g-2"]),
        (two, 14, 3, 2, *_P8["2g"]),
        (three, 9, 2, 3, *_P8["3g"]),
        (four, 5, 1, 4, *_P8["4g"]),
        (seven, 0, 1, 7, *_P8["7g"]),
    ]


_NOTES_ROWS: dict[str, tuple[bool, list[Any]]] = {
    # key: (a MIG mode change needs a GPU reset (Ampere yes, Hopper no), profiles)
    "H100-SXM5-80GB": (
        False,
        _eight("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.20gb"),
    ),
    "A100-SXM4-80GB": (
        True,
        _eight("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.20gb"),
    ),
    # the notes' "A100 80GB" row names no form factor; the PCIe card is the same GA100 80GB
    "A100-PCIE-80GB": (
        True,
        _eight("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.20gb"),
    ),
    "A100-SXM4-40GB": (
        True,
        _eight("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb", "1g.10gb"),
    ),
    "H100-NVL-94GB": (
        False,
        _eight("1g.12gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb", "1g.24gb"),
    ),
    "H200-141GB": (
        False,
        _eight("1g.18gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb", "1g.35gb"),
    ),
    # "placements 14,21:{0,1,2,3}:1 5,6:{0,2}:2 0:{0}:4"
    "A30-24GB": (
        True,
        [
            ("1g.6gb", 14, 4, 1, (0, 1, 2, 3), 1),
            ("1g.6gb+me", 21, 1, 1, (0, 1, 2, 3), 1),
            ("2g.12gb", 5, 2, 2, (0, 2), 2),
            ("2g.12gb+me", 6, 1, 2, (0, 2), 2),
            ("4g.24gb", 0, 1, 4, (0,), 4),
        ],
    ),
}
NOTED = tuple(_NOTES_ROWS)


def noted(key: str) -> RealGpu:
    """The field notes' table of ``key`` (every catalog model has a row)."""
    if not NOTES.is_file():
        pytest.fail("the field notes %s are missing (expected read-only in shared/)" % NOTES)
    needs_reset, rows = _NOTES_ROWS[key]
    return RealGpu(
        key=key,
        source="%s section 4" % NOTES,
        nvml_name=None,
        profiles=tuple(
            RealProfile(name=n, id=i, instance_count=c, slice_count=s, starts=st, size=z)
            for n, i, c, s, st, z in rows
        ),
        mode_change_needs_reset=needs_reset,
    )


def best(key: str) -> RealGpu:
    """The real capture where there is one, else the field notes."""
    return captured(key) if key in CAPTURED else noted(key)
