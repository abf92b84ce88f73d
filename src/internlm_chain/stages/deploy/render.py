"""Pure rendering of the serving commands: LMDeploy's api_server / proxy / lite, and the CPU stand-in.

Everything here is a function of resolved settings, so the golden tests pin the exact command lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from internlm_chain.stages.deploy.settings import DeploySettings
from internlm_chain.workers import deploy_keyed, deploy_quantize

# XTuner's prompt-template names (the chain's `model.chat_template`) → LMDeploy's chat-template names
LMDEPLOY_TEMPLATES = {
    "internlm2_chat": "internlm2",
    "internlm_chat": "internlm",
    "qwen_chat": "qwen",
    "llama3_chat": "llama3",
    "llama2_chat": "llama2",
    "mistral": "mistral",
    "chatglm3": "chatglm3",
}

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
KEYED_WORKER = Path(deploy_keyed.__file__)
QUANTIZE_WORKER = Path(deploy_quantize.__file__)


@dataclass(frozen=True)
class Resolved:
    """The deploy settings with every default filled in from the chain and the device."""

    settings: DeploySettings
    model: str
    engine: str  # lmdeploy | transformers
    backend: str | None  # turbomind | pytorch | None (let LMDeploy choose) — engine lmdeploy only
    model_format: str  # hf | awq | gptq
    served_name: str
    chat_template: str
    services_dir: Path
    python: tuple[str, ...]  # the serving runtime's interpreter argv
    adapter: str | None = None  # a LoRA adapter LMDeploy applies on top of `model` (pytorch engine)

    @property
    def engine_name(self) -> str:
        """The name LMDeploy gives the model itself: with an adapter, clients' name is the adapter's."""
        return f"{self.served_name}-base" if self.adapter else self.served_name

    @property
    def url(self) -> str:
        s = self.settings
        if s.proxy.enabled:
            host = "@PROXY_HOST@" if s.proxy.nodes > 1 and s.proxy.host in LOOPBACK else s.proxy.host
            return f"http://{_url_host(host)}:{s.proxy.port}"
        return f"http://{_url_host(self.settings.host)}:{s.port}"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def lmdeploy_argv(r: Resolved, args: list[str]) -> list[str]:
    """`python -m lmdeploy ARGS`, or — with an API key — the wrapper that hands LMDeploy the key(s) from
    the environment in-process, so they appear in no file and in no process's argv (workers/deploy_keyed.py)."""
    if r.settings.api_key_env:
        return [*r.python, str(KEYED_WORKER), "--key-env", r.settings.api_key_env, "--", *args]
    return [*r.python, "-m", "lmdeploy", *args]


def api_server_argv(r: Resolved, *, host: str, port: int, proxy_url: str | None = None) -> list[str]:
    s = r.settings
    argv = ["serve", "api_server", r.model]
    if r.backend:
        argv += ["--backend", r.backend]
    argv += ["--tp", str(s.tp), "--server-name", host, "--server-port", str(port), "--model-name", r.engine_name]
    if r.adapter:
        argv += ["--adapters", f"{r.served_name}={r.adapter}"]
    if s.session_len:
        argv += ["--session-len", str(s.session_len)]
    argv += ["--cache-max-entry-count", _num(s.cache_max_entry_count), "--quant-policy", str(s.quant_policy)]
    if s.max_batch_size:
        argv += ["--max-batch-size", str(s.max_batch_size)]
    argv += ["--model-format", r.model_format]
    if s.dtype != "auto":
        argv += ["--dtype", s.dtype]
    template = LMDEPLOY_TEMPLATES.get(r.chat_template)
    if template:
        argv += ["--chat-template", template]
    if proxy_url:
        argv += ["--proxy-url", proxy_url]
    return lmdeploy_argv(r, argv + list(s.extra_args))


def proxy_argv(r: Resolved) -> list[str]:
    p = r.settings.proxy
    host = "0.0.0.0" if p.nodes > 1 and p.host in LOOPBACK else p.host
    return lmdeploy_argv(r, ["serve", "proxy", "--server-name", host, "--server-port", str(p.port),
                             "--routing-strategy", p.routing_strategy])


def standin_argv(r: Resolved) -> list[str]:
    """`transformers serve` pinned to the model: the same OpenAI API, on CPU."""
    s = r.settings
    argv = [*r.python, "-m", "transformers.cli.transformers", "serve", r.model, "--host", s.host,
            "--port", str(s.port), "--device", "cpu", "--log-level", "info"]
    if s.dtype != "auto":
        argv += ["--dtype", s.dtype]
    return argv


