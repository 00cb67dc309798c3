"""Benchmark: a no-change run of playbooks/mig_reconfigure.yml against a trivial task.

The speed target (issue 3): on 32 simulated hosts with 8 GPUs each, a run of
mig_reconfigure.yml that changes nothing costs at most 1.3x a play with one trivial
``ansible.builtin.command: "true"`` task on the same inventory.

How the hosts are made: one inventory of N hosts with ``ansible_connection: local`` (no sshd:
32 sshd hosts would measure this 2-core machine's ssh handshakes more than the collection),
each with its own simulator state file (``heteromig_sim_state``) holding 8 simulated GPUs.
Both playbooks run through ``ansible-playbook`` with the repository's ansible.cfg (forks 32),
so per-host process start-up, fork and result handling are the same for both; the difference
is what the reconfigure run does on top: the mig_partition role's planning module call (read
every GPU and its instances through NVML, plan, compare), its skipped tasks, and the summary.

Before timing, the hosts are put into the layout once (all-1g on every GPU) by the playbook
itself, so the timed reconfigure runs are no-change runs, and each host has the stamp of the
layout it applied (mig_layout's ``stamp``), which the timed runs reuse; each run is checked to
report changed=0 on every host. ``--breakdown`` adds a run on hosts whose stamps were removed
first (their planning call plans and records), the planning call alone with ``stamp: false``,
``gpu_facts`` alone, and the trivial play a second time (how much two runs of one playbook
differ on the machine: the noise floor of every ratio).

    .venv/bin/python benchmarks/bench_mig_reconfigure.py             # 32 hosts x 8 GPUs, 5 rounds
    .venv/bin/python benchmarks/bench_mig_reconfigure.py --hosts 8 --rounds 3 --json out.json
    .venv/bin/python benchmarks/bench_mig_reconfigure.py --breakdown   # where the time goes
    .venv/bin/python benchmarks/bench_mig_reconfigure.py --hooks-clients  # with hooks and clients
    # A/B against another version of the collection (a tree from `git archive COMMIT`):
    .venv/bin/python benchmarks/bench_mig_reconfigure.py --hooks-clients --compare-tree before=/tmp/before

``--compare-tree NAME=DIR`` (repeatable) times every variant with the collection of DIR too, in
the same rounds (interleaved), each tree on its own simulated hosts (state files and stamps) and
with its own ``ansible.cfg``; each tree's ratios are to its own trivial play, and the summary
also gives each variant of this tree against the same variant of the other (ratio of medians,
and the spread of the per-round ratios).

Wall time is what the target is about; CPU time (user + system of ansible-playbook and every
process it started, from getrusage) is printed too, as it is much less sensitive to other load
on the machine.

Exit status 0 when the median ratio is within --target (default 1.3), 1 when it is not.
Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / "playbooks" / "mig_reconfigure.yml"
MODELS = ("H100-SXM5-80GB", "A100-SXM4-80GB", "H200-141GB", "A100-SXM4-40GB")
TRIVIAL = """---
- name: Trivial task on every host
  hosts: gpu_hosts
  gather_facts: false
  tasks:
    - name: Run true
      ansible.builtin.command: "true"
      changed_when: false
"""
# --breakdown: where the difference goes, each on the same inventory
GPU_FACTS = """---
- name: Cheapest GPU read (module gpu_facts without details)
  hosts: gpu_hosts
  gather_facts: false
  module_defaults:
    group/heteromig.fleet.gpu:
      backend: "{{ heteromig_gpu_backend }}"
      sim_state: "{{ heteromig_sim_state }}"
      sim_gpus: "{{ heteromig_sim_gpus }}"
  tasks:
    - name: Read the GPUs
      heteromig.fleet.gpu_facts:
        details: false
"""
PLAN_ONLY = """---
- name: The role's planning call alone (module mig_layout, operation plan, no stamp)
  hosts: gpu_hosts
  gather_facts: false
  module_defaults:
    group/heteromig.fleet.gpu:
      backend: "{{ heteromig_gpu_backend }}"
      sim_state: "{{ heteromig_sim_state }}"
      sim_gpus: "{{ heteromig_sim_gpus }}"
  tasks:
    - name: Plan
      heteromig.fleet.mig_layout:
        layout: "%s"
        operation: plan
        return_mig_devices: false
        return_gpu_states: false
        stamp: false
