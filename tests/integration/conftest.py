"""Integration fixtures: the multi-host SSH lab (tests/lab)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from lab import HostSpec, MakeLab, SshLab, all_labs, leftover_processes


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml declares it too; registering twice is harmless
    config.addinivalue_line("markers", "integration: needs real processes/hosts (sshd, playbooks)")


@pytest.fixture
def ssh_lab(tmp_path: Path) -> Iterator[MakeLab]:
    """Factory: ``ssh_lab(hosts, **kwargs) -> SshLab`` (started); every lab closes at test end.

    ``hosts``: HostSpec objects or plain names; kwargs go to SshLab (port, start_timeout).
    Teardown raises (test error) if a lab process survives it.
    """
    labs: list[SshLab] = []

    def make(
        hosts: Sequence[HostSpec | str], *, port: int = 22, start_timeout: float = 10.0
    ) -> SshLab:
        lab = SshLab(hosts, tmp_path / f"lab{len(labs)}", port=port, start_timeout=start_timeout)
        labs.append(lab)
        return lab

    yield make
    errors = []
    for lab in reversed(labs):
        try:
            lab.close()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session", autouse=True)
def _no_lab_process_survives() -> Iterator[None]:
    """After the session: no sshd/ssh/session process of any lab of this run may be alive."""
    yield
    unclosed = [lab for lab in all_labs() if not lab.closed]
    for lab in unclosed:
        lab.close(check=False)
    left = leftover_processes()
    assert not unclosed, (
        f"SSH labs never closed by their tests: {[str(x.labdir) for x in unclosed]}"
    )
    assert not left, "SSH lab processes survived their lab's teardown:\n" + "\n".join(left)