def quantize_argv(python: list[str], r: Resolved, model: str, out: str, key: str) -> list[str]:
    """The quantise-once worker around `lmdeploy lite`: it writes into a scratch folder (`@WORK@`) and
    publishes `out` complete, with a marker for `key`, or not at all."""
    return [*python, str(QUANTIZE_WORKER), "--out", out, "--key", key, "--", *lite_args(r, model, deploy_quantize.WORK)]


def lite_args(r: Resolved, model: str, work_dir: str) -> list[str]:
    q = r.settings.quantize
    if q.method == "awq":
        argv = ["-m", "lmdeploy", "lite", "auto_awq", model, "--work-dir", work_dir,
                "--calib-dataset", q.calib_dataset, "--calib-samples", str(q.calib_samples),
                "--calib-seqlen", str(q.calib_seqlen), "--w-bits", str(q.w_bits),
                "--w-group-size", str(q.w_group_size)]
    else:
        argv = ["-m", "lmdeploy", "lite", "smooth_quant", model, "--work-dir", work_dir,
                "--calib-dataset", q.calib_dataset, "--calib-samples", str(q.calib_samples),
                "--calib-seqlen", str(q.calib_seqlen)]
    if r.settings.dtype != "auto":
        argv += ["--dtype", r.settings.dtype]
    return argv


def quantize_env(r: Resolved) -> dict[str, str]:
    """Calibration data from a local Hugging Face cache, never the network."""
    q = r.settings.quantize
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if q.calib_data:
        env["HF_HOME"] = q.calib_data
    return env


@dataclass
class Service:
    name: str
    argv: list[str]
    host: str
    port: int
    log: str
    env: dict[str, str] = field(default_factory=dict)
    node0_only: bool = False

    def to_spec(self) -> dict:
        import shlex

        url_host = "@HOST@" if self.host in ("0.0.0.0", "@HOST@") and self.name != "proxy" else _url_host(self.host)
        return {"name": self.name, "argv": self.argv, "host": self.host, "port": self.port, "log": self.log,
                "env": self.env, "node0_only": self.node0_only, "url": f"http://{url_host}:{self.port}",
                "display": shlex.join(self.argv)}


def services(r: Resolved) -> list[Service]:
    """The processes one node runs: a single server, or the proxy and its api_servers."""
    s, logs = r.settings, r.services_dir
    if r.engine == "transformers":
        return [Service("server", standin_argv(r), s.host, s.port, str(logs / "server.log"))]
    if not s.proxy.enabled:
        return [Service("api_server", api_server_argv(r, host=s.host, port=s.port), s.host, s.port,
                        str(logs / "api_server.log"))]
    p = s.proxy
    multi_node = p.nodes > 1
    out = [Service("proxy", proxy_argv(r), "0.0.0.0" if multi_node and p.host in LOOPBACK else p.host, p.port,
                   str(logs / "proxy.log"), node0_only=True)]
    proxy_url = r.url
    for i in range(p.servers_per_node):
        port = s.port + i
        # other nodes must reach each server under the name it registers with: this node's hostname
        host = "@HOST@" if multi_node else s.host
        gpus = ",".join(str(g) for g in range(i * s.tp, (i + 1) * s.tp))
        name = f"api_server{i}"
        log = str(logs / (f"{name}-@HOST@.log" if multi_node else f"{name}.log"))
        out.append(Service(name, api_server_argv(r, host=host, port=port, proxy_url=proxy_url), host, port, log,
                           env={"CUDA_VISIBLE_DEVICES": gpus} if p.servers_per_node > 1 else {}))
    return out


def spec(r: Resolved, mode: str, state_path: Path) -> dict:
    """The supervisor's input (workers/deploy_serve.py)."""
    svcs = services(r)
    p = r.settings.proxy
    return {
        "state": str(state_path),
        "cwd": str(r.services_dir),
        "mode": mode,
        "backend": r.engine if r.engine == "transformers" else (r.backend or "auto"),
        "endpoint": r.url,
        "served_name": r.served_name,
        "timeout_s": r.settings.startup_timeout_s,
        "expect_servers": p.nodes * p.servers_per_node if p.enabled else 0,
        "secret_env": [r.settings.api_key_env] if r.settings.api_key_env else [],
        "services": [svc.to_spec() for svc in svcs],
    }


def _num(x: float) -> str:
    return f"{x:g}"
