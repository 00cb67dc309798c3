#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# This file only documents the action plugin plugins/action/hetero_run.py (ansible-doc reads
# modules; its options are plugins/plugin_utils/_hetero_options.py's ARGUMENT_SPEC); the work is
# done by that action plugin and, on each host, by hetero_runner.

from __future__ import annotations

DOCUMENTATION = r"""
module: hetero_run
short_description: Run the heterogeneous MIG workload (main benchmark on one slice, backgrounds
  on the others) on many hosts at once
version_added: 0.1.0
description:
  - On each host, runs a main MLPerf benchmark on one MIG slice while every other slice runs a
    background benchmark, and proves from timestamps that the backgrounds were in their timed
    phase for the whole of the main benchmark's timed window. The behaviour and options of
    NVIDIA's C(launch_heterogeneous_mig.py) are kept (same option names, all durations in
    milliseconds), on every host of the play at once.
  - "The choreography: launch the backgrounds (Offline, C(min_query_count=1), a min_duration
    longer than the main run, or O(background_benchmark_duration=automatic)); wait until each
    printed a readiness marker (O(readiness_regexes)); wait O(start_time_buffer); launch the main
    benchmark; when it exits, stop the backgrounds (SIGTERM to each process group, SIGKILL after
    O(stop_grace)) or, with a numeric O(background_benchmark_duration), wait for them and check
    that none finished within O(end_time_buffer_min) of the main's end."
  - "The verdict is C(VALID) only if the main benchmark exited 0, its LoadGen C(result_validity)
    is VALID (from C(mlperf_log_detail.txt), else C(mlperf_log_summary.txt)), every background
    was in its timed phase for the whole main timed window (LoadGen C(power_begin)/C(power_end)
    where present, else the readiness markers and exits), and no background failed. Otherwise it
    is C(INVALID) and RV(reasons) lists every reason."
  - "An O(main_mode=AccuracyOnly) run is judged by its accuracy check instead of LoadGen's
    validity (LoadGen writes none in accuracy mode): LoadGen ran in AccuracyOnly mode, the
    harness profile's C(accuracy) regexes found a PASS line (and no FAIL line) in its accuracy
    file or output, the main exited 0, and every background covered the main from its readiness
    marker to its exit."
  - LoadGen's C(power_begin)/C(power_end) are read as UTC, which is what LoadGen writes whatever
    the host's time zone is.
  - Every option can also be set as a host variable C(heteromig_hetero_<option>) (for example
    C(heteromig_hetero_main_mode)); an option given in the task wins. A C(heteromig_hetero_*)
    variable that names no option fails the task before anything runs.
  - The choreography runs on the host in a detached runner (module M(heteromig.fleet.hetero_runner))
    that survives a dropped SSH connection. The controller long-polls it (one call per
    status change), prints per-host progress, and renews a lease with every poll; when the lease
    expires (Ctrl-C at the controller, a crash, or a connection lost for longer than
    O(lease_timeout)), the runner stops every benchmark by itself and records why.
  - Each call to the host (start, status, stop) is the host agent's command run from the installed
    host runtime over the connection, with its request on stdin, where the connection can feed
    stdin under the play's become (as Ansible's pipelining needs); otherwise it is the
    M(heteromig.fleet.hetero_runner) module, which does the same thing but costs Python a
    recompile of its payload on every call. The host variable C(heteromig_agent_transport)
    (C(auto), C(direct) or C(module)) chooses; C(auto) is the default.
  - One hetero run per host at a time; a second one is refused with a message naming the running
    run. A run is refused when the MIG layout changed since the slices were read.
  - Each run's logs and LoadGen files are fetched to
    C(<results_dir>/<run_id>/<inventory_hostname>/<benchmark name>/), next to C(result.json).
  - Commands come from harness profiles (YAML, Jinja2 templates; see O(harness)). Values become
    separate arguments, or are quoted where a harness pastes them into a shell (the
    C(nvidia_mlperf) RUN_ARGS); nothing is spliced into a shell.
author:
  - heteromig developers (@heteromig)
requirements:
  - On the controller, Python >= 3.11 with Jinja2 and PyYAML (ansible-core's own dependencies).
  - On the host, Python >= 3.9 and the collection's host runtime under O(host_pythonpath)
    (role heteromig.fleet.host_runtime); for the C(heteromig_synthetic) harness, C(mlcommons-loadgen).
  - Facts from M(heteromig.fleet.gpu_facts) (or O(slices) from a mig_layout result).
attributes:
  action:
    support: full
    description: An action plugin with a host-side module (M(heteromig.fleet.hetero_runner)).
  check_mode:
    support: full
    description: A dry run. Returns the plan and every command with RV(verdict=DRY_RUN);
      launches nothing and changes nothing on the host.
  diff_mode:
    support: none
    description: Nothing to diff; the result describes the run.
  async:
    support: none
    description: The run already outlives the connection (detached runner and lease); do not
      use C(async).
options:
  harness:
    description:
      - The harness profile that renders every command. Built in are V(heteromig_synthetic) (the
        collection's LoadGen harness with synthetic models) and V(nvidia_mlperf) (NVIDIA's MLPerf
        code through C(make run_harness RUN_ARGS=... LOG_DIR=...) with the
        C(hetero)/C(hetero_high_accuracy) config_ver) and V(mlcommons_mlcflow) (MLCommons' official
        implementations through MLCFlow's C(mlcr run-mlperf,inference); models and datasets
        fetched beforehand, see docs/harness.md).
      - A profile is C(<name>.yml) in O(harness_profile_dirs) or in the collection's
        C(plugins/plugin_utils/harness_profiles/); see docs/hetero_run.md for the format.
    type: str
    default: heteromig_synthetic
  harness_profile_dirs:
    description: Directories searched first for user-defined harness profiles.
    type: list
    elements: path
    default: []
  harness_vars:
    description:
      - Extra variables for the profile's templates, as C(vars.<key>); for example C(workdir)
        (the closed/NVIDIA directory for V(nvidia_mlperf), default C(/work)) or C(engine_dir).
    type: dict
    default: {}
  main_benchmark:
    description:
      - The main benchmark (anchor C(--main_benchmark)). Must be a benchmark of the harness;
        defaults to the profile's default (V(synth-mlp-small), V(resnet50)).
    type: str
  main_scenario:
    description:
      - Scenario of the main benchmark (anchor C(--main_scenario)), case-insensitive. The main
        benchmark must support it.
      - V(Offline), V(Server), V(SingleStream) or V(MultiStream).
    type: str
    default: Offline
  main_action:
    description:
      - What the main benchmark runs (anchor C(--main_action)); V(run_harness) or an audit test
        the harness offers (V(run_audit_test01), V(run_audit_test04); V(run_audit_test05) with
        V(nvidia_mlperf)).
    type: str
    default: run_harness
  main_mode:
    description:
      - LoadGen test mode of the main benchmark. V(AccuracyOnly) needs a harness profile with an
        C(accuracy) section (both built-in profiles have one).
    type: str
    default: PerformanceOnly
    choices: [PerformanceOnly, AccuracyOnly]
  main_accuracy_target:
    description: V(high) selects the high-accuracy config_ver where the harness has one (bert).
    type: str
    default: default
    choices: [default, high]
  main_benchmark_duration:
    description: The main benchmark's min_duration in milliseconds (anchor default).
    type: int
    default: 600000
  main_benchmark_timeout:
    description:
      - Milliseconds from the main benchmark's launch after which a main still running stops the
        run, with one reason (it hung, or runs far longer than its min_duration).
      - Without it, a V(PerformanceOnly) main gets O(main_benchmark_duration) plus as much again,
        and at least 600000 ms more; an V(AccuracyOnly) main, which goes over the whole data set,
        only the run's own limit O(background_benchmark_timeout).
    type: int
  main_benchmark_runargs:
    description:
      - Extra arguments for the main benchmark (anchor C(--main_benchmark_runargs)), a list, or
        one string split like a shell would. Passed literally (shell metacharacters included).
    type: raw
  main_benchmark_cmd_prefix:
    description: A command put before the main benchmark's, e.g. V(nsys profile -o main)
      (anchor C(--main_benchmark_cmd_prefix)); a list or a string split like a shell would.
    type: raw
  main_min_query_count:
    description: min_query_count of the main benchmark (default the harness's own).
    type: int
  main_target_qps:
    description: Target QPS of the main benchmark (Server target, Offline expected QPS).
    type: float
  main_target_latency_ns:
    description: Target latency of the main benchmark in nanoseconds.
    type: int
  background_benchmarks:
    description:
      - The background benchmarks (anchor C(--background_benchmarks)). V(all), V(datacenter),
        V(edge) (sets from the harness profile), V(none), or a list (or comma-separated string)
        of benchmarks.
      - V(heteromig_synthetic) also has the set V(gpu), its GPU-bound models V(synth-resnet50)
        and V(synth-bert-large) (PyTorch with CUDA only); its other sets hold the numpy models.
      - A set is sorted, the main benchmark is dropped when the set is larger than the free
        slices, and it is cut to the free slices; with O(fill_slices) a smaller set repeats until
        every free slice has a background. A list is used as given; more backgrounds than free
        slices is refused.
    type: raw
    default: all
  background_benchmark_duration:
    description:
      - V(automatic) (anchor default) runs the backgrounds with min_duration
        O(background_benchmark_timeout) and stops them when the main benchmark ends.
      - A number of milliseconds lets them finish on their own; each must then finish at least
        O(end_time_buffer_min) after the main benchmark. It must be at least
        O(main_benchmark_duration) + O(start_time_buffer) + O(end_time_buffer_min).
    type: raw
    default: automatic
  background_benchmark_timeout:
    description: Limit of the whole run in milliseconds, and the backgrounds' min_duration in
      V(automatic) mode (anchor default, 2 hours).
    type: int
    default: 7200000
  background_target_qps:
    description: Offline expected QPS passed to every background.
    type: float
  background_runargs:
    description: Extra arguments for every background (list or shell-like string), passed literally.
    type: raw
  fill_slices:
    description: Repeat a background set that is smaller than the free slices so that every slice
      has a background (the anchor left such slices idle).
    type: bool
    default: true
  slices:
    description:
      - The host's MIG devices, as M(heteromig.fleet.gpu_facts) reports them
        (C(heteromig_mig_devices)), or a registered gpu_facts or mig_layout result.
      - Defaults to the host's C(heteromig_mig_devices) fact.
    type: raw
  gpus:
    description: The host's GPUs (C(heteromig_gpus) fact by default), for the result and for
      O(allow_shared_gpu).
    type: list
    elements: dict
  main_slice:
    description:
      - The main benchmark's slice, a MIG UUID or an index into O(slices). By default, as the
        anchor, the first MIG device of the GPU with the most MIG devices.
      - V(GPU-<uuid>) or V(gpu:<index>) names a whole GPU (needs O(allow_shared_gpu)).
    type: raw
  background_slices:
    description: Where backgrounds may run; V(same_gpu) (every other MIG device of the main
      slice's GPU), V(all) (every other MIG device of the host), or a list of MIG UUIDs or indices.
    type: raw
    default: same_gpu
  allow_shared_gpu:
    description:
      - Allow a main slice that is not a MIG device (a host without MIG devices, or O(main_slice)
        naming a whole GPU). Every benchmark then shares that GPU without MIG isolation; the
        result says so in RV(shared_gpu) and RV(warnings). Without it such a run is refused.
    type: bool
    default: false
  readiness_regexes:
    description:
      - "Regexes, each matched against one line of a benchmark's merged stdout/stderr, that mark
        its timed phase. Default the profile's, else NVIDIA's C++ harness (C(running actual
        test.) at the end of a line), its Triton harness (C(Start running actual test)) and
        LoadGen's C(Loadgen :: Perf mode start) (print_timestamps)."
    type: list
    elements: str
  background_start_timeout:
    description: How long (ms) a background may take to print its readiness marker; one that
      hangs longer fails the run (with O(lenient), a warning, and it is stopped). The anchor's
      C(--start_time_buffer) played this role.
    type: int
    default: 600000
  start_time_buffer:
    description:
      - Milliseconds to wait after every background is ready before the main benchmark starts
        (O(start_time_buffer_mode=fixed)), or at most (V(steady)). V(0) starts it at once.
      - The default 10 s covers the backgrounds' ramp to full load after their StartTest (all
        Offline queries are issued at once; clocks and power settle within seconds); the overlap
        is proven from timestamps afterwards either way.
    type: int
    default: 10000
  start_time_buffer_mode:
    description: V(fixed) waits O(start_time_buffer); V(steady) waits until every background's
      throughput (from the profile's C(progress_regex)) varies by at most O(steady_tolerance) over
      3 windows of O(steady_window), or O(start_time_buffer) at most.
    type: str
    default: fixed
    choices: [fixed, steady]
  steady_window:
    description: Window length (ms) for V(steady) mode.
    type: int
    default: 2000
  steady_tolerance:
    description: Allowed relative spread of the background rates in V(steady) mode.
    type: float
    default: 0.05
  main_benchmark_immediate_start:
    description: Start the main benchmark as soon as every background is ready, skipping
      O(start_time_buffer) (anchor C(--main_benchmark_immediate_start), a real boolean here).
    type: bool
    default: false
  end_time_buffer_min:
    description: With a numeric O(background_benchmark_duration), the least time (ms) between the
      main benchmark's end and each background's (anchor default).
    type: int
    default: 30000
  stop_grace:
    description: Milliseconds between SIGTERM and SIGKILL when stopping a benchmark's process group.
    type: int
    default: 10000
  lenient:
    description: A background that fails (exits, or hangs before it is ready) is stopped and
      recorded in RV(warnings) instead of failing the run (anchor C(--lenient)).
    type: bool
    default: false
  verbose:
    description: Add the harness's verbose arguments to the main benchmark (anchor C(--verbose)).
    type: bool
    default: false
  verbose_all:
    description: Add them to every benchmark (anchor C(--verbose_all)).
    type: bool
    default: false
  env:
    description: Extra environment variables for every benchmark (C(CUDA_VISIBLE_DEVICES) is set
      per slice).
    type: dict
    default: {}
  max_output_bytes:
    description: Most bytes of each benchmark's output kept in its C(stdout.log) (the last MiB of
      the rest is appended at the end).
    type: int
    default: 268435456
  gpu_sample_interval_s:
    description:
      - Seconds between two NVML samples of the GPU activity (RV(gpu_activity)) the host runner
        takes while the run lasts; V(0) turns the sampling off.
      - Otherwise from V(0.2) (GPM, on MIG slices, needs more than 0.1 s between two samples) to
        V(60). Anything else fails the task before the run starts, naming the value.
      - A number of seconds (text such as C(0.25) from the command line is read as one).
      - A run longer than 2400 samples keeps every other sample and doubles the interval.
    type: raw
    default: 0.5
  run_id:
    description: The run's id. By default one id per task (and loop item) and playbook run,
      shared by all hosts (C(<UTC time>-<6 hex>)).
    type: str
  resume:
    description: Re-attach to the run O(run_id) (without one, the run going on, else the newest)
      on the host instead of starting one; watches it to the end and fetches its results.
    type: bool
    default: false
  results_dir:
    description: Controller directory for the results (C(heteromig_results_dir), else
      C(./results)).
    type: path
  fetch:
    description: Fetch the logs and LoadGen files to O(results_dir).
    type: bool
    default: true
  host_root:
    description: The host's heteromig directory (C(heteromig_host_root), else C(/var/lib/heteromig));
      runs live in C(<host_root>/runs/<run_id>/), the lock in C(<host_root>/hetero_run.lock).
    type: path
  host_pythonpath:
    description: Where the host runtime's C(ansible_collections) tree is (C(heteromig_host_pythonpath),
      else C(<host_root>/lib)).
    type: str
  backend:
    description: NVML backend of the host for the layout check and simulated processes
      (C(heteromig_gpu_backend), else V(nvml)).
    type: str
    choices: [nvml, sim]
  sim_state:
    description: Simulator state file (C(heteromig_sim_state)) for O(backend=sim).
    type: path
  lease_timeout:
    description: The lease (ms) every status poll renews; the runner stops every benchmark when
      it is not renewed for this long.
    type: int
    default: 60000
  reconnect_timeout:
    description: After the lease expired, how long (ms) to keep trying to re-attach to fetch the
      stopped run's results before failing as unreachable.
    type: int
    default: 120000
  poll_interval:
    description: Longest wait (ms) of one status long-poll; the main starting, a failure or the
      end of the run answers at once. At most a third of O(lease_timeout) is used.
    type: int
    default: 15000
  fail_on_invalid:
    description: Fail the task when the verdict is C(INVALID) (by default the task succeeds and
      RV(verdict) tells).
    type: bool
    default: false
  wait:
    description:
      - V(false) starts the run and returns at once, without a verdict (RV(hetero_run_started)),
        so that the task does not hold a worker for the whole run; a later task with
        O(resume=true) and the same O(run_id) watches it to the end and returns the result.
        C(playbooks/hetero_run.yml) does this, so every host's run starts at once whatever
        C(forks) is.
      - The run's first lease then lasts the whole run (expected duration, readiness timeout and
        stop grace, plus 120 s, within O(background_benchmark_timeout)); the watching task
        renews it with O(lease_timeout) as usual. If nothing comes back to watch it, the run
        still ends by itself.
    type: bool
    default: true
notes:
  - Durations are in milliseconds, as in C(launch_heterogeneous_mig.py). Its C(--dryrun) is
    check mode, C(--debug) is C(-vvv).
  - The result structure is specified in docs/hetero_result_contract.md.
seealso:
  - module: heteromig.fleet.gpu_facts
  - module: heteromig.fleet.hetero_runner
"""

