"""Helpers of the hetero_report integration tests (not a test module).

Two ways to feed the callback in the lab: the real ``heteromig.fleet.hetero_run`` through
playbooks/hetero_run.yml (test_hetero_report.py), and recorded results built from REAL LoadGen
runs (tests/hetero_samples) replayed by the test-only module
playbooks/library/hetero_run_replay.py (test_hetero_report_replay.py, ..._sigint.py), for exact
comparisons and deterministic timing.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import hetero_samples
import pynvml

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLAYBOOK = HERE / "playbooks" / "hetero_report_replay.yml"
HETERO_RUN_PLAYBOOK = REPO / "playbooks" / "hetero_run.yml"
REPLAY_ACTIONS = "heteromig.fleet.hetero_run,hetero_run_replay"


def replay_sources(
    samples: dict[str, dict[str, Any]], hosts: dict[str, str], directory: Path
) -> dict[str, Path]:
    """Write ``samples[name]`` attributed to each host (``{host: name}``); ``{host: path}``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for host, name in hosts.items():
        path = directory / ("%s.json" % host)
        path.write_text(json.dumps(hetero_samples.as_host(samples[name], host)))
        paths[host] = path
    return paths


def as_returned(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as a task returns it through Ansible: without ``changed`` (compared apart),
    and without ``warnings`` when there were none (Ansible drops an empty warnings list)."""
    returned = {k: v for k, v in result.items() if k != "changed"}
    if returned.get("warnings") == []:
        del returned["warnings"]
    return returned


def hetero_records(jsonl: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return [r for r in records if r["hetero"]]


# ------------------------------------------------------------------------------------- DOM


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.texts: list[str] = []

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def text(self) -> str:
        return "".join(self.texts) + "".join(c.text() for c in self.children)

    def iter(self) -> list[Node]:
        found = [self]
        for child in self.children:
            found += child.iter()
        return found

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag)
            and (cls is None or cls in n.classes)
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


class _Builder(HTMLParser):
    VOID = {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.texts.append(data)


def parse_dom(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    return builder.root


# ------------------------------------------------------------------------------------- PNG


def decode_png(path: Path) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows of raw pixels, bytes per pixel) of an 8-bit RGB/RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _compression, _filter, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        filt = line[0]
        cur = bytearray(line[1:])
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if filt == 1:
                cur[i] = (cur[i] + a) & 0xFF
            elif filt == 2:
                cur[i] = (cur[i] + b) & 0xFF
            elif filt == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 0xFF
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 0xFF
        rows.append(bytes(cur))
        prev = cur
    return width, height, rows, bpp


def colours(rows: list[bytes], bpp: int) -> dict[tuple[int, int, int], int]:
    """How many pixels of every RGB colour."""
    counts: dict[tuple[int, int, int], int] = {}
    for row in rows:
        for i in range(0, len(row), bpp):
            rgb = (row[i], row[i + 1], row[i + 2])
            counts[rgb] = counts.get(rgb, 0) + 1
    return counts


# ---------------------------------------------------------------------------------- Chromium

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The Chromium binary; the tests need it (Debian package ``chromium``)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("Chromium is required: install the Debian package 'chromium'")


def browse(page: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Open ``page`` in headless Chromium with a fresh profile (``args``: --dump-dom, ...)."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir))
    argv = [chromium(), *CHROMIUM_FLAGS, "--user-data-dir=%s" % profile, *args, page.as_uri()]
    env = {**os.environ, "HOME": str(workdir)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=True)


def shown_value(text: str) -> float:
    """The number of a shown figure such as ``1,234.5 samples/s``."""
    number, unit = text.split(" ", 1)
    assert unit == "samples/s", text
    return float(number.replace(",", ""))


# ----------------------------------------------------------------------- real hetero_run


def make_mig_slices(state: Path, count: int) -> None:
    """An H100 with MIG enabled and ``count`` 1g.10gb slices in the NVML simulator's state."""
    backend = open_backend("sim", str(state), "1xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    for _slice in range(count):
        gpu_instance = nvml.nvmlDeviceCreateGpuInstance(handle, 19)  # 1g.10gb
        nvml.nvmlGpuInstanceCreateComputeInstance(gpu_instance, 0)
    backend.close()


FAKE_HARNESS = REPO / "tests" / "fixtures" / "hetero"


def real_run_hostvars(results: Path, **extra: Any) -> dict[str, Any]:
    """Host variables for playbooks/hetero_run.yml on a lab host with simulated MIG slices and
    the fake_loadgen harness (tests/fixtures/hetero: real LoadGen, tiny SUT), short durations."""
    values: dict[str, Any] = {
        "heteromig_gpu_backend": "sim",
        "heteromig_sim_gpus": "1xH100-SXM5-80GB",
        "heteromig_host_pythonpath": str(REPO / "collections"),
        "heteromig_results_dir": str(results),
        "heteromig_hetero_harness": "fake_loadgen",
        "heteromig_hetero_harness_profile_dirs": [str(FAKE_HARNESS / "profiles")],
        "heteromig_hetero_harness_vars": {"fake_bench": str(FAKE_HARNESS / "fake_bench.py")},
        "heteromig_hetero_main_benchmark_duration": 1500,
        "heteromig_hetero_start_time_buffer": 300,
        "heteromig_hetero_stop_grace": 2000,
    }
    values.update(extra)
    return values
