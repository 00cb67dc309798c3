"""gpus_at_once lanes (plugin_utils/_campaign_lanes): which GPUs, which options, and the
scheduler that keeps every lane of a host busy from one worker.

The scheduler is driven with a simulated clock: each fake run takes a set number of seconds,
``done`` answers from the clock and ``sleep`` advances it. The expected timelines are worked
out by hand below.
"""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_lanes import (
    Lane,
    LaneError,
    lane_of,
    lane_options,
    lanes_for,
    schedule,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import Claim
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Cell,
    parse_spec,
)


def device(gpu: int, n: int) -> dict[str, Any]:
    return {"uuid": "MIG-%d-%d" % (gpu, n), "gpu_index": gpu, "profile": "3g.40gb"}


DEVICES = [device(1, 0), device(0, 0), device(1, 1), device(0, 1), device(2, 0)]


def test_lanes_are_the_first_gpus_with_their_own_slices_and_root() -> None:
    lanes = lanes_for(DEVICES, 2, "/var/lib/heteromig")
    assert [lane.gpu for lane in lanes] == [0, 1]
    assert lanes[0].host_root == "/var/lib/heteromig/lanes/gpu0"
    assert lanes[1].host_root == "/var/lib/heteromig/lanes/gpu1"
    assert [d["uuid"] for d in lanes[0].slices] == ["MIG-0-0", "MIG-0-1"]
    assert [d["uuid"] for d in lanes[1].slices] == ["MIG-1-0", "MIG-1-1"]
    assert [lane.gpu for lane in lanes_for(DEVICES, 8, "/r")] == [0, 1, 2]  # as many as there are


@pytest.mark.parametrize("devices", [None, [], [{"uuid": "MIG-x"}]])
def test_no_mig_devices_no_lanes(devices: Any) -> None:
    with pytest.raises(LaneError, match=r"gpus_at_once: 2 needs the host's MIG devices"):
        lanes_for(devices, 2, "/r")


def test_lane_options_keep_the_run_on_its_gpu_with_the_hosts_runtime() -> None:
    lane = lanes_for(DEVICES, 2, "/r")[1]
    options = {
        "main_benchmark": "synth-mlp-small",
        "main_slice": 3,
        "background_slices": "all",
        "slices": "ignored",
        "host_root": "/elsewhere",
        "harness_vars": {"x": 1},
    }
    out = lane_options(options, lane, "/r/lib", "/r/engines")
    assert out == {
        "main_benchmark": "synth-mlp-small",
        "slices": lane.slices,
        "background_slices": "same_gpu",
        "host_root": "/r/lanes/gpu1",
        "host_pythonpath": "/r/lib",
        "harness_vars": {"x": 1, "engine_dir": "/r/engines"},
    }
    assert options["harness_vars"] == {"x": 1}  # the cell's own options are left as they were
    given = lane_options(
        {"harness_vars": {"engine_dir": "/e"}, "host_pythonpath": "/p"},
        lane,
        "/r/lib",
        "/r/engines",
    )
    assert given["harness_vars"] == {"engine_dir": "/e"} and given["host_pythonpath"] == "/p"


# ------------------------------------------------------------------------------ claims
CAMPAIGN = parse_spec(
    {
        "version": 1,
        "campaign": "lanes",
        "systems": [{"name": "s", "hosts": "h", "gpus_at_once": 2}],
        "benchmarks": {
            "synth-mlp-small": {"scenarios": ["Offline"], "modes": ["performance", "accuracy"]},
            "synth-conv-1d": {"scenarios": ["SingleStream", "MultiStream"]},
        },
    },
    "lanes.yml",
)
CELLS: list[Cell] = list(CAMPAIGN.cells)  # 4 cells


def test_a_resumed_claim_goes_back_to_its_gpu() -> None:
    lanes = lanes_for(DEVICES, 2, "/r")
    resumed = Claim(CELLS[0], 1, "r1", True, {"gpu": 1})
    assert lane_of(resumed, lanes, lanes) == lanes[1]
    assert lane_of(resumed, [lanes[0]], lanes) is None  # its lane is busy
    gone = lane_of(Claim(CELLS[0], 1, "r1", True, {"gpu": 5}), lanes, lanes)
    assert gone == Lane(5, "/r/lanes/gpu5", [])  # a GPU no longer among the lanes: still its root
    fresh = Claim(CELLS[0], 1, "r1", False, None)
    assert lane_of(fresh, [lanes[1], lanes[0]], lanes) == lanes[1]
    assert lane_of(Claim(CELLS[0], 1, "r1", True, {}), [lanes[1]], lanes) == lanes[1]


