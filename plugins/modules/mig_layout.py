#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mig_layout
short_description: Declare the MIG layout of NVIDIA GPUs, plan it exactly, and apply only what changes
version_added: 0.1.0
description:
  - Sets each selected GPU to its desired MIG state, either MIG disabled or a list of GPU
    instances, each with a profile (V(3g.40gb), V(1g.10gb+me)), an optional explicit
    placement start and a compute-instance split (by default one compute instance over the
    whole GPU instance).
  - GPUs are selected by index, UUID, PCI bus id or model name; different GPUs of one host
    may get different layouts. GPUs that no selector matches are left alone.
  - Named layouts (V(all-1g), V(all-balanced), V(all-disabled), ...) are resolved per GPU
    model from its profile table, so one name works across a mixed fleet. For example
    V(all-1g) is 7 x V(1g.10gb) on an H100 80GB and 4 x V(1g.6gb) on an A30.
  - NVIDIA mig-parted config files (C(version) V(v1), C(mig-configs)) are accepted as input,
    and the resulting state is always returned in that format (RV(mig_parted_config)).
  - B(Plans before touching anything.) Every layout is checked with an exact packing check
    over the placements NVML reports for the GPU (not a memory sum). Placements are chosen
    deterministically (largest instances first, each at the lowest start that still lets
    the rest fit; explicit placements are kept), and instances are always created at those
    explicit placements, so layouts that only succeed in some creation orders always succeed.
    A layout that does not fit fails with the precise reason, before any change.
  - B(Idempotent.) A GPU whose instances already match (profile and placement; see
    O(placement_match)) is not touched; a second run reports C(changed=false).
  - B(Safe.) A GPU with compute processes on instances that would be destroyed (or on the
    GPU, for a MIG mode change) is refused with each process named (pid, name, GPU and
    compute instance), unless O(drain=true). GPUs that do not change are never written to
    or reset. A MIG mode change applies directly on Hopper; on Ampere only the GPUs whose
    mode changes are reset; where a reset is impossible the module returns
    RV(reboot_required) with the GPUs (it never reboots by itself; see the
    C(heteromig.fleet.mig_partition) role).
  - If a change fails midway, the GPU's previous layout is re-created (same placements, so
    the same GPU-instance ids) or, failing that, the GPU is left cleanly empty, and the task
    fails with the cause. Every change is verified by reading the GPU back; the module never
    reports success with instances missing.
  - Returns every MIG device of the host afterwards (RV(mig_devices), the shape of
    C(heteromig.fleet.gpu_facts)) for the steps that build engines and run benchmarks.
author:
  - heteromig developers (@heteromig)
extends_documentation_fragment:
  - heteromig.fleet.gpu_backend
  # the options and notes (plugins/doc_fragments/mig_layout.py)
  - heteromig.fleet.mig_layout
requirements:
  - Python >= 3.9 on the target
  - nvidia-ml-py on the target (module C(pynvml))
  - For O(backend=nvml), the NVIDIA driver, root, and C(nvidia-smi) (GPU resets on Ampere)
  - PyYAML on the target only for O(mig_parted_config_file) or YAML text in O(mig_parted_config)
attributes:
  check_mode:
    support: full
    description:
      - Reads and plans every GPU, refuses bad input and busy GPUs exactly as a real run would,
        and reports what would change (RV(gpus[].actions) is empty, RV(gpus[].after) is the
        plan) without changing anything, draining anything or resetting any GPU. It may reuse
        the host's record of the applied layout (O(stamp)) but never writes it.
  diff_mode:
    support: full
    description:
      - Shows one line per managed GPU before and after (MIG mode and every GPU instance as
        C(profile@start), with its compute split if not the default).
      - Then, for every GPU that changes, its planned slices (profile, GPU-instance profile id,
        placement start and size in memory slices, which ones are kept) and the equivalent
        C(nvidia-smi) commands an admin would type for the same change, in the module's order
        (C(nvidia-smi -i 0 -mig 1); C(nvidia-smi mig -i 0 -gi 7,8 -dci) then C(-dgi) for the
        instances that go; C(nvidia-smi mig -i 0 -cgi 14:0,9:4 -C), profile id and placement
        start of each new GPU instance, C(-C) creating its default compute instance; a split
        GPU instance gets C(-cci <CI profile id>:<start>,...) on the GPU instance id nvidia-smi
        prints for it). Also returned as RV(gpus[].planned_slices) and
        RV(gpus[].nvidia_smi_commands).
