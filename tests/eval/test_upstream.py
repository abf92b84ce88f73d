"""Real OpenCompass runs on CPU with tiny models (slow: each task ~10–70 s; kept few).

One run covers most of the stage: two models side by side (a chat model and a base model), a custom
multiple-choice file scored generatively by the chat model and by perplexity by the base model, and the
built-in gsm8k config read from a local copy. Then an OpenAI-compatible endpoint (a real HTTP server
with scripted replies), and the failure paths.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from tests.eval.conftest import ichain, runtime_block
from tests.support.scripted_openai import ScriptedOpenAI, unused_port

pytestmark = pytest.mark.upstream


def test_two_models_custom_mcq_gen_and_ppl_and_gsm8k(tiny_models, mcq_jsonl, gsm8k_root, write_chain, tmp_path):
    chat, base = tiny_models
    workdir = tmp_path / "run"
    chain = write_chain(f"""
name: eval-up
device: cpu
workdir: {workdir}
{runtime_block()}
stages:
  eval:
    models:
      - {{path: {chat}, abbr: chat0}}
      - {{path: {base}, abbr: base1, type: base}}
    custom: [{{path: {mcq_jsonl}}}]
    datasets: [gsm8k_gen, gsm8k/gsm8k_0shot_gen_a58960]
    data_dir: {gsm8k_root}
    limit: 2
    max_out_len: 4
    batch_size: 4
""")
    res = ichain("eval", "-c", str(chain))
    assert res.returncode == 0, res.stderr[-4000:]
    report = json.loads((workdir / "eval" / "report.json").read_text())
    pairs = {(s["model"], s["dataset"], s["metric"]) for s in report["scores"]}
    # chat model: the mcq file generatively (OptionSimAcc) and gsm8k; base model: the mcq file by perplexity
    assert ("chat0", "quiz", "accuracy") in pairs
    assert ("base1", "quiz_ppl", "accuracy") in pairs
    # two configs of one family (few-shot and 0-shot gsm8k, both abbr 'gsm8k') are kept apart, each scored
    variants = ("gsm8k@gsm8k_gen", "gsm8k@gsm8k_0shot_gen_a58960")
    for model in ("chat0", "base1"):
        assert {(model, v, "accuracy") for v in variants} <= pairs
    assert not any(d == "gsm8k" for _, d, _ in pairs)
    prompts = {v: json.dumps(json.loads((workdir / "eval" / next(
        s["predictions"] for s in report["scores"] if (s["model"], s["dataset"]) == ("chat0", v))).read_text()))
        for v in variants}
    assert "Angelo" in prompts[variants[0]] and "boxed" not in prompts[variants[0]]  # its own few-shot prompt
    assert "boxed" in prompts[variants[1]] and "Angelo" not in prompts[variants[1]]  # the 0-shot one
    assert not any(m == "chat0" and d == "quiz_ppl" for m, d, _ in pairs)
    for s in report["scores"]:
        assert 0.0 <= s["score"] <= 100.0
        assert (workdir / "eval" / s["predictions"]).exists()
    # the ppl prediction file really holds perplexities for every option
    ppl_pred = json.loads((workdir / "eval" / next(s["predictions"] for s in report["scores"]
                                                     if s["dataset"] == "quiz_ppl")).read_text())
    assert len(ppl_pred) == 2 and all("label: A" in json.dumps(v) or "PPL" in json.dumps(v) for v in ppl_pred.values())
    manifest = json.loads((workdir / "manifest.json").read_text())
    rec = manifest["stages"]["eval"]
    assert rec["state"] == "done" and rec["outputs"]["report"]["kind"] == "EvalReport"
    assert set(rec["metrics"]["scores"]) == {"chat0", "base1"}
    assert (workdir / "eval" / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "eval scores" in res.stderr and "chat0" in res.stderr  # the Rich table
    assert not (workdir / "eval" / "scratch" / "outputs").exists()  # OpenCompass wrote into our scratch dir only
    # compare: the same run against itself has zero deltas everywhere
    cmp = ichain("eval", "compare", str(workdir), str(workdir / "eval"), "--json")
    assert cmp.returncode == 0, cmp.stderr
    assert all(r["delta"] == 0 for r in json.loads(cmp.stdout))


def test_endpoint_with_scripted_openai_server_flags_form(tiny_models, mcq_jsonl, tmp_path, monkeypatch):
    """`ichain eval --endpoint …` against a real HTTP server: scripted right answers score 100; the API
    key travels from the environment to the server and is never left in the run's files."""
    monkeypatch.setenv("EVAL_TEST_KEY", "sk-test-4242")
    rows = [json.loads(line) for line in mcq_jsonl.read_text().splitlines()]
    answers = {r["question"]: r["answer"] for r in rows}

    def reply(messages):
        text = messages[-1]["content"]
        return next((f"Answer: {a}" for q, a in answers.items() if q in text), "Answer: D")

    from tests.conftest import runtime_python

    with ScriptedOpenAI(lambda body: reply(body["messages"]), model="tiny-chat", strict_model=True) as srv:
        res = ichain("eval", "--endpoint", srv.base_url, "--served-name", "tiny-chat", "--tokenizer",
                     str(tiny_models[0]), "--custom", str(mcq_jsonl), "--limit", "3", "--device", "cpu",
                     "--runtime-python", str(runtime_python("opencompass")), "-o", str(tmp_path / "ep"),
                     "--api-key-env", "EVAL_TEST_KEY")
        auth = list(srv.auth)
        asked = [r["messages"][-1]["content"] for r in srv.requests if "messages" in r]
    assert res.returncode == 0, res.stderr[-4000:]
    report = json.loads((tmp_path / "ep" / "eval" / "report.json").read_text())
    score = {(s["model"], s["dataset"]): s["score"] for s in report["scores"]}
    assert score[("tiny-chat", "quiz")] == 100.0
    assert len(asked) == 3 and all("Question:" in q for q in asked)
    assert (tmp_path / "ep" / "eval-chain.yaml").exists()
    assert auth and set(auth) == {"Bearer sk-test-4242"}
    leaked = [p for p in (tmp_path / "ep").rglob("*") if p.is_file() and b"sk-test-4242" in p.read_bytes()]
    assert leaked == []


