# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of one host's hetero run (controller only; pure): normalise the options, choose the
slices, render the commands from the harness profile (``_harness_profiles``) into the typed run
contract (``module_utils/agent/_run_contract``). Everything raises ``PlanError`` naming the
problem; nothing is launched before a plan builds.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils._safe_names import name_problem
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import MAIN
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._mlperf_terms import SCENARIOS
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_contract import (
    BenchmarkPlan,
    RunPlan,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    _ENV_NAME_RE,
    ACCURACY_ONLY,
    MODES,
    PlanError,
    Profile,
    _accuracy_check,
    check_benchmark,
    expand_backgrounds,
    load_profile,
    normalize_scenario,
    render_argv,
    render_template,
    split_args,
)


# -------------------------------------------------------------------------------- slices
def _device_list(value: Any) -> list[dict[str, Any]]:
    """MIG devices from a list, a gpu_facts result or a mig_layout result."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        for path in (
            ("ansible_facts", "heteromig_mig_devices"),
            ("mig_devices",),
            ("heteromig_mig_devices",),
        ):
            found: Any = value
            for key in path:
                found = found.get(key) if isinstance(found, Mapping) else None
            if isinstance(found, list):
                return [dict(d) for d in found]
        raise PlanError(
            "slices: a mapping must be a gpu_facts or mig_layout result (with mig_devices); "
            "got keys %s" % ", ".join(sorted(map(str, value)))
        )
    if isinstance(value, list) and all(isinstance(d, Mapping) for d in value):
        for d in value:
            if not isinstance(d.get("uuid"), str):
                raise PlanError("slices: every MIG device needs a 'uuid', got %r" % (dict(d),))
        return [dict(d) for d in value]
    raise PlanError(
        "slices must be a list of MIG devices (heteromig_mig_devices), got %r" % (value,)
    )


def slice_summary(device: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's slice structure."""
    return {
        "uuid": device.get("uuid"),
        "profile": device.get("profile"),
        "gpu_index": device.get("gpu_index"),
        "gpu_instance_id": device.get("gpu_instance_id"),
        "compute_instance_id": device.get("compute_instance_id"),
        "placement": device.get("placement"),
        "mig": bool(str(device.get("uuid", "")).startswith("MIG-")),
    }


def _pick(devices: list[dict[str, Any]], ref: Any, option: str) -> dict[str, Any]:
    if isinstance(ref, bool):
        raise PlanError("%s must be a MIG UUID or an index, got %r" % (option, ref))
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        index = int(ref)
        if not 0 <= index < len(devices):
            raise PlanError(
                "%s index %d is out of range: the host has %d MIG device(s)"
                % (option, index, len(devices))
            )
        return devices[index]
    for device in devices:
        if device.get("uuid") == ref:
            return device
    raise PlanError(
        "%s %r is not a MIG device of this host; its MIG devices are: %s"
        % (
            option,
            ref,
            ", ".join("%s (%s)" % (d["uuid"], d.get("profile")) for d in devices) or "none",
        )
    )


@dataclass
class SliceChoice:
    main: dict[str, Any]
    backgrounds: list[dict[str, Any]]  # free slices for backgrounds, in order
    shared_gpu: bool
    gpu: dict[str, Any]