"""

EXAMPLES = r"""
- name: Seven 1g slices on every GPU (4 x 1g.6gb on an A30, 7 x 1g.10gb on an H100)
  heteromig.fleet.mig_layout:
    layout: all-1g

- name: Disable MIG everywhere (full-GPU runs)
  heteromig.fleet.mig_layout:
    layout: all-disabled

- name: Different layouts per GPU, selected by index, UUID, PCI bus id and model
  heteromig.fleet.mig_layout:
    gpus:
      - devices: [0, 1]
        layout: all-balanced
      - devices: GPU-1e4aeb08-d54a-e049-6ac4-e11b0489b456
        layout: [3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb]
      - devices: "00000000:9D:00.0"
        layout: all-disabled
      - devices: all
        model: A30
        optional: true
        layout: all-1g

- name: Explicit placements and a compute-instance split
  heteromig.fleet.mig_layout:
    gpus:
      - devices: 3
        layout:
          - profile: 3g.40gb
            placement: 4
            compute_instances: [1, 1, 1]
          - 2g.20gb@0
          - 1g.10gb@2
          - 1g.10gb@3

- name: Drain what runs on the instances that go (30 s of grace, then SIGKILL)
  heteromig.fleet.mig_layout:
    layout: all-7g
    drain: true
    drain_timeout: 30

- name: Apply one label of a mig-parted config file on the host
  heteromig.fleet.mig_layout:
    mig_parted_config_file: /etc/nvidia-mig-manager/config.yaml
    mig_parted_label: all-balanced

- name: Apply a mig-parted config kept on the controller
  heteromig.fleet.mig_layout:
    mig_parted_config: "{{ lookup('ansible.builtin.file', 'mig-config.yaml') | from_yaml }}"
    mig_parted_label: custom

- name: Plan a change without making it (changed stays false; would_change tells)
  heteromig.fleet.mig_layout:
    layout: all-balanced
    operation: plan
  register: mig_plan

- name: Check (without changing anything) that the fleet is in the expected layout
  heteromig.fleet.mig_layout:
    layout: all-1g
    operation: assert

- name: Show what a change would do, with the nvidia-smi commands an admin would type
  heteromig.fleet.mig_layout:
    layout: all-balanced
  check_mode: true
  diff: true
  register: mig_preview

- name: The commands for GPU 0
  ansible.builtin.debug:
    msg: "{{ mig_preview.gpus[0].nvidia_smi_commands }}"

- name: Export the current state as a mig-parted config
  heteromig.fleet.mig_layout:
    operation: export
  register: mig

- name: Save it on the controller
  ansible.builtin.copy:
    content: "{{ mig.mig_parted_config | to_nice_yaml }}"
    dest: "mig-{{ inventory_hostname }}.yaml"
    mode: "0644"
  delegate_to: localhost

- name: Simulated GPUs (backend options are usually set once with module_defaults)
  heteromig.fleet.mig_layout:
    backend: sim
    sim_state: /var/lib/heteromig/nvml-sim.json
    sim_gpus: 8xH100-SXM5-80GB
    layout: all-1g
  register: layout

- name: Use the resulting slices
  ansible.builtin.debug:
    msg: "{{ layout.mig_devices | map(attribute='uuid') | list }}"

