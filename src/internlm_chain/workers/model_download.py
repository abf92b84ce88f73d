"""Download a model snapshot from the Hugging Face Hub (or a mirror of it) or from ModelScope into a scratch
folder, with the hub's own client (huggingface_hub's `snapshot_download`, or `modelscope.hub.snapshot_download`),
then check every file against the hub's listing.

    python model_download.py --repo OWNER/NAME --revision REV --endpoint URL --out SCRATCH [--source hf|modelscope]
                             [--token-env VAR] [--include GLOB ...] [--exclude GLOB ...]

Runs in the hub runtime (stdlib + huggingface_hub + modelscope). The token is read from the environment variable
named by --token-env, never from argv. Both clients resume a partial file with a Range request (huggingface_hub
keeps it in SCRATCH/.cache/huggingface, ModelScope's as SCRATCH/<file>.incomplete), so a re-run after a kill
continues where it stopped. On success SCRATCH holds exactly the selected files plus ichain-model.json (sizes,
sha256); on failure SCRATCH/.ichain-download-error.json says what went wrong and what to do, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from fnmatch import fnmatch
from pathlib import Path

REPORT = "ichain-model.json"
MARKER = ".ichain-download.json"  # written by ichain before we start: which repo/revision this partial is
ERROR = ".ichain-download-error.json"
LOCK = ".ichain-download.lock"
HF_STATE = Path(".cache") / "huggingface"  # huggingface_hub's per-file metadata and *.incomplete files
MS_STATE = Path(".cache") / "modelscope"  # ModelScope's cache_dir: its file locks (its partial files sit beside
#                                          the targets as <name>.incomplete)
OURS = {REPORT, MARKER, ERROR, LOCK}

# Files a model folder needs besides its weights (top level only: `original/` and similar folders hold
# other formats of the same weights)
CONFIG_FILES = ("config.json", "generation_config.json", "adapter_config.json", "tokenizer.json",
                "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
                "vocab.json", "merges.txt", "vocab.txt", "chat_template.json", "chat_template.jinja",
                "preprocessor_config.json", "README.md", "LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE")
CONFIG_GLOBS = ("*.tiktoken", "*.py")  # tiktoken vocabularies; remote code (InternLM2's modeling_*.py)
TRAINING_STATE = ("training_args.bin", "optimizer*.bin", "scheduler*.bin", "rng_state*.bin", "scaler*.bin")


def die_with_parent() -> None:
    """The launcher starts us in a session of our own, so a SIGKILL of `ichain` would leave us running and
    still writing into the scratch folder: ask the kernel to kill us when our parent dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def default_selection(names: list[str]) -> list[str]:
    """Config, tokenizer, chat template, remote code and the weights: *.safetensors when the repo has any,
    else *.bin (never optimizer or trainer state)."""
    top = [n for n in names if "/" not in n]
    chosen = {n for n in top if n in CONFIG_FILES or any(fnmatch(n, g) for g in CONFIG_GLOBS)}
    safetensors = [n for n in top if n.endswith(".safetensors") or n.endswith(".safetensors.index.json")]
    if any(n.endswith(".safetensors") for n in safetensors):
        chosen.update(safetensors)
    else:
        chosen.update(n for n in top if (n.endswith(".bin") or n.endswith(".bin.index.json"))
                      and not any(fnmatch(n, g) for g in TRAINING_STATE))
    return sorted(chosen)


def _matches(name: str, patterns: list[str]) -> bool:
    # huggingface_hub's own allow/ignore semantics: fnmatch, and "dir/" means everything under it
    return any(fnmatch(name, p + "*" if p.endswith("/") else p) for p in patterns)


def select(names: list[str], include: list[str], exclude: list[str]) -> list[str]:
    chosen = set(default_selection(names)) | {n for n in names if include and _matches(n, include)}
    return sorted(n for n in chosen if not (exclude and _matches(n, exclude)))


def git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def what_was_kept(a) -> str:
    """The last line of a failed download's message: whether a re-run will resume."""
    if has_data(Path(a.out)):
        return f"the partial download is kept: re-run the same command to resume ({a.out})"
    return "nothing was downloaded"


class Failed(Exception):
    def __init__(self, message: str, hint: str = "", url: str | None = None):
        super().__init__(message)
        self.message, self.hint, self.url = message, hint, url