def choose_slices(
    devices_in: Any,
    gpus: list[Mapping[str, Any]] | None,
    main_slice: Any,
    background_slices: Any,
    allow_shared_gpu: bool,
) -> SliceChoice:
    """Main and background slices, like the anchor by default.

    The main benchmark goes on the first MIG device of the GPU with the most MIG devices
    (lowest GPU index on a tie); backgrounds on every other device of that GPU
    (``background_slices: same_gpu``), of every GPU (``all``), or on the listed ones.
    Without MIG devices, or with ``main_slice`` naming a whole GPU (``GPU-...`` or
    ``gpu:<index>``), every benchmark shares one GPU: refused unless ``allow_shared_gpu``.
    """
    devices = _device_list(devices_in)
    gpu_list: list[dict[str, Any]] = [dict(g) for g in (gpus or [])]
    gpu_ref = None
    if isinstance(main_slice, str) and (
        main_slice.startswith("GPU-") or main_slice.startswith("gpu:")
    ):
        gpu_ref = main_slice
    if gpu_ref is not None or not devices:
        what = (
            "main_slice %s is a whole GPU, not a MIG device" % gpu_ref
            if gpu_ref
            else "this host has no MIG devices (MIG disabled, or no instances created)"
        )
        if not allow_shared_gpu:
            raise PlanError(
                "%s: the main benchmark's slice is not a MIG device. Create MIG instances "
                "first (heteromig.fleet.mig_layout), or set allow_shared_gpu: true to run every "
                "benchmark on one whole GPU without MIG isolation (results are then not "
                "comparable with MIG runs)" % what
            )
        if not gpu_list:
            raise PlanError("allow_shared_gpu needs the host's GPUs (gpu_facts: heteromig_gpus)")
        gpu = gpu_list[0]
        if gpu_ref:
            matches = [
                g
                for g in gpu_list
                if g.get("uuid") == gpu_ref or gpu_ref == "gpu:%s" % g.get("index")
            ]
            if not matches:
                raise PlanError(
                    "main_slice %s is not a GPU of this host (%s)"
                    % (
                        gpu_ref,
                        ", ".join("gpu:%s %s" % (g.get("index"), g.get("uuid")) for g in gpu_list),
                    )
                )
            gpu = matches[0]
        whole = {
            "uuid": gpu.get("uuid"),
            "profile": None,
            "gpu_index": gpu.get("index"),
            "gpu_instance_id": None,
            "compute_instance_id": None,
            "placement": None,
        }
        return SliceChoice(main=whole, backgrounds=[], shared_gpu=True, gpu=gpu)

    if main_slice is None or main_slice == "":
        counts: dict[Any, int] = {}
        for device in devices:
            counts[device.get("gpu_index")] = counts.get(device.get("gpu_index"), 0) + 1
        best = max(counts.values())
        gpu_index = min((g for g, c in counts.items() if c == best), key=lambda g: (g is None, g))
        main = next(d for d in devices if d.get("gpu_index") == gpu_index)
    else:
        main = _pick(devices, main_slice, "main_slice")
    others = [d for d in devices if d["uuid"] != main["uuid"]]
    if background_slices in (None, "", "same_gpu"):
        free = [d for d in others if d.get("gpu_index") == main.get("gpu_index")]
    elif background_slices == "all":
        free = others
    elif isinstance(background_slices, (list, tuple)):
        free = []
        for ref in background_slices:
            device = _pick(devices, ref, "background_slices")
            if device["uuid"] == main["uuid"]:
                raise PlanError("background_slices names the main slice %s" % main["uuid"])
            if device in free:
                raise PlanError("background_slices names %s twice" % device["uuid"])
            free.append(device)
    else:
        raise PlanError(
            "background_slices must be same_gpu, all or a list of MIG UUIDs/indices, got %r"
            % (background_slices,)
        )
    same_gpu = [g for g in gpu_list if g.get("index") == main.get("gpu_index")]
    gpu = (
        same_gpu[0]
        if same_gpu
        else {
            "index": main.get("gpu_index"),
            "uuid": main.get("gpu_uuid"),
            "name": main.get("gpu_name"),
            "model": main.get("gpu_model"),
        }
    )
    return SliceChoice(main=main, backgrounds=free, shared_gpu=False, gpu=gpu)


# ----------------------------------------------------------------------------------- plan
def run_id_for(seed: str, when: str) -> str:
    """A run id such as ``20261122T051500Z-ab12cd`` (``when`` is the UTC timestamp part)."""
    return "%s-%s" % (when, hashlib.sha256(seed.encode()).hexdigest()[:6])


# Optional numeric options: (name, kind, lower bound, bound included) checked before planning.
_NUMBERS = (
    ("main_target_qps", float, 0.0, False),
    ("background_target_qps", float, 0.0, False),
    ("main_target_latency_ns", int, 0, False),
    ("main_min_query_count", int, 1, True),
    ("steady_tolerance", float, 0.0, False),
    ("max_output_bytes", int, 1, True),
)


