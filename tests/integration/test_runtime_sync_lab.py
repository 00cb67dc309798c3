"""The host runtime (role heteromig.fleet.host_runtime, module runtime_sync) over the SSH lab.

One playbook on one lab host: a check-mode run on an empty host, the first installation, a warm
run that must change nothing and run no subprocess, a corrupted and a stale file, and the bad
inputs (a package that cannot be had with installing off, options only the action may set).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils import _host_runtime as runtime
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import (
    _engine_spec as engine_spec,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._runtime_sources import (
    runtime_sources,
)
from lab import LabRun, SshLab

pytestmark = pytest.mark.integration

SOURCES = Path(runtime.__file__).resolve().parent
# What the controller ships: the agent package and its imports (plugin_utils/_runtime_sources).
ALL_FILES = sorted(runtime_sources())


def installed_files(code: Path) -> list[str]:
    return sorted(
        p.relative_to(code).as_posix() for p in [*code.glob("*.py"), *code.glob("*/*.py")]
    )


PLAYBOOK = """
- name: Host runtime
  hosts: lab
  gather_facts: false
  tasks:
    - name: Check mode on an empty host
      ansible.builtin.import_role:
        name: heteromig.fleet.host_runtime
      check_mode: true
    - name: Keep the check-mode result
      ansible.builtin.set_fact:
        check_result: "{{ __host_runtime }}"

    - name: First installation
      ansible.builtin.import_role:
        name: heteromig.fleet.host_runtime
    - name: Keep the first result
      ansible.builtin.set_fact:
        first_result: "{{ __host_runtime }}"

    - name: Warm run
      heteromig.fleet.runtime_sync:
        root: "{{ heteromig_host_root }}"
      register: warm

    - name: Corrupt one installed file
      ansible.builtin.copy:
        content: "broken = True\\n"
        dest: "{{ first_result.pythonpath }}/ansible_collections/heteromig/fleet/plugins/module_utils/nvml/_gpu_catalog.py"
        mode: "0644"
    - name: Leave a file the collection does not have
      ansible.builtin.copy:
        content: "old = True\\n"
        dest: "{{ first_result.pythonpath }}/ansible_collections/heteromig/fleet/plugins/module_utils/_gone.py"
        mode: "0644"
    - name: Repair
      heteromig.fleet.runtime_sync:
        root: "{{ heteromig_host_root }}"
      register: repair

    - name: A package that is not there, installing off
      heteromig.fleet.runtime_sync:
        root: "{{ heteromig_host_root }}"
        install: false
        packages:
          numpy: numpy
          heteromig_no_such_package: heteromig-no-such-package
      register: no_package
      ignore_errors: true

    - name: An interpreter that does not exist
      heteromig.fleet.runtime_sync:
        root: "{{ heteromig_host_root }}/elsewhere"
        python: /nonexistent/bin/python3
      register: no_python
      ignore_errors: true

    - name: A relative root
      heteromig.fleet.runtime_sync:
        root: relative/heteromig
      ignore_errors: true

    - name: Options only the action sets
      heteromig.fleet.runtime_sync:
        root: "{{ heteromig_host_root }}"
        manifest: {}
      register: internal
      ignore_errors: true
"""


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabRun, Path]]:
    tmp = tmp_path_factory.mktemp("runtime-sync")
    lab = SshLab(["rt"], tmp / "lab")
    try:
        playbook = tmp / "runtime.yml"
        playbook.write_text(PLAYBOOK)
        run = lab.run_playbook(playbook, timeout=240)
        assert (run.rc, run.status) == (0, "successful"), run.stdout[-6000:]
        yield run, lab.hostdir("rt")
    finally:
        lab.close()


def res(run: LabRun, task: str) -> dict:
    return run.result(task, "rt").res


def test_check_mode_reports_everything_and_creates_nothing(synced: tuple[LabRun, Path]) -> None:
    run, root = synced
    check = res(run, "Keep the check-mode result")["ansible_facts"]["check_result"]
    assert check["changed"] is True
    assert check["files_written"] == ALL_FILES
    assert str(root / "engines") in check["dirs_created"]
    assert check["harness_version"] is None


def test_first_installation_copies_every_file_and_runs_the_harness(
    synced: tuple[LabRun, Path],
) -> None:
    run, root = synced
    first = res(run, "Keep the first result")["ansible_facts"]["first_result"]
    assert first["changed"] is True
    assert first["checked"] == "full"
    assert first["harness_version"] == engine_spec.HARNESS_VERSION
    assert first["pythonpath"] == str(root / "lib")
    assert (root / "engines").is_dir()
    facts = res(run, "Record the harness's interpreter, paths and version")["ansible_facts"]
    assert facts["host_runtime_harness_version"] == engine_spec.HARNESS_VERSION
    assert facts["host_runtime_harness_module"] == runtime.HARNESS_MODULE


def test_warm_run_changes_nothing_and_trusts_its_stamp(synced: tuple[LabRun, Path]) -> None:
    warm = res(synced[0], "Warm run")
    assert warm["changed"] is False
    assert warm["checked"] == "stamp"
    assert (warm["files_written"], warm["files_removed"], warm["packages_installed"]) == (
        [],
        [],
        [],
    )
    assert warm["harness_version"] == engine_spec.HARNESS_VERSION


def test_a_corrupted_file_is_rewritten_and_a_stale_one_removed(
    synced: tuple[LabRun, Path],
) -> None:
    run, root = synced
    repair = res(run, "Repair")
    assert repair["changed"] is True
    assert repair["files_written"] == ["nvml/_gpu_catalog.py"]
    assert repair["files_removed"] == ["_gone.py"]
    assert repair["checked"] == "full"
    installed = root / "lib" / Path(*runtime.RUNTIME_PACKAGE.split("."))
    assert installed_files(installed) == ALL_FILES
    assert "agent/_hetero_runner.py" in ALL_FILES and not any(
        n.startswith("mig/") for n in ALL_FILES
    )
    for name in ALL_FILES:
        assert (installed / name).read_bytes() == (SOURCES / name).read_bytes(), name


def test_missing_package_with_installing_off_names_it(synced: tuple[LabRun, Path]) -> None:
    result = synced[0].result("A package that is not there, installing off", "rt")
    assert result.outcome == "failed"
    msg = result.res["msg"]
    assert "heteromig-no-such-package" in msg and "install: false" in msg
    assert "numpy," not in msg
    assert "Traceback" not in msg


def test_missing_interpreter_is_named_and_nothing_is_created(synced: tuple[LabRun, Path]) -> None:
    run, root = synced
    result = run.result("An interpreter that does not exist", "rt")
    assert result.outcome == "failed"
    assert (
        result.res["msg"]
        == "python /nonexistent/bin/python3 is not an executable file on this host"
    )
    assert not (root / "elsewhere").exists()


def test_relative_root_is_refused(synced: tuple[LabRun, Path]) -> None:
    result = synced[0].result("A relative root", "rt")
    assert result.outcome == "failed"
    assert (
        result.res["msg"] == "root must be an absolute path on the host, got 'relative/heteromig'"
    )


def test_internal_options_are_refused(synced: tuple[LabRun, Path]) -> None:
    result = synced[0].result("Options only the action sets", "rt")
    assert result.outcome == "failed"
    assert "manifest is set by the action itself" in result.res["msg"]
