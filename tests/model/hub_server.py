"""A real HTTP server on 127.0.0.1 speaking the part of the Hugging Face Hub API that huggingface_hub's
`snapshot_download` calls (read from huggingface_hub 0.36: hf_api.model_info, file_download.
get_hf_file_metadata / http_get, utils/_http.hf_raise_for_status):

- GET  /api/models/{repo}[/revision/{rev}][?blobs=True] → {id, sha, siblings: [{rfilename, size, blobId,
  lfs: {size, sha256, pointerSize}}]}  (size/blobId/lfs only with blobs=True, as the hub does)
- HEAD/GET /{repo}/resolve/{rev}/{path} → a small (git) file: 200 with ETag = git blob sha1, Content-Length,
  X-Repo-Commit; an LFS file: 302 to /cdn/{sha256} with X-Linked-Etag = sha256, X-Linked-Size, X-Repo-Commit
- GET  /cdn/{sha256} → the bytes, honouring `Range: bytes=N-` with 206 + Content-Range (no auth: a signed
  URL on the real hub)
- errors with the hub's X-Error-Code / X-Error-Message headers: 401 RepoNotFound for a private repo without
  a token, 401 "Invalid credentials in Authorization header" for a wrong one, 404 RepoNotFound /
  RevisionNotFound / EntryNotFound.

The same server also speaks the part of ModelScope's API that `modelscope.hub.snapshot_download` calls (read
from modelscope 1.40.2 / modelscope-hub 0.5.1: _legacy_api.LegacyClient.list_repo_files / download_stream /
get_repo_info, _download.DownloadManager._detect_region_uncached / _download_with_resume, errors.raise_for_status):

- GET /api/v1/models/{owner}/{name}/repo/files?Revision=R&Recursive=True[&Root=DIR] → {Code, Success, Data: {Files:
  [{Name, Path, Type: blob|tree, Size, Sha256, IsLFS}]}} (the client reads Data.Files)
- GET /api/v1/models/{owner}/{name}/repo?Revision=R&FilePath=P → the bytes (small files), or 302 to /cdn/{sha256}
  for LFS files (as ModelScope redirects to its object store); Range honoured there
- GET /api/v1/models/{owner}/{name} → repo info (the client asks when a listing Root is missing)
- GET /api/v1/repos/internalAccelerationInfo → no internal region (the client's Aliyun-intranet probe)
- auth: `Authorization: Bearer TOKEN` or the `m_session_id` cookie (the client sends both); errors as JSON
  {Code, Message, Success: false} with 404 (model or revision missing) / 401 (no or wrong token)

Every request is recorded (method, path, headers) so tests can check what the client really sent; a file can
be set to stall after N bytes (until `release` is set) to kill a download midway.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_MIN = 4096  # larger files (and every *.safetensors) are served as LFS objects, like the hub's


@dataclass
class Repo:
    files: dict[str, bytes]
    token: str | None = None  # private: this bearer token is required
    sha: str = ""

    def __post_init__(self):
        if not self.sha:
            h = hashlib.sha1()
            for name in sorted(self.files):
                h.update(name.encode() + hashlib.sha1(self.files[name]).digest())
            self.sha = h.hexdigest()

    @staticmethod
    def from_folder(folder: Path, extra: dict[str, bytes] | None = None, token: str | None = None) -> Repo:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return Repo({**files, **(extra or {})}, token)


def is_lfs(name: str, data: bytes) -> bool:
    return len(data) >= LFS_MIN or name.endswith(".safetensors")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Hub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    stall: dict[str, int] = field(default_factory=dict)  # sha256 of an LFS object → stall after this many bytes
    release: threading.Event = field(default_factory=threading.Event)
    sent: dict[str, int] = field(default_factory=dict)  # bytes of each LFS object sent (all requests)
    url: str = ""

    def blobs(self) -> dict[str, bytes]:
        return {hashlib.sha256(d).hexdigest(): d for r in self.repos.values() for n, d in r.files.items()
                if is_lfs(n, d)}

    def seen(self, method: str | None = None, path_part: str = "") -> list[tuple[str, str, dict]]:
        return [r for r in list(self.requests) if (method is None or r[0] == method) and path_part in r[1]]


def ms_listing(repo: Repo, root: str = "", recursive: bool = True) -> list[dict]:
    """ModelScope's file entries under `root` (every file when recursive; else its direct files and folders)."""
    entries: dict[str, dict] = {}
    prefix = root + "/" if root else ""
    for name, data in sorted(repo.files.items()):
        if not name.startswith(prefix):
            continue
        rel = name[len(prefix):]
        if not recursive and "/" in rel:
            folder = prefix + rel.split("/")[0]
            entries[folder] = {"Name": folder.rsplit("/", 1)[-1], "Path": folder, "Type": "tree", "Size": 0}
            continue
        entries[name] = {"Name": name.rsplit("/", 1)[-1], "Path": name, "Type": "blob", "Size": len(data),
                         "Sha256": hashlib.sha256(data).hexdigest(), "IsLFS": is_lfs(name, data),
                         "Revision": repo.sha}
    return list(entries.values())