def _check_numbers(options: Mapping[str, Any]) -> None:
    for key, kind, low, inclusive in _NUMBERS:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PlanError("%s must be a number, got %r" % (key, value))
        if kind is int and value != int(value):
            raise PlanError("%s must be a whole number, got %r" % (key, value))
        if value < low or (value == low and not inclusive):
            raise PlanError(
                "%s must be %s %s, got %r"
                % (key, "at least" if inclusive else "greater than", low, value)
            )


# Without main_benchmark_timeout, a PerformanceOnly main may run its min_duration plus as much
# again (min_query_count can outlast min_duration), and at least 10 minutes more, before the run
# is stopped as hung. An AccuracyOnly main goes over the whole data set: only the run's own limit.
MAIN_TIMEOUT_MARGIN_MS = 600000


def _main_timeout(options: Mapping[str, Any], duration: int, mode: str, run_limit: int) -> int:
    """main_benchmark_timeout in ms (0: none but the run's limit); given or derived."""
    if options.get("main_benchmark_timeout") is not None:
        given = _ms(options, "main_benchmark_timeout")
        if given <= duration:
            raise PlanError(
                "main_benchmark_timeout (%d ms) must be longer than main_benchmark_duration "
                "(%d ms): LoadGen runs at least that long" % (given, duration)
            )
        return given if given < run_limit else 0
    if mode == ACCURACY_ONLY:
        return 0
    derived = duration + max(duration, MAIN_TIMEOUT_MARGIN_MS)
    return derived if derived < run_limit else 0


def _ms(options: Mapping[str, Any], key: str, positive: bool = True) -> int:
    value = options.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = int(str(value))
        except (TypeError, ValueError):
            raise PlanError(
                "%s must be a whole number of milliseconds, got %r" % (key, value)
            ) from None
    if positive and value <= 0:
        raise PlanError("%s must be greater than 0 ms, got %r" % (key, value))
    if value < 0:
        raise PlanError("%s must not be negative, got %r ms" % (key, value))
    return int(value)


@dataclass(frozen=True)
class PlanSettings:
    """What a run's options say, each checked: the first step of a plan (:func:`normalise`)."""

    options: Mapping[str, Any]
    profile: Profile
    main_benchmark: str
    scenario: str
    action: str
    mode: str
    accuracy: str
    main_duration: int
    start_buffer: int
    start_timeout: int
    end_buffer: int
    bg_timeout: int
    stop_grace: int
    lease: int
    steady_window: int
    background_mode: str
    bg_duration: int
    main_timeout: int
    buffer_mode: str
    tolerance: float
    regexes: list[str] | None
    runargs: list[str]
    prefix: list[str]
    bg_runargs: list[str]
    extra_env: Mapping[str, Any]