def explain(exc: BaseException, a: argparse.Namespace, token: str | None) -> Failed:
    """A hub error → what went wrong (naming the repo and URL) and what to do."""
    import requests
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    url = getattr(response, "url", None) or f"{a.endpoint}/{a.repo}"
    resume = what_was_kept(a)
    token_hint = (f"the token in ${a.token_env} cannot read it: check that account's access" if token else
                  "if it is private or gated, put a token that can read it in an environment variable and pass "
                  "--token-env VAR")
    if isinstance(exc, GatedRepoError):
        return Failed(f"{a.repo} is gated at {a.endpoint} (HTTP {status}, {url})",
                      f"accept its conditions on {a.endpoint}/{a.repo} and pass a token of that account with "
                      "--token-env VAR", url)
    if isinstance(exc, RevisionNotFoundError):
        return Failed(f"{a.repo} has no revision '{a.revision}' at {a.endpoint} (HTTP {status}, {url})",
                      "--revision takes a branch, a tag or a commit of the repo", url)
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        private = ", or it is private or gated" if status == 401 and not token else ""
        return Failed(f"{a.repo} not found at {a.endpoint}{private} (HTTP {status}, {url})",
                      f"check the spelling (OWNER/NAME as on the model page); {token_hint}", url)
    if status == 401:
        return Failed(f"{a.endpoint} rejected the request for {a.repo} (HTTP 401, {url})",
                      f"the token in ${a.token_env} is invalid or expired" if token else token_hint, url)
    if status == 403:
        return Failed(f"{a.endpoint} refused {a.repo} (HTTP 403, {url})",
                      "the token has no read access to it" if token else token_hint, url)
    if isinstance(exc, HfHubHTTPError) and status is not None:
        return Failed(f"{a.endpoint} answered HTTP {status} for {a.repo} ({url})",
                      f"try again later, or another endpoint (--endpoint); {resume}", url)
    network = (requests.ConnectionError, requests.Timeout, LocalEntryNotFoundError, ConnectionError, TimeoutError)
    if isinstance(exc, network):
        return Failed(f"cannot download {a.repo} from {a.endpoint}: {network_reason(exc)}",
                      "check the network or proxy (HTTPS_PROXY); where huggingface.co is unreachable use a mirror, "
                      f"e.g. --endpoint https://hf-mirror.com (or HF_ENDPOINT); {resume}", url)
    return Failed(f"downloading {a.repo} from {a.endpoint} failed: {type(exc).__name__}: {str(exc)[:500]}",
                  resume, url)


def has_data(out: Path) -> bool:
    """Whether `out` holds bytes worth resuming (downloaded or partial files)."""
    return out.is_dir() and any(p.is_file() and p.name not in OURS and p.stat().st_size > 0 for p in out.rglob("*"))


def network_reason(exc: BaseException) -> str:
    """The innermost cause of a network error, e.g. "[Errno 111] Connection refused" (urllib3 nests it
    several levels deep in a MaxRetryError's text)."""
    seen, texts = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__ or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException)
                                                    else None)
    for text in reversed(texts):
        m = re.search(r"\[Errno -?\d+\][^'\")]*|Read timed out[^'\")]*|timed out|Name or service not known", text)
        if m:
            return m.group(0).strip()
    return texts[-1][:300] if texts else "unknown error"


def progress(out: Path, total: int, stop: threading.Event) -> None:
    """One line every few seconds (the launcher logs lines; tqdm's carriage returns would make one)."""
    start, last = time.monotonic(), -1
    while not stop.wait(5):
        have = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.name not in OURS
                   and not p.name.endswith((".metadata", ".lock")))
        if have != last:
            rate = have / max(time.monotonic() - start, 1e-6) / 1e6
            print(f"[download] {have / 1e6:,.1f} / {total / 1e6:,.1f} MB on disk ({rate:.1f} MB/s this run)",
                  flush=True)
            last = have


class Entry:
    """One file of the hub's listing: its size, and the hash the hub gives for it (sha256 for LFS files and
    every ModelScope file; the git blob id for small files on the Hugging Face Hub)."""

    def __init__(self, size: int | None, sha256: str | None = None, blob_id: str | None = None):
        self.size, self.sha256, self.blob_id = size, sha256, blob_id


def verify(out: Path, listed: dict[str, Entry], hub: str = "hub") -> list[dict]:
    """Every selected file is there with the hub's size and hash. A file that differs is removed with its
    metadata, so a re-run fetches it again."""
    files, bad = [], []
    for name, e in listed.items():
        path = out / name
        entry = {"name": name, "size": path.stat().st_size if path.is_file() else None}
        if entry["size"] is None:
            bad.append(f"{name}: missing")
            continue
        problem = None
        if e.size is not None and entry["size"] != e.size:
            problem = f"{name}: {entry['size']} bytes, the {hub} lists {e.size}"
        elif e.sha256:
            entry["sha256"] = sha256(path)
            if entry["sha256"] != e.sha256:
                problem = f"{name}: sha256 {entry['sha256']} differs from the {hub}'s {e.sha256}"
        elif e.blob_id:
            if git_blob_sha1(path) != e.blob_id:
                problem = f"{name}: git blob id differs from the {hub}'s {e.blob_id}"
        if problem:
            bad.append(problem)
            path.unlink()
            (out / HF_STATE / "download" / f"{name}.metadata").unlink(missing_ok=True)
        files.append(entry)
    if bad:
        raise Failed(f"{len(bad)} downloaded file(s) do not match the {hub}'s listing: " + "; ".join(bad[:5]),
                     "re-run the same command: the mismatching files were removed and will be fetched again")
    return files


