"""No Python file of the collection (plugins/), its tests or its benchmarks is past 800 lines.

The layout rule of this project: a file that grows past about 800 lines holds more than one
thing, and is split along its seams (docs: README, "Repository layout"). Counted as ``wc -l``
counts, by newline characters.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
LIMIT = 800


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def test_the_count_is_that_of_wc(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_bytes(b"a = 1\n\nb = 2\n")
    assert line_count(sample) == 3


def test_no_plugin_file_is_past_the_limit() -> None:
    files = [p for p in PLUGINS.rglob("*.py") if "__pycache__" not in p.parts]
    assert len(files) > 50  # the tree is there
    over = {str(p.relative_to(PLUGINS)): line_count(p) for p in files if line_count(p) > LIMIT}
    assert over == {}


def test_no_test_or_benchmark_file_is_past_the_limit() -> None:
    files = [
        p
        for top in ("tests", "benchmarks")
        for p in (ROOT / top).rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    assert len(files) > 100
    over = {str(p.relative_to(ROOT)): line_count(p) for p in files if line_count(p) > LIMIT}
    assert over == {}