EXAMPLES = r"""
- name: Run resnet50 Server on one slice with every datacenter benchmark around it
  heteromig.fleet.hetero_run:
    harness: nvidia_mlperf
    harness_vars:
      workdir: /work
    main_benchmark: resnet50
    main_scenario: Server
    background_benchmarks: datacenter

- name: An audit test (TEST04) with the embedded harness, short durations
  heteromig.fleet.hetero_run:
    main_benchmark: synth-mlp-small
    main_action: run_audit_test04
    main_benchmark_duration: 20000
    start_time_buffer: 2000

- name: Dry run (check mode) showing the plan and every command
  heteromig.fleet.hetero_run:
    main_benchmark: synth-mlp-large
  check_mode: true
  register: plan

- name: Re-attach to a run after the controller was interrupted
  heteromig.fleet.hetero_run:
    resume: true
    run_id: 20261122T051500Z-ab12cd
"""

RETURN = r"""
run_id:
  description: The run's id (one per playbook run, shared by all hosts).
  returned: always
  type: str
  sample: 20261122T051500Z-ab12cd
host:
  description: inventory_hostname.
  returned: always
  type: str
verdict:
  description: V(VALID), V(INVALID), or V(DRY_RUN) in check mode.
  returned: always
  type: str
reasons:
  description: Every reason the run is INVALID (empty when VALID).
  returned: always
  type: list
  elements: str
  sample: ["bg-2 (synth-mlp-large) exited with code 4 while the main benchmark was running"]
warnings:
  description: What did not make the run INVALID but should be known (lenient failures, LoadGen
    errors, shared GPU).
  returned: always
  type: list
  elements: str
shared_gpu:
  description: Whether the benchmarks shared one GPU without MIG isolation (O(allow_shared_gpu)).
  returned: always
  type: bool
harness:
  description: The harness profile.
  returned: always
  type: str
gpu:
  description: The main slice's GPU (index, name, model, uuid).
  returned: always
  type: dict
results_dir:
  description: Where the run's logs and result.json are on the controller (null in check mode).
  returned: always
  type: str
main:
  description: The main benchmark; see RV(backgrounds) for the keys.
  returned: always
  type: dict
backgrounds:
  description: The background benchmarks.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: V(main), V(bg-1), V(bg-2), ...
      type: str
    role:
      description: V(main) or V(background).
      type: str
    benchmark:
      description: The harness's benchmark name.
      type: str
    scenario:
      description: LoadGen scenario (backgrounds are always Offline).
      type: str
    action:
      description: V(run_harness) or an audit action.
      type: str
    mode:
      description: The LoadGen mode it ran in, V(PerformanceOnly) or V(AccuracyOnly).
      type: str
    slice:
      description: The slice (uuid, profile, gpu_index, gpu_instance_id, compute_instance_id,
        placement, mig).
      type: dict
    command:
      description: The command as an argv list (never a shell string).
      type: list
      elements: str
    env:
      description: The CUDA_VISIBLE_DEVICES the benchmark ran with.
      type: dict
    exit_code:
      description: Exit code (null while running, or when killed by a signal).
      type: int
    signal:
      description: The signal that ended it, such as V(SIGTERM) when the runner stopped it.
      type: str
    stopped_by_runner:
      description: Whether the runner stopped it.
      type: bool
    failed:
      description: Why this benchmark failed, if it did.
      type: str
    launched_at:
      description: Launch time (epoch seconds).
      type: float
    ready_at:
      description: When its readiness marker was seen (epoch seconds; null if never).
      type: float
    ended_at:
      description: When it exited (epoch seconds).
      type: float
    timed_window:
      description: Its timed phase (begin, end, source V(power_begin/power_end) or V(markers)).
      type: dict
    accuracy:
      description: AccuracyOnly runs only (else null). C(passed) (true, false, or null when no
        PASS/FAIL line was found), C(summary) (the harness's verdict line) and C(source) (the
        file it came from, relative to the log directory).
      type: dict
    loadgen:
      description: From its LoadGen logs; result_validity, scenario, mode, metric (name, value,
        unit, the scenario's headline metric), latency_ns (p50, p90, p95, p97, p99, p99.9),
        min_duration_satisfied, min_queries_satisfied, early_stopping_met,
        performance_constraints_satisfied, invalid_reason, errors, power_begin, power_end,
        source, log_files.
      type: dict
    log_dir:
      description: Its log directory on the host.
      type: str
    fetched_dir:
      description: Its fetched logs on the controller.
      type: str
timeline:
  description: Every event, time-ordered; C(t) (epoch seconds), C(event) (launch, ready,
    timed_begin, timed_end, exit, kill, phase, warning), C(benchmark) and C(detail).
  returned: always
  type: list
  elements: dict
expected_duration_s:
  description: Expected duration of the run from the main's launch (main duration + buffer).
  returned: always
  type: float
stop_reason:
  description: Why the runner stopped the run early (lease expired, stop requested), or null.
  returned: always
  type: str
gpu_activity:
  description:
    - NVML samples the host runner took while the run lasted, one series per whole GPU (utilisation
      rates) or MIG GPU instance (GPM graphics utilisation on Hopper and newer; where NVML offers
      none, C(util_supported=false) and C(util_why)), with memory used.
    - C(during_main) holds each series' median, p10, p90, min and max over the main benchmark's
      timed window.
    - See docs/hetero_result_contract.md for every field. Null in check mode.
  returned: when not in check mode
  type: dict
  sample:
    state: sampled
    error: null
    backend: nvml
    interval_s: 0.5
    series:
      - key: gpu0
        scope: gpu
        util_metric: nvmlDeviceGetUtilizationRates.gpu
        util_supported: true
        t: [1763788500.2, 1763788500.7]
        util_pct: [97.0, 99.0]
        mem_used_mib: [1753, 1753]
    during_main:
      - key: gpu0
        util_pct: {samples: 2, median: 98.0, p10: 97.2, p90: 98.8, min: 97.0, max: 99.0}
fetched_files:
  description: The files fetched (relative to RV(results_dir)).
  returned: when not in check mode
  type: list
  elements: str
hetero_run_started:
  description: With O(wait=false), the run that was started (C(run_id), C(host), C(lease_s),
    C(expected_duration_s), C(results_dir)); no verdict yet.
  returned: wait is false and not in check mode
  type: dict
plan:
  description: The full plan sent to the host (check mode only).
  returned: check mode
  type: dict
"""
