#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_facts
short_description: Read NVIDIA GPUs, MIG profiles, MIG instances and GPU processes through NVML
version_added: 0.1.0
description:
  - Reads every NVIDIA GPU of the host through NVML and returns it as facts.
  - For each GPU, its index, name, UUID, PCI bus id, memory, whether it is MIG-capable, and
    its current and pending MIG mode.
  - For each MIG-capable GPU, the GPU-instance profiles it supports, with the profile id that
    C(nvidia-smi mig -lgip) prints, the instance count, memory, SMs, engines, and the valid
    placements as C(nvidia-smi mig -lgipp) prints them.
  - The existing GPU instances (id, profile, placement) and their compute instances, with the
    C(MIG-<uuid>) device UUIDs that C(CUDA_VISIBLE_DEVICES) takes.
  - The running compute processes per GPU and per MIG instance.
  - Works the same against real NVML and against heteromig's simulated NVML (O(backend)).
author:
  - heteromig developers (@heteromig)
extends_documentation_fragment:
  - heteromig.fleet.gpu_backend
requirements:
  - Python >= 3.9 on the target
  - nvidia-ml-py on the target (module C(pynvml))
  - For O(backend=nvml), the NVIDIA driver (C(libnvidia-ml.so.1))
attributes:
  check_mode:
    support: full
    description: The module only reads; it returns the same facts in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  facts:
    support: full
    description: Returns C(heteromig_gpus), C(heteromig_mig_devices) and C(heteromig_nvml) as facts.
options:
  details:
    description:
      - Also read profiles, instances and processes. With V(false) only the GPU list and MIG
        modes are read, which is faster on hosts with many GPUs.
    type: bool
    default: true
notes:
  - Profile names come from NVML's v2 profile call where the driver offers it, else from the
    collection's catalog of GPU models, else they are derived from slices and memory.
  - Reading processes of other users needs root on real hosts; without it the process list may
    be incomplete.
seealso:
  - name: NVIDIA MIG user guide
    description: MIG concepts, profiles and placements.
    link: https://docs.nvidia.com/datacenter/tesla/mig-user-guide/
"""

EXAMPLES = r"""
- name: Read the GPUs of a real host
  heteromig.fleet.gpu_facts:

- name: Read simulated GPUs (eight H100 like a DGX H100)
  heteromig.fleet.gpu_facts:
    backend: sim
    sim_state: /var/lib/heteromig/nvml-sim.json
    sim_gpus: 8xH100-SXM5-80GB

