# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's copy of a run's results (controller only): the check that the results
directory is writable, ``result.json`` written atomically, the fetched archive unpacked
without letting a member out of its directory, and the lock that keeps two controllers watching
one run from interleaving their copies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any

from ansible.errors import AnsibleActionFail

from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_watch import first_line


def results_dir_problem(results_root: str) -> str | None:
    """Why the controller cannot keep results in ``results_root`` (None when it can)."""
    try:
        os.makedirs(results_root, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results_root, prefix=".heteromig-probe-") as probe:
            probe.write(b"x")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return "cannot write the results to %s: %s" % (results_root, first_line(str(exc)))
    return None


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON through a temporary file and a rename: never a truncated file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def extract_archive(archive: str, dest: str) -> None:
    """Unpack a results archive; members must stay inside ``dest`` (no links, no ``..``)."""
    dest_real = os.path.realpath(dest)
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(dest_real, member.name))
            if (
                not (member.isfile() or member.isdir())
                or os.path.isabs(member.name)
                or not (target == dest_real or target.startswith(dest_real + os.sep))
            ):
                raise AnsibleActionFail("refusing to unpack %r from %s" % (member.name, archive))
            members.append(member)
        for member in members:
            target = os.path.join(dest_real, member.name)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, open(target, "wb") as handle:
                shutil.copyfileobj(source, handle)


@contextlib.contextmanager
def results_lock(results_dir: str) -> Iterator[None]:
    """Hold the lock of the run's results (``results_dir``'s parent) for one change to them.

    Two controllers can watch one run: a resume started while the workers of an
    ansible-playbook whose main process died still poll. Each replaces the host's copy and
    writes its ``result.json``; under this lock each change is whole, never interleaved with the
    other's (without it one of them failed to write ``result.json``). The lock is an ``flock`` on
    the directory itself, so no lock file is left among the results.
    """
    parent = os.path.dirname(os.path.abspath(results_dir))
    os.makedirs(parent, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def install_results(staging: str, results_dir: str) -> None:
    """Put the unpacked copy ``staging`` in place of ``results_dir`` (replaced whole)."""
    with results_lock(results_dir):
        if os.path.isdir(results_dir):
            shutil.rmtree(results_dir)
        os.rename(staging, results_dir)


def write_result(results_dir: str, contract: Any) -> None:
    """Write the run's ``result.json`` into the controller's copy of its results."""
    with results_lock(results_dir):
        write_json_atomic(os.path.join(results_dir, "result.json"), contract)
