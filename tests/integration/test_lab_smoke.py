"""Smoke tests of the multi-host SSH lab itself (tests/lab): real sshd hosts, real playbook runs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lab import HostSpec, LabRun, MakeLab, SshLab
from lab.sshlab import SSH_OPTIONS

pytestmark = pytest.mark.integration

PLAY_TASKS = ("Ping", "Write marker into host root", "Identify host")
SIM = {"heteromig_gpu_backend": "sim", "heteromig_sim_gpus": "2xA100-SXM4-40GB"}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _pids_mentioning(text: str) -> set[int]:
    """Live processes whose command line contains ``text`` (this test process excluded)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and _alive(int(entry.name)):
                found.add(int(entry.name))
    return found


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _assert_all_ok(run: LabRun, hosts: list[str]) -> None:
    for host in hosts:
        for task in PLAY_TASKS:
            assert run.outcome(task, host) == "ok", (host, task, run.result(task, host).res)


def test_three_hosts_run_playbook(ssh_lab: MakeLab) -> None:
    lab = ssh_lab(
        [HostSpec("h1", SIM), HostSpec("h2", {"heteromig_sim_gpus": "1xH100-SXM5-80GB"}), "h3"]
    )
    assert len({lab.host(n).address for n in lab.names}) == 3
    inventory = lab.write_inventory()
    assert "ansible_python_interpreter" in inventory.read_text()
    assert lab.host_vars("h1")["heteromig_sim_state"] == str(lab.hostdir("h1") / "nvml-sim.json")
    assert lab.host_vars("h1")["heteromig_gpu_backend"] == "sim"

    run = lab.run_playbook("ping.yml")

    assert (run.rc, run.status) == (0, "successful"), run.stdout
    _assert_all_ok(run, ["h1", "h2", "h3"])
    assert run.result("Ping", "h1").res["ping"] == "pong"
    expected_gpus = {"h1": "2xA100-SXM4-40GB", "h2": "1xH100-SXM5-80GB", "h3": "none"}
    for name in lab.names:
        host = lab.host(name)
        # the file landed in this host's own directory, written with this host's hostvars
        assert (host.hostdir / "smoke.txt").read_text() == f"{name} {expected_gpus[name]}\n"
        # the session ran under this host's sshd: its SetEnv marker and its listen address
        marker, connection = run.result("Identify host", name).res["stdout_lines"]
        assert marker == str(host.hostdir)
        assert connection.split()[2:] == [host.address, str(host.port)]
        assert (host.hostdir / ".ansible" / "tmp").is_dir()  # remote_tmp: ~ is the host dir
    assert run.stats["ok"] == {"h1": 3, "h2": 3, "h3": 3}


def test_stop_host_makes_only_that_host_unreachable(ssh_lab: MakeLab) -> None:
    lab = ssh_lab(["h1", "h2", "h3"])
    lab.stop_host("h2")
    assert not lab.is_running("h2")
    assert lab.is_running("h1") and lab.is_running("h3")

    run = lab.run_playbook("ping.yml")

    assert run.status == "failed" and run.rc != 0
    assert run.hosts("Ping", "unreachable") == {"h2"}
    assert run.results("Write marker into host root", "h2") == []  # h2 left the play
    _assert_all_ok(run, ["h1", "h3"])  # the play went on for the others
    assert run.stats["dark"] == {"h2": 1}
    assert not (lab.hostdir("h2") / "smoke.txt").exists()

    lab.start_host("h2")
    rerun = lab.run_playbook("ping.yml", limit="h2")
    assert (rerun.rc, rerun.status) == (0, "successful"), rerun.stdout
    _assert_all_ok(rerun, ["h2"])


