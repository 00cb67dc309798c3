"""A tiny MLPerf LoadGen SUT on the CPU, for tests: real LoadGen, real log files, in about a second.

    python tiny_sut.py --scenario Offline --mode PerformanceOnly --outdir DIR [options]

Behaves like an NVIDIA harness as far as the hetero runner cares: it warms up, prints
``running actual test.`` right before LoadGen's StartTest (the readiness marker), runs with
``print_timestamps`` on (LoadGen prints ``Loadgen :: Perf mode start ...``) and writes the LoadGen
logs into ``--outdir``. Its "model" classifies sample ``i`` as ``i % 10`` (wrong for every 17th
sample), spending a little CPU per sample and pacing itself to ``--rate`` samples/s, so CPU
contention from concurrent benchmarks really slows it down.

``--audit TEST01|TEST04`` writes the MLPerf audit.config of that compliance test into the working
directory first (LoadGen reads it from there). ``--crash-after S`` exits 1 mid-run (a crashing
benchmark). ``--accuracy-txt`` (AccuracyOnly) scores mlperf_log_accuracy.json into accuracy.txt
the way the reference accuracy scripts do (``accuracy=...%``).
"""

from __future__ import annotations

import argparse
import array
import json
import os
import queue
import sys
import threading
import time

import mlperf_loadgen as lg

AUDIT = {
    # compliance/nvidia/TEST01/audit.config: accuracy logging in performance mode
    "TEST01": "*.*.mode = 2\n*.*.accuracy_log_rng_seed = 720381539243781796\n"
    "*.*.accuracy_log_sampling_target = 64\n",
    # compliance/nvidia/TEST04/audit.config: the same sample over and over
    "TEST04": "*.*.mode = 2\n*.*.performance_issue_same = 1\n*.*.performance_issue_same_index = 3\n",
}
TOTAL_SAMPLES = 256


def predict(index: int) -> int:
    return (index + 1) % 10 if index % 17 == 0 else index % 10


def label(index: int) -> int:
    return index % 10


def _work(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFF
    return acc


class Sut:
    def __init__(self, rate: float, work: int, crash_after: float | None) -> None:
        self.rate = rate
        self.work = work
        self.crash_after = crash_after
        self.started = time.monotonic()
        self.q: queue.Queue[list[lg.QuerySample] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def issue(self, samples: list[lg.QuerySample]) -> None:
        self.q.put(list(samples))

    def flush(self) -> None:
        pass

    def _loop(self) -> None:
        batch = 8
        while True:
            samples = self.q.get()
            if samples is None:
                return
            for i in range(0, len(samples), batch):
                t = time.monotonic()
                if self.crash_after is not None and t - self.started > self.crash_after:
                    print("tiny_sut: simulated crash", file=sys.stderr, flush=True)
                    os._exit(1)
                chunk = samples[i : i + batch]
                _work(self.work * len(chunk))
                buffers = [array.array("B", [predict(s.index)]) for s in chunk]
                responses = [
                    lg.QuerySampleResponse(s.id, *b.buffer_info())
                    for s, b in zip(chunk, buffers, strict=True)
                ]
                pause = len(chunk) / self.rate - (time.monotonic() - t)
                if pause > 0:
                    time.sleep(pause)
                lg.QuerySamplesComplete(responses)

    def stop(self) -> None:
        self.q.put(None)
        self.thread.join()


def score(outdir: str) -> str:
    with open(os.path.join(outdir, "mlperf_log_accuracy.json"), encoding="utf-8") as handle:
        entries = json.load(handle)
    seen = {}
    for entry in entries:
        seen[entry["qsl_idx"]] = int(entry["data"][:2], 16)
    good = sum(1 for idx, pred in seen.items() if pred == label(idx))
    return "accuracy=%.3f%%, good=%d, total=%d\n" % (
        100.0 * good / max(len(seen), 1),
        good,
        len(seen),
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", default="Offline", choices=["Offline", "Server", "SingleStream"])
    p.add_argument("--mode", default="PerformanceOnly", choices=["PerformanceOnly", "AccuracyOnly"])
    p.add_argument("--outdir", required=True)
    p.add_argument("--min-duration-ms", type=int, default=500)
    p.add_argument("--min-query-count", type=int, default=1)
    p.add_argument("--rate", type=float, default=2000.0, help="samples/s the SUT sustains")
    p.add_argument("--expected-qps", type=float, default=2000.0)
    p.add_argument("--target-qps", type=float, default=200.0)
    p.add_argument("--target-latency-ms", type=float, default=50.0)
    p.add_argument("--work", type=int, default=2000, help="CPU work per sample (loop iterations)")
    p.add_argument("--warmup-s", type=float, default=0.1)
    p.add_argument("--audit", choices=sorted(AUDIT))
    p.add_argument("--crash-after", type=float)
    p.add_argument("--accuracy-txt", action="store_true")
    args = p.parse_args()

    os.makedirs(args.outdir, exist_ok=True)
    if args.audit:
        with open("audit.config", "w", encoding="utf-8") as handle:
            handle.write(AUDIT[args.audit])
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, args.scenario)
    settings.mode = getattr(lg.TestMode, args.mode)
    settings.min_duration_ms = args.min_duration_ms
    settings.min_query_count = args.min_query_count
    settings.offline_expected_qps = args.expected_qps
    settings.server_target_qps = args.target_qps
    settings.server_target_latency_ns = int(args.target_latency_ms * 1e6)
    settings.single_stream_expected_latency_ns = int(1e9 / args.rate)
    settings.print_timestamps = True
    log = lg.LogSettings()
    log.log_output.outdir = args.outdir
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False

    sut_impl = Sut(args.rate, args.work, args.crash_after)
    sut = lg.ConstructSUT(sut_impl.issue, sut_impl.flush)
    qsl = lg.ConstructQSL(TOTAL_SAMPLES, TOTAL_SAMPLES, lambda s: None, lambda s: None)
    time.sleep(args.warmup_s)  # "engine warm-up"
    print("tiny_sut: warm-up done, running actual test.", flush=True)
    lg.StartTestWithLogSettings(sut, qsl, settings, log)
    sut_impl.stop()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    if args.accuracy_txt and args.mode == "AccuracyOnly":
        with open(os.path.join(args.outdir, "accuracy.txt"), "w", encoding="utf-8") as handle:
            handle.write(score(args.outdir))
    print("tiny_sut: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
