#!/usr/bin/env bash
# Install what is needed on a fresh machine, then run the test suite.
# Extra arguments go to pytest (e.g. -k parity, or test files); with them everything runs in one process.
# Without them the suite runs as four pytest processes, one after another: the parity and
# static-canvas files each compile the full-size R50 model (16 GB peak for the parity file, a
# gradient graph alone near 15 GB), and a CPU graph's memory is only returned when its process
# ends, so they cannot share a process or run side by side on a 24 GB machine. The last lines
# give each process's peak memory (resident set, from /usr/bin/time where present) and time,
# and add the counts up; each process lists its 15 slowest tests.
# pytest's "no tests collected" (exit 5) fails too. The linter (ruff, configuration in ruff.toml)
# runs first; its findings fail the suite, after the tests have run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
REPORTS="$(mktemp -d)"
trap 'rm -rf "$REPORTS"' EXIT

run() {  # run NAME PYTEST_ARGS...: one pytest process, its exit status and JUnit report kept
  local name="$1"
  shift
  local timer=()
  if [ -x /usr/bin/time ]; then timer=(/usr/bin/time -f "%M %e" -o "$REPORTS/$name.usage"); fi
  set +e
  "${timer[@]}" "$VENV_PY" -m pytest -q -p no:cacheprovider --durations=15 --junitxml="$REPORTS/$name.xml" "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then echo "run_tests: pytest collected no tests ($name)" >&2; rc=1; fi
  echo "$rc" > "$REPORTS/$name.rc"
}

set +e
"$VENV_PY" -m ruff check --no-cache "$ROOT"
echo "$?" > "$REPORTS/lint.rc"
set -e

if [ "$#" -gt 0 ]; then
  targets=(tests)  # the whole suite, unless the arguments name test files or directories themselves
  for arg in "$@"; do if [ -e "${arg%%::*}" ]; then targets=(); break; fi; done
  run selected "${targets[@]}" "$@"
else
  run main tests --ignore=tests/test_parity.py --ignore=tests/test_grad_parity.py --ignore=tests/test_static_canvas.py
  run parity tests/test_parity.py
  run grad_parity tests/test_grad_parity.py
  run static_canvas tests/test_static_canvas.py
fi
"$VENV_PY" - "$REPORTS" <<'EOF'
import glob, os, sys
import xml.etree.ElementTree as ET

for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.usage"))):
    fields = open(path).read().split()
    if len(fields) >= 2 and fields[-2].isdigit():  # a killed process leaves a note before the numbers
        name = os.path.basename(path)[:-len(".usage")]
        print(f"run_tests: {name}: peak {int(fields[-2]) / 2**20:.1f} GB resident, {float(fields[-1]) / 60:.1f} min")
totals = dict(tests=0, failures=0, errors=0, skipped=0)
for path in glob.glob(os.path.join(sys.argv[1], "*.xml")):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"run_tests: {passed} passed, {failed} failed, {totals['skipped']} skipped")
EOF
rc=0
for f in "$REPORTS"/*.rc; do [ "$(cat "$f")" -eq 0 ] || rc=1; done
exit "$rc"
