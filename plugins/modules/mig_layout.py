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
options:
  layout:
    description:
      - The layout for every MIG-capable GPU of the host.
      - A named layout, V(all-disabled) (also V(disabled) or V(false)), V(all-enabled) (MIG on,
        no instances), V(all-1g), V(all-2g), V(all-3g), V(all-4g), V(all-7g) (as many of the
        1/2/3/4/7-slice profile as fit), V(all-max) (one instance of the largest profile; the
        whole GPU), V(all-balanced) (a half-GPU instance, the next smaller one, and 1-slice
        instances for the rest, for example 3g+2g+1g+1g on an H100, 2g+1g+1g on an A30), or
        V(all-<profile>) such as V(all-3g.40gb) or V(all-1g.10gb+me) (as many of that profile
        as fit; only on models that have it).
      - Or a list of GPU instances. Each item is a profile name (V(3g.40gb)), a profile with
        an explicit placement start (V(3g.40gb@4), memory slices as C(nvidia-smi mig -lgipp)
        prints them), a count (V(2x1g.10gb)), or a mapping with the keys C(profile),
        C(placement), C(count) and C(compute_instances) (a list of compute-instance sizes in
        compute slices, such as V([1, 1, 1]) or V(['2c', '1c'])). A comma-separated string
        of items is accepted too. An empty list means MIG enabled with no instances.
      - Or a mapping with the keys C(mig_enabled) (bool) and C(instances) (a list as above).
      - Mutually exclusive with O(gpus), O(mig_parted_config) and O(mig_parted_config_file).
        One of these is required for O(operation=apply), O(operation=plan) and
        O(operation=assert). An option set
        to V(null) counts as not given, so a role can pass its variables straight through.
    type: raw
  gpus:
    description:
      - Layouts per GPU selector. Every entry selects GPUs and gives them a layout (same forms
        as O(layout)).
      - A GPU that two entries select with different layouts is an error. GPUs no entry
        selects are left alone (listed in RV(unmanaged_gpus)).
    type: list
    elements: dict
    suboptions:
      devices:
        description:
          - V(all) (every MIG-capable GPU), or one selector or a list of them.
          - A selector is a GPU index (V(3)), a GPU UUID (V(GPU-1e4aeb08-...)), a PCI bus id
            (V(00000000:1B:00.0) or V(1b:00.0)), or a model name (a catalog key such as
            V(A30-24GB), an alias such as V(H100), or the NVML device name). A mapping with
            one of the keys C(index), C(uuid), C(pci_bus_id), C(model) says which it is.
          - A selector that matches no GPU of the host is an error (see O(gpus[].optional)).
        type: raw
        default: all
      model:
        description:
          - Only GPUs of these models (one name or a list), combined with O(gpus[].devices).
            Also accepts PCI device ids such as V(0x20B710DE), as mig-parted's
            C(device-filter) does.
        type: raw
      layout:
        description:
          - The layout of the selected GPUs, in any form O(layout) takes.
        type: raw
        required: true
      optional:
        description:
          - Allow this entry to match no GPU on a host (for one list of entries shared by a
            fleet of different models).
        type: bool
        default: false
  mig_parted_config:
    description:
      - An NVIDIA mig-parted config (C(version) V(v1) with C(mig-configs)), as data or as YAML
        text. The entries of the label O(mig_parted_label) are applied.
      - C(devices) (V(all) or a list of indices), C(mig-enabled), C(mig-devices) (profile to
        count; a count of 3 for V(1c.3g.40gb) means three 1-slice compute instances, packed into as few
        V(3g.40gb) GPU instances as hold them, as mig-parted does) and C(device-filter) (PCI
        device ids or model names; an entry whose filter matches no GPU of a host is skipped,
        as in mig-parted) are supported.
    type: raw
  mig_parted_config_file:
    description:
      - Path on the target of a mig-parted config file (YAML or JSON), for example
        C(/etc/nvidia-mig-manager/config.yaml).
    type: path
  mig_parted_label:
    description:
      - The label under C(mig-configs) to apply. Required when the config has several labels.
    type: str
  placement_match:
    description:
      - How strictly existing instances must match for a GPU to count as unchanged.
      - V(exact) needs every GPU instance at the placement the planner chooses (or the one given)
        and the same compute-instance placements.
      - V(explicit) needs the same profiles and compute splits, and the placements only where
        they are given explicitly.
      - V(none) needs the same profiles and compute splits only (mig-parted's rule).
      - When a GPU does not match, it is rebuilt to the planned placements; instances that
        already sit exactly there are kept.
    type: str
    choices: [exact, explicit, none]
    default: exact
  drain:
    description:
      - Terminate compute processes that hold instances this task must destroy (or the GPU,
        for a MIG mode change) with SIGTERM, then SIGKILL after O(drain_timeout) seconds, until
        NVML no longer lists them. Without it, such GPUs are refused and nothing changes.
    type: bool
    default: false
  drain_timeout:
    description:
      - Seconds of grace between SIGTERM and SIGKILL when draining.
    type: int
    default: 30
  operation:
    description:
      - V(apply) makes the GPUs match.
      - V(plan) changes nothing, in any mode, and reports what an apply would do, exactly as
        an apply in check mode does (bad input and busy GPUs fail the same way), but with
        RV(changed) always V(false); RV(would_change) says whether the GPUs differ. Outside
        check mode it records a layout that already matches (see O(stamp)), so that a role
        plans every host with one read-only call.
      - V(assert) changes nothing and fails if any selected GPU differs (like
        C(nvidia-mig-parted assert)).
      - V(export) changes nothing and only returns the current state (no layout needed).
    type: str
    choices: [apply, plan, assert, export]
    default: apply
  export_label:
    description:
      - The label of the C(mig-configs) entry in RV(mig_parted_config).
    type: str
    default: current
  return_mig_devices:
    description:
      - Read every MIG device (its UUID takes several NVML calls per device) and return them in
        RV(mig_devices).
      - V(false) makes a run that only plans or checks cheaper on hosts with many instances;
        GPUs that change are still read back and verified device by device.
    type: bool
    default: true
  return_gpu_states:
    description:
      - Return each managed GPU's MIG state before and after the run (RV(gpus[].before),
        RV(gpus[].after)).
      - V(false) leaves them out, so a host whose layout already matches returns a few hundred
        bytes per GPU instead of about 2 KB (Ansible's controller spends time on every byte of
        every host's result). RV(gpus[].mig_device_count) and RV(mig_parted_config) are still
        returned; diff mode shows the states as text either way.
    type: bool
    default: true
  stamp:
    description:
      - Record, after a run outside check mode that applied the layout (or found it applied),
        or an O(operation=plan) or O(operation=assert) that found it, the result that an apply
        of the same request returns on the GPUs as they are then; and return that record,
        without planning again, from a later apply or plan (also in check mode) whose request,
        planning code (this collection's version) and host MIG state (every GPU, its MIG mode,
        GPU and compute instances and placements, and the profiles NVML reports) all match it
        (RV(plan_reused)). Anything else plans as usual.
      - The record is C(/var/lib/heteromig/mig_layout-stamp.json), or, for O(backend=sim),
        C(mig_layout-stamp.json) beside O(sim_state). Check mode only reads it; a missing or
        unreadable record just means planning; a record that cannot be written is a warning.
      - V(false) neither reads nor writes it. O(operation=export) never does.
    type: bool
    default: true
  deprecated_variables:
    description:
      - For the C(heteromig.fleet.mig_partition) role, which passes the deprecated variable
        names (C(mig_partition_*)) a host still sets, so that their warnings and conflicts
        cost no task of their own. Rarely set by hand.
      - Each entry names an old variable (C(name)) and the one that replaces it
        (C(replacement)); the task shows a deprecation warning naming both.
      - An entry with C(conflict=true) (both names set, to different values) fails the task
        before any GPU is read or changed.
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      name:
        description: The deprecated variable.
        type: str
        required: true
      replacement:
        description: The variable to set instead.
        type: str
        required: true
      conflict:
        description: Whether both are set to different values.
        type: bool
        default: false
  hooks:
    description:
      - Commands to run around a change, in NVIDIA mig-parted's hooks format (C(version) V(v1),
        C(hooks) mapping hook points to lists of C(command), C(args), C(envs), C(workdir)).
      - The hook points are mig-parted's. V(apply-start) runs first, V(pre-apply-mode) when a
        MIG mode changes, V(pre-apply-config) when GPU instances change, and V(apply-exit) last.
        V(apply-exit) always runs once V(apply-start) succeeded, also after a failed change,
        with C(HETEROMIG_MIG_EXIT_STATUS) V(0) or V(1).
      - Hooks run B(only on a host whose GPUs change), and both V(pre-*) points run before
        the first change, so a failing V(pre-*) hook stops the task with nothing changed.
        Commands of one point run in order; the first that fails ends the point.
      - Every hook gets mig-parted's variables C(MIG_PARTED_CONFIG_FILE),
        C(MIG_PARTED_SELECTED_CONFIG) (the O(mig_parted_label), the single label of the
        config, the name of a named O(layout), or V(heteromig)), C(MIG_PARTED_HOOKS_FILE),
        C(MIG_PARTED_SKIP_RESET) and C(MIG_PARTED_MODE_CHANGE_ONLY) (both V(false)); also
        C(PATH), C(HETEROMIG_MIG_HOOK) (the point) and its own C(envs), which these override.
      - In check mode no hook runs; RV(hook_points) and the diff say which would.
      - An unknown hook point or key, a version other than V(v1), or a command or workdir that
        does not exist on the host fails the task before anything runs or changes.
        O(operation=plan) checks O(hooks), O(hooks_file) and O(gpu_clients) only where the
        layout would change or O(boot_persistence=present), so that a host that stays as it is
        pays nothing for them.
      - Combined with O(hooks_file), the file's hooks of each point run first.
    type: dict
    version_added: 0.2.0
  hooks_file:
    description:
      - Path on the target of a mig-parted hooks file (YAML or JSON, the format of O(hooks)),
        such as C(/etc/nvidia-mig-manager/hooks.yaml).
    type: path
    version_added: 0.2.0
  hooks_timeout:
    description:
      - Seconds each hook command may run before it is killed and counts as failed.
    type: int
    default: 300
    version_added: 0.2.0
  gpu_clients:
    description:
      - Services that hold the GPUs, stopped before a change and started again after it,
        B(only on a host whose GPUs change), and only those that were running. They are
        started again also when the change fails.
      - Stopped after the V(pre-*) hooks, by O(gpu_clients[].order), and started again in the
        reverse order before the V(apply-exit) hooks.
      - A client that does not exist fails the task before anything runs or changes, unless
        its O(gpu_clients[].missing) says otherwise.
      - In check mode nothing is stopped; RV(gpu_clients) says which would be.
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      name:
        description: A name for messages (default the unit, or the stop command's program).
        type: str
      unit:
        description:
          - A systemd unit (V(kubelet), V(dcgm-exporter.service)); C(.service) is added to a
            name without a suffix. Missing when systemd does not know it (C(LoadState=not-found)).
        type: str
      stop:
        description: Instead of O(gpu_clients[].unit), the command that stops it (a list of arguments, or a command line).
        type: raw
      start:
        description: The command that starts it again.
        type: raw
      status:
        description:
          - Optional command whose exit status 0 means "running" (only running clients are stopped);
            without it the client is always stopped and started. Missing when the stop or start
            command does not exist.
        type: raw
      order:
        description: An integer, 0 or more; lower stops first. Ties keep the list order.
        type: raw
        default: 50
      timeout:
        description: Seconds each of its commands (status, stop, start) may take; more than 0.
        type: raw
        default: 120
      missing:
        description:
          - What to do when it does not exist on the host. V(fail) the task (nothing changed),
            V(skip) it silently, or V(warn) and skip it.
        type: str
        choices: [fail, skip, warn]
        default: fail
      needed_for:
        description:
          - Which changes need it stopped. V(change) (any change of the host's GPUs),
            V(mode_change) (a MIG mode change), or V(reset) (a MIG mode change that resets a
            GPU, as on Ampere; for C(nvidia-persistenced), which holds the GPU open).
        type: str
        choices: [change, mode_change, reset]
        default: change
  boot_persistence:
    description:
      - V(present) makes the host re-apply this layout at every boot, V(absent) removes that;
        unset leaves it as it is.
      - V(present) installs, once the layout is applied, the desired layout
        (C(<boot_config_dir>/layout.json), placements included, and the same layout as an
        NVIDIA mig-parted v1 config in C(<boot_config_dir>/config.yaml), which
        C(nvidia-mig-parted) can read), a boot entry with the code it needs
        (C(<boot_runtime_dir>/heteromig-mig-boot), run with the Python this task runs with; no
        Ansible needed) and the systemd unit C(heteromig-mig-layout.service), ordered after
        O(boot_after) and before the units of O(gpu_clients), and enables it.
        C(heteromig-mig-boot status) on the host says whether the applied layout matches.
      - Files are written only where they differ. O(operation=plan) and check mode report
        RV(boot_persistence.would_change) and change nothing.
      - V(present) on a host without C(systemctl) fails before anything changes.
    type: str
    choices: [present, absent]
    version_added: 0.2.0
  boot_config_dir:
    description: Where the desired layout is kept for boot persistence.
    type: path
    default: /etc/heteromig/mig
    version_added: 0.2.0
  boot_runtime_dir:
    description: Where the boot entry and its code are installed.
    type: path
    default: /var/lib/heteromig/mig-boot
    version_added: 0.2.0
  boot_unit_dir:
    description: Where the systemd unit is installed.
    type: path
    default: /etc/systemd/system
    version_added: 0.2.0
  boot_after:
    description:
      - Units the boot unit is ordered after (C(After=)), those that load the driver. Units of
        O(gpu_clients) listed here are not put in C(Before=).
    type: list
    elements: str
    default: [systemd-modules-load.service, nvidia-persistenced.service, nvidia-fabricmanager.service]
    version_added: 0.2.0
notes:
  - A reboot (needed where a GPU cannot be reset) destroys every MIG instance of the host, and
    Hopper GPUs also lose their MIG mode; run the module again afterwards (the
    C(heteromig.fleet.mig_partition) role does this).
  - Draining on real hosts needs root to signal other users' processes.
  - Named layouts, profile names and placements come from the GPU itself through NVML; the
    compute-instance rules come from the collection's GPU catalog.
  - MIG device UUIDs change whenever an instance is re-created; GPU-instance ids depend only
    on the placement.
seealso:
  - module: heteromig.fleet.gpu_facts
  - name: NVIDIA MIG user guide
    description: MIG profiles, placements and compute instances.
    link: https://docs.nvidia.com/datacenter/tesla/mig-user-guide/
  - name: NVIDIA mig-parted
    description: The declarative MIG tool whose config format this module reads and writes.
    link: https://github.com/NVIDIA/mig-parted
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

import os
import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.heteromig.fleet.plugins.module_utils._gpu_backend import (
    BACKEND_ARGUMENT_SPEC,
    BackendError,
    nvml_error_text,
    open_backend,
)
from ansible_collections.heteromig.fleet.plugins.module_utils._mig_stamp import (
    LayoutStamp,
    default_stamp_path,
    stamp_key,
)
from ansible_collections.heteromig.fleet.plugins.module_utils._mig_state import (
    OPERATIONS,
    PLACEMENT_MATCH_MODES,
    MigStateReader,
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
            params["operation"], ", ".join(_LAYOUT_SOURCES))
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
                needed_for=dict(type="str", default="change",
                                choices=["change", "mode_change", "reset"]),
            ),
        ),
        boot_persistence=dict(type="str", choices=["present", "absent"]),
        boot_config_dir=dict(type="path", default="/etc/heteromig/mig"),
        boot_runtime_dir=dict(type="path", default="/var/lib/heteromig/mig-boot"),
        boot_unit_dir=dict(type="path", default="/etc/systemd/system"),
        boot_after=dict(type="list", elements="str",
                        default=["systemd-modules-load.service", "nvidia-persistenced.service",
                                 "nvidia-fabricmanager.service"]),
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
                % (entry["replacement"], entry["name"]))
        else:
            module.deprecate(
                "the variable %s is deprecated: set %s instead" % (entry["name"], entry["replacement"]),
                version=DEPRECATED_VARIABLES_REMOVED_IN, collection_name="heteromig.fleet")
    if not conflicts:
        return None
    return "%s; set only the new name. Nothing was changed." % "; ".join(conflicts)


