"""The `deploy` stage: serve the chain's model with LMDeploy (or the CPU stand-in) in the background.

Its one serving Job runs workers/deploy_serve.py, which starts the server detached, waits until it
answers /health and lists the served model, and exits; the server keeps running. `collect` turns the
supervisor's state file into an `Endpoint`; `is_current` re-runs the stage when the server is gone.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from internlm_chain.chain.artifacts import Artifact, Endpoint, QuantizedModel
from internlm_chain.chain.fingerprint import stable_hash
from internlm_chain.chain.job import Job, Resources
from internlm_chain.errors import Problem, StageFailed
from internlm_chain.procs import pid_alive
from internlm_chain.stages.base import JobResult, Stage, StageContext
from internlm_chain.stages.deploy import render, service
from internlm_chain.stages.deploy.render import LOOPBACK, Resolved

WORKERS = Path(__file__).resolve().parents[2] / "workers"
SERVE_WORKER = WORKERS / "deploy_serve.py"
CALIB_DIRS = {  # LMDeploy's calibration set → the Hugging Face cache folder that holds it
    "pileval": "datasets--mit-han-lab--pile-val-backup",
    "wikitext2": "datasets--wikitext",
    "c4": "datasets--allenai--c4",
    "ptb": "datasets--ptb_text_only",
}
STANDIN_NOTE = ("no GPU: serving with the CPU stand-in (`transformers serve`, same OpenAI API; "
                "LMDeploy-only settings such as tp, quant_policy and cache_max_entry_count do not apply)")


def _model_dir_format(path: str) -> str | None:
    """awq/gptq when the model's config.json says it is quantised that way, else None."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    method = str((cfg.get("quantization_config") or {}).get("quant_method", "")).lower()
    return method if method in ("awq", "gptq") else None


