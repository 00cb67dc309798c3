"""heteromig.fleet as a user gets it: ``ansible-galaxy collection build`` of this working checkout,
``ansible-galaxy collection install <tarball> -p <dir>``, then a user's project OUTSIDE the
repository (its own ansible.cfg: ``collections_path = <dir>``, ``forks = 5``) runs

- the module ``heteromig.fleet.gpu_facts`` ad hoc against localhost with simulated GPUs, and
- the collection's main playbook, addressed by name: ``ansible-playbook heteromig.fleet.hetero_run``
  (its ``import_playbook: gpu_inventory.yml`` resolves inside the installed collection), with an
  inventory shaped like inventories/local (simulated GPUs, short durations, host_root in the
  test's directory), ending VALID.

Nothing of the checkout is reachable from the project: no ANSIBLE_* variable is inherited, the
repository's ansible.cfg (collections_path = ./collections, the in-place link) does not apply, and
``ansible-galaxy collection list`` must find the collection only in the install directory. Every
file, including the subprocesses' temporary ones (TMPDIR, ANSIBLE_HOME), stays under tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # not resolved: a venv's python is a symlink

# What a working checkout accumulates and the tarball must not hold (galaxy.yml build_ignore).
FORBIDDEN_TOP = {
    ".venv",
    ".state",
    "results",
    "collections",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    ".ansible",
    ".ci",
    ".git",
    "build",
    ".gl",
    ".whl",
    ".device",
}
FORBIDDEN_ANYWHERE = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis"}
# What the installed collection cannot work without.
REQUIRED = {
    "MANIFEST.json",
    "FILES.json",
    "meta/runtime.yml",
    "README.md",
    "playbooks/hetero_run.yml",
    "playbooks/gpu_inventory.yml",
    "plugins/modules/gpu_facts.py",
    "plugins/action/hetero_run.py",
    "plugins/callback/hetero_report.py",
    "plugins/module_utils/nvml/_nvml_sim.py",
    "roles/host_runtime/tasks/main.yml",
    "roles/mig_partition/tasks/main.yml",
}
MAX_TARBALL_BYTES = 2 * 1024 * 1024  # 0.45 MB when written; 53 MB when it packed .venv-compat


def user_env(base: Path) -> dict[str, str]:
    """The environment of a user's shell: the venv's ansible first, nothing of the checkout's
    Ansible settings, temporary files under ``base``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANSIBLE_", "HETEROMIG_")) and k != "PYTHONPATH"
    }
    for name in ("tmp", "ansible-home"):
        (base / name).mkdir(exist_ok=True)
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        TMPDIR=str(base / "tmp"),
        ANSIBLE_HOME=str(base / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
    )
    return env


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 120) -> str:
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}"
    return proc.stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("installed-collection")
    (base / "dist").mkdir()
    return base


@pytest.fixture(scope="module")
def tarball(work: Path) -> Path:
    """``ansible-galaxy collection build`` of the working checkout, from outside it."""
    run(
        [
            str(BIN / "ansible-galaxy"),
            "collection",
            "build",
            str(ROOT),
            "--output-path",
            str(work / "dist"),
        ],
        cwd=work,
        env=user_env(work),
    )
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    path = work / "dist" / f"heteromig-fleet-{version}.tar.gz"
    assert path.is_file(), sorted(p.name for p in (work / "dist").iterdir())
    return path


@pytest.fixture(scope="module")
def project(work: Path, tarball: Path) -> Path:
    """A user's project: ansible.cfg, the collection installed into <work>/collections."""
    proj = work / "project"
    proj.mkdir()
    colls = work / "collections"
    (proj / "ansible.cfg").write_text(
        "[defaults]\n"
        f"collections_path = {colls}\n"
        "forks = 5\n"
        "callbacks_enabled = heteromig.fleet.hetero_report\n"
        "\n[callback_hetero_report]\n"
        "output_dir = reports\n"
    )
    env = user_env(work)
    out = run(
        [str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(colls)],
        cwd=proj,
        env=env,
    )
    assert "heteromig.fleet:" in out and "installed successfully" in out, out
    listed = json.loads(
        run(
            [
                str(BIN / "ansible-galaxy"),
                "collection",
                "list",
                "heteromig.fleet",
                "--format",
                "json",
            ],
            cwd=proj,
            env=env,
        )
    )
    # the installed copy, and no other (the checkout's in-place link must not be visible)
    assert list(listed) == [str(colls / "ansible_collections")], listed
    return proj


