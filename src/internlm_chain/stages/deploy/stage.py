"""The `deploy` stage: serve the chain's model with LMDeploy (or the CPU stand-in) in the background.

Its serving Job runs workers/deploy_serve.py, which starts the server detached, waits until it answers
/health and lists the served model, and exits; the server keeps running. `collect` turns the
supervisor's state file into an `Endpoint`; `is_current` re-runs the stage when the server is gone.

Quantisation (GPU) is content-addressed: the quantised model lives in
`<workdir>/.cache/quantized/<method>-<key>`, where the key hashes everything that decides its weights
(the model's fingerprint, the quantize settings and dtype, the calibration data, the LMDeploy lock), and
workers/deploy_quantize.py publishes that folder only complete, with a marker. So when a server dies and
the stage runs again, the plan finds the verified model and holds only the serve Job; a quantisation
killed midway left no such folder and is redone.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from internlm_chain.chain.artifacts import Artifact, Endpoint, QuantizedModel
from internlm_chain.chain.fingerprint import path_signature, stable_hash
from internlm_chain.chain.job import Job, Resources
from internlm_chain.errors import Problem, StageFailed
from internlm_chain.procs import pid_alive
from internlm_chain.stages.base import JobResult, Stage, StageContext
from internlm_chain.stages.deploy import render, service
from internlm_chain.stages.deploy.render import LOOPBACK, Resolved
from internlm_chain.workers import deploy_quantize

WORKERS = Path(__file__).resolve().parents[2] / "workers"
SERVE_WORKER = WORKERS / "deploy_serve.py"
CALIB_DIRS = {  # LMDeploy's calibration set → the Hugging Face cache folder that holds it
    "pileval": "datasets--mit-han-lab--pile-val-backup",
    "wikitext2": "datasets--wikitext",
    "c4": "datasets--allenai--c4",
    "ptb": "datasets--ptb_text_only",
}
MERGE_HINT = ("set stages.finetune.merge: true (the merged model is served), or serve on a GPU host, where "
              "LMDeploy's pytorch engine applies the adapter")
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
        if "finetune.model" in ctx.inputs:
            return ctx.inputs["finetune.model"].path, "finetune.model"
        adapter = ctx.inputs.get("finetune.adapter")
        if adapter is not None and adapter.base_model:  # merge: false — the adapter's own base model
            return adapter.base_model, "finetune.adapter"
        if "pretrain.model" in ctx.inputs:
            return ctx.inputs["pretrain.model"].path, "pretrain.model"
        path = ctx.chain.config.model.path
        if path:
            p = Path(os.path.expanduser(path))
            return str(p if p.is_absolute() else (ctx.chain.base_dir / p).resolve()), "model.path"
        return None, ""

    def adapter_source(self, ctx: StageContext) -> tuple[str | None, str]:
        """The LoRA adapter served on top of the model (if any) and where it came from."""
        s = ctx.settings
        if s.adapter:
            p = Path(os.path.expanduser(s.adapter))
            return str(p if p.is_absolute() else (ctx.chain.base_dir / p).resolve()), "adapter"
        if not s.model and self.model_source(ctx)[1] == "finetune.adapter":
            return ctx.inputs["finetune.adapter"].path, "finetune.adapter"
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

    # ---- quantisation: content-addressed, so a server restart never quantises again -----------------
    def quantize_key(self, ctx: StageContext) -> str:
        """Everything that decides the quantised weights — and nothing about serving."""
        from internlm_chain.runtimes.resolve import lock_hash

        s = ctx.settings
        q = s.quantize
        model, source = self.model_source(ctx)
        art = ctx.inputs.get(source)
        model_id = art.fingerprint if art is not None and art.fingerprint else _signature(model)
        calib = {}
        if q.calib_data:
            root = Path(os.path.expanduser(q.calib_data))
            if root.is_dir():
                calib = {str(d.relative_to(root)): _signature(str(d))
                         for d in sorted(root.glob(f"**/{CALIB_DIRS[q.calib_dataset]}"))}
        return stable_hash({"model": model_id, "dtype": s.dtype, "calib": calib,
                            "quantize": q.model_dump(mode="json", exclude={"enabled", "calib_data"}),
                            "lmdeploy": lock_hash(ctx.chain, self.name, "lmdeploy", ctx.device)})[:20]

    def quantized_dir(self, ctx: StageContext) -> Path:
        """Where this quantisation lives: outside the stage's own folder, which every run replaces."""
        q = ctx.settings.quantize
        return ctx.chain.workdir / ".cache" / "quantized" / f"{q.method}-{self.quantize_key(ctx)}"

    def quantized_ready(self, ctx: StageContext) -> bool:
        return deploy_quantize.is_complete(str(self.quantized_dir(ctx)), self.quantize_key(ctx))

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
        adapter, _ = self.adapter_source(ctx)
        backend = s.backend if s.backend in ("turbomind", "pytorch") else None
        if s.quantize.enabled and s.quantize.method == "smooth_quant":
            backend = "pytorch"  # W8A8 weights run on the PyTorch engine only
        if adapter and engine == "lmdeploy":
            backend = "pytorch"  # LoRA adapters: the PyTorch engine only
        if engine == "transformers":
            served = model  # the stand-in only answers to the path it was started with
        else:
            served = s.served_name or ctx.chain.config.name
        return Resolved(settings=s, model=model, engine=engine, backend=backend, model_format=fmt,
                        served_name=served, chat_template=s.chat_template or ctx.chain.config.model.chat_template,
                        services_dir=service.services_dir(ctx.chain.workdir),
                        python=tuple(ctx.python(self.serving_runtime(ctx))), adapter=adapter)

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
        elif s.quantize.enabled and engine == "transformers":
            problems.append(ctx.problem("backend", "the quantised model is served by LMDeploy, not by the "
                                        "transformers stand-in", "use backend: auto, turbomind or pytorch"))
        problems += self._validate_model(ctx)
        problems += self._validate_adapter(ctx)
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
        if not s.model and missing and source not in ("finetune.model", "finetune.adapter", "pretrain.model"):
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
        return [n for n in self.needs if n in enabled and f"{n}.model" not in ctx.inputs
                and f"{n}.adapter" not in ctx.inputs]

    def _validate_adapter(self, ctx: StageContext) -> list[Problem]:
        s = ctx.settings
        adapter, source = self.adapter_source(ctx)
        if adapter is None:
            return []
        from_finetune = source == "finetune.adapter"
        where = (lambda msg, hint: ctx.chain.problem("stages.finetune.merge", msg, hint)) if from_finetune else \
            (lambda msg, hint: ctx.problem("adapter", msg, hint))
        what = "finetune keeps only a LoRA adapter (merge: false)" if from_finetune else "`adapter` is a LoRA adapter"
        if self.engine(ctx) == "transformers":
            hint = MERGE_HINT if from_finetune else "merge it into the model (xtuner merge), or serve on a GPU host"
            return [where(f"{what}, and the CPU stand-in (`transformers serve`) serves whole models only", hint)]
        if s.backend == "turbomind":
            return [ctx.problem("backend", f"{what}, and LMDeploy's turbomind engine does not apply adapters",
                                "use backend: pytorch or auto" + (", or set stages.finetune.merge: true"
                                                                  if from_finetune else ""))]
        if s.quantize.enabled:
            return [where(f"{what}; quantize needs a whole model",
                          "set stages.finetune.merge: true" if from_finetune else "merge the adapter first")]
        p = Path(adapter)
        if from_finetune and any(a.path == adapter for a in ctx.inputs.values()) and not p.exists():
            return []  # finetune will write it in this run
        if not (p / "adapter_config.json").is_file():
            return [where(f"{p} is not a PEFT adapter (no adapter_config.json)",
                          "point it at the folder XTuner's pth_to_hf wrote (adapter_config.json + weights)")]
        return []

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
        """Quantise into `out`, which appears only complete (marked with the inputs' key) or not at all."""
        r = self.resolve(ctx)
        model, _ = self.model_source(ctx)
        argv = render.quantize_argv(ctx.python("lmdeploy"), r, model or "", str(out), self.quantize_key(ctx))
        return Job(stage=self.name, name="quantize", argv=argv,
                   cwd=str(ctx.out_dir), env=render.quantize_env(r), runtime="lmdeploy",
                   resources=Resources(gpus_per_node=1), expected_outputs=[str(out / "config.json")],
                   description=f"{ctx.settings.quantize.method} quantisation with lmdeploy lite (published "
                               "complete or not at all; reused while model, settings and calibration are unchanged)")

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
        if s.quantize.enabled and self.quantized_ready(ctx):
            note += f"reusing the verified quantised model {r.model}: "
        extra = {"slurm_launch": "srun"} if "slurm_launch" in Job.model_fields else {}
        return Job(stage=self.name, name="serve", argv=[*r.python, str(SERVE_WORKER), str(spec_path)],
                   cwd=str(r.services_dir), files={str(spec_path): json.dumps(spec, indent=2) + "\n"},
                   runtime=self.serving_runtime(ctx), resources=Resources(nodes=nodes, gpus_per_node=gpus),
                   distributed=nodes > 1, description=f"{note}serve in the {mode}: {commands}", **extra)

    def plan(self, ctx: StageContext) -> list[Job]:
        jobs = []
        # a verified quantisation for these exact inputs is reused: a restart only starts the server
        if ctx.settings.quantize.enabled and not self.quantized_ready(ctx):
            jobs.append(self.quantize_job(ctx, self.quantized_dir(ctx)))
        jobs.append(self.serve_job(ctx))
        return jobs

    # ---- outputs ---------------------------------------------------------------------------------------
    def endpoint(self, ctx: StageContext, r: Resolved, url: str, meta: dict) -> Endpoint:
        ident = {"url": url, "served_name": r.served_name, "model": r.model, "engine": r.engine,
                 "backend": r.backend, "format": r.model_format}
        if r.adapter:
            ident["adapter"] = r.adapter
        fp = stable_hash(ident)
        return Endpoint(path=url, served_name=r.served_name, chat_template=r.chat_template,
                        api_key_env=ctx.settings.api_key_env, fingerprint="sha256:" + fp, meta=meta)

    def predict_outputs(self, ctx: StageContext, final_dir: Path) -> dict[str, Artifact]:
        r = self.resolve(ctx)
        outputs: dict[str, Artifact] = {"endpoint": self.endpoint(ctx, r, r.url, {"engine": r.engine})}
        if ctx.settings.quantize.enabled:
            outputs["quantized"] = self._quantized(ctx, self.quantized_dir(ctx))
        return outputs

    def _quantized(self, ctx: StageContext, path: Path, fingerprint: str = "") -> QuantizedModel:
        method = ctx.settings.quantize.method
        return QuantizedModel(path=str(path), model_format="awq" if method == "awq" else "smooth_quant",
                              chat_template=self.resolve(ctx).chat_template, fingerprint=fingerprint,
                              meta={"method": method, "w_bits": ctx.settings.quantize.w_bits,
                                    "key": self.quantize_key(ctx)})

    def collect(self, ctx: StageContext, results: list[JobResult]) -> dict[str, Artifact]:
        r = self.resolve(ctx)
        quantized = self._collect_quantized(ctx, results) if ctx.settings.quantize.enabled else None
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
        if r.adapter:
            meta["adapter"] = r.adapter
        if quantized is not None:
            outputs["quantized"] = quantized
        return outputs

    def _collect_quantized(self, ctx: StageContext, results: list[JobResult]) -> QuantizedModel:
        q = self.quantized_dir(ctx)
        marker = deploy_quantize.read_marker(str(q))
        if not self.quantized_ready(ctx) or marker is None:
            log = next((x.log for x in results if x.job.name == "quantize"), None)
            raise StageFailed(Problem(f"no complete quantised model in {q}", hint=f"log: {log}"))
        # its content hash, taken once when it was written: hashing GBs on every restart is waste
        return self._quantized(ctx, q, fingerprint=marker.get("content", ""))

    def is_current(self, ctx: StageContext, record) -> bool:
        """Up to date only while the recorded server still runs and answers."""
        ep = record.outputs.get("endpoint")
        if ep is None:
            return False
        st = service.status(service.services_dir(ctx.chain.workdir), ctx.settings.api_key_env)
        return st.state == "up" and st.endpoint == ep.path


def _signature(path: str | None) -> str:
    """A user model folder's identity (names, sizes, mtimes; see chain.fingerprint.path_signature)."""
    if not path:
        return ""
    try:
        return path_signature(Path(path))
    except OSError:
        return "missing:" + path


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
