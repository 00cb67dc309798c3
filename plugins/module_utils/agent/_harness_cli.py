# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded harness's command line: the argument parser, its subcommands and options, and
the validators of their values (one-line errors, exit code 2).

Part of the program ``_loadgen_harness``, whose ``build_parser`` binds each subcommand to its
``cmd_*`` function. Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, List, Mapping, NoReturn

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _torch_models
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_spec import (
    HARNESS_VERSION,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_base import (
    EXIT_USAGE,
    PROG,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_settings import (
    AUDIT_TESTS,
    DEFAULT_MIN_DURATION_MS,
    DEFAULT_SERVER_TARGET_LATENCY_NS,
    DEFAULT_SERVER_TARGET_QPS,
    DEFAULT_WARMUP_MS,
    LOADGEN_BYTES_PER_SAMPLE,
    OFFLINE_QPS_HEADROOM,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
    normalize_scenario,
)

MODES = ("PerformanceOnly", "AccuracyOnly")
# A subcommand's function: the parsed arguments in, the exit code out.
Command = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage goes to --help, not to every error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, "%s: error: %s (see --help)\n" % (PROG, message))


def _names(name: str) -> List[str]:
    """Both spellings of an option: --min-duration-ms and --min_duration_ms."""
    names = ["--" + name]
    if "-" in name:
        names.append("--" + name.replace("-", "_"))
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("%s must be greater than zero" % text)
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("%s must not be negative" % text)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise argparse.ArgumentTypeError("%s must be a finite number greater than zero" % text)
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("%s must be between 0 and 1" % text)
    return value


def _mode(text: str) -> str:
    lowered = text.lower()
    for mode in MODES:
        if lowered in (mode.lower(), mode.lower().replace("only", "")):
            return mode
    raise argparse.ArgumentTypeError(
        "unknown mode %r: choose PerformanceOnly or AccuracyOnly" % text
    )


def _add_benchmark_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        "--benchmark",
        dest="model",
        required=True,
        help="synthetic model (see the 'models' command)",
    )
    parser.add_argument(
        "--scenario",
        required=True,
        type=normalize_scenario,
        help="Offline, Server, SingleStream or MultiStream (case-insensitive)",
    )
    parser.add_argument(
        *_names("accuracy-target"),
        dest="accuracy_target",
        default="99",
        help="99 (float16-rounded weights) or 99.9 (float32); default 99",
    )
    parser.add_argument(
        *_names("allow-shared-gpu"),
        dest="allow_shared_gpu",
        action="store_true",
        help="accept a whole GPU (no MIG) in CUDA_VISIBLE_DEVICES: the explicit "
        "'shared GPU, no MIG isolation' mode (engine profile full-gpu)",
    )


