"""A stand-in benchmark for the runner benchmarks: writes N lines/s, then a readiness marker.

    python3 hetero_writer.py --rate 20000 --marker-after 1.0 [--duration 0] [--log-dir DIR]

Writes ``--rate`` noise lines per second to stdout (unbuffered, in batches, paced by the
clock), prints ``[I] ts=<epoch> running actual test.`` after ``--marker-after`` seconds and goes
on writing until ``--duration`` (0: until SIGTERM). On SIGTERM, or at the end, it prints how many
lines it wrote in how long (``WRITER lines=... seconds=...``), so the achieved rate is known.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

NOISE = b"[V] [writer] step %08d: batch 0042 of 9999, loss 0.123456, samples/s 98765.4 .....\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20000.0)
    parser.add_argument("--marker-after", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--log-dir", default=None)
    args = parser.parse_args()
    start = time.time()
    written = 0
    marker_done = False
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    out = sys.stdout.fileno()
    while not stop:
        now = time.time()
        if args.duration and now - start >= args.duration:
            break
        due = int(args.rate * (now - start)) - written
        if due > 0:
            due = min(due, 5000)
            os.write(out, b"".join(NOISE % (written + i) for i in range(due)))
            written += due
        if not marker_done and now - start >= args.marker_after:
            os.write(out, b"[I] ts=%.6f running actual test.\n" % time.time())
            marker_done = True
        time.sleep(0.001 if args.rate >= 1000 else min(0.05, 1.0 / max(args.rate, 1.0)))
    os.write(out, b"WRITER lines=%d seconds=%.3f\n" % (written, time.time() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
