# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error class of the NVML door (runs on targets; private).

Its own module so that the backend (which opens the simulator) and the simulator (whose errors
derive from it) do not import each other.
"""


class BackendError(Exception):
    """NVML could not be opened or used; the message says what is wrong and what to do.

    The simulator's own errors (``SimulatorError``) derive from it, so callers catch one class.
    """
