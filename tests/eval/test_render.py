"""Rendered OpenCompass configs and jobs (no upstream code): goldens for GPU/Slurm, rules for CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from internlm_chain.chain.job import render_jobs_text
from internlm_chain.chain.planner import Planner
from internlm_chain.config.loader import load_chain
from internlm_chain.errors import ChainError

REPO = Path(__file__).resolve().parents[2]


def fake_model(root: Path, name: str, chat_template: bool = True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["InternLM2ForCausalLM"]}))
    tok = {"tokenizer_class": "InternLM2Tokenizer"}
    if chat_template:
        tok["chat_template"] = "{{ messages }}"
    (d / "tokenizer_config.json").write_text(json.dumps(tok))
    return d


def gsm8k_copy(root: Path) -> Path:
    d = root / "oc-data" / "data" / "gsm8k"
    d.mkdir(parents=True)
    for split in ("train", "test"):
        (d / f"{split}.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2\n#### 2"}) + "\n")
    return root / "oc-data"


def mcq_file(root: Path, name: str = "quiz.jsonl") -> Path:
    p = root / name
    p.write_text(json.dumps({"question": "1+1?", "A": "2", "B": "3", "C": "4", "D": "5", "answer": "A"}) + "\n")
    return p


def plan_text(chain: Path) -> tuple[str, list]:
    loaded = load_chain(chain)
    _ctx, jobs = Planner(loaded).plan("eval")
    return render_jobs_text(jobs, show_files=True), jobs


def test_golden_7b_on_gpus_with_slurm_runner(tmp_path, write_chain, golden):
    fake_model(tmp_path, "internlm2-chat-7b")
    fake_model(tmp_path, "internlm2-chat-7b-sft")
    data = gsm8k_copy(tmp_path)
    mcq_file(tmp_path)
    chain = write_chain(f"""
name: eval-7b
device: cuda
workdir: {tmp_path}/run
runtimes: {{overrides: {{opencompass: {{python: /opt/envs/opencompass/bin/python}}}}}}
stages:
  eval:
    models:
      - {{path: {tmp_path}/internlm2-chat-7b, abbr: internlm2-chat-7b}}
      - {{path: {tmp_path}/internlm2-chat-7b-sft, abbr: sft, num_gpus: 2}}
      - {{path: {tmp_path}/internlm2-chat-7b, abbr: base-7b, type: base}}
    datasets: [gsm8k_gen, ceval_ppl]
    data_dir: {data}
    custom: [{{path: {tmp_path}/quiz.jsonl}}]
    max_out_len: 512
    batch_size: 16
    runner: {{kind: slurm, partition: llm_eval, qos: high, max_num_workers: 32, retry: 1,
              extra_command: ["-c 16"]}}
""")
    (data / "data" / "ceval" / "formal_ceval").mkdir(parents=True)
    for split in ("dev", "val", "test"):
        (data / "data" / "ceval" / "formal_ceval" / split).mkdir()
    text, jobs = plan_text(chain)
    golden.check("eval/7b_slurm_gpu.txt", text, replace={str(tmp_path): "/TMP", str(REPO): "/REPO"})
    assert [j.name for j in jobs] == ["preflight", "opencompass"]
    assert not any(j.distributed for j in jobs)  # OpenCompass's own SlurmRunner spreads the tasks


def test_golden_cpu_endpoint_and_local_runner(tmp_path, write_chain, golden):
    fake_model(tmp_path, "tok", chat_template=False)
    mcq_file(tmp_path)
    chain = write_chain(f"""
name: eval-cpu
device: cpu
workdir: {tmp_path}/run
model: {{path: {tmp_path}/tok}}
runtimes: {{overrides: {{opencompass: {{python: /opt/envs/opencompass/bin/python}}}}}}
stages:
  eval:
    endpoints:
      - {{url: "http://127.0.0.1:23333/v1/", served_name: internlm2-chat}}
    custom: [{{path: {tmp_path}/quiz.jsonl, abbr: quiz}}]
    limit: 5
""")
    text, _ = plan_text(chain)
    golden.check("eval/cpu_endpoint_local.txt", text, replace={str(tmp_path): "/TMP", str(REPO): "/REPO"})
    # chain model with no template of its own: evaluated (by default) with the chain's chat template
    assert "OpenAISDK" in text and "'http://127.0.0.1:23333/v1'" in text
    assert "tokenizer_path='/TMP/tok'" in text.replace(str(tmp_path), "/TMP")


def test_default_models_are_chain_model_with_chain_template(tmp_path, write_chain):
    fake_model(tmp_path, "base", chat_template=False)
    mcq_file(tmp_path)
    chain = write_chain(f"""
name: c
device: cpu
model: {{path: {tmp_path}/base, chat_template: internlm2_chat}}
runtimes: {{overrides: {{opencompass: {{python: /x/python}}}}}}
stages:
  eval: {{custom: [{{path: {tmp_path}/quiz.jsonl}}]}}
