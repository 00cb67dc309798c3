"""Multi-host SSH test lab: N real OpenSSH sshd "hosts" on loopback addresses of this machine.

Every host is one ``sshd -D`` child listening on ``127.0.<labnum>.<n>:<port>`` with its own host
key, config and working directory ``<labdir>/<name>/`` (the host's "disk": ``heteromig_host_root``,
state files, sshd.log). All hosts accept the lab's client key for root, key only. Sessions run
with HOME set to the host dir (the shell's ``~``; Ansible's remote_tmp/async_dir are set to it
through host variables, as Ansible expands ``~`` there from the passwd entry).

Traffic never leaves loopback. Teardown (``close``, the context manager, an atexit hook) kills
every process the lab started: sshd listeners, per-connection sshd processes, session commands
(also daemonized ones, found by the ``HETEROMIG_LAB_HOST`` environment marker), and the ssh
ControlMaster processes of playbook runs.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Protocol

import yaml

from lab import procs
from lab.procs import Endpoint
from lab.runner import LabRun, run_playbook

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"

HOST_MARKER = "HETEROMIG_LAB_HOST"  # set by sshd (SetEnv) in every session of a lab host
LAB_MARKER = "HETEROMIG_LAB_DIR"  # set by run_playbook in every controller-side process
LOCK_DIR = Path(tempfile.gettempdir()) / "heteromig-lab-locks"
SSH_OPTIONS = (
    "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null"
    " -o IdentitiesOnly=yes -o LogLevel=ERROR"
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9_./+@%,:=-]+$")
_LAB_SEQ = itertools.count()
_ALL_LABS: list[SshLab] = []  # every lab this process created, for leftover_processes()
# Address blocks (127.0.<labnum>.0/24) this process has locked: a closed lab's block stays locked
# until the process ends, so that a lab of another pytest process (an xdist worker) never takes
# it and mistakes this process's later check of the closed lab for its own sshd processes
# (matched by address). Only this process's labs reuse it, one at a time.
_HELD_LABNUMS: dict[int, IO[bytes]] = {}
_LABNUMS_IN_USE: set[int] = set()


class LabError(RuntimeError):
    """The lab could not start, or could not clean up after itself."""


@dataclass(frozen=True)
class HostSpec:
    """A lab host: its inventory name and extra inventory variables."""

    name: str
    hostvars: Mapping[str, Any] = field(default_factory=dict)
    # environment of every session of the host (sshd SetEnv), e.g. {"TZ": "Asia/Tokyo"}
    env: Mapping[str, str] = field(default_factory=dict)


class MakeLab(Protocol):
    """The ``ssh_lab`` fixture (tests/integration/conftest.py): a factory of started labs."""

    def __call__(
        self, hosts: Sequence[HostSpec | str], *, port: int = 22, start_timeout: float = 10.0
    ) -> SshLab: ...


@dataclass
class LabHost:
    """A started (or stopped) lab host."""

    spec: HostSpec
    address: str
    port: int
    hostdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def endpoint(self) -> Endpoint:
        return (self.address, self.port)

    @property
    def sshd_dir(self) -> Path:
        return self.hostdir / ".sshd"

    @property
    def log_path(self) -> Path:
        return self.hostdir / "sshd.log"

    @property
    def marker(self) -> bytes:
        return f"{HOST_MARKER}={self.hostdir}".encode()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def listener_pid(self) -> int | None:
        """The sshd listener's pid while it runs (a reaped child's pid may belong to anyone)."""
        return self.proc.pid if self.running and self.proc is not None else None


class SshLab:
    """N sshd hosts on 127.0.<labnum>.<1..N>; use as a context manager (or call close()).

    ``basedir`` is the lab directory (created if missing, kept after close); without it a
    temporary directory is made and removed by close().
    """

    def __init__(
        self,
        hosts: Sequence[HostSpec | str],
        basedir: Path | str | None = None,
        *,
        port: int = 22,
        start_timeout: float = 10.0,
    ) -> None:
        specs = [h if isinstance(h, HostSpec) else HostSpec(h) for h in hosts]
        names = [s.name for s in specs]
        if not specs or len(specs) > 254:
            raise LabError(f"a lab needs 1..254 hosts, got {len(specs)}")
        if len(set(names)) != len(names) or not all(_NAME_RE.match(n) for n in names):
            raise LabError(f"host names must be unique and [A-Za-z0-9_.-]: {names}")
        self._own_dir = basedir is None
        self.labdir = (
            Path(tempfile.mkdtemp(prefix="hmlab-")) if basedir is None else Path(basedir)
        ).resolve()
        if not _SAFE_PATH_RE.match(str(self.labdir)):
            raise LabError(f"lab directory must not need quoting in sshd_config: {self.labdir}")
        self.port = port
        self.start_timeout = start_timeout
        self.labnum = 0
        self.hosts: dict[str, LabHost] = {}
        self.inventory: Path | None = None
        self._specs = specs
        self._holds_labnum = False
        self._runs = itertools.count(1)
        self._closed = False
        self._sshd = _find_program("sshd")
        self.client_key = self.labdir / "client_key"
        self.authorized_keys = self.labdir / "authorized_keys"
        # ssh's ControlPath must fit in a unix socket path (108 bytes incl. ssh's temp suffix)
        self.control_dir = self.labdir / "cp"
        self._own_control_dir = len(str(self.control_dir)) > 70
        if self._own_control_dir:
            self.control_dir = Path(tempfile.mkdtemp(prefix="hmcp-"))
        _ALL_LABS.append(self)
        atexit.register(self._atexit)
        try:
            self._setup()
        except BaseException:
            self.close(check=False)
            raise

    # ----------------------------------------------------------------- context manager / close

    def __enter__(self) -> SshLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # a failing test's own exception wins over a cleanup complaint
        self.close(check=exc_type is None)

    def close(self, check: bool = True) -> None:
        """Kill everything the lab started. With ``check``, raise LabError if anything survived."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._atexit)
        left = procs.kill_tree(self._lab_pids)
        for host in self.hosts.values():
            _reap(host)
        if self._holds_labnum:
            _LABNUMS_IN_USE.discard(self.labnum)  # the lock stays held: see _HELD_LABNUMS
            self._holds_labnum = False
        if self._own_control_dir:
            shutil.rmtree(self.control_dir, ignore_errors=True)
        if self._own_dir:
            shutil.rmtree(self.labdir, ignore_errors=True)
        if left and check:
            raise LabError("lab processes survived teardown:\n" + "\n".join(procs.describe(left)))

    def _atexit(self) -> None:
        self.close(check=False)

    # ----------------------------------------------------------------------------- accessors

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def names(self) -> list[str]:
        return list(self.hosts)

    def host(self, name: str) -> LabHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no lab host {name!r}; hosts: {self.names}") from None

    def hostdir(self, name: str) -> Path:
        return self.host(name).hostdir

    def is_running(self, name: str) -> bool:
        return self.host(name).running

    def ssh_argv(self, name: str, *command: str) -> list[str]:
        """An ``ssh`` command line that runs ``command`` on lab host ``name`` (no multiplexing)."""
        host = self.host(name)
        return [
            "ssh",
            *SSH_OPTIONS.split(),
            "-o",
            "BatchMode=yes",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-i",
            str(self.client_key),
            "-p",
            str(host.port),
            f"root@{host.address}",
            *command,
        ]

    # ----------------------------------------------------------------------------- inventory

    def host_vars(
        self, name: str, connection: Literal["ssh", "paramiko"] = "ssh"
    ) -> dict[str, Any]:
        """The inventory variables of host ``name`` (lab defaults, then the spec's hostvars)."""
        host = self.host(name)
        hostvars: dict[str, Any] = {
            "ansible_host": host.address,
            "ansible_port": host.port,
            "ansible_user": "root",
            "ansible_connection": connection,
            "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_ssh_common_args": SSH_OPTIONS,
            "ansible_host_key_checking": False,
            "ansible_python_interpreter": sys.executable,
            # Ansible expands ~ in these as ~root (passwd, not $HOME): point them at the host dir
            "ansible_remote_tmp": str(host.hostdir / ".ansible" / "tmp"),
            "ansible_async_dir": str(host.hostdir / ".ansible_async"),
            "heteromig_host_root": str(host.hostdir),
            "heteromig_sim_state": str(host.hostdir / "nvml-sim.json"),
        }
        hostvars.update(host.spec.hostvars)
        return hostvars

    def write_inventory(
        self,
        path: Path | str | None = None,
        *,
        connection: Literal["ssh", "paramiko"] = "ssh",
    ) -> Path:
        """Write a YAML inventory (group ``lab``) and make it run_playbook's default."""
        if connection not in ("ssh", "paramiko"):
            raise LabError(f"connection must be 'ssh' or 'paramiko', not {connection!r}")
        target = Path(path) if path is not None else self.labdir / "inventory.yml"
        data = {
            "all": {
                "children": {
                    "lab": {
                        "hosts": {name: self.host_vars(name, connection) for name in self.hosts}
                    }
                }
            }
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(data, sort_keys=False))
        self.inventory = target.resolve()
        return self.inventory

    # -------------------------------------------------------------------------------- running

    def run_playbook(
        self,
        playbook: Path | str,
        extravars: Mapping[str, Any] | None = None,
        limit: str | None = None,
        envvars: Mapping[str, str] | None = None,
        timeout: int = 240,
        *,
        inventory: Path | str | None = None,
    ) -> LabRun:
        """Run ``playbook`` against the lab through ansible-runner; see lab.runner.run_playbook.

        A relative ``playbook`` is looked up in tests/lab/playbooks/, then in the repo root.
        """
        path = Path(playbook)
        if not path.is_absolute():
            path = PLAYBOOKS / path if (PLAYBOOKS / path).exists() else REPO_ROOT / path
        if inventory is None:
            inventory = self.inventory or self.write_inventory()
        rundir = self.labdir / "runs" / f"{next(self._runs):03d}-{path.stem}"
        env = {
            LAB_MARKER: str(self.labdir),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(self.labdir / "tmp"),
            "ANSIBLE_PARAMIKO_LOOK_FOR_KEYS": "False",
            **(envvars or {}),
        }
        return run_playbook(
            path,
            inventory=Path(inventory),
            private_data_dir=rundir,
            extravars=extravars,
            limit=limit,
            envvars=env,
            timeout=timeout,
        )

    # --------------------------------------------------------------------------------- faults

    def stop_host(self, name: str) -> None:
        """Take host ``name`` down: its sshd, its connections and everything its sessions started.

        Client-side ssh processes (ControlMasters) connected to it die too. Afterwards a
        connection to the host is refused: Ansible reports it UNREACHABLE.
        """
        host = self.host(name)
        left = procs.kill_tree(lambda: self._host_pids(host))
        _reap(host)
        if left:
            raise LabError(
                f"{name}: processes survived stop_host:\n" + "\n".join(procs.describe(left))
            )

    def start_host(self, name: str) -> None:
        """(Re)start host ``name`` with the same address, port, keys and directory."""
        host = self.host(name)
        if host.running:
            return
        if not self._start_sshd(host):
            raise LabError(f"{name}: sshd did not come back:\n{_tail(host.log_path)}")

    def reboot_host(self, name: str, while_down: Callable[[], None] | None = None) -> None:
        """Simulate a reboot of host ``name``: everything on it dies, then it boots again.

        Every process of the host (sshd, sessions, and what they started, detached or not) is
        SIGKILLed at once, as a power cycle would, and its connections drop; ``while_down`` runs
        then (e.g. reset the host's simulated GPUs, gpu_sim_reboot's backend call); the host's
        directory (its disk) stays. The sshd comes back in a new time namespace whose boot time
        is now, so sessions read a fresh uptime from /proc/uptime and /proc/stat as on a host
        that just booted (the machine's boot_id cannot be faked and stays).
        """
        self.stop_host(name)
        if while_down is not None:
            while_down()
        host = self.host(name)
        if not self._start_sshd(host, booting=True):
            raise LabError(f"{name}: sshd did not come back:\n{_tail(host.log_path)}")

    def cut_off(self, name: str) -> None:
        """Cut host ``name`` off the network: its listener and connections die, its sessions'
        commands (a detached runner, benchmarks) keep running; new connections are refused
        until ``start_host``. Unlike stop_host, nothing on the host itself stops.
        """
        host = self.host(name)
        listener = host.listener_pid
        left = procs.kill_tree(
            lambda: (
                self._connection_pids({host.endpoint}, procs.snapshot())
                | ({listener} if listener is not None else set())
            )
        )
        _reap(host)
        if left:
            raise LabError(f"{name}: connections survived:\n" + "\n".join(procs.describe(left)))

    def drop_connections(self, name: str) -> None:
        """Kill every established ssh connection of host ``name``; its listener stays up.

        Kills the per-connection sshd processes, and the lab's ssh clients/ControlMasters at the
        other end (other clients see their connection close). Commands the sessions started keep
        running, as on a real network drop.
        """
        host = self.host(name)
        listener = host.listener_pid or -1

        def select() -> set[int]:
            return self._connection_pids({host.endpoint}, procs.snapshot()) - {listener}

        left = procs.kill_tree(select)
        if left:
            raise LabError(f"{name}: connections survived:\n" + "\n".join(procs.describe(left)))

    # --------------------------------------------------------------------- process selection

    def _connection_pids(self, endpoints: set[Endpoint], table: dict[int, procs.Proc]) -> set[int]:
        """sshd processes serving ``endpoints`` (listener included) and the lab's ssh clients
        (ControlMasters, clients of playbook runs) connected to them; not other clients."""
        found = set()
        lab_marker = f"{LAB_MARKER}={self.labdir}".encode()
        for pid in procs.socket_holders(endpoints, table):
            comm = table[pid].comm
            if comm == "sshd" or (
                comm == "ssh"
                and (
                    f"{self.control_dir}/" in procs.cmdline(pid) or lab_marker in procs.environ(pid)
                )
            ):
                found.add(pid)
        return found

    def _host_pids(self, host: LabHost) -> set[int]:
        table = procs.snapshot()
        roots = self._connection_pids({host.endpoint}, table)
        roots |= {pid for pid in table if host.marker in procs.environ(pid)}
        if host.listener_pid is not None:
            roots.add(host.listener_pid)
        return procs.descendants(roots, table)

    def _lab_pids(self) -> set[int]:
        """Every live process this lab started (hosts, sessions, runs, ControlMasters)."""
        table = procs.snapshot()
        endpoints = {h.endpoint for h in self.hosts.values()}
        markers = {h.marker for h in self.hosts.values()}
        markers.add(f"{LAB_MARKER}={self.labdir}".encode())
        roots = self._connection_pids(endpoints, table) if endpoints else set()
        roots |= {h.listener_pid for h in self.hosts.values() if h.listener_pid is not None}
        # a listener names its sshd_config, a ControlMaster its control socket
        names = {"sshd": f"{self.labdir}/", "ssh": f"{self.control_dir}/"}
        for pid, proc in table.items():
            named = proc.comm in names and names[proc.comm] in procs.cmdline(pid)
            if named or markers & procs.environ(pid):
                roots.add(pid)
        return procs.descendants(roots, table)

    # ----------------------------------------------------------------------------------- setup

    def _setup(self) -> None:
        self.labdir.mkdir(parents=True, exist_ok=True)
        self.control_dir.mkdir(parents=True, exist_ok=True)
        (self.labdir / "tmp").mkdir(exist_ok=True)
        _keygen(self.client_key, "heteromig-lab-client")
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        # Debian's sshd refuses to start without its privilege separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for spec in self._specs:
            hostdir = self.labdir / spec.name
            (hostdir / ".sshd").mkdir(parents=True, exist_ok=True)
            _keygen(hostdir / ".sshd" / "ssh_host_ed25519_key", f"heteromig-lab-{spec.name}")
        for labnum in sorted(set(_HELD_LABNUMS) - _LABNUMS_IN_USE):
            if self._try_labnum(labnum):
                return
        first = (os.getpid() * 7 + next(_LAB_SEQ)) % 250
        for attempt in range(32):
            labnum = 2 + (first + attempt) % 250  # 127.0.0.x and 127.0.1.1 are often taken
            if self._try_labnum(labnum):
                return
        raise LabError(f"no free 127.0.<labnum>.0/24 with port {self.port} after 32 tries")

    def _try_labnum(self, labnum: int) -> bool:
        if labnum in _LABNUMS_IN_USE:
            return False
        if labnum not in _HELD_LABNUMS:
            LOCK_DIR.mkdir(exist_ok=True)
            lock = (LOCK_DIR / f"{labnum}.lock").open("wb")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                return False
            _HELD_LABNUMS[labnum] = lock
        hosts = {
            spec.name: LabHost(spec, f"127.0.{labnum}.{n}", self.port, self.labdir / spec.name)
            for n, spec in enumerate(self._specs, start=1)
        }
        if not all(_bindable(h.endpoint) for h in hosts.values()):
            return False
        self.labnum, self.hosts, self._holds_labnum = labnum, hosts, True
        _LABNUMS_IN_USE.add(labnum)
        for host in hosts.values():
            self._write_sshd_config(host)
            if not self._start_sshd(host):
                # lost a race for the address (or sshd failed): undo this attempt
                procs.kill_tree(self._lab_pids)
                for h in hosts.values():
                    _reap(h)
                log = _tail(host.log_path)
                self.hosts, self._holds_labnum = {}, False
                _LABNUMS_IN_USE.discard(labnum)
                if "Address already in use" in log or "Cannot bind" in log:
                    return False
                raise LabError(f"{host.name}: sshd failed to start:\n{log}")
        return True

    def _write_sshd_config(self, host: LabHost) -> None:
        config = f"""\
# generated by tests/lab (heteromig.fleet SSH lab)
ListenAddress {host.address}:{host.port}
HostKey {host.sshd_dir}/ssh_host_ed25519_key
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AuthorizedKeysFile {self.authorized_keys}
UseDNS no
PrintMotd no
MaxStartups 100
MaxSessions 100
LogLevel VERBOSE
Subsystem sftp internal-sftp
# HOME: the host dir, so that session shells never source root's real ~/.bashrc (here: pyenv init
# + rehash, which takes a machine-wide lock that a killed session leaves behind)
SetEnv HOME={host.hostdir} {HOST_MARKER}={host.hostdir}{_setenv(host.spec.env)}
"""
        (host.sshd_dir / "sshd_config").write_text(config)

    def _start_sshd(self, host: LabHost, booting: bool = False) -> bool:
        """Start host's sshd and wait until it listens; False if it exited instead.

        ``booting``: in a new time namespace whose CLOCK_BOOTTIME starts now, so that its
        sessions see a host that just booted (/proc/uptime, btime in /proc/stat).
        """
        offset = host.log_path.stat().st_size if host.log_path.exists() else 0
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", HOST_MARKER: str(host.hostdir)}
        with host.log_path.open("ab") as log:
            argv = [self._sshd, "-D", "-e", "-f", str(host.sshd_dir / "sshd_config")]
            if booting:
                argv = [sys.executable, "-c", _BOOT_NOW, *argv]
            host.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        listening = f"Server listening on {host.address} port {host.port}"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if host.proc.poll() is not None:
                return False
            if listening in _read_from(host.log_path, offset) and _connectable(host.endpoint):
                return True
            time.sleep(0.02)
        raise LabError(f"{host.name}: sshd not listening after {self.start_timeout}s")