def test_unreachable_endpoint_fails_clearly(tiny_models, mcq_jsonl, tmp_path):
    from tests.conftest import runtime_python

    url = f"http://127.0.0.1:{unused_port()}/v1"
    res = ichain("eval", "--endpoint", url, "--served-name", "x", "--tokenizer", str(tiny_models[0]),
                 "--custom", str(mcq_jsonl), "--device", "cpu",
                 "--runtime-python", str(runtime_python("opencompass")), "-o", str(tmp_path / "ep"))
    assert res.returncode == 1
    assert f"endpoint {url} is unreachable" in res.stderr
    assert "preflight" in res.stderr and "Traceback" not in res.stderr.split("preflight")[-1]


def test_builtin_dataset_missing_locally_fails_before_opencompass(tiny_models, tmp_path, write_chain):
    """A built-in outside our known table is checked by the preflight with OpenCompass's own mapping."""
    (tmp_path / "empty").mkdir()
    chain = write_chain(f"""
name: eval-missing
device: cpu
workdir: {tmp_path / 'run'}
{runtime_block()}
stages:
  eval:
    models: [{{path: {tiny_models[0]}}}]
    datasets: [hellaswag_gen]
    data_dir: {tmp_path / 'empty'}
""")
    res = ichain("eval", "-c", str(chain))
    assert res.returncode == 1, res.stderr[-3000:]
    assert "dataset 'hellaswag'" in res.stderr and str(tmp_path / "empty") in res.stderr
    assert "nothing is downloaded" in res.stderr
    assert not list((tmp_path / "run" / ".staging" / "eval").glob("opencompass/*"))  # OpenCompass never ran


def test_task_failing_inside_opencompass_fails_the_stage(tiny_models, mcq_jsonl, tmp_path, write_chain):
    """A model whose weights are corrupt: OpenCompass exits 0, the stage must still fail, naming the log."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models[0], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    chain = write_chain(f"""
name: eval-broken
device: cpu
workdir: {tmp_path / 'run'}
{runtime_block()}
stages:
  eval:
    models: [{{path: {broken}, abbr: broken}}]
    custom: [{{path: {mcq_jsonl}}}]
    limit: 1
    max_out_len: 2
