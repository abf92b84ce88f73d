"""Every bad finetune input is one located error before any job starts (no runtime needed)."""

from __future__ import annotations

import json

import pytest

from finetune.finetune_helpers import fake_7b, sft_rows, text_rows, write_jsonl
from internlm_chain.chain.planner import Planner
from internlm_chain.cli.app import main
from internlm_chain.config.loader import load_chain
from internlm_chain.errors import ChainError
from internlm_chain.stages.finetune.render import replay_plan


def _chain(tmp_path, write_chain, stage: str, device: str = "cpu") -> str:
    model = fake_7b(tmp_path)
    return write_chain(f"name: t\nworkdir: {tmp_path}/runs\ndevice: {device}\nmodel: {{path: {model}}}\n"
                       f"stages:\n  finetune:\n" + "".join(f"    {line}\n" for line in stage.strip().splitlines()))


def _problems(path) -> list[str]:
    loaded = load_chain(path)
    planner = Planner(loaded)
    try:
        planner.plan("finetune")
    except ChainError as exc:
        return [p.render() for p in exc.problems]
    return []


def test_qlora_on_cpu_is_a_clear_error(tmp_path, write_chain):
    write_jsonl(tmp_path / "sft.jsonl", sft_rows(2))
    path = _chain(tmp_path, write_chain, f"method: qlora\ndata: {tmp_path}/sft.jsonl")
    (msg,) = _problems(path)
    assert "chain.yaml:" in msg and "stages.finetune.method" in msg and "QLoRA needs a CUDA GPU" in msg


def test_good_input_has_no_problem(tmp_path, write_chain):
    write_jsonl(tmp_path / "sft.jsonl", sft_rows(2))
    assert _problems(_chain(tmp_path, write_chain, f"data: {tmp_path}/sft.jsonl")) == []
    assert _problems(_chain(tmp_path, write_chain, f"method: qlora\ndata: {tmp_path}/sft.jsonl", "cuda")) == []


@pytest.mark.parametrize("rows, stage, expected", [
    ([{"text": "plain"}], "", "sft.jsonl:1: field 'messages'"),
    ([{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}], "",
     "sft.jsonl:1: field 'messages[1].role': role must be one of system, user, assistant"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], "", "no assistant message"),
    ([{"instruction": "a", "output": "b"}], "data_format: alpaca", "field 'input'"),
    (sft_rows(1), "mode: continue", "field 'text'"),
])
def test_wrong_row_format_names_file_line_field(tmp_path, write_chain, rows, stage, expected):
    write_jsonl(tmp_path / "sft.jsonl", rows)
    (msg,) = _problems(_chain(tmp_path, write_chain, f"data: {tmp_path}/sft.jsonl\n{stage}"))
    assert "stages.finetune.data" in msg and expected in msg


def test_invalid_json_line(tmp_path, write_chain):
    (tmp_path / "sft.jsonl").write_text(json.dumps(sft_rows(1)[0]) + "\n{not json\n", encoding="utf-8")
    (msg,) = _problems(_chain(tmp_path, write_chain, f"data: {tmp_path}/sft.jsonl"))
    assert "sft.jsonl:2: not valid JSON" in msg


def test_missing_paths_and_bad_model(tmp_path, write_chain):
    (tmp_path / "notamodel").mkdir()
    write_jsonl(tmp_path / "sft.jsonl", sft_rows(2))
    msgs = _problems(_chain(tmp_path, write_chain, f"model: {tmp_path}/notamodel\ndata: {tmp_path}/none.jsonl"))
    assert any("is not a Hugging Face model (no config.json)" in m for m in msgs)
    assert any("data not found" in m and "none.jsonl" in m for m in msgs)
    msgs = _problems(_chain(tmp_path, write_chain, f"data: {tmp_path}/sft.jsonl\nmax_length: 65536"))
    assert any("stages.finetune.max_length" in m and "32768" in m for m in msgs)


def test_no_data_and_empty_folder(tmp_path, write_chain):
    (msg,) = _problems(_chain(tmp_path, write_chain, "method: lora"))
    assert "no training data" in msg
    (tmp_path / "empty").mkdir()
    (msg,) = _problems(_chain(tmp_path, write_chain, f"data: {tmp_path}/empty"))
    assert "no .jsonl or .json files" in msg


