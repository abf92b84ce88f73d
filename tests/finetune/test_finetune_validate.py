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
