#!/usr/bin/env bash
# Install what is needed on a fresh machine, then run the test suite.
# Extra arguments go to pytest (e.g. -k parity, or test files); with them everything runs in one process.
# Without them the suite runs as five pytest processes. First two side by side: the files whose
# tests mostly start train.py / eval.py / msrun and wait for them (SUBPROCESS_FILES), and all
# other light files, which compile their graphs in the test process; a CPU graph compile keeps one core busy, so the
# pair keeps the machine's two cores busier than one process does (cores busy: last lines). Then,
# one after another: the parity and static-canvas files each compile the full-size R50 model
# (19 GB peak for the parity file, a gradient graph alone near 15 GB), and a CPU graph's memory
# is only returned when its process ends, so they cannot share a process or run beside another.
# The last lines give each process's time, cores busy and peak resident set (its largest
# process, from /usr/bin/time where present), each phase's peak of the machine's memory in use (MemTotal -
# MemAvailable, every 2 s: what the processes of the phase hold together, plus the rest of the
# machine), and add the counts up; each process lists its 15 slowest tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
REPORTS="$(mktemp -d)"
trap 'phase ""; rm -rf "$REPORTS"' EXIT

run() {  # run NAME PYTEST_ARGS...: one pytest process, its exit status and JUnit report kept
  local name="$1"
  shift
  local timer=()
  if [ -x /usr/bin/time ]; then timer=(/usr/bin/time -f "%M %e %U %S" -o "$REPORTS/$name.usage"); fi
  set +e
  "${timer[@]}" "$VENV_PY" -u -m pytest -q -p no:cacheprovider --durations=15 --junitxml="$REPORTS/$name.xml" \
    --basetemp="$REPORTS/tmp_$name" "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then echo "run_tests: pytest collected no tests ($name)" >&2; rc=1; fi
  echo "$rc" > "$REPORTS/$name.rc"
}

SAMPLER=""
phase() {  # phase NAME: from now on the machine's memory in use is sampled into NAME.mem ("" stops)
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; fi
  SAMPLER=""
  [ -n "$1" ] || return 0
  local out="$REPORTS/$1.mem"
  ( peak=0
    while :; do
      used=$(awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{print t-a}' /proc/meminfo)
      if [ "$used" -gt "$peak" ]; then peak=$used; echo "$peak" > "$out"; fi
      sleep 2
    done ) &
  SAMPLER=$!
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
  HEAVY_FILES=(tests/test_parity.py tests/test_grad_parity.py tests/test_static_canvas.py)
  SUBPROCESS_FILES=(tests/test_distributed.py tests/test_resume.py tests/test_fine_tuning.py tests/test_eval.py
                    tests/test_portability.py tests/test_bench_train.py tests/test_converter.py tests/test_launchers.py
                    tests/test_cpu_isa.py tests/test_ops_devices.py tests/test_imports.py)
  ignored=()
  for f in "${HEAVY_FILES[@]}" "${SUBPROCESS_FILES[@]}"; do ignored+=("--ignore=$f"); done
  phase side_by_side
  echo "run_tests: subprocesses and in_process run side by side; their outputs follow when both have ended"
  run subprocesses "${SUBPROCESS_FILES[@]}" > "$REPORTS/subprocesses.log" 2>&1 &
  side=$!
  run in_process tests "${ignored[@]}" > "$REPORTS/in_process.log" 2>&1
  wait "$side"
  cat "$REPORTS/subprocesses.log" "$REPORTS/in_process.log"
  phase parity; run parity tests/test_parity.py
  phase grad_parity; run grad_parity tests/test_grad_parity.py
  phase static_canvas; run static_canvas tests/test_static_canvas.py
  phase ""
fi
"$VENV_PY" - "$REPORTS" <<'EOF'
import glob, os, sys
import xml.etree.ElementTree as ET

for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.usage"))):
    fields = open(path).read().split()[-4:]  # a killed process leaves a note before the numbers
    if len(fields) == 4 and fields[0].isdigit():
        name = os.path.basename(path)[:-len(".usage")]
        peak, wall, cpu = int(fields[0]) / 2**20, float(fields[1]), float(fields[2]) + float(fields[3])
        print(f"run_tests: {name}: peak {peak:.1f} GB resident, {wall / 60:.1f} min, "
              f"{cpu / max(wall, 1e-9):.2f} cores busy on average")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.mem"))):
    name = os.path.basename(path)[:-len(".mem")]
    print(f"run_tests: phase {name}: machine memory in use at most {int(open(path).read()) / 2**20:.1f} GB")
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