- name: Hooks (mig-parted's format) and GPU clients, only where the layout changes
  heteromig.fleet.mig_layout:
    layout: all-balanced
    hooks_file: /etc/nvidia-mig-manager/hooks.yaml
    hooks:
      version: v1
      hooks:
        apply-exit:
          - command: /usr/bin/logger
            args: ["-t", "mig", "MIG layout change done (exit status follows)"]
    gpu_clients:
      - {unit: kubelet, order: 10, missing: skip}
      - {unit: dcgm-exporter, order: 30, missing: warn}
      - {unit: nvidia-persistenced, order: 90, needed_for: reset, missing: skip}
      - name: my-inference-server
        stop: [/usr/local/bin/inference-ctl, stop]
        start: [/usr/local/bin/inference-ctl, start]
        status: [/usr/local/bin/inference-ctl, running]
        order: 5
        timeout: 60

- name: Re-apply this layout at every boot (systemd unit heteromig-mig-layout.service)
  heteromig.fleet.mig_layout:
    layout: all-1g
    boot_persistence: present
    gpu_clients:
      - {unit: kubelet, missing: skip}

- name: Stop re-applying it at boot (disables and removes the unit and its files)
  heteromig.fleet.mig_layout:
    operation: export
    boot_persistence: absent
"""

RETURN = r"""
changed:
  description: Whether any GPU was (or, in check mode, would be) changed.
  returned: always
  type: bool
reboot_required:
  description:
    - Whether a GPU's MIG mode change waits for a reboot because the GPU could not be reset.
    - Those GPUs have no instances yet; run the module again after the reboot.
  returned: always
  type: bool
reboot_required_gpus:
  description: Indices of the GPUs that need a reboot.
  returned: always
  type: list
  elements: int
  sample: [2, 3]
gpus:
  description: One entry per managed (selected) GPU, in index order.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: NVML index of the GPU.
      type: int
    uuid:
      description: GPU UUID.
      type: str
    pci_bus_id:
      description: PCI bus id.
      type: str
    model:
      description: Catalog key of the model, or V(null) if unknown.
      type: str
    name:
      description: Device name as NVML reports it.
      type: str
    selected_by:
      description: The entry that selected the GPU (V(layout), V(gpus[1]), or a mig-parted entry).
      type: str
    layout:
      description: The requested layout as text.
      type: str
      sample: all-balanced
    changed:
      description: Whether this GPU changes (changed; in check mode and for O(operation=plan), would change).
      type: bool
    status:
      description:
        - V(unchanged), V(changed), V(would_change) (check mode, V(plan), V(assert)),
          V(reboot_required), or V(failed).
      type: str
    actions:
      description: What was done, in order (empty in check mode unless processes would be drained).
      type: list
      elements: str
      sample: ["destroyed 7g.80gb@0 (GPU instance 0)", "created 3g.40gb@4 (GPU instance 2)"]
    reset:
      description: Whether the GPU was reset (Ampere mode change).
      type: bool
    reboot_required:
      description: Whether this GPU's mode change waits for a reboot.
      type: bool
    reboot_reason:
      description: Why a reset was not possible.
      type: str
      returned: when reboot_required
    drained:
      description: Processes that were (or in check mode would be) terminated.
      type: list
      elements: dict
    mig_device_count:
      description: MIG devices (compute instances) the GPU has after the run (in check mode, would have).
      type: int
      sample: 7
    planned_slices:
      description:
        - For a GPU that changes (empty otherwise), the planned GPU instances by placement
          start, each with C(profile), C(profile_id) (the C(nvidia-smi mig -lgip) id),
          C(placement) (C(start), C(size) in memory slices), C(compute_instances) and C(kept)
          (already there, left alone).
      type: list
      elements: dict
      version_added: 0.2.0
      sample:
        - {profile: 3g.40gb, profile_id: 9, placement: {start: 4, size: 4},
           compute_instances: [{start: 0, size: 3}], kept: false}
    nvidia_smi_commands:
      description:
        - The C(nvidia-smi) commands that make the same change by hand (empty for a GPU that
          does not change), in the order the module makes the change (see diff mode).
      type: list
      elements: str
      version_added: 0.2.0
      sample:
        - nvidia-smi mig -i 0 -gi 7,8,11,12,13 -dci
        - nvidia-smi mig -i 0 -gi 7,8,11,12,13 -dgi
        - nvidia-smi mig -i 0 -cgi 14:0,9:4 -C
    before:
      description: MIG mode (C(mig_enabled), C(mig_pending)) and C(instances) before.
      type: dict
      returned: when O(return_gpu_states=true)
    after:
      description: The same after the change (in check mode, the plan).
      type: dict
      returned: when O(return_gpu_states=true)
      sample:
        mig_enabled: true
        mig_pending: true
        instances:
          - profile: 3g.40gb
            placement: {start: 4, size: 4}
            compute_instances: [{start: 0, size: 3}]
            gpu_instance_id: 2
unmanaged_gpus:
  description: Indices of GPUs no selector chose (left alone).
  returned: always
  type: list
  elements: int
mig_devices:
  description:
    - Every MIG device of the host after the run (before it, in check mode), one per compute
      instance, in the shape of C(heteromig.fleet.gpu_facts)'s C(heteromig_mig_devices).
    - Each has C(uuid), C(gpu_index), C(gpu_uuid), C(gpu_model), C(gpu_instance_id),
      C(compute_instance_id), C(profile), C(gpu_instance_profile), C(placement) and
      C(compute_placement), among others.
  returned: when O(return_mig_devices=true)
  type: list
  elements: dict
  sample:
    - uuid: MIG-b4b2228d-6933-5839-bc0e-41ab9edb61c6
      gpu_index: 0
      gpu_instance_id: 2
      compute_instance_id: 0
      profile: 3g.40gb
      placement: {start: 4, size: 4}
mig_parted_config:
  description: The host's MIG state afterwards as an NVIDIA mig-parted config, version V(v1).
  returned: always
  type: dict
  sample:
    version: v1
    mig-configs:
      current:
        - devices: all
          mig-enabled: true
          mig-devices: {1g.10gb: 7}
would_change:
  description:
    - Whether an apply of the request would change (outside check mode, for O(operation=apply),
      did change) any selected GPU, as the GPUs were when the task started. With
      O(operation=plan), the answer the task is for; RV(changed) is then always V(false).
  returned: success
  type: bool
plan_reused:
  description:
    - Whether the result is the host's record of the layout last applied (see O(stamp)),
      because the request, the planning code and the MIG state all matched it; nothing was
      planned then.
  returned: success
  type: bool
busy:
  description: The processes that made the task refuse (or that a drain could not end).
  returned: when refused because of processes
  type: list
  elements: dict
rollback:
  description: After a failure midway, what happened to the failed GPU.
  returned: when a change failed
  type: dict
  contains:
    outcome:
      description: V(restored) (previous layout back), V(emptied) (GPU left empty), V(failed).
      type: str
    message:
      description: In words.
      type: str
    state:
      description: The GPU's state afterwards, as text.
      type: str
failed_gpu:
  description: Index of the GPU whose change failed.
  returned: when a change failed
  type: int
hook_points:
  description:
    - The hook points this run ran (in check mode, would run), in order; empty on a host whose
      GPUs do not change.
  returned: when hooks are given
  type: list
  elements: str
  sample: [apply-start, pre-apply-config, apply-exit]
  version_added: 0.2.0
hooks_run:
  description: Every hook command that ran, in order (none in check mode).
  returned: when hooks are given
  type: list
  elements: dict
  version_added: 0.2.0
  contains:
    point:
      description: The hook point.
      type: str
    command:
      description: The command.
      type: str
    args:
      description: Its arguments.
      type: list
      elements: str
    rc:
      description: Its exit status (V(null) if it could not start or was killed).
      type: int
    stdout:
      description: The end of its standard output.
      type: str
    stderr:
      description: The end of its standard error.
      type: str
    seconds:
      description: How long it ran.
      type: float
gpu_clients:
  description:
    - The GPU clients this change needed (none on a host whose GPUs do not change), in stop
      order, each with C(name), C(unit), C(order), C(present), C(was_running), C(stopped),
      C(restored) and, in check mode, C(would_stop).
  returned: when gpu_clients are given
  type: list
  elements: dict
  version_added: 0.2.0
  sample:
    - {name: kubelet.service, unit: kubelet.service, order: 10, present: true,
       was_running: true, stopped: true, restored: true}
boot_persistence:
  description: What boot persistence has (or, in check mode and for a plan, would have) done.
  returned: when O(boot_persistence) is set
  type: dict
  version_added: 0.2.0
  contains:
    state:
      description: V(present) or V(absent), as asked.
      type: str
    changed:
      description: Whether files were written or removed, or the unit enabled.
      type: bool
    would_change:
      description: Whether an apply would change them (or the GPUs' layout).
      type: bool
    enabled:
      description: Whether the unit is enabled (for V(present)).
      type: bool
    files:
      description: The files written or removed (for a plan, those that differ).
      type: list
      elements: str
    unit:
      description: The unit file.
      type: str
    layout_file:
      description: The desired layout the boot entry applies (C(layout.json)).
      type: str
    mig_parted_config_file:
      description: The same layout as a mig-parted v1 config (C(config.yaml)).
      type: str
    entry:
      description: The boot entry (C(heteromig-mig-boot apply|status)).
      type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_stamp import (
    LayoutStamp,
    default_stamp_path,
    stamp_key,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_state import (
    OPERATIONS,
    PLACEMENT_MATCH_MODES,
    MigStateReader,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BACKEND_ARGUMENT_SPEC,
    opened_backend,
)

_LAYOUT_SOURCES = ("layout", "gpus", "mig_parted_config", "mig_parted_config_file")


def _option_error(params):
    """What is wrong with the combination of options, or None.

    The layout sources are checked here rather than by AnsibleModule's mutually_exclusive and
    required_if, which count an option set to null as given: the role passes its variables
    (null by default) straight through, without a template that tests each one.
    """
    given = [name for name in _LAYOUT_SOURCES if params[name] is not None]
    if len(given) > 1:
        return "parameters are mutually exclusive: %s (give one)" % "|".join(given)
    if not given and params["operation"] in ("apply", "plan", "assert"):
        return "operation is %s but none of the following is given: %s" % (
            params["operation"],
            ", ".join(_LAYOUT_SOURCES),
        )
    if params["drain_timeout"] < 0:
        return "drain_timeout must be 0 or more seconds, not %d" % params["drain_timeout"]
    if params["boot_persistence"] == "present" and params["operation"] not in ("apply", "plan"):
        return "boot_persistence: present needs a layout to keep (operation apply or plan)"
    if params["boot_persistence"] is not None and params["operation"] == "assert":
        return "boot_persistence is for operation apply, plan or export, not assert"
    if params["mig_parted_label"] is not None and not (
        params["mig_parted_config"] is not None or params["mig_parted_config_file"] is not None
    ):
        return "mig_parted_label needs mig_parted_config or mig_parted_config_file"
    return None


def _argument_spec():
    spec = dict(BACKEND_ARGUMENT_SPEC)
    spec.update(
        layout=dict(type="raw"),
        gpus=dict(
            type="list",
            elements="dict",
            options=dict(
                devices=dict(type="raw", default="all"),
                model=dict(type="raw"),
                layout=dict(type="raw", required=True),
                optional=dict(type="bool", default=False),
            ),
        ),
        mig_parted_config=dict(type="raw"),
        mig_parted_config_file=dict(type="path"),
        mig_parted_label=dict(type="str"),
        placement_match=dict(type="str", default="exact", choices=list(PLACEMENT_MATCH_MODES)),
        drain=dict(type="bool", default=False),
        drain_timeout=dict(type="int", default=30),
        operation=dict(type="str", default="apply", choices=list(OPERATIONS)),
        export_label=dict(type="str", default="current"),
        return_mig_devices=dict(type="bool", default=True),
        return_gpu_states=dict(type="bool", default=True),
        stamp=dict(type="bool", default=True),
        deprecated_variables=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                name=dict(type="str", required=True),
                replacement=dict(type="str", required=True),
                conflict=dict(type="bool", default=False),
            ),
        ),
        hooks=dict(type="dict"),
        hooks_file=dict(type="path"),
        hooks_timeout=dict(type="int", default=300),
        gpu_clients=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                name=dict(type="str"),
                unit=dict(type="str"),
                stop=dict(type="raw"),
                start=dict(type="raw"),
                status=dict(type="raw"),
                order=dict(type="raw", default=50),
                timeout=dict(type="raw", default=120),
                missing=dict(type="str", default="fail", choices=["fail", "skip", "warn"]),
                needed_for=dict(
                    type="str", default="change", choices=["change", "mode_change", "reset"]
                ),
            ),
        ),
        boot_persistence=dict(type="str", choices=["present", "absent"]),
        boot_config_dir=dict(type="path", default="/etc/heteromig/mig"),
        boot_runtime_dir=dict(type="path", default="/var/lib/heteromig/mig-boot"),
        boot_unit_dir=dict(type="path", default="/etc/systemd/system"),
        boot_after=dict(
            type="list",
            elements="str",
            default=[
                "systemd-modules-load.service",
                "nvidia-persistenced.service",
                "nvidia-fabricmanager.service",
            ],
        ),
    )
    return spec


