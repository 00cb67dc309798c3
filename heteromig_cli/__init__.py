"""The ``heteromig`` command: the heteromig.fleet playbooks driven through ansible-runner.

This package is the controller-side command line only; it is not part of the Ansible
collection (it lives next to it, outside plugins/, and is left out of the collection's build).
Its subcommands run ``playbooks/hetero_run.yml`` and ``playbooks/sweep.yml`` of the collection
and read the results they leave (campaign ledgers, ``results.jsonl``). See docs/cli.md.
"""

from __future__ import annotations

__all__ = ["EXIT_INTERRUPTED", "EXIT_NOT_VALID", "EXIT_USAGE", "EXIT_VALID"]

EXIT_VALID = 0  # every run / cell VALID
EXIT_NOT_VALID = 1  # some run or cell INVALID, failed, or not run
EXIT_USAGE = 2  # bad usage, or the playbook stopped before any run (a bad spec, ...)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); 143 for SIGTERM
