"""The sweep specs shipped in playbooks/sweeps/ are valid specs of this collection."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import parse_spec

SWEEPS = Path(__file__).resolve().parents[2] / "playbooks" / "sweeps"


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yml")), ids=lambda p: p.name)
def test_a_shipped_spec_parses(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    campaign = parse_spec(data["heteromig_sweep"], str(path))
    assert campaign.cells, "%s plans no cell" % path.name
    assert all(c.system in {s.name for s in campaign.systems} for c in campaign.cells)


def test_the_local_demo_describes_its_system_for_the_submission() -> None:
    data = yaml.safe_load((SWEEPS / "local.yml").read_text(encoding="utf-8"))
    system = parse_spec(data["heteromig_sweep"], "local.yml").systems[0]
    assert system.system_desc == {"status": "rdi", "system_type": "datacenter"}
    assert set(system.implementation_desc) == {
        "input_data_types",
        "retraining",
        "starting_weights_filename",
        "weight_data_types",
        "weight_transformations",
    }
