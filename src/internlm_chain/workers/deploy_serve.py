"""Start an OpenAI-compatible server (LMDeploy, its proxy, or the CPU stand-in) and wait until it serves.

Runs inside the serving runtime (stdlib only). Reads a JSON spec written by the deploy stage:

    python deploy_serve.py SPEC.json

Each service starts in a session of its own with its output in its log file, so it outlives this
supervisor (background mode) and can be stopped as a group by its recorded pid. The state file is
written before waiting, so `ichain deploy status/stop` see a server that is still starting. Exits 0
once every service answers /health and the endpoint lists the served model; exits 1 with the log tail
when a service dies or the timeout passes (the services it started are stopped then). In foreground
mode (under srun, or `ichain deploy serve --foreground`) it stays and ends the services when signalled.
Secrets never appear in the spec: an argv word `$NAME` listed in `secret_env` is replaced here by the
value of the environment variable NAME.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

PROGRESS_EVERY_S = 10.0
POLL_S = 0.5
TAIL_LINES = 40
GRACE_S = 15.0


def log(msg: str) -> None:
    print(f"[deploy] {msg}", flush=True)


def tail(path: str, n: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def write_json_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def http_get(url: str, key: str | None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return 0, b""


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_groups(pids: list[int], grace: float = GRACE_S) -> None:
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def substitute(words: list[str], values: dict[str, str]) -> list[str]:
    out: list[str] = []
    for w in words:
        if w in values and w.startswith("$"):
            out += [k for k in values[w].split(",") if k]  # `--api-keys` takes several words
            continue
        for key, value in values.items():
            if key.startswith("@"):
                w = w.replace(key, value)
        out.append(w)
    return out


def placeholder_values(spec: dict) -> dict[str, str]:
    values = {"@HOST@": socket.gethostname()}
    # under Slurm the launcher exports MASTER_ADDR (the allocation's first node, where the proxy runs)
    values["@PROXY_HOST@"] = os.environ.get("MASTER_ADDR") or socket.gethostname()
    for name in spec.get("secret_env", []):
        value = os.environ.get(name)
        if not value:
            log(f"error: environment variable {name} (api_key_env) is not set")
            sys.exit(2)
        values["$" + name] = value
    return values


def previous_pids(state_path: str) -> list[int]:
    try:
        with open(state_path, encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return []
    return [s["pid"] for s in state.get("services", []) if s.get("pid") and alive(s["pid"])]


class Supervisor:
    def __init__(self, spec: dict):
        self.spec = spec
        self.rank = int(os.environ.get("SLURM_NODEID", "0") or 0)
        self.state_path = spec["state"] if self.rank == 0 else spec["state"].replace(".json", f".node{self.rank}.json")
        self.values = placeholder_values(spec)
        self.services = [s for s in spec["services"] if self.rank == 0 or not s.get("node0_only")]
        self.procs: list[tuple[dict, subprocess.Popen]] = []
        keys = self.values.get("$" + spec["secret_env"][0], "") if spec.get("secret_env") else ""
        self.key = keys.split(",")[0] if keys else None
        self.state: dict = {}

    # ---- start ----------------------------------------------------------------------------------
    def start(self) -> None:
        for note in self.spec.get("notes", []):
            log(note)
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        old = previous_pids(self.state_path)
        if old:
            log(f"stopping the previous deployment (pids {', '.join(map(str, old))})")
            stop_groups(old)
        for svc in self.services:
            host = self.values["@HOST@"] if svc["host"] == "@HOST@" else svc["host"]
            if not port_free(host, svc["port"]):
                log(f"error: port {svc['port']} on {host} is already in use (another server?); "
                    "choose another `port` or stop what listens there")
                sys.exit(2)
        self.state = {"endpoint": substitute([self.spec["endpoint"]], self.values)[0],
                      "served_name": self.spec.get("served_name"), "backend": self.spec.get("backend"),
                      "mode": self.spec.get("mode", "background"), "started": time.time(),
                      "supervisor_pid": os.getpid(), "status": "starting", "services": []}
        for svc in self.services:
            argv = substitute(svc["argv"], self.values)
            os.makedirs(os.path.dirname(svc["log"]), exist_ok=True)
            logf = open(svc["log"], "ab")
            env = {**os.environ, **svc.get("env", {})}
            try:
                proc = subprocess.Popen(argv, cwd=self.spec.get("cwd") or None, env=env, stdout=logf,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                log(f"error: cannot start {svc['name']}: {exc}")
                self.fail(None)
            finally:
                logf.close()
            self.procs.append((svc, proc))
            url = substitute([svc["url"]], self.values)[0]
            self.state["services"].append({"name": svc["name"], "pid": proc.pid, "url": url, "log": svc["log"],
                                           "command": svc.get("display", "")})
            write_json_atomic(self.state_path, self.state)
            log(f"started {svc['name']} (pid {proc.pid}), log: {svc['log']}")

    # ---- readiness --------------------------------------------------------------------------------
    def wait_ready(self) -> None:
        timeout = float(self.spec.get("timeout_s", 900))
        t0 = time.monotonic()
        next_progress = t0 + PROGRESS_EVERY_S
        pending = [(svc, proc, self.state["services"][i]["url"]) for i, (svc, proc) in enumerate(self.procs)]
        checks = list(pending)
        while True:
            for svc, proc, _url in checks:
                if proc.poll() is not None:
                    log(f"error: {svc['name']} exited with code {proc.returncode} during start-up")
                    self.fail(svc)
            pending = [(svc, proc, url) for svc, proc, url in pending if not self.ready(svc, url)]
            if not pending and self.endpoint_ready():
                break
            now = time.monotonic()
            if now - t0 > timeout:
                waiting = ", ".join(s["name"] for s, _, _ in pending) or "the endpoint"
                log(f"error: {waiting} not ready after {timeout:.0f} s (startup_timeout_s)")
                self.fail(pending[0][0] if pending else self.procs[0][0])
            if now >= next_progress:
                what = ", ".join(s["name"] for s, _, _ in pending) or "the model list"
                log(f"waiting for {what}: {now - t0:.0f} s (timeout {timeout:.0f} s)")
                next_progress = now + PROGRESS_EVERY_S
            time.sleep(POLL_S)
        self.state["status"] = "up"
        self.state["ready_after_s"] = round(time.monotonic() - t0, 1)
        write_json_atomic(self.state_path, self.state)
        log(f"ready after {self.state['ready_after_s']} s: {self.state['endpoint']} "
            f"(model name: {self.state['served_name']})")

    def ready(self, svc: dict, url: str) -> bool:
        code, _ = http_get(url + svc.get("health", "/health"), self.key)
        return code == 200

    def endpoint_ready(self) -> bool:
        """Rank 0 only: the client URL lists the served model (and, behind a proxy, every server)."""
        if self.rank != 0:
            return True
        endpoint = self.state["endpoint"]
        expect = int(self.spec.get("expect_servers", 0))
        if expect:
            code, body = http_get(endpoint + "/nodes/status", self.key)
            try:
                nodes = json.loads(body) if code == 200 else {}
            except ValueError:
                nodes = {}
            if len(nodes) < expect:
                return False
        code, body = http_get(endpoint + "/v1/models", self.key)
        if code != 200:
            return False
        name = self.spec.get("served_name")
        try:
            ids = [m.get("id") for m in json.loads(body).get("data", [])]
        except (ValueError, AttributeError):
            return False
        return not name or name in ids

    # ---- failure / foreground ---------------------------------------------------------------------
    def fail(self, svc: dict | None) -> None:
        stop_groups([p.pid for _, p in self.procs], grace=5.0)
        self.state["status"] = "failed"
        if self.state.get("services"):
            write_json_atomic(self.state_path, self.state)
        if svc is not None:
            log(f"last lines of {svc['log']}:")
            print(tail(svc["log"]), flush=True)
        sys.exit(1)

    def foreground(self) -> int:
        stopping: list[int] = []

        def on_signal(signum, _frame):
            stopping.append(signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stopping:
            for svc, proc in self.procs:
                if proc.poll() is not None:
                    log(f"{svc['name']} exited with code {proc.returncode}")
                    stop_groups([p.pid for _, p in self.procs])
                    return proc.returncode or 1
            time.sleep(POLL_S)
        log("stopping")
        stop_groups([p.pid for _, p in self.procs])
        self.state["status"] = "stopped"
        write_json_atomic(self.state_path, self.state)
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    sup = Supervisor(spec)

    def interrupted(signum, _frame):
        log("interrupted during start-up; stopping what was started")
        stop_groups([p.pid for _, p in sup.procs], grace=5.0)
        sys.exit(130)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    sup.start()
    sup.wait_ready()
    if spec.get("mode") == "foreground":
        return sup.foreground()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
