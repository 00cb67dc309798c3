"""Shared pieces of the campaign benchmarks (bench_sweep.py, bench_tuning.py, bench_fleet_width.py).

- ``TIMING_CALLBACK``: a tiny callback plugin (written into the benchmark's work directory, not
  shipped) that appends one JSON line per play start, task start and per-host task result, with
  the controller's wall clock, to the file named by ``HM_BENCH_TIMING``. The benchmarks take play
  and task boundaries from it instead of parsing ansible-playbook's output.
- ``TreeMemory``: samples the memory of a process and all its descendants from /proc.
- ``playbook_env``: the environment every benchmark runs ansible-playbook with (the repo's
  ansible.cfg, the venv first on PATH, the timing callback enabled next to hetero_report).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_CFG = ROOT / "ansible.cfg"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")

TIMING_CALLBACK = '''
"""Benchmark timing: play/task starts and per-host results, one JSON line each (HM_BENCH_TIMING)."""
import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_timing
type: aggregate
short_description: benchmark timing lines
description: [benchmark timing lines]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._out = open(os.environ["HM_BENCH_TIMING"], "a")

    def _line(self, **fields):
        fields["t"] = time.time()
        self._out.write(json.dumps(fields) + "\\n")
        self._out.flush()

    def v2_playbook_on_play_start(self, play):
        self._line(event="play", name=play.get_name())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._line(event="task", name=task.get_name())

    def _result(self, outcome, result):
        self._line(event=outcome, host=result._host.get_name(), task=result._task.get_name())

    def v2_runner_on_ok(self, result):
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("failed", result)

    def v2_runner_on_skipped(self, result):
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._result("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        self._line(event="end")
'''


def write_timing_callback(work: Path) -> Path:
    """Write the callback plugin into ``work/callback_plugins`` and return that directory."""
    folder = work / "callback_plugins"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_timing.py").write_text(TIMING_CALLBACK.lstrip())
    return folder


def playbook_env(work: Path, timing: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PATH": "%s%s%s" % (Path(sys.executable).parent, os.pathsep, env.get("PATH", "")),
            "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CALLBACK_PLUGINS": str(write_timing_callback(work)),
            "ANSIBLE_CALLBACKS_ENABLED": "heteromig.fleet.hetero_report,bench_timing",
            "HETEROMIG_REPORT_DIR": str(work / "hetero-reports"),
            "HM_BENCH_TIMING": str(timing),
        }
    )
    env.update(extra)
    return env


def read_timing(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def play_starts(lines: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(line["name"], line["t"]) for line in lines if line["event"] == "play"]


def task_start(lines: list[dict[str, Any]], name: str) -> float:
    for line in lines:
        if line["event"] == "task" and line["name"] == name:
            return float(line["t"])
    raise SystemExit("task %r never started (timing lines: %d)" % (name, len(lines)))


def end_time(lines: list[dict[str, Any]]) -> float:
    for line in lines:
        if line["event"] == "end":
            return float(line["t"])
    raise SystemExit("the playbook did not reach its stats")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _kib(pid: int, path: str, key: str) -> int:
    try:
        with open("/proc/%d/%s" % (pid, path)) as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class TreeMemory:
    """Peak memory of ``pid`` and its descendants, sampled every ``interval`` seconds.

    ``controller``: the processes whose command line is ansible-playbook (the main process and
    the workers it forks); ``tree``: everything below it as well (modules, ssh clients; with the
    local connection also the hosts' modules). RSS counts pages shared between forked workers
    once per process; PSS divides them among the sharers (their sum is the real footprint).
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.peak: dict[str, float] = {
            "controller_rss_mib": 0.0,
            "controller_pss_mib": 0.0,
            "tree_pss_mib": 0.0,
            "controller_procs": 0,
            "tree_procs": 0,
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        tree = _children()
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(tree.get(pid, []))
        ctl = [p for p in pids if "ansible-playbook" in _cmdline(p)]
        rss = sum(_kib(p, "status", "VmRSS:") for p in ctl) / 1024
        ctl_pss = sum(_kib(p, "smaps_rollup", "Pss:") for p in ctl) / 1024
        tree_pss = sum(_kib(p, "smaps_rollup", "Pss:") for p in pids) / 1024
        for key, value in (
            ("controller_rss_mib", rss),
            ("controller_pss_mib", ctl_pss),
            ("tree_pss_mib", tree_pss),
            ("controller_procs", len(ctl)),
            ("tree_procs", len(pids)),
        ):
            self.peak[key] = max(self.peak[key], value)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max, rounded."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def now_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
