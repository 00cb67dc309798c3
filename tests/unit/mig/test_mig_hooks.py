"""Hooks (mig-parted's v1 format) and GPU clients around a MIG change, over the NVML simulator.

No Ansible: ``run_host`` with the ``ChangeGuard`` the module builds, real hook commands (shell
scripts that append to a log), real client processes, the simulator's state file as the GPUs.
Expected values are written by hand from mig-parted's hooks file format and its ``apply``
command (variables MIG_PARTED_*; apply-exit deferred once apply-start succeeded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from sim_faults import inject_fault

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_apply import run_host
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_change import (
    ChangeGuard,
    guard_for,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_clients import (
    ClientError,
    ClientManager,
    parse_clients,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_hooks import (
    HookError,
    parse_hooks,
    read_hooks_file,
    validate_inputs,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_host import MigApplyError
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    GpuBackend,
    open_backend,
)

PATH = "/usr/bin:/bin"
# what mig-parted's apply gives every hook (its flags' EnvVars), written out by hand
MIG_PARTED_VARIABLES = {
    "MIG_PARTED_CONFIG_FILE",
    "MIG_PARTED_SELECTED_CONFIG",
    "MIG_PARTED_HOOKS_FILE",
    "MIG_PARTED_SKIP_RESET",
    "MIG_PARTED_MODE_CHANGE_ONLY",
}


@pytest.fixture
def backend(state_path: str) -> Iterator[GpuBackend]:
    opened = open_backend("sim", state_path, "2xH100-SXM5-80GB")
    yield opened
    opened.close()


def _gpus(state_path: str) -> list[dict[str, Any]]:
    gpus: list[dict[str, Any]] = json.loads(Path(state_path).read_text())["gpus"]
    return gpus


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _params(**kwargs: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "layout": "all-1g",
        "gpus": None,
        "mig_parted_config": None,
        "mig_parted_config_file": None,
        "mig_parted_label": None,
        "hooks": None,
        "hooks_file": None,
        "hooks_timeout": 300,
        "gpu_clients": [],
        "boot_persistence": None,
    }
    params.update(kwargs)
    return params


def _logging_hooks(tmp_path: Path, log: Path, fail: str | None = None) -> dict[str, Any]:
    """One hook per point that logs its point and the mig-parted variables it got."""
    script = _script(
        tmp_path / "hook.sh",
        f"""
echo "$1 status=${{HETEROMIG_MIG_EXIT_STATUS:-}} label=$MIG_PARTED_SELECTED_CONFIG \
own=${{OWN:-}} cwd=$(pwd)" >> {log}
env | grep -c '^MIG_PARTED_' >> {log}
test "$1" != "{fail or "none"}"
""",
    )
    return {
        "version": "v1",
        "hooks": {
            point: [
                {
                    "command": script,
                    "args": [point],
                    "envs": {"OWN": "mine", "MIG_PARTED_SELECTED_CONFIG": "not-this"},
                    "workdir": str(tmp_path),
                }
            ]
            for point in ("apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit")
        },
    }


def _guarded_run(
    backend: GpuBackend,
    params: dict[str, Any],
    check_mode: bool = False,
    manager: ClientManager | None = None,
) -> tuple[ChangeGuard, dict[str, Any] | None, str]:
    spec, clients = validate_inputs(params, None)
    guard = guard_for(params, spec, clients, PATH)
    if manager is not None:
        guard.manager = manager
    result, error, ok = None, "", False
    try:
        result = run_host(
            backend,
            parse_gpu_entries(params["layout"]),
            check_mode=check_mode,
            prepare=guard.prepare,
        )
        ok = True
    except MigApplyError as exc:
        error = str(exc)
    problems = guard.finish(ok)
    return guard, result, error + "".join("; " + p for p in problems)


# --------------------------------------------------------------------------- the format
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"version": "v2", "hooks": {}},
            "not a mig-parted v1 hooks spec: version is 'v2', expected 'v1'",
        ),
        ({"hooks": {}}, "version is None, expected 'v1'"),
        (
            {"version": "v1", "hooks": {"post-apply": []}},
            "unknown hook point 'post-apply': mig-parted's hook points are apply-start, pre-apply-mode, "
            "pre-apply-config, apply-exit",
        ),
        (
            {"version": "v1", "hooks": {"apply-exit": [{"args": ["x"]}]}},
            "hooks.apply-exit[0]: 'command' is missing or empty",
        ),
        (
            {"version": "v1", "hooks": {"apply-exit": [{"command": "/bin/true", "arg": ["x"]}]}},
            "hooks.apply-exit[0]: unknown key(s) arg",
        ),
        ({"version": "v1", "hooks": [], "extra": 1}, "unknown key(s) extra"),
        (
            {"version": "v1", "hooks": {"apply-start": {"command": "/bin/true"}}},
            "hooks.apply-start must be a list of commands",
        ),
    ],
)
def test_specs_that_are_not_mig_parted_v1_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(HookError) as error:
        parse_hooks(spec, "hooks")
    assert message in str(error.value)


def test_the_hooks_file_of_nvidia_mig_manager_parses(tmp_path: Path) -> None:
    # the shape of deployments/systemd/hooks-default.yaml of NVIDIA/mig-parted, written here
    path = tmp_path / "hooks.yaml"
    path.write_text("""version: v1
