# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's host-side runtime on a target (runs on targets; private).

The runtime is a copy of this directory (plugins/module_utils/*.py and its packages' *.py) under
``<root>/lib/ansible_collections/heteromig/fleet/plugins/module_utils/``, so that detached
processes (the hetero runner, the embedded harness) import it after the module that started them
has gone. This file holds what the ``runtime_sync`` module does with it: compare the installed
files with the controller's manifest (name -> sha1), write and remove files, find missing Python
packages, check that the installed harness runs, and a stamp that lets a warm check skip every
subprocess.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

RUNTIME_PACKAGE = "ansible_collections.heteromig.fleet.plugins.module_utils"
HARNESS_MODULE = RUNTIME_PACKAGE + ".agent._loadgen_harness"
HARNESS_PROG = "heteromig_harness"  # what the harness calls itself, e.g. in --version
HARNESS_VERSION_PREFIX = HARNESS_PROG + " "
STAMP_NAME = ".heteromig-runtime.json"
STAMP_FORMAT = 1


class RuntimeSyncError(Exception):
    """The runtime could not be installed or checked; the message says why."""


class RuntimePaths(NamedTuple):
    root: str
    lib: str  # what goes on PYTHONPATH
    code: str  # lib/ansible_collections/heteromig/fleet/plugins/module_utils
    engines: str
    stamp: str


class SyncPlan(NamedTuple):
    write: List[str]  # names to (re)write: missing or different
    remove: List[str]  # installed names the manifest no longer has

    @property
    def empty(self) -> bool:
        return not self.write and not self.remove


def runtime_paths(root: str) -> RuntimePaths:
    """Where the runtime lives under the host's heteromig directory ``root`` (a host path)."""
    lib = os.path.join(root, "lib")
    code = os.path.join(lib, *RUNTIME_PACKAGE.split("."))
    return RuntimePaths(
        root, lib, code, os.path.join(root, "engines"), os.path.join(code, STAMP_NAME)
    )


def sha1_bytes(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()  # nosec - a content id, not security


def manifest_digest(manifest: Mapping[str, str]) -> str:
    """One id for a whole manifest (names and checksums)."""
    text = "\n".join("%s %s" % (name, manifest[name]) for name in sorted(manifest))
    return sha1_bytes(text.encode("utf-8"))


# A runtime file is <name>.py directly under module_utils, or <package>/<name>.py one level below.
_PART_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _plain_part(part: str) -> bool:
    return bool(part) and not part.startswith(".") and set(part) <= _PART_CHARS


def check_manifest(manifest: Mapping[str, Any]) -> None:
    for name, digest in manifest.items():
        parts = name.split("/") if isinstance(name, str) else []
        if (
            not isinstance(name, str)
            or not name.endswith(".py")
            or not 1 <= len(parts) <= 2
            or not all(_plain_part(part) for part in [*parts[:-1], parts[-1][:-3]])
        ):
            raise RuntimeSyncError(
                "manifest entry %r is not a plain *.py file name (or <package>/<name>.py)" % (name,)
            )
        if not isinstance(digest, str) or len(digest) != 40:
            raise RuntimeSyncError(
                "manifest entry %s has no sha1 checksum (got %r)" % (name, digest)
            )


def installed_digests(code_dir: str) -> Dict[str, str]:
    """name -> sha1 of every *.py installed in ``code_dir`` and its package directories, the
    names as a manifest has them (``agent/_hetero_runner.py``); empty when it does not exist."""
    found: Dict[str, str] = {}
    try:
        entries = sorted(os.listdir(code_dir))
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise RuntimeSyncError("cannot list %s: %s" % (code_dir, exc.strerror)) from exc
    names = [name for name in entries if name.endswith(".py")]
    for package in entries:
        directory = os.path.join(code_dir, package)
        if package.startswith(".") or package == "__pycache__" or not os.path.isdir(directory):
            continue
        try:
            names.extend(
                package + "/" + name for name in os.listdir(directory) if name.endswith(".py")
            )
        except OSError as exc:
            raise RuntimeSyncError("cannot list %s: %s" % (directory, exc.strerror)) from exc
    for name in names:
        path = os.path.join(code_dir, name)
        try:
            with open(path, "rb") as handle:
                found[name] = sha1_bytes(handle.read())
        except IsADirectoryError:
            continue
        except OSError as exc:
            raise RuntimeSyncError("cannot read %s: %s" % (path, exc.strerror)) from exc
    return found


def plan_sync(manifest: Mapping[str, str], installed: Mapping[str, str]) -> SyncPlan:
    """Which files to write and which to remove so that ``installed`` equals ``manifest``."""
    write = sorted(name for name, digest in manifest.items() if installed.get(name) != digest)
    remove = sorted(name for name in installed if name not in manifest)
    return SyncPlan(write, remove)


def make_dirs(paths: RuntimePaths, check_mode: bool) -> List[str]:
    """Create the runtime's directories; return those that were (or would be) created."""
    created = []
    for directory in (paths.root, paths.code, paths.engines):
        if os.path.isdir(directory):
            continue
        created.append(directory)
        if check_mode:
            continue
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise RuntimeSyncError("cannot create %s: %s" % (directory, exc.strerror)) from exc
    return created


def write_files(
    code_dir: str, names: Sequence[str], contents: Mapping[str, str], manifest: Mapping[str, str]
) -> None:
    """Write each of ``names`` atomically, after checking its content against the manifest."""
    encoded = {name: contents[name].encode("utf-8") for name in names}
    for name, data in encoded.items():
        if sha1_bytes(data) != manifest[name]:
            raise RuntimeSyncError(
                "the content sent for %s does not match its manifest checksum" % name
            )
    for name, data in encoded.items():
        directory, base = os.path.split(os.path.join(code_dir, name))
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise RuntimeSyncError("cannot create %s: %s" % (directory, exc.strerror)) from exc
        fd, tmp = tempfile.mkstemp(prefix="." + base + ".", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(code_dir, name))
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise RuntimeSyncError(
                "cannot write %s in %s: %s" % (name, code_dir, exc.strerror)
            ) from exc


def remove_files(code_dir: str, names: Sequence[str]) -> None:
    """Remove ``names``, then each package directory they leave with no *.py file."""
    for name in names:
        path = os.path.join(code_dir, name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RuntimeSyncError("cannot remove %s: %s" % (path, exc.strerror)) from exc
    for package in sorted({name.split("/")[0] for name in names if "/" in name}):
        directory = os.path.join(code_dir, package)
        try:
            if any(entry.endswith(".py") for entry in os.listdir(directory)):
                continue
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RuntimeSyncError("cannot remove %s: %s" % (directory, exc.strerror)) from exc


_IMPORT_CHECK = """
import importlib, json, sys
missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        missing.append(name)
print(json.dumps(missing))
"""

_FIND_CHECK = """
import importlib.util, json, sys
print(json.dumps([n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]))
"""


# module.run_command(argv, environ_update=...) -> (rc, stdout, stderr)
RunCommand = Callable[..., Tuple[int, str, str]]


def _run_python(
    run: RunCommand, python: str, argv: Sequence[str], env: Optional[Mapping[str, str]] = None
) -> str:
    rc, out, err = run([python, *argv], environ_update=dict(env or {}))
    if rc != 0:
        raise RuntimeSyncError(
            "%s %s exited %d: %s" % (python, " ".join(argv[:2]), rc, (err or out)[-1500:])
        )
    return out


def missing_packages(
    run: RunCommand, python: str, names: Sequence[str], thorough: bool
) -> List[str]:
    """Import names that ``python`` cannot import.

    ``thorough`` imports each one in a subprocess (a broken installation counts as missing);
    otherwise only finds it, in this process when ``python`` is this interpreter, which costs
    no subprocess.
    """
    if not names:
        return []
    if not thorough and os.path.realpath(python) == os.path.realpath(sys.executable):
        return [name for name in names if importlib.util.find_spec(name) is None]
    out = _run_python(run, python, ["-c", _IMPORT_CHECK if thorough else _FIND_CHECK, *names])
    try:
        missing = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise RuntimeSyncError("%s gave no package list: %r" % (python, out[-500:])) from exc
    return [str(name) for name in missing]


def pip_install(
    run: RunCommand, python: str, requirements: Sequence[str], pip_args: Sequence[str]
) -> None:
    argv = ["-m", "pip", "install", "--disable-pip-version-check", *list(pip_args)]
    try:
        _run_python(run, python, [*argv, *requirements])
    except RuntimeSyncError as exc:
        raise RuntimeSyncError(
            "pip could not install %s for %s (%s). Install them for that interpreter yourself, "
            "or use a Python (e.g. a virtualenv) that has them or where pip may install"
            % (", ".join(requirements), python, exc)
        ) from exc


def harness_version(run: RunCommand, python: str, lib: str) -> str:
    """Run the installed harness with --version; its version, or an error saying why not."""
    out = _run_python(run, python, ["-m", HARNESS_MODULE, "--version"], {"PYTHONPATH": lib}).strip()
    if not out.startswith(HARNESS_VERSION_PREFIX):
        raise RuntimeSyncError(
            "the installed harness (%s in %s) answered %r to --version, not %r..."
            % (HARNESS_MODULE, lib, out[-200:], HARNESS_VERSION_PREFIX)
        )
    return out[len(HARNESS_VERSION_PREFIX) :].strip()


def read_stamp(path: str) -> Dict[str, Any]:
    """The stamp of the last full check, or {} when there is none or it is unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            stamp = json.load(handle)
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) and stamp.get("format") == STAMP_FORMAT else {}


def stamp_for(digest: str, python: str, packages: Sequence[str], version: str) -> Dict[str, Any]:
    return {
        "format": STAMP_FORMAT,
        "manifest": digest,
        "python": python,
        "packages": sorted(packages),
        "harness_version": version,
    }


def stamp_matches(
    stamp: Mapping[str, Any], digest: str, python: str, packages: Sequence[str]
) -> bool:
    return (
        stamp.get("manifest") == digest
        and stamp.get("python") == python
        and stamp.get("packages") == sorted(packages)
        and isinstance(stamp.get("harness_version"), str)
    )


def write_stamp(path: str, stamp: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".stamp.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(stamp, handle, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise RuntimeSyncError("cannot write %s: %s" % (path, exc.strerror)) from exc
