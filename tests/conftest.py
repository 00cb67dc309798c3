"""Repo-wide pytest setup: import paths, and no temporary files left behind.

Markers (integration, slow, compat) and the default timeout are declared in pyproject.toml
[tool.pytest.ini_options]; keep fixtures in the test packages themselves. The one exception is
``_no_temporary_files_left``: a check over the whole session, like the lab's
``_no_lab_process_survives`` in tests/integration/conftest.py.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# `import lab` -> tests/lab/ (shared test helpers).
# `import ansible_collections.heteromig.fleet...` -> collections/ansible_collections/heteromig/fleet,
# the link to the repo root that scripts/bootstrap makes (ansible.cfg's collections_path).
for path in (TESTS, ROOT / "collections"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


# ------------------------------------------------------------------ temporary files left behind
# Entries of /tmp (and of $TMPDIR, when it is elsewhere) that may appear during a session and stay:
# name pattern -> why it is not a leak.
KEPT_ON_PURPOSE = {
    # tests/lab/sshlab.py: flock files that number the labs of concurrent sessions; removing the
    # directory while another session holds a lock in it would let two labs share a number
    "heteromig-lab-locks": "the SSH lab's cross-session lock directory",
}
# Known leaks being fixed elsewhere: (test file, name pattern) -> the issue. They are listed in
# the report but do not fail the session; remove an entry once its fix has landed.
KNOWN_LEAKS: dict[tuple[str, str], str] = {}


def _temp_dirs() -> list[Path]:
    dirs = [Path("/tmp")]
    current = Path(tempfile.gettempdir())
    if current.resolve() != dirs[0].resolve():
        dirs.append(current)
    return dirs


def _listing(dirs: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for directory in dirs:
        try:
            found.update(directory / name for name in os.listdir(directory))
        except OSError:
            continue
    return found


class _TempWatch:
    """What appeared in the temporary directories during which test (first seen wins)."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []
        self.before: set[Path] | None = None
        self.created_by: dict[Path, str] = {}
        self.current: tuple[str, set[Path]] | None = None
        self.leaks: list[str] = []
        self.known: list[str] = []

    def start(self) -> None:
        self.dirs = _temp_dirs()
        self.before = _listing(self.dirs)

    def attribute(self, before: set[Path], nodeid: str) -> None:
        for entry in _listing(self.dirs) - before:
            self.created_by.setdefault(entry, nodeid)


_WATCH = _TempWatch()


def pytest_sessionstart(session: pytest.Session) -> None:
    _WATCH.start()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    before = _listing(_WATCH.dirs)
    _WATCH.current = (item.nodeid, before)  # the session teardown runs inside the last test's
    try:
        return (yield)
    finally:
        _WATCH.attribute(before, item.nodeid)


def _known_leak(entry: Path, nodeid: str) -> str | None:
    for (test_file, pattern), why in KNOWN_LEAKS.items():
        if nodeid.startswith(test_file + "::") and fnmatch(entry.name, pattern):
            return why
    return None


def leftover_temporary_files(pytest_managed: list[Path]) -> tuple[list[str], list[str]]:
    """(leaks, known leaks): lines naming each new entry still there and the test that made it."""
    assert _WATCH.before is not None, "pytest_sessionstart did not run"
    if _WATCH.current is not None:  # the last test's protocol has not ended yet
        nodeid, before = _WATCH.current
        _WATCH.attribute(before, nodeid)
    leaks: list[str] = []
    known: list[str] = []
    # multiprocessing's own directory of this process (pymp-*), which it removes at exit
    mp_dir = multiprocessing.process.current_process()._config.get("tempdir")
    for entry in sorted(_listing(_WATCH.dirs) - _WATCH.before):
        if entry in pytest_managed or any(fnmatch(entry.name, p) for p in KEPT_ON_PURPOSE):
            continue
        if mp_dir and os.path.realpath(entry) == os.path.realpath(mp_dir):
            continue
        if not os.path.lexists(entry):
            continue  # removed meanwhile
        nodeid = _WATCH.created_by.get(entry, "no test: collection or session setup/teardown")
        why = _known_leak(entry, nodeid)
        line = "%s%s  (created during %s)" % (entry, "/" if entry.is_dir() else "", nodeid)
        (known if why else leaks).append(line + ("  [known: %s]" % why if why else ""))
    return leaks, known


def _strict() -> bool:
    """Fail on leaks in CI (one session on a fresh machine); elsewhere report them.

    On a shared workstation other processes (another pytest session, an editor) create entries
    in /tmp while a session runs, and those cannot be told apart from the tests' own. Set
    HM_TMP_LEAKS=fail or HM_TMP_LEAKS=report to choose.
    """
    choice = os.environ.get("HM_TMP_LEAKS", "").strip().lower()
    if choice in ("fail", "report"):
        return choice == "fail"
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _xdist_controller(config: pytest.Config) -> bool:
    """True in the process that hands tests to pytest-xdist workers (and runs none itself)."""
    return not _xdist_worker(config) and bool(getattr(config.option, "numprocesses", None))


