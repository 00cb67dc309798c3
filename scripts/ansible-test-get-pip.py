"""Offline stand-in for ansible-test's get-pip bootstrap script (heteromig-get-pip-standin).

ansible-test creates each sanity test's virtualenv without pip and then runs
https://ci-files.testing.ansible.com/ansible-test/get-pip-<version>.py, cached as
~/.ansible/test/cache/get_pip_<version>.py, with pip options and `pip==<version>` as arguments.
That host is unreachable here (only PyPI is), so scripts/run-tests puts this file in the cache.

It does what get-pip does, without the embedded copy of pip: it runs the pip wheel bundled with
the interpreter's ensurepip (always present, offline) straight from the wheel, and lets it install
the requested packages (the pinned pip) from the configured index (PyPI).
"""

from __future__ import annotations

import ensurepip
import glob
import os
import sys


def main() -> int:
    bundled = sorted(
        glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl"))
    )
    if not bundled:
        print("get-pip stand-in: no bundled pip wheel in ensurepip", file=sys.stderr)
        return 1
    sys.path.insert(0, bundled[-1])
    from pip._internal.cli.main import main as pip_main

    # get-pip's own flags; the stand-in installs exactly the packages it is given.
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    return pip_main(["install", "--upgrade", "--force-reinstall", *args])


if __name__ == "__main__":
    sys.exit(main())
