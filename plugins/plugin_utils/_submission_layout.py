# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hetero_run results in the MLPerf Inference submission layout (v5.0 / v5.1), controller only.

Layout (under ``<root> = <dest>/<division>/<submitter>``)::

    systems/<system>.json
    results/<system>/<benchmark>/<Scenario>/performance/run_1/mlperf_log_{summary,detail}.txt
    results/<system>/<benchmark>/<Scenario>/accuracy/{mlperf_log_summary.txt,
        mlperf_log_detail.txt, mlperf_log_accuracy.json, accuracy.txt}
    compliance/<system>/<benchmark>/<Scenario>/TEST01/{verify_accuracy.txt, verify_performance.txt,
        performance/run_1/..., accuracy/{baseline_accuracy.txt, compliance_accuracy.txt,
        mlperf_log_accuracy.json}}
    compliance/<system>/<benchmark>/<Scenario>/TEST04/{verify_performance.txt, performance/run_1/...}
    measurements/<system>/<benchmark>/<Scenario>/{README.md, user.conf,
        <system>_<implementation>_<Scenario>.json}

A heterogeneous run is filed as a one-slice system named
``<platform>_<accelerator>-MIG_1x<profile>_<software>_HeteroMultiUse``, e.g.
``DGX-A100_A100-SXM-80GB-MIG_1x1g.10gb_TRT_HeteroMultiUse``.

Which slot a result fills follows its main benchmark's ``action`` and the LoadGen test mode of
its logs: ``run_harness`` in PerformanceOnly -> performance/run_1, in AccuracyOnly -> accuracy/,
``run_audit_test01``/``run_audit_test04`` -> compliance TEST01/TEST04. Only LoadGen's own files
(and what the harness or the compliance scripts left next to them: accuracy.txt,
verify_*.txt, baseline/compliance_accuracy.txt, user.conf) are copied; nothing is invented.

:func:`plan_export` is pure (it gets each log directory's file list and LoadGen keys from the
caller); :func:`inspect_log_dir`, :func:`apply_plan` and :func:`check_layout` do the I/O.
:func:`check_layout` checks an exported tree the way the MLPerf submission checker does: the
file sets, result_validity VALID, no LoadGen errors, the 600 s minimum duration, "TEST PASS" in
the compliance verifications, and the system description's required fields.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._system_desc import (
    REQUIRED_FIELDS,
    SystemDesc,
    check_desc,
    compare_hosts,
    describe,
    host_fields,
)

HETERO_SUFFIX = "_HeteroMultiUse"
LAYOUT_VERSIONS = ("v5.0", "v5.1")
SCENARIOS = {
    "offline": "Offline",
    "server": "Server",
    "singlestream": "SingleStream",
    "multistream": "MultiStream",
}
SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
ACC_JSON = "mlperf_log_accuracy.json"
PERF_FILES = (SUMMARY, DETAIL)
PERF_OPTIONAL = (ACC_JSON,)
ACC_FILES = (SUMMARY, DETAIL, ACC_JSON, "accuracy.txt")
TEST01_ACC_FILES = ("baseline_accuracy.txt", "compliance_accuracy.txt", ACC_JSON)
COMPLIANCE_TESTS = {"run_audit_test01": "TEST01", "run_audit_test04": "TEST04"}
MIN_DURATION_MS = 600000
# the submission checker's SYSTEM_DESC_REQUIRED_FIELDS (v5.x); the rules are in _system_desc
SYSTEM_REQUIRED = REQUIRED_FIELDS
# the checker's SYSTEM_IMP_REQUIRED_FILES: fields of measurements/.../<system>_<impl>_<Scenario>.json
IMPLEMENTATION_REQUIRED = (
    "input_data_types",
    "retraining",
    "starting_weights_filename",
    "weight_data_types",
    "weight_transformations",
)

_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(text: str) -> str:
    """A path component: anything but ``A-Za-z0-9._+-`` becomes ``-``; never empty or dots."""
    name = _SAFE.sub("-", str(text)).strip("-")
    return name if name and set(name) != {"."} else "unnamed"


