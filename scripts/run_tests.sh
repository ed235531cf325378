#!/usr/bin/env bash
# Install what is needed on a fresh machine, then run the test suite.
# Extra arguments go to pytest (e.g. -k parity); with them everything runs in one process.
# Without them the suite runs as three pytest processes: the parity files each compile the
# full-size R50 model (the gradient comparison alone peaks near 15 GB), and a CPU graph's
# memory is only returned when its process ends. The last line adds the three up.
# pytest's "no tests collected" (exit 5) fails too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
REPORTS="$(mktemp -d)"
trap 'rm -rf "$REPORTS"' EXIT

run() {  # run NAME PYTEST_ARGS...: one pytest process, its exit status and JUnit report kept
  local name="$1"
  shift
  set +e
  "$VENV_PY" -m pytest -q -p no:cacheprovider --junitxml="$REPORTS/$name.xml" "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then echo "run_tests: pytest collected no tests ($name)" >&2; rc=1; fi
  echo "$rc" > "$REPORTS/$name.rc"
}

if [ "$#" -gt 0 ]; then
  run selected tests "$@"
else
  run main tests --ignore=tests/test_parity.py --ignore=tests/test_grad_parity.py
  run parity tests/test_parity.py
  run grad_parity tests/test_grad_parity.py
fi
"$VENV_PY" - "$REPORTS" <<'EOF'
import glob, os, sys
import xml.etree.ElementTree as ET

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
