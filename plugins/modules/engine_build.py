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
  - Builds for different profiles run in parallel (at most O(parallel) at once).
  - With O(harness=heteromig_synthetic) each build runs the collection's embedded harness
    (C(python3 -m ansible_collections.heteromig.fleet.plugins.module_utils._loadgen_harness
    build-engine)), installed on the host by the role C(heteromig.fleet.host_runtime). Engines
    are cached by a content key (sha256 of the model definition, scenario, accuracy target, GPU
    model, profile and harness version). An engine whose key matches is left alone, a changed
    input rebuilds it, a corrupt file is rebuilt.
  - Engines are stored as
    C(<engine_dir>/<benchmark>/<scenario>/<accuracy>/<gpu model>/<profile>.engine), where the
    harness finds the engine for its own slice. A harness refuses an engine built for another
    GPU model or profile.
  - With O(harness=nvidia_mlperf) each build runs NVIDIA's
    C(make generate_engines RUN_ARGS="--benchmarks=B --scenarios=S --config_ver=C") in
    O(mlperf_dir), with C(config_ver) V(hetero_high_accuracy) for 3d-unet and dlrm (one engine
    serves both accuracy targets) and for bert at the 99.9 target, V(hetero) otherwise. NVIDIA's
    build keeps the engine; this module records a stamp per build under O(engine_dir) and skips
    builds whose stamp matches.
author:
  - heteromig developers (@heteromig)
extends_documentation_fragment:
  - heteromig.fleet.gpu_backend
requirements:
  - Python >= 3.9 on the target
  - For O(harness=heteromig_synthetic), the runtime that the role C(heteromig.fleet.host_runtime)
    installs (the harness under O(host_root), numpy, mlcommons-loadgen, nvidia-ml-py)
  - For O(harness=nvidia_mlperf), NVIDIA's MLPerf Inference code in O(mlperf_dir) and its
    build environment
attributes:
  check_mode:
    support: full
    description: Reports which engines would be built or rebuilt, and why; builds nothing.
  diff_mode:
    support: none
    description: Engines are binary files; the result lists what was built and why instead.
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
          - For O(harness=heteromig_synthetic), a synthetic model such as V(synth-mlp-small),
            V(synth-mlp-large) or V(synth-conv-1d).
          - For O(harness=nvidia_mlperf), an NVIDIA benchmark name such as V(resnet50),
            V(bert) or V(3d-unet); a suffix V(-99) or V(-99.9) sets the accuracy target.
        type: str
        required: true
        aliases: [model]
      scenario:
        description:
          - V(Offline), V(Server), V(SingleStream) or V(MultiStream) (case-insensitive).
        type: str
        required: true
      accuracy_target:
        description:
          - V(99) or V(99.9). The synthetic harness stores float16-rounded weights for V(99)
            and float32 weights for V(99.9).
          - When omitted, V(99), or the suffix of an NVIDIA benchmark name such as
            V(bert-99.9).
        type: str
        choices: ['99', '99.9']
  harness:
    description:
      - The harness profile whose engines to build.
    type: str
    choices: [heteromig_synthetic, nvidia_mlperf]
    default: heteromig_synthetic
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
    type: path
    default: /var/lib/heteromig
  engine_dir:
    description:
      - Where engines (and the V(nvidia_mlperf) build stamps) are stored.
      - Defaults to C(<host_root>/engines).
    type: path
  python:
    description:
      - The Python interpreter that runs the harness. Defaults to the interpreter running this
        module, which the role C(heteromig.fleet.host_runtime) prepares.
    type: path
  parallel:
    description:
      - How many builds run at once.
    type: int
    default: 4
  build_timeout:
    description:
      - Seconds one build may take before it is stopped and reported as failed.
    type: int
    default: 1800
  force:
    description:
      - Rebuild every engine even if its content key matches.
    type: bool
    default: false
  mlperf_dir:
    description:
      - For O(harness=nvidia_mlperf), the directory of NVIDIA's code where C(make
        generate_engines) runs (e.g. C(closed/NVIDIA) of a results repository).
    type: path
  run_args:
    description:
      - For O(harness=nvidia_mlperf), more C(RUN_ARGS) entries, each C(--name) or
        C(--name=value). make hands C(RUN_ARGS) to a shell, so spaces and shell
        metacharacters are refused.
    type: list
    elements: str
    default: []
  code_revision:
    description:
      - For O(harness=nvidia_mlperf), a version or commit of NVIDIA's code. It is part of the
        build stamp's key, so a new revision rebuilds.
    type: str