def scenario_dir(scenario: str) -> str:
    """``offline`` / ``Offline`` -> ``Offline``; unknown scenarios raise ValueError."""
    try:
        return SCENARIOS[str(scenario).replace("_", "").replace("-", "").lower()]
    except KeyError:
        raise ValueError(
            "unknown LoadGen scenario %r (expected one of %s)"
            % (scenario, ", ".join(SCENARIOS.values()))
        ) from None


def accelerator_name(gpu: Mapping[str, Any]) -> str:
    """``A100-SXM-80GB`` style name of the GPU: the contract's model, else its NVML name."""
    model = str(gpu.get("model") or "").strip()
    if not model:
        model = str(gpu.get("name") or "GPU").replace("NVIDIA", "").strip()
    return safe_name(model.replace(" ", "-"))


def system_name(platform: str, gpu: Mapping[str, Any], profile: str, software: str) -> str:
    """``<platform>_<accelerator>-MIG_1x<profile>_<software>_HeteroMultiUse``."""
    return "%s_%s-MIG_1x%s_%s%s" % (
        safe_name(platform),
        accelerator_name(gpu),
        safe_name(profile),
        safe_name(software),
        HETERO_SUFFIX,
    )


def default_software(harness: str | None) -> str:
    return {"nvidia_mlperf": "TRT", "heteromig_synthetic": "Synthetic"}.get(
        str(harness), safe_name(harness or "Custom")
    )


def profile_memory(profile: str) -> str | None:
    """``1g.10gb`` -> ``10 GB`` (the slice's memory, for accelerator_memory_capacity)."""
    match = re.search(r"\.(\d+)gb", profile or "")
    return "%s GB" % match.group(1) if match else None


# ------------------------------------------------------------------------------ planning


@dataclass
class LogDirInfo:
    """What :func:`plan_export` needs to know about a log directory."""

    files: Sequence[str]
    test_mode: str | None = None  # LoadGen effective_test_mode
    result_validity: str | None = None


@dataclass
class Plan:
    root: str  # <division>/<submitter>, relative to dest
    copies: list[tuple[str, str]] = field(default_factory=list)  # (source path, dest rel. path)
    writes: dict[str, str] = field(default_factory=dict)  # dest rel. path -> text
    exported: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    systems: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> systems/<name>.json
    # name -> where each field came from, the meaningful fields nobody could fill, and the
    # fields on which the hosts of the system disagree
    system_info: dict[str, dict[str, Any]] = field(default_factory=dict)


def _slot(action: str, mode: str | None) -> str | None:
    if action in COMPLIANCE_TESTS:
        return COMPLIANCE_TESTS[action]
    if action in ("run_harness", "", None):
        if mode == "AccuracyOnly":
            return "accuracy"
        if mode in (None, "PerformanceOnly", "SubmissionRun"):
            return "performance"
    return None


def _readme(result: Mapping[str, Any], system: str, benchmark: str, scenario: str) -> str:
    main = result.get("main") or {}
    lines = [
        "# %s %s on %s" % (benchmark, scenario, system),
        "",
        "Heterogeneous MIG run %s on host %s (harness %s)."
        % (result.get("run_id"), result.get("host"), result.get("harness")),
        "",
        "The main benchmark ran on slice %s (%s) of %s while these background benchmarks "
        "ran on the other slices:"
        % (
            (main.get("slice") or {}).get("profile"),
            (main.get("slice") or {}).get("uuid"),
            (result.get("gpu") or {}).get("name"),
        ),
        "",
    ]
    for bg in result.get("backgrounds") or []:
        sl = bg.get("slice") or {}
        lines.append(
            "- %s %s on %s (%s)"
            % (bg.get("benchmark"), bg.get("scenario"), sl.get("profile"), sl.get("uuid"))
        )
    lines += [
        "",
        "Main benchmark command:",
        "",
        "```",
        " ".join(str(a) for a in main.get("command") or []),
        "```",
        "",
    ]
    return "\n".join(lines)


