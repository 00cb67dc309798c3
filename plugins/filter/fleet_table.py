# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_table
short_description: Render the fleet's GPU and MIG inventory as text lines
version_added: 0.1.0
description:
  - Takes a list of host names and C(hostvars) and returns the lines of a table with one row
    per GPU (host, index, name, MIG mode, MIG slices, process count, backend).
  - A host without C(heteromig_gpus) facts, for example an unreachable one, gets a row that
    says so, so no host disappears from the report.
options:
  _input:
    description: Host names, usually C(ansible_play_hosts_all).
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) mapping.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Print the inventory of every host of the play
  ansible.builtin.debug:
    msg: "{{ ansible_play_hosts_all | heteromig.fleet.fleet_table(hostvars) }}"
  run_once: true
"""

RETURN = r"""
_value:
  description: Table lines, header first.
  type: list
  elements: str
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._fleet_table import (
    fleet_rows,
    render_table,
)


def fleet_table(hosts: Sequence[str], hostvars: Mapping[str, Any]) -> list[str]:
    return render_table(fleet_rows(hosts, hostvars))


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"fleet_table": fleet_table}