""")
    text, jobs = plan_text(chain)
    assert "abbr='base'" in text and "HuggingFacewithChatTemplate" in text
    assert "<|im_start|>" in text and "stop_words=['<|im_end|>']" in text
    assert "'num_gpus': 0" in text and "torch.float32" in text
    env = jobs[1].env
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_DATASETS_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert jobs[1].cwd.endswith("scratch") and jobs[1].argv[1:3] == ["-m", "opencompass.cli.main"]


def problems_of(chain: Path) -> str:
    loaded = load_chain(chain)
    with pytest.raises(ChainError) as exc:
        Planner(loaded).plan("eval")
    assert exc.value.exit_code == 2
    return "\n".join(p.render() for p in exc.value.problems)


def test_missing_builtin_files_named_before_any_job(tmp_path, write_chain):
    fake_model(tmp_path, "m")
    (tmp_path / "empty").mkdir()
    chain = write_chain(f"""
name: c
device: cpu
stages:
  eval:
    models: [{{path: {tmp_path}/m}}]
    datasets: [gsm8k_gen]
    data_dir: {tmp_path}/empty
""")
    text = problems_of(chain)
    assert f"{tmp_path}/empty/data/gsm8k/train.jsonl" in text and "stages.eval.datasets.0" in text
    assert "chain.yaml:" in text  # located in the file


def test_builtin_without_data_dir_and_bad_custom_file(tmp_path, write_chain):
    fake_model(tmp_path, "m")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    chain = write_chain(f"""
name: c
device: cpu
stages:
  eval:
    models: [{{path: {tmp_path}/m}}, {{path: {tmp_path}/nope}}]
    datasets: [mmlu_gen]
    custom: [{{path: {tmp_path}/bad.jsonl}}, {{path: {tmp_path}/missing.csv}}]
""")
    text = problems_of(chain)
    assert "stages.eval.data_dir" in text and "nothing is downloaded" in text
    assert "bad.jsonl: the rows lack question, answer" in text
    assert f"dataset file not found: {tmp_path}/missing.csv" in text
    assert f"stages.eval.models.1.path: {tmp_path}/nope does not exist" in text


def test_ppl_needs_a_base_model(tmp_path, write_chain):
    fake_model(tmp_path, "m")
    mcq_file(tmp_path)
    chain = write_chain(f"""
name: c
device: cpu
stages:
  eval:
    models: [{{path: {tmp_path}/m, type: chat}}]
    custom: [{{path: {tmp_path}/quiz.jsonl, mode: ppl}}]
""")
    assert "perplexity needs a base model" in problems_of(chain)


def test_endpoint_needs_tokenizer_and_key_env(tmp_path, write_chain, monkeypatch):
    monkeypatch.delenv("MY_EVAL_KEY", raising=False)
    mcq_file(tmp_path)
    chain = write_chain(f"""
name: c
device: cpu
stages:
  eval:
    endpoints: [{{url: "http://127.0.0.1:1/v1", served_name: x, api_key_env: MY_EVAL_KEY}}]
    custom: [{{path: {tmp_path}/quiz.jsonl}}]
""")
    text = problems_of(chain)
    assert "endpoints.0.tokenizer_path: OpenCompass needs a local tokenizer" in text
    assert "environment variable MY_EVAL_KEY is not set" in text


def test_schema_errors_are_located(tmp_path, write_chain):
    chain = write_chain("""
name: c
stages:
  eval:
    runner: {kind: local, partition: gpu}
    custom: [{path: data.txt}]
""")
    with pytest.raises(ChainError) as exc:
        load_chain(chain)
    text = "\n".join(p.render() for p in exc.value.problems)
    assert "partition only apply to kind: slurm" in text and "must be a .jsonl or .csv file" in text


def test_default_models_include_the_finetuned_model_with_its_fingerprint(tmp_path, write_chain):
    from internlm_chain.chain.artifacts import HFModel
    from internlm_chain.stages.eval.resolve import resolve

    base = fake_model(tmp_path, "base")
    sft = fake_model(tmp_path, "sft")
    mcq_file(tmp_path)
    chain = write_chain(f"""
name: c
device: cpu
model: {{path: {base}}}
stages:
  finetune: {{enabled: false}}
  eval: {{custom: [{{path: {tmp_path}/quiz.jsonl}}]}}
""")
    loaded = load_chain(chain)
    planner = Planner(loaded, {"finetune.model": HFModel(path=str(sft), fingerprint="sha256:ft")})
    ctx = planner.context("eval")
    ctx.inputs = {"finetune.model": planner.artifacts["finetune.model"]}  # as when finetune is enabled
    plan = resolve(ctx)
    assert [(m.abbr, m.path, m.fingerprint, m.source) for m in plan.models] == [
        ("base", str(base), "", "chain model.path"), ("finetuned", str(sft), "sha256:ft", "finetune.model")]


def test_endpoint_key_is_read_from_the_environment_at_load_time(tmp_path, write_chain, monkeypatch):
    monkeypatch.setenv("MY_EVAL_KEY", "sk-secret-value")
    fake_model(tmp_path, "tok")
    mcq_file(tmp_path)
    chain = write_chain(f"""
