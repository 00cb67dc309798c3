# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NVML behind one door (runs on targets; private): the backend interface (real NVML through
``pynvml``, or the simulator), the profile catalog of every MIG-capable GPU model, the inventory
read through the backend, GPU activity sampling, and the simulator that answers as the real
hardware does."""
