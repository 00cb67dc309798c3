# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded benchmark harness: synthetic models driven by the real MLPerf LoadGen.

Run on a host (installed there by the role heteromig.fleet.host_runtime) as::

    PYTHONPATH=<host root>/lib python3 -m \\
        ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_harness run \\
        --model synth-mlp-small --scenario Offline --engine-dir <host root>/engines \\
        --log-dir /tmp/logs --min-duration-ms 10000

Subcommands: ``run`` (a LoadGen test), ``build-engine`` (an engine for the slice named by
CUDA_VISIBLE_DEVICES), ``models`` (what the harness offers), ``inspect-engine``.

Like NVIDIA's harnesses it warms up, then prints a line ending in ``running actual test.``
right before LoadGen's StartTest. The device comes from CUDA_VISIBLE_DEVICES, looked up through
NVML (HETEROMIG_GPU_BACKEND = nvml or sim, HETEROMIG_SIM_STATE for the simulator); the engine
must have been built for that device's GPU model and MIG profile. A run writes LoadGen's logs
and ``heteromig_harness.json`` into --log-dir.

Exit codes: 0 the test completed (whatever its LoadGen validity: read it from the logs);
1 the run failed; 2 bad input (arguments, device, engine, log directory); 3 an AccuracyOnly
run's outputs failed the accuracy check.

