"""A stand-in build command for harness profiles in tests: it records how it was called.

One JSON line per call is appended to --log: its argv, working directory, CUDA_VISIBLE_DEVICES,
GPU backend and STANDIN_TAG. With --engines DIR it also keeps an "engine" per benchmark,
config_ver and device there (a file holding its key, the sha256 of those and STANDIN_TAG) and
speaks the build-check protocol of docs/harness.md: ``--check`` prints
``{"action": "cached"|"build"|"rebuild", ...}`` and builds nothing; a build prints
``{"changed": ..., "content_key": ..., "path": ...}``, and keeps a current engine unless --force.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys


def value(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def main() -> int:
    argv = sys.argv[1:]
    record = {
        "argv": argv,
        "cwd": os.getcwd(),
        "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "backend": os.environ.get("HETEROMIG_GPU_BACKEND"),
        "tag": os.environ.get("STANDIN_TAG"),
    }
    with open(value(argv, "--log"), "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    if "--engines" not in argv:
        return 0
    identity = [value(argv, "--benchmark"), value(argv, "--config-ver"), record["device"]]
    key = hashlib.sha256(json.dumps([*identity, record["tag"]]).encode()).hexdigest()
    path = os.path.join(value(argv, "--engines"), "-".join(map(str, identity)) + ".engine")
    try:
        with open(path, encoding="utf-8") as handle:
            found = handle.read()
    except OSError:
        found = None
    if "--check" in argv:
        action = "build" if found is None else "cached" if found == key else "rebuild"
        print(json.dumps({"action": action, "reason": "stand-in: %s" % action, "path": path,
                          "content_key": key}))  # fmt: skip
        return 0
    if found == key and "--force" not in argv:
        print(json.dumps({"changed": False, "content_key": key, "path": path}))
        return 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(key)
    print(json.dumps({"changed": True, "content_key": key, "path": path}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