def test_drop_connections_keeps_listener(ssh_lab: MakeLab) -> None:
    lab = ssh_lab(["h1", "h2"])
    h1 = subprocess.Popen(lab.ssh_argv("h1", "sleep", "300"), stdin=subprocess.DEVNULL)
    h2 = subprocess.Popen(lab.ssh_argv("h2", "sleep", "300"), stdin=subprocess.DEVNULL)
    try:
        listener = lab.host("h1").proc
        assert listener is not None
        deadline = time.monotonic() + 10
        while not _children(listener.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _children(listener.pid), "h1's ssh session never showed up"

        lab.drop_connections("h1")

        assert _wait_exit(h1) == 255  # the client saw its connection drop
        assert h2.poll() is None  # h2's connection is untouched
        assert lab.is_running("h1") and listener.poll() is None
        fresh = subprocess.run(
            lab.ssh_argv("h1", "echo", "back"), capture_output=True, timeout=20, check=False
        )
        assert fresh.stdout == b"back\n", fresh.stderr
    finally:
        for client in (h1, h2):
            client.kill()
            client.wait()


def test_teardown_leaves_no_process(tmp_path: Path) -> None:
    with SshLab(["h1", "h2"], tmp_path / "lab") as lab:
        labdir = str(lab.labdir)
        run = lab.run_playbook("ping.yml")  # leaves ControlPersist masters behind
        assert run.rc == 0, run.stdout
        listeners = {lab.host(n).proc.pid for n in lab.names}  # type: ignore[union-attr]
        # a session that is still open, and a daemon that left its session (like an async job)
        session = subprocess.Popen(lab.ssh_argv("h1", "sleep", "300"), stdin=subprocess.DEVNULL)
        pidfile = lab.hostdir("h2") / "daemon.pid"
        subprocess.run(
            lab.ssh_argv(
                "h2", f"setsid sh -c 'sleep 300 & echo $! > {pidfile}' </dev/null >/dev/null 2>&1"
            ),
            check=True,
            timeout=20,
        )
        daemon = int(pidfile.read_text())
        masters = _pids_mentioning(str(lab.control_dir))
        sessions = set().union(*(_children(pid) for pid in listeners))
        sessions |= set().union(*(_children(pid) for pid in sessions))  # their commands
        assert _alive(daemon) and masters and sessions and all(map(_alive, listeners))
    try:
        assert _wait_exit(session) == 255
        survivors = {pid for pid in listeners | masters | sessions | {daemon} if _alive(pid)}
        assert not survivors, f"lab processes survived teardown: {sorted(survivors)}"
        assert not _pids_mentioning(labdir), "a process still names the lab directory"
    finally:
        if session.poll() is None:
            session.send_signal(signal.SIGKILL)
            session.wait()


def test_inventory_for_paramiko(ssh_lab: MakeLab, tmp_path: Path) -> None:
    lab = ssh_lab([HostSpec("h1", {"ansible_user": "root", "extra": [1, 2]})])
    path = lab.write_inventory(tmp_path / "inv" / "paramiko.yml", connection="paramiko")
    hosts = yaml.safe_load(path.read_text())["all"]["children"]["lab"]["hosts"]
    h1 = hosts["h1"]
    assert h1["ansible_connection"] == "paramiko"
    assert h1["ansible_host_key_checking"] is False
    assert h1["ansible_ssh_common_args"] == SSH_OPTIONS
    assert h1["extra"] == [1, 2]
    assert lab.inventory == path.resolve()


@pytest.mark.compat
def test_paramiko_connection_runs_playbook(ssh_lab: MakeLab) -> None:
    """The compat cell (ansible-core 2.19 on Python 3.11) still has the paramiko connection."""
    pytest.importorskip("ansible.plugins.connection.paramiko_ssh")  # gone in ansible-core 2.21
    pytest.importorskip("paramiko")
    lab = ssh_lab(["h1", "h2"])
    lab.write_inventory(connection="paramiko")
    run = lab.run_playbook("ping.yml")
    assert (run.rc, run.status) == (0, "successful"), run.stdout
    _assert_all_ok(run, ["h1", "h2"])