class DeployStage(Stage):
    name = "deploy"
    runtime = "lmdeploy"
    needs = ("pretrain", "finetune")
    service = True  # its server may be stopped after the chain; restarted only when a consumer runs

    # ---- resolution (pure) -------------------------------------------------------------------------
    def model_source(self, ctx: StageContext) -> tuple[str | None, str]:
        """The model to serve and where that choice came from (for error messages)."""
        s = ctx.settings
        if s.model:
            p = Path(os.path.expanduser(s.model))
            return str(p if p.is_absolute() else (ctx.chain.base_dir / p).resolve()), "model"
        for key in ("finetune.model", "pretrain.model"):
            if key in ctx.inputs:
                return ctx.inputs[key].path, key
        path = ctx.chain.config.model.path
        if path:
            p = Path(os.path.expanduser(path))
            return str(p if p.is_absolute() else (ctx.chain.base_dir / p).resolve()), "model.path"
        return None, ""

    def engine(self, ctx: StageContext) -> str:
        backend = ctx.settings.backend
        if backend == "transformers" or (backend == "auto" and ctx.device == "cpu"):
            return "transformers"
        return "lmdeploy"

    def runtimes_for(self, device: str) -> list[str]:
        """What `ichain env sync -c` installs for this stage (auto backend: the stand-in without a GPU)."""
        return ["lmdeploy"] if device == "cuda" else ["serve-cpu"]

    def serving_runtime(self, ctx: StageContext) -> str:
        return "serve-cpu" if self.engine(ctx) == "transformers" else "lmdeploy"

    def quantized_dir(self, ctx: StageContext, base: Path | None = None) -> Path:
        return (base or ctx.out_dir) / "quantized"

    def resolve(self, ctx: StageContext) -> Resolved:
        s = ctx.settings
        engine = self.engine(ctx)
        model, _ = self.model_source(ctx)
        model = model or ""
        fmt = s.model_format
        if s.quantize.enabled:
            model = str(self.quantized_dir(ctx))
            fmt = fmt or ("awq" if s.quantize.method == "awq" else "hf")
        fmt = fmt or _model_dir_format(model) or "hf"
        backend = s.backend if s.backend in ("turbomind", "pytorch") else None
        if s.quantize.enabled and s.quantize.method == "smooth_quant":
            backend = "pytorch"  # W8A8 weights run on the PyTorch engine only
        if engine == "transformers":
            served = model  # the stand-in only answers to the path it was started with
        else:
            served = s.served_name or ctx.chain.config.name
        return Resolved(settings=s, model=model, engine=engine, backend=backend, model_format=fmt,
                        served_name=served, chat_template=s.chat_template or ctx.chain.config.model.chat_template,
                        services_dir=service.services_dir(ctx.chain.workdir),
                        python=tuple(ctx.python(self.serving_runtime(ctx))))

    def mode(self, ctx: StageContext) -> str:
        """Services under Slurm must stay in the job (its end kills them); locally they detach."""
        s = ctx.settings
        launcher = s.launcher.kind if s.launcher and "kind" in s.launcher.model_fields_set else \
            ctx.chain.config.launcher.kind
        return "foreground" if launcher == "slurm" else "background"

    # ---- validate ----------------------------------------------------------------------------------
    def validate(self, ctx: StageContext) -> list[Problem]:
        s = ctx.settings
        problems: list[Problem] = []
        engine = self.engine(ctx)
        if ctx.device == "cpu" and s.backend in ("turbomind", "pytorch"):
            problems.append(ctx.problem("backend", f"LMDeploy's {s.backend} engine needs an NVIDIA GPU and this "
                                        "chain runs on CPU", "use backend: auto (CPU stand-in) or transformers, "
                                        "or run on a GPU host (device: cuda)"))
        if ctx.device == "cpu" and s.quantize.enabled:
            problems.append(ctx.problem("quantize.enabled", "LMDeploy's quantisation (lmdeploy lite) needs a GPU",
                                        "quantise on a GPU host, then serve the result here"))
        problems += self._validate_model(ctx)
        problems += self._validate_quantize(ctx)
        if s.quantize.enabled and s.quantize.method == "smooth_quant" and s.backend == "turbomind":
            problems.append(ctx.problem("backend", "SmoothQuant (W8A8) weights run on the pytorch engine only",
                                        "set backend: pytorch or auto"))
        if s.api_key_env and not os.environ.get(s.api_key_env):
            problems.append(ctx.problem("api_key_env", f"environment variable {s.api_key_env} is not set",
                                        f"export {s.api_key_env}=<key> before serving"))
        if engine == "transformers" and s.api_key_env and s.host not in LOOPBACK:
            problems.append(ctx.problem("host", "the CPU stand-in does not check API keys, so it must not listen "
                                        f"on {s.host}", "use host: 127.0.0.1 on CPU"))
        if engine == "transformers" and s.proxy.enabled:
            problems.append(ctx.problem("proxy.enabled", "LMDeploy's proxy needs LMDeploy api_servers (GPU)",
                                        "disable the proxy on CPU"))
        if s.proxy.enabled and s.proxy.nodes > 1 and self.mode(ctx) != "foreground":
            problems.append(ctx.problem("proxy.nodes", "api_servers on several nodes need the slurm launcher",
                                        "set launcher.kind: slurm (stages.deploy.launcher or the chain's)"))
        problems += self._validate_ports(ctx)
        return problems

    def _validate_model(self, ctx: StageContext) -> list[Problem]:
        s = ctx.settings
        model, source = self.model_source(ctx)
        missing = self._enabled_needs(ctx)
        if not s.model and missing and source not in ("finetune.model", "pretrain.model"):
            return [ctx.problem("model", f"needs `{missing[-1]}.outputs.model`, which does not exist yet",
                                f"run `ichain run {ctx.chain.path.name} --only {missing[-1]}` first, "
                                "or set stages.deploy.model")]
        if model is None:
            return [ctx.problem("model", "no model to serve", "set stages.deploy.model or model.path, or enable "
                                "finetune/pretrain")]
        predicted = any(a.path == model for a in ctx.inputs.values())
        p = Path(model)
        field_ = "model" if source in ("model", "") else source
        where = (lambda msg, hint: ctx.problem("model", msg, hint)) if field_ == "model" else \
            (lambda msg, hint: ctx.chain.problem(field_, msg, hint)) if field_ == "model.path" else \
            (lambda msg, hint: ctx.problem("model", f"{msg} (from {field_})", hint))
        if not p.exists():
            if predicted:
                return []  # an earlier stage of this run will write it
            return [where(f"model directory not found: {p}", "point it at a Hugging Face model directory")]
        if not p.is_dir() or not (p / "config.json").is_file():
            return [where(f"{p} is not a model directory (no config.json)",
                          "point it at a Hugging Face model directory (config.json, weights, tokenizer)")]
        if s.quantize.enabled and _model_dir_format(str(p)):
            return [where(f"{p} is already quantised", "serve it directly (quantize.enabled: false)")]
        return []

    def _enabled_needs(self, ctx: StageContext) -> list[str]:
        enabled = set(ctx.chain.config.enabled_stages())
        return [n for n in self.needs if n in enabled and f"{n}.model" not in ctx.inputs]

    def _validate_quantize(self, ctx: StageContext) -> list[Problem]:
        q = ctx.settings.quantize
        if not q.enabled:
            return []
        if not q.calib_data:
            return [ctx.problem("quantize.calib_data", f"{q.method} needs calibration data and this machine must "
                                "not download it", f"set calib_data to a local Hugging Face cache holding "
                                f"{q.calib_dataset} ({CALIB_DIRS[q.calib_dataset]})")]
        root = Path(os.path.expanduser(q.calib_data))
        if not root.is_dir():
            return [ctx.problem("quantize.calib_data", f"calibration cache not found: {root}")]
        folder = CALIB_DIRS[q.calib_dataset]
        if not any(root.glob(f"**/{folder}")):
            return [ctx.problem("quantize.calib_data", f"{root} holds no {q.calib_dataset} calibration data "
                                f"(no {folder} folder)", "copy a Hugging Face cache that has it, or pick "
                                "another calib_dataset")]
        return []

    def _validate_ports(self, ctx: StageContext) -> list[Problem]:
        s = ctx.settings
        if s.proxy.enabled and s.proxy.nodes > 1:
            return []  # the ports are on the allocated nodes, checked there by the supervisor
        ours = self._recorded_ports(ctx)
        wanted = [("port", s.host, s.port + i) for i in range(s.proxy.servers_per_node if s.proxy.enabled else 1)]
        if s.proxy.enabled:
            wanted.append(("proxy.port", s.proxy.host, s.proxy.port))
        problems = []
        for field_, host, port in wanted:
            if port not in ours and not port_free(host, port):
                problems.append(ctx.problem(field_, f"port {port} on {host} is already in use",
                                            "choose another port, or stop what listens there "
                                            "(`ichain deploy stop` if it is an earlier deployment)"))
        return problems

    def _recorded_ports(self, ctx: StageContext) -> set[int]:
        """Ports held by this chain's own running deployment (the supervisor replaces it)."""
        ports = set()
        for f in service.state_files(service.services_dir(ctx.chain.workdir)):
            for svc in (service.read_state(f) or {}).get("services", []):
                if pid_alive(svc.get("pid")):
                    try:
                        ports.add(int(svc["url"].rsplit(":", 1)[1]))
                    except (KeyError, ValueError, IndexError):
                        pass
        return ports

    # ---- plan (pure) ---------------------------------------------------------------------------------
    def quantize_job(self, ctx: StageContext, out: Path) -> Job:
        r = self.resolve(ctx)
        model, _ = self.model_source(ctx)
        return Job(stage=self.name, name="quantize", argv=render.quantize_argv(r, model or "", str(out)),
                   cwd=str(ctx.out_dir), env=render.quantize_env(r), runtime="lmdeploy",
                   resources=Resources(gpus_per_node=1), expected_outputs=[str(out / "config.json")],
                   description=f"{ctx.settings.quantize.method} quantisation with lmdeploy lite")

    def serve_job(self, ctx: StageContext, mode: str | None = None) -> Job:
        r = self.resolve(ctx)
        s = ctx.settings
        mode = mode or self.mode(ctx)
        state = r.services_dir / "state.json"
        spec = render.spec(r, mode, state)
        if r.engine == "transformers" and s.backend == "auto":
            spec["notes"] = [STANDIN_NOTE]
        spec_path = r.services_dir / "serve.json"
        nodes = s.proxy.nodes if s.proxy.enabled else 1
        per_node = s.proxy.servers_per_node if s.proxy.enabled else 1
        gpus = 0 if r.engine == "transformers" else s.tp * per_node
        commands = " ; ".join(svc["display"] for svc in spec["services"])
        note = f"{STANDIN_NOTE}: " if r.engine == "transformers" and s.backend == "auto" else ""
        extra = {"slurm_launch": "srun"} if "slurm_launch" in Job.model_fields else {}
        return Job(stage=self.name, name="serve", argv=[*r.python, str(SERVE_WORKER), str(spec_path)],
                   cwd=str(r.services_dir), files={str(spec_path): json.dumps(spec, indent=2) + "\n"},
                   runtime=self.serving_runtime(ctx), resources=Resources(nodes=nodes, gpus_per_node=gpus),
                   distributed=nodes > 1, description=f"{note}serve in the {mode}: {commands}", **extra)

    def plan(self, ctx: StageContext) -> list[Job]:
        jobs = []
        if ctx.settings.quantize.enabled:
            jobs.append(self.quantize_job(ctx, self.quantized_dir(ctx)))
        jobs.append(self.serve_job(ctx))
        return jobs

    # ---- outputs ---------------------------------------------------------------------------------------
    def endpoint(self, ctx: StageContext, r: Resolved, url: str, meta: dict) -> Endpoint:
        fp = stable_hash({"url": url, "served_name": r.served_name, "model": r.model, "engine": r.engine,
                          "backend": r.backend, "format": r.model_format})
        return Endpoint(path=url, served_name=r.served_name, chat_template=r.chat_template,
                        api_key_env=ctx.settings.api_key_env, fingerprint="sha256:" + fp, meta=meta)

    def predict_outputs(self, ctx: StageContext, final_dir: Path) -> dict[str, Artifact]:
        r = self.resolve(ctx)
        outputs: dict[str, Artifact] = {"endpoint": self.endpoint(ctx, r, r.url, {"engine": r.engine})}
        if ctx.settings.quantize.enabled:
            outputs["quantized"] = self._quantized(ctx, self.quantized_dir(ctx, final_dir))
        return outputs

    def _quantized(self, ctx: StageContext, path: Path) -> QuantizedModel:
        method = ctx.settings.quantize.method
        return QuantizedModel(path=str(path), model_format="awq" if method == "awq" else "smooth_quant",
                              chat_template=self.resolve(ctx).chat_template,
                              meta={"method": method, "w_bits": ctx.settings.quantize.w_bits})

    def collect(self, ctx: StageContext, results: list[JobResult]) -> dict[str, Artifact]:
        r = self.resolve(ctx)
        state_path = r.services_dir / "state.json"
        state = service.read_state(state_path)
        log = results[-1].log if results else None
        if not state or state.get("status") != "up":
            raise StageFailed(Problem("the server did not report ready", hint=f"log: {log}"))
        st = service.status(r.services_dir, ctx.settings.api_key_env)
        if st.state != "up":
            tails = [f"{s.name}: {s.state}" for s in st.services]
            raise StageFailed(Problem(f"the server is {st.state} right after start-up ({', '.join(tails)})",
                                      hint=f"log: {st.services[0].log if st.services else log}"))
        ctx.metrics["ready_after_s"] = state.get("ready_after_s")
        meta = {"engine": r.engine, "backend": state.get("backend"), "model": r.model,
                "state": str(state_path), "logs": [s["log"] for s in state.get("services", [])],
                "pids": [s["pid"] for s in state.get("services", [])]}
        outputs: dict[str, Artifact] = {"endpoint": self.endpoint(ctx, r, state["endpoint"], meta)}
        if ctx.settings.quantize.enabled:
            q = self.quantized_dir(ctx)
            if not (q / "config.json").is_file():
                raise StageFailed(Problem(f"quantisation wrote no model to {q}", hint=f"log: {results[0].log}"))
            outputs["quantized"] = self._quantized(ctx, q)
        return outputs

    def is_current(self, ctx: StageContext, record) -> bool:
        """Up to date only while the recorded server still runs and answers."""
        ep = record.outputs.get("endpoint")
        if ep is None:
            return False
        st = service.status(service.services_dir(ctx.chain.workdir), ctx.settings.api_key_env)
        return st.state == "up" and st.endpoint == ep.path


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as servers do: a port with only TIME_WAIT leftovers is free, one with a listener is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


STAGE = DeployStage()
