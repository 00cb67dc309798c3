#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_build
short_description: Build benchmark engines per MIG profile, each on a slice of that profile
version_added: 0.1.0
description:
  - Builds the engines a heterogeneous MIG run needs. For every combination of benchmark,
    scenario and accuracy target, it builds one engine per distinct MIG profile on the host
    (per GPU model), on a slice of that profile, with C(CUDA_VISIBLE_DEVICES) set to that
    slice, as TensorRT engines are built on the device they run on.
  - The build command comes from the harness profile (O(harness)), its C(build) section beside
    the C(command) that runs the benchmarks, so runs and builds have one source. The action
    plugin renders it on the controller; the host runs the rendered argv (never a shell) and
    knows nothing of any profile. See docs/harness.md for the profile schema.
  - Builds for different profiles run in parallel (at most O(parallel) at once).
  - A profile's build may have a C(check) command that says, building nothing, whether an
    engine is current. The embedded harness (O(harness=heteromig_synthetic)) has one. Its
    engines are cached by a content key (sha256 of the model definition, scenario, accuracy
    target, GPU model, profile and harness version). An engine whose key matches is left alone,
    a changed input rebuilds it, a corrupt file is rebuilt. Its engines are stored as
    C(<engine_dir>/<benchmark>/<scenario>/<accuracy>/<gpu model>/<profile>.engine), where the
    harness finds the engine for its own slice, and it refuses an engine built for another GPU
    model or profile.
  - A build without a check (such as O(harness=nvidia_mlperf), NVIDIA's
    C(make generate_engines), whose engines NVIDIA's code keeps) is recorded in a stamp per
    build under O(engine_dir); a build whose stamp matches (same rendered command, GPU model,
    profile and stamp inputs of the profile) is skipped.
  - Which config_ver a combination builds comes from the profile's C(benchmarks) table, and
    combinations the profile builds alike (the same config_ver) are built once.
author:
  - heteromig developers (@heteromig)
extends_documentation_fragment:
  - heteromig.fleet.gpu_backend
requirements:
  - Python >= 3.9 on the target
  - For O(harness=heteromig_synthetic), the runtime that the role C(heteromig.fleet.host_runtime)
    installs (the harness under O(host_root), numpy, mlcommons-loadgen, nvidia-ml-py)
  - For O(harness=nvidia_mlperf), NVIDIA's MLPerf Inference code in C(harness_vars.workdir)
    and its build environment
attributes:
  check_mode:
    support: full
    description: Reports which engines would be built or rebuilt, and why (a profile's check
      command runs, as it changes nothing); builds nothing.
  diff_mode:
    support: none
    description: Engines are binary files; the result lists what was built and why instead.
  action:
    support: full
    description: An action plugin renders the build commands from the harness profile on the
      controller; this module runs them on the host.
options:
  combinations:
    description:
      - The engines the run needs, one entry per benchmark, scenario and accuracy target.
    type: list
    elements: dict
    required: true
    suboptions:
      benchmark:
        description:
          - A benchmark of the harness profile, such as V(synth-mlp-small) for
            V(heteromig_synthetic) or V(bert) for V(nvidia_mlperf); a suffix V(-99) or
            V(-99.9) that is not part of a known name sets the accuracy target.
          - V(heteromig_synthetic)'s GPU-bound V(synth-resnet50) and V(synth-bert-large) run on
            PyTorch with CUDA only; their build refuses a slice whose memory cannot hold them
            (docs/harness.md, "GPU-bound models").
        type: str
        required: true
        aliases: [model]
      scenario:
        description:
          - V(Offline), V(Server), V(SingleStream) or V(MultiStream) (case-insensitive), one
            the profile lists for the benchmark.
        type: str
        required: true
      accuracy_target:
        description:
          - V(99) (the profile's default config_ver) or V(99.9) (its high one; refused when the
            benchmark has none). The synthetic harness stores float16-rounded weights for
            V(99) and float32 weights for V(99.9).
          - When omitted, V(99), or the suffix of a benchmark name such as V(bert-99.9).
        type: str
        choices: ['99', '99.9']
  harness:
    description:
      - The harness profile whose C(build) command to run (V(heteromig_synthetic),
        V(nvidia_mlperf), or a profile of O(harness_profile_dirs)). A profile without a
        C(build) section is refused.
    type: str
    default: heteromig_synthetic
  harness_profile_dirs:
    description:
      - Directories with more harness profiles (C(<name>.yml)), searched before the built-in
        ones.
    type: list
    elements: path
    default: []
  harness_vars:
    description:
      - Values the profile's templates read as C(vars). For V(nvidia_mlperf),
        C(workdir) (NVIDIA's C(closed/NVIDIA) directory where C(make) runs, default C(/work)),
        C(run_args) (more C(RUN_ARGS) entries, each shell-quoted for make) and
        C(code_revision) (part of the build stamp, so a new revision rebuilds).
    type: dict
    default: {}
  mlperf_dir:
    description:
      - Shorthand for O(harness_vars) C(workdir), the directory where V(nvidia_mlperf)'s
        C(make generate_engines) runs (NVIDIA's C(closed/NVIDIA)); the action plugin moves it
        there. Refused when C(harness_vars.workdir) says otherwise.
    type: path
  mig_devices:
    description:
      - The host's MIG devices, as C(heteromig.fleet.gpu_facts) returns them in
        C(heteromig_mig_devices). When omitted, the module reads them itself through NVML
        (O(backend)).
    type: list
    elements: dict
  gpus:
    description:
      - The host's GPUs, as C(heteromig.fleet.gpu_facts) returns them in C(heteromig_gpus).
        Only used with O(shared_gpu=true); read through NVML when omitted.
    type: list
    elements: dict
  shared_gpu:
    description:
      - Also build for every GPU whose MIG mode is disabled, as a whole GPU shared by all its
        benchmarks with no MIG isolation. Those engines have the profile V(full-gpu).
      - Without it, a host with no MIG devices is an error.
    type: bool
    default: false
  host_root:
    description:
      - The host's heteromig directory; the harness is installed in C(<host_root>/lib).
      - Defaults to the variable C(heteromig_host_root), else C(/var/lib/heteromig).
    type: path
  engine_dir:
    description:
      - Where engines (and the build stamps) are stored; the profile's templates read it as
        C(engine_dir).
      - Defaults to C(harness_vars.engine_dir), else C(<host_root>/engines).
    type: path
  python:
    description:
      - The Python interpreter on the host that runs the harness (the profile's C(python)).
        Defaults to C(heteromig_host_python), else the interpreter Ansible uses on the host.
    type: path
  parallel:
    description:
      - How many builds (and checks) run at once.
    type: int
    default: 4
  build_timeout:
    description:
      - Seconds one build may take before it is stopped and reported as failed.
    type: int
    default: 1800
  force:
    description:
      - Rebuild every engine even if it is current (the profile's templates read it as
        C(force)).
    type: bool
    default: false
  builds:
    description:
      - Set by the action plugin, not by users. The rendered build (and check) commands per
        combination, for a MIG slice and for a whole GPU.
    type: list
    elements: dict
notes:
  - All slices of one MIG profile on one GPU model are identical, so one engine serves them all.
    Compute-instance profiles such as V(1c.3g.40gb) are profiles of their own.
  - The engine for V(shared_gpu) is built on the first MIG-disabled GPU of each GPU model.
  - The host gets C(CUDA_VISIBLE_DEVICES) and the GPU backend (C(HETEROMIG_GPU_BACKEND),
    C(HETEROMIG_SIM_STATE)) in each build's environment, besides the profile's C(env).
seealso:
  - module: heteromig.fleet.gpu_facts
  - name: The embedded harness and harness profiles
    description: docs/harness.md in the collection.
    link: https://example.invalid/heteromig/fleet/docs/harness.md
"""

EXAMPLES = r"""
- name: Read the MIG devices
  heteromig.fleet.gpu_facts:

- name: Build the engines of the embedded harness for every MIG profile of the host
  heteromig.fleet.engine_build:
    mig_devices: "{{ heteromig_mig_devices }}"
    host_root: "{{ heteromig_host_root }}"
    combinations:
      - {benchmark: synth-mlp-small, scenario: Server}
      - {benchmark: synth-mlp-large, scenario: Offline, accuracy_target: "99.9"}
  register: engines

- name: Build NVIDIA's engines per MIG profile (make generate_engines)
  heteromig.fleet.engine_build:
    harness: nvidia_mlperf
    harness_vars:
      workdir: /work/closed/NVIDIA
      code_revision: v3.0
    combinations:
      - {benchmark: bert, scenario: Offline, accuracy_target: "99.9"}
      - {benchmark: 3d-unet, scenario: Offline}
"""

RETURN = r"""
engines:
  description: One entry per engine (per combination and distinct GPU model and profile).
  returned: always
  type: list
  elements: dict
  contains:
    harness:
      description: The harness profile.
      type: str
      sample: heteromig_synthetic
    benchmark:
      description: The benchmark or model.
      type: str
      sample: synth-mlp-small
    scenario:
      description: The LoadGen scenario.
      type: str
      sample: Offline
    accuracy_target:
      description: The accuracy target.
      type: str
      sample: "99"
    config_ver:
      description: The profile's config_ver of the benchmark at that target (null if none).
      type: str
      sample: hetero_high_accuracy
    gpu_model:
      description: GPU model the engine is built for.
      type: str
      sample: H100-SXM5-80GB
    profile:
      description: MIG profile the engine is built for (V(full-gpu) for a shared whole GPU).
      type: str
      sample: 1g.10gb
    device_uuid:
      description: The slice (or GPU) the build ran on, or would run on.
      type: str
      sample: MIG-b4b2228d-6933-5839-bc0e-41ab9edb61c6
    path:
      description: The engine file as the profile's check names it, or the build stamp.
      type: str
    content_key:
      description: The engine's content key (from the check), or the build stamp's key.
      type: str
    action:
      description: V(cached), V(built), V(rebuilt), V(would_build), V(would_rebuild) or
        V(failed).
      type: str
    reason:
      description: Why the engine was (or would be) built, or why it was kept.
      type: str
    changed:
      description: Whether the engine was (or would be) written.
      type: bool
    command:
      description: The build's argv (never a shell string).
      type: list
      elements: str
    cwd:
      description: The directory the build runs in (null for the module's own).
      type: str
    started_at:
      description: Epoch seconds when the build started (null when nothing ran).
      type: float
    finished_at:
      description: Epoch seconds when the build ended (null when nothing ran).
      type: float
    duration_s:
      description: Seconds the build took (null when nothing ran).
      type: float
    error:
      description: Why the check or the build failed.
      type: str
      returned: when it failed
profiles:
  description: The distinct GPU models and profiles found, with their slices.
  returned: always
  type: list
  elements: dict
  sample:
    - {gpu_model: H100-SXM5-80GB, profile: 1g.10gb, shared_gpu: false,
       devices: [MIG-b4b2228d-6933-5839-bc0e-41ab9edb61c6]}
engine_dir:
  description: Where the engines are stored.
  returned: always
  type: str
harness:
  description: The harness profile.
  returned: always
  type: str
"""

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import runtime_paths
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_spec import (
    ENV_BACKEND,
    ENV_SIM_STATE,
    content_key,
    gpu_model_key,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_store import stamp_path
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._mlperf_terms import (
    FULL_GPU_PROFILE,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BACKEND_ARGUMENT_SPEC,
    opened_backend,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host

_OUTPUT_TAIL = 2000


class BuildError(Exception):
    """The request cannot be planned or a build failed; the message says which and why."""


class SliceGroup:
    """All slices of one GPU model and profile (one engine serves them all)."""

    def __init__(self, gpu_model: str, profile: str, shared: bool) -> None:
        self.gpu_model = gpu_model
        self.profile = profile
        self.shared = shared
        self.devices: List[str] = []
        self.next = 0

    def take(self) -> str:
        """The next slice, round robin, so builds of one profile spread over its slices."""
        device = self.devices[self.next % len(self.devices)]
        self.next += 1
        return device

    def as_dict(self) -> Dict[str, Any]:
        return {
            "gpu_model": self.gpu_model,
            "profile": self.profile,
            "shared_gpu": self.shared,
            "devices": list(self.devices),
        }


def slice_groups(
    mig_devices: List[Dict[str, Any]], gpus: List[Dict[str, Any]], shared_gpu: bool
) -> List[SliceGroup]:
    """Group MIG devices (and, in shared mode, MIG-disabled GPUs) by GPU model and profile."""
    groups: Dict[Tuple[str, str], SliceGroup] = {}
    ordered = sorted(
        mig_devices,
        key=lambda d: (
            d.get("gpu_index", 0),
            (d.get("placement") or {}).get("start", 0),
            (d.get("compute_placement") or {}).get("start", 0),
        ),
    )
    for device in ordered:
        if not device.get("uuid") or not device.get("profile"):
            raise BuildError("a MIG device entry lacks 'uuid' or 'profile': %r" % (device,))
        model = gpu_model_key(device.get("gpu_model"), device.get("gpu_name"))
        key = (model, str(device["profile"]))
        groups.setdefault(key, SliceGroup(key[0], key[1], False)).devices.append(device["uuid"])
    if shared_gpu:
        for gpu in sorted(gpus, key=lambda g: g.get("index", 0)):
            if (gpu.get("mig_mode") or {}).get("current") == "enabled":
                continue
            model = gpu_model_key(gpu.get("model"), gpu.get("name"))
            key = (model, FULL_GPU_PROFILE)
            groups.setdefault(key, SliceGroup(model, FULL_GPU_PROFILE, True)).devices.append(
                gpu["uuid"]
            )
    if not groups:
        raise BuildError(
            "no MIG devices on this host%s: create a MIG layout first, or set shared_gpu: true "
            "for the explicit 'shared GPU, no MIG isolation' mode"
            % ("" if not shared_gpu else " and no GPU with MIG disabled")
        )
    return list(groups.values())


class Job:
    """One engine: a rendered build on one slice group."""

    def __init__(self, build: Dict[str, Any], group: SliceGroup) -> None:
        self.build = build
        self.group = group
        self.device = group.take()
        variant = "shared" if group.shared else "mig"
        commands = build.get("commands") or {}
        if variant not in commands:
            raise BuildError(
                "no %s build command was rendered for %s %s (shared_gpu differs between the "
                "controller and the host?)" % (variant, build.get("benchmark"), group.profile)
            )
        self.spec: Dict[str, Any] = commands[variant]
        self.check: Optional[Dict[str, Any]] = (build.get("checks") or {}).get(variant)
        self.command: List[str] = [str(arg) for arg in self.spec["argv"]]
        self.path = ""
        self.key = ""
        self.action = "build"
        self.reason = ""
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.error: Optional[str] = None

    def result(self, check_mode: bool) -> Dict[str, Any]:
        action = self.action
        if self.error:
            action = "failed"
        elif action in ("build", "rebuild"):
            if check_mode:
                action = "would_" + action
            else:
                action = "built" if action == "build" else "rebuilt"
        duration = None
        if self.started_at is not None and self.finished_at is not None:
            duration = round(self.finished_at - self.started_at, 3)
        result = {
            "harness": self.build.get("harness"),
            "benchmark": self.build["benchmark"],
            "scenario": self.build["scenario"],
            "accuracy_target": self.build["accuracy_target"],
            "config_ver": self.build.get("config_ver"),
            "gpu_model": self.group.gpu_model,
            "profile": self.group.profile,
            "shared_gpu": self.group.shared,
            "device_uuid": self.device,
            "path": self.path,
            "content_key": self.key,
            "action": action,
            "reason": self.reason,
            "changed": action not in ("cached", "failed"),
            "command": self.command,
            "cwd": self.spec.get("cwd"),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": duration,
        }
        if self.error:
            result["error"] = self.error
        return result


def _tail(text: str) -> str:
    text = (text or "").strip()
    return text[-_OUTPUT_TAIL:]


def _json_line(text: str) -> Optional[Dict[str, Any]]:
    """The last line of ``text`` that is a JSON object, or None."""
    for line in reversed((text or "").splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _run(
    spec: Dict[str, Any], env: Dict[str, str], timeout: int
) -> Tuple[Optional[subprocess.CompletedProcess], str]:
    """Run one rendered command (argv, env, cwd); (completed process, '') or (None, error)."""
    full = dict(env)
    full.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
    argv = [str(arg) for arg in spec["argv"]]
    try:
        # Not module.run_command: builds run in threads and need a timeout.
        done = subprocess.run(  # pylint: disable=ansible-bad-function
            argv,
            cwd=spec.get("cwd") or None,
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "%s timed out after %d s" % (argv[0], timeout)
    except OSError as exc:
        where = " in %s" % spec["cwd"] if spec.get("cwd") else ""
        return None, "cannot run %s%s: %s" % (argv[0], where, exc.strerror or exc)
    return done, ""


def _failure(done: subprocess.CompletedProcess, what: str, host_root: str) -> str:
    output = _tail(done.stderr) or _tail(done.stdout)
    if "No module named" in output and "ansible_collections" in output:
        return (
            "the harness is not installed under %s/lib: run the role heteromig.fleet.host_runtime "
            "first (%s)" % (host_root, output)
        )
    return "%s exited %d: %s" % (what, done.returncode, output)


def plan_job(job: Job, params: Dict[str, Any], env: Dict[str, str], engine_dir: str) -> None:
    """Decide whether ``job`` builds: the profile's check, else the build stamp."""
    build = job.build
    if job.check is None:
        variant = build.get("config_ver") or build["accuracy_target"]
        job.path = stamp_path(
            engine_dir,
            str(build.get("harness") or "harness"),
            build["benchmark"],
            build["scenario"],
            str(variant),
            job.group.gpu_model,
            job.group.profile,
        )
        job.key = content_key(
            {
                "harness": build.get("harness"),
                "argv": job.command,
                "env": job.spec.get("env") or {},
                "cwd": job.spec.get("cwd"),
                "gpu_model": job.group.gpu_model,
                "profile": job.group.profile,
                "stamp": build.get("stamp") or {},
            }
        )
    if params["force"]:
        job.action, job.reason = "rebuild", "force: true"
        return
    if job.check is not None:
        timeout = params["build_timeout"]
        done, error = _run(job.check, dict(env, CUDA_VISIBLE_DEVICES=job.device), timeout)
        if done is None:
            job.error = error
            return
        if done.returncode != 0:
            job.error = _failure(done, "the build check", params["host_root"])
            return
        reported = _json_line(done.stdout)
        if reported is None or reported.get("action") not in ("cached", "build", "rebuild"):
            job.error = "the build check printed no result: %s" % _tail(done.stdout + done.stderr)
            return
        job.action, job.reason = str(reported["action"]), str(reported.get("reason") or "")
        job.path = str(reported.get("path") or "")
        job.key = str(reported.get("content_key") or "")
        return
    try:
        with open(job.path, encoding="utf-8") as handle:
            stamp = json.load(handle)
    except (OSError, ValueError):
        job.action, job.reason = "build", "no build stamp at %s" % job.path
        return
    if isinstance(stamp, dict) and stamp.get("content_key") == job.key:
        job.action, job.reason = "cached", "build stamp %s matches" % job.key[:12]
    else:
        job.action, job.reason = "rebuild", "build inputs changed since the last build"


def run_job(job: Job, env: Dict[str, str], timeout: int, host_root: str) -> None:
    """Run the build; with a check, the build's own JSON result must carry the same key."""
    job.started_at = time.time()
    done, error = _run(job.spec, dict(env, CUDA_VISIBLE_DEVICES=job.device), timeout)
    job.finished_at = time.time()
    if done is None:
        job.error = error
        return
    if done.returncode != 0:
        job.error = _failure(done, "the build", host_root)
        return
    reported = _json_line(done.stdout)
    if job.check is not None:
        if reported is None:
            job.error = "the build printed no result: %s" % _tail(done.stdout + done.stderr)
        elif job.key and reported.get("content_key") != job.key:  # no key: forced, no check ran
            job.error = "the build made an engine with key %s, but its check expected %s" % (
                reported.get("content_key"),
                job.key,
            )
        else:
            job.key = str(reported.get("content_key") or "")
            job.path = str(reported.get("path") or job.path)
            if reported.get("changed") is False:
                job.action, job.reason = "cached", str(reported.get("reason") or "up to date")
        return
    stamp = {
        "content_key": job.key,
        "argv": job.command,
        "cwd": job.spec.get("cwd"),
        "device_uuid": job.device,
        "gpu_model": job.group.gpu_model,
        "profile": job.group.profile,
        "finished_at": job.finished_at,
    }
    try:
        os.makedirs(os.path.dirname(job.path), exist_ok=True)
        tmp = job.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(stamp, handle, indent=1, sort_keys=True)
        os.replace(tmp, job.path)
    except OSError as exc:
        job.error = "built, but cannot write the build stamp %s: %s" % (job.path, exc)


def _raise_build_error(message: str) -> NoReturn:
    raise BuildError(message) from None


def discover(module: AnsibleModule) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    params = module.params
    mig_devices = params["mig_devices"]
    gpus = params["gpus"]
    if mig_devices is not None and (gpus is not None or not params["shared_gpu"]):
        return mig_devices, gpus or []
    with opened_backend(params, _raise_build_error, "reading GPUs through NVML") as backend:
        host = read_host(backend.nvml, details=True)
    return (
        host["mig_devices"] if mig_devices is None else mig_devices,
        host["gpus"] if gpus is None else gpus,
    )


def build_env(params: Dict[str, Any]) -> Dict[str, str]:
    """The module's environment with the GPU backend the harness resolves slices through."""
    env = dict(os.environ)
    env[ENV_BACKEND] = params["backend"]
    if params["sim_state"]:
        env[ENV_SIM_STATE] = params["sim_state"]
    else:
        env.pop(ENV_SIM_STATE, None)
    return env


def main() -> None:
    argument_spec = dict(
        BACKEND_ARGUMENT_SPEC,
        combinations=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                benchmark=dict(type="str", required=True, aliases=["model"]),
                scenario=dict(type="str", required=True),
                accuracy_target=dict(type="str", choices=["99", "99.9"]),
            ),
        ),
        harness=dict(type="str", default="heteromig_synthetic"),
        harness_profile_dirs=dict(type="list", elements="path", default=[]),
        harness_vars=dict(type="dict", default={}),
        mlperf_dir=dict(type="path"),
        mig_devices=dict(type="list", elements="dict"),
        gpus=dict(type="list", elements="dict"),
        shared_gpu=dict(type="bool", default=False),
        host_root=dict(type="path"),
        engine_dir=dict(type="path"),
        python=dict(type="path"),
        parallel=dict(type="int", default=4),
        build_timeout=dict(type="int", default=1800),
        force=dict(type="bool", default=False),
        builds=dict(type="list", elements="dict"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if params["builds"] is None:
        module.fail_json(
            msg="builds is missing: it is rendered from the harness profile by the action plugin "
            "heteromig.fleet.engine_build; call the module by that name, not by a path"
        )
    if params["parallel"] < 1:
        module.fail_json(msg="parallel must be at least 1, got %d" % params["parallel"])
    if params["build_timeout"] < 1:
        module.fail_json(msg="build_timeout must be at least 1 s, got %d" % params["build_timeout"])
    host_root = params["host_root"] = params["host_root"] or "/var/lib/heteromig"
    engine_dir = params["engine_dir"] or runtime_paths(host_root).engines
    env = build_env(params)
    try:
        mig_devices, gpus = discover(module)
        groups = slice_groups(mig_devices, gpus, params["shared_gpu"])
        # Combination-major order: consecutive jobs are different profiles, so the first
        # `parallel` checks and builds already cover as many profiles as possible.
        jobs = [Job(build, group) for build in params["builds"] for group in groups]
    except BuildError as exc:
        module.fail_json(msg=str(exc))
    workers = min(params["parallel"], len(jobs))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda job: plan_job(job, params, env, engine_dir), jobs))
    pending = [job for job in jobs if job.action != "cached" and job.error is None]
    if pending and not module.check_mode:
        timeout = params["build_timeout"]
        with ThreadPoolExecutor(max_workers=min(params["parallel"], len(pending))) as pool:
            list(pool.map(lambda job: run_job(job, env, timeout, host_root), pending))

    results = [job.result(module.check_mode) for job in jobs]
    outcome = dict(
        changed=any(result["changed"] for result in results),
        engines=results,
        profiles=[group.as_dict() for group in groups],
        engine_dir=engine_dir,
        harness=params["harness"],
    )
    failed = [result for result in results if "error" in result]
    if failed:
        module.fail_json(
            msg="%d of %d engine builds failed: %s"
            % (
                len(failed),
                len(results),
                "; ".join(
                    "%s %s %s on %s %s: %s"
                    % (
                        r["benchmark"],
                        r["scenario"],
                        r["accuracy_target"],
                        r["gpu_model"],
                        r["profile"],
                        r["error"],
                    )
                    for r in failed
                ),
            ),
            **outcome,
        )
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
