"""Boot persistence (_mig_persist.py) and its boot entry (_mig_boot.py), without Ansible.

The files are installed for real into a temporary root (with a systemctl stand-in that records
its calls), the unit is checked by systemd's own ``systemd-analyze verify``, the mig-parted copy
by PyYAML against the mig-parted v1 shape written out by hand, and the installed boot entry is
run as systemd would run it - its own interpreter, a bare environment, from another directory -
after the simulator's reboot, which must bring the layout back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_apply import run_host
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_clients import parse_clients
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_persist import (
    UNIT_NAME,
    BootPaths,
    PersistError,
    before_units,
    desired_files,
    differing,
    install,
    mig_parted_yaml,
    persistence_step,
    remove,
    selected_label,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend

LAYOUT = ["3g.40gb@4", "2g.20gb@0", "1g.10gb@3"]  # 1g at 3, not where the planner would put it


class Systemctl:
    """Records calls; ``enable``/``disable`` make and remove the WantedBy= link as systemctl does."""

    def __init__(self, unit_dir: str) -> None:
        self.unit_dir = unit_dir
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv[1:])
        wants = Path(self.unit_dir) / "multi-user.target.wants"
        if argv[1] == "enable":
            wants.mkdir(exist_ok=True)
            (wants / argv[2]).symlink_to(Path(self.unit_dir) / argv[2])
        elif argv[1] == "disable":
            (wants / argv[2]).unlink(missing_ok=True)
        return 0, "", ""


def _params(tmp_path: Path, state_path: str, **kwargs: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "backend": "sim",
        "sim_state": state_path,
        "sim_gpus": "2xH100-SXM5-80GB",
        "layout": None,
        "gpus": [{"devices": [0], "layout": LAYOUT}],
        "mig_parted_config": None,
        "mig_parted_config_file": None,
        "mig_parted_label": None,
        "placement_match": "exact",
        "hooks": None,
        "hooks_file": None,
        "hooks_timeout": 300,
        "boot_persistence": "present",
        "boot_config_dir": str(tmp_path / "etc"),
        "boot_runtime_dir": str(tmp_path / "rt"),
        "boot_unit_dir": str(tmp_path / "units"),
        "boot_after": None,
    }
    params.update(kwargs)
    return params


def _gpus(state_path: str) -> list[dict[str, Any]]:
    gpus: list[dict[str, Any]] = json.loads(Path(state_path).read_text())["gpus"]
    return gpus


def _layout(state_path: str) -> list[list[tuple[int, int, int]]]:
    return [
        sorted((gi["profile_id"], gi["start"], gi["id"]) for gi in g["gpu_instances"])
        for g in _gpus(state_path)
    ]


def _applied(params: dict[str, Any]) -> dict[str, Any]:
    backend = open_backend("sim", params["sim_state"], params["sim_gpus"])
    try:
        return run_host(backend, parse_gpu_entries(params["layout"], params["gpus"]))
    finally:
        backend.close()


def _entry(paths: BootPaths, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed entry as the unit's ExecStart does: bare environment, another cwd."""
    return subprocess.run(
        [sys.executable, paths.entry, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )


def test_labels_follow_mig_parted_selected_config(tmp_path: Path, state_path: str) -> None:
    assert selected_label({"layout": "all-balanced"}) == "all-balanced"
    assert selected_label({"layout": ["1g.10gb"]}) == "heteromig"
    assert selected_label({"mig_parted_label": "custom", "mig_parted_config": {}}) == "custom"
    assert (
        selected_label({"mig_parted_config": {"version": "v1", "mig-configs": {"only": []}}})
        == "only"
    )


def test_the_mig_parted_copy_is_v1_yaml() -> None:
    config = {
        "version": "v1",
        "mig-configs": {
            "current": [
                {
                    "devices": [0],
                    "mig-enabled": True,
                    "mig-devices": {"1g.10gb": 1, "2g.20gb": 1, "3g.40gb": 1},
                },
                {"devices": [1], "mig-enabled": False},
                {"devices": [2], "mig-enabled": True, "mig-devices": {}},
            ]
        },
    }
    loaded = yaml.safe_load(mig_parted_yaml(config, "all-balanced"))
    assert loaded == {
        "version": "v1",
        "mig-configs": {
            "all-balanced": [
                {
                    "devices": [0],
                    "mig-enabled": True,
                    "mig-devices": {"1g.10gb": 1, "2g.20gb": 1, "3g.40gb": 1},
                },
                {"devices": [1], "mig-enabled": False},
                {"devices": [2], "mig-enabled": True, "mig-devices": {}},
            ]
        },
    }
    assert yaml.safe_load(
        mig_parted_yaml(
            {
                "version": "v1",
                "mig-configs": {"current": [{"devices": "all", "mig-enabled": False}]},
            },
            "true",
        )
    )["mig-configs"] == {"true": [{"devices": "all", "mig-enabled": False}]}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path, state_path: str) -> None:
    params = _params(tmp_path, state_path)
    paths = BootPaths(
        params["boot_config_dir"], params["boot_runtime_dir"], params["boot_unit_dir"]
    )
    result = _applied(params)
    clients = parse_clients(
        [
            {"unit": "kubelet"},
            {"unit": "nvidia-persistenced", "needed_for": "reset"},
            {"name": "cmd", "stop": ["/bin/true"], "start": ["/bin/true"]},
        ]
    )
    after = ["systemd-modules-load.service", "nvidia-persistenced.service"]
    assert before_units(clients, after) == ["kubelet.service"]
    desired = desired_files(
        params,
        result["mig_parted_config"],
        paths,
        sys.executable,
        before_units(clients, after),
        after,
    )
    install(desired, Systemctl(paths.unit_dir), "/bin/systemctl")
    verify = subprocess.run(
        ["systemd-analyze", "verify", paths.unit],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    unit = Path(paths.unit).read_text()
    assert "\nAfter=systemd-modules-load.service nvidia-persistenced.service\n" in unit
    assert "\nBefore=kubelet.service\n" in unit
    assert (
        f"\nExecStart={sys.executable} {paths.entry} apply --config {paths.layout} --wait-driver 120\n"
        in unit
    )
    assert "\nType=oneshot\n" in unit and "\nWantedBy=multi-user.target\n" in unit


def test_install_writes_what_differs_and_remove_takes_everything(
    tmp_path: Path, state_path: str
) -> None:
    params = _params(tmp_path, state_path)
    paths = BootPaths(
        params["boot_config_dir"], params["boot_runtime_dir"], params["boot_unit_dir"]
    )
    result = _applied(params)
    systemctl = Systemctl(paths.unit_dir)
    step = persistence_step(params, result, [], True, systemctl, "/bin/systemctl", sys.executable)
    assert step["changed"] and step["enabled"]
    assert systemctl.calls == [["daemon-reload"], ["enable", UNIT_NAME]]
    assert os.path.islink(paths.wants_link)
    # a second run finds everything in place: nothing written, no systemctl call
    again = persistence_step(params, result, [], True, systemctl, "/bin/systemctl", sys.executable)
    assert not again["changed"] and not again["would_change"] and again["files"] == []
    assert len(systemctl.calls) == 2
    # another layout: layout.json and config.yaml differ, the unit does not (no daemon-reload)
    other = dict(params, gpus=[{"devices": "all", "layout": "all-2g"}])
    desired = desired_files(
        other,
        _applied(other)["mig_parted_config"],
        paths,
        sys.executable,
        [],
        ["systemd-modules-load.service"],
    )
    assert sorted(differing(desired)) == sorted([paths.layout, paths.config, paths.unit])
    # absent: disabled, every file gone, directories that only held ours removed
    removed = remove(paths, systemctl, "/bin/systemctl")
    assert systemctl.calls[-2:] == [["disable", UNIT_NAME], ["daemon-reload"]]
    assert sorted(removed) == sorted(
        [paths.unit, paths.layout, paths.config, paths.entry, paths.lib]
    )
    assert not os.path.lexists(paths.wants_link)
    assert not Path(paths.config_dir).exists() and not Path(paths.runtime_dir).exists()
    assert remove(paths, systemctl, "/bin/systemctl") == []


def test_without_systemctl_persistence_is_refused(tmp_path: Path, state_path: str) -> None:
    params = _params(tmp_path, state_path)
    with pytest.raises(
        PersistError, match="needs systemd, but systemctl is not on this host's PATH"
    ):
        persistence_step(
            params, {"mig_parted_config": {}}, [], True, Systemctl(""), None, sys.executable
        )
    assert not (tmp_path / "etc").exists() and not (tmp_path / "units").exists()


def test_the_boot_entry_brings_the_layout_back_after_a_reboot(
    tmp_path: Path, state_path: str
) -> None:
    log = tmp_path / "hooks.log"
    hooks = {
        "version": "v1",
        "hooks": {
            "apply-start": [
                {
                    "command": "/bin/sh",
                    "args": ["-c", f"echo start $MIG_PARTED_SELECTED_CONFIG >> {log}"],
                }
            ],
            "apply-exit": [
                {
                    "command": "/bin/sh",
                    "args": ["-c", f"echo exit $HETEROMIG_MIG_EXIT_STATUS >> {log}"],
                }
            ],
        },
    }
    params = _params(tmp_path, state_path, hooks=hooks)
    paths = BootPaths(
        params["boot_config_dir"], params["boot_runtime_dir"], params["boot_unit_dir"]
    )
    result = _applied(params)
    wanted = _layout(state_path)
    # GPU-instance ids follow the placement (1g: 7..13 at starts 0..6, as on a real H100)
    assert wanted[0] == [(9, 4, 2), (14, 0, 3), (19, 3, 10)] and wanted[1] == []
    persistence_step(
        params, result, [], True, Systemctl(paths.unit_dir), "/bin/systemctl", sys.executable
    )

    # the code the entry runs is its own copy, not this checkout's
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sys; sys.path.insert(0, %r); "
                "from ansible_collections.heteromig.fleet.plugins.module_utils.mig import _mig_boot; "
                "print(_mig_boot.__file__)"
            )
            % paths.lib,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert probe.stdout.strip().startswith(paths.lib + "/")

    assert _entry(paths, "status", "--config", paths.layout, cwd=tmp_path).returncode == 0
    backend = open_backend("sim", state_path, params["sim_gpus"])
    backend.reboot_simulated_host()
    backend.close()
    assert _layout(state_path) == [[], []]
    status = _entry(paths, "status", "--config", paths.layout, cwd=tmp_path)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "GPU 0 (H100-SXM5-80GB): differs" in status.stdout
    assert "applied layout differs from the desired one" in status.stdout

    applied = _entry(paths, "apply", "--config", paths.layout, "--wait-driver", "5", cwd=tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _layout(state_path) == wanted  # same profiles, placements and GPU-instance ids
    assert "MIG layout heteromig applied" in applied.stdout
    assert log.read_text().splitlines() == ["start heteromig", "exit 0"]
    status = _entry(paths, "status", "--config", paths.layout, cwd=tmp_path)
    assert status.returncode == 0 and "applied layout matches the desired one" in status.stdout
    # a second apply changes nothing and runs no hook
    again = _entry(paths, "apply", "--config", paths.layout, cwd=tmp_path)
    assert again.returncode == 0 and "already applied" in again.stdout
    assert log.read_text().splitlines() == ["start heteromig", "exit 0"]


def test_the_boot_entry_refuses_a_config_it_cannot_use(tmp_path: Path) -> None:
    paths = BootPaths(str(tmp_path / "etc"), str(tmp_path / "rt"), str(tmp_path / "units"))
    bad = tmp_path / "layout.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "rt").mkdir()
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_persist import (
        entry_text,
        read_shipped,
        runtime_files,
    )

    Path(paths.entry).write_text(entry_text(sys.executable))
    for path, content in runtime_files(paths.lib, read_shipped).items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)
    done = _entry(paths, "apply", "--config", str(bad), cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"heteromig-mig-boot: {bad} is not a heteromig boot layout "
        "(format heteromig.mig-boot, version 1)"
    )
    missing = _entry(paths, "status", "--config", str(tmp_path / "none.json"), cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_the_boot_entry_ships_what_it_imports_and_nothing_of_the_agent(tmp_path: Path) -> None:
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_persist import (
        read_shipped,
        runtime_files,
    )

    lib = tmp_path / "lib"
    below = {
        Path(path)
        .relative_to(lib / "ansible_collections/heteromig/fleet/plugins/module_utils")
        .as_posix()
        for path in runtime_files(str(lib), read_shipped)
        if "/module_utils/" in path
    }
    # the boot entry's own chain, and the NVML door with the simulator's halves it opens
    assert {
        "mig/_mig_boot.py",
        "mig/_mig_apply.py",
        "mig/_mig_host.py",
        "nvml/_gpu_backend.py",
    } <= below
    assert {"nvml/_nvml_errors.py", "nvml/_nvml_sim.py", "nvml/_nvml_sim_state.py"} <= below
    assert {"mig/__init__.py", "nvml/__init__.py"} <= below
    assert not [name for name in below if name.startswith("agent/")]
