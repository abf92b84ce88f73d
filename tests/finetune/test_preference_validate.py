"""Preference modes (dpo, orpo, reward): every bad input is one located error before any job starts, and
the planned jobs and outputs match the mode. No runtime needed."""

from __future__ import annotations

import json

import pytest

from finetune.finetune_helpers import fake_7b, fake_7b_chat, pair_rows, write_jsonl
from internlm_chain.chain.planner import Planner
from internlm_chain.config.loader import load_chain
from internlm_chain.errors import ChainError
from internlm_chain.workers import finetune_rows as rows


def _chain(tmp_path, write_chain, stage: str, device: str = "cpu", extra: str = "", chat: bool = True) -> str:
    model = fake_7b_chat(tmp_path) if chat else fake_7b(tmp_path)
    return write_chain(f"name: t\nworkdir: {tmp_path}/runs\ndevice: {device}\nmodel: {{path: {model}}}\n"
                       "stages:\n  finetune:\n" + "".join(f"    {line}\n" for line in stage.strip().splitlines())
                       + extra)


def _problems(path) -> list[str]:
    try:
        loaded = load_chain(path)
    except ChainError as exc:
        return [p.render() for p in exc.problems]
    planner = Planner(loaded)
    problems: list[str] = []
    for stage in loaded.config.enabled_stages():
        problems += [p.render() for p in planner.validate_stage(stage)]
    return problems


def _pairs(tmp_path, rows_=None):
    return write_jsonl(tmp_path / "pairs.jsonl", rows_ if rows_ is not None else pair_rows(100))  # an epoch long enough for the 3% warm-up


@pytest.mark.parametrize("mode", ["dpo", "orpo"])
def test_good_preference_chain_plans(tmp_path, write_chain, mode):
    data = _pairs(tmp_path)
    path = _chain(tmp_path, write_chain, f"mode: {mode}\ndata: {data}")
    assert _problems(path) == []
    ctx, jobs = Planner(load_chain(path)).plan("finetune")
    assert [j.name for j in jobs] == ["check-data", "train", "convert", "merge", "verify"]
    assert "--kind" in jobs[0].argv and jobs[0].argv[jobs[0].argv.index("--kind") + 1] == "preference"
    cfg = jobs[1].files[str(ctx.out_dir / "xtuner_config.py")]
    assert f"type={mode.upper()}," in cfg and "type=build_preference_dataset," in cfg
    assert "collate_fn=dict(type=preference_collate_fn" in cfg and "pack_to_max_length = False" in cfg
    assert "--keep-template" in jobs[-1].argv


def test_reward_plans_a_reward_model_and_no_merge(tmp_path, write_chain):
    data = _pairs(tmp_path)
    path = _chain(tmp_path, write_chain, f"mode: reward\nmethod: full\ndata: {data}")
    assert _problems(path) == []
    planner = Planner(load_chain(path))
    ctx, jobs = planner.plan("finetune")
    assert [j.name for j in jobs] == ["check-data", "train", "convert", "verify"]
    cfg = jobs[1].files[str(ctx.out_dir / "xtuner_config.py")]
    # InternLM2's reserved token, as XTuner's own reward configs use
    assert "reward_token_id = 92527" in cfg and "type=RewardModel," in cfg and "is_reward=True," in cfg
    assert jobs[2].argv[-3].endswith("/reward_model")
    outs = planner.impl("finetune").predict_outputs(ctx, tmp_path / "final")
    assert set(outs) == {"checkpoint", "reward_model"} and outs["reward_model"].kind == "RewardModel"
    assert outs["reward_model"].meta["reward_token_id"] == 92527


def test_full_dpo_with_zero3_loads_its_own_reference(tmp_path, write_chain):
    data = _pairs(tmp_path)
    ref = fake_7b_chat(tmp_path / "sft")
    path = _chain(tmp_path, write_chain, f"mode: dpo\nmethod: full\ndeepspeed: zero3\ndata: {data}", "cuda")
    ctx, jobs = Planner(load_chain(path)).plan("finetune")
    cfg = jobs[1].files[str(ctx.out_dir / "xtuner_config.py")]
    assert "    ref_llm=dict(\n" in cfg and "pretrained_model_name_or_path=pretrained_model_name_or_path," in cfg
    path = _chain(tmp_path, write_chain, f"mode: dpo\nmethod: lora\ndata: {data}\npreference: {{reference_model: {ref}}}")
    ctx, jobs = Planner(load_chain(path)).plan("finetune")
    cfg = jobs[1].files[str(ctx.out_dir / "xtuner_config.py")]
    assert f"reference_model_name_or_path = '{ref}'" in cfg
    assert "pretrained_model_name_or_path=reference_model_name_or_path," in cfg
    path = _chain(tmp_path, write_chain, f"mode: dpo\nmethod: full\ndata: {data}")
    ctx, jobs = Planner(load_chain(path)).plan("finetune")
    assert "ref_llm" not in jobs[1].files[str(ctx.out_dir / "xtuner_config.py")]  # XTuner's frozen copy