"""
_RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def write_inventory(workdir: Path, hosts: int, gpus: int) -> Path:
    lines = [
        "gpu_hosts:",
        "  vars:",
        "    ansible_connection: local",
        f"    ansible_python_interpreter: {sys.executable}",
        "    heteromig_gpu_backend: sim",
        f'    heteromig_sim_state: "{workdir}/{{{{ inventory_hostname }}}}/nvml-sim.json"',
        "  hosts:",
    ]
    for index in range(hosts):
        model = MODELS[index % len(MODELS)]
        lines.append(f"    bench{index:03d}: {{heteromig_sim_gpus: {gpus}x{model}}}")
    path = workdir / "inventory.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_hooks_clients(workdir: Path, hook_log: Path) -> Path:
    """Extra vars: hooks at every point (inline and a file) and GPU clients, as an admin sets them.

    Every hook appends to ``hook_log``: on a no-change run it must stay absent.
    """
    hook = {"command": "/bin/sh", "args": ["-c", f"echo $HETEROMIG_MIG_HOOK >> {hook_log}"]}
    hooks_file = workdir / "hooks.yaml"
    hooks_file.write_text(json.dumps({"version": "v1", "hooks": {"apply-start": [hook]}}))
    data = {
        "heteromig_mig_hooks": {
            "version": "v1",
            "hooks": {
                point: [hook]
                for point in ("apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit")
            },
        },
        "heteromig_mig_hooks_file": str(hooks_file),
        "heteromig_mig_gpu_clients": [
            {"unit": "kubelet", "order": 10, "missing": "skip"},
            {"unit": "dcgm-exporter", "order": 30, "missing": "skip"},
            {"unit": "nvidia-dcgm", "order": 50, "missing": "skip"},
            {"unit": "nvidia-persistenced", "order": 90, "missing": "skip", "needed_for": "reset"},
            {"name": "inference", "stop": ["/bin/true"], "start": ["/bin/true"], "order": 5},
        ],
    }
    path = workdir / "hooks_clients.json"
    path.write_text(json.dumps(data))
    return path


def hosts_pynvml() -> dict[str, object]:
    """Where the simulated hosts' pynvml comes from, and whether it loads from bytecode.

    The hosts run this interpreter. The simulator takes pynvml's structures and error classes,
    so every mig_layout run imports it. Without bytecode (installed other than by pip, and
    PYTHONDONTWRITEBYTECODE set, as on some images) each run compiles its 7,400 lines, which
    a host set up by heteromig.fleet.host_runtime (pip, which byte-compiles) does not.
    """
    spec = importlib.util.find_spec("pynvml")
    if spec is None or not spec.origin:
        return {"path": None, "bytecode": False}
    return {
        "path": spec.origin,
        "bytecode": os.path.exists(importlib.util.cache_from_source(spec.origin)),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(
    playbook: Path, inventory: Path, extra: list[str], env: dict[str, str], root: Path = REPO
) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of ansible-playbook and everything it started, stdout).

    ``root``: the collection tree to run from (its ansible.cfg is in ``env``).
    """
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(inventory),
        str(playbook),
        *extra,
    ]
    cpu = _cpu()
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"{playbook.name} failed (rc {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
        )
    return elapsed, _cpu() - cpu, done.stdout


