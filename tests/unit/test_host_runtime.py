"""The host runtime's pure parts (module_utils/_host_runtime.py) and the controller manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils import _host_runtime as rt
from ansible_collections.heteromig.fleet.plugins.plugin_utils._runtime_sources import (
    MODULE_UTILS,
    runtime_manifest,
    runtime_sources,
)


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def test_plan_sync_writes_missing_and_different_and_removes_stale() -> None:
    manifest = {"_a.py": sha1("a"), "_b.py": sha1("b"), "_c.py": sha1("c")}
    installed = {"_a.py": sha1("a"), "_b.py": sha1("old b"), "_gone.py": sha1("x")}
    plan = rt.plan_sync(manifest, installed)
    assert plan == rt.SyncPlan(write=["_b.py", "_c.py"], remove=["_gone.py"])
    assert not plan.empty
    assert rt.plan_sync(manifest, manifest).empty


def test_manifest_digest_depends_on_names_and_checksums_only() -> None:
    one = {"_a.py": sha1("a"), "_b.py": sha1("b")}
    assert rt.manifest_digest(one) == rt.manifest_digest(dict(reversed(list(one.items()))))
    assert rt.manifest_digest(one) != rt.manifest_digest({**one, "_b.py": sha1("B")})
    assert rt.manifest_digest(one) != rt.manifest_digest({"_a.py": sha1("a")})


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"../evil.py": "0" * 40}, "not a plain *.py file name"),
        ({"sub/x.py": "0" * 40}, "not a plain *.py file name"),
        ({"notes.txt": "0" * 40}, "not a plain *.py file name"),
        ({".hidden.py": "0" * 40}, "not a plain *.py file name"),
        ({"_a.py": "abc"}, "has no sha1 checksum"),
    ],
)
def test_bad_manifests_are_refused(manifest: dict[str, str], message: str) -> None:
    with pytest.raises(rt.RuntimeSyncError, match=message.replace("*", r"\*")):
        rt.check_manifest(manifest)


def test_write_files_checks_every_content_before_writing_any(tmp_path: Path) -> None:
    manifest = {"_a.py": sha1("a = 1\n"), "_b.py": sha1("b = 1\n")}
    with pytest.raises(rt.RuntimeSyncError, match=r"_b\.py does not match"):
        rt.write_files(str(tmp_path), ["_a.py", "_b.py"], {"_a.py": "a = 1\n", "_b.py": "x"}, manifest)
    assert list(tmp_path.iterdir()) == []
    rt.write_files(str(tmp_path), ["_a.py", "_b.py"], {"_a.py": "a = 1\n", "_b.py": "b = 1\n"}, manifest)
    assert rt.installed_digests(str(tmp_path)) == manifest


def test_stamp_matches_only_the_same_files_python_and_packages(tmp_path: Path) -> None:
    stamp = rt.stamp_for("d1", "/usr/bin/python3", ["numpy", "pynvml"], "0.1.0")
    path = tmp_path / rt.STAMP_NAME
    rt.write_stamp(str(path), stamp)
    read = rt.read_stamp(str(path))
    assert rt.stamp_matches(read, "d1", "/usr/bin/python3", ["pynvml", "numpy"])
    assert not rt.stamp_matches(read, "d2", "/usr/bin/python3", ["numpy", "pynvml"])
    assert not rt.stamp_matches(read, "d1", "/opt/venv/bin/python", ["numpy", "pynvml"])
    assert not rt.stamp_matches(read, "d1", "/usr/bin/python3", ["numpy"])
    path.write_text("{not json")
    assert rt.read_stamp(str(path)) == {}


def test_missing_packages_finds_in_process_without_a_subprocess() -> None:
    def no_subprocess(*_args: object, **_kwargs: object) -> tuple[int, str, str]:
        raise AssertionError("no subprocess expected")

    import sys

    missing = rt.missing_packages(
        no_subprocess, sys.executable, ["json", "heteromig_no_such_package"], thorough=False
    )
    assert missing == ["heteromig_no_such_package"]


def test_a_failing_subprocess_is_named() -> None:
    def failing(argv: list[str], environ_update: dict[str, str]) -> tuple[int, str, str]:
        return 1, "", "boom"

    with pytest.raises(rt.RuntimeSyncError, match="exited 1: boom"):
        rt.harness_version(failing, "/usr/bin/python3", "/x/lib")


def test_controller_manifest_covers_every_host_side_file() -> None:
    manifest = runtime_manifest()
    assert sorted(manifest) == sorted(p.name for p in MODULE_UTILS.glob("*.py"))
    assert "_host_runtime.py" in manifest
    rt.check_manifest(manifest)
    for name, text in runtime_sources().items():
        assert manifest[name] == rt.sha1_bytes((MODULE_UTILS / name).read_bytes())
        assert text == (MODULE_UTILS / name).read_text(encoding="utf-8")
