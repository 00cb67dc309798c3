# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The steps of a ``mig_layout`` run past a reused stamp: plan and apply, hooks and GPU
clients, boot persistence.

The module itself keeps only what every run needs: its options, reading the host's MIG state,
and the stamp lookup. A host whose layout already matches (its stamp is reused) never imports
this file, nor the planner, the hooks and clients, or boot persistence, so it compiles none of
them (AnsiballZ ships module_utils as sources, and zipimport compiles each one it imports).

``module`` is the run's ``AnsibleModule``: these steps fail it with ``fail_json`` (clear
message, nothing changed) as the module would. Each step imports what it uses when it runs:
an ``apply`` whose stamp is reused checks its hooks and clients but plans nothing, so it
does not compile the planner either.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

# (hooks, GPU clients), validated: see guard_inputs
Guarded = Tuple[Any, List[Any]]


def search_path() -> str:
    """Where hook commands and GPU client commands are looked up (and hooks' PATH)."""
    return os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def layout_entries(params: Mapping[str, Any], file_text: Optional[str]) -> List[Any]:
    """The layout entries from whichever option gives them (none for export without one)."""
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_parted import (
        parse_mig_parted,
    )
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
        parse_gpu_entries,
    )

    if params["mig_parted_config_file"] is not None:
        return parse_mig_parted(
            file_text,
            params["mig_parted_label"],
            "mig_parted_config_file %s" % params["mig_parted_config_file"],
        )
    if params["mig_parted_config"] is not None:
        return parse_mig_parted(params["mig_parted_config"], params["mig_parted_label"])
    if params["layout"] is None and params["gpus"] is None:
        return []
    return parse_gpu_entries(params["layout"], params["gpus"])


def plan_and_apply(
    module: Any,
    backend: Any,
    reader: Any,
    host_state: Mapping[str, Any],
    file_text: Optional[str],
    request: Mapping[str, Any],
    stamp: Any,
    guarded: Optional[Guarded],
) -> Dict[str, Any]:
    """Plan from ``host_state`` and, unless check mode, apply; record the result in ``stamp``.

    ``request``: the options the stamp is keyed by. ``guarded``: the validated (hooks, GPU
    clients), run around a change (``_mig_change``).
    """
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_apply import run_host
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_host import (
        HostMig,
        MigApplyError,
    )
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
        LayoutError,
    )
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_stamp import stamp_key

    params = module.params
    mig = HostMig(backend, state=reader)
    options = dict(
        match=params["placement_match"],
        drain=params["drain"],
        drain_timeout=params["drain_timeout"],
        export_label=params["export_label"],
        mig=mig,
    )
    guard = None
    if guarded is not None:
        from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_change import (
            guard_for,
        )

        guard = guard_for(params, guarded[0], guarded[1], search_path())
    try:
        entries = layout_entries(params, file_text)
        result = run_host(
            backend,
            entries,
            check_mode=module.check_mode,
            host_state=host_state,
            operation=params["operation"],
            with_devices=params["return_mig_devices"],
            prepare=guard.prepare if guard is not None else None,
            **options,
        )
    except LayoutError as exc:
        module.fail_json(msg=str(exc), changed=False)
    except MigApplyError as exc:
        failed = dict(exc.result)
        failed.pop("diff", None)
        failed.setdefault("changed", False)
        msg = str(exc)
        if guard is not None:
            # GPU clients back, apply-exit run: also after a failed change
            problems = guard.finish(False)
            failed.update(guard.result())
            if problems:
                msg += "; then: " + "; ".join(problems)
        module.fail_json(msg=msg, **failed)
    except BaseException:
        if guard is not None:
            guard.finish(False)
        raise
    if guard is not None:
        problems = guard.finish(True)
        result.update(guard.result())
        extra = guard.diff_text()
        if extra:
            result["diff"]["prepared"] = result["diff"].get("prepared", "") + extra
        if problems:
            failed = dict(result)
            failed.pop("diff", None)
            module.fail_json(
                msg="the MIG layout was applied, but: %s" % "; ".join(problems), **failed
            )
    if (
        stamp is not None
        and not module.check_mode
        and (result["changed"] or not result["would_change"])
    ):
        # what an apply of this request returns from now on, while the GPUs stay as they are
        after = reader.host_state() if result["changed"] else host_state
        if params["operation"] == "plan" and not params["return_mig_devices"]:
            # a plan is a check-mode apply on this very state, here without devices, so its
            # result is already the record
            again = result
        else:
            again = run_host(
                backend,
                entries,
                check_mode=True,
                host_state=after,
                operation="apply",
                with_devices=False,
                **options,
            )
        if not again["changed"]:
            try:
                stamp.store(stamp_key(request, after), again)
            except OSError as exc:
                module.warn(
                    "could not record the applied layout in %s (%s); the next run "
                    "plans again" % (stamp.path, exc.strerror or exc)
                )
    return result


def guard_inputs(module: Any) -> Optional[Guarded]:
    """The validated (hooks, GPU clients), or None when neither is given; fails on bad ones."""
    params = module.params
    if params["hooks"] is None and not params["hooks_file"] and not params["gpu_clients"]:
        return None
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_clients import (
        ClientError,
    )
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_hooks import (
        HookError,
        validate_inputs,
    )

    text = None
    if params["hooks_file"]:
        try:
            with open(params["hooks_file"], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            module.fail_json(
                msg="cannot read hooks_file %s: %s; nothing was changed"
                % (params["hooks_file"], exc.strerror or exc),
                changed=False,
            )
    try:
        return validate_inputs(params, text)
    except (HookError, ClientError) as exc:
        module.fail_json(msg="%s; nothing was changed" % exc, changed=False)
    return None


def persistence(module: Any, result: Dict[str, Any], guarded: Optional[Guarded]) -> Dict[str, Any]:
    """Boot persistence (``_mig_persist``) after the run; the result with RV(boot_persistence)."""
    params = module.params
    # _mig_boot is not called here, but installed on the host from this module's payload
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig import (  # noqa: F401  pylint: disable=unused-import
        _mig_boot,
    )
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_persist import (
        PersistError,
        persistence_step,
    )

    apply_now = (
        not module.check_mode
        and params["operation"] in ("apply", "export")
        and not result.get("reboot_required")
    )
    try:
        done = persistence_step(
            params,
            result,
            guarded[1] if guarded else [],
            apply_now,
            module.run_command,
            module.get_bin_path("systemctl"),
            sys.executable,
        )
    except (PersistError, OSError) as exc:
        failed = dict(result)
        failed.pop("diff", None)
        module.fail_json(msg="boot persistence: %s" % exc, **failed)
    result["boot_persistence"] = done
    if done["changed"]:
        result["changed"] = True
    if module._diff and (done["changed"] or done["would_change"]) and done["files"]:
        verb = "written or removed" if done["changed"] else "to write or remove"
        result.setdefault("diff", {"before": "", "after": ""})
        result["diff"]["prepared"] = result["diff"].get(
            "prepared", ""
        ) + "boot persistence (%s), files %s:\n%s" % (
            done["state"],
            verb,
            "".join("  %s\n" % path for path in done["files"]),
        )
    return result