class Fake:
    """Claims from a queue; each run takes ``seconds[cell index]`` on a simulated clock."""

    def __init__(self, seconds: list[float], fail_start: set[str] = frozenset()) -> None:
        self.queue = list(CELLS[: len(seconds)])
        self.seconds = {c.id: s for c, s in zip(CELLS, seconds, strict=False)}
        self.now = 0.0
        self.fail_start = set(fail_start)
        self.ends: dict[str, float] = {}
        self.log: list[tuple[float, str, str, int]] = []  # (time, event, cell, gpu)
        self.running: dict[int, str] = {}
        self.most_at_once = 0

    def claim(self, lane: Lane) -> Claim | None:
        if not self.queue:
            return None
        cell = self.queue.pop(0)
        return Claim(cell, 1, "run-" + cell.id, False)

    def start(self, claim: Claim, lane: Lane) -> str | None:
        assert lane.gpu not in self.running, "two runs on GPU %d" % lane.gpu
        if claim.cell.id in self.fail_start:
            self.fail_start.discard(claim.cell.id)
            self.queue.append(claim.cell)  # the ledger would offer it again (a retry)
            return "cannot start"
        self.running[lane.gpu] = claim.cell.id
        self.most_at_once = max(self.most_at_once, len(self.running))
        self.ends[claim.cell.id] = self.now + self.seconds[claim.cell.id]
        self.log.append((self.now, "start", claim.cell.id, lane.gpu))
        return None

    def done(self, claim: Claim, lane: Lane) -> bool:
        return self.now >= self.ends[claim.cell.id]

    def finish(self, claim: Claim, lane: Lane, failure: str | None) -> None:
        if failure is None:
            assert self.running.pop(lane.gpu) == claim.cell.id
        self.log.append((self.now, "failed" if failure else "end", claim.cell.id, lane.gpu))

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def run(self, lanes: list[Lane]) -> int:
        return schedule(lanes, self.claim, self.start, self.done, self.finish, 1.0, self.sleep)


def ids(log: list[tuple[float, str, str, int]]) -> list[tuple[float, str, int, int]]:
    """The log with cells as their index in CELLS."""
    order = [c.id for c in CELLS]
    return [(t, event, order.index(cell), gpu) for t, event, cell, gpu in log]


def test_two_lanes_run_two_cells_at_once_and_a_free_lane_takes_the_next() -> None:
    fake = Fake([3, 1, 1, 1])
    lanes = lanes_for(DEVICES, 2, "/r")
    assert fake.run(lanes) == 4
    # cell 0 (3 s) on GPU 0; cells 1, 2, 3 (1 s each) one after the other on GPU 1
    assert ids(fake.log) == [
        (0, "start", 0, 0),
        (0, "start", 1, 1),
        (1, "end", 1, 1),
        (1, "start", 2, 1),
        (2, "end", 2, 1),
        (2, "start", 3, 1),
        (3, "end", 0, 0),
        (3, "end", 3, 1),
    ]
    assert fake.most_at_once == 2


def test_one_lane_runs_them_one_by_one() -> None:
    fake = Fake([2, 2])
    assert fake.run(lanes_for(DEVICES, 1, "/r")) == 2
    assert ids(fake.log) == [
        (0, "start", 0, 0),
        (2, "end", 0, 0),
        (2, "start", 1, 0),
        (4, "end", 1, 0),
    ]
    assert fake.most_at_once == 1


def test_a_run_that_cannot_start_is_recorded_and_the_lane_moves_on() -> None:
    fake = Fake([2, 2, 2], fail_start={CELLS[1].id})
    assert fake.run(lanes_for(DEVICES, 2, "/r")) == 4  # 3 cells + 1 failed start
    # cell 1 fails to start on GPU 1, which then takes cell 2; cell 1 comes back (its retry)
    # when the queue offers it again: at 2 s both runs ended, and the first free lane, GPU 0,
    # takes it
    assert ids(fake.log) == [
        (0, "start", 0, 0),
        (0, "failed", 1, 1),
        (0, "start", 2, 1),
        (2, "end", 0, 0),
        (2, "end", 2, 1),
        (2, "start", 1, 0),
        (4, "end", 1, 0),
    ]


def test_nothing_to_claim_nothing_runs() -> None:
    fake = Fake([])
    assert fake.run(lanes_for(DEVICES, 2, "/r")) == 0
    assert fake.log == []
