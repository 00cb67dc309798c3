# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot persistence: what re-applies a host's MIG layout at boot, and its files.

MIG instances never survive a reboot (and Hopper GPUs lose their MIG mode), so a host that must
come back in its layout gets, from ``mig_layout`` with ``boot_persistence: present``:

- ``<config_dir>/layout.json``: the desired layout exactly as requested (the layout options,
  placements included, the backend, the hooks) - what the boot entry applies;
- ``<config_dir>/config.yaml``: the same layout as an NVIDIA mig-parted v1 config (one label,
  the selected config), readable by ``nvidia-mig-parted`` and nvidia-mig-manager; it has no
  placements, which that format lacks;
- ``<runtime_dir>/heteromig-mig-boot``: a small Python entry, and under ``<runtime_dir>/lib``
  the collection's host-side code it needs (a copy of this collection's module_utils files,
  as this version ships them), so it runs without Ansible:
  ``python3 <runtime_dir>/heteromig-mig-boot apply|status``;
- ``<unit_dir>/heteromig-mig-layout.service``: a oneshot systemd unit that runs that entry at
  boot, after the driver is loaded (``systemd-modules-load``, ``nvidia-persistenced``,
  ``nvidia-fabricmanager``, and the entry waits for NVML) and before the GPU clients named in
  ``gpu_clients``; enabled for ``multi-user.target``.

``boot_persistence: absent`` disables the unit and removes all of it. The files are compared
with what they should be on every run that asks for persistence (a few small reads), and
written only where they differ.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils._import_closure import import_closure

UNIT_NAME = "heteromig-mig-layout.service"
WANTED_BY = "multi-user.target"
ENTRY_NAME = "heteromig-mig-boot"
LAYOUT_NAME = "layout.json"
CONFIG_NAME = "config.yaml"
REQUEST_FORMAT = "heteromig.mig-boot"
REQUEST_VERSION = 1
DEFAULT_CONFIG_DIR = "/etc/heteromig/mig"
DEFAULT_RUNTIME_DIR = "/var/lib/heteromig/mig-boot"
DEFAULT_UNIT_DIR = "/etc/systemd/system"
# Ordered after these when they exist (systemd ignores ordering against absent units):
# the driver's own services, as nvidia-mig-manager.service is.
DEFAULT_AFTER = (
    "systemd-modules-load.service",
    "nvidia-persistenced.service",
    "nvidia-fabricmanager.service",
)
WAIT_DRIVER_SECONDS = 120
START_TIMEOUT_SECONDS = 900

_PACKAGE = "ansible_collections.heteromig.fleet.plugins.module_utils"
# The boot entry; what it imports, directly or not, is shipped beside it (_import_closure).
BOOT_MODULE = "mig/_mig_boot.py"
_PACKAGE_DIRS = ("ansible_collections", "heteromig", "fleet", "plugins", "module_utils")
# the options of mig_layout a boot re-apply needs, kept in layout.json
REQUEST_OPTIONS = (
    "backend",
    "sim_state",
    "sim_gpus",
    "layout",
    "gpus",
    "mig_parted_config",
    "mig_parted_config_file",
    "mig_parted_label",
    "placement_match",
    "hooks",
    "hooks_file",
    "hooks_timeout",
)
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class PersistError(Exception):
    """Boot persistence could not be set up or removed; the message says why."""


class BootPaths(NamedTuple):
    config_dir: str
    runtime_dir: str
    unit_dir: str

    @property
    def unit(self) -> str:
        return os.path.join(self.unit_dir, UNIT_NAME)

    @property
    def wants_link(self) -> str:
        return os.path.join(self.unit_dir, WANTED_BY + ".wants", UNIT_NAME)

    @property
    def layout(self) -> str:
        return os.path.join(self.config_dir, LAYOUT_NAME)

    @property
    def config(self) -> str:
        return os.path.join(self.config_dir, CONFIG_NAME)

    @property
    def entry(self) -> str:
        return os.path.join(self.runtime_dir, ENTRY_NAME)

    @property
    def lib(self) -> str:
        return os.path.join(self.runtime_dir, "lib")


