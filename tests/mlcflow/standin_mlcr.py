"""A stand-in for MLCFlow's ``mlcr`` as far as the ``mlcflow`` harness profile relies on it.

The command line goes through the real mlcflow package (``pip install mlcflow``): its ``mlcr``
entry point, argument checks and parsing into run arguments. Only the script it would then run
is replaced (mlcflow's ``ScriptAction.run``), since the real scripts come from the
mlcommons@mlperf-automations repository, which needs the network. What the replacement does
follows that repository's ``run-mlperf-inference-app`` and ``generate-mlperf-inference-user-conf``:

- ``get,ml-model,<model>,...`` and ``get,dataset,<dataset>,...`` record an entry in the MLC cache
  (``$MLC_REPOS/local/cache``; by default ``$HOME/MLC/repos``); there is no download here;
- ``run-mlperf,inference[,_performance-only|_accuracy-only|...]`` maps its inputs as
  run-mlperf-inference-app's ``input_mapping`` does (an input it does not map is refused here,
  where the real one ignores it), refuses to run before the model and dataset are in the cache
  (the real one would download them), writes the user.conf mlcflow writes for the execution
  mode (``test``: test_query_count queries, min_duration 0; ``valid``: MLPerf's mlperf.conf,
  min_duration only for SingleStream/MultiStream), and runs a real LoadGen test on a trivial SUT
  into ``<results_dir>/<execution_mode>_results/<SUT>/<model>/<scenario>/performance/run_1/``
  (or ``.../accuracy/``), printing the reference implementation's last line before StartTest;
- the "model" takes ``$STANDIN_MLCR_SAMPLE_MS`` per sample (default 0), in a worker thread;
- an accuracy run writes ``accuracy.txt`` as the model's accuracy script prints it, with the
  value of ``$STANDIN_MLCR_ACCURACY`` (the stand-in has no model to measure).

It also writes ``standin_mlcr_call.json`` (the parsed run arguments and what it did) into the
output directory, for the tests. Usage: ``python standin_mlcr.py <mlcr arguments>``.
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import queue
import socket
import sys
import threading
import time
from typing import Any

# run-mlperf-inference-app's input_mapping (mlcommons/mlperf-automations), the inputs this
# stand-in acts on, with mlcflow's generic inputs. Others exist in the real one.
RUN_INPUTS = {
    "model", "implementation", "framework", "backend", "device", "scenario", "mode",
    "execution_mode", "results_dir", "output_dir", "min_duration", "min_query_count",
    "max_query_count", "offline_target_qps", "server_target_qps", "singlestream_target_latency",
    "multistream_target_latency", "target_qps", "target_latency", "test_query_count",
    "category", "division", "rerun", "imagenet_path",
}  # fmt: skip
GENERIC = {"tags", "details", "mlc_run_cmd", "quiet", "env", "j", "verbose", "silent"}
SUBMISSION_GENERATION = {
    "performance-only": ["performance"],
    "accuracy-only": ["accuracy"],
    "performance-and-accuracy": ["performance", "accuracy"],
}
# model -> (MLC model cache tag, dataset cache tags, readiness line, accuracy line format)
MODELS = {
    "resnet50": ("resnet50", ("imagenet", "validation"), "vision", "accuracy={:.3f}%, good={}, total={}"),
    "retinanet": ("retinanet", ("openimages", "validation"), "vision", "mAP={:.3f}%"),
    "bert-99": ("bert-large", ("squad", "validation"), "bert", '{{"exact_match": 80.1, "f1": {:.3f}}}'),
    "bert-99.9": ("bert-large", ("squad", "validation"), "bert", '{{"exact_match": 80.1, "f1": {:.3f}}}'),
}  # fmt: skip


class Refused(Exception):
    """The request is one the real mlcr would fail on (or this stand-in cannot serve)."""


def cache_root() -> str:
    repos = os.environ.get("MLC_REPOS") or os.path.join(os.path.expanduser("~"), "MLC", "repos")
    return os.path.join(repos, "local", "cache")


def cached(tags: set[str]) -> bool:
    root = cache_root()
    if not os.path.isdir(root):
        return False
    for entry in os.listdir(root):
        try:
            with open(os.path.join(root, entry, "standin-cache.json"), encoding="utf-8") as f:
                if tags <= set(json.load(f)["tags"]):
                    return True
        except (OSError, ValueError, KeyError):
            continue
    return False


def fetch(tags: list[str]) -> dict[str, Any]:
    """get,ml-model,... / get,dataset,...: a cache entry, as the real script leaves one."""
    plain = [t for t in tags if not t.startswith("_")]
    name = "-".join(plain)
    digest = hashlib.sha256(",".join(sorted(tags)).encode()).hexdigest()[:16]
    path = os.path.join(cache_root(), "%s_%s" % (name, digest))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "standin-cache.json"), "w", encoding="utf-8") as handle:
        json.dump({"tags": [t.lstrip("_") for t in tags]}, handle)  # a variation is a tag too
    print("standin mlcr: cached %s in %s" % (",".join(tags), path))
    return {"return": 0}


def user_conf(inputs: dict[str, Any], model: str, scenario: str, style: str) -> str:
    """The user.conf of generate-mlperf-inference-user-conf for these inputs (a subset)."""
    name = "bert" if "bert" in model else model
    lines = []
    if scenario in ("Offline", "Server"):
        key = "%s_target_qps" % scenario.lower()
        value = inputs.get(key) or inputs.get("target_qps") or 1
        if style == "test" and scenario == "Offline":
            value = 1  # MLC_MLPERF_INFERENCE_TEST_QPS
        lines.append("%s.%s.target_qps = %s" % (name, scenario, value))
    else:
        key = "%s_target_latency" % scenario.lower()
        value = inputs.get(key) or inputs.get("target_latency") or 0.5
        if style == "test" and scenario == "SingleStream":
            value = 1000
        lines.append("%s.%s.target_latency = %s" % (name, scenario, value))
    if style == "test":
        count = int(inputs.get("test_query_count") or 5)
        low = int(inputs.get("min_query_count") or count)
        high = max(low, int(inputs.get("max_query_count") or count))
        lines += [
            "%s.%s.max_query_count = %d" % (name, scenario, high),
            "%s.%s.min_query_count = %d" % (name, scenario, low),
            "%s.%s.min_duration = 0" % (name, scenario),
            "%s.%s.sample_concatenate_permutation = 0" % (name, scenario),
        ]
        if scenario != "Offline":
            lines.append("%s.%s.max_duration = 30000" % (name, scenario))
    elif style == "valid" and scenario in ("SingleStream", "MultiStream"):
        if inputs.get("min_duration"):
            lines.append("%s.%s.min_duration = %s" % (name, scenario, inputs["min_duration"]))
        if scenario == "MultiStream":
            lines.append(
                "%s.%s.min_query_count = %s"
                % (name, scenario, inputs.get("min_query_count") or 662)
            )
    return "\n".join(lines) + "\n"


def run_loadgen(
    model: str, scenario: str, mode: str, conf: str, out: str, readiness: str
) -> dict[str, Any]:
    import mlperf_loadgen as lg

    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
    conf_path = os.path.join(out, "user.conf")
    with open(conf_path, "w", encoding="utf-8") as handle:
        handle.write(conf)
    if settings.FromConfig(conf_path, "bert" if "bert" in model else model, scenario, 1) != 0:
        raise Refused("LoadGen refused the user.conf %s" % conf_path)
    total = 64
    responses: list[Any] = []
    pending: queue.Queue[Any] = queue.Queue()
    seconds = float(os.environ.get("STANDIN_MLCR_SAMPLE_MS", "0")) / 1000.0

    def work() -> None:
        """The 'model': $STANDIN_MLCR_SAMPLE_MS per sample, in a worker like the reference's."""
        while True:
            samples = pending.get()
            if samples is None:
                return
            for sample in samples:
                if seconds:
                    time.sleep(seconds)
                data = array.array("B", [sample.index % 256] * 4)  # kept alive in responses
                responses.append(data)
                address, length = data.buffer_info()
                lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, address, length)])

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    sut = lg.ConstructSUT(pending.put, lambda: None)
    qsl = lg.ConstructQSL(total, total, lambda s: None, lambda s: None)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = out
    log_settings.log_output.copy_summary_to_stdout = True
    if readiness == "vision":
        sys.stderr.write("INFO:main:starting TestScenario.%s\n" % scenario)
        sys.stderr.flush()
    else:
        print("Running LoadGen test...", flush=True)
    lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    pending.put(None)
    worker.join()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    return {"samples": len(responses), "total": total}


