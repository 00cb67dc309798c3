#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: hetero_runner
short_description: Start, watch, stop and collect a HeteroMIG run on one host (used by hetero_run)
version_added: 0.1.0
description:
  - The host side of M(heteromig.fleet.hetero_run). Playbooks use that action; this module is
    useful by hand to look at or stop a run. The action runs the same commands either through
    this module or, where the connection can feed stdin, straight from the installed host
    runtime (C(python -m ...agent._agent_commands)), which answers the same way and skips the
    module's payload (host variable C(heteromig_agent_transport)).
  - C(start) takes the plan the controller built, refuses to start when another hetero run holds
    the host (one run per host, an C(flock) on C(<host_root>/hetero_run.lock)) or when the MIG
    layout changed since the controller resolved the slices, and starts the runner detached
    (its own session, stdin from C(/dev/null), output to C(runner.log)), so that it survives a
    dropped SSH connection.
  - C(status) returns the runner's status (phase, readiness of each benchmark, timeline, and the
    result once finished) and renews the controller's lease. With O(wait) it returns as soon as
    the status changes (long poll), so one call per change is enough.
  - C(stop) asks the runner to stop every benchmark (SIGTERM, then SIGKILL after the grace).
  - C(collect) packs the run's logs and LoadGen files into one archive for a single fetch.
author:
  - heteromig developers (@heteromig)
requirements:
  - Python >= 3.9 on the target
  - The collection's host runtime under O(pythonpath) (role heteromig.fleet.host_runtime)
attributes:
  check_mode:
    support: partial
    description: Reads run in check mode; starting and stopping are only reported.
    details: C(status) and C(collect) (without writing an archive) run in check mode; C(start)
      and C(stop) only report what they would do.
  diff_mode:
    support: none
    description: Nothing to diff.
options:
  command:
    description: What to do.
    type: str
    required: true
    choices: [start, status, stop, collect]
  host_root:
    description: The host's heteromig directory; runs live in C(<host_root>/runs/<run_id>/).
    type: path
    required: true
  run_id:
    description:
      - The run to act on. Without it, C(status), C(stop) and C(collect) use the run that holds
        the host now, else the newest one.
    type: str
  plan:
    description: The plan for C(start), as built by M(heteromig.fleet.hetero_run).
    type: dict
  python:
    description: Interpreter for the runner. Defaults to the one running this module.
    type: str
  pythonpath:
    description: Where the host runtime's C(ansible_collections) tree is. Defaults to
      C(<host_root>/lib).
    type: str
  check_layout:
    description: With C(start), compare the plan's slices with NVML first.
    type: bool
    default: true
  lease:
    description:
      - With C(status), renew the run's lease for this many seconds (0 leaves it).
      - With C(start), the first lease in seconds (0 takes the plan's C(lease_s)). A controller
        that starts a run and watches it later (M(heteromig.fleet.hetero_run) with
        O(heteromig.fleet.hetero_run#module:wait=false)) gives it a lease that lasts until it
        comes back.
    type: float
    default: 0
  wait:
    description: With C(status), wait up to this many seconds for the status to change after
      O(since). With C(stop), wait up to this many seconds for the run to end.
    type: float
    default: 0
  since:
    description: With C(status), the C(seq) of the last status seen.
    type: int
  since_change:
    description:
      - With C(status), the C(change) key of the last status seen; only the main benchmark
        starting (or the backgrounds being waited for), a failure, or the end of the run answers
        the long poll early (not readiness steps or heartbeats).
    type: str
  collect:
    description:
      - With C(status), pack the run's results when it is done (as C(command=collect) does) and
        return the archive inline (base64) when it is at most O(inline_limit) bytes, which saves
        the separate collect and fetch round trips.
    type: bool
    default: false
  inline_limit:
    description: Largest archive (bytes) returned inline by O(collect).
    type: int
    default: 8388608
  reason:
    description: With C(stop), why (recorded in the result).
    type: str
    default: stopped by request (hetero_runner command=stop)
"""

EXAMPLES = r"""
- name: Look at the hetero run going on on a host
  heteromig.fleet.hetero_runner:
    command: status
    host_root: /var/lib/heteromig
  register: run

- name: Stop it
  heteromig.fleet.hetero_runner:
    command: stop
    host_root: /var/lib/heteromig
    wait: 30
"""

RETURN = r"""
run_id:
  description: The run acted on.
  returned: success
  type: str
  sample: 20261122T051500Z-ab12cd
run_dir:
  description: The run's directory on the host.
  returned: success
  type: str
status:
  description:
    - The runner's status (C(start), C(status), C(stop)); see docs/hetero_run.md for every key.
    - Keys include C(seq), C(phase), C(runner_alive), C(benchmarks) (state, ready, pid, times per
      benchmark), C(timeline), C(reasons), C(warnings), C(done), C(verdict) and C(result) (the
      host part of the hetero_run result, once done).
    - A run whose runner died without finishing has C(phase=lost); C(status) adds
      C(host_booted_at), when the host booted (epoch seconds), which tells a reboot during the run
      from a killed runner.
  returned: success
  type: dict
collect_error:
  description: With O(collect), why the finished run's logs could not be packed (the status, and
    so the verdict, is returned all the same).
  returned: collect is true, the run is done and packing its logs failed
  type: str
archive:
  description: With C(collect) (or O(collect) on a finished run), the archive of the run
    directory on the host.
  returned: success and command is collect, or collect is true and the run is done
  type: str
archive_b64:
  description: The archive itself (base64) when O(collect) and it is at most O(inline_limit) bytes.
  returned: collect is true, the run is done and the archive is small enough
  type: str
files:
  description: With C(collect), the files in the archive (path relative to the run directory,
    size in bytes).
  returned: success and command is collect
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._agent_commands import (
    COMMANDS,
    DEFAULTS,
    CommandFailed,
    answer,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            command=dict(type="str", required=True, choices=list(COMMANDS)),
            host_root=dict(type="path", required=True),
            run_id=dict(type="str"),
            plan=dict(type="dict"),
            python=dict(type="str"),
            pythonpath=dict(type="str"),
            check_layout=dict(type="bool", default=DEFAULTS["check_layout"]),
            lease=dict(type="float", default=DEFAULTS["lease"]),
            wait=dict(type="float", default=DEFAULTS["wait"]),
            since=dict(type="int"),
            since_change=dict(type="str"),
            collect=dict(type="bool", default=DEFAULTS["collect"]),
            inline_limit=dict(type="int", default=DEFAULTS["inline_limit"]),
            reason=dict(type="str", default=DEFAULTS["reason"]),
        ),
        required_if=[("command", "start", ("plan",))],
        supports_check_mode=True,
    )
    try:
        result = answer(module.params, module.check_mode)
    except CommandFailed as exc:
        module.fail_json(msg=str(exc), **exc.extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
