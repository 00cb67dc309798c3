# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host agent (runs on targets; private): what detached processes on a host run after the
module that started them has gone. The hetero runner and its pure choreography, the embedded
LoadGen harness (models, accuracy checks, engine store) and the containment of a run's processes.
Its import closure is what ``runtime_sync`` installs on each host."""