def test_replay_data_must_be_text(tmp_path, write_chain):
    write_jsonl(tmp_path / "new.jsonl", text_rows(3))
    write_jsonl(tmp_path / "old.jsonl", sft_rows(3))
    (msg,) = _problems(_chain(tmp_path, write_chain, f"mode: continue\ndata: {tmp_path}/new.jsonl\n"
                                                     f"replay: {{data: {tmp_path}/old.jsonl}}"))
    assert "stages.finetune.replay.data" in msg and "field 'text'" in msg


@pytest.mark.parametrize("stage, expected", [
    ("template: internlm2_caht", "did you mean 'internlm2_chat'"),
    ("max_steps: 3\nepochs: 1", "set max_steps or epochs, not both"),
    ("method: full\nmerge: true", "merge applies to lora/qlora only"),
    ("replay: {data: x.jsonl}", "needs mode: continue"),
    ("deepspeed: zero4", "deepspeed"),
    ("lora: {r: 0}", "lora.r"),
])
def test_schema_errors_exit_2_with_location(tmp_path, write_chain, capsys, stage, expected):
    path = _chain(tmp_path, write_chain, stage)
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "-c", str(path), "--dry-run"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "chain.yaml:" in err and "Traceback" not in err


def test_flag_form_errors_name_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--model", str(tmp_path / "none"), "--data", str(tmp_path / "none.jsonl"),
              "--method", "qlora", "--device", "cpu", "--dry-run"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--model: stages.finetune.model: model directory not found" in err
    assert "--data: stages.finetune.data: data not found" in err
    assert "--method: stages.finetune.method: QLoRA needs a CUDA GPU" in err


def test_flag_form_dry_run_plans_the_same_jobs(tmp_path, capsys):
    model = fake_7b(tmp_path)
    data = write_jsonl(tmp_path / "cpt.jsonl", text_rows(3))
    main(["finetune", "--model", str(model), "--data", str(data), "--method", "full", "--mode", "continue",
          "--device", "cpu", "-o", str(tmp_path / "out"), "--dry-run", "--json"])
    jobs = json.loads(capsys.readouterr().out)[0]["jobs"]
    assert [j["name"] for j in jobs] == ["check-data", "train", "convert", "verify"]
    train = jobs[1]
    assert train["argv"][1:4] == ["-m", "xtuner.tools.train", f"{tmp_path}/out/.staging/finetune/xtuner_config.py"]
    cfg = train["files"][f"{tmp_path}/out/.staging/finetune/xtuner_config.py"]
    assert "dataset_map_fn=pretrain_map_fn" in cfg and "type=OptimWrapper" in cfg and "LoraConfig" not in cfg


def test_flags_and_config_do_not_mix(tmp_path, write_chain, capsys):
    path = _chain(tmp_path, write_chain, "method: lora")
    with pytest.raises(SystemExit):
        main(["finetune", "-c", str(path), "--model", "x", "--dry-run"])
    assert "--model cannot be combined with -c" in capsys.readouterr().err


@pytest.mark.parametrize("data_rows, replay_rows, ratio, expected", [
    (30, 4, 0.2, (2, 0)),   # 7.5 → 8 replay rows = two passes over 4
    (90, 100, 0.1, (0, 10)),
    (10, 3, 0.5, (3, 1)),
    (1, 5, 0.01, (0, 1)),   # never zero: asking for replay gets at least one row
])
def test_replay_plan(data_rows, replay_rows, ratio, expected):
    assert replay_plan(data_rows, replay_rows, ratio) == expected


def test_example_chain_plans_with_local_paths(tmp_path, monkeypatch):
    from pathlib import Path

    model = fake_7b(tmp_path)
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(3))
    monkeypatch.setenv("INTERNLM2_7B", str(model))
    monkeypatch.setenv("SFT_DATA", str(data))
    monkeypatch.setenv("ICHAIN_WORKDIR", str(tmp_path / "runs"))
    example = Path(__file__).resolve().parents[2] / "configs" / "internlm2-7b-lora.yaml"
    ctx, jobs = Planner(load_chain(example)).plan("finetune")
    assert [j.name for j in jobs] == ["check-data", "train", "convert", "merge", "verify"]
    cfg = jobs[1].files[str(ctx.out_dir / "xtuner_config.py")]
    assert "type=AmpOptimWrapper" in cfg and "r=64," in cfg and "max_epochs = 3" in cfg