hooks:
    apply-start:
    - workdir: "/etc/nvidia-mig-manager"
      command: "/bin/bash"
      args: ["-x", "-c", "source hooks.sh; persist-config ${MIG_PARTED_SELECTED_CONFIG}"]
    pre-apply-mode:
    - workdir: "/etc/nvidia-mig-manager"
      command: "/bin/bash"
      args: ["-x", "-c", "source hooks.sh; stop-services"]
    apply-exit:
    - workdir: "/etc/nvidia-mig-manager"
      command: "/bin/bash"
      args: ["-x", "-c", "source hooks.sh; start-services"]
""")
    spec = read_hooks_file(str(path))
    assert [
        (h.point, h.command, h.args[-1])
        for p in ("apply-start", "pre-apply-mode", "apply-exit")
        for h in spec.at(p)
    ] == [
        (
            "apply-start",
            "/bin/bash",
            "source hooks.sh; persist-config ${MIG_PARTED_SELECTED_CONFIG}",
        ),
        ("pre-apply-mode", "/bin/bash", "source hooks.sh; stop-services"),
        ("apply-exit", "/bin/bash", "source hooks.sh; start-services"),
    ]
    assert spec.at("pre-apply-config") == ()


def test_a_hooks_file_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hooks.yaml"
    path.write_text("version: v1\nhooks: [unclosed\n")
    with pytest.raises(HookError, match="is not valid YAML"):
        read_hooks_file(str(path))


# ------------------------------------------------------------------------------ running
def test_hooks_run_in_mig_parteds_order_with_its_variables(
    backend: GpuBackend, state_path: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    guard, result, error = _guarded_run(backend, _params(hooks=_logging_hooks(tmp_path, log)))
    assert error == "" and result is not None and result["changed"]
    lines = log.read_text().splitlines()
    # MIG off -> 7 x 1g: a mode change and an instance change; the variables mig-parted sets
    # win over the hook's own envs (the label is the named layout), the hook's others stay
    assert lines == [
        f"apply-start status= label=all-1g own=mine cwd={tmp_path}",
        "5",
        f"pre-apply-mode status= label=all-1g own=mine cwd={tmp_path}",
        "5",
        f"pre-apply-config status= label=all-1g own=mine cwd={tmp_path}",
        "5",
        f"apply-exit status=0 label=all-1g own=mine cwd={tmp_path}",
        "5",
    ]
    assert guard.result()["hook_points"] == [
        "apply-start",
        "pre-apply-mode",
        "pre-apply-config",
        "apply-exit",
    ]
    assert [r["rc"] for r in guard.result()["hooks_run"]] == [0, 0, 0, 0]
    assert len(_gpus(state_path)[0]["gpu_instances"]) == 7


def test_the_environment_is_mig_parteds(backend: GpuBackend, tmp_path: Path) -> None:
    dump = tmp_path / "env.json"
    hooks = {
        "version": "v1",
        "hooks": {
            "apply-start": [
                {
                    "command": sys.executable,
                    "args": [
                        "-c",
                        f"import json, os; json.dump(dict(os.environ), open({str(dump)!r}, 'w'))",
                    ],
                }
            ]
        },
    }
    _guard, _result, error = _guarded_run(backend, _params(hooks=hooks))
    assert error == ""
    env = json.loads(dump.read_text())
    assert set(env) >= MIG_PARTED_VARIABLES
    assert env["MIG_PARTED_SKIP_RESET"] == "false" and env["MIG_PARTED_MODE_CHANGE_ONLY"] == "false"
    assert env["MIG_PARTED_CONFIG_FILE"] == "" and env["HETEROMIG_MIG_HOOK"] == "apply-start"
    # nothing else of the caller's environment leaks in, PATH aside (python may add LC_CTYPE)
    assert set(env) - MIG_PARTED_VARIABLES - {"PATH", "HETEROMIG_MIG_HOOK", "LC_CTYPE"} == set()
    assert env["PATH"] == PATH


def test_a_failing_pre_hook_changes_nothing_and_apply_exit_still_runs(
    backend: GpuBackend, state_path: str, tmp_path: Path
) -> None:
    run_host(backend, parse_gpu_entries("all-7g"))
    before = _gpus(state_path)
    log = tmp_path / "log"
    guard, result, error = _guarded_run(
        backend, _params(hooks=_logging_hooks(tmp_path, log, fail="pre-apply-config"))
    )
    assert result is None
    assert error.startswith("pre-apply-config hook 1 (") and "failed with exit status 1" in error
    assert "nothing was changed" in error
    assert _gpus(state_path) == before
    # 7g -> 1g needs no mode change: no pre-apply-mode; apply-exit ran, with status 1
    points = [line.split()[0] for line in log.read_text().splitlines() if not line.isdigit()]
    assert points == ["apply-start", "pre-apply-config", "apply-exit"]
    assert "apply-exit status=1" in log.read_text()
    assert [r["point"] for r in guard.result()["hooks_run"]] == points


def test_a_failing_apply_start_runs_no_apply_exit(
    backend: GpuBackend, state_path: str, tmp_path: Path
) -> None:
    before = _gpus(state_path)
    log = tmp_path / "log"
    _guard, result, error = _guarded_run(
        backend, _params(hooks=_logging_hooks(tmp_path, log, fail="apply-start"))
    )
    assert result is None and "apply-start hook 1" in error
    assert [line.split()[0] for line in log.read_text().splitlines() if not line.isdigit()] == [
        "apply-start"
    ]
    assert _gpus(state_path) == before


def test_apply_exit_runs_after_a_failed_change_with_status_1(
    backend: GpuBackend, state_path: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    inject_fault(
        state_path, "nvmlDeviceCreateGpuInstanceWithPlacement", pynvml.NVML_ERROR_UNKNOWN, skip=2
    )
    _guard, result, error = _guarded_run(backend, _params(hooks=_logging_hooks(tmp_path, log)))
    assert result is None and "changing GPU 0" in error
    assert log.read_text().splitlines()[-2].startswith("apply-exit status=1 ")


def test_no_hook_runs_where_nothing_changes_or_in_check_mode(
    backend: GpuBackend, state_path: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    guard, result, _error = _guarded_run(
        backend, _params(hooks=_logging_hooks(tmp_path, log)), check_mode=True
    )
    assert result is not None and result["changed"] and not log.exists()
    assert guard.result()["hook_points"] == [
        "apply-start",
        "pre-apply-mode",
        "pre-apply-config",
        "apply-exit",
    ]
    assert guard.result()["hooks_run"] == []
    assert "hooks (check mode: not run): apply-start (1)" in guard.diff_text()
    run_host(backend, parse_gpu_entries("all-1g"))
    guard, result, _error = _guarded_run(backend, _params(hooks=_logging_hooks(tmp_path, log)))
    assert result is not None and not result["changed"] and not log.exists()
    assert guard.result()["hook_points"] == []


def test_a_hook_command_that_does_not_exist_stops_before_anything(
    backend: GpuBackend, state_path: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    hooks = _logging_hooks(tmp_path, log)
    hooks["hooks"]["apply-exit"] = [{"command": "/no/such/hook"}]
    hooks["hooks"]["pre-apply-mode"][0]["workdir"] = str(tmp_path / "gone")
    before = _gpus(state_path)
    _guard, result, error = _guarded_run(backend, _params(hooks=hooks))
    assert result is None
    assert "apply-exit hook 1 (/no/such/hook): command /no/such/hook does not exist" in error
    assert (
        f"pre-apply-mode hook 1 ({tmp_path}/hook.sh): workdir {tmp_path}/gone is not a directory"
        in error
    )
    assert not log.exists() and _gpus(state_path) == before


def test_a_hook_that_hangs_is_killed(backend: GpuBackend, tmp_path: Path) -> None:
    hooks = {"version": "v1", "hooks": {"apply-start": [{"command": "sleep", "args": ["30"]}]}}
    _guard, result, error = _guarded_run(backend, _params(hooks=hooks, hooks_timeout=1))
    assert (
        result is None and "apply-start hook 1 (sleep) did not finish within 1s (killed)" in error
    )


# --------------------------------------------------------------------------- GPU clients
@pytest.mark.parametrize(
    ("clients", "message"),
    [
        (
            [{"unit": "kubelet", "order": "first"}],
            "gpu_clients[0] (kubelet): order must be an integer, not 'first'",
        ),
        ([{"unit": "kubelet", "order": -1}], "order must be 0 or more, not -1"),
        ([{"unit": "kubelet", "order": 2.5}], "order must be an integer, not 2.5"),
        ([{"unit": "kubelet", "timeout": 0}], "timeout must be more than 0 seconds, not 0"),
        (
            [{"unit": "kubelet", "timeout": "soon"}],
            "timeout must be a number of seconds, not 'soon'",
        ),
        (
            [{"unit": "kubelet", "missing": "ignore"}],
            "missing must be one of fail, skip, warn, not 'ignore'",
        ),
        (
            [{"stop": ["/bin/true"]}],
            "gpu_clients[0]: needs a unit, or both a stop and a start command",
        ),
        (
            [{"unit": "a", "stop": "x", "start": "y"}],
            "give either unit or stop/start commands, not both",
        ),
        ([{"unit": "a"}, {"unit": "a"}], "the name a is already gpu_clients[0]"),
    ],
)
def test_bad_clients_are_refused(clients: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ClientError) as error:
        parse_clients(clients)
    assert message in str(error.value)


def test_clients_stop_by_order_and_restore_in_reverse(tmp_path: Path) -> None:
    parsed = parse_clients(
        [
            {"unit": "b", "order": 20},
            {"unit": "a", "order": 10},
            {"unit": "c", "order": 10},
            {"unit": "idle"},
        ]
    )
    assert [c.name for c in parsed] == ["a", "c", "b", "idle"]
    assert [c.unit for c in parsed] == ["a.service", "c.service", "b.service", "idle.service"]
    calls: list[list[str]] = []

    def run(argv: list[str], timeout: float) -> tuple[int, str, str]:
        calls.append(argv[1:])
        if argv[1] == "show":  # one call for every unit: a block each, as systemctl prints them
            return (
                0,
                "\n".join(
                    "ActiveState=%s\nLoadState=loaded\n"
                    % ("inactive" if unit == "idle.service" else "active")
                    for unit in argv[3:]
                ),
                "",
            )
        return 0, "", ""

    manager = ClientManager(parsed, run=run, systemctl="/bin/systemctl")
    manager.stop(manager.survey())
    assert manager.restore() == []
    assert calls[0] == [
        "show",
        "--property=LoadState,ActiveState",
        "a.service",
        "c.service",
        "b.service",
        "idle.service",
    ]
    assert calls[1:] == [
        ["stop", "a.service"],
        ["stop", "c.service"],
        ["stop", "b.service"],
        ["start", "b.service"],
        ["start", "c.service"],
        ["start", "a.service"],
    ]


class ProcessClient:
    """A real service: start runs a sleep whose pid goes to a file, stop kills it."""

    def __init__(self, tmp_path: Path, name: str, state_path: str, log: Path) -> None:
        pidfile = tmp_path / f"{name}.pid"
        count = (
            f"{sys.executable} -c \"import json; print(sum(len(g['gpu_instances']) for g in "
            f"json.load(open('{state_path}'))['gpus']))\""
        )
        self.pidfile = pidfile
        self.start = _script(
            tmp_path / f"{name}-start",
            f"""
