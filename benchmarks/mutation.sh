#!/usr/bin/env bash
# Mutation testing of the choreography and of LoadGen log parsing (issue 15), in a throw-away
# copy: a mutation tester rewrites the code it mutates, so it never runs in this checkout.
#
#   bash benchmarks/mutation.sh                 # both modules, one after the other
#   bash benchmarks/mutation.sh choreo          # only the choreography: plugins/module_utils/agent/
#                                               # _hetero_choreo.py, _choreo_types.py, _choreo_checks.py
#   bash benchmarks/mutation.sh loadgen         # only plugins/module_utils/agent/_loadgen_logs.py
#
# Tool: mutmut 3.8.1 (pinned), in its own venv ($HM_MUTMUT_VENV, default /tmp/mutmut3-venv,
# created when missing with mutmut, pytest, pytest-timeout and hypothesis), not in the project's
# .venv. mutmut 3 forks one pytest process per mutant and runs only the tests that reach the
# mutated function, which is what makes it fit on a 2-core machine (mutmut 2.5.1, one fresh
# pytest per mutant, needed about an hour for the choreography alone).
#
# Per module it:
#   1. copies the working tree (tracked + untracked, not ignored files: uncommitted tests count)
#      to $HM_MUT_DIR/<module>/ansible_collections/heteromig/fleet/, and tests/ and pyproject.toml
#      next to ansible_collections/. mutmut names a mutant after the module path of its file, so
#      the file must lie where its import name (ansible_collections.heteromig.fleet.plugins...)
#      says; tests/conftest.py's collections/ entry then points nowhere and is harmless;
#   2. writes the [mutmut] section of setup.cfg there (the module's files; its unit tests);
#   3. runs `mutmut run` (TZ=America/New_York, as the primary pytest cell) and prints the
#      survivors and the counts (mutants/mutmut-cicd-stats.json).
# Afterwards: `cd $HM_MUT_DIR/<module> && mutmut show <name>` shows a mutant's diff.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PY="${HM_PYTHON:-$ROOT/.venv/bin/python}"
MUT_VENV="${HM_MUTMUT_VENV:-/tmp/mutmut3-venv}"
MUT_DIR="${HM_MUT_DIR:-/tmp/heteromig-mutation}"
JOBS="${HM_MUT_JOBS:-2}"

if [[ ! -x "$MUT_VENV/bin/mutmut" ]]; then
    "$PY" -m venv "$MUT_VENV"
    "$MUT_VENV/bin/pip" install -q 'mutmut==3.8.1' pytest pytest-timeout hypothesis
fi

run_one() {
    local name="$1" modules="$2" # the files to mutate, separated by spaces
    shift 2
    local dest="$MUT_DIR/$name"
    local fleet="$dest/ansible_collections/heteromig/fleet"
    rm -rf "$dest"
    mkdir -p "$fleet"
    (cd "$ROOT" && git ls-files -z -c -o --exclude-standard) |
        (cd "$ROOT" && xargs -0 cp -a --parents -t "$fleet" 2>/dev/null || true)
    rm -rf "$fleet/collections" # the fleet -> ../../.. link: the copy already lies there
    cp -a "$ROOT/tests" "$dest/tests"
    cp "$ROOT/pyproject.toml" "$dest/"
    {
        echo "[mutmut]"
        echo "source_paths="
        local module
        for module in $modules; do
            echo "    ansible_collections/heteromig/fleet/$module"
        done
        echo "also_copy=ansible_collections/heteromig/fleet/plugins/"
        echo "pytest_add_cli_args=-p no:cacheprovider"
        echo "pytest_add_cli_args_test_selection="
        local test
        for test in "$@"; do
            [[ -e "$dest/$test" ]] && echo "    $test"
        done
    } >"$dest/setup.cfg"
    echo "== $name: $modules ($dest)" >&2
    (
        cd "$dest"
        TZ=America/New_York "$MUT_VENV/bin/mutmut" run --max-children "$JOBS" >mutmut-run.log 2>&1 ||
            { tail -c 3000 mutmut-run.log; exit 1; }
        "$MUT_VENV/bin/mutmut" results
        "$MUT_VENV/bin/mutmut" export-cicd-stats >/dev/null
        "$MUT_VENV/bin/python" - "$name" <<'PY'
import json, sys
s = json.load(open("mutants/mutmut-cicd-stats.json"))
print("%s: total %d, killed %d, survived %d, no tests %d, timeout %d, suspicious %d, "
      "skipped %d" % (sys.argv[1], s["total"], s["killed"], s["survived"], s["no_tests"],
                      s["timeout"], s["suspicious"], s["skipped"]))
PY
    )
}

which="${1:-all}"
if [[ "$which" == all || "$which" == choreo ]]; then
    choreo=plugins/module_utils/agent
    # every test file of the choreography (test_hetero_choreo.py, _edges, _start, _verdict, and any
    # split added later), found from the repository root whatever the directory this runs from
    choreo_tests=("$ROOT"/tests/unit/agent/test_hetero_choreo*.py)
    run_one choreo "$choreo/_hetero_choreo.py $choreo/_choreo_types.py $choreo/_choreo_checks.py" \
        "${choreo_tests[@]#"$ROOT"/}"
fi
if [[ "$which" == all || "$which" == loadgen ]]; then
    run_one loadgen plugins/module_utils/agent/_loadgen_logs.py tests/unit/agent/test_loadgen_logs.py
fi