def _entries(params, file_text):
    """The layout entries from whichever option gives them (none for export without one)."""
    # the planner is imported only by runs that plan (not by one that reuses its stamp)
    from ansible_collections.heteromig.fleet.plugins.module_utils._mig_plan import (
        parse_gpu_entries,
        parse_mig_parted,
    )

    if params["mig_parted_config_file"] is not None:
        return parse_mig_parted(file_text, params["mig_parted_label"],
                                "mig_parted_config_file %s" % params["mig_parted_config_file"])
    if params["mig_parted_config"] is not None:
        return parse_mig_parted(params["mig_parted_config"], params["mig_parted_label"])
    if params["layout"] is None and params["gpus"] is None:
        return []
    return parse_gpu_entries(params["layout"], params["gpus"])


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
            device for gpu in host_state["gpus"] if gpu["mig_current"]
            for device in reader.mig_devices(reader.handle(gpu["index"]), gpu)
        ]
    return result


def _plan_and_apply(module, backend, reader, host_state, file_text, stamp, guarded):
    """Plan from ``host_state`` and, unless check mode, apply; record the result in ``stamp``.

    ``guarded``: the validated (hooks, GPU clients), run around a change (``_mig_change``).
    """
    from ansible_collections.heteromig.fleet.plugins.module_utils._mig_apply import (
        HostMig,
        MigApplyError,
        run_host,
    )
    from ansible_collections.heteromig.fleet.plugins.module_utils._mig_plan import LayoutError

    params = module.params
    mig = HostMig(backend, state=reader)
    options = dict(
        match=params["placement_match"],
        drain=params["drain"],
        drain_timeout=params["drain_timeout"],
        export_label=params["export_label"],
        mig=mig,
    )
    guard = None
    if guarded is not None:
        from ansible_collections.heteromig.fleet.plugins.module_utils._mig_change import guard_for

        guard = guard_for(params, guarded[0], guarded[1], _search_path())
    try:
        entries = _entries(params, file_text)
        result = run_host(backend, entries, check_mode=module.check_mode, host_state=host_state,
                          operation=params["operation"], with_devices=params["return_mig_devices"],
                          prepare=guard.prepare if guard is not None else None, **options)
    except LayoutError as exc:
        module.fail_json(msg=str(exc), changed=False)
    except MigApplyError as exc:
        failed = dict(exc.result)
        failed.pop("diff", None)
        failed.setdefault("changed", False)
        msg = str(exc)
        if guard is not None:
            # GPU clients back, apply-exit run: also after a failed change
            problems = guard.finish(False)
            failed.update(guard.result())
            if problems:
                msg += "; then: " + "; ".join(problems)
        module.fail_json(msg=msg, **failed)
    except BaseException:
        if guard is not None:
            guard.finish(False)
        raise
    if guard is not None:
        problems = guard.finish(True)
        result.update(guard.result())
        extra = guard.diff_text()
        if extra:
            result["diff"]["prepared"] = result["diff"].get("prepared", "") + extra
        if problems:
            failed = dict(result)
            failed.pop("diff", None)
            module.fail_json(msg="the MIG layout was applied, but: %s" % "; ".join(problems), **failed)
    if stamp is not None and not module.check_mode and (result["changed"] or not result["would_change"]):
        # what an apply of this request returns from now on, while the GPUs stay as they are
        after = reader.host_state() if result["changed"] else host_state
        if params["operation"] == "plan" and not params["return_mig_devices"]:
            # a plan is a check-mode apply on this very state, here without devices, so its
            # result is already the record
            again = result
        else:
            again = run_host(backend, entries, check_mode=True, host_state=after,
                             operation="apply", with_devices=False, **options)
        if not again["changed"]:
            try:
                stamp.store(stamp_key(_request(params, file_text), after), again)
            except OSError as exc:
                module.warn("could not record the applied layout in %s (%s); the next run "
                            "plans again" % (stamp.path, exc.strerror or exc))
    return result


