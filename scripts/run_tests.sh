#!/usr/bin/env bash
# Install what is needed on a fresh machine, lint, then run the test suite.
# Extra arguments go to pytest (e.g. -k parity, or test files); they run in one process.
# Without them scripts/run_suite.py runs the suite as groups of test files, two pytest processes
# at a time, and prints each process's time, cores busy and peak memory, the machine's peak
# memory in use and the counts added up (README, "Tests").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
set +e
"$VENV_PY" -m ruff check --no-cache "$ROOT"
lint=$?
"$VENV_PY" -u scripts/run_suite.py "$@"
suite=$?
set -e
[ "$lint" -eq 0 ] && [ "$suite" -eq 0 ]
