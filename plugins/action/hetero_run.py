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

What needs no action instance lives in plugin_utils: the one table of options in
``_hetero_arg_spec`` (ARGUMENT_SPEC); the options, the host's settings and the plan in
``_hetero_options``; the lease, run id key, progress and verdict lines and the lost run's reason
in ``_hetero_watch``; the controller's results files (write check, result.json, archive
unpacking) in ``_hetero_results``.

Ansible may kill this worker on Ctrl-C without running ``finally`` blocks: nothing here needs to
run for the host to clean up. The runner stops every benchmark by itself once the lease is not
renewed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.heteromig.fleet.plugins.plugin_utils._agent_transport import (
    AgentCalls,
    host_python,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_contract import (
    contract_result,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_options import (
    host_settings,
    shared_gpu_warning,
    task_options,
    task_plan,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_plan import run_id_for
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_results import (
    extract_archive,
    install_results,
    results_dir_problem,
    write_result,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_watch import (
    PROGRESS_EVERY,
    ConnectionLost,
    detached_lease_s,
    ended_benchmarks,
    first_line,
    lost_reason,
    progress_line,
    run_id_key,
    task_failure,
    utc_stamp,
    verdict_line,
)

display = Display()


class ActionModule(AgentCalls, ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    # ------------------------------------------------------------------------------ run
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        del tmp
        task_vars = task_vars or {}
        result = super().run(task_vars=task_vars)
        args = task_options(self._task.args, task_vars, self._templar.template)
        self._host = task_vars.get("inventory_hostname") or self._task.get_name()
        host = self._host
        settings = host_settings(args, self._templar, task_vars)
        host_root = settings.host_root
        pythonpath = settings.pythonpath
        results_root = settings.results_root
        self._pythonpath = pythonpath
        self._host_root = host_root
        self._task_vars = task_vars

        if args["resume"]:
            return self._resume(args, result, results_root)

        run_id = args["run_id"] or self._shared_run_id(results_root, task_vars)
        plan = task_plan(args, host, run_id, settings, self._templar, task_vars)
        results_dir = os.path.join(results_root, run_id, host)
        if args["fetch"] and not self._task.check_mode:
            problem = results_dir_problem(results_root)
            if problem:
                raise AnsibleActionFail(
                    "hetero_run on %s: %s. Nothing was started; set results_dir (or "
                    "heteromig_results_dir) to a writable directory" % (host, problem)
                )
        warning = shared_gpu_warning(host, plan)
        if warning:
            display.warning(warning)

        if self._task.check_mode:
            result.update(contract_result(plan, None, results_dir, dry_run=True))
            result["changed"] = True
            result["plan"] = plan
            return result

        start_args: dict[str, Any] = {
            "command": "start",
            "host_root": host_root,
            "plan": plan,
            "pythonpath": pythonpath,
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
        candidate = run_id_for(key + secrets.token_hex(4), utc_stamp())
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
                            first_line(str(exc)),
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
            line = progress_line(self._host, status)
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
                            first_line(str(exc)),
                            self._run_path(str(args["run_id"])),
                            args["run_id"],
                        )
                    ) from None
                if failures == 1:
                    display.warning(
                        "hetero_run [%s] cannot re-attach yet (%s); retrying for up to %.0f s"
                        % (self._host, first_line(str(exc), 200), budget)
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
            install_results(staging, results_dir)
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
            stopped = ended_benchmarks(status)
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
                    fetch_error = first_line(str(exc))
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
                write_result(results_dir, contract)
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
                            first_line(str(exc)),
                            self._run_path(contract["run_id"]),
                            contract["run_id"],
                        )
                    )
        result.update(contract)
        result["changed"] = True
        display.display(verdict_line(self._host, contract))
        message = task_failure(self._host, contract, failure, args["fail_on_invalid"])
        if message:
            result["failed"] = True
            result["msg"] = message
        return result
