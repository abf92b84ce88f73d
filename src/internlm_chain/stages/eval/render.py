"""Render the OpenCompass python config for an `EvalPlan` (pure text; golden-tested).

The config imports OpenCompass classes by name (mmengine resolves them inside the runtime), pulls
built-in dataset lists through `read_base()`, and builds custom datasets inline, so the file is
complete and readable on its own: `opencompass CFG` in the runtime reproduces the run.

Each built-in config is read through a small module of its own, beside the config: `read_base()` merges
star-imports into one namespace, and two configs of one family (gsm8k_gen and gsm8k_gen_17d0dc) define
the same variable names, so the second would silently replace the first. Their datasets also share
abbrs (both say `gsm8k`); the config renames a shared abbr to `<abbr>@<config>` so results stay apart.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from internlm_chain.stages.eval.resolve import EvalPlan, ResolvedDataset, ResolvedModel

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "eval"


@cache
def chat_templates() -> dict[str, dict]:
    text = (TEMPLATES / "chat_templates.json").read_text("utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


@cache
def _header() -> str:
    return (TEMPLATES / "header.py.txt").read_text("utf-8")


class Code(str):
    """A bare Python expression (a class name) inside a rendered dict."""

    def __repr__(self) -> str:
        return str(self)


def _py(value, indent: int = 0, width: int = 100) -> str:
    """repr() on one line when it fits, else one item per line, indented from `indent`."""
    flat = repr(value)
    if len(flat) + indent <= width or not isinstance(value, (dict, list)) or not value:
        return flat
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f"{pad}{k!r}: {_py(v, indent + 4, width)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + ",\n" + " " * indent + "}"
    items = [f"{pad}{_py(v, indent + 4, width)}" for v in value]
    return "[\n" + ",\n".join(items) + ",\n" + " " * indent + "]"


def _call(name: str, fields: dict, indent: int = 4) -> str:
    """`dict(k=v, ...)` over several lines: mmengine configs are conventionally written this way."""
    pad = " " * indent
    inner = ",\n".join(f"{pad}    {k}={_py(v, indent + 4)}" for k, v in fields.items())
    return f"{name}(\n{inner},\n{pad})"


def model_fields(m: ResolvedModel, max_out_len: int, batch_size: int) -> dict:
    if m.kind == "api":
        # mmengine substitutes `{{$NAME:default}}` at load time, so the key never appears in our files
        key = f"{{{{${m.api_key_env}:EMPTY}}}}" if m.api_key_env else "EMPTY"
        return {
            "type": Code("OpenAISDK"), "abbr": m.abbr, "path": m.path, "openai_api_base": m.url, "key": key,
            "tokenizer_path": m.tokenizer, "max_seq_len": m.max_seq_len, "query_per_second": m.query_per_second,
            "retry": 2, "temperature": 0.0, "max_out_len": max_out_len, "batch_size": batch_size,
            "run_cfg": {"num_gpus": 0},
        }
    fields: dict = {"type": Code("HuggingFacewithChatTemplate" if m.kind == "hf_chat" else "HuggingFaceBaseModel"),
                    "abbr": m.abbr, "path": m.path}
    if m.tokenizer:
        fields["tokenizer_path"] = m.tokenizer
    if m.adapter:
        fields["peft_path"] = m.adapter
    # fp32 on CPU (half precision matmuls are slow or missing there); the model's own dtype on GPUs
    fields["model_kwargs"] = {"torch_dtype": "torch.float32"} if m.num_gpus == 0 else {"torch_dtype": "auto"}
    # Tokenizers that list token_type_ids make generate() reject its inputs on Llama-style models
    tok_kwargs: dict = {"model_input_names": ["input_ids", "attention_mask"]}
    if m.kind == "hf_chat" and m.chat_template:
        tpl = chat_templates()[m.chat_template]
        tok_kwargs["chat_template"] = tpl["jinja"]
        fields["stop_words"] = list(tpl["stop_words"])
    fields["tokenizer_kwargs"] = tok_kwargs
    if m.max_seq_len:
        fields["max_seq_len"] = m.max_seq_len
    fields.update({"max_out_len": max_out_len, "batch_size": batch_size, "run_cfg": {"num_gpus": m.num_gpus}})
    return fields


def custom_dataset_fields(d: ResolvedDataset, limit: int | None, max_out_len: int | None) -> dict:
    """What OpenCompass's own custom-dataset support builds for mcq/qa × gen/ppl, written out."""
    reader: dict = {"input_columns": d.input_columns, "output_column": "answer"}
    if limit:
        reader["test_range"] = f"[0:{limit}]"
    question = "Question: {question}" if d.data_type == "mcq" else "{question}"
    human = question + "".join(f"\n{o}. {{{o}}}" for o in d.options)
    gen_kwargs = {"max_out_len": max_out_len} if max_out_len else {}
    if d.mode == "ppl":
        template = {o: {"round": [{"role": "HUMAN", "prompt": human}, {"role": "BOT", "prompt": f"Answer: {o}"}]}
                    for o in d.options}
        inferencer = {"type": Code("PPLInferencer")}
        evaluator: dict = {"evaluator": {"type": Code("AccEvaluator")}}
    else:
        bot = "Answer: {answer}" if d.data_type == "mcq" else "{answer}"
        template = {"round": [{"role": "HUMAN", "prompt": human}, {"role": "BOT", "prompt": bot}]}
        inferencer = {"type": Code("GenInferencer"), **gen_kwargs}
        if d.data_type == "mcq":
            evaluator = {"evaluator": {"type": Code("OptionSimAccEvaluator"), "options": d.options}, "pred_role": "BOT"}
        else:
            evaluator = {"evaluator": {"type": Code("AccEvaluator")}, "pred_role": "BOT"}
    return {
        "abbr": d.abbr, "type": Code("CustomDataset"), "path": d.path, "reader_cfg": reader,
        "infer_cfg": {"prompt_template": {"type": Code("PromptTemplate"), "template": template},
                      "retriever": {"type": Code("ZeroRetriever")}, "inferencer": inferencer},
        "eval_cfg": evaluator,
    }