def finish(out: Path, keep: list[str]) -> None:
    """Leave exactly the selected files: drop huggingface_hub's bookkeeping and files an earlier partial run
    fetched under another selection."""
    shutil.rmtree(out / HF_STATE, ignore_errors=True)
    shutil.rmtree(out / MS_STATE, ignore_errors=True)
    if (out / ".cache").is_dir() and not any((out / ".cache").iterdir()):
        (out / ".cache").rmdir()
    wanted = set(keep) | {LOCK}
    for p in sorted(out.rglob("*"), reverse=True):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and rel not in wanted:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def hf_listing(a: argparse.Namespace, token: str | None) -> tuple[str, dict[str, Entry]]:
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=a.endpoint, token=token).model_info(a.repo, revision=a.revision, files_metadata=True)
    except Exception as exc:  # every hub/network error becomes one explained failure
        raise explain(exc, a, token) from None
    return info.sha, {s.rfilename: Entry(s.lfs.size if s.lfs else s.size, s.lfs.sha256 if s.lfs else None,
                                         None if s.lfs else s.blob_id) for s in info.siblings or []}


def hf_fetch(a: argparse.Namespace, token: str | None, commit: str, names: list[str]) -> None:
    from huggingface_hub import snapshot_download

    try:
        # the resolved commit, not the branch: every file comes from one commit, and no ref is written into
        # the user's global cache; exact names escaped, since allow_patterns are fnmatch globs
        snapshot_download(a.repo, revision=commit, local_dir=a.out, endpoint=a.endpoint, token=token,
                          allow_patterns=[glob.escape(n) for n in names], max_workers=a.workers)
    except Exception as exc:
        raise explain(exc, a, token) from None


def ms_api(a: argparse.Namespace, token: str | None):
    from modelscope_hub import HubApi

    # an explicit endpoint (so the client's .cn/.ai probing never picks another site than the one we report);
    # the token only when --token-env gave one, else the client's own default (MODELSCOPE_API_TOKEN, or the
    # cookie `modelscope login` stored)
    return HubApi(endpoint=a.endpoint, token=token)


def ms_listing(a: argparse.Namespace, token: str | None) -> tuple[None, dict[str, Entry]]:
    try:
        files = ms_api(a, token).list_repo_files(a.repo, "model", revision=a.revision, recursive=True)
    except Exception as exc:
        raise explain_ms(exc, a, token) from None
    # ModelScope's listing names no snapshot commit: a branch that moves mid-download shows as a hash mismatch
    return None, {f.path: Entry(f.size, f.sha256 or None) for f in files if f.path and f.type != "tree"}


def ms_fetch(a: argparse.Namespace, token: str | None, names: list[str]) -> None:
    from modelscope.hub.snapshot_download import snapshot_download

    try:
        # cache_dir inside the scratch folder: the client keeps its file locks there, not in ~/.cache/modelscope
        snapshot_download(a.repo, revision=a.revision, local_dir=a.out, cache_dir=str(Path(a.out) / MS_STATE),
                          endpoint=a.endpoint, token=token, allow_patterns=[glob.escape(n) for n in names],
                          max_workers=min(a.workers, 4))
    except Exception as exc:
        raise explain_ms(exc, a, token) from None