notes:
  - All slices of one MIG profile on one GPU model are identical, so one engine serves them all.
    Compute-instance profiles such as V(1c.3g.40gb) are profiles of their own.
  - The engine for V(shared_gpu) is built on the first MIG-disabled GPU of each GPU model.
seealso:
  - module: heteromig.fleet.gpu_facts
  - name: The embedded harness
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
    mlperf_dir: /work/closed/NVIDIA
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
      description: For V(nvidia_mlperf), the config_ver of the build.
      type: str
      returned: when harness is nvidia_mlperf
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
      description: The engine file (for V(nvidia_mlperf), the build stamp).
      type: str
    content_key:
      description: sha256 of every input of the engine.
      type: str
    action:
      description: V(cached), V(built), V(rebuilt), V(would_build) or V(would_rebuild).
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
    started_at:
      description: Epoch seconds when the build started (null when nothing ran).
      type: float
    finished_at:
      description: Epoch seconds when the build ended (null when nothing ran).
      type: float
    duration_s:
      description: Seconds the build took (null when nothing ran).
      type: float
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
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.heteromig.fleet.plugins.module_utils._engine_store import (
    ENV_BACKEND,
    ENV_SIM_STATE,
    FULL_GPU_PROFILE,
    HARNESS_PROFILE,
    HARNESS_VERSION,
    NVIDIA_PROFILE,
    EngineSpec,
    cache_status,
    content_key,
    gpu_model_key,
    nvidia_config_ver,
    nvidia_generate_engines_argv,
    nvidia_split_benchmark,
    nvidia_stamp_path,
)
from ansible_collections.heteromig.fleet.plugins.module_utils._gpu_backend import (
    BACKEND_ARGUMENT_SPEC,
    BackendError,
    nvml_error_text,
    open_backend,
)
from ansible_collections.heteromig.fleet.plugins.module_utils._gpu_inventory import read_host
from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import (
    HARNESS_MODULE,
    runtime_paths,
)
from ansible_collections.heteromig.fleet.plugins.module_utils._synthetic_models import (
    ModelError,
    check_combination,
    normalize_scenario,
)

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
    """One engine: a combination on one slice group."""

    def __init__(self, combo: Dict[str, str], group: SliceGroup) -> None:
        self.combo = combo
        self.group = group
        self.device = group.take()
        self.path = ""
        self.key = ""
        self.command: List[str] = []
        self.cwd: Optional[str] = None
        self.action = "build"
        self.reason = ""
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.error: Optional[str] = None
        self.extra: Dict[str, Any] = {}

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
            "benchmark": self.combo["benchmark"],
            "scenario": self.combo["scenario"],
            "accuracy_target": self.combo["accuracy_target"],
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
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": duration,
        }
        result.update(self.extra)
        if self.error:
            result["error"] = self.error
        return result