def normalise(options: Mapping[str, Any], run_id: str) -> PlanSettings:
    """Every option of a run checked and in its working form; PlanError names the first problem."""
    profile = load_profile(
        options.get("harness") or "heteromig_synthetic", options.get("harness_profile_dirs")
    )
    problem = name_problem(run_id, "run_id")
    if problem:
        raise PlanError(problem)
    main_benchmark = options.get("main_benchmark") or profile.default_main_benchmark
    given_scenario = options.get("main_scenario")
    if given_scenario is not None and not str(given_scenario).strip():
        raise PlanError(
            "main_scenario is empty; scenarios are %s (default Offline)" % ", ".join(SCENARIOS)
        )
    scenario = normalize_scenario(given_scenario or "Offline")
    check_benchmark(profile, main_benchmark, scenario, "main")
    action = options.get("main_action") or "run_harness"
    if action not in profile.actions:
        raise PlanError(
            "harness %s has no action %r; its actions are %s"
            % (profile.name, action, ", ".join(sorted(profile.actions)))
        )
    mode = options.get("main_mode") or "PerformanceOnly"
    if mode not in MODES:
        raise PlanError("main_mode must be one of %s, got %r" % (", ".join(MODES), mode))
    if mode == ACCURACY_ONLY and profile.accuracy is None:
        raise PlanError(
            "harness %s cannot judge an AccuracyOnly run: its profile has no 'accuracy' section "
            "(the file its accuracy check writes and the regexes of its PASS/FAIL line)"
            % profile.name
        )
    if mode == ACCURACY_ONLY and action != "run_harness":
        raise PlanError(
            "main_mode AccuracyOnly goes with main_action run_harness; %s runs its own modes"
            % action
        )
    accuracy = options.get("main_accuracy_target") or "default"
    if accuracy not in ("default", "high"):
        raise PlanError("main_accuracy_target must be default or high, got %r" % accuracy)

    main_duration = _ms(options, "main_benchmark_duration")
    start_buffer = _ms(options, "start_time_buffer", positive=False)
    start_timeout = _ms(options, "background_start_timeout")
    end_buffer = _ms(options, "end_time_buffer_min", positive=False)
    bg_timeout = _ms(options, "background_benchmark_timeout")
    stop_grace = _ms(options, "stop_grace", positive=False)
    lease = _ms(options, "lease_timeout")
    steady_window = _ms(options, "steady_window")
    bg_duration_opt = options.get("background_benchmark_duration", "automatic")
    if isinstance(bg_duration_opt, str) and bg_duration_opt.strip().lower() == "automatic":
        background_mode = "automatic"
        bg_duration = bg_timeout
    else:
        background_mode = "wait"
        bg_duration = _ms(
            {"background_benchmark_duration": bg_duration_opt}, "background_benchmark_duration"
        )
        needed = main_duration + start_buffer + end_buffer
        if bg_duration < needed:
            raise PlanError(
                "background_benchmark_duration (%d ms) must be at least main_benchmark_duration "
                "+ start_time_buffer + end_time_buffer_min (%d ms), or the backgrounds finish "
                "before the main benchmark; use 'automatic' to stop them when it ends"
                % (bg_duration, needed)
            )
    main_timeout = _main_timeout(options, main_duration, mode, bg_timeout)
    if main_duration >= bg_timeout:
        raise PlanError(
            "main_benchmark_duration (%d ms) must be shorter than background_benchmark_timeout "
            "(%d ms), the limit of the whole run" % (main_duration, bg_timeout)
        )
    buffer_mode = options.get("start_time_buffer_mode") or "fixed"
    if buffer_mode not in ("fixed", "steady"):
        raise PlanError("start_time_buffer_mode must be fixed or steady, got %r" % buffer_mode)
    if buffer_mode == "steady" and not profile.progress_regex:
        raise PlanError(
            "start_time_buffer_mode steady needs a harness that reports progress: profile %s "
            "has no progress_regex (use fixed)" % profile.name
        )
    tolerance = options.get("steady_tolerance", 0.05)
    if not isinstance(tolerance, (int, float)) or not 0 < float(tolerance) < 1:
        raise PlanError("steady_tolerance must be a fraction between 0 and 1, got %r" % tolerance)

    _check_numbers(options)
    regexes = options.get("readiness_regexes") or profile.readiness_regexes or None
    if regexes is not None:
        regexes = [str(r) for r in regexes]
        for regex in regexes:
            if not regex.strip():
                raise PlanError(
                    "readiness_regexes: an empty regex matches every line, so every benchmark "
                    "would count as ready at once; give the marker line's regex"
                )
            try:
                re.compile(regex)
            except re.error as exc:
                raise PlanError(
                    "readiness_regexes: %r is not a valid regex: %s" % (regex, exc)
                ) from exc

    runargs = split_args(options.get("main_benchmark_runargs"), "main_benchmark_runargs")
    prefix = split_args(options.get("main_benchmark_cmd_prefix"), "main_benchmark_cmd_prefix")
    bg_runargs = split_args(options.get("background_runargs"), "background_runargs")
    extra_env = options.get("env") or {}
    if not isinstance(extra_env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in extra_env.items()
    ):
        raise PlanError("env must map variable names to strings")
    for key, value in extra_env.items():
        if not _ENV_NAME_RE.match(key):
            raise PlanError(
                "env: %r is not a valid environment variable name (letters, digits and '_', "
                "not starting with a digit)" % key
            )
        if "\0" in str(value):
            raise PlanError("env: the value of %s holds a NUL character" % key)
    return PlanSettings(
        options=options,
        profile=profile,
        main_benchmark=main_benchmark,
        scenario=scenario,
        action=action,
        mode=mode,
        accuracy=accuracy,
        main_duration=main_duration,
        start_buffer=start_buffer,
        start_timeout=start_timeout,
        end_buffer=end_buffer,
        bg_timeout=bg_timeout,
        stop_grace=stop_grace,
        lease=lease,
        steady_window=steady_window,
        background_mode=background_mode,
        bg_duration=bg_duration,
        main_timeout=main_timeout,
        buffer_mode=buffer_mode,
        tolerance=tolerance,
        regexes=regexes,
        runargs=runargs,
        prefix=prefix,
        bg_runargs=bg_runargs,
        extra_env=extra_env,
    )