""")
    res = ichain("eval", "-c", str(chain))
    assert res.returncode == 1, res.stderr[-3000:]
    assert "infer of broken on quiz failed" in res.stderr
    assert "logs/infer/broken/quiz.out" in res.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["eval"]["state"] == "failed"
    assert not (tmp_path / "run" / "eval").exists()  # nothing half-written is published


def test_golden_slurm_config_loads_in_opencompass(tmp_path):
    """The 7B/Slurm golden config is valid for OpenCompass's own loader and partitioner."""
    import subprocess

    from tests.conftest import GOLDEN, runtime_python

    text = (GOLDEN / "eval" / "7b_slurm_gpu.txt").read_text()
    # the config and the per-built-in modules it reads beside it
    for name, body in re.findall(r"# ---- file /TMP/run/\.staging/eval/(opencompass_\w+\.py) ----\n(.*?)# ---- end \1 ----",
                                 text, flags=re.S):
        (tmp_path / name).write_text(body.replace("/TMP", str(tmp_path)))
    cfg_path = tmp_path / "opencompass_config.py"
    probe = """
import sys
from mmengine.config import Config
from opencompass.partitioners import NaivePartitioner
cfg = Config.fromfile(sys.argv[1], format_python_code=False)
combos = {c['models'][0]['abbr']: [d['abbr'] for d in c['datasets']] for c in cfg['model_dataset_combinations']}
cfg['work_dir'] = sys.argv[2]
tasks = NaivePartitioner(out_dir=sys.argv[2], n=1)(cfg)
print(cfg['infer']['runner']['type'], cfg['infer']['runner']['partition'], cfg['infer']['runner']['qos'])
print(len(combos['internlm2-chat-7b']), len(combos['base-7b']), len(tasks))
print('gsm8k' in combos['sft'], any(a.startswith('ceval') for a in combos['sft']), 'quiz_ppl' in combos['base-7b'])
"""
    res = subprocess.run([str(runtime_python("opencompass")), "-c", probe, str(cfg_path), str(tmp_path / "pred")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()[-3:]
    assert "SlurmRunner" in lines[0] and lines[0].endswith("llm_eval high")
    n_chat, n_base, n_tasks = map(int, lines[1].split())
    assert n_chat == 2 and n_base > 50  # chat: gsm8k + quiz; base: gsm8k + 52 ceval subsets + quiz_ppl
    assert n_tasks == 2 * n_chat + n_base  # one Slurm task per model × dataset
    assert lines[2] == "True False True"  # ceval_ppl (perplexity) never reaches chat models


def test_shared_abbrs_renamed_by_opencompass_loader(tmp_path, write_chain, gsm8k_root):
    """Two gsm8k configs and a custom file named gsm8k: OpenCompass's own loader sees three distinct abbrs,
    each dataset with its own config's prompt."""
    import subprocess

    from tests.conftest import runtime_python
    from tests.eval.test_render import fake_model

    from internlm_chain.chain.planner import Planner
    from internlm_chain.config.loader import load_chain

    fake_model(tmp_path, "m")
    (tmp_path / "gsm8k.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    chain = write_chain(f"""
name: c
device: cpu
workdir: {tmp_path / 'run'}
{runtime_block()}
stages:
  eval:
    models: [{{path: {tmp_path}/m}}]
    datasets: [gsm8k_gen, gsm8k/gsm8k_gen_17d0dc, mmlu_gen]
    custom: [{{path: {tmp_path}/gsm8k.jsonl}}]
    data_dir: {gsm8k_root}
    limit: 3
""")
    (gsm8k_root / "data" / "mmlu" / "dev").mkdir(parents=True)
    (gsm8k_root / "data" / "mmlu" / "test").mkdir()
    _ctx, jobs = Planner(load_chain(chain)).plan("eval")
    for path, body in jobs[0].files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(body)
    probe = """
import json, sys
from mmengine.config import Config
cfg = Config.fromfile(sys.argv[1], format_python_code=False)
print(json.dumps([[d['abbr'], d['reader_cfg'].get('test_range'), d['infer_cfg']['inferencer'].get('stopping_criteria')]
                  for d in cfg['datasets']]))
"""
    res = subprocess.run([str(runtime_python("opencompass")), "-c", probe, jobs[1].argv[3]],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    by_abbr = {a: (r, s) for a, r, s in rows}
    assert len(by_abbr) == len(rows)  # every abbr distinct
    assert by_abbr["gsm8k@gsm8k_gen"] == ("[0:3]", None)
    assert by_abbr["gsm8k@gsm8k_gen_17d0dc"] == ("[0:3]", ["Question"])  # its own inferencer settings
    assert "gsm8k" in by_abbr  # the custom file keeps its name
    mmlu = [a for a in by_abbr if a.startswith("lukaemon_mmlu_")]
    assert len(mmlu) == 57 and not any("@" in a for a in mmlu)  # no clash, no rename
