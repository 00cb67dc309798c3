# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NVIDIA mig-parted ``version: v1`` configs: read into layout entries, written from state.

- ``parse_mig_parted`` reads one label of a config (YAML or JSON text, or data) into the same
  ``GpuEntry`` items as the module's ``gpus`` option; ``<C>c.<profile>: N`` becomes compute
  instances packed into as few GPU instances as hold them.
- ``export_mig_parted`` writes the current state as a config with one label (GPUs in the same
  state share an entry; placements are not part of the format).

Errors raise ``LayoutError``; nothing here changes any state. Private module (leading
underscore): not a public API of the collection.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    _PROFILE_RE,
    _PROFILE_SLICES_RE,
    DISABLED,
    Geometry,
    InstanceSpec,
    LayoutError,
    LayoutSpec,
    _normalise_profile_name,
    _type_name,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    CurrentGpu,
    GpuEntry,
    Selector,
    _as_list,
    _model_value,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    compute_instance_starts,
)


# ------------------------------------------------------------------------------- mig-parted
def load_mig_parted_text(text: str, where: str) -> Any:
    """Parse mig-parted YAML (or JSON) text; a clear error with line and column if malformed."""
    try:
        import yaml
    except ImportError:
        import json

        try:
            return json.loads(text)
        except ValueError as exc:
            raise LayoutError(
                "%s: cannot parse the mig-parted config: PyYAML is not installed for this "
                "Python, and the text is not JSON either (%s). Install PyYAML on the target, or "
                "pass the config as data (mig_parted_config: \"{{ lookup('file', 'config.yaml') "
                '| from_yaml }}")' % (where, exc)
            ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise LayoutError(
            "%s: malformed mig-parted config: YAML syntax error%s: %s" % (where, position, problem)
        ) from exc


def _mig_devices_layout(devices: Any, where: str) -> LayoutSpec:
    """mig-parted ``mig-devices`` ({profile: count}) as a layout.

    ``<C>c.<profile>: N`` means N compute instances of C slices, packed into as few GPU
    instances of the profile as hold them (as mig-parted reuses a GPU instance while its compute
    instances fit).
    """
    if devices is None:
        raise LayoutError("%s: 'mig-devices' is required when 'mig-enabled' is true" % where)
    if not isinstance(devices, dict):
        raise LayoutError(
            "%s: 'mig-devices' must be a mapping of profile to count, not %s"
            % (where, _type_name(devices))
        )
    instances: List[InstanceSpec] = []
    for key, count in devices.items():
        here = "%s.mig-devices[%r]" % (where, key)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise LayoutError("%s: count must be a whole number >= 0, not %r" % (here, count))
        name = str(key).strip()
        ci = re.match(r"^(\d+)c\.(.+)$", name, re.IGNORECASE)
        profile = ci.group(2) if ci else name
        if not _PROFILE_RE.match(profile):
            raise LayoutError(
                "%s: %r is not a MIG profile name such as 1g.10gb or 1c.3g.40gb" % (here, key)
            )
        profile = _normalise_profile_name(profile)
        if not ci:
            instances.extend([InstanceSpec(profile)] * count)
            continue
        ci_slices = int(ci.group(1))
        gi_slices = int(_PROFILE_SLICES_RE.match(profile).group(1))  # type: ignore[union-attr]
        if ci_slices < 1 or ci_slices > gi_slices:
            raise LayoutError(
                "%s: a %d-slice compute instance does not fit %s" % (here, ci_slices, profile)
            )
        per_gi = max(len(compute_instance_starts(gi_slices, ci_slices)), 1)
        left = count
        while left > 0:
            take = min(per_gi, left)
            instances.append(InstanceSpec(profile, None, (ci_slices,) * take))
            left -= take
    return LayoutSpec(True, tuple(instances))


def parse_mig_parted(
    config: Any, label: Optional[str], where: str = "mig_parted_config"
) -> List[GpuEntry]:
    """The entries of one label of a mig-parted ``version: v1`` config."""
    if isinstance(config, str):
        config = load_mig_parted_text(config, where)
    if not isinstance(config, dict):
        raise LayoutError(
            "%s: malformed mig-parted config: expected a mapping with 'version: v1' "
            "and 'mig-configs', got %s" % (where, _type_name(config))
        )
    if "version" not in config:
        raise LayoutError(
            "%s: malformed mig-parted config: 'version' is missing (expected v1)" % where
        )
    if config["version"] != "v1":
        raise LayoutError(
            "%s: unsupported mig-parted config version %r; this module reads v1"
            % (where, config["version"])
        )
    unknown = set(config) - {"version", "mig-configs"}
    if unknown:
        raise LayoutError(
            "%s: malformed mig-parted config: unexpected field(s) %s"
            % (where, ", ".join(sorted(map(str, unknown))))
        )
    configs = config.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise LayoutError(
            "%s: malformed mig-parted config: 'mig-configs' must be a non-empty "
            "mapping of label to a list of entries" % where
        )
    if label is None:
        if len(configs) != 1:
            raise LayoutError(
                "%s: the config has several labels (%s); choose one with "
                "mig_parted_label" % (where, ", ".join(map(str, configs)))
            )
        label = str(next(iter(configs)))
    if label not in configs:
        raise LayoutError(
            "%s: no label %r in mig-configs; labels: %s"
            % (where, label, ", ".join(map(str, configs)))
        )
    items = configs[label]
    if not isinstance(items, list) or not items:
        raise LayoutError("%s: mig-configs.%s must be a non-empty list of entries" % (where, label))
    entries = []
    for position, item in enumerate(items):
        here = "%s: mig-configs.%s[%d]" % (where, label, position)
        if not isinstance(item, dict):
            raise LayoutError("%s must be a mapping, not %s" % (here, _type_name(item)))
        unknown = set(item) - {"devices", "mig-enabled", "mig-devices", "device-filter"}
        if unknown:
            raise LayoutError(
                "%s: unexpected field(s) %s" % (here, ", ".join(sorted(map(str, unknown))))
            )
        for required in ("devices", "mig-enabled"):
            if required not in item:
                raise LayoutError("%s: missing required field %r" % (here, required))
        devices_raw = item["devices"]
        devices: Optional[Tuple[Selector, ...]]
        if devices_raw == "all":
            devices = None
        elif (
            isinstance(devices_raw, list)
            and devices_raw
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices_raw)
        ):
            devices = tuple(Selector("index", d, str(d)) for d in devices_raw)
        else:
            raise LayoutError(
                "%s: 'devices' must be 'all' or a list of GPU indices, not %r" % (here, devices_raw)
            )
        enabled = item["mig-enabled"]
        if not isinstance(enabled, bool):
            raise LayoutError("%s: 'mig-enabled' must be true or false, not %r" % (here, enabled))
        if not enabled:
            if item.get("mig-devices"):
                raise LayoutError("%s: MIG devices are listed but 'mig-enabled' is false" % here)
            layout = DISABLED
        else:
            layout = _mig_devices_layout(item.get("mig-devices"), here)
        filters_raw = item.get("device-filter")
        models: Tuple[str, ...] = ()
        if filters_raw is not None:
            filters = _as_list(filters_raw)
            if not all(isinstance(f, str) and f.strip() for f in filters):
                raise LayoutError("%s: 'device-filter' must be a string or list of strings" % here)
            models = tuple(_model_value(f, here + ".device-filter") for f in filters)
        # a device-filter that matches no GPU here is normal in a fleet-wide config
        entries.append(GpuEntry(here, devices, models, layout, optional=bool(models)))
    return entries


