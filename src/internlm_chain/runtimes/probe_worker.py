"""Runs INSIDE a runtime's interpreter (stdlib only): report its Python, installed packages, imports.

Usage: python probe_worker.py MODULE... → one line "ICHAIN-PROBE {json}" on stdout (imports may print too).
"""

import importlib
import importlib.metadata
import json
import platform
import re
import sys
import time


def main(modules):
    dists = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            dists[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    imports = {}
    for module in modules:
        started = time.monotonic()
        try:
            importlib.import_module(module)
            error = None
        except BaseException as exc:  # an import may even call sys.exit; report it, don't die
            error = f"{type(exc).__name__}: {exc}".strip()
        imports[module] = {"error": error, "seconds": round(time.monotonic() - started, 2)}
    print("ICHAIN-PROBE " + json.dumps({"python": platform.python_version(), "executable": sys.executable,
                      "dists": dists, "imports": imports}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
