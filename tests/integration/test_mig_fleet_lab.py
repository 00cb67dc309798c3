"""Hooks, GPU clients and boot persistence through playbooks/mig_reconfigure.yml, over the SSH lab.

Real sshd hosts with simulated GPUs. Systemd is not PID 1 on them, so:

- GPU clients are a real process (``inference``: a start command that launches a ``sleep`` and
  records its pid, a stop command that kills it) and systemd units answered by a ``systemctl``
  stand-in first on each host's PATH, which records every call and keeps each unit's state in
  a file (``units/<unit>`` exists, ``units/<unit>.active`` runs);
- boot persistence installs into the host's directory (its "disk"), and after the simulator's
  reboot the test runs the installed unit's ``ExecStart`` as systemd would (from /, with
  systemd's default PATH and nothing else), then checks the layout is back.

Every hook, client stop and start writes one line to the host's ``events.log``, with the number
of GPU instances the simulator holds at that moment, so the order of hooks, clients and the
change itself is read from one file.

Hosts: ``fleet`` (2 x H100: MIG off to all-1g, hooks inline and from a file, clients, boot
persistence), ``steady`` (already all-1g: nothing runs, only boot persistence is installed),
``prefail`` (its pre-apply-mode hook fails: nothing changes, apply-exit runs), ``badhooks`` (an
unknown hook point), ``badclient`` (a client order that is not a number), ``oldsvc`` (the
deprecated service variables, which still work and warn).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_apply import run_host
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from lab import HostSpec, LabRun, SshLab

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAYBOOK = "playbooks/mig_reconfigure.yml"
PLAN = "Plan the MIG layout (changes nothing)"
APPLY = "Apply the MIG layout"
SUMMARY = "Summary of this batch"
FLEET = "What changed, per host"
ONE_BATCH = {
    "mig_reconfigure_hosts": "lab",
    "mig_reconfigure_serial": "100%",
    "mig_reconfigure_max_fail_percentage": 100,
}
UNIT = "heteromig-mig-layout.service"
# what systemd gives a system service's ExecStart: its default PATH, cwd /
SYSTEMD_ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"]

SYSTEMCTL = """#!/bin/sh
# systemctl stand-in of a lab host (systemd is not PID 1 here): records every call
d={hostdir}
echo "$*" >> $d/systemctl.log
case "$1" in
  show) shift 2; first=1  # show --property=... <unit>...: a block per unit, blank-line separated
        for u in "$@"; do
          [ $first = 1 ] || echo; first=0
          if [ -e "$d/units/$u" ]; then echo LoadState=loaded
            if [ -e "$d/units/$u.active" ]; then echo ActiveState=active; else echo ActiveState=inactive; fi
          else echo LoadState=not-found; echo ActiveState=inactive; fi
        done ;;
  stop) echo "systemctl stop $2 $($d/gis)" >> $d/events.log; rm -f "$d/units/$2.active" ;;
  start) echo "systemctl start $2 $($d/gis)" >> $d/events.log; touch "$d/units/$2.active" ;;
  enable) mkdir -p $d/systemd/multi-user.target.wants
          ln -sf $d/systemd/$2 $d/systemd/multi-user.target.wants/$2 ;;
  disable) rm -f $d/systemd/multi-user.target.wants/$2 ;;
  daemon-reload) ;;
  *) exit 1 ;;
