#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_sim_reboot
short_description: Reboot a host's simulated GPUs (what a host reboot does to MIG)
version_added: 0.1.0
description:
  - For hosts whose GPUs are simulated (O(backend=sim)), does to the simulated GPUs what a
    reboot does to real ones. Every MIG instance disappears, compute processes end, pending
    MIG modes apply on Ampere, and Hopper GPUs come back with MIG disabled.
  - The host itself is not rebooted. Real hosts are rebooted with M(ansible.builtin.reboot);
    the C(heteromig.fleet.mig_partition) role picks one or the other from
    C(heteromig_gpu_backend).
  - Fails on O(backend=nvml), where only a real reboot can do this.
author:
  - heteromig developers (@heteromig)
extends_documentation_fragment:
  - heteromig.fleet.gpu_backend
requirements:
  - Python >= 3.9 on the target
  - nvidia-ml-py on the target (module C(pynvml))
attributes:
  check_mode:
    support: full
    description: Reports C(changed=true) without touching the simulated GPUs.
  diff_mode:
    support: none
    description: Nothing to diff.
options: {}
seealso:
  - module: ansible.builtin.reboot
  - module: heteromig.fleet.mig_layout
"""

EXAMPLES = r"""
- name: Reboot the simulated GPUs of a host
  heteromig.fleet.gpu_sim_reboot:
    backend: sim
    sim_state: /var/lib/heteromig/nvml-sim.json
"""

RETURN = r"""
rebooted:
  description: Whether the simulated GPUs were rebooted (false in check mode).
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BACKEND_ARGUMENT_SPEC,
    opened_backend,
)


def main():
    module = AnsibleModule(argument_spec=dict(BACKEND_ARGUMENT_SPEC), supports_check_mode=True)
    params = module.params
    if params["backend"] != "sim":
        module.fail_json(
            msg="gpu_sim_reboot only reboots simulated GPUs (backend: sim); reboot a real host "
            "with ansible.builtin.reboot"
        )
    with opened_backend(
        params, lambda msg: module.fail_json(msg=msg), "rebooting the simulated GPUs", backend="sim"
    ) as backend:
        if not module.check_mode:
            backend.reboot_simulated_host()
    module.exit_json(changed=True, rebooted=not module.check_mode)


if __name__ == "__main__":
    main()
