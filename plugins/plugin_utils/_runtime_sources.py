# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host-side runtime as the controller has it: every plugins/module_utils/*.py of this
collection, with the sha1 the runtime_sync module compares (controller only)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

MODULE_UTILS = Path(__file__).resolve().parents[1] / "module_utils"


@lru_cache(maxsize=1)
def runtime_sources() -> dict[str, str]:
    """File name -> text of every host-side source file (read once per controller process)."""
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(MODULE_UTILS.glob("*.py"))}


def runtime_manifest() -> dict[str, str]:
    """File name -> sha1 of its UTF-8 bytes, as the host side computes it."""
    return {
        name: hashlib.sha1(text.encode("utf-8")).hexdigest()  # nosec - a content id
        for name, text in runtime_sources().items()
    }