# ------------------------------------------------------------------- scheduling under xdist
# pytest-xdist 3.8's own --dist loadgroup does not group under pytest 9 (it renames item._nodeid,
# which pytest 9 no longer reads), so the grouping is made here, on --dist loadscope: the
# controller asks conftest for its scheduler (pytest_xdist_make_scheduler).
_WIDE_FIXTURE = re.compile(r"""scope\s*=\s*["'](?:module|class|package)["']""")


@functools.cache
def _shares_fixtures(test_file: str) -> bool:
    """Whether a test file defines a fixture that outlives one test (its tests stay together)."""
    try:
        return bool(_WIDE_FIXTURE.search((ROOT / test_file).read_text(encoding="utf-8")))
    except OSError:
        return True


def _work_unit(nodeid: str) -> str:
    """One test file whose fixtures outlive a test is one unit; any other test is its own."""
    test_file = nodeid.split("::", 1)[0]
    return test_file if _shares_fixtures(test_file) else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SpreadScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return SpreadScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: the longest work first (the same order on every worker).

    Integration tests marked slow, other integration tests, unit tests. The controller hands
    the units out in that order as workers become free (run with --no-loadscope-reorder), so
    the sweeps' minutes-long SSH-lab tests do not start last.
    """
    if not _xdist_worker(config):
        return

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("integration") is None:
            return 2
        return 0 if item.get_closest_marker("slow") is not None else 1

    items.sort(key=rank)  # stable: within a rank, collection order


def _pytest_managed(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    basetemp = tmp_path_factory.getbasetemp()
    return [p for p in [basetemp, *basetemp.parents] if p.parent in _WATCH.dirs]


@pytest.fixture(scope="session", autouse=True)
def _no_temporary_files_left(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """After the session: nothing the tests created in /tmp or $TMPDIR may remain.

    pytest's own base temporary directory (``pytest-of-<user>``, which pytest manages and
    prunes) is not counted, nor KEPT_ON_PURPOSE. Known leaks (KNOWN_LEAKS) are listed without
    failing; every other one fails the session in CI and is listed everywhere, with the test
    during which it appeared.

    Under pytest-xdist (``-n``) a worker cannot tell its own entries from those of the workers
    beside it: each worker only records which of its tests saw an entry appear, and the
    controller checks the whole run once every worker has ended (``pytest_sessionfinish``).
    """
    yield
    if _xdist_worker(request.config):
        if _WATCH.current is not None:  # the last test's protocol has not ended yet
            nodeid, before = _WATCH.current
            _WATCH.attribute(before, nodeid)
        request.config.workeroutput["tmp_created_by"] = {  # type: ignore[attr-defined]
            str(path): nodeid for path, nodeid in _WATCH.created_by.items()
        }
        return
    _WATCH.leaks, _WATCH.known = leftover_temporary_files(_pytest_managed(tmp_path_factory))
    if _WATCH.leaks and _strict():
        pytest.fail(
            "tests left temporary files behind (remove them in the test):\n  "
            + "\n  ".join(_WATCH.leaks),
            pytrace=False,
        )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist (controller): a worker ended; keep what its tests saw appear."""
    # Every worker sees the entries its neighbours make appear; an entry seen during several
    # tests (one per worker) is named with all of them.
    created = getattr(node, "workeroutput", {}).get("tmp_created_by", {})
    for path, nodeid in created.items():
        seen = _WATCH.created_by.get(Path(path))
        if seen is None:
            _WATCH.created_by[Path(path)] = nodeid
        elif nodeid not in seen.split(" or "):
            _WATCH.created_by[Path(path)] = "%s or %s" % (seen, nodeid)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not _xdist_controller(config):
        return
    # Workers have ended (their multiprocessing directories are gone with them); give any
    # process of theirs that is still exiting a moment, then look once.
    deadline = time.monotonic() + 5.0
    managed = _pytest_managed(config._tmp_path_factory)  # type: ignore[attr-defined]
    while True:
        _WATCH.leaks, _WATCH.known = leftover_temporary_files(managed)
        if not _WATCH.leaks or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if _WATCH.leaks and _strict() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for title, lines in (
        ("temporary files left behind by tests", _WATCH.leaks),
        ("temporary files left behind by tests (known, being fixed)", _WATCH.known),
    ):
        if lines:
            terminalreporter.section(title, yellow=True)
            for line in lines:
                terminalreporter.line(line)
