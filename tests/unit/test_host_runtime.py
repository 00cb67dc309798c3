"""The host runtime's pure parts (module_utils/_host_runtime.py) and the controller manifest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils import _host_runtime as rt
from ansible_collections.heteromig.fleet.plugins.module_utils._import_closure import import_closure
from ansible_collections.heteromig.fleet.plugins.plugin_utils._agent_transport import AGENT_COMMANDS
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
        ({"a/b/x.py": "0" * 40}, "not a plain *.py file name"),
        ({"a/../x.py": "0" * 40}, "not a plain *.py file name"),
        ({"/abs.py": "0" * 40}, "not a plain *.py file name"),
        ({".pkg/x.py": "0" * 40}, "not a plain *.py file name"),
        ({"pkg/.x.py": "0" * 40}, "not a plain *.py file name"),
        ({"pkg/x-y.py": "0" * 40}, "not a plain *.py file name"),
        ({"pkg\n/x.py": "0" * 40}, "not a plain *.py file name"),
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
        rt.write_files(
            str(tmp_path), ["_a.py", "_b.py"], {"_a.py": "a = 1\n", "_b.py": "x"}, manifest
        )
    assert list(tmp_path.iterdir()) == []
    rt.write_files(
        str(tmp_path), ["_a.py", "_b.py"], {"_a.py": "a = 1\n", "_b.py": "b = 1\n"}, manifest
    )
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


def test_controller_manifest_is_the_agent_and_what_it_imports() -> None:
    manifest = runtime_manifest()
    agent = sorted(p.relative_to(MODULE_UTILS).as_posix() for p in MODULE_UTILS.glob("agent/*.py"))
    assert set(agent) <= set(manifest)
    assert {"_host_runtime.py", "nvml/_gpu_backend.py", "nvml/_nvml_sim.py"} <= set(manifest)
    # the MIG layout code and the module-only helpers run inside modules, never detached
    assert not [name for name in manifest if name.startswith("mig/")]
    assert "_host_sysinfo.py" not in manifest
    rt.check_manifest(manifest)
    for name, text in runtime_sources().items():
        assert manifest[name] == rt.sha1_bytes((MODULE_UTILS / name).read_bytes())
        assert text == (MODULE_UTILS / name).read_text(encoding="utf-8")


def test_the_shipped_files_alone_run_the_agent(tmp_path: Path) -> None:
    """Installed as runtime_sync installs them, the shipped files import every agent module and
    run the harness's and the runner's command lines in a fresh interpreter (no checkout)."""
    paths = rt.runtime_paths(str(tmp_path))
    sources = runtime_sources()
    rt.write_files(paths.code, sorted(sources), sources, runtime_manifest())
    modules = [
        rt.RUNTIME_PACKAGE + "." + name[:-3].replace("/", ".")
        for name in sources
        if name.endswith(".py") and not name.endswith("__init__.py")
    ]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": paths.lib, "PYTHONNOUSERSITE": "1"}
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    done = subprocess.run(
        [sys.executable, "-S", "-c", code, *modules],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    version = subprocess.run(
        [sys.executable, "-m", rt.HARNESS_MODULE, "--version"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert version.returncode == 0 and version.stdout.startswith(rt.HARNESS_VERSION_PREFIX), (
        version.stdout + version.stderr
    )
    runner = subprocess.run(
        [sys.executable, "-m", rt.RUNTIME_PACKAGE + ".agent._hetero_runner", "--help"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert runner.returncode == 0 and "run" in runner.stdout, runner.stdout + runner.stderr
    # the controller's direct transport: the agent's commands, answering from these files alone
    agent = subprocess.run(
        [sys.executable, "-S", "-m", AGENT_COMMANDS],
        input=json.dumps({"args": {"command": "status", "host_root": str(tmp_path)}}),
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert agent.returncode == 0, agent.stderr
    assert json.loads(agent.stdout) == {
        "failed": True,
        "msg": "no hetero run at all on this host (looked in %s/runs)" % tmp_path,
        "run_id": None,
    }


def test_the_import_closure_follows_lazy_imports_and_adds_packages() -> None:
    pkg = "ansible_collections.heteromig.fleet.plugins.module_utils"
    sources = {
        "agent/__init__.py": "",
        "agent/_a.py": "def f():\n    from %s.nvml import _b\n" % pkg,
        "nvml/__init__.py": "",
        "nvml/_b.py": "import %s._c\n" % pkg,
        "_c.py": "",
        "mig/__init__.py": "",
        "mig/_d.py": "from %s.agent._a import f\n" % pkg,
    }
    assert import_closure(sources.get, ["agent/_a.py"]) == {
        "agent/__init__.py",
        "agent/_a.py",
        "nvml/__init__.py",
        "nvml/_b.py",
        "_c.py",
    }


def test_package_files_are_written_listed_and_removed_with_their_directory(tmp_path: Path) -> None:
    texts = {"_top.py": "t = 1\n", "agent/__init__.py": "", "agent/_run.py": "r = 1\n"}
    manifest = {name: sha1(text) for name, text in texts.items()}
    rt.check_manifest(manifest)
    rt.write_files(str(tmp_path), sorted(texts), texts, manifest)
    assert (tmp_path / "agent" / "_run.py").read_text() == "r = 1\n"
    (tmp_path / "agent" / "__pycache__").mkdir()
    assert rt.installed_digests(str(tmp_path)) == manifest
    # a later manifest without the package: its files and then its directory go
    plan = rt.plan_sync({"_top.py": manifest["_top.py"]}, rt.installed_digests(str(tmp_path)))
    assert plan.write == [] and plan.remove == ["agent/__init__.py", "agent/_run.py"]
    rt.remove_files(str(tmp_path), plan.remove)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_top.py"]
