# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin heteromig.fleet.hetero_run: the controller side of a HeteroMIG run.

Builds the plan (plugin_utils/_harness_profiles), starts the detached host runner through the
host agent's commands (plugin_utils/_agent_transport: one command over the connection, or the
``hetero_runner`` module; not async_wrapper), long-polls its status (one call per change; each
call renews the runner's lease), prints progress through Display,
fetches the run's logs in one archive and returns the result structure of
docs/hetero_result_contract.md. Documentation: plugins/modules/hetero_run.py.

Ansible may kill this worker on Ctrl-C without running ``finally`` blocks: nothing here needs to
run for the host to clean up. The runner stops every benchmark by itself once the lease is not
renewed.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import hashlib
import json
import os
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import runtime_paths
from ansible_collections.heteromig.fleet.plugins.module_utils._safe_names import name_problem
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_activity import (
    PLAN_KEY,
    interval_from_plan,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._agent_transport import (
    AgentCalls,
    host_python,
    host_var,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    PlanError,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_contract import (
    contract_result,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_plan import (
    build_plan,
    run_id_for,
)

display = Display()

PROGRESS_EVERY = 30.0  # seconds between progress lines when nothing changes

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    # harness and benchmarks
    "harness": {"type": "str", "default": "heteromig_synthetic"},
    "harness_profile_dirs": {"type": "list", "elements": "path", "default": []},
    "harness_vars": {"type": "dict", "default": {}},
    "main_benchmark": {"type": "str"},
    "main_scenario": {"type": "str", "default": "Offline"},
    "main_action": {"type": "str", "default": "run_harness"},
    "main_mode": {
        "type": "str",
        "default": "PerformanceOnly",
        "choices": ["PerformanceOnly", "AccuracyOnly"],
    },
    "main_accuracy_target": {"type": "str", "default": "default", "choices": ["default", "high"]},
    "main_benchmark_duration": {"type": "int", "default": 600000},
    "main_benchmark_timeout": {"type": "int"},
    "main_benchmark_runargs": {"type": "raw"},
    "main_benchmark_cmd_prefix": {"type": "raw"},
    "main_min_query_count": {"type": "int"},
    "main_target_qps": {"type": "float"},
    "main_target_latency_ns": {"type": "int"},
    "background_benchmarks": {"type": "raw", "default": "all"},
    "background_benchmark_duration": {"type": "raw", "default": "automatic"},
    "background_benchmark_timeout": {"type": "int", "default": 7200000},
    "background_target_qps": {"type": "float"},
    "background_runargs": {"type": "raw"},
    "fill_slices": {"type": "bool", "default": True},
    # slices
    "slices": {"type": "raw"},
    "gpus": {"type": "list", "elements": "dict"},
    "main_slice": {"type": "raw"},
    "background_slices": {"type": "raw", "default": "same_gpu"},
    "allow_shared_gpu": {"type": "bool", "default": False},
    # choreography
    "readiness_regexes": {"type": "list", "elements": "str"},
    "background_start_timeout": {"type": "int", "default": 600000},
    "start_time_buffer": {"type": "int", "default": 10000},
    "start_time_buffer_mode": {"type": "str", "default": "fixed", "choices": ["fixed", "steady"]},
    "steady_window": {"type": "int", "default": 2000},
    "steady_tolerance": {"type": "float", "default": 0.05},
    "main_benchmark_immediate_start": {"type": "bool", "default": False},
    "end_time_buffer_min": {"type": "int", "default": 30000},
    "stop_grace": {"type": "int", "default": 10000},
    "lenient": {"type": "bool", "default": False},
    "verbose": {"type": "bool", "default": False},
    "verbose_all": {"type": "bool", "default": False},
    "env": {"type": "dict", "default": {}},
    "max_output_bytes": {"type": "int", "default": 256 * 1024 * 1024},
    # _gpu_activity.DEFAULT_INTERVAL_S (this table stays literal: _campaign_spec reads it by ast)
    "gpu_sample_interval_s": {"type": "raw", "default": 0.5},
    # running and watching
    "run_id": {"type": "str"},
    "resume": {"type": "bool", "default": False},
    "results_dir": {"type": "path"},
    "fetch": {"type": "bool", "default": True},
    "host_root": {"type": "path"},
    "host_pythonpath": {"type": "str"},
    "backend": {"type": "str", "choices": ["nvml", "sim"]},
    "sim_state": {"type": "path"},
    "lease_timeout": {"type": "int", "default": 60000},
    "reconnect_timeout": {"type": "int", "default": 120000},
    "poll_interval": {"type": "int", "default": 15000},
    "fail_on_invalid": {"type": "bool", "default": False},
    "wait": {"type": "bool", "default": True},
}

# A run started with wait=false must outlive the wait for a free worker: its first lease covers
# the whole run (readiness, buffer, main, stop) plus this margin, within the run's own limit.
DETACHED_LEASE_MARGIN_S = 120.0


def detached_lease_s(plan: Mapping[str, Any]) -> float:
    """The first lease of a run that nobody watches yet (wait=false)."""
    choreo = plan.get("choreography") or {}
    whole = (
        float(plan.get("expected_duration_s") or 0)
        + float(choreo.get("background_start_timeout") or 0)
        + float(choreo.get("stop_grace") or 0)
        + DETACHED_LEASE_MARGIN_S
    )
    limit = float(choreo.get("run_timeout") or whole)
    return max(float(plan.get("lease_s") or 0), min(whole, limit))


OPTION_VAR_PREFIX = "heteromig_hetero_"


def options_from_vars(
    task_args: Mapping[str, Any],
    task_vars: Mapping[str, Any],
    template: Callable[[Any], Any] = lambda value: value,
) -> tuple[dict[str, Any], list[str]]:
    """The task's options, each missing one taken from its ``heteromig_hetero_<option>`` variable.

    Returns the merged options (variables passed through ``template``; task arguments arrive
    templated already) and the ``heteromig_hetero_*`` variables that name no option, each with a
    suggestion where one is close.
    """
    merged = dict(task_args)
    unknown = []
    for name in sorted(task_vars):
        if not isinstance(name, str) or not name.startswith(OPTION_VAR_PREFIX):
            continue
        option = name[len(OPTION_VAR_PREFIX) :]
        if option in ARGUMENT_SPEC:
            if option not in merged:
                merged[option] = template(task_vars[name])
            continue
        close = difflib.get_close_matches(option, list(ARGUMENT_SPEC), n=1)
        unknown.append(
            name + (" (did you mean %s%s?)" % (OPTION_VAR_PREFIX, close[0]) if close else "")
        )
    return merged, unknown


def _number(value: Any) -> Any:
    """A number given as text (``-e name=0.25``) as a float; anything else as it is."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


_CALLS: dict[str, int] = {}  # run_id_key: calls of this worker process so far, by key


def run_id_key(task_uuid: str, task_vars: Mapping[str, Any]) -> str:
    """What names a shared run id: the task, its loop item, and the how-manieth call this is.

    Each host runs a task (all its loop items, every until/retries attempt) in one worker
    process. A loop item is told by its value (the same on every host for a plain loop, so the
    hosts share its id) and by how often this worker has seen that value (a list may repeat
    one); a retry is a new call, so it gets a new run. Without a loop the key is the task uuid.
    """
    key = task_uuid
    loop_var = task_vars.get("ansible_loop_var")
    if isinstance(loop_var, str) and loop_var in task_vars:
        item = json.dumps(task_vars[loop_var], sort_keys=True, default=str)
        key += "-" + hashlib.sha256(item.encode("utf-8")).hexdigest()[:12]
    seen = _CALLS.get(key, 0)
    _CALLS[key] = seen + 1
    return key if seen == 0 else "%s-%d" % (key, seen)


def _utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class ActionModule(AgentCalls, ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    # ------------------------------------------------------------------------------ run
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        del tmp
        task_vars = task_vars or {}
        result = super().run(task_vars=task_vars)
        merged, unknown = options_from_vars(self._task.args, task_vars, self._templar.template)
        if unknown:
            raise AnsibleActionFail(
                "unknown hetero_run option variable(s): %s. Every option of "
                "heteromig.fleet.hetero_run can be set as heteromig_hetero_<option>; see "
                "ansible-doc heteromig.fleet.hetero_run" % ", ".join(unknown)
            )
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(merged)
        if validation.error_messages:
            raise AnsibleActionFail("hetero_run: %s" % "; ".join(validation.error_messages))
        args = validation.validated_parameters
        if args["run_id"] is not None:
            problem = name_problem(args["run_id"], "run_id")
            if problem:
                raise AnsibleActionFail("hetero_run: %s" % problem)
        self._host = task_vars.get("inventory_hostname") or self._task.get_name()
        host = self._host
        templar = self._templar
        host_root = args["host_root"] or host_var(templar, task_vars, "heteromig_host_root")
        host_root = str(host_root or "/var/lib/heteromig")
        if not os.path.isabs(host_root):
            raise AnsibleActionFail(
                "host_root must be an absolute path on the host, got %r" % host_root
            )
        pythonpath = (
            args["host_pythonpath"]
            or host_var(templar, task_vars, "heteromig_host_pythonpath")
            or runtime_paths(host_root).lib
        )
        results_root = args["results_dir"] or host_var(templar, task_vars, "heteromig_results_dir")
        results_root = os.path.abspath(os.path.expanduser(str(results_root or "results")))
        backend = {
            "name": args["backend"]
            or host_var(templar, task_vars, "heteromig_gpu_backend")
            or "nvml",
            "sim_state": args["sim_state"] or host_var(templar, task_vars, "heteromig_sim_state"),
        }
        if backend["name"] not in ("nvml", "sim"):
            raise AnsibleActionFail("backend must be nvml or sim, got %r" % backend["name"])
        self._pythonpath = str(pythonpath)
        self._host_root = host_root
        self._task_vars = task_vars

        if args["resume"]:
            return self._resume(args, result, results_root)

        run_id = args["run_id"] or self._shared_run_id(results_root, task_vars)
        slices = args["slices"]
        if slices is None:
            slices = host_var(templar, task_vars, "heteromig_mig_devices")
        gpus = (
            args["gpus"]
            if args["gpus"] is not None
            else host_var(templar, task_vars, "heteromig_gpus")
        )
        if slices is None and not gpus:
            raise AnsibleActionFail(
                "no MIG slices known for %s: run heteromig.fleet.gpu_facts first (it sets "
                "heteromig_mig_devices), or pass slices" % host
            )
        try:
            plan = build_plan(
                args,
                host=host,
                devices=slices,
                gpus=gpus,
                python=host_python(templar, task_vars),
                host_root=host_root,
                host_pythonpath=str(pythonpath),
                backend=backend,
                run_id=run_id,
            )
            # the runner's GPU activity sampling (module_utils.nvml._gpu_activity checks the range)
            interval, problem = interval_from_plan({PLAN_KEY: _number(args[PLAN_KEY])})
            if problem:
                raise PlanError(problem)
            plan[PLAN_KEY] = interval
        except PlanError as exc:
            raise AnsibleActionFail(str(exc)) from None
        results_dir = os.path.join(results_root, run_id, host)
        if args["fetch"] and not self._task.check_mode:
            problem = results_dir_problem(results_root)
            if problem:
                raise AnsibleActionFail(
                    "hetero_run on %s: %s. Nothing was started; set results_dir (or "
                    "heteromig_results_dir) to a writable directory" % (host, problem)
                )
        if plan["shared_gpu"]:
            display.warning(
                "hetero_run on %s: SHARED GPU mode: every benchmark runs on the whole GPU %s "
                "without MIG isolation; the results are not MIG results"
                % (host, plan["gpu"]["uuid"])
            )

        if self._task.check_mode:
            result.update(contract_result(plan, None, results_dir, dry_run=True))
            result["changed"] = True
            result["plan"] = plan
            return result

        start_args: dict[str, Any] = {
            "command": "start",
            "host_root": host_root,
            "plan": plan,
            "pythonpath": str(pythonpath),
        }
        if not args["wait"]:
            start_args["lease"] = detached_lease_s(plan)
        start = self._call(start_args, task_vars)
        if start.get("failed"):
            raise AnsibleActionFail("%s: %s" % (host, start.get("msg")))
        display.display(
            "hetero_run [%s] run %s started: main %s (%s) on %s, %d background(s)"
            % (
                host,
                run_id,
                plan["benchmarks"][0]["benchmark"],
                plan["benchmarks"][0]["scenario"],
                plan["benchmarks"][0]["slice"]["uuid"],
                len(plan["benchmarks"]) - 1,
            )
        )
        if not args["wait"]:
            # No verdict here: the task that watches it (resume: true) returns the result.
            result.update(
                changed=True,
                run_id=run_id,
                hetero_run_started={
                    "run_id": run_id,
                    "host": host,
                    "lease_s": start_args["lease"],
                    "expected_duration_s": plan["expected_duration_s"],
                    "results_dir": results_dir,
                },
                msg="run %s started on %s; watch it with resume: true within %.0f s"
                % (run_id, host, start_args["lease"]),
            )
            return result
        try:
            status, last = self._watch(
                run_id, start.get("status") or {}, plan["lease_s"], args, task_vars
            )
        except ConnectionLost as exc:
            return self._conclude(result, plan, None, results_dir, args, str(exc))
        return self._finish(result, plan, status, last, run_id, results_dir, args, task_vars)

    # -------------------------------------------------------------------------- helpers
    def _shared_run_id(self, results_root: str, task_vars: Mapping[str, Any]) -> str:
        """One run id for every host of this task (and loop item) in this playbook run.

        The task's uuid is the same in every worker; the first worker to get here writes the
        id into ``<results_dir>/.run-ids/<key>`` (``run_id_key``), the others read it.
        """
        task_uuid = str(getattr(self._task, "_uuid", "") or secrets.token_hex(8))
        key = run_id_key(task_uuid, task_vars)
        directory = os.path.join(results_root, ".run-ids")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, key)
        candidate = run_id_for(key + secrets.token_hex(4), _utc_stamp())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), open(path, encoding="utf-8") as handle:
                    text = handle.read().strip()
                    if text:
                        return text
                time.sleep(0.01)
            raise AnsibleActionFail("cannot agree on a run id through %s" % path) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(candidate + "\n")
        return candidate

    def _call(self, module_args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        """One agent command on the host (``_agent_transport``); AnsibleConnectionFailure when
        the host is unreachable or the answer was cut."""
        return self._agent_call(
            module_args, task_vars, host_python(self._templar, task_vars), self._pythonpath
        )

    def _progress(self, status: Mapping[str, Any]) -> str:
        benches = status.get("benchmarks") or {}
        bgs = sorted(n for n in benches if n != "main")
        ready = [n for n in bgs if benches[n].get("ready")]
        failed = [n for n in bgs if benches[n].get("failed")]
        main = benches.get("main") or {}
        elapsed = float(status.get("elapsed_s") or 0.0)
        expected = status.get("expected_duration_s")
        parts = [
            "hetero_run [%s] %s" % (self._host, status.get("phase")),
            "%.1f/%s s" % (elapsed, "%.1f" % expected if expected else "?"),
        ]
        if bgs:
            parts.append(
                "backgrounds ready %d/%d%s"
                % (len(ready), len(bgs), (" (failed: %s)" % ", ".join(failed)) if failed else "")
            )
        main_state = main.get("state", "pending")
        if main.get("ready"):
            main_state = "timed phase"
        parts.append("main: %s" % main_state)
        return " | ".join(parts)

    def _watch(
        self,
        run_id: str,
        status: dict[str, Any],
        lease_s: float,
        args: Mapping[str, Any],
        task_vars: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Long-poll the runner until the run is done; retry through connection trouble.

        Returns the last status and the last module answer (with the inline archive, if any).
        """
        wait = max(0.2, min(args["poll_interval"] / 1000.0, lease_s / 3.0))
        reconnect = args["reconnect_timeout"] / 1000.0
        last_ok = time.monotonic()
        last_line = ""
        last_print = 0.0
        failures = 0
        warned_lease = False
        res: dict[str, Any] = {}
        while True:
            if status.get("phase") == "lost" or (status and status.get("runner_alive") is False):
                return status, res
            if status.get("done") and (
                res.get("archive") or res.get("collect_error") or not args["fetch"]
            ):
                return status, res
            try:
                res = self._call(
                    {
                        "command": "status",
                        "host_root": self._host_root,
                        "run_id": run_id,
                        "since_change": status.get("change"),
                        "wait": wait,
                        "lease": lease_s,
                        "collect": bool(args["fetch"]),
                    },
                    task_vars,
                )
            except (AnsibleConnectionFailure, OSError) as exc:
                failures += 1
                silent = time.monotonic() - last_ok
                if silent > lease_s + reconnect:
                    raise ConnectionLost(
                        "lost the connection to %s for %.0f s (lease %.0f s + reconnect_timeout "
                        "%.0f s): %s. The runner on %s stops the run once the lease expires; "
                        "what it leaves stays in %s on the host (hetero_run with resume: true "
                        "and run_id: %s fetches it)"
                        % (
                            self._host,
                            silent,
                            lease_s,
                            reconnect,
                            _first_line(str(exc)),
                            self._host,
                            self._run_path(run_id),
                            run_id,
                        )
                    ) from None
                if failures == 1:
                    display.warning(
                        "hetero_run [%s] status poll failed (%s); retrying until the lease "
                        "(%.0f s) would expire"
                        % (self._host, str(exc).splitlines()[0][:200], lease_s)
                    )
                if silent > lease_s and not warned_lease:
                    warned_lease = True
                    display.warning(
                        "hetero_run [%s] the lease has expired: the runner stops the benchmarks; "
                        "still trying to re-attach and fetch the results" % self._host
                    )
                with contextlib.suppress(Exception):
                    self._connection.reset()
                time.sleep(min(2.0, 0.25 * failures))
                continue
            if res.get("failed"):
                raise AnsibleActionFail(
                    "%s: status of run %s: %s" % (self._host, run_id, res.get("msg"))
                )
            if failures:
                display.display("hetero_run [%s] re-attached to run %s" % (self._host, run_id))
            failures = 0
            last_ok = time.monotonic()
            status = res.get("status") or {}
            line = self._progress(status)
            key = line.split(" | ", 1)[0] + line.split(" | ", 2)[-1]
            now = time.monotonic()
            if key != last_line or now - last_print > PROGRESS_EVERY:
                display.display(line)
                last_line, last_print = key, now

    def _resume(
        self, args: Mapping[str, Any], result: dict[str, Any], results_root: str
    ) -> dict[str, Any]:
        task_vars = self._task_vars
        res, plan = self._attach(args, task_vars)
        run_id = res["run_id"]
        plan_status = res.get("status") or {}
        display.display(
            "hetero_run [%s] re-attached to run %s (%s)"
            % (self._host, run_id, plan_status.get("phase"))
        )
        if self._task.check_mode:
            result.update(
                contract_result(
                    plan,
                    plan_status.get("result"),
                    os.path.join(results_root, run_id, self._host),
                    dry_run=False,
                )
            )
            return result
        results_dir = os.path.join(results_root, run_id, self._host)
        try:
            status, last = self._watch(
                run_id, plan_status, float(plan.get("lease_s") or 60), args, task_vars
            )
        except ConnectionLost as exc:
            return self._conclude(result, plan, None, results_dir, args, str(exc))
        return self._finish(result, plan, status, last, run_id, results_dir, args, task_vars)

    def _attach(
        self, args: Mapping[str, Any], task_vars: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run's status and plan, read from the host; a dropped connection is retried.

        The watch of a run started with wait=false begins here, so a host that is briefly
        unreachable gets the same patience as during the watch: lease_timeout plus
        reconnect_timeout.
        """
        budget = (args["lease_timeout"] + args["reconnect_timeout"]) / 1000.0
        first_try = time.monotonic()
        failures = 0
        while True:
            try:
                res = self._call(
                    {"command": "status", "host_root": self._host_root, "run_id": args["run_id"]},
                    task_vars,
                )
                if res.get("failed"):
                    raise AnsibleActionFail("resume on %s: %s" % (self._host, res.get("msg")))
                return res, self._remote_plan(res["run_id"], task_vars)
            except (AnsibleConnectionFailure, OSError) as exc:
                failures += 1
                if time.monotonic() - first_try > budget:
                    raise AnsibleActionFail(
                        "cannot reach %s to re-attach to run %s for %.0f s (lease_timeout + "
                        "reconnect_timeout): %s. The run's results stay in %s on the host; "
                        "hetero_run with resume: true and run_id: %s fetches them later"
                        % (
                            self._host,
                            args["run_id"],
                            budget,
                            _first_line(str(exc)),
                            self._run_path(str(args["run_id"])),
                            args["run_id"],
                        )
                    ) from None
                if failures == 1:
                    display.warning(
                        "hetero_run [%s] cannot re-attach yet (%s); retrying for up to %.0f s"
                        % (self._host, _first_line(str(exc), 200), budget)
                    )
                with contextlib.suppress(Exception):
                    self._connection.reset()
                time.sleep(min(2.0, 0.25 * failures))

    def _remote_plan(self, run_id: str, task_vars: dict[str, Any]) -> dict[str, Any]:
        """The run's plan.json, read back from the host (for resume)."""
        path = os.path.join(self._host_root, "runs", run_id, "plan.json")
        with tempfile.TemporaryDirectory(prefix="heteromig-plan-") as tmpdir:
            local = os.path.join(tmpdir, "plan.json")
            try:
                self._connection.fetch_file(path, local)
                with open(local, encoding="utf-8") as handle:
                    return json.load(handle)
            except AnsibleConnectionFailure:
                raise  # the caller retries a dropped connection
            except (AnsibleError, OSError, ValueError) as exc:
                raise AnsibleActionFail(
                    "cannot read %s from %s: %s" % (path, self._host, exc)
                ) from None

    def _fetch(
        self, run_id: str, results_dir: str, last: Mapping[str, Any], task_vars: dict[str, Any]
    ) -> list[str]:
        """Bring the run's archive to the controller: inline in the last status answer, else one
        fetch of the archive the status (or a collect call) packed."""
        res: Mapping[str, Any] = last
        if not res.get("archive") or res.get("collect_error"):
            res = self._call(
                {"command": "collect", "host_root": self._host_root, "run_id": run_id}, task_vars
            )
            if res.get("failed"):
                raise AnsibleActionFail(
                    "%s: cannot pack the logs of run %s: %s" % (self._host, run_id, res.get("msg"))
                )
        os.makedirs(os.path.dirname(results_dir), exist_ok=True)
        # Unpacked beside its place and renamed in: a full or read-only disk leaves no half
        # results directory, and a re-fetch replaces the old one whole.
        staging = "%s.partial-%d" % (results_dir, os.getpid())
        try:
            with tempfile.TemporaryDirectory(prefix="heteromig-fetch-") as tmpdir:
                local = os.path.join(tmpdir, "results.tar.gz")
                if res.get("archive_b64"):
                    with open(local, "wb") as handle:
                        handle.write(base64.b64decode(res["archive_b64"]))
                else:
                    self._connection.fetch_file(res["archive"], local)
                os.makedirs(staging)
                extract_archive(local, staging)
            if os.path.isdir(results_dir):
                shutil.rmtree(results_dir)
            os.rename(staging, results_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return [f["path"] for f in res.get("files") or []]

    def _run_path(self, run_id: str) -> str:
        return os.path.join(self._host_root, "runs", run_id)

    def _finish(
        self,
        result: dict[str, Any],
        plan: dict[str, Any],
        status: dict[str, Any],
        last: Mapping[str, Any],
        run_id: str,
        results_dir: str,
        args: Mapping[str, Any],
        task_vars: dict[str, Any],
    ) -> dict[str, Any]:
        host_result = status.get("result")
        failure = None
        if status.get("phase") == "lost" or not host_result:
            host_result = None
            # hetero_runner ends what a dead runner left running, and says what it ended
            stopped = sorted(
                {
                    str(p.get("benchmark"))
                    for p in status.get("ended_processes") or []
                    if isinstance(p, Mapping) and p.get("benchmark") not in (None, "", "?")
                }
            )
            failure = lost_reason(self._host, run_id, self._run_path(run_id), status, stopped)
        fetched: list[str] = []
        fetch_error = None
        if args["fetch"]:
            for attempt in range(3):
                try:
                    fetched = self._fetch(
                        run_id, results_dir, last if attempt == 0 else {}, task_vars
                    )
                    fetch_error = None
                    break
                except (AnsibleConnectionFailure, AnsibleError, OSError) as exc:
                    fetch_error = _first_line(str(exc))
                    with contextlib.suppress(Exception):
                        self._connection.reset()
                    time.sleep(0.5 * (attempt + 1))
        if fetch_error and failure is None:
            failure = (
                "run %s on %s ended %s, but its results could not be fetched: %s. They stay on "
                "the host in %s; hetero_run with resume: true and run_id: %s fetches them again"
                % (
                    run_id,
                    self._host,
                    host_result.get("verdict") if host_result else "INVALID",
                    fetch_error,
                    self._run_path(run_id),
                    run_id,
                )
            )
        elif fetch_error:
            display.warning(
                "hetero_run [%s] could not fetch the logs: %s" % (self._host, fetch_error)
            )
        return self._conclude(result, plan, host_result, results_dir, args, failure, fetched)

    def _conclude(
        self,
        result: dict[str, Any],
        plan: dict[str, Any],
        host_result: Mapping[str, Any] | None,
        results_dir: str,
        args: Mapping[str, Any],
        failure: str | None,
        fetched: list[str] | None = None,
    ) -> dict[str, Any]:
        """The task's result: the contract, failed with ``failure`` (one reason) when set.

        Without a host result (the runner died, the host stayed unreachable) ``failure`` is the
        run's only reason; with one (a fetch that failed) the run's verdict and reasons stand and
        ``failure`` is the task's message.
        """
        contract = contract_result(plan, host_result, results_dir, dry_run=False)
        if failure and host_result is None:
            contract["reasons"] = [failure]
        contract["fetched_files"] = list(fetched or [])
        if args["fetch"]:
            try:
                write_json_atomic(os.path.join(results_dir, "result.json"), contract)
            except OSError as exc:
                if failure is None:
                    failure = (
                        "run %s on %s ended %s, but its result could not be written to %s: %s. "
                        "The results are safe on the host in %s; free the directory and run "
                        "hetero_run with resume: true and run_id: %s to fetch them again"
                        % (
                            contract["run_id"],
                            self._host,
                            contract["verdict"],
                            results_dir,
                            _first_line(str(exc)),
                            self._run_path(contract["run_id"]),
                            contract["run_id"],
                        )
                    )
        result.update(contract)
        result["changed"] = True
        main = contract["main"]
        metric = (main.get("loadgen") or {}).get("metric") or {}
        display.display(
            "hetero_run [%s] %s%s%s"
            % (
                self._host,
                contract["verdict"],
                " | main %s: %s %s" % (metric.get("name"), metric.get("value"), metric.get("unit"))
                if metric
                else "",
                (" | " + "; ".join(contract["reasons"])) if contract["reasons"] else "",
            )
        )
        if failure:
            result["failed"] = True
            result["msg"] = failure
        elif contract["verdict"] != "VALID" and args["fail_on_invalid"]:
            result["failed"] = True
            result["msg"] = "hetero run %s on %s is INVALID: %s" % (
                contract["run_id"],
                self._host,
                "; ".join(contract["reasons"]),
            )
        return result


def results_dir_problem(results_root: str) -> str | None:
    """Why the controller cannot keep results in ``results_root`` (None when it can)."""
    try:
        os.makedirs(results_root, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results_root, prefix=".heteromig-probe-") as probe:
            probe.write(b"x")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return "cannot write the results to %s: %s" % (results_root, _first_line(str(exc)))
    return None


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON through a temporary file and a rename: never a truncated file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ConnectionLost(Exception):
    """The host stayed unreachable for longer than lease + reconnect_timeout (the message)."""


def _first_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "no details"
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def _utc_text(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def lost_reason(
    host: str, run_id: str, run_path: str, status: Mapping[str, Any], stopped: list[str]
) -> str:
    """The one reason of a run whose runner is gone without a result.

    ``status`` is the runner's last status as the host reads it (``phase: lost``, with
    ``host_booted_at`` from hetero_runner): the host booted after the run started means a
    reboot ended it; otherwise the runner process died (killed). ``stopped`` names benchmarks
    the dead runner had left running, which the host then ended.
    """
    booted = status.get("host_booted_at")
    started = status.get("started_at")
    if isinstance(booted, (int, float)) and isinstance(started, (int, float)) and booted > started:
        why = (
            "%s rebooted during run %s (up since %s; the run started %s): every benchmark "
            "ended with it and the runner wrote no result"
            % (host, run_id, _utc_text(booted), _utc_text(started))
        )
    else:
        why = "the runner of run %s on %s%s died before the run finished and wrote no result" % (
            run_id,
            host,
            " (pid %s)" % status["pid"] if status.get("pid") else "",
        )
    if stopped:
        why += "; it left %s running, now stopped" % ", ".join(stopped)
    return why + " (its logs: %s/runner.log on the host)" % run_path


def extract_archive(archive: str, dest: str) -> None:
    """Unpack a results archive; members must stay inside ``dest`` (no links, no ``..``)."""
    dest_real = os.path.realpath(dest)
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(dest_real, member.name))
            if (
                not (member.isfile() or member.isdir())
                or os.path.isabs(member.name)
                or not (target == dest_real or target.startswith(dest_real + os.sep))
            ):
                raise AnsibleActionFail("refusing to unpack %r from %s" % (member.name, archive))
            members.append(member)
        for member in members:
            target = os.path.join(dest_real, member.name)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, open(target, "wb") as handle:
                shutil.copyfileobj(source, handle)
