#!/usr/bin/env bash
# The test command: sets up .venv (and the stage runtimes the tests need), then ruff and pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not upstream" -x
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh dev

# A real single-node Slurm for the launcher tests (best effort: without it they skip and say why).
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== apt-get install slurm (for tests/launch)"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge; } \
      >/dev/null 2>&1 || echo "note: could not install Slurm; the Slurm tests will skip" >&2
  fi
fi

# Debian's Chromium renders `ichain report` pages in tests/unit/test_report.py (best effort too).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "== apt-get install chromium (for the report test)"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >/dev/null 2>&1 \
    || echo "note: could not install chromium; the report rendering test will skip" >&2
fi

echo "== ruff"
ruff check src tests scripts

# runtimes the upstream tests use (ICHAIN_TEST_RUNTIMES="" = none)
read -r -a runtimes <<< "${ICHAIN_TEST_RUNTIMES-data xtuner opencompass agent serve-cpu internevo lmdeploy hub}"
[ "${#runtimes[@]}" -eq 0 ] || ichain env sync --missing-ok "${runtimes[@]}"
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
