"""What the model verbs share: the xtuner runtime's interpreter, input checks that name the flag, running
their Jobs, and publishing an output directory only once it is complete."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from internlm_chain.chain.job import Job, Resources
from internlm_chain.errors import ChainError, Problem, StageFailed

RUNTIME = "xtuner"  # transformers 4.48 + peft + XTuner: loads every model the chain trains or serves
WORKERS = Path(__file__).resolve().parents[1] / "workers"
REPORT = "ichain-model.json"  # written by the workers into the output, read back before publishing
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def problem(flag: str, message: str, hint: str | None = None) -> Problem:
    return Problem(message, path=flag, hint=hint)


def fail(flag: str, message: str, hint: str | None = None) -> ChainError:
    return ChainError(problem(flag, message, hint))


def python_argv(python: str | None, runtime: str = RUNTIME) -> list[str]:
    """The runtime's interpreter: `--python` when given, else the synced one under the cache."""
    if python:
        return [str(Path(python).expanduser())]
    from internlm_chain.runtimes.resolve import env_dir

    return [str(env_dir(runtime) / "bin" / "python")]


def check_runtime(argv: Sequence[str], explicit: bool, runtime: str = RUNTIME) -> None:
    if Path(argv[0]).exists():
        return
    if explicit:
        raise fail("--python", f"interpreter not found: {argv[0]}")
    raise fail("--python", f"the {runtime} runtime is not synced ({argv[0]} missing)",
               f"run `ichain env sync {runtime}`, or pass --python PATH")


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise fail("--device", f"'{device}' is not a device", "auto, cpu or cuda")
    if device != "auto":
        return device
    from internlm_chain.runtimes.machine import detect_device

    return detect_device()