- name: Set the backend once for every GPU module, from inventory variables
  module_defaults:
    group/heteromig.fleet.gpu:
      backend: "{{ heteromig_gpu_backend | default('nvml') }}"
      sim_state: "{{ heteromig_sim_state | default(omit) }}"
      sim_gpus: "{{ heteromig_sim_gpus | default(omit) }}"
  block:
    - name: Gather GPU facts
      heteromig.fleet.gpu_facts:

    - name: Show the MIG devices
      ansible.builtin.debug:
        msg: "{{ heteromig_mig_devices | map(attribute='uuid') | list }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts about the host's GPUs.
  returned: success
  type: dict
  contains:
    heteromig_gpus:
      description: One entry per GPU, in NVML index order.
      type: list
      elements: dict
      contains:
        index:
          description: NVML index of the GPU.
          type: int
          sample: 0
        name:
          description: Device name as NVML reports it.
          type: str
          sample: NVIDIA H100 80GB HBM3
        model:
          description: The collection's catalog key for this model, or V(null) if unknown.
          type: str
          sample: H100-SXM5-80GB
        uuid:
          description: GPU UUID.
          type: str
          sample: GPU-1e4aeb08-d54a-e049-6ac4-e11b0489b456
        pci_bus_id:
          description: PCI bus id.
          type: str
          sample: "00000000:1B:00.0"
        pci_device_id:
          description: PCI device and vendor id.
          type: str
          sample: "0x233010de"
        memory_total_mib:
          description: Total framebuffer memory in MiB.
          type: int
          sample: 81559
        memory_used_mib:
          description: Used framebuffer memory in MiB.
          type: int
        architecture:
          description: GPU architecture (V(ampere), V(hopper), ...).
          type: str
        cuda_capability:
          description: CUDA compute capability.
          type: str
          sample: "9.0"
        mig_capable:
          description: Whether the GPU supports MIG.
          type: bool
        mig_mode:
          description: Current and pending MIG mode, each V(enabled) or V(disabled).
          type: dict
          sample: {current: disabled, pending: disabled}
        mig_change_pending:
          description: Whether a MIG mode change waits for a GPU reset or reboot.
          type: bool
        profiles:
          description: GPU-instance profiles the GPU supports (empty if not MIG-capable).
          type: list
          elements: dict
          contains:
            name:
              description: Profile name.
              type: str
              sample: 1g.10gb
            id:
              description: Profile id as C(nvidia-smi mig -lgip) prints it.
              type: int
              sample: 19
            index:
              description: NVML profile index (C(NVML_GPU_INSTANCE_PROFILE_*)).
              type: int
            slice_count:
              description: Compute slices.
              type: int
            instance_count:
              description: How many instances of this profile the GPU can hold.
              type: int
            remaining:
              description: How many more instances could be created now.
              type: int
            memory_mib:
              description: Memory of one instance in MiB.
              type: int
            multiprocessors:
              description: SMs of one instance.
              type: int
            copy_engines:
              description: Copy engines.
              type: int
            decoders:
              description: Video decoders.
              type: int
            encoders:
              description: Video encoders.
              type: int
            jpegs:
              description: JPEG engines.
              type: int
            ofas:
              description: Optical-flow accelerators.
              type: int
            p2p_supported:
              description: Whether peer-to-peer is supported.
              type: bool
            placements:
              description: Valid placements (start and size in memory slices).
              type: list
              elements: dict
            placements_text:
              description: Placements as C(nvidia-smi mig -lgipp) prints them.
              type: str
              sample: "{0,1,2,3,4,5,6}:1"
        gpu_instances:
          description: Existing GPU instances, each with its compute instances.
          type: list
          elements: dict
          sample:
            - id: 7
              profile: 1g.10gb
              profile_id: 19
              placement: {start: 0, size: 1}
              compute_instances:
                - id: 0
                  profile: 1g.10gb
                  profile_id: 0
                  slice_count: 1
                  placement: {start: 0, size: 1}
                  mig_uuid: MIG-b4b2228d-6933-5839-bc0e-41ab9edb61c6
        mig_devices:
          description: The GPU's MIG devices; see RV(ansible_facts.heteromig_mig_devices).
          type: list
          elements: dict
        processes:
          description: Running compute processes.
          type: list
          elements: dict
          sample:
            - pid: 4242
              name: python3
              used_memory_mib: 1024
              gpu_instance_id: 7
              compute_instance_id: 0
              mig_uuid: MIG-b4b2228d-6933-5839-bc0e-41ab9edb61c6
    heteromig_mig_devices:
      description: Every MIG device of the host (one per compute instance), across GPUs.
      type: list
      elements: dict
      contains:
        uuid:
          description: MIG device UUID, for C(CUDA_VISIBLE_DEVICES).
          type: str
        mig_index:
          description: NVML MIG device index on its GPU.
          type: int
        gpu_index:
          description: Index of the parent GPU.
          type: int
        gpu_uuid:
          description: UUID of the parent GPU.
          type: str
        gpu_model:
          description: Catalog key of the parent GPU's model.
          type: str
        gpu_name:
          description: NVML name of the parent GPU.
          type: str
        gpu_instance_id:
          description: GPU-instance id.
          type: int
        compute_instance_id:
          description: Compute-instance id.
          type: int
        gpu_instance_profile:
          description: GPU-instance profile name.
          type: str
        gpu_instance_profile_id:
          description: GPU-instance profile id.
          type: int
        profile:
          description: The device's profile (C(1c.3g.40gb) for a partial compute instance).
          type: str
        compute_instance_profile_id:
          description: Compute-instance profile id.
          type: int
        placement:
          description: GPU-instance placement.
          type: dict
        compute_placement:
          description: Compute-instance placement inside its GPU instance.
          type: dict
        memory_total_mib:
          description: Memory of the device in MiB.
          type: int
    heteromig_nvml:
      description: The NVML the facts were read through.
      type: dict
      contains:
        backend:
          description: V(nvml) or V(sim).
          type: str
        simulated:
          description: Whether the GPUs are simulated.
          type: bool
        driver_version:
          description: Driver version.
          type: str
        nvml_version:
          description: NVML version.
          type: str
        cuda_driver_version:
          description: CUDA driver API version.
          type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BACKEND_ARGUMENT_SPEC,
    opened_backend,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(BACKEND_ARGUMENT_SPEC, details=dict(type="bool", default=True)),
        supports_check_mode=True,
    )
    params = module.params
    with opened_backend(
        params, lambda msg: module.fail_json(msg=msg), "reading GPUs through NVML"
    ) as backend:
        host = read_host(backend.nvml, details=params["details"])
    nvml_info = dict(host["system"], backend=backend.name, simulated=backend.simulated)
    module.exit_json(
        changed=False,
        ansible_facts={
            "heteromig_gpus": host["gpus"],
            "heteromig_mig_devices": host["mig_devices"],
            "heteromig_nvml": nvml_info,
        },
    )


if __name__ == "__main__":
    main()