def _handler(hub: Hub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: the test output is the client's
            pass

        def _record(self):
            hub.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

        def _error(self, status: int, code: str | None = None, message: str | None = None):
            body = json.dumps({"error": message or code or str(status)}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            if message:
                self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            if repo.token is not None:
                auth = self.headers.get("Authorization")
                if auth is None:
                    self._error(401, "RepoNotFound", "Invalid username or password.")
                    return None
                if auth != f"Bearer {repo.token}":
                    self._error(401, None, "Invalid credentials in Authorization header")
                    return None
            return repo

        def do_HEAD(self):
            self._serve()

        def do_GET(self):
            self._serve()

        def _serve(self):
            self._record()
            url = urlparse(self.path)
            parts = [unquote(p) for p in url.path.split("/")[1:]]
            if parts[:2] == ["api", "v1"]:
                return self._modelscope(parts[2:], parse_qs(url.query))
            if parts[:2] == ["api", "models"]:
                return self._info(parts[2:], parse_qs(url.query))
            if parts[:1] == ["cdn"] and len(parts) == 2:
                data = hub.blobs().get(parts[1])
                return self._bytes(data, parts[1]) if data is not None else self._error(404)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            self._error(404)

        def _info(self, rest: list[str], query: dict):
            repo_id, rev = "/".join(rest[:2]), "main"
            if len(rest) == 4 and rest[2] == "revision":
                rev = rest[3]
            elif len(rest) != 2:
                return self._error(404)
            repo = self._repo(repo_id)
            if repo is None:
                return
            if rev not in ("main", repo.sha):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            blobs = query.get("blobs") == ["True"]
            siblings = []
            for name, data in sorted(repo.files.items()):
                s = {"rfilename": name}
                if blobs:
                    s.update(size=len(data), blobId=git_blob_sha1(data))
                    if is_lfs(name, data):
                        s["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                siblings.append(s)
            body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": repo.token is not None,
                               "siblings": siblings}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _ms_error(self, status: int, message: str):
            self._json(status, {"Code": status, "Message": message, "RequestId": "test", "Success": False})

        def _ms_repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._ms_error(404, "Model does not exist.")
                return None
            if repo.token is not None:
                cookie = self.headers.get("Cookie") or ""
                sent = {c.strip() for c in cookie.split(";")}
                if self.headers.get("Authorization") != f"Bearer {repo.token}" \
                        and f"m_session_id={repo.token}" not in sent:
                    self._ms_error(401, "Unauthorized: login required or the access token is invalid")
                    return None
            return repo

        def _modelscope(self, rest: list[str], query: dict):
            if rest == ["repos", "internalAccelerationInfo"]:
                return self._json(200, {"Code": 200, "Success": True, "Data": {"InternalRegionQueryAddress": ""}})
            if len(rest) < 3 or rest[0] != "models":
                return self._ms_error(404, "Not found")
            repo_id, tail = "/".join(rest[1:3]), rest[3:]
            repo = self._ms_repo(repo_id)
            if repo is None:
                return
            if not tail:
                return self._json(200, {"Code": 200, "Success": True, "Data": {"Path": repo_id.split("/")[0],
                                                                                "Name": repo_id.split("/")[1]}})
            rev = query.get("Revision", ["master"])[0]
            if rev not in ("master", repo.sha):
                return self._ms_error(404, f"Revision {rev} does not exist")
            if tail == ["repo", "files"]:
                root = query.get("Root", [""])[0].strip("/")
                recursive = query.get("Recursive", ["False"])[0] == "True"
                return self._json(200, {"Code": 200, "Success": True, "Data": {"Files": ms_listing(repo, root,
                                                                                                    recursive)}})
            if tail == ["repo"]:
                name = query.get("FilePath", [""])[0]
                data = repo.files.get(name)
                if data is None:
                    return self._ms_error(404, f"File {name} does not exist")
                if is_lfs(name, data):
                    self.send_response(302)
                    self.send_header("Location", f"{hub.url}/cdn/{hashlib.sha256(data).hexdigest()}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                return
            self._ms_error(404, "Not found")

        def _resolve(self, repo_id: str, rev: str, name: str):
            repo = self._repo(repo_id)
            if repo is None:
                return
            if rev not in ("main", repo.sha):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            data = repo.files.get(name)
            if data is None:
                return self._error(404, "EntryNotFound", f"{name} does not exist on \"{rev}\"")
            if is_lfs(name, data):
                digest = hashlib.sha256(data).hexdigest()
                self.send_response(302)
                self.send_header("Location", f"{hub.url}/cdn/{digest}")
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", f'"{git_blob_sha1(data)}"')
                self.send_header("X-Repo-Commit", repo.sha)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", f'"{git_blob_sha1(data)}"')
            self.send_header("X-Repo-Commit", repo.sha)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _bytes(self, data: bytes, key: str):
            start = 0
            rng = self.headers.get("Range")
            if rng:
                first = rng.removeprefix("bytes=").split("-")[0]
                start = int(first)
            body = data[start:]
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{key}"')
            self.end_headers()
            if self.command == "HEAD":
                return
            limit = hub.stall.get(key)
            if limit is not None and not hub.release.is_set():
                head = body[:max(0, limit - start)]
                self.wfile.write(head)
                self.wfile.flush()
                hub.sent[key] = hub.sent.get(key, 0) + len(head)
                hub.release.wait(120)  # hang like a dead link until the test is done killing the client
                self.close_connection = True
                return
            for i in range(0, len(body), 1 << 20):
                self.wfile.write(body[i:i + (1 << 20)])
                hub.sent[key] = hub.sent.get(key, 0) + len(body[i:i + (1 << 20)])

    return Handler


class HubServer:
    """`with HubServer(hub) as url:` serves `hub` on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
        self.server.daemon_threads = True
        hub.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.hub.url

    def __exit__(self, *exc):
        self.hub.release.set()
        self.server.shutdown()
        self.server.server_close()