echo "start {name} $({count})" >> {log}
nohup sleep 600 >/dev/null 2>&1 &
echo $! > {pidfile}
""",
        )
        self.stop = _script(
            tmp_path / f"{name}-stop",
            f"""
echo "stop {name} $({count})" >> {log}
kill $(cat {pidfile}); rm -f {pidfile}
""",
        )
        self.status = _script(
            tmp_path / f"{name}-status", f"test -e {pidfile} && kill -0 $(cat {pidfile})"
        )

    def spec(self, order: int) -> dict[str, Any]:
        return {
            "name": Path(self.stop).name.removesuffix("-stop"),
            "stop": [self.stop],
            "start": [self.start],
            "status": [self.status],
            "order": order,
        }

    def pid(self) -> int | None:
        return int(self.pidfile.read_text()) if self.pidfile.exists() else None

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        if self.alive():
            subprocess.run([self.stop], check=False)


@pytest.fixture
def services(
    tmp_path: Path, state_path: str
) -> Iterator[tuple[ProcessClient, ProcessClient, Path]]:
    log = tmp_path / "clients.log"
    first = ProcessClient(tmp_path, "dcgm", state_path, log)
    second = ProcessClient(tmp_path, "plugin", state_path, log)
    yield first, second, log
    first.kill()
    second.kill()


def test_running_clients_are_stopped_before_the_change_and_started_after(
    backend: GpuBackend, state_path: str, services: tuple[ProcessClient, ProcessClient, Path]
) -> None:
    dcgm, plugin, log = services
    subprocess.run([dcgm.start], check=True)
    old_pid = dcgm.pid()
    run_host(backend, parse_gpu_entries("all-7g"))  # 2 GPU instances
    guard, result, error = _guarded_run(
        backend, _params(gpu_clients=[dcgm.spec(20), plugin.spec(10)])
    )
    assert error == "" and result is not None and result["changed"]
    # the log reads the GPU instances at each step: 2 before the change, 14 after; the plugin
    # was not running, so it was neither stopped nor started
    assert log.read_text().splitlines() == ["start dcgm 0", "stop dcgm 2", "start dcgm 14"]
    assert dcgm.alive() and dcgm.pid() != old_pid and not plugin.alive()
    report = {c["name"]: c for c in guard.result()["gpu_clients"]}
    assert report["dcgm"]["stopped"] and report["dcgm"]["restored"]
    assert report["plugin"]["was_running"] is False and not report["plugin"]["stopped"]


def test_clients_are_restored_when_the_change_fails(
    backend: GpuBackend, state_path: str, services: tuple[ProcessClient, ProcessClient, Path]
) -> None:
    dcgm, plugin, log = services
    for client in (dcgm, plugin):
        subprocess.run([client.start], check=True)
    inject_fault(
        state_path, "nvmlDeviceCreateGpuInstanceWithPlacement", pynvml.NVML_ERROR_UNKNOWN, skip=2
    )
    _guard, result, error = _guarded_run(
        backend, _params(gpu_clients=[dcgm.spec(20), plugin.spec(10)])
    )
    assert result is None and "changing GPU 0" in error
    steps = [line.rsplit(" ", 1)[0] for line in log.read_text().splitlines()[2:]]
    assert steps == ["stop plugin", "stop dcgm", "start dcgm", "start plugin"]
    assert dcgm.alive() and plugin.alive()


def test_no_client_is_stopped_where_nothing_changes_or_in_check_mode(
    backend: GpuBackend, services: tuple[ProcessClient, ProcessClient, Path]
) -> None:
    dcgm, _plugin, log = services
    subprocess.run([dcgm.start], check=True)
    guard, result, _error = _guarded_run(
        backend, _params(gpu_clients=[dcgm.spec(1)]), check_mode=True
    )
    assert result is not None and result["changed"]
    assert guard.result()["gpu_clients"][0]["would_stop"] is True
    assert "GPU clients that would be stopped and started again: dcgm" in guard.diff_text()
    run_host(backend, parse_gpu_entries("all-1g"))
    guard, result, _error = _guarded_run(backend, _params(gpu_clients=[dcgm.spec(1)]))
    assert result is not None and not result["changed"]
    assert guard.result()["gpu_clients"] == []
    assert log.read_text().splitlines() == ["start dcgm 0"]


def test_a_missing_client_fails_skips_or_warns_as_told(
    backend: GpuBackend, state_path: str, services: tuple[ProcessClient, ProcessClient, Path]
) -> None:
    dcgm, _plugin, log = services
    subprocess.run([dcgm.start], check=True)
    before = _gpus(state_path)
    gone = {"name": "gone", "stop": ["/no/such/stop"], "start": ["/no/such/start"]}
    _guard, result, error = _guarded_run(backend, _params(gpu_clients=[dcgm.spec(1), gone]))
    assert result is None
    assert "GPU client gone is missing (command /no/such/stop does not exist)" in error
    assert "Nothing was changed" in error
    assert _gpus(state_path) == before and log.read_text().splitlines() == ["start dcgm 0"]
    guard, result, error = _guarded_run(
        backend, _params(gpu_clients=[dcgm.spec(1), dict(gone, missing="warn")])
    )
    assert error == "" and result is not None and result["changed"]
    assert guard.manager.warnings == [
        "GPU client gone is missing (command /no/such/stop does not exist); left out"
    ]


def test_units_without_systemd_count_as_missing() -> None:
    parsed = parse_clients([{"unit": "kubelet", "missing": "skip"}, {"unit": "dcgm"}])

    def run(argv: list[str], timeout: float) -> tuple[int, str, str]:
        return (
            1,
            "",
            "System has not been booted with systemd as init system (PID 1). Can't operate.",
        )

    manager = ClientManager(parsed, run=run, systemctl="/bin/systemctl")
    with pytest.raises(ClientError) as error:
        manager.survey()
    assert str(error.value).startswith(
        "GPU client dcgm is missing (systemctl show failed (exit status 1): System "
        "has not been booted with systemd"
    )
    assert "kubelet" not in str(error.value)


def test_persistenced_is_stopped_only_for_a_reset(state_path: str) -> None:
    clients = parse_clients(
        [{"unit": "dcgm"}, {"unit": "nvidia-persistenced", "needed_for": "reset"}]
    )
    shown: list[str] = []

    def run(argv: list[str], timeout: float) -> tuple[int, str, str]:
        if argv[1] == "show":
            shown.extend(argv[3:])
            return 0, "\n".join("LoadState=loaded\nActiveState=active\n" for _unit in argv[3:]), ""
        return 0, "", ""

    for sim_gpus, layout, expected in (
        ("1xH100-SXM5-80GB", "all-1g", ["dcgm.service"]),  # Hopper: mode change without reset
        ("1xA100-SXM4-80GB", "all-1g", ["dcgm.service", "nvidia-persistenced.service"]),  # Ampere
    ):
        shown.clear()
        path = str(Path(state_path).with_name(sim_gpus + ".json"))
        opened = open_backend("sim", path, sim_gpus)
        params = _params(
            layout=layout,
            gpu_clients=[{"unit": "dcgm"}, {"unit": "nvidia-persistenced", "needed_for": "reset"}],
        )
        guard, result, error = _guarded_run(
            opened, params, manager=ClientManager(clients, run=run, systemctl="/bin/systemctl")
        )
        opened.close()
        assert error == "" and result is not None, error
        assert shown == expected, sim_gpus
        assert [c["name"] for c in guard.result()["gpu_clients"] if c["stopped"]] == [
            s.removesuffix(".service") for s in expected
        ]