def selected_label(params: Mapping[str, Any]) -> str:
    """The name of the layout, as mig-parted's MIG_PARTED_SELECTED_CONFIG would carry it."""
    if params.get("mig_parted_label"):
        return str(params["mig_parted_label"])
    config = params.get("mig_parted_config")
    if (
        isinstance(config, Mapping)
        and isinstance(config.get("mig-configs"), Mapping)
        and len(config["mig-configs"]) == 1
    ):
        return str(next(iter(config["mig-configs"])))
    layout = params.get("layout")
    if isinstance(layout, str) and _SAFE_LABEL.match(layout):
        return layout
    return "heteromig"


def request_document(params: Mapping[str, Any], label: str, paths: BootPaths) -> Dict[str, Any]:
    """What layout.json holds: the request, its label and where the mig-parted copy is."""
    return {
        "format": REQUEST_FORMAT,
        "version": REQUEST_VERSION,
        "label": label,
        "mig_parted_config_copy": paths.config,
        "unit": paths.unit,
        "request": {name: params.get(name) for name in REQUEST_OPTIONS},
    }


# ----------------------------------------------------------------------------- rendering
def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return (
        text
        if _SAFE_LABEL.match(text) and text not in ("true", "false", "null", "yes", "no")
        else json.dumps(text)
    )


def mig_parted_yaml(config: Mapping[str, Any], label: str) -> str:
    """A mig-parted v1 config (``export_mig_parted``'s shape) as YAML, under ``label``."""
    entries = next(iter(config["mig-configs"].values())) if config.get("mig-configs") else []
    lines = [
        "# The MIG layout heteromig.fleet applies to this host at boot, as an NVIDIA",
        "# mig-parted v1 config (placements are not part of this format; layout.json has",
        "# them). Written by heteromig.fleet.mig_layout (boot_persistence); do not edit.",
        "version: v1",
        "mig-configs:",
        "  %s:" % _yaml_scalar(label),
    ]
    if not entries:
        lines[-1] += " []"
    for entry in entries:
        devices = entry["devices"]
        lines.append(
            "    - devices: %s"
            % ("all" if devices == "all" else "[%s]" % ", ".join(str(d) for d in devices))
        )
        lines.append("      mig-enabled: %s" % _yaml_scalar(entry["mig-enabled"]))
        if "mig-devices" in entry:
            counts = entry["mig-devices"]
            if counts:
                lines.append("      mig-devices:")
                lines.extend('        "%s": %d' % (name, count) for name, count in counts.items())
            else:
                lines.append("      mig-devices: {}")
    return "\n".join(lines) + "\n"


def _unit_quote(word: str) -> str:
    """One ExecStart word, quoted for systemd when needed; '%' escaped (unit specifiers)."""
    word = word.replace("%", "%%")
    if re.match(r"^[A-Za-z0-9_./:=+@-]+$", word):
        return word
    return '"%s"' % word.replace("\\", "\\\\").replace('"', '\\"')


def unit_text(paths: BootPaths, python: str, before: Sequence[str], after: Sequence[str]) -> str:
    argv = [
        python,
        paths.entry,
        "apply",
        "--config",
        paths.layout,
        "--wait-driver",
        str(WAIT_DRIVER_SECONDS),
    ]
    lines = [
        "# Installed by heteromig.fleet.mig_layout (boot_persistence: present); the next run",
        "# rewrites it, and boot_persistence: absent removes it. See docs/mig_fleet.md.",
        "[Unit]",
        "Description=Re-apply the MIG layout heteromig.fleet applied to this host",
        "After=%s" % " ".join(after),
    ]
    if before:
        lines.append("Before=%s" % " ".join(before))
    lines += [
        "ConditionPathExists=%s" % paths.layout.replace("%", "%%"),
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=%s" % " ".join(_unit_quote(word) for word in argv),
        "TimeoutStartSec=%d" % START_TIMEOUT_SECONDS,
        "",
        "[Install]",
        "WantedBy=%s" % WANTED_BY,
    ]
    return "\n".join(lines) + "\n"