def mig_parted_devices(gpu: CurrentGpu, geometry: Optional[Geometry]) -> Dict[str, int]:
    """A GPU's instances as mig-parted ``mig-devices`` counts."""
    counts: Dict[str, int] = {}
    for inst in gpu.instances:
        prof = geometry.profile_by_id(inst.profile_id) if geometry else None
        gi_slices = prof.slice_count if prof else None
        for _start, size in inst.compute:
            key = inst.profile if size == gi_slices else "%dc.%s" % (size, inst.profile)
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def export_mig_parted(
    gpus: Sequence[CurrentGpu], geometries: Mapping[int, Geometry], label: str = "current"
) -> Dict[str, Any]:
    """The current state as a mig-parted v1 config with one label.

    GPUs in the same state share an entry; placements are not part of the format.
    """
    groups: List[Tuple[Dict[str, Any], List[int]]] = []
    for gpu in sorted(gpus, key=lambda g: g.identity.index):
        if not gpu.identity.mig_capable:
            continue
        body: Dict[str, Any] = {"mig-enabled": bool(gpu.mig_current)}
        if gpu.mig_current:
            body["mig-devices"] = mig_parted_devices(gpu, geometries.get(gpu.identity.index))
        for existing, indices in groups:
            if existing == body:
                indices.append(gpu.identity.index)
                break
        else:
            groups.append((body, [gpu.identity.index]))
    every = [g.identity.index for g in gpus if g.identity.mig_capable]
    entries = []
    for body, indices in groups:
        entry: Dict[str, Any] = {
            "devices": "all" if len(groups) == 1 and indices == every else indices
        }
        entry.update(body)
        entries.append(entry)
    return {"version": "v1", "mig-configs": {label: entries}}
