"""The running deployment, seen from the `ichain` process: its state file, health, and stopping it.

The supervisor (workers/deploy_serve.py) records every process it started in
`<workdir>/.services/deploy/state.json` — outside the stage's staging directory, which is renamed
after collect, so pids and logs stay where they were recorded.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from internlm_chain.procs import pid_alive

STOP_GRACE_S = 15.0


def services_dir(workdir: Path) -> Path:
    return workdir / ".services" / "deploy"


def state_files(directory: Path) -> list[Path]:
    """Node 0's state first, then one per further node (multi-node deployments share the filesystem)."""
    main = directory / "state.json"
    others = sorted(directory.glob("state.node*.json"))
    return ([main] if main.exists() else []) + others


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def http_status(url: str, key: str | None = None, timeout: float = 3.0) -> int:
    import urllib.error  # here, not at the top: urllib.request costs ~10 ms of every `ichain` start
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return 0


def api_key(env_name: str | None) -> str | None:
    if not env_name:
        return None
    value = os.environ.get(env_name, "")
    return value.split(",")[0] or None


def log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 32 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    url: str
    log: str
    state: str  # up | starting | dead


@dataclass
class DeploymentStatus:
    state: str  # up | starting | dead | stopped | none
    endpoint: str = ""
    served_name: str = ""
    backend: str = ""
    services: list[ServiceStatus] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"state": self.state, "endpoint": self.endpoint, "served_name": self.served_name,
                "backend": self.backend, "services": [s.__dict__ for s in self.services]}


def status(directory: Path, key_env: str | None = None) -> DeploymentStatus:
    files = state_files(directory)
    if not files:
        return DeploymentStatus("none")
    head = read_state(files[0]) or {}
    key = api_key(key_env)
    result = DeploymentStatus("none", head.get("endpoint", ""), head.get("served_name") or "",
                              head.get("backend", ""))
    for f in files:
        st = read_state(f) or {}
        for svc in st.get("services", []):
            pid = svc.get("pid")
            if st.get("status") == "stopped" or not pid_alive(pid):
                state = "dead"
            elif http_status(svc["url"] + "/health", key) == 200:
                state = "up"
            else:
                state = "starting"
            result.services.append(ServiceStatus(svc["name"], pid, svc["url"], svc.get("log", ""), state))
    states = {s.state for s in result.services}
    if head.get("status") == "stopped" and states <= {"dead"}:
        result.state = "stopped"
    elif not result.services or "dead" in states:
        result.state = "dead"
    elif states == {"up"}:
        result.state = "up" if http_status(result.endpoint + "/v1/models", key) == 200 else "starting"
    else:
        result.state = "starting"
    return result


def stop(directory: Path, grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM each recorded process group, wait, then SIGKILL. Returns the pids that were running."""
    pids: list[int] = []
    for f in state_files(directory):
        st = read_state(f) or {}
        pids += [s["pid"] for s in st.get("services", []) if pid_alive(s.get("pid"))]
    for pid in pids:
        _killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if pid_alive(pid):
            _killpg(pid, signal.SIGKILL)
    for f in state_files(directory):
        st = read_state(f)
        if st is not None and st.get("status") != "stopped":
            st["status"] = "stopped"
            st["stopped"] = time.time()
            tmp = f.with_name(f.name + ".tmp")
            tmp.write_text(json.dumps(st, indent=2), encoding="utf-8")
            os.replace(tmp, f)
    return pids


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the server leads its own session, so its pid is its group id
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