def entry_text(python: str) -> str:
    return (
        "#!%s\n"
        "# Installed by heteromig.fleet.mig_layout (boot_persistence): re-applies and checks the\n"
        "# host's MIG layout without Ansible. '%s apply' (what the systemd unit runs),\n"
        "# '%s status' (exit status 0 when the GPUs match the desired layout).\n"
        "import os\n"
        "import sys\n\n"
        "sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), 'lib'))\n"
        "from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_boot import main  # noqa: E402\n\n"
        "sys.exit(main(sys.argv[1:]))\n" % (python, ENTRY_NAME, ENTRY_NAME)
    )


def runtime_files(lib: str, read: Callable[[str], bytes]) -> Dict[str, bytes]:
    """The boot entry's code: path -> content (``read(name)`` gives a module_utils source)."""
    files: Dict[str, bytes] = {}
    directory = lib
    for part in _PACKAGE_DIRS:
        directory = os.path.join(directory, part)
        files[os.path.join(directory, "__init__.py")] = b""
    texts: Dict[str, bytes] = {}

    def source_of(name: str) -> Optional[str]:
        try:
            texts[name] = read(name)
        except PersistError:
            return None
        return texts[name].decode("utf-8")

    for name in sorted(import_closure(source_of, [BOOT_MODULE])):
        files[os.path.join(directory, name)] = texts[name]
    return files


def read_shipped(name: str) -> bytes:
    """A module_utils source (a path below module_utils) as this run carries it (the module's payload, or the checkout).

    Through the module's loader (zipimport in a payload, files in a checkout): ``pkgutil.get_data``
    of the package gives nothing where module_utils is a namespace package.
    """
    module = name[: -len("/__init__.py")] if name.endswith("/__init__.py") else name[:-3]
    try:
        spec = importlib.util.find_spec("%s.%s" % (_PACKAGE, module.replace("/", ".")))
    except (ImportError, ValueError):  # a name inside a module, not a module of its own
        spec = None
    loader = getattr(spec, "loader", None)
    if spec is None or spec.origin is None or not hasattr(loader, "get_data"):
        raise PersistError("cannot read %s from this collection's module_utils" % name)
    data: bytes = loader.get_data(spec.origin)  # type: ignore[union-attr]
    return data


class Desired(NamedTuple):
    files: Dict[str, Tuple[bytes, int]]  # path -> (content, mode)
    paths: BootPaths


def desired_files(
    params: Mapping[str, Any],
    mig_parted_config: Mapping[str, Any],
    paths: BootPaths,
    python: str,
    before: Sequence[str],
    after: Sequence[str],
    read: Callable[[str], bytes] = read_shipped,
) -> Desired:
    label = selected_label(params)
    files: Dict[str, Tuple[bytes, int]] = {
        paths.layout: (
            (
                json.dumps(request_document(params, label, paths), indent=2, sort_keys=True) + "\n"
            ).encode(),
            0o644,
        ),
        paths.config: (mig_parted_yaml(mig_parted_config, label).encode(), 0o644),
        paths.entry: (entry_text(python).encode(), 0o755),
        paths.unit: (unit_text(paths, python, before, after).encode(), 0o644),
    }
    for path, content in runtime_files(paths.lib, read).items():
        files[path] = (content, 0o644)
    return Desired(files, paths)