def _runner(settings, task: str) -> dict:
    r = settings.runner
    if r.kind == "slurm":
        fields = {"type": Code("SlurmRunner"), "max_num_workers": r.max_num_workers, "retry": r.retry}
        for name in ("partition", "qos", "quotatype"):
            if getattr(r, name):
                fields[name] = getattr(r, name)
        if r.extra_command:
            fields["extra_command"] = list(r.extra_command)
    else:
        fields = {"type": Code("LocalRunner"), "max_num_workers": r.max_num_workers}
    fields["task"] = {"type": Code(task)}
    return fields


def builtin_access(plan: EvalPlan, model: str) -> str | None:
    """Built-in configs hold many datasets whose names only OpenCompass knows, so a model gets all of
    them ("all", base models) or only the generative ones ("gen", chat models and endpoints)."""
    builtin = {d.abbr: d for d in plan.datasets if d.kind == "builtin"}
    units = [builtin[d] for mm, d in plan.combos if mm == model and d in builtin]
    if not units:
        return None
    kind = next(m.kind for m in plan.models if m.abbr == model)
    return "all" if kind == "hf_base" else "gen"


def datasets_per_task(settings, plan: EvalPlan) -> int:
    """Local runs put all of a model's datasets in one task (one model load, one process start);
    Slurm runs one task per model×dataset so they spread over the cluster."""
    return max(1, len(plan.datasets)) if settings.runner.kind == "local" else 1


def builtin_modules(plan: EvalPlan) -> dict[str, str]:
    """{file name beside the config: text}: one module per built-in config, exporting its datasets as
    `builtin_<i>_datasets` (whatever names the config itself uses)."""
    files = {}
    for i, d in enumerate(d for d in plan.datasets if d.kind == "builtin"):
        files[f"opencompass_builtin_{i}.py"] = "\n".join([
            f"# Built-in OpenCompass dataset config `{d.abbr}` ({d.module}), rendered by internlm-chain.",
            "from mmengine.config import read_base",
            "",
            "with read_base():",
            f"    from {d.module} import *  # noqa: F401,F403",
            "",
            "# every `*_datasets` list the config defines",
            f"builtin_{i}_datasets = sum((v for k, v in sorted(locals().items()) if k.endswith('_datasets')), [])",
            ""])
    return files


