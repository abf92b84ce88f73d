"""pip's configuration → uv's environment: files in pip's order, [install] over [global], env over files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from internlm_chain.runtimes.pipconf import config_files, read_pip_config, uv_env_from_pip


def _home(tmp_path: Path, user_conf: str | None = None, xdg_conf: str | None = None) -> dict[str, str]:
    """An environment whose pip configuration is only what this test writes."""
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    xdg = tmp_path / "xdg"
    (xdg / "pip").mkdir(parents=True)
    if user_conf is not None:
        (home / ".config" / "pip" / "pip.conf").write_text(user_conf)
    if xdg_conf is not None:
        (xdg / "pip" / "pip.conf").write_text(xdg_conf)
    return {"HOME": str(home), "XDG_CONFIG_DIRS": str(xdg)}


def _files(env: dict[str, str]) -> list[Path]:
    # /etc/pip.conf and the interpreter's site pip.conf belong to the machine, not to the test
    return [f for f in config_files(env) if not str(f).startswith(("/etc/pip.conf", sys.prefix))]


def test_user_file_translates_find_links_and_indexes(tmp_path):
    env = _home(tmp_path, user_conf="[global]\nfind-links = /w1\n  /w2\nextra-index-url = file:///a http://b/simple\n"
                                    "index-url = http://mirror/simple\ntrusted-host = b mirror\n")
    uv = uv_env_from_pip(env, _files(env))
    assert uv.env["UV_FIND_LINKS"] == "/w1,/w2"  # uv splits UV_FIND_LINKS on commas, pip on whitespace
    assert uv.env["UV_EXTRA_INDEX_URL"] == "file:///a http://b/simple"
    assert uv.env["UV_INDEX_URL"] == "http://mirror/simple"
    assert uv.env["UV_INSECURE_HOST"] == "b mirror"
    assert uv.env["UV_INDEX_STRATEGY"] == "unsafe-best-match"


def test_precedence_env_over_install_over_global_and_user_over_site_wide(tmp_path):
    env = _home(tmp_path,
                user_conf="[global]\nfind-links = /user\n",
                xdg_conf="[global]\nfind-links = /sitewide\nindex-url = http://g/simple\n"
                         "[install]\nindex-url = http://install/simple\n")
    files = _files(env)
    merged = read_pip_config(env, files)
    assert merged["global.find-links"] == "/user"  # the user file is read after the site-wide one
    uv = uv_env_from_pip(env, files)
    assert uv.env["UV_FIND_LINKS"] == "/user"
    assert uv.env["UV_INDEX_URL"] == "http://install/simple"
    uv = uv_env_from_pip({**env, "PIP_FIND_LINKS": "/fromenv /second", "PIP_INDEX_URL": "http://env/simple"}, files)
    assert uv.env["UV_FIND_LINKS"] == "/fromenv,/second"
    assert uv.env["UV_INDEX_URL"] == "http://env/simple"


def test_underscored_keys_and_no_index(tmp_path):
    env = _home(tmp_path, user_conf="[global]\nfind_links = /w\nno_index = true\n")
    uv = uv_env_from_pip(env, _files(env))
    assert uv.env["UV_FIND_LINKS"] == "/w"
    assert uv.env["UV_NO_INDEX"] == "1"


def test_uv_settings_already_made_win(tmp_path):
    env = _home(tmp_path, user_conf="[global]\nfind-links = /w\nextra-index-url = http://x/simple\n"
                                    "index-url = http://y/simple\n")
    env.update(UV_FIND_LINKS="/mine", UV_INDEX="http://mine/simple", UV_DEFAULT_INDEX="http://d/simple")
    uv = uv_env_from_pip(env, _files(env))
    assert uv.env == {}
    assert any("UV_FIND_LINKS is already set" in n for n in uv.notes)
    assert any("UV_INDEX is already set" in n for n in uv.notes)


def test_index_strategy_set_by_user_is_kept(tmp_path):
    env = _home(tmp_path, user_conf="[global]\nextra-index-url = http://x/simple\n")
    env["UV_INDEX_STRATEGY"] = "first-index"
    assert "UV_INDEX_STRATEGY" not in uv_env_from_pip(env, _files(env)).env


def test_pip_config_file_devnull_ignores_every_file(tmp_path):
    env = _home(tmp_path, user_conf="[global]\nfind-links = /w\n")
    env["PIP_CONFIG_FILE"] = os.devnull
    assert config_files(env) == []
    assert "UV_FIND_LINKS" not in uv_env_from_pip(env).env


def test_pip_config_file_replaces_user_files(tmp_path):
    env = _home(tmp_path, user_conf="[global]\nfind-links = /user\n")
    explicit = tmp_path / "explicit.conf"
    explicit.write_text("[global]\nextra-index-url = http://explicit/simple\n")
    env["PIP_CONFIG_FILE"] = str(explicit)
    uv = uv_env_from_pip(env, _files(env))
    assert "UV_FIND_LINKS" not in uv.env  # pip skips user files when PIP_CONFIG_FILE names a file
    assert uv.env["UV_EXTRA_INDEX_URL"] == "http://explicit/simple"


def test_broken_file_is_skipped(tmp_path):
    env = _home(tmp_path, user_conf="this is not ini\n[[[")
    assert uv_env_from_pip(env, _files(env)).env == {}


def test_same_view_as_pip_config_list_on_this_machine():
    """Our reading of pip's files and variables equals what pip itself reports here."""
    res = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip("pip is not available to this interpreter")
    theirs = {}
    for line in res.stdout.splitlines():
        key, _, value = line.partition("=")
        theirs[key] = value.strip().strip("'")
    assert read_pip_config() == theirs