def _request(params, file_text):
    """The options a stamp is keyed by: a plan or an assert records what an apply would return."""
    request = dict(params, operation="apply")
    request["mig_parted_config_file_text"] = file_text
    return request


def _search_path():
    """Where hook commands and GPU client commands are looked up (and hooks' PATH)."""
    return os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _guard_inputs(module):
    """The validated (hooks, GPU clients), or None when neither is given; fails on bad ones."""
    params = module.params
    if params["hooks"] is None and not params["hooks_file"] and not params["gpu_clients"]:
        return None
    from ansible_collections.heteromig.fleet.plugins.module_utils._mig_clients import ClientError
    from ansible_collections.heteromig.fleet.plugins.module_utils._mig_hooks import (
        HookError,
        validate_inputs,
    )

    text = None
    if params["hooks_file"]:
        try:
            with open(params["hooks_file"], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            module.fail_json(msg="cannot read hooks_file %s: %s; nothing was changed"
                             % (params["hooks_file"], exc.strerror or exc), changed=False)
    try:
        return validate_inputs(params, text)
    except (HookError, ClientError) as exc:
        module.fail_json(msg="%s; nothing was changed" % exc, changed=False)
    return None


def _persistence(module, result, guarded):
    """Boot persistence (``_mig_persist``) after the run; the result with RV(boot_persistence)."""
    params = module.params
    # _mig_boot is not called here, but installed on the host from this module's payload
    from ansible_collections.heteromig.fleet.plugins.module_utils import (  # noqa: F401  pylint: disable=unused-import
        _mig_boot,
    )
    from ansible_collections.heteromig.fleet.plugins.module_utils._mig_persist import (
        PersistError,
        persistence_step,
    )

    apply_now = (not module.check_mode and params["operation"] in ("apply", "export")
                 and not result.get("reboot_required"))
    try:
        done = persistence_step(params, result, guarded[1] if guarded else [], apply_now,
                                module.run_command, module.get_bin_path("systemctl"),
                                sys.executable)
    except (PersistError, OSError) as exc:
        failed = dict(result)
        failed.pop("diff", None)
        module.fail_json(msg="boot persistence: %s" % exc, **failed)
    result["boot_persistence"] = done
    if done["changed"]:
        result["changed"] = True
    if module._diff and (done["changed"] or done["would_change"]) and done["files"]:
        verb = "written or removed" if done["changed"] else "to write or remove"
        result.setdefault("diff", {"before": "", "after": ""})
        result["diff"]["prepared"] = result["diff"].get("prepared", "") + "boot persistence (%s), files %s:\n%s" % (
            done["state"], verb, "".join("  %s\n" % path for path in done["files"]))
    return result


def _run(module, backend, file_text, guarded):
    params = module.params
    reader = MigStateReader(backend.nvml)
    host_state = reader.host_state()
    stamp = None
    if params["stamp"] and params["operation"] != "export":
        stamp = LayoutStamp(default_stamp_path(params["backend"], params["sim_state"]))
    if stamp is not None and params["operation"] in ("apply", "plan"):
        reused = stamp.lookup(stamp_key(_request(params, file_text), host_state))
        if reused is not None:
            # a recorded layout that matches: nothing changes, so no hook runs, no client stops
            if guarded is not None and not guarded[0].empty:
                reused.update(hook_points=[], hooks_run=[])
            if guarded is not None and guarded[1]:
                reused["gpu_clients"] = []
            return _shaped(module, dict(reused, plan_reused=True), reader, host_state)
    result = _plan_and_apply(module, backend, reader, host_state, file_text, stamp, guarded)
    return _shaped(module, dict(result, plan_reused=False), reader, host_state)


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
            module.fail_json(msg="cannot read mig_parted_config_file %s: %s"
                             % (path, exc.strerror or exc), changed=False)

    # Hooks and GPU clients act only where the GPUs change. An apply checks them first (they run
    # around its change); a plan checks them only where it would change, or for boot persistence
    # (whose unit is ordered before the clients): a host that stays as it is pays nothing.
    guarded = _guard_inputs(module) if params["operation"] == "apply" else None
    if params["boot_persistence"] == "present" and module.get_bin_path("systemctl") is None:
        module.fail_json(msg="boot_persistence: present needs systemd, but systemctl is not on "
                             "this host's PATH; nothing was changed", changed=False)

    try:
        backend = open_backend(params["backend"], params["sim_state"], params["sim_gpus"],
                               run_command=module.run_command)
    except BackendError as exc:
        module.fail_json(msg=str(exc), changed=False)
    try:
        result = _run(module, backend, file_text, guarded)
    except BackendError as exc:
        module.fail_json(msg=str(exc), changed=False)
    except backend.nvml.NVMLError as exc:
        module.fail_json(msg="NVML failed: %s" % nvml_error_text(exc))
    finally:
        backend.close()
    if params["operation"] == "plan" and (result["would_change"] or params["boot_persistence"] == "present"):
        guarded = _guard_inputs(module)
    if params["boot_persistence"] is not None:
        result = _persistence(module, result, guarded)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