name: c
device: cpu
stages:
  eval:
    endpoints: [{{url: "http://127.0.0.1:8000", served_name: x, api_key_env: MY_EVAL_KEY,
                  tokenizer_path: {tmp_path}/tok}}]
    custom: [{{path: {tmp_path}/quiz.jsonl}}]
""")
    text, _ = plan_text(chain)
    assert "key='{{$MY_EVAL_KEY:EMPTY}}'" in text and "sk-secret-value" not in text
    assert "openai_api_base='http://127.0.0.1:8000/v1'" in text  # a bare server address means its /v1 API


def test_two_configs_of_one_family_each_get_their_own_module(tmp_path, write_chain):
    """gsm8k_gen and gsm8k_gen_17d0dc both define `gsm8k_datasets`: a shared read_base() namespace would keep
    only one, so each is read through its own module beside the config."""
    fake_model(tmp_path, "m")
    data = gsm8k_copy(tmp_path)
    chain = write_chain(f"""
name: c
device: cpu
runtimes: {{overrides: {{opencompass: {{python: /x/python}}}}}}
stages:
  eval:
    models: [{{path: {tmp_path}/m}}]
    datasets: [gsm8k_gen, gsm8k/gsm8k_gen_17d0dc]
    data_dir: {data}
""")
    text, jobs = plan_text(chain)
    files = jobs[0].files
    modules = sorted(Path(f).name for f in files if Path(f).name.startswith("opencompass_builtin_"))
    assert modules == ["opencompass_builtin_0.py", "opencompass_builtin_1.py"]
    assert all(Path(f).parent == Path(jobs[1].argv[3]).parent for f in files)  # beside the config
    config = files[jobs[1].argv[3]]
    assert "from .opencompass_builtin_0 import builtin_0_datasets" in config
    assert "from .opencompass_builtin_1 import builtin_1_datasets" in config
    assert "import *" not in config  # star-imports only inside the per-config modules
    assert "from opencompass.configs.datasets.gsm8k.gsm8k_gen_17d0dc import *" in "\n".join(files.values())


def test_the_same_builtin_config_twice_is_an_error(tmp_path, write_chain):
    fake_model(tmp_path, "m")
    data = gsm8k_copy(tmp_path)
    chain = write_chain(f"""
name: c
device: cpu
stages:
  eval:
    models: [{{path: {tmp_path}/m}}]
    datasets: [gsm8k_gen, gsm8k/gsm8k_gen]
    data_dir: {data}
""")
    text = problems_of(chain)
    assert "stages.eval.datasets.1: 'gsm8k/gsm8k_gen' is listed twice (as 'gsm8k_gen')" in text


@pytest.mark.parametrize("name,module,mode", [
    ("gsm8k_gen", "opencompass.configs.datasets.gsm8k.gsm8k_gen", "gen"),
    ("ceval_ppl", "opencompass.configs.datasets.ceval.ceval_ppl", "ppl"),
    ("gsm8k_0shot_gen_a58960", "opencompass.configs.datasets.gsm8k.gsm8k_0shot_gen_a58960", "gen"),
    ("gsm8k_0shot_v2_gen_a58960", "opencompass.configs.datasets.gsm8k.gsm8k_0shot_v2_gen_a58960", "gen"),
    ("math/math_4shot_base_gen_43d5b6", "opencompass.configs.datasets.math.math_4shot_base_gen_43d5b6", "gen"),
])
def test_builtin_config_names_find_their_directory(name, module, mode):
    from internlm_chain.stages.eval.resolve import builtin_module

    got_module, _family, got_mode = builtin_module(name)
    assert (got_module, got_mode) == (module, mode)


def test_adapter_only_finetune_is_evaluated_on_the_base_it_was_trained_on(tmp_path, write_chain):
    """finetune may train on another base than the chain's model.path (its own `model`, or pretrain's output)."""
    from internlm_chain.chain.artifacts import Adapter
    from internlm_chain.stages.eval.resolve import resolve

    base = fake_model(tmp_path, "base")
    trained_on = fake_model(tmp_path, "pretrained")
    adapter = tmp_path / "adapter"
    mcq_file(tmp_path)
    chain = write_chain(f"""
name: c
device: cpu
model: {{path: {base}}}
stages:
  finetune: {{enabled: false}}
  eval: {{custom: [{{path: {tmp_path}/quiz.jsonl}}]}}
""")
    art = Adapter(path=str(adapter), base_model=str(trained_on), fingerprint="sha256:ad")
    planner = Planner(load_chain(chain), {"finetune.adapter": art})
    ctx = planner.context("eval")
    ctx.inputs = {"finetune.adapter": planner.artifacts["finetune.adapter"]}  # as with finetune merge: false
    plan = resolve(ctx)
    assert [(m.abbr, m.path, m.adapter, m.fingerprint) for m in plan.models] == [
        ("base", str(base), None, ""), ("finetuned", str(trained_on), str(adapter), "sha256:ad")]
