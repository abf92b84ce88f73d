"""Start an LMDeploy server (`serve api_server` / `serve proxy`) with API keys that never reach its argv.

Runs inside the `lmdeploy` runtime:

    python deploy_keyed.py --key-env NAME -- serve api_server MODEL --server-port 23333 ...

LMDeploy 0.18 takes keys only as `--api-keys K...` (no environment variable, no file), and a process's
arguments are readable by every local user (`ps`, /proc/PID/cmdline). This wrapper reads the keys
(comma-separated) from the environment variable NAME, drops the variable so engine workers do not
inherit it, appends `--api-keys` to `sys.argv` — which changes only this interpreter's list, not the
arguments the kernel shows — and runs LMDeploy's own CLI entry point in this process.
"""

from __future__ import annotations

import os
import sys


def split(argv: list[str]) -> tuple[str, list[str]] | None:
    if len(argv) < 4 or argv[0] != "--key-env" or argv[2] != "--":
        return None
    return argv[1], argv[3:]


def main(argv: list[str]) -> int:
    parsed = split(argv)
    if parsed is None:
        print(__doc__, file=sys.stderr)
        return 2
    name, rest = parsed
    keys = [k for k in os.environ.pop(name, "").split(",") if k.strip()]
    if not keys:
        print(f"error: environment variable {name} (api_key_env) is not set or empty", file=sys.stderr)
        return 2
    sys.argv = ["lmdeploy", *rest, "--api-keys", *(k.strip() for k in keys)]
    from lmdeploy.cli import run

    run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