BAD_ROWS = [
    ({"prompt": [{"role": "user", "content": "hi"}], "rejected": [{"role": "assistant", "content": "no"}]},
     "field 'chosen': preference rows need \"prompt\", \"chosen\" and \"rejected\""),
    ({"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "yes"}],
      "rejected": [{"role": "assistant", "content": "yes"}]}, "field 'rejected': is the same as chosen"),
    ({"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "user", "content": "yes"}],
      "rejected": [{"role": "assistant", "content": "no"}]},
     "field 'chosen[0].role': role must be assistant, not 'user'"),
    ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}],
      "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]},
     "field 'prompt[1].role': the prompt must end with a user message"),
    ({"prompt": [{"role": "human", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
      "rejected": [{"role": "assistant", "content": "b"}]}, "field 'prompt[0].role'"),
    ({"prompt": [{"role": "user", "content": "hi"}], "chosen": [], "rejected": [{"role": "assistant", "content": "b"}]},
     "field 'chosen': must be a non-empty list"),
    ({"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": 3}],
      "rejected": [{"role": "assistant", "content": "b"}]}, "field 'chosen[0].content': content must be a string"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "field 'prompt'"),
]


@pytest.mark.parametrize("bad, expected", BAD_ROWS)
def test_bad_pair_names_file_line_field(tmp_path, write_chain, bad, expected):
    data = _pairs(tmp_path, [*pair_rows(3), bad, *pair_rows(2)])
    (msg,) = _problems(_chain(tmp_path, write_chain, f"mode: dpo\ndata: {data}"))
    assert "chain.yaml:" in msg and "stages.finetune.data" in msg
    assert f"pairs.jsonl:4: {expected}" in msg


def test_every_row_is_checked_by_the_job(tmp_path):
    """Validation reads the first rows; the check job (same code, in the runtime) reads them all."""
    data = _pairs(tmp_path, [*pair_rows(150), {"prompt": [{"role": "user", "content": "q"}]}])
    assert rows.first_problem([data], "preference") is None
    assert rows.first_problem([data], "preference", limit=None).startswith(f"{data}:151: field 'chosen'")


@pytest.mark.parametrize("stage, expected", [
    ("mode: dpo\npack_to_max_length: true", "stages.finetune: mode dpo trains on whole preference pairs"),
    ("mode: reward\nmethod: lora", "mode reward needs method: full (XTuner 0.2.0 drops the reward head"),
    ("mode: reward\nmethod: full\nevaluation_prompts: [hi]", "a reward model scores replies"),
    ("mode: orpo\npreference: {loss_type: ipo}", "preference.loss_type is read by mode dpo only"),
    ("mode: sft\npreference: {beta: 0.2}", "preference.beta is read by mode dpo / orpo only"),
    ("mode: dpo\ndata_format: alpaca", "data_format applies to mode sft only"),
    ("mode: dpo\npreference: {loss_type: hinge, label_smoothing: 0.1}", "label_smoothing applies to loss_type"),
])
def test_settings_that_do_not_fit_the_mode(tmp_path, write_chain, stage, expected):
    data = _pairs(tmp_path)
    msgs = _problems(_chain(tmp_path, write_chain, f"{stage}\ndata: {data}"))
    assert len(msgs) == 1 and expected in msgs[0] and "chain.yaml:" in msgs[0], msgs


def test_qlora_dpo_on_cpu_is_an_error(tmp_path, write_chain):
    data = _pairs(tmp_path)
    (msg,) = _problems(_chain(tmp_path, write_chain, f"mode: dpo\nmethod: qlora\ndata: {data}"))
    assert "stages.finetune.method" in msg and "QLoRA needs a CUDA GPU" in msg
    assert _problems(_chain(tmp_path, write_chain, f"mode: dpo\nmethod: qlora\ndata: {data}", "cuda")) == []


