# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which module_utils files a program needs (runs on targets and on the controller; private).

The host runtime (``runtime_sync``) and the boot-time MIG entry (``mig/_mig_persist``) each ship
the files their entry points import, directly or not. Both compute that set here, from the
sources' own import statements (lazy ones inside functions included), so no list of files is
kept by hand.
"""

from __future__ import annotations

import ast
from typing import Callable, List, Optional, Set

PACKAGE = "ansible_collections.heteromig.fleet.plugins.module_utils"

# path below module_utils ("nvml/_gpu_backend.py") -> its text, or None when there is none
SourceOf = Callable[[str], Optional[str]]


def _candidates(dotted: str) -> List[str]:
    path = dotted.replace(".", "/")
    return [path + ".py", path + "/__init__.py"]


def imported_names(text: str) -> List[str]:
    """Dotted names below module_utils that ``text`` imports (modules, or names in them)."""
    names: List[str] = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE or node.module.startswith(PACKAGE + "."):
                base = node.module[len(PACKAGE) + 1 :]
                if base:
                    names.append(base)
                names.extend((base + "." if base else "") + alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(
                a.name[len(PACKAGE) + 1 :] for a in node.names if a.name.startswith(PACKAGE + ".")
            )
    return names


def import_closure(source_of: SourceOf, roots: List[str]) -> Set[str]:
    """``roots`` and every module_utils file they import, directly or not, with the
    ``__init__.py`` of each package they are in."""
    shipped: Set[str] = set()
    missing: Set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in shipped or name in missing:
            continue
        text = source_of(name)
        if text is None:
            missing.add(name)
            continue
        shipped.add(name)
        if "/" in name:
            todo.append(name.split("/")[0] + "/__init__.py")
        for dotted in imported_names(text):
            for candidate in _candidates(dotted):
                if candidate in shipped:
                    break
                if candidate not in missing and source_of(candidate) is not None:
                    todo.append(candidate)
                    break
                missing.add(candidate)
    return shipped
