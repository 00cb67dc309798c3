"""How the controller reaches the host agent's commands (plugin_utils/_agent_transport.py).

The shell command is run by a real /bin/sh against a stand-in interpreter that reports what it
got; the answers are parsed from what a real agent, a cut connection and a host without the
runtime print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure

from ansible_collections.heteromig.fleet.plugins.plugin_utils._agent_transport import (
    AGENT_COMMANDS,
    AgentCalls,
    _garbled,
    agent_command,
    parse_answer,
)

ROOT = Path(__file__).resolve().parents[2]

REPORTER = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/argv"
printf '%s' "$PYTHONPATH" > "$(dirname "$0")/pythonpath"
printf '%s' "$HM_TASK_ENV" > "$(dirname "$0")/task_env"
cat > "$(dirname "$0")/stdin"
"""


def test_the_command_runs_the_agent_with_the_runtime_first_on_pythonpath(tmp_path: Path) -> None:
    odd = tmp_path / "py thon's $HOME"
    odd.mkdir()
    python = odd / "python"
    python.write_text(REPORTER)
    python.chmod(0o755)
    runtime = "/var/lib/heteromig/lib with space/$(id)"
    command = agent_command("HM_TASK_ENV='from the task'", str(python), runtime)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": "/already/there"}
    done = subprocess.run(
        ["/bin/sh", "-c", command], input=b'{"args": {}}', env=env, check=True, timeout=30
    )
    assert done.returncode == 0
    assert (odd / "argv").read_text().splitlines() == ["-m", AGENT_COMMANDS]
    assert (odd / "pythonpath").read_text() == runtime + ":/already/there"
    assert (odd / "task_env").read_text() == "from the task"
    assert (odd / "stdin").read_text() == '{"args": {}}'
    env.pop("PYTHONPATH")
    subprocess.run(["/bin/sh", "-c", command], input=b"", env=env, check=True, timeout=30)
    assert (odd / "pythonpath").read_text() == runtime  # no stray ':' when the host has none


def real_agent(request: str, pythonpath: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    return subprocess.run(
        [sys.executable, "-m", AGENT_COMMANDS],
        input=request,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_real_agent_answer_is_parsed_failed_or_not(tmp_path: Path) -> None:
    request = json.dumps(
        {"args": {"command": "status", "host_root": str(tmp_path), "run_id": "r1"}}
    )
    done = real_agent(request, str(ROOT / "collections"))
    res = parse_answer(done.returncode, done.stdout, done.stderr, "/x")
    assert res == {
        "failed": True,
        "msg": "no hetero run 'r1' on this host (looked in %s/runs)" % tmp_path,
        "run_id": "r1",
    }


def test_a_host_without_the_runtime_is_told_so(tmp_path: Path) -> None:
    done = real_agent("{}", str(tmp_path))  # python finds no ansible_collections there
    res = parse_answer(done.returncode, done.stdout, done.stderr, str(tmp_path))
    assert res["failed"] is True
    assert res["msg"].startswith("the heteromig host runtime is not installed on this host")
    assert "heteromig.fleet.host_runtime" in res["msg"] and str(tmp_path) in res["msg"]


def test_a_missing_interpreter_is_a_failed_answer_naming_it() -> None:
    done = subprocess.run(
        ["/bin/sh", "-c", agent_command("", "/nonexistent/python3", "/lib")],
        input="{}",
        capture_output=True,
        text=True,
        check=False,
    )
    res = parse_answer(done.returncode, done.stdout, done.stderr, "/lib")
    assert res["failed"] is True and done.returncode == 127
    assert res["msg"].startswith("the heteromig agent did not answer (exit 127)")
    assert "/nonexistent/python3" in res["msg"]


@pytest.mark.parametrize(
    ("rc", "stdout"),
    [
        (255, ""),  # ssh's own failure
        (-1, '{"changed": false, "status": {"pha'),  # the connection died mid-answer
        (0, "Traceback (most recent call last):"),
    ],
)
def test_an_answer_that_did_not_arrive_whole_is_a_connection_failure(rc: int, stdout: str) -> None:
    with pytest.raises(AnsibleConnectionFailure, match="did not arrive whole"):
        parse_answer(rc, stdout, "kex_exchange_identification: read: Connection reset", "/lib")


@pytest.mark.parametrize("rc", [-9, 0, 1])
def test_no_answer_and_no_word_from_the_host_is_a_connection_failure(rc: int) -> None:
    # the SSH lab's dropped connection: the session killed under the command (exit -9), with
    # nothing on stdout or stderr
    with pytest.raises(
        AnsibleConnectionFailure, match=r"did not arrive whole \(exit %d\): no output" % rc
    ):
        parse_answer(rc, "", "", "/lib")


@pytest.mark.parametrize(
    ("res", "garbled"),
    [
        (
            {
                "failed": True,
                "msg": "Module result deserialization failed: No start of json char found",
            },
            True,
        ),
        ({"failed": True, "msg": "MODULE FAILURE\nSee stdout/stderr"}, True),
        ({"failed": True, "msg": "x", "module_stdout": ""}, True),
        ({"failed": True, "msg": "no hetero run 'r9' on this host"}, False),
    ],
)
def test_garbled_module_answers_are_transient(res: dict[str, Any], garbled: bool) -> None:
    assert _garbled(res) is garbled


class Become:
    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining


class Connection:
    def __init__(self, has_pipelining: bool, become: Any = None, enabled: bool = False) -> None:
        self.has_pipelining = has_pipelining
        self.become = become
        self.enabled = enabled

    def is_pipelining_enabled(self, wrap_async: bool = False) -> bool:
        return self.enabled


class Templar:
    def template(self, value: Any) -> Any:
        return value


class Action(AgentCalls):
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._templar = Templar()


@pytest.mark.parametrize(
    ("connection", "asked", "chosen"),
    [
        (Connection(True), None, "direct"),  # ssh or local, no become
        (Connection(False), None, "module"),  # a connection that cannot feed stdin
        (Connection(True, Become(True), enabled=True), None, "direct"),
        (Connection(True, Become(True), enabled=False), None, "module"),  # sudo requiretty?
        (Connection(True, Become(False)), None, "module"),  # su
        (Connection(True), "module", "module"),
        (Connection(False), "direct", "direct"),  # asked for: the user knows
    ],
)
def test_the_transport_follows_the_connection_and_the_variable(
    connection: Connection, asked: str | None, chosen: str
) -> None:
    task_vars = {"heteromig_agent_transport": asked} if asked else {}
    assert Action(connection)._agent_transport(task_vars) == chosen


def test_an_unknown_transport_is_refused_by_name() -> None:
    with pytest.raises(
        AnsibleActionFail,
        match=r"heteromig_agent_transport must be one of auto, direct, module, got 'ssh'",
    ):
        Action(Connection(True))._agent_transport({"heteromig_agent_transport": "ssh"})
