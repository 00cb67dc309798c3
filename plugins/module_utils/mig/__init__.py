# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MIG layouts (runs on targets; private): planning a layout against the profile catalog, applying
it through the NVML backend, the device state it reads, the stamps that let an unchanged host skip
work, client checks and hooks, and the boot-time persistence of a layout."""
