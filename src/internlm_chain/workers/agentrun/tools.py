"""Turn tool entries into Lagent actions; run them so that failures are observations, never crashes."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lagent.actions import ActionExecutor, BaseAction
from lagent.schema import ActionReturn, ActionStatusCode, ActionValidCode

from .errors import SpecError
from .toolspec import ToolSpecError, allowed, parse_tool, resolved_key, risk

MALFORMED = "<malformed tool call>"


def agentlego_registry() -> dict[str, Any]:
    from agentlego.apis.tool import NAMES2TOOLS

    return dict(NAMES2TOOLS)


def lagent_registry() -> dict[str, Any]:
    import lagent.actions as la

    return {name: obj for name, obj in vars(la).items() if isinstance(obj, type) and issubclass(obj, BaseAction)
            and obj is not BaseAction and name not in ("InvalidAction", "NoAction", "FinishAction")}


def missing_requirements(cls: Any) -> str | None:
    """AgentLego marks constructors that need extra packages; ask without building the tool."""
    check = getattr(getattr(cls, "__init__", None), "_verify_require", None)
    if check is None:
        return None
    try:
        check()
    except ImportError as exc:
        return str(exc)
    return None


def parameters_of(action: BaseAction) -> list[dict]:
    desc = action.description
    apis = desc.get("api_list") or [desc]
    out = []
    for api in apis:
        for p in api.get("parameters", []):
            out.append({"name": p.get("name"), "type": p.get("type"), "description": p.get("description", ""),
                        "required": p.get("name") in api.get("required", [])})
    return out


# ---- the python tool -------------------------------------------------------------------------------
class PythonTool(BaseAction):
    """Runs Python code in a separate process with CPU-time, memory and wall-clock limits."""

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 512, max_output: int = 4000):
        from lagent.actions.parser import JsonParser

        class CodeParser(JsonParser):
            # models often send bare code instead of {"command": ...}: take it as the code
            def parse_inputs(self, inputs, name="run"):
                if isinstance(inputs, str):
                    try:
                        value = json.loads(inputs)
                    except ValueError:
                        return {"command": inputs.strip().strip("`")}
                    if not isinstance(value, dict):
                        return {"command": inputs}
                return super().parse_inputs(inputs, name)

        description = {
            "name": "python",
            "description": ("Runs Python 3 code in a fresh process and returns what it prints (stdout, and stderr "
                            f"on failure). Limits: {timeout_s:g}s, {memory_mb} MB. Print the values you need."),
            "parameters": [{"name": "command", "type": "STRING", "description": "Python source code"}],
            "required": ["command"],
        }
        super().__init__(description=description, parser=CodeParser)
        self._is_toolkit = False
        self.timeout_s, self.memory_mb, self.max_output = timeout_s, memory_mb, max_output

    def run(self, command: str) -> str:
        import subprocess
        import tempfile

        limits = (self.timeout_s, self.memory_mb)

        def restrict():  # runs in the child, before exec
            import resource

            cpu = max(1, int(limits[0]) + 1)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            mem = limits[1] * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024, 16 * 1024 * 1024))

        with tempfile.TemporaryDirectory(prefix="agent-python-") as tmp:
            try:
                res = subprocess.run([sys.executable, "-I", "-c", command], cwd=tmp, capture_output=True, text=True,
                                     timeout=self.timeout_s, preexec_fn=restrict, env={"PATH": "/usr/bin:/bin"})
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"the code ran longer than {self.timeout_s:g}s and was stopped") from None
        out = res.stdout[-self.max_output:]
        if res.returncode != 0:
            err = res.stderr.strip().splitlines()
            tail = "\n".join(err[-6:]) if err else f"exit status {res.returncode}"
            if res.returncode < 0:
                tail += f"\n(killed by signal {-res.returncode}: CPU or memory limit)"
            raise RuntimeError((out + "\n" if out else "") + tail)
        return out if out.strip() else "(the code printed nothing)"


# ---- loading ---------------------------------------------------------------------------------------
def _load_file_tool(spec: dict, base_dir: Path) -> list[BaseAction]:
    path = Path(spec["path"]).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise SpecError(f"tool file not found: {path}")
    key = "agentrun_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module = sys.modules.get(key)
    if module is None:
        loader = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[key] = module
        try:
            loader.loader.exec_module(module)
        except Exception as exc:  # a user's file: any error is theirs to see, in one line
            del sys.modules[key]
            raise SpecError(f"cannot import tool file {path}: {type(exc).__name__}: {exc}") from None
    obj = getattr(module, spec["attr"], None)
    if obj is None:
        names = sorted(n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_"))
        raise SpecError(f"{path} has no `{spec['attr']}` (classes there: {', '.join(names) or 'none'})")
    return [_as_action(obj, spec.get("args", {}), f"{path}:{spec['attr']}")]


def _as_action(obj: Any, args: dict, where: str) -> BaseAction:
    from agentlego.tools import BaseTool

    if inspect.isclass(obj):
        try:
            obj = obj(**args)
        except Exception as exc:
            raise SpecError(f"cannot build tool {where}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, BaseTool):
        return obj.to_lagent()
    if isinstance(obj, BaseAction):
        return obj
    raise SpecError(f"{where} is neither an AgentLego BaseTool nor a Lagent BaseAction ({type(obj).__name__})")


def _remote_tools(spec: dict, timeout_s: float) -> list[BaseAction]:
    from agentlego.tools.remote import RemoteTool

    url = spec["url"].rstrip("/")
    try:  # AgentLego fetches the spec without a timeout: probe first, in bounded time
        urllib.request.urlopen(url + "/openapi.json", timeout=timeout_s).close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SpecError(f"cannot reach the tool server {url}: {reason}") from None
    tools = RemoteTool.from_server(url)
    if spec.get("names"):
        have = {t.name: t for t in tools}
        unknown = [n for n in spec["names"] if n not in have]
        if unknown:
            raise SpecError(f"the tool server {url} has no {', '.join(unknown)} (it serves: {', '.join(have)})")
        tools = [have[n] for n in spec["names"]]
    return [t.to_lagent() for t in tools]


def load_tools(entries: list, *, allow: list[str], base_dir: Path, python_limits: dict,
               remote_timeout_s: float = 10.0) -> tuple[list[BaseAction], list[BaseAction]]:
    """(plugin actions, interpreter actions). Every problem of every entry in one SpecError."""
    problems: list[str] = []
    plugins: list[BaseAction] = []
    interpreters: list[BaseAction] = []
    agentlego, lagent = agentlego_registry(), lagent_registry()
    for entry in entries:
        try:
            spec = parse_tool(entry)
        except ToolSpecError as exc:
            problems.append(str(exc))
            continue
        key = resolved_key(spec, agentlego, lagent)
        if key is None:
            problems.append(unknown_message(spec.get("name", str(entry)), agentlego, lagent))
            continue
        if key.startswith(("agentlego:", "lagent:")):
            spec = {**spec, "kind": key.split(":")[0]}
        if not allowed(spec, allow):
            problems.append(f"tool `{entry if isinstance(entry, str) else spec.get('name')}` "
                            f"{'runs code' if risk(spec) == 'code' else 'uses the network'}: add it (or "
                            f"`{risk(spec)}`) to `allow` to enable it")
            continue
        try:
            if spec["kind"] == "python":
                interpreters.append(PythonTool(**python_limits))
            elif spec["kind"] == "agentlego":
                cls = agentlego[spec["name"]]
                missing = missing_requirements(cls)
                if missing:
                    problems.append(f"AgentLego tool {spec['name']} cannot run here: {missing}")
                    continue
                plugins.append(_as_action(cls, spec.get("args", {}), spec["name"]))
            elif spec["kind"] == "lagent":
                plugins.append(_as_action(lagent[spec["name"]], spec.get("args", {}), spec["name"]))
            elif spec["kind"] == "file":
                plugins.extend(_load_file_tool(spec, base_dir))
            elif spec["kind"] == "remote":
                plugins.extend(_remote_tools(spec, remote_timeout_s))
        except SpecError as exc:
            problems.append(str(exc))
    names = [a.name for a in plugins + interpreters]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"two tools share the name {', '.join(dupes)}")
    if problems:
        raise SpecError("; ".join(problems))
    return plugins, interpreters


def unknown_message(name: str, agentlego: dict, lagent: dict) -> str:
    return (f"unknown tool `{name}`; AgentLego tools: {', '.join(sorted(agentlego))}; Lagent actions: "
            f"{', '.join(sorted(lagent))}; or `python`, `path/to/file.py:Class`, an http(s) tool-server URL")


# ---- running ---------------------------------------------------------------------------------------
class SafeExecutor(ActionExecutor):
    """Records every call; unknown names, malformed calls and crashing tools come back as observations."""

    def __init__(self, actions: list[BaseAction], recorder: Any, **kwargs):
        super().__init__(actions=list(actions), **kwargs)
        self.recorder = recorder

    def __call__(self, name, command) -> ActionReturn:
        if isinstance(name, BaseAction):  # Lagent's AutoGPT parser hands over the action object
            name = name.name
        name = str(name)
        started = time.monotonic()
        self.recorder.start_call()
        if name == self.finish_action.name:
            self.recorder.finished = True
            return super().__call__(name, command)
        if name == self.no_action.name:
            ret = super().__call__(name, command)
            self.recorder.tool(name, command, ret, time.monotonic() - started, valid=False)
            return ret
        base = name.split(".")[0]
        if name == MALFORMED:
            ret = ActionReturn(args={"raw": command}, type=name, state=ActionStatusCode.ARGS_ERROR,
                               valid=ActionValidCode.INVALID,
                               errmsg=f'the tool call is not JSON with "name" and "parameters": {command}')
            valid = False
        elif not self.is_valid(base):
            ret = ActionReturn(args={"inputs": command}, type=name, state=ActionStatusCode.API_ERROR,
                               valid=ActionValidCode.INVALID,
                               errmsg=f"unknown tool `{name}`; available tools: {', '.join(self.action_names())}")
            valid = False
        else:
            try:
                ret = super().__call__(name, command)
            except Exception as exc:  # a tool must never take the agent down
                ret = ActionReturn(args={"inputs": command}, type=name, state=ActionStatusCode.API_ERROR,
                                   errmsg=f"tool `{name}` failed: {type(exc).__name__}: {exc}")
            if ret.state != ActionStatusCode.SUCCESS and ret.errmsg and not ret.errmsg.startswith("tool `"):
                ret.errmsg = f"tool `{name}` failed: {ret.errmsg}"
            valid = ret.state != ActionStatusCode.ARGS_ERROR
        self.recorder.tool(name, ret.args if ret.args else command, ret, time.monotonic() - started, valid=valid)
        return ret
