"""The campaign action parses a spec once per worker process (plugins/action/campaign.py,
_campaign_of): a host's loop items reuse it while the spec (or its file) is unchanged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.heteromig.fleet.plugins.action.campaign import _campaign_of
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import SpecError


def spec(duration: int = 1000) -> dict[str, Any]:
    return {
        "version": 1,
        "campaign": "cache",
        "defaults": {"main_benchmark_duration": duration},
        "systems": [{"name": "sys", "hosts": "all"}],
        "benchmarks": {"synth-mlp-small": {"scenarios": ["Offline"]}},
    }


def test_the_same_spec_is_parsed_once_and_a_changed_one_again() -> None:
    first = _campaign_of(spec(), None)
    assert _campaign_of(spec(), None) is first
    other = _campaign_of(spec(2000), None)
    assert other is not first
    assert other.cells[0].options["main_benchmark_duration"] == 2000
    with pytest.raises(SpecError, match="version"):
        _campaign_of({**spec(), "version": 9}, None)  # an error is raised every time
    with pytest.raises(SpecError, match="version"):
        _campaign_of({**spec(), "version": 9}, None)


def test_a_spec_file_is_parsed_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yml"
    path.write_text(yaml.safe_dump(spec()))
    first = _campaign_of(None, str(path))
    assert _campaign_of(None, str(path)) is first
    path.write_text(yaml.safe_dump(spec(25000)))
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock's grain
    changed = _campaign_of(None, str(path))
    assert changed.cells[0].options["main_benchmark_duration"] == 25000
    with pytest.raises(SpecError):
        _campaign_of(None, str(tmp_path / "missing.yml"))
