# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every part of the embedded harness shares: its name, its exit codes, HarnessError, and
the lazy imports of numpy and LoadGen (they fail with a HarnessError naming the role that
installs them).

The program is ``_loadgen_harness``; this module is one of its parts. Private module (leading
underscore): not a public API of the collection.
"""

from __future__ import annotations

import sys
from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import HARNESS_PROG

PROG = HARNESS_PROG
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ACCURACY = 3


class HarnessError(Exception):
    """A failure with a one-line message and the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _import_numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise HarnessError(
            "numpy is not installed for %s; the role heteromig.fleet.host_runtime installs it"
            % sys.executable,
            EXIT_FAILED,
        ) from None
    return numpy


def _import_loadgen() -> Any:
    try:
        import mlperf_loadgen
    except ImportError:
        raise HarnessError(
            "MLPerf LoadGen (PyPI mlcommons-loadgen, module mlperf_loadgen) is not installed for "
            "%s; the role heteromig.fleet.host_runtime installs it" % sys.executable,
            EXIT_FAILED,
        ) from None
    return mlperf_loadgen