def _facts_of(host_facts: Mapping[str, Mapping[str, Any]], host: Any) -> Mapping[str, Any]:
    facts = host_facts.get(str(host)) or {}
    return facts if isinstance(facts, Mapping) else {}


def _describe_system(
    plan: Plan,
    system: str,
    result: Mapping[str, Any],
    *,
    division: str,
    submitter: str,
    profile: str,
    host_facts: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Any],
) -> None:
    """Describe ``system`` from the first of its results whose host has facts; note the hosts
    that disagree with it."""
    host = str(result.get("host"))
    facts = _facts_of(host_facts, host)
    info = plan.system_info.get(system)
    has_facts = bool(facts.get("heteromig_host") or facts.get("heteromig_nvml"))
    if info is not None and (info["host"] is not None or not has_facts):
        first = info["host"]
        if has_facts and first is not None and host != first:
            harness = result.get("harness")
            mine = host_fields(
                facts.get("heteromig_host") or {}, facts.get("heteromig_nvml") or {}, harness
            )
            theirs = host_fields(
                _facts_of(host_facts, first).get("heteromig_host") or {},
                _facts_of(host_facts, first).get("heteromig_nvml") or {},
                harness,
            )
            for line in compare_hosts(first, theirs, host, mine):
                if line not in info["conflicts"]:
                    info["conflicts"].append(line)
        return
    gpu = dict(result.get("gpu") or {})
    for known in facts.get("heteromig_gpus") or []:
        if isinstance(known, Mapping) and gpu.get("uuid") and known.get("uuid") == gpu["uuid"]:
            gpu.setdefault("pci_bus_id", known.get("pci_bus_id"))
    desc: SystemDesc = describe(
        system,
        division=division,
        submitter=submitter,
        gpu=gpu,
        profile=profile,
        accelerator_memory=profile_memory(profile),
        harness=result.get("harness"),
        host=facts.get("heteromig_host") if has_facts else None,
        nvml=facts.get("heteromig_nvml") if has_facts else None,
        overrides=overrides,
    )
    plan.systems[system] = desc.fields
    plan.system_info[system] = {
        "host": host if has_facts else None,
        "sources": desc.sources,
        "unknown": desc.unknown,
        "conflicts": list(desc.conflicts),
    }