def normalize_combinations(harness: str, raw: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    """Validated, de-duplicated combinations (NVIDIA's 3d-unet/dlrm targets share an engine)."""
    seen = set()
    combos = []
    for entry in raw:
        scenario = normalize_scenario(entry["scenario"])
        target = str(entry.get("accuracy_target") or "99")
        benchmark = str(entry["benchmark"])
        try:
            if harness == NVIDIA_PROFILE:
                benchmark, target = nvidia_split_benchmark(benchmark, entry.get("accuracy_target"))
                config_ver = nvidia_config_ver(benchmark, target)
                identity: Tuple[str, ...] = (benchmark, scenario, config_ver)
            else:
                check_combination(benchmark, scenario, target)
                identity = (benchmark, scenario, target)
        except (ModelError, ValueError) as exc:
            raise BuildError(str(exc)) from None
        if identity in seen:
            continue
        seen.add(identity)
        combos.append({"benchmark": benchmark, "scenario": scenario, "accuracy_target": target})
    return combos


def plan_synthetic(job: Job, params: Dict[str, Any], engine_dir: str, python: str) -> None:
    combo = job.combo
    spec = EngineSpec(
        combo["benchmark"],
        combo["scenario"],
        combo["accuracy_target"],
        job.group.gpu_model,
        job.group.profile,
    )
    job.path = spec.path(engine_dir)
    job.key = spec.key()
    job.command = [
        python,
        "-m",
        HARNESS_MODULE,
        "build-engine",
        "--model",
        spec.model,
        "--scenario",
        spec.scenario,
        "--accuracy-target",
        spec.accuracy_target,
        "--engine-dir",
        engine_dir,
        "--json",
    ]
    if job.group.shared:
        job.command.append("--allow-shared-gpu")
    if params["force"]:
        job.action, job.reason = "rebuild", "force: true"
        job.command.append("--force")
        return
    job.action, job.reason = cache_status(spec, job.path)
    if job.action == "cached":
        job.reason = "content key %s matches" % job.key[:12]


def plan_nvidia(job: Job, params: Dict[str, Any], engine_dir: str) -> None:
    combo = job.combo
    config_ver = nvidia_config_ver(combo["benchmark"], combo["accuracy_target"])
    try:
        job.command = nvidia_generate_engines_argv(
            combo["benchmark"], combo["scenario"], combo["accuracy_target"], params["run_args"]
        )
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    job.cwd = params["mlperf_dir"]
    job.extra["config_ver"] = config_ver
    job.path = nvidia_stamp_path(
        engine_dir,
        combo["benchmark"],
        combo["scenario"],
        config_ver,
        job.group.gpu_model,
        job.group.profile,
    )
    job.key = content_key(
        {
            "harness": NVIDIA_PROFILE,
            "argv": job.command,
            "gpu_model": job.group.gpu_model,
            "profile": job.group.profile,
            "code_revision": params["code_revision"],
        }
    )
    if params["force"]:
        job.action, job.reason = "rebuild", "force: true"
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


def _tail(text: str) -> str:
    text = (text or "").strip()
    return text[-_OUTPUT_TAIL:]


def run_synthetic(job: Job, env: Dict[str, str], timeout: int, host_root: str) -> None:
    env = dict(env, CUDA_VISIBLE_DEVICES=job.device)
    job.started_at = time.time()
    try:
        # Not module.run_command: builds run in threads and need a timeout.
        done = subprocess.run(  # pylint: disable=ansible-bad-function
            job.command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        job.error = "build timed out after %d s" % timeout
        return
    except OSError as exc:
        job.error = "cannot start %s: %s" % (job.command[0], exc.strerror or exc)
        return
    finally:
        job.finished_at = time.time()
    if done.returncode != 0:
        stderr = _tail(done.stderr)
        if "No module named" in stderr and "ansible_collections" in stderr:
            job.error = (
                "the harness is not installed under %s/lib for %s: run the role "
                "heteromig.fleet.host_runtime first (%s)" % (host_root, job.command[0], stderr)
            )
        else:
            job.error = "build exited %d: %s" % (done.returncode, stderr or _tail(done.stdout))
        return
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    try:
        reported = json.loads(lines[-1])
    except (IndexError, ValueError):
        job.error = "the harness printed no result: %s" % _tail(done.stdout + done.stderr)
        return
    if reported.get("content_key") != job.key:
        job.error = (
            "the harness under %s/lib (version %s) built an engine with key %s, but this "
            "module (version %s) expects %s: re-run the role heteromig.fleet.host_runtime so "
            "that the host runs this collection's harness"
            % (
                host_root,
                reported.get("harness_version"),
                reported.get("content_key"),
                HARNESS_VERSION,
                job.key,
            )
        )
        return
    if not reported.get("changed"):
        job.action, job.reason = "cached", str(reported.get("reason") or "up to date")


def run_nvidia(job: Job, env: Dict[str, str], timeout: int) -> None:
    env = dict(env, CUDA_VISIBLE_DEVICES=job.device)
    job.started_at = time.time()
    try:
        done = subprocess.run(  # pylint: disable=ansible-bad-function
            job.command,
            cwd=job.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        job.error = "make generate_engines timed out after %d s" % timeout
        return
    except OSError as exc:
        job.error = "cannot run %s in %s: %s" % (job.command[0], job.cwd, exc.strerror or exc)
        return
    finally:
        job.finished_at = time.time()
    if done.returncode != 0:
        job.error = "make generate_engines exited %d: %s" % (
            done.returncode,
            _tail(done.stdout + "\n" + done.stderr),
        )
        return
    stamp = {
        "content_key": job.key,
        "argv": job.command,
        "cwd": job.cwd,
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


def discover(module: AnsibleModule) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    params = module.params
    mig_devices = params["mig_devices"]
    gpus = params["gpus"]
    if mig_devices is not None and (gpus is not None or not params["shared_gpu"]):
        return mig_devices, gpus or []
    try:
        backend = open_backend(params["backend"], params["sim_state"], params["sim_gpus"])
    except BackendError as exc:
        raise BuildError(str(exc)) from None
    try:
        host = read_host(backend.nvml, details=True)
    except BackendError as exc:
        raise BuildError(str(exc)) from None
    except backend.nvml.NVMLError as exc:
        raise BuildError("reading GPUs through NVML failed: %s" % nvml_error_text(exc)) from None
    finally:
        backend.close()
    return (
        host["mig_devices"] if mig_devices is None else mig_devices,
        host["gpus"] if gpus is None else gpus,
    )


def build_env(params: Dict[str, Any], host_root: str) -> Dict[str, str]:
    env = dict(os.environ)
    lib = runtime_paths(host_root).lib
    env["PYTHONPATH"] = lib + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
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
        harness=dict(
            type="str", default=HARNESS_PROFILE, choices=[HARNESS_PROFILE, NVIDIA_PROFILE]
        ),
        mig_devices=dict(type="list", elements="dict"),
        gpus=dict(type="list", elements="dict"),
        shared_gpu=dict(type="bool", default=False),
        host_root=dict(type="path", default="/var/lib/heteromig"),
        engine_dir=dict(type="path"),
        python=dict(type="path"),
        parallel=dict(type="int", default=4),
        build_timeout=dict(type="int", default=1800),
        force=dict(type="bool", default=False),
        mlperf_dir=dict(type="path"),
        run_args=dict(type="list", elements="str", default=[]),
        code_revision=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("harness", NVIDIA_PROFILE, ("mlperf_dir",))],
    )
    params = module.params
    if params["parallel"] < 1:
        module.fail_json(msg="parallel must be at least 1, got %d" % params["parallel"])
    if params["build_timeout"] < 1:
        module.fail_json(msg="build_timeout must be at least 1 s, got %d" % params["build_timeout"])
    if not params["combinations"]:
        module.fail_json(msg="combinations is empty: name at least one benchmark and scenario")
    host_root = params["host_root"]
    engine_dir = params["engine_dir"] or runtime_paths(host_root).engines
    python = params["python"] or sys.executable
    harness = params["harness"]

    try:
        combos = normalize_combinations(harness, params["combinations"])
        mig_devices, gpus = discover(module)
        groups = slice_groups(mig_devices, gpus, params["shared_gpu"])
        jobs = []
        # Combination-major order: consecutive jobs are different profiles, so the first
        # `parallel` builds already cover as many profiles as possible.
        for combo in combos:
            for group in groups:
                job = Job(combo, group)
                if harness == NVIDIA_PROFILE:
                    plan_nvidia(job, params, engine_dir)
                else:
                    plan_synthetic(job, params, engine_dir, python)
                jobs.append(job)
    except BuildError as exc:
        module.fail_json(msg=str(exc))

    pending = [job for job in jobs if job.action != "cached"]
    if pending and not module.check_mode:
        env = build_env(params, host_root)
        timeout = params["build_timeout"]
        with ThreadPoolExecutor(max_workers=min(params["parallel"], len(pending))) as pool:
            if harness == NVIDIA_PROFILE:
                list(pool.map(lambda job: run_nvidia(job, env, timeout), pending))
            else:
                list(pool.map(lambda job: run_synthetic(job, env, timeout, host_root), pending))

    results = [job.result(module.check_mode) for job in jobs]
    outcome = dict(
        changed=any(result["changed"] for result in results),
        engines=results,
        profiles=[group.as_dict() for group in groups],
        engine_dir=engine_dir,
        harness=harness,
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