def explain_ms(exc: BaseException, a: argparse.Namespace, token: str | None) -> Failed:
    """A ModelScope client error → what went wrong (naming the repo and URL) and what to do."""
    import requests
    from modelscope_hub.errors import (
        APIError,
        AuthenticationError,
        FileDownloadError,
        NetworkError,
        NotExistError,
        PermissionDeniedError,
    )

    if isinstance(exc, requests.HTTPError) and isinstance(exc.__cause__, APIError):
        exc = exc.__cause__  # the compat snapshot_download wraps 401/403/404 in requests' HTTPError
    if isinstance(exc, FileDownloadError) and exc.failed_files:
        first = next(iter(exc.failed_files.values()))
        if isinstance(first, (APIError, NetworkError)):
            exc = first
    status = getattr(exc, "status_code", None)
    url = getattr(exc, "url", None) or f"{a.endpoint}/models/{a.repo}"
    resume = what_was_kept(a)
    token_hint = (f"the token in ${a.token_env} cannot read it: check that account's access" if token else
                  "if it is private, put a ModelScope access token (modelscope.cn > account settings > access "
                  "tokens) in an environment variable and pass --token-env VAR")
    if isinstance(exc, NotExistError) or status == 404:
        # ModelScope answers a missing model and a missing revision alike
        rev = f" (or has no revision '{a.revision}')" if a.revision != "master" else ""
        return Failed(f"{a.repo} not found at {a.endpoint}{rev} (HTTP {status}, {url})",
                      f"check the spelling (OWNER/NAME as on the model page) and --revision (a branch, tag or "
                      f"commit; ModelScope's default branch is master); {token_hint}", url)
    if isinstance(exc, AuthenticationError) or status == 401:
        return Failed(f"{a.endpoint} rejected the request for {a.repo} (HTTP {status}, {url})",
                      f"the token in ${a.token_env} is invalid or expired" if token else token_hint, url)
    if isinstance(exc, PermissionDeniedError) or status == 403:
        return Failed(f"{a.endpoint} refused {a.repo} (HTTP {status}, {url})",
                      "the token has no read access to it" if token else token_hint, url)
    if isinstance(exc, APIError) and status is not None:
        return Failed(f"{a.endpoint} answered HTTP {status} for {a.repo} ({url})",
                      f"try again later, or another endpoint (--endpoint); {resume}", url)
    network = (NetworkError, requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)
    if isinstance(exc, network):
        return Failed(f"cannot download {a.repo} from {a.endpoint}: {network_reason(exc)}",
                      "check the network or proxy (HTTPS_PROXY); outside mainland China try --endpoint "
                      f"https://www.modelscope.ai (or MODELSCOPE_ENDPOINT); {resume}", url)
    return Failed(f"downloading {a.repo} from {a.endpoint} failed: {type(exc).__name__}: {str(exc)[:500]}",
                  resume, url)


def run(a: argparse.Namespace, token: str | None) -> dict:
    out = Path(a.out)
    started = time.monotonic()
    hub = "ModelScope" if a.source == "modelscope" else "hub"
    commit, listed = ms_listing(a, token) if a.source == "modelscope" else hf_listing(a, token)
    names = select(sorted(listed), a.include, a.exclude)
    if not names:
        raise Failed(f"nothing to download from {a.repo}@{a.revision}: no file matches the selection "
                     f"(the repo has {len(listed)} files: {', '.join(sorted(listed)[:12])})",
                     "adjust --include/--exclude")
    skipped = sorted(set(listed) - set(names))
    total = sum(listed[n].size or 0 for n in names)
    at = f" = commit {commit}" if commit else ""
    print(f"[download] {a.repo}@{a.revision}{at} from {a.endpoint}: {len(names)} files, {total / 1e6:,.1f} MB",
          flush=True)
    if skipped:
        print(f"[download] skipping {len(skipped)} files (--include GLOB fetches them): "
              + ", ".join(skipped[:20]) + (" …" if len(skipped) > 20 else ""), flush=True)
    stop = threading.Event()
    ticker = threading.Thread(target=progress, args=(out, total, stop), daemon=True)
    ticker.start()
    try:
        if a.source == "modelscope":
            ms_fetch(a, token, names)
        else:
            hf_fetch(a, token, commit, names)
    finally:
        stop.set()
    files = verify(out, {n: listed[n] for n in names}, hub)
    finish(out, names)
    return {"ok": True, "verb": "download", "source": a.source, "repo": a.repo, "revision": a.revision,
            "commit": commit, "endpoint": a.endpoint, "files": files, "bytes": sum(f["size"] for f in files),
            "skipped": skipped, "seconds": round(time.monotonic() - started, 3)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--revision", default="main")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--source", choices=("hf", "modelscope"), default="hf")
    ap.add_argument("--out", required=True)
    ap.add_argument("--token-env", default=None)
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--exclude", action="append", default=[])
    ap.add_argument("--workers", type=int, default=8)
    a = ap.parse_args()
    die_with_parent()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ERROR).unlink(missing_ok=True)
    (out / REPORT).unlink(missing_ok=True)
    lock = open(out / LOCK, "w")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"error: another download into {out} is running", file=sys.stderr)
        return 1
    token = os.environ.get(a.token_env) if a.token_env else None
    try:
        report = run(a, token or None)
    except Failed as f:
        (out / ERROR).write_text(json.dumps({"message": f.message, "hint": f.hint, "url": f.url}), encoding="utf-8")
        print(f"error: {f.message}" + (f" ({f.hint})" if f.hint else ""), file=sys.stderr, flush=True)
        return 1
    (out / REPORT).write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / LOCK).unlink(missing_ok=True)
    print(f"[download] done: {len(report['files'])} files, {report['bytes']:,} bytes in {report['seconds']} s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