def plan_export(
    results: Iterable[Mapping[str, Any]],
    *,
    submitter: str,
    platform: str,
    inspect: Callable[[str], LogDirInfo],
    division: str = "closed",
    software: str | None = None,
    system_desc: Mapping[str, Any] | None = None,
    implementation: str | None = None,
    implementation_desc: Mapping[str, Any] | None = None,
    only_valid: bool = True,
    host_facts: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """What goes where. ``inspect(path)`` describes a log directory (see :func:`inspect_log_dir`).

    ``host_facts`` maps a result's host to its facts (``heteromig_host`` from host_facts,
    ``heteromig_nvml`` and ``heteromig_gpus`` from gpu_facts); the system description takes the host fields from the
    first exported host of the system that has them (see _system_desc.describe).

    Skipped (with the reason): results that are not VALID (with ``only_valid``), runs without
    backgrounds (not heterogeneous), results without logs, and a result whose slot another
    result already fills (the first one in input order wins).
    """
    if division not in ("closed", "open"):
        raise ValueError("division must be closed or open, not %r" % division)
    root = "%s/%s" % (division, safe_name(submitter))
    plan = Plan(root=root)
    filled: dict[str, str] = {}
    for result in results:
        main = result.get("main") or {}
        who = {
            "host": result.get("host"),
            "run_id": result.get("run_id"),
            "benchmark": main.get("benchmark"),
            "action": main.get("action"),
        }
        if only_valid and result.get("verdict") != "VALID":
            plan.skipped.append(
                {
                    **who,
                    "reason": "verdict %s: %s"
                    % (result.get("verdict"), "; ".join(result.get("reasons") or []) or "-"),
                }
            )
            continue
        if not result.get("backgrounds"):
            plan.skipped.append(
                {**who, "reason": "not a heterogeneous run (no background benchmarks)"}
            )
            continue
        source = main.get("fetched_dir")
        if not source:
            plan.skipped.append(
                {**who, "reason": "no fetched_dir: the LoadGen logs never reached the controller"}
            )
            continue
        try:
            scenario = scenario_dir(str(main.get("scenario")))
        except ValueError as exc:
            plan.skipped.append({**who, "reason": str(exc)})
            continue
        info = inspect(str(source))
        slot = _slot(str(main.get("action") or ""), info.test_mode)
        if slot is None:
            plan.skipped.append(
                {
                    **who,
                    "reason": "no submission slot for action %r in LoadGen mode %r"
                    % (main.get("action"), info.test_mode),
                }
            )
            continue
        profile = str((main.get("slice") or {}).get("profile") or "unknown")
        gpu = result.get("gpu") or {}
        system = system_name(
            platform, gpu, profile, software or default_software(result.get("harness"))
        )
        bench = safe_name(str(main.get("benchmark")))
        key = "%s/%s/%s/%s" % (system, bench, scenario, slot)
        if key in filled:
            plan.skipped.append(
                {**who, "reason": "%s is already filled by %s" % (key, filled[key])}
            )
            continue
        base = "%s/%s/%s" % (system, bench, scenario)
        files = set(info.files)
        wanted: list[tuple[str, str]] = []  # (file name in the log dir, dest rel. path)
        if slot == "performance":
            for name in PERF_FILES:
                wanted.append((name, "results/%s/performance/run_1/%s" % (base, name)))
        elif slot == "accuracy":
            for name in ACC_FILES:
                wanted.append((name, "results/%s/accuracy/%s" % (base, name)))
        else:
            test = "compliance/%s/%s" % (base, slot)
            for name in PERF_FILES:
                wanted.append((name, "%s/performance/run_1/%s" % (test, name)))
            wanted.append(("verify_performance.txt", "%s/verify_performance.txt" % test))
            if slot == "TEST01":
                wanted.append(("verify_accuracy.txt", "%s/verify_accuracy.txt" % test))
                for name in TEST01_ACC_FILES:
                    wanted.append((name, "%s/accuracy/%s" % (test, name)))
        missing = [name for name, _dest in wanted if name not in files]
        for name, dest in wanted:
            if name in files:
                plan.copies.append((os.path.join(str(source), name), "%s/%s" % (root, dest)))
        filled[key] = "%s (run %s)" % (result.get("host"), result.get("run_id"))
        if slot == "performance":
            measure = "%s/measurements/%s" % (root, base)
            plan.writes["%s/README.md" % measure] = _readme(result, system, bench, scenario)
            impl = safe_name(implementation or str(result.get("harness") or "default"))
            plan.writes["%s/%s_%s_%s.json" % (measure, system, impl, scenario)] = (
                json.dumps(dict(implementation_desc or {}), indent=2, sort_keys=True) + "\n"
            )
            if "user.conf" in files:
                plan.copies.append(
                    (os.path.join(str(source), "user.conf"), "%s/user.conf" % measure)
                )
            else:
                missing.append("user.conf")
        _describe_system(
            plan,
            system,
            result,
            division=division,
            submitter=submitter,
            profile=profile,
            host_facts=host_facts or {},
            overrides=system_desc or {},
        )
        plan.exported.append(
            {
                **who,
                "system": system,
                "scenario": scenario,
                "slot": slot,
                "path": "%s/%s" % (root, base),
                "missing": missing,
            }
        )
    for system, desc in plan.systems.items():
        plan.writes["%s/systems/%s.json" % (root, system)] = (
            json.dumps(desc, indent=2, sort_keys=True) + "\n"
        )
    return plan


# ------------------------------------------------------------------------------ I/O


def read_mllog(path: str) -> tuple[dict[str, Any], int]:
    """(``{key: last value}``, number of error entries) of a LoadGen detail log."""
    values: dict[str, Any] = {}
    errors = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.startswith(":::MLLOG "):
                    continue
                try:
                    entry = json.loads(line[len(":::MLLOG ") :])
                except ValueError:
                    continue
                if not isinstance(entry, dict) or "key" not in entry:
                    continue
                values[str(entry["key"])] = entry.get("value")
                if (entry.get("metadata") or {}).get("is_error"):
                    errors += 1
    except OSError:
        pass
    return values, errors


def inspect_log_dir(path: str) -> LogDirInfo:
    try:
        files = sorted(
            name for name in os.listdir(path) if os.path.isfile(os.path.join(path, name))
        )
    except OSError:
        return LogDirInfo(files=[])
    values = read_mllog(os.path.join(path, DETAIL))[0]
    mode = values.get("effective_test_mode")
    return LogDirInfo(
        files=files,
        test_mode=str(mode) if mode else None,
        result_validity=values.get("result_validity"),
    )


def apply_plan(plan: Plan, dest: str, replace: bool = False) -> list[str]:
    """Create the tree under ``dest``; returns the paths written. With ``replace`` the
    ``<division>/<submitter>`` tree is removed first (else files are overwritten in place)."""
    root = os.path.join(dest, plan.root)
    if replace and os.path.isdir(root):
        shutil.rmtree(root)
    written = []
    for source, rel in plan.copies:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target)
    for rel, text in plan.writes.items():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
        written.append(target)
    return written