The program's parts: ``_harness_cli`` (the command line and its validators), ``_harness_sut``
(the compute back ends, LoadGen's SUT, the warm-up and the Offline calibration),
``_harness_settings`` (the LoadGen settings and the summary read back) and ``_harness_base``
(the name, exit codes, HarnessError, the lazy numpy and LoadGen imports). This module holds the
commands and ``main``.

Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import (
    _harness_accuracy as _accuracy,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _torch_models
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_spec import (
    ENV_SIM_STATE,
    HARNESS_VERSION,
    EngineError,
    SliceTarget,
    TargetError,
    batch_size,
    resolve_target,
    shared_gpu_banner,
    spec_for_target,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_store import (
    build_engine,
    load_tensors,
    locate_engine,
    read_engine,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_base import (
    EXIT_ACCURACY,
    EXIT_FAILED,
    EXIT_OK,
    PROG,
    HarnessError,
    _import_loadgen,
    _import_numpy,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_cli import make_parser
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_settings import (
    LOADGEN_BYTES_PER_SAMPLE,
    apply_settings,
    cap_offline_query,
    check_accuracy,
    loadgen_settings,
    offline_query_samples,
    parse_summary,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_sut import (
    SystemUnderTest,
    _plan_torch,
    calibrate_offline,
    make_compute,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    LOADGEN_FILES,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
    ACCURACY_TARGETS,
    ALL_MODELS,
    ModelError,
    SyntheticModel,
    check_combination,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    register_process,
)

# The readiness marker. NVIDIA's C++ harnesses print a line ending in "running actual test."
# right before LoadGen's StartTest, after warm-up; launch_heterogeneous_mig.py waits for it.
MARKER = "[I] [%s] Starting running actual test." % PROG
RESULT_FILE = "heteromig_harness.json"
ACCURACY_FILE = _accuracy.ACCURACY_FILE


def info(message: str) -> None:
    sys.stdout.write("[I] [%s] %s\n" % (PROG, message))
    sys.stdout.flush()


def warn(message: str) -> None:
    sys.stdout.write("[W] [%s] %s\n" % (PROG, message))
    sys.stdout.flush()
    sys.stderr.write("%s: warning: %s\n" % (PROG, message))
    sys.stderr.flush()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command line of _harness_cli, each subcommand bound to its ``cmd_*`` function."""
    return make_parser(
        {
            "run": cmd_run,
            "build-engine": cmd_build,
            "models": cmd_models,
            "inspect-engine": cmd_inspect,
        }
    )


# ---------------------------------------------------------------------------------------------
# Shared steps
# ---------------------------------------------------------------------------------------------
def _check_combination(args: argparse.Namespace) -> Any:
    """The SyntheticModel, or the TorchModel (GPU models: see _plan_torch)."""
    try:
        return check_combination(args.model, args.scenario, args.accuracy_target)
    except ModelError as exc:
        raise HarnessError(str(exc)) from None


def prepare_log_dir(path: str) -> str:
    """Create the log directory and prove it is writable; HarnessError otherwise."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise HarnessError(
            "log directory %s cannot be created: %s" % (path, exc.strerror or exc)
        ) from None
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".%s-write-test." % PROG):
            pass
    except OSError as exc:
        raise HarnessError(
            "log directory %s is not writable: %s" % (path, exc.strerror or exc)
        ) from None
    return path


def _resolve(args: argparse.Namespace) -> SliceTarget:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        target = resolve_target(visible, allow_shared_gpu=args.allow_shared_gpu)
    except TargetError as exc:
        raise HarnessError(str(exc)) from None
    for message in target.warnings:
        warn(message)
    if target.shared_gpu:
        sys.stdout.write(shared_gpu_banner(target) + "\n")
        sys.stdout.flush()
        sys.stderr.write("%s: warning: SHARED GPU, NO MIG ISOLATION on %s\n" % (PROG, target.uuid))
        sys.stderr.flush()
    return target


def _register_on_simulator(target: SliceTarget, used_memory: int) -> bool:
    """On a simulated host, show this process on its device in NVML, as a CUDA context does."""
    if target.backend != "sim" or not target.uuid:
        return False
    state = os.environ.get(ENV_SIM_STATE)
    if not state:
        raise HarnessError("HETEROMIG_SIM_STATE is not set, but the GPU backend is 'sim'")
    try:
        register_process("sim", state, os.getpid(), target.uuid, sys.executable, used_memory)
    except Exception as exc:  # SimulatorError and OSError alike end the run
        raise HarnessError(
            "cannot register this process on simulated device %s: %s" % (target.uuid, exc)
        ) from None
    return True


def _set_threads(threads: Optional[int]) -> None:
    """Pin BLAS/OpenMP threads before numpy is imported (many harnesses share few cores)."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if threads:
            os.environ[variable] = str(threads)
        else:
            os.environ.setdefault(variable, os.environ.get("OMP_NUM_THREADS", "1"))


def _write_json(path: str, data: Dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % PROG, dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    model = _check_combination(args)
    log_dir = prepare_log_dir(args.log_dir)
    record_path = os.path.join(log_dir, RESULT_FILE)
    target = _resolve(args)
    torch_plan = _plan_torch(model, args.compute, target, args.scenario, args.mode, args)
    try:
        engine_path, header, payload = locate_engine(
            args.engine_dir, args.engine, args.model, args.scenario, args.accuracy_target, target
        )
    except EngineError as exc:
        raise HarnessError(str(exc)) from None
    registered = _register_on_simulator(target, len(payload) + (256 << 20))
    if args.nice:
        os.nice(args.nice)
    _import_numpy()
    lg = _import_loadgen()
    tensors = load_tensors(header, payload, engine_path)
    data = None if torch_plan else model.inputs()
    if torch_plan:
        compute: Any = _torch_models.TorchModelCompute(model, torch_plan)
    else:
        compute = make_compute(args.compute, model, tensors, data, target)
    record: Dict[str, Any] = {
        "harness": "heteromig_synthetic",
        "harness_version": HARNESS_VERSION,
        "status": "running",
        "pid": os.getpid(),
        "argv": [sys.executable, "-m", __spec__.name if __spec__ else __name__, *sys.argv[1:]],
        "started_at": _now(),
        "model": args.model,
        "scenario": args.scenario,
        "mode": args.mode,
        "accuracy_target": args.accuracy_target,
        "audit_test": args.audit_test,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device": target.as_dict(),
        "shared_gpu": target.shared_gpu,
        "registered_on_simulator": registered,
        "compute": {"kind": compute.name, "description": compute.describe()},
        "engine": {
            "path": engine_path,
            "content_key": header["content_key"],
            "built_for": header["built_for"],
            "precision": header.get("precision"),
            "batch_size": header.get("batch_size"),
        },
        "log_dir": log_dir,
    }
    _write_json(record_path, record)
    info(
        "%s %s: model %s, scenario %s, mode %s, accuracy target %s"
        % (PROG, HARNESS_VERSION, args.model, args.scenario, args.mode, args.accuracy_target)
    )
    info("device: %s (CUDA_VISIBLE_DEVICES=%s)" % (target.describe(), target.visible_devices or ""))
    info(
        "engine: %s (key %s, %s weights, batch %s)"
        % (
            engine_path,
            header["content_key"][:12],
            header.get("precision"),
            header.get("batch_size"),
        )
    )
    info("compute: %s" % compute.describe())

    sut = SystemUnderTest(
        lg,
        compute,
        getattr(compute, "max_batch", None)
        or int(header.get("batch_size") or batch_size(args.scenario, target.profile)),
        model.outputs,
        args.inject_output_errors,
    )

    def load(_indices: Any) -> None:
        """The inputs are generated up front; LoadGen's load and unload have nothing to do."""

    qsl = lg.ConstructQSL(model.qsl_total, model.qsl_performance, load, load)
    handle = lg.ConstructSUT(sut.issue, sut.flush)
    sut.start()
    try:
        return _run_test(args, model, log_dir, record_path, record, lg, sut, qsl, handle, data)
    finally:
        sut.stop()
        lg.DestroySUT(handle)
        lg.DestroyQSL(qsl)


def _run_test(
    args: argparse.Namespace,
    model: SyntheticModel,
    log_dir: str,
    record_path: str,
    record: Dict[str, Any],
    lg: Any,
    sut: SystemUnderTest,
    qsl: Any,
    handle: Any,
    data: Any,
) -> int:
    """Warm up, calibrate, print the marker, run LoadGen's test, check and record the result."""
    warm = sut.warmup(args.scenario, model.qsl_performance, args.warmup_ms)
    info(
        "warm-up: %d batches of %d in %.3f s: %.1f samples/s, %.3f ms per batch"
        % (
            warm["batches"],
            warm["batch_size"],
            warm["seconds"],
            warm["samples_per_second"] or 0,
            warm["batch_latency_ns"] / 1e6,
        )
    )
    if sut.error is not None:
        raise HarnessError("the model failed during warm-up: %s" % sut.error, EXIT_FAILED)
    calibrate = (
        args.scenario == "Offline"
        and args.mode == "PerformanceOnly"
        and not args.offline_expected_qps
        and args.warmup_ms > 0
    )
    if calibrate:
        before = sut.completed
        measured = calibrate_offline(lg, handle, qsl, warm, args.warmup_ms, log_dir)
        warm["loadgen_samples_per_second"] = measured
        warm["loadgen_calibration_samples"] = sut.completed - before
        sut.completed = before
        info(
            "calibration through LoadGen: %s samples/s"
            % ("%.1f" % measured if measured else "unknown")
        )
        if sut.error is not None:
            raise HarnessError("the model failed during calibration: %s" % sut.error, EXIT_FAILED)
    values = loadgen_settings(args, warm)
    capped = cap_offline_query(values, args.max_offline_query_mb)
    if capped:
        warn(capped)
    settings = apply_settings(lg, values)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = log_dir
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = bool(args.enable_trace)
    record.update(warmup=warm, settings=values)
    info("LoadGen settings: %s" % ", ".join("%s=%s" % item for item in sorted(values.items())))
    if args.scenario == "Offline" and args.mode == "PerformanceOnly":
        samples = offline_query_samples(values)
        megabytes = samples * LOADGEN_BYTES_PER_SAMPLE / 1e6
        message = (
            "Offline: LoadGen issues about %d samples in one query (~%.0f MB of LoadGen memory)"
        )
        if megabytes > 2000:
            warn(
                message % (samples, megabytes) + ": shorten min_duration or lower the expected QPS"
            )
        else:
            info(message % (samples, megabytes))

    record["marker"] = {"line": MARKER, "time": time.time()}
    _write_json(record_path, record)
    sys.stdout.write(MARKER + "\n")
    sys.stdout.flush()
    started = time.time()
    lg.StartTestWithLogSettings(handle, qsl, settings, log_settings)
    ended = time.time()
    sys.stdout.flush()
    info("Finished running actual test (%.3f s, %d samples)." % (ended - started, sut.completed))
    record.update(
        test_started_at=started,
        test_ended_at=ended,
        samples_completed=sut.completed,
        log_files={
            name: os.path.join(log_dir, name)
            for name in LOADGEN_FILES
            if os.path.exists(os.path.join(log_dir, name))
        },
        loadgen=parse_summary(os.path.join(log_dir, "mlperf_log_summary.txt")),
    )
    if sut.error is not None:
        record.update(status="failed", error="model failed during the test: %s" % sut.error)
        _write_json(record_path, record)
        raise HarnessError(record["error"], EXIT_FAILED)
    code = EXIT_OK
    if args.mode == "AccuracyOnly":
        accuracy = check_accuracy(
            model,
            log_dir,
            data,
            args.accuracy_target,
            getattr(sut.compute, "accuracy_reference", None),
        )
        record["accuracy"] = accuracy
        record["log_files"]["accuracy.txt"] = os.path.join(log_dir, ACCURACY_FILE)
        info(accuracy["summary"])
        if not accuracy["passed"]:
            sys.stderr.write("%s: error: accuracy check FAILED: %s\n" % (PROG, accuracy["summary"]))
            code = EXIT_ACCURACY
    else:
        metrics = record["loadgen"]
        headline = ", ".join(
            "%s=%s" % (key, value)
            for key, value in sorted(metrics.items())
            if key not in ("result_validity", "latency_ns")
        )
        info("result: %s (%s)" % (metrics.get("result_validity", "unknown"), headline))
    record.update(status="completed", exit_code=code, ended_at=_now())
    _write_json(record_path, record)
    return code


def cmd_build(args: argparse.Namespace) -> int:
    _check_combination(args)
    target = _resolve(args)
    started = time.time()
    spec = spec_for_target(args.model, args.scenario, args.accuracy_target, target)
    _plan_torch(_check_combination(args), "build", target, args.scenario, "PerformanceOnly", args)
    registered = _register_on_simulator(target, 256 << 20)
    _import_numpy()
    try:
        result = build_engine(spec, args.engine_dir, args.output, target, args.force)
    except EngineError as exc:
        raise HarnessError(str(exc)) from None
    result.update(
        harness_version=HARNESS_VERSION,
        device=target.as_dict(),
        shared_gpu=target.shared_gpu,
        registered_on_simulator=registered,
        pid=os.getpid(),
        started_at=started,
        finished_at=time.time(),
    )
    if args.json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    else:
        info("engine %s: %s (%s)" % (result["action"], result["path"], result["reason"]))
        info("content key %s, built for %s" % (result["content_key"], result["built_for"]))
    sys.stdout.flush()
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    described = [ALL_MODELS[name].describe() for name in sorted(ALL_MODELS)]
    if args.json:
        sys.stdout.write(json.dumps(described, indent=1, sort_keys=True) + "\n")
        return EXIT_OK
    for model in described:
        sys.stdout.write(
            "%-16s %-30s %s\n    %s\n"
            % (
                model["name"],
                ",".join(model["scenarios"]),
                ",".join(model["categories"]),
                model["description"],
            )
        )
    sys.stdout.write("accuracy targets: %s\n" % ", ".join(ACCURACY_TARGETS))
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        header, _payload = read_engine(args.engine, verify=True)
    except EngineError as exc:
        raise HarnessError(str(exc)) from None
    sys.stdout.write(json.dumps(header, indent=1, sort_keys=True) + "\n")
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C ends the process at once, also while LoadGen's C++ code holds the main thread.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _set_threads(getattr(args, "threads", None))
    try:
        return int(args.func(args))
    except HarnessError as exc:
        sys.stdout.flush()
        sys.stderr.write("%s: error: %s\n" % (PROG, exc))
        return exc.code
    except Exception as exc:  # one clear line instead of a traceback
        sys.stdout.flush()
        sys.stderr.write(
            "%s: error: unexpected failure: %s: %s\n" % (PROG, type(exc).__name__, exc)
        )
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
