"""What a tool entry means (stdlib only: the ichain process imports this to validate chain files).

A tool entry is a string or a mapping:
  Calculator                     AgentLego built-in (else a Lagent action of that name)
  agentlego:Calculator / lagent:ArxivSearch   explicit library
  tools/weather.py:Weather       a class (or instance) in a user's python file
  http://127.0.0.1:16180         every tool of an AgentLego tool server (`agentlego-server`)
  python                         run Python code in a subprocess with time and memory limits
  {name: Calculator, args: {timeout: 5}}   constructor arguments
  {remote: URL, names: [Calculator]}        some tools of a server
"""

from __future__ import annotations

# Tools that run code or reach the network: refused unless the chain's `allow` names them or their kind.
CODE_TOOLS = {"python", "lagent:PythonInterpreter", "lagent:IPythonInterpreter", "lagent:IPythonInteractive"}
NETWORK_TOOLS = {"agentlego:GoogleSearch", "agentlego:Translation", "lagent:GoogleSearch", "lagent:BINGMap",
                 "lagent:BingBrowser", "lagent:ArxivSearch", "lagent:GoogleScholar"}


class ToolSpecError(ValueError):
    pass


def parse_tool(entry) -> dict:
    """A tool entry → {"kind": agentlego|lagent|auto|file|remote|python, ...}."""
    if isinstance(entry, dict):
        entry = dict(entry)
        args = entry.pop("args", None) or {}
        if not isinstance(args, dict):
            raise ToolSpecError("`args` must be a mapping of constructor arguments")
        if "remote" in entry:
            names = entry.pop("names", None) or []
            _no_extra(entry, "remote")
            return {"kind": "remote", "url": str(entry["remote"]), "names": [str(n) for n in names]}
        if "name" not in entry:
            raise ToolSpecError("a tool mapping needs `name` (or `remote`)")
        spec = parse_tool(str(entry.pop("name")))
        _no_extra(entry, "name")
        if args:
            spec["args"] = args
        return spec
    if not isinstance(entry, str) or not entry.strip():
        raise ToolSpecError(f"a tool entry must be a name, a file.py:Class, a URL or a mapping, not {entry!r}")
    text = entry.strip()
    if text.startswith(("http://", "https://")):
        return {"kind": "remote", "url": text, "names": []}
    if text == "python":
        return {"kind": "python"}
    path, sep, attr = text.rpartition(":")
    if sep and path.endswith(".py"):
        if not attr.isidentifier():
            raise ToolSpecError(f"`{text}`: `{attr}` is not a Python name")
        return {"kind": "file", "path": path, "attr": attr}
    if sep and path in ("agentlego", "lagent"):
        if not attr.isidentifier():
            raise ToolSpecError(f"`{text}`: `{attr}` is not a tool name")
        return {"kind": path, "name": attr}
    if not text.isidentifier():
        raise ToolSpecError(f"`{text}` is not a tool name, a file.py:Class, `python` or an http(s) URL")
    return {"kind": "auto", "name": text}


def _no_extra(entry: dict, first: str) -> None:
    extra = sorted(set(entry) - {first})
    if extra:
        raise ToolSpecError(f"unknown key(s) in a tool mapping: {', '.join(extra)}")


def risk(spec: dict) -> str | None:
    """'code' or 'network' when the tool needs an explicit `allow`, else None."""
    if spec["kind"] == "python":
        return "code"
    kinds = ("agentlego", "lagent") if spec["kind"] == "auto" else (spec["kind"],)
    keys = {f"{k}:{spec.get('name', '')}" for k in kinds}
    if keys & CODE_TOOLS:
        return "code"
    if keys & NETWORK_TOOLS:
        return "network"
    return None


def resolved_key(spec: dict, agentlego_names, lagent_names) -> str | None:
    """`auto` names resolved against the libraries' registries: `agentlego:X`, `lagent:X` or None."""
    if spec["kind"] in ("agentlego", "lagent"):
        pool = agentlego_names if spec["kind"] == "agentlego" else lagent_names
        return f"{spec['kind']}:{spec['name']}" if spec["name"] in pool else None
    if spec["kind"] == "auto":
        if spec["name"] in agentlego_names:
            return f"agentlego:{spec['name']}"
        if spec["name"] in lagent_names:
            return f"lagent:{spec['name']}"
        return None
    return spec["kind"]


def allowed(spec: dict, allow: list[str]) -> bool:
    kind = risk(spec)
    if kind is None:
        return True
    names = {spec.get("name", ""), spec["kind"], f"{spec['kind']}:{spec.get('name', '')}", kind}
    return bool(names & set(allow))
