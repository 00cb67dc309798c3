# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-slice engines on disk: the engine file, whether it is current and fits, building it.

What an engine is built for, its content key and its path are ``_engine_spec``'s. An engine is a
single file:

    HETEROMIG-ENGINE 1\\n
    <header length in bytes>\\n
    <header: UTF-8 JSON>
    <payload: the weight tensors, raw little-endian, back to back>

The header records what the engine was built for, its content key, the tensor table and the
payload's sha256.

A rebuild replaces the file in place. A build whose content key matches a sound file changes
nothing.

This module also answers the embedded harness profile's build check (``python -m
..._engine_store check``, ``check_engine``): whether the engine for this slice is current,
building nothing.

numpy is imported only where weights are built or loaded.

Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import socket
import tempfile
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_spec import (
    CPU_PROFILE,
    ENGINE_FORMAT_VERSION,
    ENGINE_SUFFIX,
    HARNESS_VERSION,
    EngineError,
    EngineSpec,
    SliceTarget,
    TargetError,
    _path_part,
    content_key,
    resolve_target,
    spec_for_target,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._mlperf_terms import (
    FULL_GPU_PROFILE,
)

ENGINE_FORMAT = "heteromig.engine"
ENGINE_MAGIC = b"HETEROMIG-ENGINE 1\n"
_MAX_HEADER = 1 << 20


# ---------------------------------------------------------------------------------------------
# The engine file
# ---------------------------------------------------------------------------------------------
def _corrupt(path: str, why: str) -> EngineError:
    return EngineError(
        "engine %s is corrupt (%s): rebuild it (heteromig.fleet.engine_build, or the harness's "
        "build-engine command)" % (path, why)
    )


def read_header(path: str) -> Dict[str, Any]:
    """The engine's header; EngineError (missing, unreadable, corrupt) otherwise."""
    try:
        with open(path, "rb") as handle:
            return _read_header(handle, path)[0]
    except OSError as exc:
        raise _open_error(path, exc) from exc


def _open_error(path: str, exc: OSError) -> EngineError:
    if exc.errno == errno.ENOENT:
        return EngineError(
            "engine %s does not exist: build it first (heteromig.fleet.engine_build, or the "
            "harness's build-engine command)" % path
        )
    return EngineError("cannot read engine %s: %s" % (path, exc.strerror or exc))


def _read_header(handle: Any, path: str) -> Tuple[Dict[str, Any], int]:
    magic = handle.read(len(ENGINE_MAGIC))
    if magic != ENGINE_MAGIC:
        raise _corrupt(path, "it does not start with %r" % ENGINE_MAGIC.decode().strip())
    length_line = handle.readline(32)
    try:
        length = int(length_line.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise _corrupt(path, "unreadable header length") from None
    if length <= 0 or length > _MAX_HEADER:
        raise _corrupt(path, "header length %d out of range" % length)
    raw = handle.read(length)
    if len(raw) != length:
        raise _corrupt(path, "truncated header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _corrupt(path, "header is not JSON: %s" % exc) from None
    if not isinstance(header, dict) or header.get("format") != ENGINE_FORMAT:
        raise _corrupt(path, "not a %s header" % ENGINE_FORMAT)
    version = header.get("format_version")
    if version != ENGINE_FORMAT_VERSION:
        raise EngineError(
            "engine %s has format version %r; this harness reads version %d: rebuild it"
            % (path, version, ENGINE_FORMAT_VERSION)
        )
    for key in ("content_key", "built_for", "tensors", "payload_sha256", "payload_size"):
        if key not in header:
            raise _corrupt(path, "header lacks %r" % key)
    return header, len(ENGINE_MAGIC) + len(length_line) + length


def read_engine(path: str, verify: bool = True) -> Tuple[Dict[str, Any], bytes]:
    """Header and payload bytes; with ``verify`` the payload's size and sha256 are checked."""
    try:
        with open(path, "rb") as handle:
            header, _offset = _read_header(handle, path)
            payload = handle.read()
    except OSError as exc:
        raise _open_error(path, exc) from exc
    if verify:
        if len(payload) != header["payload_size"]:
            raise _corrupt(
                path, "payload is %d bytes, header says %d" % (len(payload), header["payload_size"])
            )
        if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            raise _corrupt(path, "payload checksum mismatch")
    return header, payload


def load_tensors(header: Dict[str, Any], payload: bytes, path: str = "engine") -> Dict[str, Any]:
    """The weight tensors of a verified engine, as float32 numpy arrays."""
    import numpy as np

    tensors: Dict[str, Any] = {}
    for entry in header["tensors"]:
        try:
            start, size = int(entry["offset"]), int(entry["nbytes"])
            dtype = np.dtype(entry["dtype"]).newbyteorder("<")
            array = np.frombuffer(payload, dtype=dtype, count=size // dtype.itemsize, offset=start)
            tensors[entry["name"]] = array.reshape(entry["shape"]).astype(np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise _corrupt(path, "bad tensor entry %r: %s" % (entry, exc)) from None
    return tensors


def write_engine(path: str, header: Dict[str, Any], tensors: List[Tuple[str, Any]]) -> None:
    """Write an engine atomically (temporary file in the same directory, then rename)."""
    chunks: List[bytes] = []
    table: List[Dict[str, Any]] = []
    offset = 0
    for name, array in tensors:
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        table.append(
            {
                "name": name,
                "dtype": array.dtype.str.lstrip("<>|="),
                "shape": list(array.shape),
                "offset": offset,
                "nbytes": len(data),
            }
        )
        chunks.append(data)
        offset += len(data)
    payload = b"".join(chunks)
    full = dict(
        header,
        format=ENGINE_FORMAT,
        format_version=ENGINE_FORMAT_VERSION,
        tensors=table,
        payload_size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    )
    raw = json.dumps(full, sort_keys=True, indent=1).encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".engine.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(ENGINE_MAGIC)
            handle.write(b"%d\n" % len(raw))
            handle.write(raw)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def _build_lock(path: str) -> Iterator[None]:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Whether an engine is current and fits, finding it and building it
# ---------------------------------------------------------------------------------------------
def cache_status(spec: EngineSpec, path: str) -> Tuple[str, str]:
    """('cached', '') if ``path`` holds a sound engine with ``spec``'s key; else (action, why).

    action is 'build' (no engine yet) or 'rebuild' (stale or corrupt), why says which.
    """
    if not os.path.exists(path):
        return "build", "no engine at %s" % path
    try:
        header, _payload = read_engine(path, verify=True)
    except EngineError as exc:
        return "rebuild", str(exc)
    expected = spec.key()
    if header.get("content_key") != expected:
        changed = _changed_inputs(header.get("inputs"), spec.inputs())
        return "rebuild", "content key changed (%s)" % (", ".join(changed) or "inputs differ")
    return "cached", ""


def _changed_inputs(old: Any, new: Dict[str, Any]) -> List[str]:
    if not isinstance(old, dict):
        return []
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def check_fits(
    header: Dict[str, Any],
    path: str,
    target: SliceTarget,
    model: str,
    scenario: str,
    accuracy_target: str,
) -> None:
    """Refuse an engine built for another device, profile, model, scenario or harness."""
    built = header.get("built_for") or {}
    device = (built.get("gpu_model"), built.get("profile"))
    if device != (target.gpu_model, target.profile):
        raise EngineError(
            "engine %s was built for %s %s, but this process runs on %s: refusing to run it, as "
            "TensorRT refuses an engine built for another GPU model or MIG profile. Build an "
            "engine for %s %s (heteromig.fleet.engine_build)"
            % (
                path,
                device[0],
                _profile_words(device[1]),
                target.describe(),
                target.gpu_model,
                _profile_words(target.profile),
            )
        )
    wanted = {"model": model, "scenario": scenario, "accuracy_target": accuracy_target}
    wrong = [
        "%s %s (wanted %s)" % (key, built.get(key), value)
        for key, value in wanted.items()
        if built.get(key) != value
    ]
    if wrong:
        raise EngineError(
            "engine %s was built for another benchmark: %s" % (path, "; ".join(wrong))
        )
    if header.get("harness_version") != HARNESS_VERSION:
        raise EngineError(
            "engine %s was built by harness version %s; this harness is version %s: rebuild it"
            % (path, header.get("harness_version"), HARNESS_VERSION)
        )
    try:
        spec = EngineSpec(model, scenario, accuracy_target, target.gpu_model, target.profile)
        expected = spec.key()
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    if header.get("content_key") != expected:
        raise EngineError(
            "engine %s is stale: its content key %s differs from %s (the model definition "
            "changed): rebuild it" % (path, str(header.get("content_key"))[:12], expected[:12])
        )


def _profile_words(profile: Optional[str]) -> str:
    if profile == FULL_GPU_PROFILE:
        return "(whole GPU, shared, no MIG isolation)"
    if profile == CPU_PROFILE:
        return "(CPU, no GPU)"
    return "MIG %s" % profile


def other_profiles(engine_dir: str, spec: EngineSpec) -> List[str]:
    """'<gpu model> <profile>' of the engines that exist for ``spec``'s benchmark (for errors)."""
    base = os.path.join(
        engine_dir,
        _path_part(spec.model),
        _path_part(spec.scenario),
        _path_part(spec.accuracy_target),
    )
    found: List[str] = []
    try:
        models = sorted(os.listdir(base))
    except OSError:
        return []
    for gpu_model in models:
        try:
            names = sorted(os.listdir(os.path.join(base, gpu_model)))
        except OSError:
            continue
        found.extend(
            "%s %s" % (gpu_model, name[: -len(ENGINE_SUFFIX)])
            for name in names
            if name.endswith(ENGINE_SUFFIX)
        )
    return found


def locate_engine(
    engine_dir: Optional[str],
    engine: Optional[str],
    model: str,
    scenario: str,
    accuracy_target: str,
    target: SliceTarget,
) -> Tuple[str, Dict[str, Any], bytes]:
    """Find, verify and check the engine for this process; (path, header, payload)."""
    spec = spec_for_target(model, scenario, accuracy_target, target)
    if engine:
        path = engine
    elif engine_dir:
        path = spec.path(engine_dir)
        if not os.path.exists(path):
            others = other_profiles(engine_dir, spec)
            raise EngineError(
                "no engine for %s %s %s on %s %s under %s%s: build it first "
                "(heteromig.fleet.engine_build, or the harness's build-engine command)"
                % (
                    model,
                    scenario,
                    accuracy_target,
                    target.gpu_model,
                    _profile_words(target.profile),
                    engine_dir,
                    " (engines exist for: %s)" % ", ".join(others) if others else "",
                )
            )
    else:
        raise EngineError("no engine given: pass --engine PATH or --engine-dir DIR")
    header, payload = read_engine(path, verify=True)
    check_fits(header, path, target, model, scenario, accuracy_target)
    return path, header, payload


def build_engine(
    spec: EngineSpec,
    engine_dir: Optional[str] = None,
    output: Optional[str] = None,
    target: Optional[SliceTarget] = None,
    force: bool = False,
) -> Dict[str, Any]:
    """Build (or keep) the engine for ``spec``; returns path, key, changed, action and reason."""
    import numpy as np

    from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
        check_combination,
    )

    model = check_combination(spec.model, spec.scenario, spec.accuracy_target)
    if output:
        path = output
    elif engine_dir:
        path = spec.path(engine_dir)
    else:
        raise EngineError("no engine location: pass --engine-dir DIR or --output PATH")
    inputs = spec.inputs()
    key = content_key(inputs)
    result: Dict[str, Any] = {
        "path": path,
        "content_key": key,
        "built_for": spec.built_for(),
        "changed": False,
    }
    try:
        with _build_lock(path):
            action, reason = ("rebuild", "forced") if force else cache_status(spec, path)
            if action == "cached":
                result.update(action="cached", reason="content key %s matches" % key[:12])
                return result
            weights = model.weights()
            dtype = np.float32 if inputs["precision"] == "fp32" else np.float16
            tensors = [
                (name, weights[name].astype(dtype)) for name, _shape in model.tensor_shapes()
            ]
            header = {
                "content_key": key,
                "inputs": inputs,
                "built_for": spec.built_for(),
                "harness_version": HARNESS_VERSION,
                "precision": inputs["precision"],
                "batch_size": inputs["batch_size"],
                "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "built_on": {
                    "host": socket.gethostname(),
                    "device": target.as_dict() if target else None,
                },
            }
            write_engine(path, header, tensors)
    except OSError as exc:
        raise EngineError("cannot write engine %s: %s" % (path, exc.strerror or exc)) from exc
    result.update(changed=True, action=action, reason=reason)
    return result


# ---------------------------------------------------------------------------------------------
# Build stamps (engine_build, for profiles whose build has no check) and the check command
# ---------------------------------------------------------------------------------------------
def stamp_path(
    engine_dir: str,
    harness: str,
    benchmark: str,
    scenario: str,
    variant: str,
    gpu_model: str,
    profile: str,
) -> str:
    """Where engine_build records a finished build whose engine the harness keeps itself."""
    return os.path.join(
        engine_dir,
        _path_part(harness),
        _path_part(benchmark),
        _path_part(scenario),
        _path_part(variant),
        _path_part(gpu_model),
        _path_part(profile) + ".stamp",
    )


def check_engine(
    model: str,
    scenario: str,
    accuracy_target: str,
    engine_dir: str,
    allow_shared_gpu: bool = False,
    harness_version: Optional[str] = None,
) -> Dict[str, Any]:
    """Whether the engine for this process's slice is current: the profile's build check.

    Builds nothing. ``action`` is 'cached', 'build' or 'rebuild', with ``reason``, ``path`` and
    ``content_key``. ``harness_version`` is the controller's: another one here is an error.
    """
    if harness_version is not None and harness_version != HARNESS_VERSION:
        raise EngineError(
            "the harness on this host is version %s, the controller's collection has %s: re-run "
            "the role heteromig.fleet.host_runtime so that the host runs this collection's "
            "harness" % (HARNESS_VERSION, harness_version)
        )
    target = resolve_target(os.environ.get("CUDA_VISIBLE_DEVICES"), allow_shared_gpu)
    spec = spec_for_target(model, scenario, accuracy_target, target)
    path = spec.path(engine_dir)
    key = spec.key()
    action, reason = cache_status(spec, path)
    if action == "cached":
        reason = "content key %s matches" % key[:12]
    return {"action": action, "reason": reason, "path": path, "content_key": key}


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m ..._engine_store check ...``: one JSON line, exit 0; 2 with an error line."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="heteromig_engine_store")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="is the engine for this slice current?")
    check.add_argument("--model", required=True)
    check.add_argument("--scenario", required=True)
    check.add_argument("--accuracy-target", default="99")
    check.add_argument("--engine-dir", required=True)
    check.add_argument("--allow-shared-gpu", action="store_true")
    check.add_argument("--harness-version")
    args = parser.parse_args(argv)
    try:
        result = check_engine(
            args.model,
            args.scenario,
            args.accuracy_target,
            args.engine_dir,
            args.allow_shared_gpu,
            args.harness_version,
        )
    except (EngineError, TargetError, ValueError) as exc:
        sys.stderr.write("heteromig_engine_store: error: %s\n" % exc)
        return 2
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
