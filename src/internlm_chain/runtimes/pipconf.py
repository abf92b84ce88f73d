"""pip's index / find-links configuration, translated for uv.

uv ignores pip's configuration, so on a machine whose local wheel mirror is configured for pip only
(pip.conf `find-links`, `extra-index-url`, or PIP_* variables), a plain `uv pip sync` would miss the
local wheels (e.g. a `torch==…+cpu` build that exists nowhere else). We read pip's configuration the
way pip does — files in pip's order, `[install]` over `[global]`, PIP_* variables over files — and set
the matching UV_* variables, never overriding one the user already set.
"""

from __future__ import annotations

import configparser
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def _norm_key(key: str) -> str:
    # pip treats `find_links`, `--find-links` and PIP_FIND_LINKS as the same option
    return key.lower().replace("_", "-").lstrip("-")


def config_files(environ: dict[str, str] | None = None) -> list[Path]:
    """pip's configuration files, lowest precedence first (global, user, site, $PIP_CONFIG_FILE)."""
    env = os.environ if environ is None else environ
    explicit = env.get("PIP_CONFIG_FILE")
    if explicit == os.devnull:
        return []  # pip's documented way to ignore every configuration file
    xdg_dirs = env.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    if not (explicit and Path(explicit).exists()):  # pip skips user files when PIP_CONFIG_FILE exists
        files.append(home / ".pip" / "pip.conf")
        files.append(Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf")
    files.append(Path(sys.prefix) / "pip.conf")
    if explicit:
        files.append(Path(explicit))
    return files


def read_pip_config(environ: dict[str, str] | None = None, files: list[Path] | None = None) -> dict[str, str]:
    """The merged `section.key → value` view that `pip config list` prints (env vars as `:env:.key`)."""
    env = os.environ if environ is None else environ
    merged: dict[str, str] = {}
    for path in config_files(env) if files is None else files:
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue  # pip would refuse a broken file; uv then simply gets no translated settings
        for section in parser.sections():
            for key, value in parser.items(section):
                merged[f"{section}.{_norm_key(key)}"] = value
    for name, value in env.items():
        if name.startswith("PIP_"):
            key = _norm_key(name[4:])
            if key not in ("version", "help"):
                merged[f":env:.{key}"] = value
    return merged


def effective(merged: dict[str, str], key: str) -> str | None:
    """What `pip install` uses for `key`: PIP_* variable, else `[install]`, else `[global]`."""
    for section in (":env:", "install", "global"):
        if f"{section}.{key}" in merged:
            return merged[f"{section}.{key}"]
    return None


@dataclass
class UvSettings:
    env: dict[str, str] = field(default_factory=dict)  # UV_* (and SSL_CERT_FILE) to add
    notes: list[str] = field(default_factory=list)  # "find-links → UV_FIND_LINKS" or why one was skipped


def uv_env_from_pip(environ: dict[str, str] | None = None, files: list[Path] | None = None) -> UvSettings:
    env = dict(os.environ if environ is None else environ)
    merged = read_pip_config(env, files)
    out = UvSettings()

    def put(pip_key: str, uv_var: str, value: str, *also_set: str) -> None:
        taken = [v for v in (uv_var, *also_set) if env.get(v)]
        if taken:
            out.notes.append(f"pip {pip_key} not used: {taken[0]} is already set")
            return
        out.env[uv_var] = value
        out.notes.append(f"pip {pip_key} → {uv_var}={value}")

    index_url = effective(merged, "index-url")
    if index_url:
        put("index-url", "UV_INDEX_URL", index_url.split()[0], "UV_DEFAULT_INDEX")
    extra = (effective(merged, "extra-index-url") or "").split()
    if extra:
        put("extra-index-url", "UV_EXTRA_INDEX_URL", " ".join(extra), "UV_INDEX")
        if "UV_EXTRA_INDEX_URL" in out.env and not env.get("UV_INDEX_STRATEGY"):
            # pip picks the best match across all indexes; uv's default stops at the first index that
            # knows the project, which fails when a partial local mirror lacks the pinned version.
            out.env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
            out.notes.append("pip searches every index → UV_INDEX_STRATEGY=unsafe-best-match")
    links = (effective(merged, "find-links") or "").split()
    if links:
        put("find-links", "UV_FIND_LINKS", ",".join(links))  # uv splits this one on commas
    if (effective(merged, "no-index") or "").strip().lower() in _TRUE:
        put("no-index", "UV_NO_INDEX", "1")
    hosts = (effective(merged, "trusted-host") or "").split()
    if hosts:
        put("trusted-host", "UV_INSECURE_HOST", " ".join(hosts))
    cert = effective(merged, "cert")
    if cert and Path(cert).is_file():
        put("cert", "SSL_CERT_FILE", cert)
    timeout = effective(merged, "timeout") or effective(merged, "default-timeout")
    if timeout and timeout.strip().replace(".", "", 1).isdigit():
        put("timeout", "UV_HTTP_TIMEOUT", str(int(float(timeout))))
    return out
