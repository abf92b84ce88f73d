"""`download`: a model snapshot from the Hugging Face Hub or a mirror of it (hf-mirror.com, a company proxy), or
from ModelScope (`--source modelscope`), into a local folder, with the hub's own client (huggingface_hub's
`snapshot_download`, `modelscope.hub.snapshot_download`) run as a Job in the small `hub` runtime.

The files land in the scratch folder next to OUT (`.<name>.partial`) and are checked there against the hub's
listing (sizes, sha256) before one rename publishes OUT. A failed or killed run keeps the scratch folder, so
the next run of the same repo and revision resumes its partial files (both clients send Range requests).
The token never appears in argv or in a file: the worker reads the variable that `--token-env` names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from internlm_chain.chain.job import Job
from internlm_chain.errors import Problem, StageFailed
from internlm_chain.models import common

HUB = "https://huggingface.co"
MODELSCOPE = "https://modelscope.cn"  # the modelscope client's own default endpoint
SOURCES = ("hf", "modelscope")
DEFAULT_REVISION = {"hf": "main", "modelscope": "master"}
RUNTIME = "hub"  # huggingface_hub + modelscope, nothing else: a download needs no torch (runtimes/locks/hub-cpu.txt)
MARKER = ".ichain-download.json"  # in the scratch folder: which repo/revision its partial files belong to
ERROR = ".ichain-download-error.json"  # the worker's explained failure
OURS = (MARKER, ERROR, ".ichain-download.lock")
# huggingface_hub's own rule for repo ids (validate_repo_id): optional namespace, word chars - _ .
_REPO_ID = re.compile(r"^(\b[\w\-.]+\b/)?\b[\w\-.]+\b$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class DownloadPlan(common.PublishedOutput):
    repo: str
    revision: str
    endpoint: str
    out: Path
    python: list[str]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    token_env: str | None = None
    resume: bool = field(default=False, compare=False)  # the scratch holds an earlier partial of this download
    source: str = "hf"

    def marker(self) -> str:
        return json.dumps({"repo": self.repo, "revision": self.revision, "source": self.source}) + "\n"

    def job(self) -> Job:
        argv = [*self.python, str(common.WORKERS / "model_download.py"), "--repo", self.repo, "--revision",
                self.revision, "--endpoint", self.endpoint, "--out", str(self.scratch)]
        if self.source != "hf":
            argv += ["--source", self.source]
        if self.token_env:
            argv += ["--token-env", self.token_env]  # the variable's name; the worker reads its value
        for g in self.include:
            argv += ["--include", g]
        for g in self.exclude:
            argv += ["--exclude", g]
        # the other verbs run offline; this one is the download, and its own progress lines replace tqdm's
        env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        client = "huggingface_hub"
        if self.source == "modelscope":
            client = "modelscope"
            env["TQDM_DISABLE"] = "1"  # the modelscope client's per-file tqdm bars (no switch of its own)
            # its cache root (file locks; created even when files go to local_dir) inside the scratch folder
            env["MODELSCOPE_CACHE"] = str(self.scratch / ".cache" / "modelscope")
        j = common.job("download", argv, self.out.parent,
                       f"{client} snapshot_download of {self.repo}@{self.revision} from {self.endpoint} "
                       "into the scratch folder (resumes its partial files), then check sizes and sha256",
                       "cpu", expected=[self.scratch / common.REPORT], env=env)
        return j.model_copy(update={"files": {str(self.scratch / MARKER): self.marker()}, "runtime": RUNTIME})


def check_repo_id(repo: str, source: str = "hf") -> str:
    if repo.startswith(("/", ".", "~")):
        raise common.fail("REPO_ID", f"'{repo}' looks like a path", "a hub repo id, e.g. internlm/internlm2-chat-1_8b")
    if (repo.count("/") > 1 or not _REPO_ID.match(repo) or "--" in repo or ".." in repo or repo.endswith(".git")
            or len(repo) > 96 or (source == "modelscope" and repo.count("/") != 1)):
        what = "ModelScope model id" if source == "modelscope" else "Hugging Face repo id"
        raise common.fail("REPO_ID", f"'{repo}' is not a {what}",
                          "OWNER/NAME of letters, digits, '-', '_' or '.', e.g. internlm/internlm2-chat-1_8b")
    return repo


def _endpoint_setting(endpoint: str | None, source: str) -> tuple[str, str]:
    """(flag or variable that set it, URL). ModelScope's client reads MODELSCOPE_ENDPOINT, then the deprecated
    MODELSCOPE_DOMAIN (a bare host gets https://); we resolve the same chain here so the worker gets one URL."""
    if endpoint:
        return "--endpoint", endpoint
    if source == "modelscope":
        for var in ("MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN"):
            value = os.environ.get(var, "").strip()
            if value:
                if var == "MODELSCOPE_DOMAIN" and not value.lower().startswith(("http://", "https://")):
                    value = "https://" + value
                return var, value
        return "--endpoint", MODELSCOPE
    return "HF_ENDPOINT", os.environ.get("HF_ENDPOINT") or HUB


def check_endpoint(endpoint: str | None, source: str = "hf") -> str:
    flag, url = _endpoint_setting(endpoint, source)
    url = url.strip().rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        example = "https://www.modelscope.ai" if source == "modelscope" else "https://hf-mirror.com"
        raise common.fail(flag, f"'{url}' is not an http(s) URL", f"the hub or a mirror of its API, e.g. {example}")
    if parsed.query or parsed.fragment:
        raise common.fail(flag, f"'{url}' has a query or fragment", "the mirror's base URL")
    return url


def check_token_env(name: str | None) -> str | None:
    if name is None:
        return None
    if not _ENV_NAME.match(name):
        raise common.fail("--token-env", f"'{name}' is not an environment variable name",
                          "the NAME of a variable that holds the token (e.g. HF_TOKEN or MODELSCOPE_API_TOKEN), "
                          "never the token itself")
    if not os.environ.get(name):
        raise common.fail("--token-env", f"${name} is not set (or empty)", f"export {name}=<your token> first")
    return name


def _record(folder: Path, name: str) -> dict | None:
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def existing_download(out: Path, repo: str, revision: str, source: str = "hf") -> dict | None:
    """OUT's report when OUT is a finished download of this repo and revision (re-running is then a no-op)."""
    report = _record(out, common.REPORT)
    if report and report.get("verb") == "download" and report.get("repo") == repo \
            and report.get("revision") == revision and report.get("source", "hf") == source and report.get("ok"):
        return report
    return None


def _label(repo: str, revision: str, source: str) -> str:
    return f"{repo}@{revision}" + (f" from {source}" if source != "hf" else "")


def check_scratch(scratch: Path, repo: str, revision: str, source: str = "hf") -> bool:
    """True when the scratch folder holds an earlier partial of this download (resume it); False when
    there is none. Anything else there is not ours to reuse or delete."""
    if not scratch.exists() and not scratch.is_symlink():
        return False
    marker = _record(scratch, MARKER) if scratch.is_dir() and not scratch.is_symlink() else None
    if marker is None:
        raise common.fail("--out", f"{scratch} exists and is not a partial download",
                          "remove it, or choose another --out")
    theirs = (marker.get("repo"), marker.get("revision"), marker.get("source", "hf"))
    if theirs != (repo, revision, source):
        raise common.fail("--out", f"{scratch} holds a partial download of {_label(*theirs)}, not "
                          f"{_label(repo, revision, source)}",
                          "re-run that download to finish it, or remove the folder")
    return True


def plan_download(repo: str, out: Path, revision: str | None = None, include: list[str] | tuple[str, ...] = (),
                  exclude: list[str] | tuple[str, ...] = (), endpoint: str | None = None,
                  token_env: str | None = None, python: str | None = None, source: str = "hf") -> DownloadPlan:
    """Check every input (errors name the flag) and decide what will run; nothing is written."""
    if source not in SOURCES:
        raise common.fail("--source", f"'{source}' is not a source", "hf (the Hugging Face Hub or a mirror of "
                          "it) or modelscope")
    repo = check_repo_id(repo.strip(), source)
    revision = DEFAULT_REVISION[source] if revision is None else revision
    if not revision or revision != revision.strip() or any(c in revision for c in "\n\r\0"):
        raise common.fail("--revision", f"'{revision}' is not a revision", "a branch, tag or commit")
    for flag, globs in (("--include", include), ("--exclude", exclude)):
        if any(not g.strip() for g in globs):
            raise common.fail(flag, "an empty pattern", "a glob over the repo's paths, e.g. '*.gguf' or 'original/'")
    url = check_endpoint(endpoint, source)
    token_env = check_token_env(token_env)
    out_path = out.expanduser().resolve()
    if out_path.exists() and existing_download(out_path, repo, revision, source) is None:
        raise common.fail("--out", f"{out_path} already exists (and is not a download of "
                          f"{_label(repo, revision, source)})", "choose a new path, or remove it first")
    if out_path.parent.exists() and not out_path.parent.is_dir():
        raise common.fail("--out", f"{out_path.parent} is not a directory")
    resume = check_scratch(common.scratch_for(out_path), repo, revision, source) if not out_path.exists() else False
    return DownloadPlan(repo, revision, url, out_path, common.python_argv(python, RUNTIME), tuple(include),
                        tuple(exclude), token_env, resume, source)


def dry_run_text(plan: DownloadPlan) -> str:
    text = common.dry_run_text([plan.job()], plan.scratch, plan.out)
    if plan.out.exists():
        text = f"# {plan.out} already holds {_label(plan.repo, plan.revision, plan.source)}: nothing would run\n"
    elif plan.resume:
        text = f"# resumes the partial download in {plan.scratch}\n" + text
    return text


def _holds_data(scratch: Path) -> bool:
    """Whether a failed run left anything worth resuming (downloaded or partial file bytes)."""
    return any(p.is_file() and p.name not in OURS and p.stat().st_size > 0 for p in scratch.rglob("*"))


def download(repo: str, out: Path, revision: str | None = None, include: list[str] | tuple[str, ...] = (),
             exclude: list[str] | tuple[str, ...] = (), endpoint: str | None = None, token_env: str | None = None,
             python: str | None = None, quiet: bool = False, source: str = "hf") -> dict:
    """Download `repo` at `revision` (default: main on the Hugging Face Hub, master on ModelScope) into `out`
    (complete, checked, or not at all). Returns the report: commit (hf), files with sizes and sha256, bytes,
    seconds. A finished `out` of the same repo, revision and source is kept as is."""
    plan = plan_download(repo, out, revision, include, exclude, endpoint, token_env, python, source)
    done = existing_download(plan.out, plan.repo, plan.revision, plan.source) if plan.out.exists() else None
    if done is not None:
        return {**done, "already": True}
    common.check_runtime(plan.python, python is not None, RUNTIME)
    try:
        common.run_jobs([plan.job()], plan.log, quiet=quiet)
    except StageFailed as exc:
        why = _record(plan.scratch, ERROR)
        if plan.scratch.is_dir() and not _holds_data(plan.scratch):
            shutil.rmtree(plan.scratch)  # nothing to resume: leave no trace but the log
        if why:
            hint = "; ".join(h for h in (why.get("hint"), f"log: {plan.log}") if h)
            raise StageFailed(Problem(why.get("message", "download failed"), hint=hint)) from None
        if plan.scratch.is_dir():
            raise StageFailed(Problem(exc.problems[0].message, hint=f"re-run to resume from {plan.scratch}; "
                                      f"log: {plan.log}")) from None
        raise
    return common.publish(plan.scratch, plan.out, plan.log)