def render_config(settings, plan: EvalPlan, chain_name: str) -> str:
    max_out = settings.max_out_len
    out = [_header().format(chain=chain_name).rstrip("\n"), ""]
    builtins = [d for d in plan.datasets if d.kind == "builtin"]
    if builtins:
        out.append("with read_base():  # one module per built-in config (see those files)")
        out += [f"    from .opencompass_builtin_{i} import builtin_{i}_datasets  # {d.abbr}"
                for i, d in enumerate(builtins)]
        out.append("")
    out.append("# ---- models ----")
    out.append("models = [")
    for m in plan.models:
        out.append("    " + _call("dict", model_fields(m, max_out or 256, settings.batch_size), 4) + ",")
    out.append("]")
    out.append("")
    out.append("# ---- datasets ----")
    names = []
    if builtins:
        groups = ", ".join(f"({d.abbr!r}, builtin_{i}_datasets)" for i, d in enumerate(builtins))
        customs = [d.abbr for d in plan.datasets if d.kind == "custom"]
        out.append(f"_configs = [{groups}]")
        out.append("# a dataset abbr that two configs (or a custom file) share becomes '<abbr>@<config>'")
        out.append(f"_owners = {{a: {{''}} for a in {customs!r}}}")
        out.append("for _name, _group in _configs:")
        out.append("    for _d in _group:")
        out.append("        _owners.setdefault(_d['abbr'], set()).add(_name)")
        out.append("_builtin = []")
        out.append("for _name, _group in _configs:")
        out.append("    for _d in _group:")
        out.append("        if len(_owners[_d['abbr']]) > 1:")
        out.append("            _d['abbr'] = _d['abbr'] + '@' + _name")
        if settings.limit:
            out.append(f"        _d['reader_cfg']['test_range'] = '[0:{settings.limit}]'")
        if max_out:
            out.append("        if 'max_out_len' in _d['infer_cfg']['inferencer']:")
            out.append(f"            _d['infer_cfg']['inferencer']['max_out_len'] = {max_out}")
        out.append("        _builtin.append(_d)")
        out.append("")
    for d in plan.datasets:
        if d.kind == "custom":
            var = "custom_" + "".join(c if c.isalnum() else "_" for c in d.abbr)
            names.append(var)
            out.append(f"{var} = " + _call("dict", custom_dataset_fields(d, settings.limit, max_out), 0))
            out.append("")
    out.append("datasets = " + " + ".join([*(["_builtin"] if builtins else []), *(f"[{n}]" for n in names)] or ["[]"]))
    out.append("")
    out.append("# ---- which model scores which dataset (perplexity needs a base model) ----")
    if builtins:
        out.append("_builtin_gen = [d for d in _builtin if 'PPLInferencer' not in str(d['infer_cfg']['inferencer']['type'])]")
    out.append("_models = {m['abbr']: m for m in models}")
    if names:
        out.append("_by_abbr = {d['abbr']: d for d in datasets}")
    out.append("model_dataset_combinations = [")
    custom_abbrs = {d.abbr for d in plan.datasets if d.kind == "custom"}
    for m in plan.models:
        parts = []
        access = builtin_access(plan, m.abbr)
        if access:
            parts.append("_builtin" if access == "all" else "_builtin_gen")
        own = [d for mm, d in plan.combos if mm == m.abbr and d in custom_abbrs]
        if own:
            parts.append(f"[_by_abbr[a] for a in {own!r}]")
        if parts:
            out.append(f"    dict(models=[_models[{m.abbr!r}]], datasets={' + '.join(parts)}),")
    out.append("]")
    out.append("")
    out.append("# ---- how tasks run ----")
    num_split = settings.runner.num_split
    if num_split > 1:
        infer_part = {"type": Code("NumWorkerPartitioner"), "num_worker": num_split, "num_split": num_split}
    else:
        infer_part = {"type": Code("NaivePartitioner"), "n": datasets_per_task(settings, plan)}
    out.append("infer = " + _call("dict", {"partitioner": infer_part,
                                          "runner": _runner(settings, "OpenICLInferTask")}, 0))
    eval_part = {"type": Code("NaivePartitioner"), "n": datasets_per_task(settings, plan)}
    out.append("eval = " + _call("dict", {"partitioner": eval_part, "runner": _runner(settings, "OpenICLEvalTask")}, 0))
    out.append("")
    return "\n".join(out)
