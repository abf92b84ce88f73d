"""`--dry-run` prints the exact jobs each verb runs (paths normalised) and writes nothing."""

from __future__ import annotations

from pathlib import Path

from model.model_helpers import fake_adapter, fake_model

WORKERS = str(Path(__import__("internlm_chain").__file__).parent / "workers")
PY = "/opt/xtuner/bin/python"


def _norm(tmp_path: Path) -> dict[str, str]:
    return {str(tmp_path): "<tmp>", WORKERS: "<workers>"}


def test_merge_dry_run(run, tmp_path, golden):
    base = fake_model(tmp_path)
    adapter = fake_adapter(tmp_path, str(base))
    code, out, err = run("model", "merge", "--adapter", str(adapter), "-o", str(tmp_path / "merged"),
                         "--device", "cpu", "--python", PY, "--dry-run")
    assert code == 0, err
    golden.check("model/merge_dry_run.txt", out, _norm(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "base"]


def test_convert_dry_run_gpu(run, tmp_path, golden):
    base = fake_model(tmp_path)
    pth = tmp_path / "work_dir" / "iter_500.pth"
    pth.parent.mkdir()
    pth.write_bytes(b"x")
    cfg = tmp_path / "xtuner_config.py"
    cfg.write_text(f"pretrained_model_name_or_path = '{base}'\nprompt_template = PROMPT_TEMPLATE.internlm2_chat\n")
    code, out, err = run("model", "convert", str(pth), "-c", str(cfg), "-o", str(tmp_path / "hf"), "--device", "cuda",
                         "--python", PY, "--dry-run")
    assert code == 0, err
    golden.check("model/convert_dry_run_cuda.txt", out, _norm(tmp_path))
    assert "--fp32" not in out  # XTuner's fp16 on GPU unless asked
    code, out, _ = run("model", "convert", str(pth), "-c", str(cfg), "-o", str(tmp_path / "hf"), "--device", "cpu",
                       "--python", PY, "--dry-run")
    assert code == 0 and "--safe-serialization --fp32" in out


def test_chat_dry_run(run, tmp_path, golden, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = fake_model(tmp_path)
    adapter = fake_adapter(tmp_path, str(base))
    code, out, err = run("model", "chat", str(base), "--adapter", str(adapter), "--device", "cuda", "-m", "Hi, there",
                         "--system", "Be brief.", "--max-new-tokens", "32", "--python", PY, "--dry-run")
    assert code == 0, err
    golden.check("model/chat_dry_run.txt", out, _norm(tmp_path))