def _listing(path: str) -> set[str]:
    try:
        return {n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n))}
    except OSError:
        return set()


def _dirs(path: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))
    except OSError:
        return []


def _file_set(
    problems: list[dict[str, str]], path: str, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    have = _listing(path)
    if not os.path.isdir(path):
        problems.append({"severity": "error", "path": path, "message": "directory missing"})
        return
    missing = sorted(set(required) - have)
    extra = sorted(have - set(required) - set(optional))
    if missing:
        problems.append(
            {"severity": "error", "path": path, "message": "missing files: %s" % ", ".join(missing)}
        )
    if extra:
        problems.append(
            {
                "severity": "error",
                "path": path,
                "message": "unexpected files: %s" % ", ".join(extra),
            }
        )


def _check_perf_log(
    problems: list[dict[str, str]], run_dir: str, min_duration: bool = True
) -> None:
    values, errors = read_mllog(os.path.join(run_dir, DETAIL))
    if not values:
        return  # reported as a missing file
    if values.get("result_validity") != "VALID":
        problems.append(
            {
                "severity": "error",
                "path": run_dir,
                "message": "result_validity is %s, not VALID" % values.get("result_validity"),
            }
        )
    if errors:
        problems.append(
            {"severity": "error", "path": run_dir, "message": "LoadGen logged %d error(s)" % errors}
        )
    duration = values.get("effective_min_duration_ms")
    if min_duration and isinstance(duration, (int, float)) and duration < MIN_DURATION_MS:
        problems.append(
            {
                "severity": "error",
                "path": run_dir,
                "message": "min_duration %d ms is below the required %d ms"
                % (duration, MIN_DURATION_MS),
            }
        )


def _check_pass(problems: list[dict[str, str]], path: str) -> None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            ok = "TEST PASS" in handle.read()
    except OSError:
        return  # reported as a missing file
    if not ok:
        problems.append({"severity": "error", "path": path, "message": "no TEST PASS"})


def check_layout(
    dest: str, division: str, submitter: str, required_tests: Sequence[str] = ("TEST01", "TEST04")
) -> list[dict[str, str]]:
    """Problems of the exported tree ``dest/<division>/<submitter>``, as the checker sees them."""
    root = os.path.join(dest, division, safe_name(submitter))
    problems: list[dict[str, str]] = []
    results = os.path.join(root, "results")
    systems = _dirs(results)
    if not systems:
        problems.append(
            {"severity": "error", "path": results, "message": "no systems under results/"}
        )
    for system in systems:
        if not system.endswith(HETERO_SUFFIX):
            problems.append(
                {
                    "severity": "warning",
                    "path": os.path.join(results, system),
                    "message": "system name lacks %s" % HETERO_SUFFIX,
                }
            )
        desc_path = os.path.join(root, "systems", system + ".json")
        try:
            with open(desc_path, encoding="utf-8") as handle:
                desc = json.load(handle)
        except (OSError, ValueError) as exc:
            problems.append(
                {
                    "severity": "error",
                    "path": desc_path,
                    "message": "system description unreadable: %s" % exc,
                }
            )
            desc = {}
        if desc:
            for severity, message in check_desc(desc, division, safe_name(submitter)):
                problems.append({"severity": severity, "path": desc_path, "message": message})
        for bench in _dirs(os.path.join(results, system)):
            for scenario in _dirs(os.path.join(results, system, bench)):
                where = os.path.join(results, system, bench, scenario)
                if scenario not in SCENARIOS.values():
                    problems.append(
                        {
                            "severity": "error",
                            "path": where,
                            "message": "not a LoadGen scenario name",
                        }
                    )
                    continue
                run_1 = os.path.join(where, "performance", "run_1")
                _file_set(problems, run_1, PERF_FILES, PERF_OPTIONAL)
                _check_perf_log(problems, run_1)
                _file_set(problems, os.path.join(where, "accuracy"), ACC_FILES)
                measure = os.path.join(root, "measurements", system, bench, scenario)
                have = _listing(measure)
                for name in ("README.md", "user.conf"):
                    if name not in have:
                        problems.append(
                            {"severity": "error", "path": measure, "message": "missing %s" % name}
                        )
                impl = [
                    n
                    for n in have
                    if n.startswith(system + "_") and n.endswith("_%s.json" % scenario)
                ]
                if not impl:
                    problems.append(
                        {
                            "severity": "error",
                            "path": measure,
                            "message": "missing %s_<implementation>_%s.json" % (system, scenario),
                        }
                    )
                for name in impl:
                    try:
                        with open(os.path.join(measure, name), encoding="utf-8") as handle:
                            fields = json.load(handle)
                    except (OSError, ValueError):
                        fields = {}
                    absent = [k for k in IMPLEMENTATION_REQUIRED if k not in fields]
                    if absent:
                        problems.append(
                            {
                                "severity": "error",
                                "path": os.path.join(measure, name),
                                "message": "fields missing: %s" % ", ".join(absent),
                            }
                        )
                comp = os.path.join(root, "compliance", system, bench, scenario)
                for test in required_tests:
                    test_dir = os.path.join(comp, test)
                    if not os.path.isdir(test_dir):
                        problems.append(
                            {
                                "severity": "error",
                                "path": test_dir,
                                "message": "compliance test directory missing",
                            }
                        )
                        continue
                    run = os.path.join(test_dir, "performance", "run_1")
                    _file_set(problems, run, PERF_FILES, PERF_OPTIONAL)
                    _check_perf_log(problems, run, min_duration=False)
                    names = ["verify_performance.txt"] + (
                        ["verify_accuracy.txt"] if test == "TEST01" else []
                    )
                    for name in names:
                        if not os.path.isfile(os.path.join(test_dir, name)):
                            problems.append(
                                {
                                    "severity": "error",
                                    "path": test_dir,
                                    "message": "missing %s (from the MLPerf compliance verification script)"
                                    % name,
                                }
                            )
                        else:
                            _check_pass(problems, os.path.join(test_dir, name))
                    if test == "TEST01":
                        _file_set(problems, os.path.join(test_dir, "accuracy"), TEST01_ACC_FILES)
    code = os.path.join(root, "code")
    if systems and not os.path.isdir(code):
        problems.append(
            {
                "severity": "warning",
                "path": code,
                "message": "no code/ directory: add the benchmark code",
            }
        )
    return problems
