# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Options of every module that talks to GPUs through NVML. Playbooks set them once for all
    # of them with module_defaults on the action group heteromig.fleet.gpu.
    DOCUMENTATION = r"""
options:
  backend:
    description:
      - Which NVML to talk to.
      - C(nvml) is the real NVIDIA Management Library through the C(nvidia-ml-py) package.
        A host without the NVIDIA driver fails with a message naming the missing library;
        there is no silent fallback to the simulator.
      - C(sim) is heteromig's simulated NVML, a pynvml-compatible backend that keeps its
        state in O(sim_state). Use it for hosts whose GPUs are simulated (tests, demos,
        C(inventories/local)).
      - Inventories usually set this per host as C(heteromig_gpu_backend).
    type: str
    choices: [nvml, sim]
    default: nvml
  sim_state:
    description:
      - Path on the target of the simulator's state file. Required when O(backend=sim).
      - Created on first use from O(sim_gpus); several processes may use it at once.
      - Inventories usually set this as C(heteromig_sim_state).
    type: path
  sim_gpus:
    description:
      - The simulated GPUs of the host, used when O(backend=sim).
      - A string such as V(8xH100-SXM5-80GB) or V(2xA100-SXM4-40GB,1xA30-24GB), or a list
        of mappings with keys C(model), C(count) and C(reset_supported) (V(false) models a
        host that cannot reset a GPU, such as a passthrough VM).
      - "Models: V(H100-SXM5-80GB), V(A100-SXM4-80GB), V(A100-SXM4-40GB), V(A30-24GB),
        V(H100-NVL-94GB), V(H200-141GB), or their aliases (V(H100), V(A100-40GB), V(A30), ...)."
      - If the state file exists and was created for other GPUs, the module fails and says
        so rather than silently using either description.
      - Inventories usually set this as C(heteromig_sim_gpus).
    type: raw
"""