DEPRECATED_VARIABLES_REMOVED_IN = "1.0.0"


def _variable_conflicts(module):
    """Warn about each deprecated variable; the message for those that conflict, or None."""
    conflicts = []
    for entry in module.params["deprecated_variables"]:
        if entry["conflict"]:
            conflicts.append(
                "%s and its deprecated old name %s are both set, to different values"
                % (entry["replacement"], entry["name"])
            )
        else:
            module.deprecate(
                "the variable %s is deprecated: set %s instead"
                % (entry["name"], entry["replacement"]),
                version=DEPRECATED_VARIABLES_REMOVED_IN,
                collection_name="heteromig.fleet",
            )
    if not conflicts:
        return None
    return "%s; set only the new name. Nothing was changed." % "; ".join(conflicts)


def _shaped(module, result, reader, host_state):
    """What the task returns: the options decide the diff, the GPU states and MIG devices."""
    if not module._diff:
        result.pop("diff", None)
    if not module.params["return_gpu_states"]:
        for gpu in result["gpus"]:
            gpu.pop("before", None)
            gpu.pop("after", None)
    if module.params["return_mig_devices"] and "mig_devices" not in result:
        result["mig_devices"] = [
            device
            for gpu in host_state["gpus"]
            if gpu["mig_current"]
            for device in reader.mig_devices(reader.handle(gpu["index"]), gpu)
        ]
    return result


