#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The action plugin plugins/action/runtime_sync.py wraps this module: it adds the controller's
# manifest, and sends file contents only when the module asks for them.

from __future__ import annotations

DOCUMENTATION = r"""
module: runtime_sync
short_description: Install and check heteromig's host-side runtime in one call per host
version_added: 0.1.0
description:
  - Keeps a copy of the collection's host-side code (C(plugins/module_utils/*.py)) under
    C(<root>/lib/ansible_collections/heteromig/fleet/plugins/module_utils/), where detached
    processes (the hetero runner, the embedded LoadGen harness) import it with
    C(PYTHONPATH=<root>/lib). Also creates C(<root>/engines), where
    M(heteromig.fleet.engine_build) stores engines.
  - The controller sends the checksum of every file. Only files that are missing or differ are
    then sent and written (atomically); files the collection no longer has are removed.
  - Checks that O(python) has the Python packages of O(packages), and runs
    C(<python> -m pip install) for the missing ones when O(install) allows it.
  - After any change, or without a record of an earlier full check, imports every package in a
    subprocess and runs the installed harness with C(--version). It records that check in a
    stamp next to the code; while files, interpreter and package list stay the same, a later
    run only checks that the packages are still found, in the module's own process. A warm run
    costs one module call and no subprocess.
  - The role C(heteromig.fleet.host_runtime) calls this module; use the role unless you need
    the result itself.
author:
  - heteromig developers (@heteromig)
requirements:
  - Python >= 3.9 on the target.
attributes:
  action:
    support: full
    description: An action plugin adds the controller's manifest and sends the files the host
      lacks.
  check_mode:
    support: full
    description: Reports which directories, files and packages would be created, written,
      removed or installed; changes nothing.
  diff_mode:
    support: none
    description: The result lists the files and packages instead.
  async:
    support: none
    description: The action may call the module twice (checksums, then contents).
options:
  root:
    description:
      - The host's heteromig directory (C(heteromig_host_root) in inventories).
    type: path
    default: /var/lib/heteromig
  python:
    description:
      - The interpreter that runs the harness and the runner. Defaults to the interpreter that
        runs this module (C(ansible_python_interpreter)).
    type: path
  packages:
    description:
      - Import name to pip requirement, for every package the harness needs.
    type: dict
    default:
      numpy: numpy
      mlperf_loadgen: mlcommons-loadgen
      pynvml: nvidia-ml-py
  install:
    description:
      - Install missing packages with C(<python> -m pip install). With V(false), missing
        packages fail the task with a message naming them.
    type: bool
    default: true
  pip_args:
    description:
      - Extra arguments for C(pip install), for example C(["--index-url", "https://pypi.example/simple"]).
    type: list
    elements: str
    default: []
  manifest:
    description:
      - Set by the action plugin, not by users. File name to sha1 of every file of the
        collection's C(plugins/module_utils).
    type: dict
    required: true
  files:
    description:
      - Set by the action plugin, not by users. File name to content, for the files the host
        lacks.
    type: dict
    default: {}
seealso:
  - module: heteromig.fleet.engine_build
  - module: heteromig.fleet.hetero_run
"""

EXAMPLES = r"""
- name: Install the host-side runtime (what the role heteromig.fleet.host_runtime does)
  heteromig.fleet.runtime_sync:
    root: /var/lib/heteromig
  register: runtime

- name: Use a virtualenv's Python, install nothing
  heteromig.fleet.runtime_sync:
    root: /srv/heteromig
    python: /opt/venvs/mlperf/bin/python
    install: false
"""

RETURN = r"""
python:
  description: The interpreter that runs the harness.
  returned: always
  type: str
  sample: /usr/bin/python3
pythonpath:
  description: What goes on C(PYTHONPATH) for the runtime (C(<root>/lib)).
  returned: always
  type: str
harness_module:
  description: The embedded harness's module, for C(<python> -m <harness_module>).
  returned: always
  type: str
  sample: ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_harness
harness_version:
  description: What the installed harness reports as its version; null in check mode when it
    was not checked before.
  returned: always
  type: str
  sample: 0.1.0
engines_dir:
  description: Where engines are stored (C(<root>/engines)).
  returned: always
  type: str
dirs_created:
  description: Directories created (in check mode, that would be created).
  returned: always
  type: list
  elements: str
files_written:
  description: Runtime files written because they were missing or differed (in check mode,
    that would be written).
  returned: always
  type: list
  elements: str
files_removed:
  description: Runtime files removed because the collection no longer has them.
  returned: always
  type: list
  elements: str
packages_installed:
  description: Pip requirements installed (in check mode, that would be installed).
  returned: always
  type: list
  elements: str
checked:
  description: C(full) when packages were imported and the harness run in subprocesses,
    C(stamp) when an earlier full check still held.
  returned: always
  type: str
"""