# ----------------------------------------------------------------------------- comparing
def _content(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def differing(desired: Desired) -> List[str]:
    """The files that are missing or differ (content or mode)."""
    out = []
    for path, (content, mode) in desired.files.items():
        have = _content(path)
        if have != content:
            out.append(path)
            continue
        try:
            if os.stat(path).st_mode & 0o777 != mode:
                out.append(path)
        except OSError:
            out.append(path)
    return out


def enabled(paths: BootPaths) -> bool:
    """Whether the unit is enabled (the link ``systemctl enable`` makes for WantedBy=)."""
    return os.path.islink(paths.wants_link) or os.path.exists(paths.wants_link)


def installed(paths: BootPaths) -> bool:
    return os.path.exists(paths.unit) or os.path.lexists(paths.wants_link)


# ------------------------------------------------------------------------------ changing
RunCommand = Callable[[List[str]], Tuple[int, str, str]]


def _write(path: str, content: bytes, mode: int) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".heteromig.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _systemctl(run: RunCommand, systemctl: str, *args: str) -> None:
    rc, out, err = run([systemctl, *args])
    if rc != 0:
        raise PersistError(
            "systemctl %s failed (exit status %d): %s. Is systemd running on this "
            "host?" % (" ".join(args), rc, (err or out).strip() or "no output")
        )


def install(desired: Desired, run: RunCommand, systemctl: str) -> List[str]:
    """Write what differs, reload systemd if the unit changed, enable it; the paths written."""
    paths = desired.paths
    written = differing(desired)
    unit_changed = paths.unit in written
    try:
        for path in written:
            content, mode = desired.files[path]
            _write(path, content, mode)
    except OSError as exc:
        raise PersistError(
            "cannot write %s: %s" % (exc.filename or "a boot persistence file", exc.strerror or exc)
        ) from exc
    if unit_changed:
        _systemctl(run, systemctl, "daemon-reload")
    if not enabled(paths):
        _systemctl(run, systemctl, "enable", UNIT_NAME)
        written.append(paths.wants_link)
    return written


def remove(paths: BootPaths, run: RunCommand, systemctl: Optional[str]) -> List[str]:
    """Disable the unit and remove every file of boot persistence; the paths removed."""
    removed = []
    had_unit = os.path.exists(paths.unit)
    if installed(paths) and systemctl is not None:
        _systemctl(run, systemctl, "disable", UNIT_NAME)
    if os.path.lexists(paths.wants_link):
        os.unlink(paths.wants_link)
    for path in (paths.unit, paths.layout, paths.config, paths.entry):
        if os.path.lexists(path):
            os.unlink(path)
            removed.append(path)
    if os.path.isdir(paths.lib):
        shutil.rmtree(paths.lib)
        removed.append(paths.lib)
    for directory in (paths.runtime_dir, paths.config_dir):
        with contextlib.suppress(OSError):
            os.rmdir(directory)  # only if empty: never someone else's files
    if had_unit and systemctl is not None:
        _systemctl(run, systemctl, "daemon-reload")
    return removed


def paths_for(params: Mapping[str, Any]) -> BootPaths:
    return BootPaths(params["boot_config_dir"], params["boot_runtime_dir"], params["boot_unit_dir"])


def before_units(clients: Sequence[Any], after: Sequence[str]) -> List[str]:
    """Before=: the GPU clients' units, except those the unit must come after."""
    return [c.unit for c in clients if c.unit and c.unit not in after]


def persistence_step(
    params: Mapping[str, Any],
    result: Mapping[str, Any],
    clients: Sequence[Any],
    apply_now: bool,
    run: RunCommand,
    systemctl: Optional[str],
    python: str,
) -> Dict[str, Any]:
    """Compare, and with ``apply_now`` install or remove, boot persistence; what to return.

    ``apply_now`` is false in check mode and for ``operation: plan``: then only
    ``would_change`` is reported. Install uses ``result['mig_parted_config']`` (the host's state
    after the run) for config.yaml, so it runs only once the layout is applied.
    """
    state = params["boot_persistence"]
    paths = paths_for(params)
    out: Dict[str, Any] = {
        "state": state,
        "unit": paths.unit,
        "layout_file": paths.layout,
        "mig_parted_config_file": paths.config,
        "entry": paths.entry,
        "changed": False,
        "files": [],
    }
    if state == "absent":
        present = installed(paths) or os.path.exists(paths.layout) or os.path.isdir(paths.lib)
        out["would_change"] = present
        if apply_now and present:
            out["files"] = remove(paths, run, systemctl)
            out["changed"] = True
        return out
    if systemctl is None:
        raise PersistError(
            "boot_persistence: present needs systemd, but systemctl is not on this "
            "host's PATH; nothing was changed"
        )
    after = list(params.get("boot_after") or DEFAULT_AFTER)
    desired = desired_files(
        params, result["mig_parted_config"], paths, python, before_units(clients, after), after
    )
    files = differing(desired)
    is_enabled = enabled(paths)
    out["enabled"] = is_enabled
    # a plan of a host whose GPUs change: config.yaml is written only after the change
    pending = not apply_now and bool(result.get("would_change"))
    out["would_change"] = bool(files) or not is_enabled or pending
    out["files"] = files
    if apply_now and (files or not is_enabled):
        out["files"] = install(desired, run, systemctl)
        out["changed"] = True
        out["enabled"] = True
    return out