def all_labs() -> list[SshLab]:
    """Every lab this process created (open or closed)."""
    return list(_ALL_LABS)


def leftover_processes(labs: Iterable[SshLab] | None = None) -> list[str]:
    """Descriptions of live processes of closed labs (all labs of this process by default)."""
    pids: set[int] = set()
    for lab in _ALL_LABS if labs is None else labs:
        if lab.closed:
            pids |= lab._lab_pids() - procs.protected()
    return procs.describe(pids)


# ------------------------------------------------------------------------------------ helpers


def _setenv(env: Mapping[str, str]) -> str:
    for key, value in env.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key) or not _SAFE_PATH_RE.match(value):
            raise LabError(f"host env must be NAME=value without quoting: {key}={value!r}")
    return "".join(f" {key}={value}" for key, value in env.items())


# exec argv[1:] in a new time namespace whose CLOCK_BOOTTIME is about 0 (exec enters it); a
# wrapper, not a preexec_fn: tests start hosts while playbook threads run
_BOOT_NOW = """\
import os, sys
os.unshare(os.CLONE_NEWTIME)
with open("/proc/uptime") as f:
    uptime_ns = int(float(f.read().split()[0]) * 1e9)
secs, nsecs = divmod(-uptime_ns, 1_000_000_000)
with open("/proc/self/timens_offsets", "w") as f:
    f.write("boottime %d %d" % (secs, nsecs))
os.execv(sys.argv[1], sys.argv[1:])
"""


def _find_program(name: str) -> str:
    path = shutil.which(name, path=f"/usr/sbin:/usr/local/sbin:/sbin:{os.environ.get('PATH', '')}")
    if path is None:
        raise LabError(f"{name} not found (is openssh-server installed?)")
    return path


def _keygen(path: Path, comment: str) -> None:
    if path.exists():
        return
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _bindable(endpoint: Endpoint) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(endpoint)
        except OSError:
            return False
    return True


def _connectable(endpoint: Endpoint) -> bool:
    try:
        with socket.create_connection(endpoint, timeout=0.5):
            return True
    except OSError:
        return False


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(_read_from(path, 0).splitlines()[-lines:])


def _reap(host: LabHost) -> None:
    if host.proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            host.proc.wait(timeout=5)
        host.proc = None