def choose(
    settings: PlanSettings, devices: Any, gpus: list[Mapping[str, Any]] | None
) -> tuple[SliceChoice, list[str]]:
    """The second step: the main's slice, the backgrounds' slices and the benchmarks on them."""
    options, profile, main_benchmark = settings.options, settings.profile, settings.main_benchmark
    choice = choose_slices(
        devices,
        gpus,
        options.get("main_slice"),
        options.get("background_slices"),
        bool(options.get("allow_shared_gpu")),
    )
    free = len(choice.backgrounds) if not choice.shared_gpu else 1 << 30
    background_names = expand_backgrounds(
        profile,
        options.get("background_benchmarks", "all"),
        main_benchmark,
        free,
        fill=bool(options.get("fill_slices", True)) and not choice.shared_gpu,
    )
    return choice, background_names


def render(
    settings: PlanSettings,
    choice: SliceChoice,
    background_names: list[str],
    *,
    host: str,
    python: str,
    host_root: str,
    host_pythonpath: str,
    backend: Mapping[str, Any],
    run_id: str,
) -> RunPlan:
    """The last step: each benchmark's command rendered from the profile, and the run's limits."""
    options = settings.options
    profile = settings.profile
    main_benchmark = settings.main_benchmark
    scenario = settings.scenario
    action = settings.action
    mode = settings.mode
    accuracy = settings.accuracy
    main_duration = settings.main_duration
    start_buffer = settings.start_buffer
    start_timeout = settings.start_timeout
    end_buffer = settings.end_buffer
    bg_timeout = settings.bg_timeout
    stop_grace = settings.stop_grace
    lease = settings.lease
    steady_window = settings.steady_window
    background_mode = settings.background_mode
    bg_duration = settings.bg_duration
    main_timeout = settings.main_timeout
    buffer_mode = settings.buffer_mode
    tolerance = settings.tolerance
    regexes = settings.regexes
    runargs = settings.runargs
    prefix = settings.prefix
    bg_runargs = settings.bg_runargs
    extra_env = settings.extra_env
    run_dir = os.path.join(host_root, "runs", run_id)
    harness_vars = dict(options.get("harness_vars") or {})
    engine_dir = str(harness_vars.get("engine_dir") or os.path.join(host_root, "engines"))
    verbose_all = bool(options.get("verbose_all"))
    base = {
        "python": python,
        "host_root": host_root,
        "host_pythonpath": host_pythonpath,
        "run_id": run_id,
        "run_dir": run_dir,
        "engine_dir": engine_dir,
        "verbose_args": list(profile.verbose_args),
        "vars": harness_vars,
        "host": host,
        "shared_gpu": choice.shared_gpu,
    }
    entries = [
        (
            MAIN,
            "main",
            main_benchmark,
            scenario,
            action,
            choice.main,
            {
                "duration_ms": main_duration,
                "min_query_count": options.get("main_min_query_count"),
                "mode": mode,
                "target_qps": options.get("main_target_qps"),
                "target_latency_ns": options.get("main_target_latency_ns"),
                "runargs": runargs,
                "verbose": bool(options.get("verbose")) or verbose_all,
                "config_ver": profile.config_ver(main_benchmark, accuracy),
            },
        )
    ]
    for index, bench in enumerate(background_names):
        device = choice.main if choice.shared_gpu else choice.backgrounds[index]
        entries.append(
            (
                "bg-%d" % (index + 1),
                "background",
                bench,
                "Offline",
                "run_harness",
                device,
                {
                    "duration_ms": bg_duration,
                    "min_query_count": 1,
                    "mode": "PerformanceOnly",
                    "target_qps": options.get("background_target_qps"),
                    "target_latency_ns": None,
                    "runargs": bg_runargs,
                    "verbose": verbose_all,
                    "config_ver": profile.config_ver(bench, "default"),
                },
            )
        )
    benchmarks: list[BenchmarkPlan] = []
    for name, role, bench, scen, act, device, extra in entries:
        log_dir = os.path.join(run_dir, name)
        context = dict(base)
        context.update(extra)
        context.update(
            {
                "name": name,
                "role": role,
                "benchmark": bench,
                "scenario": scen,
                "action": act,
                "log_dir": log_dir,
                "slice": slice_summary(device),
                "mig_uuid": device.get("uuid"),
                "bench": dict(profile.benchmarks.get(bench) or {}),
            }
        )
        argv = render_argv(profile.command["argv"], context, "%s command.argv" % profile.name)
        if role == "main":
            argv = prefix + argv
        env = {
            key: render_template(value, context, "%s command.env.%s" % (profile.name, key))
            for key, value in (profile.command.get("env") or {}).items()
        }
        env.update({str(k): str(v) for k, v in extra_env.items()})
        env["CUDA_VISIBLE_DEVICES"] = str(device.get("uuid"))
        if backend.get("name") == "sim":
            env["HETEROMIG_GPU_BACKEND"] = "sim"
            if backend.get("sim_state"):
                env["HETEROMIG_SIM_STATE"] = str(backend["sim_state"])
        cwd_template = profile.command.get("cwd")
        cwd = render_template(cwd_template, context, "command.cwd") if cwd_template else None
        benchmarks.append(
            BenchmarkPlan(
                name=name,
                role=role,
                benchmark=bench,
                scenario=scen,
                action=act,
                slice=slice_summary(device),
                argv=tuple(argv),
                env=env,
                cwd=cwd,
                log_dir=log_dir,
                files=dict(profile.actions.get(act, {}).get("files") or {}),
                duration_ms=extra["duration_ms"],
                mode=extra["mode"],
                accuracy_check=(
                    _accuracy_check(profile, context) if extra["mode"] == ACCURACY_ONLY else None
                ),
            )
        )
    choreography = {
        "background_start_timeout": start_timeout / 1000.0,
        "start_time_buffer": start_buffer / 1000.0,
        "start_time_buffer_mode": buffer_mode,
        "steady_window": steady_window / 1000.0,
        "steady_tolerance": float(tolerance),
        "main_immediate_start": bool(options.get("main_benchmark_immediate_start")),
        "background_mode": background_mode,
        "end_time_buffer_min": end_buffer / 1000.0,
        "stop_grace": stop_grace / 1000.0,
        "run_timeout": bg_timeout / 1000.0,
        "lenient": bool(options.get("lenient")),
        "main_mode": mode,
        "main_timeout": main_timeout / 1000.0,
    }
    expected = (
        main_duration + (start_buffer if not options.get("main_benchmark_immediate_start") else 0)
    ) / 1000.0
    if background_mode == "wait":
        expected = max(expected, bg_duration / 1000.0)
    return RunPlan(
        run_id=run_id,
        host=host,
        harness=profile.name,
        run_dir=run_dir,
        shared_gpu=choice.shared_gpu,
        gpu={k: choice.gpu.get(k) for k in ("index", "name", "model", "uuid")},
        benchmarks=tuple(benchmarks),
        choreography=choreography,
        readiness_regexes=regexes,
        progress_regex=profile.progress_regex,
        lease_s=lease / 1000.0,
        max_output_bytes=int(options.get("max_output_bytes") or 256 * 1024 * 1024),
        expected_duration_s=expected,
        backend=dict(backend),
        env={},
    )


def build_plan(
    options: Mapping[str, Any],
    *,
    host: str,
    devices: Any,
    gpus: list[Mapping[str, Any]] | None,
    python: str,
    host_root: str,
    host_pythonpath: str,
    backend: Mapping[str, Any],
    run_id: str,
) -> dict[str, Any]:
    """Everything the host runner needs, from task options and the host's facts: the options
    normalised, the slices chosen, the commands rendered (the contract's wire form)."""
    settings = normalise(options, run_id)
    choice, background_names = choose(settings, devices, gpus)
    return render(
        settings,
        choice,
        background_names,
        host=host,
        python=python,
        host_root=host_root,
        host_pythonpath=host_pythonpath,
        backend=backend,
        run_id=run_id,
    ).to_wire()