import os
import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import (
    HARNESS_MODULE,
    RuntimeSyncError,
    check_manifest,
    harness_version,
    installed_digests,
    make_dirs,
    manifest_digest,
    missing_packages,
    pip_install,
    plan_sync,
    read_stamp,
    remove_files,
    runtime_paths,
    stamp_for,
    stamp_matches,
    write_files,
    write_stamp,
)

ARGUMENT_SPEC = dict(
    root=dict(type="path", default="/var/lib/heteromig"),
    python=dict(type="path"),
    packages=dict(
        type="dict",
        default={"numpy": "numpy", "mlperf_loadgen": "mlcommons-loadgen", "pynvml": "nvidia-ml-py"},
    ),
    install=dict(type="bool", default=True),
    pip_args=dict(type="list", elements="str", default=[]),
    manifest=dict(type="dict", required=True),
    files=dict(type="dict", default={}),
)


def sync(module):
    params = module.params
    if not os.path.isabs(params["root"]):
        raise RuntimeSyncError("root must be an absolute path on the host, got %r" % params["root"])
    paths = runtime_paths(params["root"])
    manifest = params["manifest"]
    check_manifest(manifest)
    packages = {str(k): str(v) for k, v in params["packages"].items()}
    python = params["python"] or sys.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise RuntimeSyncError("python %s is not an executable file on this host" % python)
    run = module.run_command
    outcome = dict(
        python=python,
        pythonpath=paths.lib,
        harness_module=HARNESS_MODULE,
        harness_version=None,
        engines_dir=paths.engines,
        files_written=[],
        files_removed=[],
        packages_installed=[],
        checked="stamp",
    )

    created = make_dirs(paths, module.check_mode)
    plan = plan_sync(manifest, installed_digests(paths.code))
    unsent = [name for name in plan.write if name not in params["files"]]
    outcome.update(dirs_created=created, files_written=plan.write, files_removed=plan.remove)
    if unsent and not module.check_mode:
        # The action plugin sends these and calls again.
        return dict(outcome, changed=bool(created), files_needed=unsent)

    digest = manifest_digest(manifest)
    stamp = read_stamp(paths.stamp)
    fresh = plan.empty and stamp_matches(stamp, digest, python, list(packages))
    missing = missing_packages(
        run, python, list(packages), thorough=not fresh and not module.check_mode
    )
    wanted = [packages[name] for name in missing]
    if missing and not params["install"]:
        raise RuntimeSyncError(
            "the harness needs the Python package(s) %s for %s, and installing is turned off "
            "(install: false). Install them for that interpreter yourself, or choose a Python "
            "(e.g. a virtualenv) that has them" % (", ".join(wanted), python)
        )
    outcome["packages_installed"] = wanted
    changed = bool(created or plan.write or plan.remove or wanted)
    if module.check_mode:
        if fresh:
            outcome["harness_version"] = stamp["harness_version"]
        return dict(outcome, changed=changed)

    write_files(paths.code, plan.write, params["files"], manifest)
    remove_files(paths.code, plan.remove)
    if wanted:
        pip_install(run, python, wanted, params["pip_args"])
        still = missing_packages(run, python, missing, thorough=True)
        if still:
            raise RuntimeSyncError(
                "pip installed %s for %s, but %s still cannot be imported"
                % (", ".join(wanted), python, ", ".join(still))
            )
    if fresh and not wanted:
        outcome["harness_version"] = stamp["harness_version"]
    else:
        outcome["harness_version"] = harness_version(run, python, paths.lib)
        outcome["checked"] = "full"
        write_stamp(
            paths.stamp, stamp_for(digest, python, list(packages), outcome["harness_version"])
        )
    return dict(outcome, changed=changed)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = sync(module)
    except RuntimeSyncError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