def run_mlperf(tags: list[str], args: dict[str, Any]) -> dict[str, Any]:
    variations = [t[1:] for t in tags if t.startswith("_")]
    unknown = sorted(set(args) - RUN_INPUTS - GENERIC)
    if unknown:
        raise Refused("inputs run-mlperf-inference-app does not map: %s" % ", ".join(unknown))
    modes = SUBMISSION_GENERATION["performance-and-accuracy"]
    for variation in variations:
        if variation in SUBMISSION_GENERATION:
            modes = SUBMISSION_GENERATION[variation]
        elif not (variation in ("full", "short", "all-scenarios") or variation.startswith("r")):
            raise Refused("run-mlperf-inference-app has no variation _%s" % variation)
    if args.get("mode") and len(modes) == 1:
        modes = [str(args["mode"])]
    model = str(args.get("model") or "resnet50")
    if model not in MODELS:
        raise Refused("this stand-in serves the models %s, not %r" % (", ".join(MODELS), model))
    model_tag, dataset_tags, readiness, line = MODELS[model]
    missing = [
        "get,ml-model,%s" % model_tag if not cached({"ml-model", model_tag}) else "",
        "get,dataset,%s,_%s" % dataset_tags if not cached({"dataset", *dataset_tags}) else "",
    ]
    missing = [m for m in missing if m]
    if missing:
        raise Refused(
            "model or dataset not in the MLC cache (%s): fetch them first with mlcr %s (the "
            "stand-in cannot download)" % (cache_root(), "; mlcr ".join(missing))
        )
    scenario = str(args.get("scenario") or "Offline")
    style = str(args.get("execution_mode") or "test")
    implementation = str(args.get("implementation") or "reference")
    device = str(args.get("device") or "cpu")
    framework = str(args.get("framework") or args.get("backend") or "onnxruntime")
    base = str(args.get("results_dir") or args.get("output_dir") or "")
    if not base:
        base = os.path.join(cache_root(), "get-mlperf-inference-results-dir_standin")
    sut = "%s-%s-%s-%s-vdefault-default_config" % (
        socket.gethostname(),
        implementation,
        "gpu" if device == "cuda" else device,
        framework,
    )
    results = []
    for mode in modes:
        out = os.path.join(base, "%s_results" % style, sut, model, scenario.lower(), mode)
        if mode == "performance":
            out = os.path.join(out, "run_1")
        os.makedirs(out, exist_ok=True)
        conf = user_conf(args, model, scenario, style)
        outcome = run_loadgen(model, scenario, mode, conf, out, readiness)
        if mode == "accuracy":
            value = float(os.environ.get("STANDIN_MLCR_ACCURACY", "0"))
            text = line.format(value, int(value * outcome["total"] / 100), outcome["total"])
            with open(os.path.join(out, "accuracy.txt"), "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            print(text)
        record = {"run_args": args, "tags": tags, "mode": mode, "user_conf": conf, "outdir": out}
        record["env_CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        with open(os.path.join(out, "standin_mlcr_call.json"), "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
        results.append(out)
    print(
        "\nThe MLPerf inference results are stored at %s\n" % os.path.join(base, style + "_results")
    )
    return {"return": 0}


def standin_run(_action: Any, run_args: dict[str, Any]) -> dict[str, Any]:
    """Replaces mlcflow's ScriptAction.run: the scripts this stand-in knows."""
    tags = [t.strip() for t in str(run_args.get("tags") or "").split(",") if t.strip()]
    plain = {t for t in tags if not t.startswith("_")}
    try:
        if {"get", "ml-model"} <= plain or {"get", "dataset"} <= plain:
            return fetch(tags)
        if plain and plain <= {"run-mlperf", "inference", "run", "mlperf", "mlcommons"}:
            return run_mlperf(tags, run_args)
        raise Refused("the stand-in has no script with the tags %s" % ",".join(tags))
    except Refused as exc:
        return {"return": 1, "error": "standin mlcr: %s" % exc}


def main() -> None:
    try:
        import mlc.main
        import mlc.script_action
    except ImportError as exc:
        sys.stderr.write("standin mlcr needs the mlcflow package (pip install mlcflow): %s\n" % exc)
        raise SystemExit(2) from None
    mlc.script_action.ScriptAction.run = standin_run  # type: ignore[method-assign]
    sys.argv[0] = "mlcr"
    mlc.main.mlcr()


if __name__ == "__main__":
    main()
