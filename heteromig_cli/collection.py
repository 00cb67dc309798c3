"""Where the heteromig.fleet collection is, and how its playbooks are run.

The command runs the playbooks of the collection it belongs to. In a source checkout the
collection is the repository root: ``collections/ansible_collections/heteromig/fleet`` is a link
to it (made by scripts/bootstrap), ansible.cfg at the root points ``collections_path`` there, and
the playbooks run with the root as their working directory, as ``ansible-playbook`` run from the
checkout does. An installed collection (``<dir>/ansible_collections/heteromig/fleet``, with its
MANIFEST.json) works too: its playbooks then run in the current directory.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

NAMESPACE = "heteromig"
NAME = "fleet"
ENV_VAR = "HETEROMIG_COLLECTION"  # the collection's root, when it cannot be found otherwise
LINK = Path("collections") / "ansible_collections" / NAMESPACE / NAME
REPORT_CALLBACK = "heteromig.fleet.hetero_report"


class CollectionNotFound(Exception):
    """No heteromig.fleet collection with its playbooks was found."""


@dataclass(frozen=True)
class Collection:
    root: Path  # galaxy.yml or MANIFEST.json, playbooks/, plugins/
    import_base: Path  # holds ansible_collections/heteromig/fleet (-> root)
    checkout: bool  # a source checkout with its in-place link

    def playbook(self, name: str) -> Path:
        return self.root / "playbooks" / name

    @property
    def workdir(self) -> Path:
        """The playbooks' working directory (relative paths of -e values start there)."""
        return self.root if self.checkout else Path.cwd()

    @property
    def default_results(self) -> Path:
        return self.workdir / "results"

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """Variables for ansible-playbook: this collection found, its report callback on."""
        env: dict[str, str] = {}
        if self.checkout:
            cfg = self.root / "ansible.cfg"
            if "ANSIBLE_CONFIG" not in base and cfg.is_file():
                env["ANSIBLE_CONFIG"] = str(cfg)
        else:
            paths = [str(self.import_base)]
            if base.get("ANSIBLE_COLLECTIONS_PATH"):
                paths.append(base["ANSIBLE_COLLECTIONS_PATH"])
            else:
                paths += [
                    str(Path("~/.ansible/collections").expanduser()),
                    "/usr/share/ansible/collections",
                ]
            env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(paths)
            if "ANSIBLE_CALLBACKS_ENABLED" not in base:
                env["ANSIBLE_CALLBACKS_ENABLED"] = REPORT_CALLBACK
        return env

    def import_plugin_utils(self) -> None:
        """Make ``ansible_collections.heteromig.fleet`` importable (for the ledger and reports)."""
        base = str(self.import_base)
        if base not in sys.path:
            sys.path.insert(0, base)


def _names(root: Path) -> tuple[str, str] | None:
    galaxy = root / "galaxy.yml"
    manifest = root / "MANIFEST.json"
    try:
        if galaxy.is_file():
            data = yaml.safe_load(galaxy.read_text(encoding="utf-8")) or {}
        elif manifest.is_file():
            data = json.loads(manifest.read_text(encoding="utf-8")).get("collection_info") or {}
        else:
            return None
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    return str(data.get("namespace")), str(data.get("name"))


def identify(path: Path) -> Collection | None:
    """The collection rooted at ``path``, or None when it is not heteromig.fleet."""
    root = path.resolve()
    if not (root / "playbooks" / "hetero_run.yml").is_file():
        return None
    if _names(root) != (NAMESPACE, NAME):
        return None
    link = root / LINK
    if link.exists() and link.resolve() == root:
        return Collection(root, root / "collections", checkout=True)
    parts = root.parts
    if len(parts) >= 4 and parts[-3:] == ("ansible_collections", NAMESPACE, NAME):
        return Collection(root, root.parents[2], checkout=False)
    raise CollectionNotFound(
        "%s is a heteromig.fleet checkout without its in-place link %s -> the repository root: "
        "run scripts/bootstrap there" % (root, LINK)
    )


def _candidates() -> Iterator[Path]:
    here = Path(__file__).resolve().parent
    # a checkout holding this file, or holding the venv this package is installed in
    yield from here.parents
    cwd = Path.cwd()
    yield cwd
    yield from cwd.parents
    configured = os.environ.get("ANSIBLE_COLLECTIONS_PATH", "")
    search = [Path(p).expanduser() for p in configured.split(os.pathsep) if p]
    search += [Path("~/.ansible/collections").expanduser(), Path("/usr/share/ansible/collections")]
    search += [Path(p) for p in sys.path if p]
    for directory in search:
        yield directory / "ansible_collections" / NAMESPACE / NAME


def find() -> Collection:
    """The heteromig.fleet collection this command runs (see the module's docstring)."""
    given = os.environ.get(ENV_VAR)
    if given:
        found = identify(Path(given))
        if found is None:
            raise CollectionNotFound(
                "%s=%s is not the heteromig.fleet collection (no galaxy.yml/MANIFEST.json of "
                "heteromig.fleet with playbooks/hetero_run.yml)" % (ENV_VAR, given)
            )
        return found
    seen: set[Path] = set()
    for candidate in _candidates():
        if candidate in seen or not candidate.is_dir():
            continue
        seen.add(candidate)
        found = identify(candidate)
        if found is not None:
            return found
    raise CollectionNotFound(
        "cannot find the heteromig.fleet collection (its playbooks): run heteromig from its "
        "checkout, install the collection, or set %s to its root" % ENV_VAR
    )