def _request(params, file_text):
    """The options a stamp is keyed by: a plan or an assert records what an apply would return."""
    request = dict(params, operation="apply")
    request["mig_parted_config_file_text"] = file_text
    return request


def _run(module, backend, file_text, guarded):
    params = module.params
    reader = MigStateReader(backend.nvml)
    host_state = reader.host_state()
    stamp = None
    request = _request(params, file_text)
    if params["stamp"] and params["operation"] != "export":
        stamp = LayoutStamp(default_stamp_path(params["backend"], params["sim_state"]))
    if stamp is not None and params["operation"] in ("apply", "plan"):
        reused = stamp.lookup(stamp_key(request, host_state))
        if reused is not None:
            # a recorded layout that matches: nothing changes, so no hook runs, no client stops
            if guarded is not None and not guarded[0].empty:
                reused.update(hook_points=[], hooks_run=[])
            if guarded is not None and guarded[1]:
                reused["gpu_clients"] = []
            return _shaped(module, dict(reused, plan_reused=True), reader, host_state)
    # the planner, hooks and clients: imported only by runs that plan
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_run import (
        plan_and_apply,
    )

    result = plan_and_apply(module, backend, reader, host_state, file_text, request, stamp, guarded)
    return _shaped(module, dict(result, plan_reused=False), reader, host_state)


