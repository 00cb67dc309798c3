# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The options and notes of heteromig.fleet.mig_layout (its only user). They live here
    # rather than in the module, which AnsiballZ ships to every host it runs on. The return
    # values stay in the module: validate-modules checks the RV() references against the
    # module's own RETURN. `ansible-doc heteromig.fleet.mig_layout` shows them merged.
    DOCUMENTATION = r"""
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
