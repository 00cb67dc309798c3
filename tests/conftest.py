"""Repo-wide pytest setup: import paths only.

Markers (integration, slow, compat) and the default timeout are declared in pyproject.toml
[tool.pytest.ini_options]; keep fixtures in the test packages themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# `import lab` -> tests/lab/ (shared test helpers).
# `import ansible_collections.heteromig.fleet...` -> collections/ansible_collections/heteromig/fleet,
# the link to the repo root that scripts/bootstrap makes (ansible.cfg's collections_path).
for path in (TESTS, ROOT / "collections"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
