"""Runs INSIDE a runtime's interpreter (stdlib only): report its Python, installed packages, imports.

Usage: python probe_worker.py MODULE... → one line "ICHAIN-PROBE {json}" on stdout (imports may print too).
"""

import importlib
import importlib.metadata
import json
import platform
import re
import site
import sys
import time


def main(modules):
    dists, where = {}, {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            key = re.sub(r"[-_.]+", "-", name).lower()
            # distributions() follows sys.path; the first one found is the one `import` uses. In a
            # host-torch runtime a package can be both in the venv (the lock's) and on the host.
            if key not in dists:
                dists[key] = dist.version
                where[key] = str(getattr(dist, "_path", ""))
    imports = {}
    for module in modules:
        started = time.monotonic()
        try:
            mod = importlib.import_module(module)
            error = None
        except BaseException as exc:  # an import may even call sys.exit; report it, don't die
            mod, error = None, f"{type(exc).__name__}: {exc}".strip()
        imports[module] = {"error": error, "seconds": round(time.monotonic() - started, 2),
                           "file": getattr(mod, "__file__", None), "version": str(getattr(mod, "__version__", ""))}
        if module == "torch" and mod is not None:
            imports[module]["cuda"] = getattr(getattr(mod, "version", None), "cuda", None)
    print("ICHAIN-PROBE " + json.dumps({"python": platform.python_version(), "executable": sys.executable,
                                        "prefix": sys.prefix, "site": list(site.getsitepackages()),
                                        "dists": dists, "dist_paths": where, "imports": imports}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
