#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_facts
short_description: Read the host facts an MLPerf system description needs (CPU, memory, OS, storage, network, software)
version_added: 0.1.0
description:
  - Reads what the C(systems/<system>.json) of an MLPerf Inference submission says about the
    host, and returns it as the fact C(heteromig_host).
  - CPU model, sockets, cores per socket and logical CPUs from C(/proc/cpuinfo); the maximum
    frequency and the caches of cpu0 from C(/sys/devices/system/cpu/cpu0/).
  - Memory from C(MemTotal) of C(/proc/meminfo) (what the kernel manages, slightly less than the
    installed memory).
  - The distribution from C(/etc/os-release) and the kernel from C(/proc/sys/kernel/osrelease).
  - Whole disks from C(/sys/block) (size; NVMe, SSD or HDD where the kernel tells) and network
    interfaces backed by a device from C(/sys/class/net) (link type and speed).
  - The versions of the Python packages the harnesses use (mlcommons-loadgen, numpy, torch,
    tensorrt, onnxruntime, nvidia-ml-py), looked up in O(pythonpath) and the module's
    interpreter.
  - GPUs, the NVIDIA driver and CUDA come from M(heteromig.fleet.gpu_facts), not from here.
  - A value that cannot be read is null, never guessed; M(heteromig.fleet.submission_export)
    names the system description fields that stay unknown.
author:
  - heteromig developers (@heteromig)
requirements:
  - Python >= 3.9 on the target, Linux (C(/proc), C(/sys))
attributes:
  check_mode:
    support: full
    description: The module only reads; it returns the same facts in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  facts:
    support: full
    description: Returns C(heteromig_host) as a fact.
options:
  pythonpath:
    description:
      - Directories searched for Python packages before the module interpreter's own
        C(sys.path) (for example where the harness's packages are installed).
    type: list
    elements: path
    default: []
seealso:
  - module: heteromig.fleet.gpu_facts
  - module: heteromig.fleet.submission_export
"""

EXAMPLES = r"""
- name: Read the host facts of the system description
  heteromig.fleet.host_facts:

- name: Show the CPU
  ansible.builtin.debug:
    msg: "{{ heteromig_host.cpu.sockets }}x {{ heteromig_host.cpu.model_name }}"
"""

RETURN = r"""
ansible_facts:
  description: The host's facts.
  returned: always
  type: dict
  contains:
    heteromig_host:
      description: What the host says about itself; a value that could not be read is null.
      type: dict
      contains:
        version:
          description: Format version of these facts.
          type: int
          sample: 1
        cpu:
          description:
            - C(model_name), C(sockets), C(cores_per_socket), C(logical_cpus), C(max_mhz),
              and C(caches) (a list of C(level), C(type), C(size_bytes)).
          type: dict
          sample: {model_name: "Intel(R) Xeon(R) Platinum 8480C", sockets: 2, cores_per_socket: 56,
                   logical_cpus: 224, max_mhz: 3800, caches: []}
        memory_bytes:
          description: MemTotal of C(/proc/meminfo) in bytes.
          type: int
          sample: 2164113408000
        os:
          description: C(pretty_name), C(id), C(version_id) (os-release), C(kernel), C(machine).
          type: dict
          sample: {pretty_name: "Ubuntu 22.04.4 LTS", id: ubuntu, version_id: "22.04",
                   kernel: 5.15.0-105-generic, machine: x86_64}
        disks:
          description: Whole disks, each C(name), C(size_bytes), C(kind) (V(NVMe SSD), V(SSD), V(HDD) or null).
          type: list
          elements: dict
        network:
          description: Interfaces backed by a device, each C(name), C(type) (V(Ethernet),
            V(InfiniBand) or null), C(speed_mbps) (null when the link does not say), C(device).
          type: list
          elements: dict
        python:
          description: C(executable) and C(version) of the module's interpreter.
          type: dict
        packages:
          description: Versions of the installed packages among those listed above, by distribution name.
          type: dict
          sample: {mlcommons-loadgen: 6.0.17, numpy: 2.2.1}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.heteromig.fleet.plugins.module_utils._host_sysinfo import gather


def main() -> None:
    module = AnsibleModule(
        argument_spec={"pythonpath": {"type": "list", "elements": "path", "default": []}},
        supports_check_mode=True,
    )
    facts = gather("/", pythonpath=list(module.params["pythonpath"]))
    module.exit_json(changed=False, ansible_facts={"heteromig_host": facts})


if __name__ == "__main__":
    main()
