"""Shared test helpers: the multi-host SSH lab (real sshd hosts on loopback addresses).

Example (more in tests/integration/test_lab_smoke.py)::

    with SshLab([HostSpec("h1", {"heteromig_gpu_backend": "sim"}), "h2"], tmp_path) as lab:
        run = lab.run_playbook("ping.yml")
        assert run.outcome("Ping", "h1") == "ok"

In tests use the ``ssh_lab`` fixture factory of tests/integration/conftest.py instead.
"""

from lab.runner import LabRun, TaskResult
from lab.sshlab import HostSpec, LabError, LabHost, MakeLab, SshLab, all_labs, leftover_processes

__all__ = [
    "HostSpec",
    "LabError",
    "LabHost",
    "LabRun",
    "MakeLab",
    "SshLab",
    "TaskResult",
    "all_labs",
    "leftover_processes",
]
