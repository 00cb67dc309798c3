"""A stand-in build command for harness profiles in tests: it records how it was called.

One JSON line per call is appended to --log: its argv, working directory, CUDA_VISIBLE_DEVICES,
GPU backend and STANDIN_TAG. It builds nothing and prints nothing; exit 0.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys


def main() -> int:
    argv = sys.argv[1:]
    log = argv[argv.index("--log") + 1]
    record = {
        "argv": argv,
        "cwd": os.getcwd(),
        "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "backend": os.environ.get("HETEROMIG_GPU_BACKEND"),
        "tag": os.environ.get("STANDIN_TAG"),
    }
    with open(log, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