def test_model_and_data_problems(tmp_path, write_chain):
    data = _pairs(tmp_path)
    (msg,) = _problems(_chain(tmp_path, write_chain, f"mode: dpo\ndata: {data}", chat=False))
    assert "stages.finetune.model" not in msg and "<chain>" not in msg
    assert "has none" in msg and "chat_template" in msg
    (msg,) = _problems(_chain(tmp_path, write_chain, "mode: orpo"))
    assert "stages.finetune.data" in msg and "mode orpo needs preference pairs" in msg
    (msg,) = _problems(_chain(tmp_path, write_chain, f"mode: dpo\ndata: {data}\n"
                                                     f"preference: {{reference_model: {tmp_path}/nope}}"))
    assert "stages.finetune.preference.reference_model" in msg and "no config.json" in msg


def test_reward_token(tmp_path, write_chain):
    data = _pairs(tmp_path)
    base = f"mode: reward\nmethod: full\ndata: {data}\n"
    (msg,) = _problems(_chain(tmp_path, write_chain, base + "preference: {reward_token_id: 92544}"))
    assert "stages.finetune.preference.reward_token_id" in msg and "vocab_size 92544" in msg
    model = fake_7b_chat(tmp_path)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen2", "pad_token_id": 7}))
    path = write_chain(f"name: t\nworkdir: {tmp_path}/runs\ndevice: cpu\nmodel: {{path: {model}}}\n"
                       f"stages:\n  finetune:\n    mode: reward\n    method: full\n    data: {data}\n")
    (msg,) = _problems(path)
    assert "no default reward token for model_type 'qwen2'" in msg
    path = write_chain(path.read_text() + "    preference: {reward_token_id: 7}\n")
    (msg,) = _problems(path)
    assert "is the pad token" in msg


def test_reward_model_is_not_a_chat_model_downstream(tmp_path, write_chain):
    data = _pairs(tmp_path)
    base = f"mode: reward\nmethod: full\ndata: {data}"
    msgs = _problems(_chain(tmp_path, write_chain, base, extra="  deploy: {}\n"))
    assert any("stages.finetune.mode" in m and "deploy would silently serve the base model" in m for m in msgs), msgs
    msgs = _problems(_chain(tmp_path, write_chain, base,
                            extra="  deploy: {model: '${stages.finetune.outputs.reward_model}'}\n"))
    assert any("stages.deploy.model" in m and "cannot take a reward model" in m for m in msgs), msgs
    msgs = _problems(_chain(tmp_path, write_chain, base,
                            extra="  deploy: {model: '${stages.finetune.outputs.model}'}\n"))
    assert any("stages.deploy.model" in m and "yields no `model` output" in m and "reward_model" in m
               for m in msgs), msgs
    # a dpo run's merged model is what deploy takes, as after sft
    assert not [m for m in _problems(_chain(tmp_path, write_chain, f"mode: dpo\ndata: {data}",
                                             extra="  deploy: {model: '${stages.finetune.outputs.model}'}\n"))
                if "finetune" in m]


def test_preference_rows_are_a_row_kind():
    assert rows.row_kind("dpo", "openai") == rows.row_kind("reward", "openai") == "preference"
    assert rows.row_kind("sft", "alpaca") == "alpaca" and rows.row_kind("continue", "openai") == "text"


def test_example_dpo_chain_validates(tmp_path, monkeypatch):
    """configs/internlm2-7b-dpo.yaml passes `ichain config validate` with local paths, and plans LoRA DPO."""
    import subprocess
    import sys
    from pathlib import Path

    model = fake_7b_chat(tmp_path)
    data = _pairs(tmp_path)
    example = Path(__file__).resolve().parents[2] / "configs" / "internlm2-7b-dpo.yaml"
    env = {"INTERNLM2_7B": str(model), "PREF_DATA": str(data), "ICHAIN_WORKDIR": str(tmp_path / "runs")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "config", "validate", str(example)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    ctx, jobs = Planner(load_chain(example)).plan("finetune")
    assert [j.name for j in jobs] == ["check-data", "train", "convert", "merge", "verify"]
    cfg = jobs[1].files[str(ctx.out_dir / "xtuner_config.py")]
    assert "type=DPO," in cfg and "lr = 5e-06" in cfg and "type=AmpOptimWrapper" in cfg
    # the same chain with a reward model would leave deploy nothing to serve: refused
    res = subprocess.run([sys.executable, "-m", "internlm_chain", "config", "validate", str(example),
                          "--set", "stages.finetune.mode=reward", "--set", "stages.finetune.method=full",
                          "--set", "stages.finetune.evaluation_prompts=[]", "--set", "stages.finetune.preference={}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "deploy cannot serve" in res.stdout + res.stderr, res.stdout + res.stderr
