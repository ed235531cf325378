#!/usr/bin/env bash
# Install what is needed on a fresh machine, then run the test suite.
# Extra arguments go to pytest (e.g. -k parity). pytest's "no tests collected" (exit 5) fails too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
set +e
"$VENV_PY" -m pytest tests -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "run_tests: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