def test_epoch_warmup_under_two_iterations_is_an_error(tmp_path, write_chain):
    """mmengine turns an epoch warm-up into int(warmup_ratio × epochs × iterations per epoch) iterations: 0
    raises in the train job, 1 never leaves LinearLR's start factor. Unpacked, an epoch has at most
    ceil(rows / batch_size) iterations, so that is known before anything runs."""
    write_jsonl(tmp_path / "sft.jsonl", sft_rows(40))
    data = f"data: {tmp_path}/sft.jsonl\npack_to_max_length: false\n"
    (msg,) = _problems(_chain(tmp_path, write_chain, data + "batch_size: 2"))
    assert "chain.yaml:" in msg and "stages.finetune.warmup_ratio" in msg
    assert "40 rows in batches of 2 is at most 20 iterations" in msg and "int(0.03 × 1 × 20) = 0" in msg
    assert "set warmup_ratio: 0, or max_steps" in msg
    (msg,) = _problems(_chain(tmp_path, write_chain, data))  # 40 iterations: a 1-iteration warm-up
    assert "int(0.03 × 1 × 40) = 1 iteration(s)" in msg and "1 never reaches the full learning rate" in msg
    # enough iterations, no warm-up, an iteration schedule, or packed data (checked in the train job): fine
    for ok in ("epochs: 2\nwarmup_ratio: 0.05", "warmup_ratio: 0", "max_steps: 3"):
        assert _problems(_chain(tmp_path, write_chain, data + ok)) == [], ok
    assert _problems(_chain(tmp_path, write_chain, f"data: {tmp_path}/sft.jsonl")) == []


def test_epoch_warmup_failure_in_the_train_job_names_the_field(tmp_path, write_chain):
    """Packed data: the count of packed samples is known only in the train job, where mmengine raises; the
    failure is reported on `warmup_ratio` instead of as a bare exit code."""
    from internlm_chain.stages.base import JobResult
    from internlm_chain.stages.finetune.stage import STAGE

    write_jsonl(tmp_path / "sft.jsonl", sft_rows(2))
    ctx, jobs = Planner(load_chain(_chain(tmp_path, write_chain, f"data: {tmp_path}/sft.jsonl"))).plan("finetune")
    log = tmp_path / "train.log"
    # the last lines of the real train log (XTuner 0.2.0, mmengine 0.10.6, 24 rows packed to 11 samples)
    log.write_text("  File \".../mmengine/optim/scheduler/param_scheduler.py\", line 68, in __init__\n"
                   "    raise ValueError('end should be larger than begin, but got'\n"
                   "ValueError: end should be larger than begin, but got begin=0, end=0\n", encoding="utf-8")
    train = next(j for j in jobs if j.name == "train")
    problem = STAGE.explain_failure(ctx, JobResult(job=train, returncode=1, log=str(log), state="failed"))
    text = problem.render()
    assert "stages.finetune.warmup_ratio" in text and "fewer than 33 iterations per epoch" in text
    assert str(log) in text
    log.write_text("RuntimeError: something else\n", encoding="utf-8")
    assert STAGE.explain_failure(ctx, JobResult(job=train, returncode=1, log=str(log), state="failed")) is None


def test_deepspeed_on_cpu_renders_an_fp32_config_and_a_rank(tmp_path, write_chain):
    write_jsonl(tmp_path / "sft.jsonl", sft_rows(2))
    ctx, jobs = Planner(load_chain(_chain(tmp_path, write_chain, f"data: {tmp_path}/sft.jsonl\ndeepspeed: zero2"))
                        ).plan("finetune")
    train = next(j for j in jobs if j.name == "train")
    ds = str(ctx.out_dir / "deepspeed_zero2_cpu.json")
    assert train.argv[train.argv.index("--deepspeed") + 1] == ds
    cfg = json.loads(train.files[ds])
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["fp16"] == {"enabled": False} == cfg["bf16"]
    assert {k: train.env[k] for k in ("RANK", "WORLD_SIZE", "MASTER_PORT")} == {"RANK": "0", "WORLD_SIZE": "1",
                                                                                 "MASTER_PORT": "0"}
    (msg,) = _problems(_chain(tmp_path, write_chain, f"data: {tmp_path}/sft.jsonl\ndeepspeed: zero3_offload"))
    assert "chain.yaml:" in msg and "stages.finetune.deepspeed" in msg and "use deepspeed: zero3 on CPU" in msg
    assert _problems(_chain(tmp_path, write_chain, f"data: {tmp_path}/sft.jsonl\ndeepspeed: zero3_offload",
                            "cuda")) == []