def recap(stdout: str) -> dict[str, tuple[int, int, int, int]]:
    return {
        m.group(1): tuple(int(m.group(i)) for i in range(2, 6)) for m in _RECAP.finditer(stdout)
    }  # type: ignore[misc]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, default=32)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layout", default="all-1g")
    parser.add_argument("--target", type=float, default=1.3)
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="extra vars for the mig_reconfigure runs (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--hooks-clients",
        action="store_true",
        help="also time the no-change run with hooks (inline and a file, every "
        "hook point) and GPU clients (units and commands) configured; every "
        "such run is checked to have run no hook",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time gpu_facts alone, the planning call alone (no stamp), "
        "the trivial play again (the noise), and a run on hosts without a stamp",
    )
    parser.add_argument(
        "--compare-tree",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also time every variant with the collection tree DIR (for example "
        "`git archive COMMIT` unpacked), interleaved, on its own hosts",
    )
    args = parser.parse_args()

    top = Path(tempfile.mkdtemp(prefix="bench-mig-"))
    try:
        trees = [Tree("", REPO, top / "this")]
        for spec in args.compare_tree:
            name, _sep, root = spec.partition("=")
            if (
                not name
                or not root
                or not (Path(root) / "playbooks" / "mig_reconfigure.yml").is_file()
            ):
                raise SystemExit(
                    f"--compare-tree {spec!r}: expected NAME=DIR, DIR a collection tree"
                )
            trees.append(Tree(name, Path(root).resolve(), top / name))
        for tree in trees:
            tree.prepare(args)
        return _timed(args, trees)
    finally:
        if args.keep:
            print(f"work directory kept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


class Tree:
    """One collection tree under test, with its own simulated hosts (state files and stamps)."""

    def __init__(self, name: str, root: Path, workdir: Path) -> None:
        self.name = name
        self.root = root
        self.workdir = workdir
        self.playbook = root / "playbooks" / "mig_reconfigure.yml"
        self.hook_log = workdir / "hooks.log"
        self.env = dict(os.environ)
        self.env.update(
            {
                "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}",
            }
        )
        self.inventory = workdir / "inventory.yml"
        self.variants: dict[str, tuple[Path, list[str]]] = {}

    def key(self, variant: str) -> str:
        """The variant's name in the figures: as is for this tree, NAME:variant for another."""
        return f"{self.name}:{variant}" if self.name else variant

    def run(self, playbook: Path, extra: list[str]) -> tuple[float, float, str]:
        return run(playbook, self.inventory, extra, self.env, self.root)

    def prepare(self, args: argparse.Namespace) -> None:
        """Write the inventory and playbooks, apply the layout once, warm the caches."""
        self.workdir.mkdir(parents=True)
        self.inventory = write_inventory(self.workdir, args.hosts, args.gpus)
        trivial = self.workdir / "trivial.yml"
        trivial.write_text(TRIVIAL)
        layout = ["-e", f"heteromig_mig_layout={args.layout}"]
        for extra in args.extra_vars:
            layout += ["-e", extra]
        setup, _cpu_s, out = self.run(self.playbook, layout)
        changed = sum(1 for counts in recap(out).values() if counts[1])
        print(
            f"setup{' of ' + self.name if self.name else ''}: {args.layout} applied on "
            f"{changed}/{args.hosts} hosts in {setup:.1f}s ({self.root})"
        )
        self.run(trivial, [])  # warm caches (pyc, page cache) for both

        self.variants = {"trivial": (trivial, []), "mig_reconfigure": (self.playbook, layout)}
        if args.hooks_clients:
            self.variants["mig_reconfigure_hooks_clients"] = (
                self.playbook,
                [*layout, "-e", "@" + str(write_hooks_clients(self.workdir, self.hook_log))],
            )
        if args.breakdown:
            facts = self.workdir / "gpu_facts.yml"
            facts.write_text(GPU_FACTS)
            plan = self.workdir / "plan_only.yml"
            plan.write_text(PLAN_ONLY % args.layout)
            self.variants["gpu_facts_light"] = (facts, [])
            self.variants["mig_layout_plan_only"] = (plan, [])
            # the trivial play once more: how far two runs of one playbook differ here
            self.variants["trivial_again"] = (trivial, [])
            # with every host's stamp removed first (the planning call plans and records it)
            self.variants["mig_reconfigure_unrecorded"] = (self.playbook, layout)

    def timed_run(self, variant: str, round_: int, hosts: int) -> tuple[float, float]:
        playbook, extra = self.variants[variant]
        if variant == "mig_reconfigure_unrecorded":
            for stamp in self.workdir.glob("*/mig_layout-stamp.json"):
                stamp.unlink()
        wall, cpu, out = self.run(playbook, extra)
        if playbook == self.playbook:
            counts = recap(out)
            if len(counts) != hosts or any(c[1] or c[2] or c[3] for c in counts.values()):
                raise SystemExit(
                    f"round {round_}, {self.key(variant)}: not a clean no-change run:\n{out[-3000:]}"
                )
            if self.hook_log.exists():
                raise SystemExit(
                    f"round {round_}, {self.key(variant)}: a hook ran on a no-change run: "
                    f"{self.hook_log.read_text()[:500]}"
                )
        return wall, cpu


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def _timed(args: argparse.Namespace, trees: list[Tree]) -> int:
    """Every variant of every tree once per round, interleaved (load drift hits all alike)."""
    pynvml = hosts_pynvml()
    if not pynvml["bytecode"]:
        print(
            f"note: the hosts' pynvml ({pynvml['path']}) has no bytecode, so every module "
            "run on them compiles it; hosts set up by heteromig.fleet.host_runtime have it"
        )
    variants = list(trees[0].variants)
    keys = [tree.key(name) for name in variants for tree in trees]
    walls: dict[str, list[float]] = {key: [] for key in keys}
    cpus: dict[str, list[float]] = {key: [] for key in keys}
    for round_ in range(1, args.rounds + 1):
        # each variant in every tree back to back, so that an A/B pair sees the same load
        for name in variants:
            for tree in trees:
                wall, cpu = tree.timed_run(name, round_, args.hosts)
                walls[tree.key(name)].append(wall)
                cpus[tree.key(name)].append(cpu)
        print(
            f"round {round_}: "
            + "; ".join(
                f"{key} wall {walls[key][-1]:.2f}s CPU {cpus[key][-1]:.2f}s" for key in keys
            ),
            flush=True,
        )

    med = {
        kind: {key: statistics.median(values) for key, values in series.items()}
        for kind, series in (("wall", walls), ("cpu", cpus))
    }
    ratios = {
        kind: {
            tree.key(name): round(med[kind][tree.key(name)] / med[kind][tree.key("trivial")], 3)
            for name in variants
            for tree in trees
        }
        for kind in med
    }
    # per round, each variant over its own tree's trivial play of the same round
    round_ratios = {
        kind: {
            tree.key(name): [
                v / t
                for v, t in zip(series[tree.key(name)], series[tree.key("trivial")], strict=True)
            ]
            for name in variants
            for tree in trees
        }
        for kind, series in (("wall", walls), ("cpu", cpus))
    }
    ratio = {kind: ratios[kind]["mig_reconfigure"] for kind in med}
    # this tree against each other tree, variant by variant (paired by round)
    compare = {
        tree.name: {
            name: {
                kind: {
                    "ratio_of_medians": round(med[kind][name] / med[kind][tree.key(name)], 3),
                    "per_round": [
                        round(a / b, 3)
                        for a, b in zip(series[name], series[tree.key(name)], strict=True)
                    ],
                }
                for kind, series in (("wall", walls), ("cpu", cpus))
            }
            for name in variants
        }
        for tree in trees[1:]
    }
    figures = {
        "hosts": args.hosts,
        "gpus_per_host": args.gpus,
        "layout": args.layout,
        "rounds": args.rounds,
        "trees": {tree.name or "this": str(tree.root) for tree in trees},
        "wall_s": walls,
        "cpu_s": cpus,
        "median_wall_s": med["wall"],
        "median_cpu_s": med["cpu"],
        "ratios_to_trivial": ratios,
        "per_round_ratios_to_trivial": round_ratios,
        "ratio_wall": ratio["wall"],
        "ratio_cpu": ratio["cpu"],
        "compare_trees": compare,
        "target": args.target,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "hosts_pynvml": pynvml,
        "load_average_after": os.getloadavg(),
    }
    print("medians (ratio to the same tree's trivial play; per-round ratios min-max):")
    for key in keys:
        print(
            f"  {key:36s} wall {med['wall'][key]:6.2f}s (x{ratios['wall'][key]:.2f}, "
            f"{_spread(round_ratios['wall'][key])})  CPU {med['cpu'][key]:6.2f}s "
            f"(x{ratios['cpu'][key]:.2f}, {_spread(round_ratios['cpu'][key])})"
        )
    for other, by_variant in compare.items():
        print(f"this tree against {other} (ratio of medians; per-round min-max):")
        for name, kinds in by_variant.items():
            print(
                f"  {name:36s} "
                + "  ".join(
                    f"{kind} x{kinds[kind]['ratio_of_medians']:.3f} ({_spread(kinds[kind]['per_round'])})"
                    for kind in ("wall", "cpu")
                )
            )
    print(f"target: mig_reconfigure <= {args.target} x trivial")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ratio["wall"] <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
