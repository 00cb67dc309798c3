# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot entry of MIG boot persistence: re-apply, or check, a host's layout without Ansible.

Installed by ``mig_layout`` (``boot_persistence: present``, see ``_mig_persist``) as
``<runtime_dir>/heteromig-mig-boot`` with a copy of the code it imports, and run by the
``heteromig-mig-layout.service`` unit at boot::

    python3 /var/lib/heteromig/mig-boot/heteromig-mig-boot apply --config /etc/heteromig/mig/layout.json
    python3 /var/lib/heteromig/mig-boot/heteromig-mig-boot status

``apply`` waits (``--wait-driver`` seconds) for NVML to come up, applies the layout of
``layout.json`` exactly as ``mig_layout`` would (same planner, same placements, same rollback),
with the hooks it names (GPU clients are left to the unit's ordering: it runs before them), and
prints one line per GPU. ``status`` changes nothing and says, per GPU, whether the applied
layout matches the desired one. Exit status: 0 done / matches, 1 failed / differs, 2 the
configuration cannot be used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_apply import run_host
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_change import ChangeGuard
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_hooks import (
    DEFAULT_TIMEOUT,
    EMPTY,
    HookError,
    HookRunner,
    combine,
    mig_parted_variables,
    parse_hooks,
    read_hooks_file,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_host import MigApplyError
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    LayoutError,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_parted import (
    parse_mig_parted,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BackendError,
    GpuBackend,
    nvml_error_text,
    open_backend,
)

DEFAULT_LAYOUT_FILE = "/etc/heteromig/mig/layout.json"
REQUEST_FORMAT = "heteromig.mig-boot"
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _say(text: str, err: bool = False) -> None:
    """One line to the journal (stdout) or stderr: this file is a command, not an Ansible module."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


class BootError(Exception):
    """layout.json cannot be used."""


def load_document(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except OSError as exc:
        raise BootError("cannot read %s: %s" % (path, exc.strerror or exc)) from exc
    except ValueError as exc:
        raise BootError("%s is not valid JSON: %s" % (path, exc)) from exc
    if (
        not isinstance(document, dict)
        or document.get("format") != REQUEST_FORMAT
        or document.get("version") != 1
        or not isinstance(document.get("request"), dict)
    ):
        raise BootError(
            "%s is not a heteromig boot layout (format %s, version 1)" % (path, REQUEST_FORMAT)
        )
    return document


def entries_for(request: Mapping[str, Any]) -> List[Any]:
    """The layout entries of a request, as mig_layout builds them (LayoutError if invalid)."""
    if request.get("mig_parted_config_file"):
        path = request["mig_parted_config_file"]
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise LayoutError(
                "cannot read mig_parted_config_file %s: %s" % (path, exc.strerror or exc)
            ) from exc
        return parse_mig_parted(
            text, request.get("mig_parted_label"), "mig_parted_config_file %s" % path
        )
    if request.get("mig_parted_config") is not None:
        return parse_mig_parted(request["mig_parted_config"], request.get("mig_parted_label"))
    return parse_gpu_entries(request.get("layout"), request.get("gpus"))


def _run_command(argv: List[str]) -> Tuple[int, str, str]:
    done = subprocess.run(  # pylint: disable=ansible-bad-function
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout, done.stderr


def open_when_ready(
    request: Mapping[str, Any], wait: float, sleep: Any = time.sleep, clock: Any = time.monotonic
) -> GpuBackend:
    """Open the GPU backend, retrying until the driver answers or ``wait`` seconds pass."""
    deadline = clock() + wait
    while True:
        try:
            return open_backend(
                request.get("backend") or "nvml",
                request.get("sim_state"),
                request.get("sim_gpus"),
                run_command=_run_command,
            )
        except BackendError as exc:
            if clock() >= deadline:
                raise
            _say("waiting for the NVIDIA driver: %s" % exc)
            sleep(2.0)


def hooks_for(document: Mapping[str, Any]) -> HookRunner:
    request = document["request"]
    inline = parse_hooks(request.get("hooks"), "hooks") if request.get("hooks") else EMPTY
    from_file = read_hooks_file(request["hooks_file"]) if request.get("hooks_file") else EMPTY
    path = os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    variables = mig_parted_variables(
        request.get("mig_parted_config_file") or document.get("mig_parted_config_copy") or "",
        str(document.get("label") or ""),
        request.get("hooks_file") or "",
    )
    return HookRunner(
        combine(inline, from_file),
        variables,
        path=path,
        timeout=float(request.get("hooks_timeout") or DEFAULT_TIMEOUT),
    )


def _gpu_lines(result: Mapping[str, Any], verb: str) -> List[str]:
    lines = []
    for gpu in result.get("gpus", []):
        what = gpu["status"]
        if gpu.get("actions"):
            what += ": " + "; ".join(gpu["actions"])
        lines.append(
            "GPU %d (%s): %s %s" % (gpu["index"], gpu.get("model") or gpu.get("name"), verb, what)
        )
    return lines


def apply(document: Mapping[str, Any], wait: float) -> int:
    request = document["request"]
    runner = hooks_for(document)
    entries = entries_for(request)
    backend = open_when_ready(request, wait)
    guard = ChangeGuard(runner.spec, runner, [])
    ok = False
    try:
        result = run_host(
            backend,
            entries,
            match=request.get("placement_match") or "exact",
            with_devices=False,
            prepare=guard.prepare,
        )
        ok = not result["reboot_required"]
    except MigApplyError as exc:
        _say("applying the MIG layout %s failed: %s" % (document.get("label"), exc))
        return EXIT_FAILED
    finally:
        problems = guard.finish(ok)
        for problem in problems:
            _say(problem)
        backend.close()
    for line in _gpu_lines(result, "layout"):
        _say(line)
    if result["reboot_required"]:
        _say(
            "GPU(s) %s need a reboot for their MIG mode (no GPU reset possible); not rebooting"
            % ", ".join(str(i) for i in result["reboot_required_gpus"])
        )
        return EXIT_FAILED
    _say(
        "MIG layout %s %s"
        % (document.get("label"), "applied" if result["changed"] else "already applied")
    )
    return EXIT_FAILED if problems else EXIT_OK


def status(document: Mapping[str, Any], wait: float) -> int:
    request = document["request"]
    entries = entries_for(request)
    backend = open_when_ready(request, wait)
    try:
        result = run_host(
            backend,
            entries,
            match=request.get("placement_match") or "exact",
            operation="plan",
            with_devices=False,
        )
    finally:
        backend.close()
    unit = document.get("unit")
    _say(
        "desired layout: %s (%s)" % (document.get("label"), document.get("mig_parted_config_copy"))
    )
    if unit:
        _say("unit: %s (%s)" % (unit, "installed" if os.path.exists(unit) else "not installed"))
    for gpu in result["gpus"]:
        _say(
            "GPU %d (%s): %s"
            % (
                gpu["index"],
                gpu.get("model") or gpu.get("name"),
                "differs" if gpu["changed"] else "matches",
            )
        )
    matches = not result["would_change"]
    _say("applied layout %s the desired one" % ("matches" if matches else "differs from"))
    return EXIT_OK if matches else EXIT_FAILED


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="heteromig-mig-boot",
        description="Re-apply (apply) or check (status) the MIG layout heteromig.fleet keeps "
        "for this host.",
    )
    parser.add_argument("command", choices=("apply", "status"))
    parser.add_argument(
        "--config", default=DEFAULT_LAYOUT_FILE, help="the desired layout (default %(default)s)"
    )
    parser.add_argument(
        "--wait-driver",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the NVIDIA driver (NVML) to come up",
    )
    args = parser.parse_args(argv)
    try:
        document = load_document(args.config)
        if args.command == "apply":
            return apply(document, args.wait_driver)
        return status(document, args.wait_driver)
    except (BootError, LayoutError, HookError) as exc:
        _say("heteromig-mig-boot: %s" % exc, err=True)
        return EXIT_CONFIG
    except BackendError as exc:
        _say("heteromig-mig-boot: %s" % exc, err=True)
        return EXIT_FAILED
    except Exception as exc:  # pylint: disable=broad-except
        name = type(exc).__name__
        text = nvml_error_text(exc) if name.startswith("NVMLError") else str(exc)
        _say("heteromig-mig-boot: %s: %s" % (name, text), err=True)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())  # pylint: disable=ansible-bad-function
