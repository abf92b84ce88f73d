# shellcheck shell=bash
# Sourced by the scripts: create/refresh .venv with the package installed (editable) and its extras.
# Usage: . scripts/_venv.sh [EXTRAS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ICHAIN_VENV:-$ROOT/.venv}"
extras="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.ichain-installed"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  spec="$ROOT"
  [ -n "$extras" ] && spec="${ROOT}[$extras]"
  "$VENV/bin/python" -m pip install --quiet -e "$spec" 2>&1 | grep -v 'is ignored: it is neither' || true
  "$VENV/bin/python" -c 'import internlm_chain' # fail loudly if the install did not work
  echo "$want" > "$stamp"
fi
# PYTHONDONTWRITEBYTECODE may be set (CI sets it): then every `ichain` start would recompile our own
# sources. compileall writes the missing .pyc files once (it skips up-to-date ones).
"$VENV/bin/python" -m compileall -q "$ROOT/src" >/dev/null || true
export PATH="$VENV/bin:$PATH"