def read_json(path: Path, flag: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(flag, f"cannot read {path} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise fail(flag, f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise fail(flag, f"{path} does not hold a JSON object")
    return data


def model_dir(path: Path, flag: str, what: str = "model") -> Path:
    """A Hugging Face model folder: exists, has config.json and weights."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise fail(flag, f"{what} directory not found: {path}")
    if not path.is_dir():
        raise fail(flag, f"{path} is not a directory", f"a Hugging Face {what} folder (config.json + weights)")
    if not (path / "config.json").is_file():
        hint = "it is a PEFT adapter: pass it as --adapter" if (path / "adapter_config.json").is_file() else \
            "a Hugging Face model folder (config.json + weights)"
        raise fail(flag, f"{path} is not a Hugging Face model (no config.json)", hint)
    read_json(path / "config.json", flag)
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise fail(flag, f"{path} has no weights (*.safetensors or *.bin)")
    return path


def adapter_dir(path: Path, flag: str = "--adapter") -> tuple[Path, dict]:
    """A PEFT adapter folder and its adapter_config.json."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise fail(flag, f"adapter directory not found: {path}" if not path.exists() else
                   f"{path} is not a directory")
    cfg_path = path / "adapter_config.json"
    if not cfg_path.is_file():
        hint = "it is a whole model, not an adapter" if (path / "config.json").is_file() else \
            "a PEFT adapter folder (adapter_config.json + adapter_model.*)"
        raise fail(flag, f"{path} is not a PEFT adapter (no adapter_config.json)", hint)
    cfg = read_json(cfg_path, flag)
    if not any(path.glob("adapter_model.*")):
        raise fail(flag, f"{path} has no adapter weights (adapter_model.safetensors or .bin)")
    return path, cfg


def adapter_base(adapter: Path, cfg: dict, base: Path | None) -> Path:
    """The base model an adapter applies to: --base, else the adapter's own base when it is local."""
    if base is not None:
        return model_dir(base, "--base", "base model")
    named = cfg.get("base_model_name_or_path")
    if not named:
        raise fail("--base", f"{adapter}/adapter_config.json names no base model", "pass --base DIR")
    candidate = Path(named).expanduser()
    if not candidate.is_absolute():
        candidate = (adapter / candidate) if (adapter / candidate).exists() else Path.cwd() / candidate
    if not candidate.is_dir():
        raise fail("--base", f"the adapter's base model '{named}' is not a local directory "
                   f"({adapter}/adapter_config.json)", "pass --base DIR with that model")
    return model_dir(candidate, "--base", "base model")


def fresh_output(out: Path, flag: str = "--out") -> Path:
    out = out.expanduser().resolve()
    if out.exists():
        raise fail(flag, f"{out} already exists", "choose a new path, or remove it first")
    if out.parent.exists() and not out.parent.is_dir():
        raise fail(flag, f"{out.parent} is not a directory")
    return out


def scratch_for(out: Path) -> Path:
    """Where a verb writes before its checks pass; renamed to `out` (same folder: an atomic rename)."""
    return out.parent / f".{out.name}.partial"


def log_for(out: Path) -> Path:
    return out.parent / f".{out.name}.log"


def job(name: str, argv: list[str], cwd: Path, description: str, device: str, expected: Sequence[Path] = (),
        env: dict[str, str] | None = None) -> Job:
    return Job(stage="model", name=name, argv=argv, cwd=str(cwd), env={**OFFLINE_ENV, **(env or {})},
               runtime=RUNTIME, description=description,
               resources=Resources(gpus_per_node=1 if device == "cuda" else 0),
               expected_outputs=[str(p) for p in expected])


def dry_run_text(jobs: list[Job], scratch: Path | None = None, out: Path | None = None) -> str:
    from internlm_chain.chain.job import render_jobs_text

    text = render_jobs_text(jobs)
    if scratch is not None and out is not None:
        text += f"# then (in ichain, after {REPORT} is checked): rename {scratch} -> {out}\n"
    return text


def run_jobs(jobs: list[Job], log: Path, quiet: bool = False) -> None:
    """Run the jobs in order, output to `log` (and stderr unless quiet); the first failure stops them."""
    from internlm_chain.launch.local import run_process

    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    for j in jobs:
        result = run_process(j.model_copy(update={"log": str(log)}), quiet=quiet)
        if result.state == "interrupted":
            raise StageFailed(Problem(f"{j.name} interrupted", hint=f"log: {log}"))
        if result.state != "done":
            raise StageFailed(Problem(f"{j.name} failed (exit {result.returncode})", hint=f"log: {log}"))


def clear_scratch(scratch: Path) -> None:
    """A scratch folder left by an interrupted run is ours (its name says so): start clean."""
    if scratch.is_dir() and not scratch.is_symlink():
        shutil.rmtree(scratch)
    elif scratch.exists() or scratch.is_symlink():
        scratch.unlink()


def produce(jobs: list[Job], scratch: Path, out: Path, log: Path, quiet: bool = False) -> dict:
    """Run the jobs into `scratch`, check the report, rename to `out`. On any failure the scratch is removed
    (the log stays and is named in the error): `out` either is complete or does not exist."""
    clear_scratch(scratch)
    try:
        run_jobs(jobs, log, quiet=quiet)
        return publish(scratch, out, log)
    except BaseException:
        clear_scratch(scratch)
        raise


def publish(scratch: Path, out: Path, log: Path) -> dict:
    """Check the worker's report, then rename scratch → out. Returns the report."""
    try:
        report = json.loads((scratch / REPORT).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StageFailed(Problem(f"the check wrote no report in {scratch} ({exc})", hint=f"log: {log}")) from None
    if not report.get("ok"):
        raise StageFailed(Problem(f"the output failed its check: {report.get('error', '?')}", hint=f"log: {log}"))
    if out.exists():  # created by someone else while we ran: never replace it
        raise StageFailed(Problem(f"{out} appeared while this ran; nothing was written there"))
    os.rename(scratch, out)
    log.unlink(missing_ok=True)
    return report


class PublishedOutput:
    """Mixin for the verbs' plans: the result is built in a scratch folder beside `out` (log next to it)
    and renamed to `out` only once complete."""

    out: Path

    @property
    def scratch(self) -> Path:
        return scratch_for(self.out)

    @property
    def log(self) -> Path:
        return log_for(self.out)
