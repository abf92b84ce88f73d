#!/usr/bin/env bash
# The test command: sets up .venv (and the stage runtimes the tests need), then ruff and pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not upstream" -x
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh dev

echo "== ruff"
ruff check src tests scripts

R="${ICHAIN_TEST_RUNTIMES-data xtuner opencompass agent serve-cpu internevo}"; [ -z "$R" ] || ichain env sync --missing-ok $R  # runtimes the upstream tests use ("" = none)
echo "== pytest"
set +e
python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
