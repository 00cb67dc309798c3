# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host-side runtime as the controller has it (controller only): the host agent
(``module_utils/agent/``) and every module_utils file it imports, directly or not, with the sha1
the runtime_sync module compares. What no detached process imports (``mig/``, the module-only
helpers) is not shipped."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from ansible_collections.heteromig.fleet.plugins.module_utils._import_closure import import_closure

MODULE_UTILS = Path(__file__).resolve().parents[1] / "module_utils"
AGENT = "agent"


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
    shipped = import_closure(sources.get, roots)
    return {name: sources[name] for name in sorted(shipped)}


def runtime_manifest() -> dict[str, str]:
    """Path -> sha1 of its UTF-8 bytes, as the host side computes it."""
    return {
        name: hashlib.sha1(text.encode("utf-8")).hexdigest()  # nosec - a content id
        for name, text in runtime_sources().items()
    }
