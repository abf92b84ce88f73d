"""Check an OpenCompass config before OpenCompass runs it (inside the opencompass runtime).

OpenCompass downloads any dataset whose local copy is missing, hangs or retries on dead endpoints and
exits 0 when tasks fail, so problems are caught here first, each printed as one `error:` line:

    python eval_preflight.py CONFIG.py [--timeout 10]

- the config loads (built-in dataset config names exist in this OpenCompass);
- every dataset's files are on disk, resolved the way OpenCompass resolves them (absolute path, or
  COMPASS_DATA_CACHE + its dataset mapping) — so no download is ever attempted;
- every API model answers GET <base>/models and lists its served model name.
Exit 0 when all is well, 2 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def dataset_paths(ds: dict) -> list[str]:
    """The local paths a dataset config will read (before any download fallback)."""
    path = ds.get("path")
    if not isinstance(path, str) or not path:
        return []
    if os.path.isabs(path):
        return [path]
    cache = os.environ.get("COMPASS_DATA_CACHE", "")
    if ds.get("local_mode"):
        return [os.path.join(cache, path)]
    try:
        from opencompass.utils.datasets_info import DATASETS_MAPPING
    except ImportError:  # older layouts: the path is taken as is
        DATASETS_MAPPING = {}
    local = DATASETS_MAPPING.get(path, {}).get("local", path)
    return [os.path.join(cache, local)]


def check_endpoint(model: dict, timeout: float) -> str | None:
    base = str(model.get("openai_api_base", "")).rstrip("/")
    name = model.get("path")
    req = urllib.request.Request(base + "/models")
    key = model.get("key")
    if key and key not in ("ENV", "EMPTY"):
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read().decode("utf-8") or "{}")
    except urllib.error.HTTPError as exc:
        return f"endpoint {base} answered GET /models with HTTP {exc.code}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"endpoint {base} is unreachable ({reason})"
    except ValueError:
        return f"endpoint {base}/models did not return JSON"
    served = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
    if served and name not in served:
        return f"endpoint {base} does not serve '{name}' (it serves: {', '.join(map(str, served))})"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    errors: list[str] = []
    try:
        from mmengine.config import Config

        cfg = Config.fromfile(args.config, format_python_code=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's config (a bad dataset name)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, (ImportError, ModuleNotFoundError, FileNotFoundError)):
            msg = f"a dataset config does not exist in this OpenCompass: {msg}"
        print(f"error: cannot load {args.config}: {msg}", flush=True)
        return 2
    missing: dict[str, list[str]] = {}
    for ds in cfg.get("datasets", []):
        for p in dataset_paths(ds):
            if not os.path.exists(p):
                missing.setdefault(ds.get("abbr", "?"), []).append(p)
    for abbr, paths in missing.items():
        errors.append(f"dataset '{abbr}': missing {', '.join(sorted(set(paths)))} (offline: nothing is "
                      "downloaded; put a local copy there)")
    for model in cfg.get("models", []):
        if "openai_api_base" in model:
            problem = check_endpoint(model, args.timeout)
            if problem:
                errors.append(f"model '{model.get('abbr')}': {problem}")
        else:
            for key in ("path", "tokenizer_path", "peft_path"):
                p = model.get(key)
                if p and not os.path.exists(p):
                    errors.append(f"model '{model.get('abbr')}': {key} {p} does not exist")
    for e in errors:
        print(f"error: {e}", flush=True)
    if not errors:
        n_models, n_data = len(cfg.get("models", [])), len(cfg.get("datasets", []))
        print(f"preflight ok: {n_models} model(s), {n_data} dataset(s), all files local", flush=True)
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
