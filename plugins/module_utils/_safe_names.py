# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one pattern for every value that becomes a file or directory name (run ids, benchmarks).

A safe name is 1 to 128 ASCII characters: letters, digits, ``_``, ``.`` and ``-``, starting with a
letter or a digit. So it is never ``.`` or ``..``, holds no ``/``, no whitespace, no newline,
no NUL and no non-ASCII character (which file systems and reports would spell differently).
The controller checks before anything starts, and the host checks again (``start``, ``status``,
``stop`` and ``collect``). Stdlib only; runs on both sides.
"""

from __future__ import annotations

import re
from typing import Any, Optional

SAFE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_SAFE_NAME = re.compile(r"\A%s\Z" % SAFE_NAME_PATTERN, re.ASCII)


def is_safe_name(value: Any) -> bool:
    return isinstance(value, str) and _SAFE_NAME.match(value) is not None


def name_problem(value: Any, what: str) -> Optional[str]:
    """Why ``value`` cannot be ``what`` (a run id, a benchmark name, ...), or None if it can."""
    if is_safe_name(value):
        return None
    return (
        "%s %r is not a safe name: use 1 to 128 ASCII letters, digits, '_', '.' and '-', "
        "starting with a letter or a digit (it becomes a directory name)" % (what, value)
    )
