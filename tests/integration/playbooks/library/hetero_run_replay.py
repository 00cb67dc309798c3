# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only module: replay a recorded hetero_run result (built from real LoadGen runs).

Used by tests/integration/test_hetero_report*.py to feed the hetero_report callback over the SSH
lab with results of exactly the contract's shape, independent of the hetero_run action.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: hetero_run_replay
short_description: Replay a recorded heteromig.fleet.hetero_run result (tests only)
description:
  - Reads a recorded hetero_run result (JSON) from I(src) on the host, waits I(delay) seconds and
    returns it, attributed to I(host). Fails like a run whose verdict is INVALID when
    I(fail_on_invalid) is true.
options:
  src: {description: Path of the recorded result JSON on the host., type: path, required: true}
  host: {description: Inventory name to put into the result., type: str, required: true}
  delay: {description: Seconds to wait before returning., type: float, default: 0}
  fail_on_invalid: {description: Fail the task when the verdict is not VALID., type: bool, default: true}
"""

import json  # noqa: E402  (Ansible modules import after their documentation)
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            host=dict(type="str", required=True),
            delay=dict(type="float", default=0.0),
            fail_on_invalid=dict(type="bool", default=True),
        ),
        supports_check_mode=False,
    )
    with open(module.params["src"], encoding="utf-8") as handle:
        result = json.load(handle)
    result.pop("changed", None)
    result["host"] = module.params["host"]
    # The run's warnings become the task's warnings, as the action's do: Ansible reports them
    # and puts them back into the result (a list of strings; none at all when there were none).
    # exit_json(warnings=...) is deprecated.
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    time.sleep(module.params["delay"])
    if module.params["fail_on_invalid"] and result.get("verdict") not in ("VALID", "DRY_RUN"):
        module.fail_json(
            msg="hetero run %s: %s"
            % (result.get("verdict"), "; ".join(result.get("reasons") or [])),
            changed=True,
            **result,
        )
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
