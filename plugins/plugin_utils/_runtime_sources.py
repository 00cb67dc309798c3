# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host-side runtime as the controller has it (controller only): the host agent
(``module_utils/agent/``) and every module_utils file it imports, directly or not, with the sha1
the runtime_sync module compares. What no detached process imports (``mig/``, the module-only
helpers) is not shipped."""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

MODULE_UTILS = Path(__file__).resolve().parents[1] / "module_utils"
PACKAGE = "ansible_collections.heteromig.fleet.plugins.module_utils"
AGENT = "agent"


def _module_file(dotted: str, known: set[str]) -> str | None:
    """The source of a module below module_utils (``agent._x`` -> ``agent/_x.py``), if known."""
    path = dotted.replace(".", "/")
    for candidate in (path + ".py", path + "/__init__.py"):
        if candidate in known:
            return candidate
    return None


def imported_files(text: str, known: set[str]) -> set[str]:
    """The module_utils files a source imports anywhere (lazy imports in functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE or node.module.startswith(PACKAGE + "."):
                base = node.module[len(PACKAGE) + 1 :]
                names = [base] if base else []
                names += [(base + "." if base else "") + alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [
                a.name[len(PACKAGE) + 1 :] for a in node.names if a.name.startswith(PACKAGE + ".")
            ]
        for name in names:
            hit = _module_file(name, known)
            if hit:
                found.add(hit)
    return found


def import_closure(sources: dict[str, str], roots: list[str]) -> set[str]:
    """``roots`` and every file they import, directly or not, with their packages' __init__.py."""
    known = set(sources)
    shipped: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in shipped:
            continue
        shipped.add(name)
        todo.extend(imported_files(sources[name], known) - shipped)
        if "/" in name:
            todo.append(name.split("/")[0] + "/__init__.py")
    return shipped


@lru_cache(maxsize=1)
def all_sources() -> dict[str, str]:
    """Path below module_utils (``agent/_hetero_runner.py``) -> text, of every file there."""
    paths = [*MODULE_UTILS.glob("*.py"), *MODULE_UTILS.glob("*/*.py")]
    return {
        path.relative_to(MODULE_UTILS).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(paths)
    }


@lru_cache(maxsize=1)
def runtime_sources() -> dict[str, str]:
    """Path below module_utils -> text of every host-side runtime file (read once per process)."""
    sources = all_sources()
    roots = sorted(name for name in sources if name.startswith(AGENT + "/"))
    shipped = import_closure(sources, roots)
    return {name: sources[name] for name in sorted(shipped)}


def runtime_manifest() -> dict[str, str]:
    """Path -> sha1 of its UTF-8 bytes, as the host side computes it."""
    return {
        name: hashlib.sha1(text.encode("utf-8")).hexdigest()  # nosec - a content id
        for name, text in runtime_sources().items()
    }