def _guard_inputs(module):
    """The validated (hooks, GPU clients), or None when neither is given; fails on bad ones."""
    params = module.params
    if params["hooks"] is None and not params["hooks_file"] and not params["gpu_clients"]:
        return None
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_run import (
        guard_inputs,
    )

    return guard_inputs(module)


def main():
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True)
    params = module.params
    error = _variable_conflicts(module) or _option_error(params)
    if error is not None:
        module.fail_json(msg=error, changed=False)
    file_text = None
    if params["mig_parted_config_file"] is not None:
        path = params["mig_parted_config_file"]
        try:
            with open(path, encoding="utf-8") as handle:
                file_text = handle.read()
        except OSError as exc:
            module.fail_json(
                msg="cannot read mig_parted_config_file %s: %s" % (path, exc.strerror or exc),
                changed=False,
            )

    # Hooks and GPU clients act only where the GPUs change. An apply checks them first (they run
    # around its change); a plan checks them only where it would change, or for boot persistence
    # (whose unit is ordered before the clients): a host that stays as it is pays nothing.
    guarded = _guard_inputs(module) if params["operation"] == "apply" else None
    if params["boot_persistence"] == "present" and module.get_bin_path("systemctl") is None:
        module.fail_json(
            msg="boot_persistence: present needs systemd, but systemctl is not on "
            "this host's PATH; nothing was changed",
            changed=False,
        )

    with opened_backend(
        params,
        lambda msg: module.fail_json(msg=msg, changed=False),
        "NVML",
        run_command=module.run_command,
    ) as backend:
        result = _run(module, backend, file_text, guarded)
    if params["operation"] == "plan" and (
        result["would_change"] or params["boot_persistence"] == "present"
    ):
        guarded = _guard_inputs(module)
    if params["boot_persistence"] is not None:
        from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_run import (
            persistence,
        )

        result = persistence(module, result, guarded)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