def make_parser(handlers: Mapping[str, Command]) -> argparse.ArgumentParser:
    """The command line; ``handlers`` maps each subcommand to the function that runs it."""
    parser = _Parser(
        prog=PROG,
        description="heteromig's embedded benchmark harness: synthetic models under MLPerf "
        "LoadGen, one MIG slice per process (CUDA_VISIBLE_DEVICES).",
    )
    parser.add_argument("--version", action="version", version="%s %s" % (PROG, HARNESS_VERSION))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser("run", help="run a LoadGen test on this process's slice")
    _add_benchmark_options(run)
    run.add_argument(
        "--mode",
        type=_mode,
        default="PerformanceOnly",
        help="PerformanceOnly (default) or AccuracyOnly",
    )
    run.add_argument(
        *_names("log-dir"),
        dest="log_dir",
        required=True,
        help="directory for LoadGen's logs and heteromig_harness.json",
    )
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--engine", help="engine file to run")
    where.add_argument(
        *_names("engine-dir"),
        dest="engine_dir",
        help="engine store: the engine for this slice's profile is found there",
    )
    run.add_argument(
        *_names("min-duration-ms"),
        dest="min_duration_ms",
        type=_positive_int,
        default=DEFAULT_MIN_DURATION_MS,
        help="LoadGen min_duration_ms (default %d)" % DEFAULT_MIN_DURATION_MS,
    )
    run.add_argument(
        *_names("max-duration-ms"),
        dest="max_duration_ms",
        type=_non_negative_int,
        default=0,
        help="LoadGen max_duration_ms (default 0: none)",
    )
    run.add_argument(
        *_names("min-query-count"),
        dest="min_query_count",
        type=_positive_int,
        help="LoadGen min_query_count (default: Offline 1, Server 500, "
        "SingleStream 100, MultiStream 662)",
    )
    run.add_argument(
        *_names("server-target-qps"),
        dest="server_target_qps",
        type=_positive_float,
        help="Server target QPS (default %g)" % DEFAULT_SERVER_TARGET_QPS,
    )
    run.add_argument(
        *_names("server-target-latency-ns"),
        dest="server_target_latency_ns",
        type=_positive_int,
        help="Server latency bound at the 99th percentile (default %d ns)"
        % DEFAULT_SERVER_TARGET_LATENCY_NS,
    )
    run.add_argument(
        *_names("offline-expected-qps"),
        dest="offline_expected_qps",
        type=_positive_float,
        help="Offline expected QPS (default: the throughput of a short LoadGen calibration "
        "run, else of the warm-up, x %g)" % OFFLINE_QPS_HEADROOM,
    )
    run.add_argument(
        *_names("max-offline-query-mb"),
        dest="max_offline_query_mb",
        type=_positive_int,
        help="Offline: at most this much LoadGen memory for the one query (about %d bytes a "
        "sample); a longer run is shortened to fit, with a warning. For a background, which is "
        "stopped when the main ends (default: no limit)" % LOADGEN_BYTES_PER_SAMPLE,
    )
    run.add_argument(
        *_names("single-stream-expected-latency-ns"),
        dest="single_stream_expected_latency_ns",
        type=_positive_int,
        help="SingleStream expected latency (default: from the warm-up)",
    )
    run.add_argument(
        *_names("multi-stream-expected-latency-ns"),
        dest="multi_stream_expected_latency_ns",
        type=_positive_int,
        help="MultiStream expected latency (default: from the warm-up)",
    )
    run.add_argument(
        *_names("print-timestamps"),
        dest="print_timestamps",
        action="store_true",
        help="LoadGen print_timestamps: it prints 'Loadgen :: Perf mode start' at "
        "the start of the timed phase",
    )
    run.add_argument(
        *_names("enable-trace"),
        dest="enable_trace",
        action="store_true",
        help="write LoadGen's mlperf_log_trace.json (large: ~270 bytes per sample)",
    )
    run.add_argument(
        *_names("audit-test"),
        dest="audit_test",
        choices=AUDIT_TESTS,
        help="apply TEST01- or TEST04-style LoadGen settings (no verification)",
    )
    run.add_argument(
        *_names("warmup-ms"),
        dest="warmup_ms",
        type=_non_negative_int,
        default=DEFAULT_WARMUP_MS,
        help="warm-up before the timed phase (default %d ms)" % DEFAULT_WARMUP_MS,
    )
    run.add_argument(
        "--compute",
        choices=_torch_models.COMPUTE_CHOICES,
        default="auto",
        help="auto (default): torch on the CUDA device if torch with CUDA is "
        "present and the device is real, else numpy on the CPU (the GPU models "
        "synth-resnet50 and synth-bert-large need torch with CUDA); torch-cpu: "
        "a GPU model on the CPU (float32, slow)",
    )
    run.add_argument(
        "--threads",
        type=_positive_int,
        help="BLAS/OpenMP threads (default: $OMP_NUM_THREADS, else 1)",
    )
    run.add_argument(
        "--nice",
        type=_non_negative_int,
        default=0,
        help="raise this process's nice value (e.g. for background benchmarks)",
    )
    run.add_argument(
        *_names("inject-output-errors"),
        dest="inject_output_errors",
        type=_fraction,
        default=0.0,
        help="testing aid: corrupt this fraction of the outputs (AccuracyOnly then fails)",
    )
    run.set_defaults(func=handlers["run"])

    build = commands.add_parser(
        "build-engine", help="build the engine for this process's slice (CUDA_VISIBLE_DEVICES)"
    )
    _add_benchmark_options(build)
    place = build.add_mutually_exclusive_group(required=True)
    place.add_argument(*_names("engine-dir"), dest="engine_dir", help="engine store")
    place.add_argument("--output", help="engine file to write")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--json", action="store_true", help="print the result as one JSON line")
    build.set_defaults(func=handlers["build-engine"])

    models = commands.add_parser("models", help="list the synthetic models")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=handlers["models"])

    inspect = commands.add_parser("inspect-engine", help="print an engine's header")
    inspect.add_argument("engine")
    inspect.set_defaults(func=handlers["inspect-engine"])
    return parser
