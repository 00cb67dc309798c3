"""``python -m heteromig_cli``: the same as the ``heteromig`` console script."""

from __future__ import annotations

import sys

from heteromig_cli.cli import main

sys.exit(main())