def write_inventory(where: Path, host_root: Path) -> Path:
    """Shaped like inventories/local: localhost with one simulated H100, MIG all-3g (two
    3g.40gb slices: the main benchmark and one background), short durations."""
    inv = where / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    hosts = {
        "gpu_hosts": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                    "heteromig_gpu_backend": "sim",
                    "heteromig_sim_gpus": "1xH100-SXM5-80GB",
                    "heteromig_host_root": str(host_root),
                    "heteromig_sim_state": "{{ heteromig_host_root }}/nvml-sim.json",
                }
            }
        }
    }
    group_vars = {
        "heteromig_hetero_main_benchmark_duration": 2000,
        "heteromig_hetero_start_time_buffer": 1000,
        "heteromig_hetero_stop_grace": 3000,
        "heteromig_mig_gpus": [{"devices": [0], "layout": "all-3g"}],
        "heteromig_engine_combinations": [
            {"benchmark": "synth-mlp-small", "scenario": "Offline"},
            {"benchmark": "synth-mlp-large", "scenario": "Offline"},
            {"benchmark": "synth-conv-1d", "scenario": "Offline"},
        ],
    }
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    (inv / "group_vars" / "gpu_hosts.yml").write_text(yaml.safe_dump(group_vars, sort_keys=False))
    return inv


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_tarball_holds_the_collection_and_nothing_of_the_checkout(tarball: Path) -> None:
    size = tarball.stat().st_size
    assert size < MAX_TARBALL_BYTES, f"{tarball.name} is {size} bytes"
    with tarfile.open(tarball) as tar:
        names = {m.name.removeprefix("./").rstrip("/") for m in tar.getmembers()}
    assert names >= REQUIRED, sorted(REQUIRED - names)
    top = {n.split("/", 1)[0] for n in names}
    bad = sorted(
        n
        for n in names
        if n.split("/", 1)[0] in FORBIDDEN_TOP
        or n.split("/", 1)[0].startswith(".venv")
        or FORBIDDEN_ANYWHERE & set(n.split("/"))
        or n.startswith("tests/output")
        or n.endswith((".pyc", ".tar.gz", ".egg-info"))
    )
    assert not bad, f"checkout leftovers in the tarball (top level: {sorted(top)}): {bad[:20]}"


def test_installed_gpu_facts_ad_hoc(project: Path, tmp_path: Path) -> None:
    inv = write_inventory(tmp_path, tmp_path / "host")
    out = run(
        [
            str(BIN / "ansible"),
            "localhost",
            "-i",
            str(inv),
            "-m",
            "heteromig.fleet.gpu_facts",
            "-a",
            "backend={{ heteromig_gpu_backend }} sim_gpus={{ heteromig_sim_gpus }} "
            "sim_state={{ heteromig_sim_state }}",
        ],
        cwd=project,
        env=user_env(tmp_path),
    )
    assert out.startswith("localhost | SUCCESS => "), out
    facts = json.loads(out.split("=>", 1)[1])["ansible_facts"]
    gpus = facts["heteromig_gpus"]
    assert [(g["index"], g["model"], g["mig_capable"]) for g in gpus] == [
        (0, "H100-SXM5-80GB", True)
    ], gpus
    assert (tmp_path / "host" / "nvml-sim.json").is_file()


@pytest.mark.slow
def test_installed_hetero_run_playbook_ends_valid(project: Path, tmp_path: Path) -> None:
    inv = write_inventory(tmp_path, tmp_path / "host")
    env = user_env(tmp_path)
    # a user's project keeps its own results and reports: relative to its directory
    for leftover in ("results", "reports"):
        assert not (project / leftover).exists()
    t0 = time.monotonic()
    out = run(
        [str(BIN / "ansible-playbook"), "heteromig.fleet.hetero_run", "-i", str(inv)],
        cwd=project,
        env=env,
        timeout=240,
    )
    took = time.monotonic() - t0
    assert "PLAY [Discover GPUs and MIG slices]" in out, out  # the imported gpu_inventory.yml
    assert "hetero_run [localhost] VALID" in out, out
    assert "failed=0" in out and "unreachable=0" in out, out

    # the action's contract, fetched per run and host
    (result_file,) = (project / "results").glob("*/localhost/result.json")
    result = json.loads(result_file.read_text())
    assert result["verdict"] == "VALID", result["reasons"]
    assert result["main"]["loadgen"]["result_validity"] == "VALID"
    assert result["gpu"]["model"] == "H100-SXM5-80GB", result["gpu"]
    assert len(result["backgrounds"]) == 1, result["backgrounds"]

    # the installed callback's durable record of the same run
    (jsonl,) = (project / "reports").glob("*/results.jsonl")
    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    assert [(r["host"], r["status"], r["result"]["verdict"]) for r in records] == [
        ("localhost", "ok", "VALID")
    ], records
    assert (jsonl.parent / "report.html").is_file()

    # the detached host-side runner is gone once the playbook returns (give it a moment)
    deadline = time.monotonic() + 10
    while (left := processes_mentioning(str(tmp_path))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left
    print(f"hetero_run from the installed collection: {took:.1f} s")
