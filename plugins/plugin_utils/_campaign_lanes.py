# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several cells on one host at once, one per GPU: a system's ``gpus_at_once`` (controller only).

A host of a system with ``gpus_at_once: N`` (N > 1) runs its cells on N **lanes**, one per GPU
that has MIG devices (the first N by index; fewer when the host has fewer). A lane is:

- its GPU's MIG devices as the run's ``slices``: the main benchmark takes the first, the
  backgrounds the others of that GPU (hetero_run's ``background_slices: same_gpu``), so runs of
  two lanes never share a slice or a GPU;
- its own ``host_root``, ``<host_root>/lanes/gpu<index>``: hetero_run allows one run per host
  root (an ``flock`` on its ``hetero_run.lock``), so each lane has its lock and its ``runs/``.
  The host runtime (``<host_root>/lib``) and the engines (``<host_root>/engines``) stay the
  host's, passed as ``host_pythonpath`` and ``harness_vars.engine_dir``.

One worker drives all lanes of a host (:func:`schedule`): it claims a cell for every free lane
and starts it with ``wait: false`` (the runner gets a lease that lasts the whole run), polls the
runs' status, and when one is done re-attaches with ``resume: true`` (which fetches its results
and gives its verdict), records it, and gives the lane the next cell. So the host's GPUs stay
busy without holding one worker per GPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import Claim


class LaneError(Exception):
    """A host whose GPUs cannot give the lanes asked for; the message says why."""


@dataclass(frozen=True)
class Lane:
    gpu: int  # the GPU index
    host_root: str  # the lane's own host root (its lock and runs)
    slices: list[dict[str, Any]]  # the GPU's MIG devices (gpu_facts' heteromig_mig_devices)


def lane_root(host_root: str, gpu: int) -> str:
    return os.path.join(host_root, "lanes", "gpu%d" % gpu)


def lanes_for(devices: Any, count: int, host_root: str) -> list[Lane]:
    """The host's lanes: its first ``count`` GPUs (by index) that have MIG devices."""
    found = [d for d in devices or [] if isinstance(d, Mapping)]
    gpus = sorted({int(d["gpu_index"]) for d in found if isinstance(d.get("gpu_index"), int)})
    if not gpus:
        raise LaneError(
            "gpus_at_once: %d needs the host's MIG devices (gpu_facts' heteromig_mig_devices, "
            "each with its gpu_index); none are known" % count
        )
    return [
        Lane(gpu, lane_root(host_root, gpu), [dict(d) for d in found if d.get("gpu_index") == gpu])
        for gpu in gpus[:count]
    ]


def lane_options(
    options: Mapping[str, Any], lane: Lane, pythonpath: str, engine_dir: str
) -> dict[str, Any]:
    """A cell's hetero_run options on ``lane`` (its slices and host root; the host's runtime and
    engines). A ``slices``, ``main_slice`` or ``background_slices`` the spec gives is replaced:
    on a lane the run stays on the lane's GPU."""
    out = {
        k: v
        for k, v in options.items()
        if k not in ("slices", "main_slice", "background_slices", "host_root")
    }
    harness_vars = dict(out.get("harness_vars") or {})
    harness_vars.setdefault("engine_dir", engine_dir)
    out.update(
        slices=[dict(s) for s in lane.slices],
        background_slices="same_gpu",
        host_root=lane.host_root,
        host_pythonpath=str(options.get("host_pythonpath") or pythonpath),
        harness_vars=harness_vars,
    )
    return out


def lane_of(claim: Claim, free: Sequence[Lane], every: Sequence[Lane]) -> Lane | None:
    """The lane a claim runs on: a resumed claim's own GPU (from its earlier claim record),
    else the first free lane. None when a resumed claim's lane is busy."""
    gpu = (claim.previous or {}).get("gpu") if claim.resume else None
    if isinstance(gpu, int) and not isinstance(gpu, bool):
        for lane in free:
            if lane.gpu == gpu:
                return lane
        if any(lane.gpu == gpu for lane in every):
            return None
        root = os.path.dirname(os.path.dirname(every[0].host_root)) if every else "/"
        return Lane(gpu, lane_root(root, gpu), [])  # a GPU no longer among the lanes
    return free[0] if free else None


def schedule(
    lanes: Sequence[Lane],
    claim: Callable[[Lane], Claim | None],
    start: Callable[[Claim, Lane], str | None],
    done: Callable[[Claim, Lane], bool],
    finish: Callable[[Claim, Lane, str | None], None],
    pause: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run cells on ``lanes`` until no cell is left to claim; returns how many were finished.

    ``claim(lane)`` claims the next cell (recorded for that lane) or None; ``start`` starts it
    without waiting (a failure message, or None); ``done`` says whether its run ended (True too
    when the host cannot be asked: ``finish`` then finds out); ``finish(claim, lane, failure)``
    watches it to the end, fetches and records it. A lane whose run ended is given the next
    cell at once; between rounds of ``done`` the scheduler sleeps ``pause`` seconds.
    """
    busy: dict[int, tuple[Claim, Lane]] = {}
    free = list(lanes)
    finished = 0
    more = True
    while True:
        while free and more:
            got = claim(free[0])
            if got is None:
                more = False
                break
            lane = lane_of(got, free, lanes)
            if lane is None:  # its GPU's lane runs another cell: record, retry later
                finish(
                    got, free[0], "its GPU %s runs another cell" % (got.previous or {}).get("gpu")
                )
                finished += 1
                continue
            if lane in free:
                free.remove(lane)
            failure = start(got, lane)
            if failure is not None:
                finish(got, lane, failure)
                finished += 1
                free.insert(0, lane)
                continue
            busy[lane.gpu] = (got, lane)
        if not busy:
            return finished
        ended = [pair for pair in busy.values() if done(*pair)]
        if not ended:
            sleep(pause)
            continue
        for got, lane in ended:
            del busy[lane.gpu]
            finish(got, lane, None)
            finished += 1
            if lane in lanes:
                free.append(lane)
            more = True  # a retry may have become claimable