esac
"""
GIS = """#!/bin/sh
# how many GPU instances the simulated GPUs hold now
exec {python} -c "import json; print(sum(len(g['gpu_instances']) for g in json.load(open('{state}'))['gpus']))"
"""
START = """#!/bin/sh
echo "start inference $({hostdir}/gis)" >> {hostdir}/events.log
nohup sleep 600 >/dev/null 2>&1 &
echo $! > {hostdir}/inference.pid
"""
STOP = """#!/bin/sh
echo "stop inference $({hostdir}/gis)" >> {hostdir}/events.log
kill $(cat {hostdir}/inference.pid) && rm -f {hostdir}/inference.pid
"""
STATUS = "#!/bin/sh\ntest -e {hostdir}/inference.pid && kill -0 $(cat {hostdir}/inference.pid)\n"
HOOK = """#!/bin/sh
# <source> <point>: one line per hook run, with the GPU instances at that moment
echo "hook $1 $2 $({hostdir}/gis) label=$MIG_PARTED_SELECTED_CONFIG status=${{HETEROMIG_MIG_EXIT_STATUS:--}}" >> {hostdir}/events.log
test "$2" != "${{FAIL_AT:-none}}"
"""
POINTS = ("apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit")


def _hooks(hostdir: Path, fail_at: str | None = None) -> dict[str, Any]:
    envs = {"FAIL_AT": fail_at} if fail_at else {}
    return {
        "version": "v1",
        "hooks": {
            point: [{"command": str(hostdir / "hook"), "args": ["inline", point], "envs": envs}]
            for point in POINTS
        },
    }


def _clients(hostdir: Path) -> list[dict[str, Any]]:
    return [
        {"unit": "kubelet", "order": 1, "missing": "skip"},  # this host has no kubelet
        {
            "name": "inference",
            "stop": [str(hostdir / "stop")],
            "start": [str(hostdir / "start")],
            "status": [str(hostdir / "status")],
            "order": 5,
            "timeout": 30,
        },
        {"unit": "fake-exporter", "order": 10},
        {"unit": "nvidia-persistenced", "order": 90, "needed_for": "reset"},
    ]


def _hostvars(base: Path, name: str, sim_gpus: str, **extra: Any) -> dict[str, Any]:
    hostdir = base / name
    return {
        "heteromig_gpu_backend": "sim",
        "heteromig_sim_gpus": sim_gpus,
        "heteromig_mig_layout": "all-1g",
        "heteromig_mig_hooks": _hooks(hostdir),
        "heteromig_mig_hooks_file": str(hostdir / "hooks.yaml"),
        "heteromig_mig_gpu_clients": _clients(hostdir),
        "heteromig_mig_boot_persistence": True,
        "heteromig_mig_boot_config_dir": str(hostdir / "etc-heteromig"),
        "heteromig_mig_boot_runtime_dir": str(hostdir / "mig-boot"),
        "heteromig_mig_boot_unit_dir": str(hostdir / "systemd"),
        **extra,
    }


class Lab:
    def __init__(self, lab: SshLab) -> None:
        self.lab = lab
        self.runs: dict[str, LabRun] = {}
        self.before: dict[str, Any] = {}
        self.marks: dict[str, int] = {}

    def dir(self, host: str) -> Path:
        return self.lab.hostdir(host)

    def gpus(self, host: str) -> list[dict[str, Any]]:
        gpus: list[dict[str, Any]] = json.loads((self.dir(host) / "nvml-sim.json").read_text())[
            "gpus"
        ]
        return gpus

    def layout(self, host: str) -> list[list[tuple[int, int, int]]]:
        return [
            sorted((gi["profile_id"], gi["start"], gi["id"]) for gi in g["gpu_instances"])
            for g in self.gpus(host)
        ]

    def events(self, host: str) -> list[str]:
        path = self.dir(host) / "events.log"
        return path.read_text().splitlines() if path.exists() else []

    def systemctl(self, host: str) -> list[str]:
        path = self.dir(host) / "systemctl.log"
        return path.read_text().splitlines() if path.exists() else []

    def ok(self, run: str, task: str, host: str) -> dict[str, Any]:
        result = self.runs[run].result(task, host)
        assert result.outcome == "ok", f"{host}: {task}: {result.outcome}: {result.res.get('msg')}"
        return result.res

    def inference_pid(self, host: str) -> int | None:
        path = self.dir(host) / "inference.pid"
        return int(path.read_text()) if path.exists() else None

    def ssh(self, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
        command = "cd / && " + " ".join(shlex.quote(a) for a in [*SYSTEMD_ENV, *argv])
        return subprocess.run(
            self.lab.ssh_argv(host, command),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _prepare(lab: SshLab) -> None:
    for host in lab.names:
        hostdir = lab.hostdir(host)
        state = hostdir / "nvml-sim.json"
        files = {
            "systemctl": SYSTEMCTL,
            "gis": GIS,
            "start": START,
            "stop": STOP,
            "status": STATUS,
            "hook": HOOK,
        }
        (hostdir / "bin").mkdir()
        for name, text in files.items():
            path = hostdir / ("bin/systemctl" if name == "systemctl" else name)
            path.write_text(text.format(hostdir=hostdir, python=sys.executable, state=state))
            path.chmod(0o755)
        (hostdir / "units").mkdir()
        for unit in ("fake-exporter.service", "nvidia-persistenced.service"):
            (hostdir / "units" / unit).touch()
            (hostdir / "units" / f"{unit}.active").touch()
        (hostdir / "hooks.yaml").write_text(
            "version: v1\nhooks:\n  apply-start:\n"
            f"    - command: {hostdir / 'hook'}\n      args: [file, apply-start]\n"
        )
        open_backend("sim", str(state), lab.host_vars(host)["heteromig_sim_gpus"]).close()
        subprocess.run([str(hostdir / "start")], check=True)
        (hostdir / "events.log").unlink()
    steady = open_backend("sim", str(lab.hostdir("steady") / "nvml-sim.json"), "1xH100-SXM5-80GB")
    run_host(steady, parse_gpu_entries("all-1g"))
    steady.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("mig-fleet")
    specs = []
    for name, sim_gpus, extra in (
        ("fleet", "2xH100-SXM5-80GB", {}),
        ("steady", "1xH100-SXM5-80GB", {}),
        (
            "prefail",
            "1xH100-SXM5-80GB",
            {
                "heteromig_mig_hooks": _hooks(base / "prefail", "pre-apply-mode"),
                "heteromig_mig_boot_persistence": None,
            },
        ),
        (
            "badhooks",
            "1xH100-SXM5-80GB",
            {
                "heteromig_mig_hooks": {
                    "version": "v1",
                    "hooks": {"post-apply": [{"command": "/bin/true"}]},
                }
            },
        ),
        (
            "badclient",
            "1xH100-SXM5-80GB",
            {"heteromig_mig_gpu_clients": [{"unit": "kubelet", "order": "first"}]},
        ),
        (
            "oldsvc",
            "1xH100-SXM5-80GB",
            {
                "heteromig_mig_gpu_clients": None,
                "heteromig_mig_hooks": None,
                "heteromig_mig_hooks_file": None,
                "heteromig_mig_boot_persistence": None,
                "heteromig_mig_service_manager": "command",
                "heteromig_mig_services": ["inference-svc"],
                "heteromig_mig_service_commands": {
                    "status": [str(base / "oldsvc" / "svc"), "status"],
                    "stop": [str(base / "oldsvc" / "svc"), "stop"],
                    "start": [str(base / "oldsvc" / "svc"), "start"],
                },
            },
        ),
    ):
        hostvars = _hostvars(base, name, sim_gpus, **extra)
        hostvars = {k: v for k, v in hostvars.items() if v is not None}
        specs.append(HostSpec(name, hostvars, env={"PATH": f"{base / name / 'bin'}:/usr/bin:/bin"}))
    lab = SshLab(specs, base)
    fleet = Lab(lab)
    try:
        _prepare(lab)
        svc = lab.hostdir("oldsvc") / "svc"
        svc.write_text(
            '#!/bin/sh\ncase $1 in status) exit 0;; *) echo "$1 $2" >> '
            f"{lab.hostdir('oldsvc')}/events.log;; esac\n"
        )
        svc.chmod(0o755)
        for host in lab.names:
            fleet.before[host] = fleet.layout(host)
        fleet.marks["inference-before"] = fleet.inference_pid("fleet") or 0
        fleet.runs["first"] = lab.run_playbook(PLAYBOOK, extravars=ONE_BATCH, timeout=300)
        fleet.before["fleet-applied"] = fleet.layout("fleet")
        fleet.marks["events-first"] = len(fleet.events("fleet"))
        fleet.marks["systemctl-first"] = len(fleet.systemctl("fleet"))
        fleet.runs["again"] = lab.run_playbook(
            PLAYBOOK, extravars=ONE_BATCH, limit="fleet,steady,oldsvc", timeout=300
        )
        fleet.marks["events-again"] = len(fleet.events("fleet"))
        fleet.marks["systemctl-again"] = len(fleet.systemctl("fleet"))
        from test_mig_reconfigure_lab import _check_diff

        fleet.runs["check"] = _check_diff(
            lab, {**ONE_BATCH, "heteromig_mig_layout": "all-balanced"}, "fleet"
        )
        fleet.marks["events-check"] = len(fleet.events("fleet"))
        yield fleet
    finally:
        lab.close()


# ----------------------------------------------------------------------------- outcomes
def test_outcomes(fleet: Lab) -> None:
    run = fleet.runs["first"]
    assert run.hosts(SUMMARY, "ok") == {"fleet", "steady", "oldsvc"}, run.stdout[-3000:]
    assert run.hosts(SUMMARY, "failed") == {"prefail", "badhooks", "badclient"}


def test_hooks_and_clients_run_in_order_around_the_change(fleet: Lab) -> None:
    events = fleet.events("fleet")[: fleet.marks["events-first"]]
    # MIG off -> all-1g on 2 H100: a mode change and an instance change; the file's apply-start
    # hook before the inline one; clients stopped by order after the pre-* hooks (kubelet is
    # missing and skipped, persistenced only matters for a GPU reset, which Hopper does not
    # need), restored in reverse order, then apply-exit; the counts show 0 GPU instances
    # before the change and 14 after
    assert events == [
        "hook file apply-start 0 label=all-1g status=-",
        "hook inline apply-start 0 label=all-1g status=-",
        "hook inline pre-apply-mode 0 label=all-1g status=-",
        "hook inline pre-apply-config 0 label=all-1g status=-",
        "stop inference 0",
        "systemctl stop fake-exporter.service 0",
        "systemctl start fake-exporter.service 14",
        "start inference 14",
        "hook inline apply-exit 14 label=all-1g status=0",
    ]
    result = fleet.ok("first", APPLY, "fleet")
    assert result["hook_points"] == list(POINTS)
    assert [
        (c["name"], c["present"], c["stopped"], c["restored"]) for c in result["gpu_clients"]
    ] == [
        ("kubelet", False, False, False),
        ("inference", True, True, True),
        ("fake-exporter", True, True, True),
    ]
    # the process client really went and came back: a new process
    pid = fleet.inference_pid("fleet")
    assert pid is not None and pid != fleet.marks["inference-before"]
    assert (fleet.dir("fleet") / "units" / "fake-exporter.service.active").exists()
    summary = fleet.ok("first", SUMMARY, "fleet")["msg"]
    assert "stopped and restarted inference, fake-exporter;" in summary
    assert "hooks ran: apply-start, pre-apply-mode, pre-apply-config, apply-exit;" in summary


def test_a_host_already_in_its_layout_runs_no_hook_and_stops_nothing(fleet: Lab) -> None:
    assert fleet.events("steady") == []
    assert fleet.layout("steady") == fleet.before["steady"]
    # it went to a batch only to install boot persistence
    plan = fleet.ok("first", PLAN, "steady")
    assert plan["would_change"] is False and plan["boot_persistence"]["would_change"] is True
    result = fleet.ok("first", APPLY, "steady")
    assert result["boot_persistence"]["changed"] is True
    assert result["gpu_clients"] == [] and result["hooks_run"] == []
    assert [c.split()[0] for c in fleet.systemctl("steady")] == ["daemon-reload", "enable"]


def test_a_failing_pre_hook_changes_nothing_and_runs_apply_exit(fleet: Lab) -> None:
    msg = fleet.runs["first"].result(SUMMARY, "prefail").res["msg"]
    assert "pre-apply-mode hook 1" in msg and "failed with exit status 1" in msg
    assert "nothing was changed" in msg
    assert fleet.layout("prefail") == fleet.before["prefail"]
    # no client was stopped: the hooks come first
    assert fleet.events("prefail") == [
        "hook file apply-start 0 label=all-1g status=-",
        "hook inline apply-start 0 label=all-1g status=-",
        "hook inline pre-apply-mode 0 label=all-1g status=-",
        "hook inline apply-exit 0 label=all-1g status=1",
    ]


def test_bad_hooks_and_clients_fail_at_planning_and_change_nothing(fleet: Lab) -> None:
    run = fleet.runs["first"]
    hooks = run.results(PLAN, "badhooks")[0]
    assert hooks.outcome == "failed"
    assert hooks.res["msg"] == (
        "hooks: unknown hook point 'post-apply': mig-parted's hook points are apply-start, "
        "pre-apply-mode, pre-apply-config, apply-exit; nothing was changed"
    )
    client = run.results(PLAN, "badclient")[0]
    assert client.outcome == "failed"
    assert client.res["msg"] == (
        "gpu_clients[0] (kubelet): order must be an integer, not 'first'; nothing was changed"
    )
    for host in ("badhooks", "badclient"):
        assert fleet.layout(host) == fleet.before[host]
        assert fleet.events(host) == [] and fleet.systemctl(host) == []
        assert run.results(APPLY, host) == []


def test_the_old_service_variables_still_work_and_warn(fleet: Lab) -> None:
    assert fleet.events("oldsvc") == ["stop inference-svc", "start inference-svc"]
    plan = fleet.runs["first"].results(PLAN, "oldsvc")[0].res
    assert sorted(d["msg"] for d in plan["deprecations"]) == [
        "the variable heteromig_mig_service_commands is deprecated: set heteromig_mig_gpu_clients instead",
        "the variable heteromig_mig_service_manager is deprecated: set heteromig_mig_gpu_clients instead",
        "the variable heteromig_mig_services is deprecated: set heteromig_mig_gpu_clients instead",
    ]
    assert (
        "deprecations" not in fleet.runs["first"].results(PLAN, "fleet")[0].res
        or fleet.runs["first"].results(PLAN, "fleet")[0].res["deprecations"] == []
    )


# --------------------------------------------------------------------- the second run
def test_a_run_that_changes_nothing_runs_nothing(fleet: Lab) -> None:
    run = fleet.runs["again"]
    assert run.rc == 0, run.stdout[-3000:]
    assert "skipping: no hosts matched" in run.stdout
    for host in ("fleet", "steady", "oldsvc"):
        plan = fleet.ok("again", PLAN, host)
        assert (
            plan["would_change"] is False
            and plan.get("boot_persistence", {}).get("would_change", False) is False
        )
        assert run.results(APPLY, host) == []
    assert fleet.marks["events-again"] == fleet.marks["events-first"]
    assert fleet.marks["systemctl-again"] == fleet.marks["systemctl-first"]


def test_check_mode_runs_no_hook_and_stops_nothing(fleet: Lab) -> None:
    run = fleet.runs["check"]
    assert run.rc == 0, run.stdout[-3000:]
    assert fleet.marks["events-check"] == fleet.marks["events-first"]
    assert fleet.layout("fleet") == fleet.before["fleet-applied"]
    result = fleet.ok("check", APPLY, "fleet")
    assert result["hook_points"] == ["apply-start", "pre-apply-config", "apply-exit"]
    assert result["hooks_run"] == []
    assert [c["name"] for c in result["gpu_clients"] if c.get("would_stop")] == [
        "inference",
        "fake-exporter",
    ]
    assert (
        "hooks (check mode: not run): apply-start (2), pre-apply-config (1), apply-exit (1)"
        in run.stdout
    )
    assert (
        "GPU clients that would be stopped and started again: inference, fake-exporter"
        in run.stdout
    )
    summary = fleet.ok("check", SUMMARY, "fleet")["msg"]
    assert "would stop and restart inference, fake-exporter;" in summary
    assert "hooks would run: apply-start, pre-apply-config, apply-exit;" in summary


# ------------------------------------------------------------------- boot persistence
def test_boot_persistence_is_installed(fleet: Lab) -> None:
    hostdir = fleet.dir("fleet")
    unit = (hostdir / "systemd" / UNIT).read_text()
    assert (
        "\nAfter=systemd-modules-load.service nvidia-persistenced.service nvidia-fabricmanager.service\n"
        in unit
    )
    # before the clients that are units, but not persistenced, which it runs after
    assert "\nBefore=kubelet.service fake-exporter.service\n" in unit
    assert (hostdir / "systemd" / "multi-user.target.wants" / UNIT).is_symlink()
    first = fleet.systemctl("fleet")[: fleet.marks["systemctl-first"]]
    assert first == [
        "show --property=LoadState,ActiveState kubelet.service fake-exporter.service",
        "stop fake-exporter.service",
        "start fake-exporter.service",
        "daemon-reload",
        f"enable {UNIT}",
    ]
    layout = json.loads((hostdir / "etc-heteromig" / "layout.json").read_text())
    assert layout["label"] == "all-1g" and layout["request"]["layout"] == "all-1g"
    import yaml

    config = yaml.safe_load((hostdir / "etc-heteromig" / "config.yaml").read_text())
    assert config == {
        "version": "v1",
        "mig-configs": {
            "all-1g": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}]
        },
    }
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(hostdir / "systemd" / UNIT)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr


def test_after_a_reboot_the_unit_brings_the_layout_back(fleet: Lab) -> None:
    hostdir = fleet.dir("fleet")
    wanted = fleet.before["fleet-applied"]
    assert [len(g) for g in wanted] == [7, 7]

    def power_cycle_gpus() -> None:
        backend = open_backend("sim", str(hostdir / "nvml-sim.json"), "2xH100-SXM5-80GB")
        backend.reboot_simulated_host()
        backend.close()

    fleet.lab.reboot_host("fleet", while_down=power_cycle_gpus)
    assert fleet.layout("fleet") == [[], []]
    unit = (hostdir / "systemd" / UNIT).read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    status_argv = [argv[0], argv[1], "status", "--config", argv[4]]
    before = fleet.ssh("fleet", *status_argv)
    assert before.returncode == 1 and "applied layout differs from the desired one" in before.stdout
    done = fleet.ssh("fleet", *argv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert fleet.layout("fleet") == wanted
    assert "MIG layout all-1g applied" in done.stdout
    after = fleet.ssh("fleet", *status_argv)
    assert after.returncode == 0 and "applied layout matches the desired one" in after.stdout
    # the boot apply ran the hooks (a Hopper GPU comes back with MIG off: a mode change too),
    # and no client: they start after the unit (its Before=)
    assert fleet.events("fleet")[-5:] == [
        "hook file apply-start 0 label=all-1g status=-",
        "hook inline apply-start 0 label=all-1g status=-",
        "hook inline pre-apply-mode 0 label=all-1g status=-",
        "hook inline pre-apply-config 0 label=all-1g status=-",
        "hook inline apply-exit 14 label=all-1g status=0",
    ]


def test_disabling_removes_the_unit(fleet: Lab) -> None:
    hostdir = fleet.dir("fleet")
    run = fleet.lab.run_playbook(
        PLAYBOOK,
        extravars={**ONE_BATCH, "heteromig_mig_boot_persistence": False},
        limit="fleet",
        timeout=300,
    )
    assert run.rc == 0, run.stdout[-3000:]
    applied = run.result(APPLY, "fleet")
    assert applied.outcome == "ok", applied.res.get("msg")
    result = applied.res
    assert result["gpu_clients"] == [] and result["hooks_run"] == []
    assert result["boot_persistence"]["changed"] is True
    assert fleet.systemctl("fleet")[-2:] == [f"disable {UNIT}", "daemon-reload"]
    for path in (
        "systemd/" + UNIT,
        "systemd/multi-user.target.wants/" + UNIT,
        "etc-heteromig",
        "mig-boot",
    ):
        assert not (hostdir / path).exists(), path
    # the layout itself is left as it is
    assert fleet.layout("fleet") == fleet.before["fleet-applied"]
