# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MLPerf's fixed terms and the slice profiles' names, shared by every layer (private; no imports).

The one definition of LoadGen's scenarios and of the accuracy targets, read by the harness, the
models, the LoadGen log reader and the controller's harness profiles; and how a slice profile
name gives its compute slices.
"""

from __future__ import annotations

import re

# LoadGen's scenarios, in the order MLPerf's rules list them.
SCENARIOS = ("Offline", "Server", "SingleStream", "MultiStream")
# MLPerf's accuracy targets: 99% and 99.9% of the reference model's accuracy.
ACCURACY_TARGETS = ("99", "99.9")
# The "profile" of a whole GPU used without MIG isolation.
FULL_GPU_PROFILE = "full-gpu"


def compute_slices(profile: str) -> int:
    """Compute slices of a profile: 3 for 3g.40gb, 1 for 1c.3g.40gb, 7 for a full GPU."""
    if profile == FULL_GPU_PROFILE:
        return 7
    match = re.match(r"^(\d+)c\.", profile) or re.match(r"^(\d+)g\.", profile)
    return max(int(match.group(1)), 1) if match else 1
