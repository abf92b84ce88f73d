"""`ichain model download`: every bad input is one error naming the flag, exit 2, before anything runs (no
runtime, no network); the dry-run shows the token variable's name and never its value; and the default file
selection (the worker's own function, loaded from its file) keeps a model folder and skips other formats."""

from __future__ import annotations

import importlib.util
import json

from internlm_chain.models.common import WORKERS

PY = ["--python", "/nonexistent/python"]  # never started: every case fails before a job runs


def _only_error(err: str, flag: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], err
    assert "Traceback" not in err


def test_bad_inputs_exit_2_before_anything_runs(run, tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    out = tmp_path / "m"
    cases = [
        (["org/tiny/extra"], "REPO_ID", "not a Hugging Face repo id"),
        (["org/ti ny"], "REPO_ID", "not a Hugging Face repo id"),
        (["org--x/tiny"], "REPO_ID", "not a Hugging Face repo id"),
        (["./models/tiny"], "REPO_ID", "looks like a path"),
        (["org/tiny", "--endpoint", "ftp://mirror.example"], "--endpoint", "not an http(s) URL"),
        (["org/tiny", "--endpoint", "hf-mirror.com"], "--endpoint", "not an http(s) URL"),
        (["org/tiny", "--token-env", "NO_SUCH_TOKEN_VAR"], "--token-env", "is not set"),
        (["org/tiny", "--token-env", "hf_abc-123"], "--token-env", "not an environment variable name"),
        (["org/tiny", "--include", ""], "--include", "empty pattern"),
    ]
    for args, flag, text in cases:
        code, _, err = run("model", "download", *args, "-o", str(out), *PY)
        assert code == 2, (args, err)
        _only_error(err, flag)
        assert text in err, (args, err)
    monkeypatch.setenv("HF_ENDPOINT", "mirror.example/hf")
    code, _, err = run("model", "download", "org/tiny", "-o", str(out), *PY)
    assert code == 2 and "HF_ENDPOINT" in err and "not an http(s) URL" in err, err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_and_foreign_partials_are_refused(run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    code, _, err = run("model", "download", "org/tiny", "-o", str(taken), *PY)
    assert code == 2
    _only_error(err, "--out")
    assert "already exists" in err
    # an earlier partial download of another repo (or another revision) is not ours to reuse
    other = tmp_path / ".m.partial"
    other.mkdir()
    (other / ".ichain-download.json").write_text(json.dumps({"repo": "org/other", "revision": "main"}))
    code, _, err = run("model", "download", "org/tiny", "-o", str(tmp_path / "m"), *PY)
    assert code == 2 and "org/other@main" in err, err
    code, _, err = run("model", "download", "org/other", "--revision", "v2", "-o", str(tmp_path / "m"), *PY)
    assert code == 2 and "not org/other@v2" in err, err
    (other / ".ichain-download.json").unlink()
    code, _, err = run("model", "download", "org/other", "-o", str(tmp_path / "m"), *PY)
    assert code == 2 and "is not a partial download" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.partial", "taken"]


def test_dry_run_names_the_token_variable_never_the_token(run, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_HUB_TOKEN", "hf_SECRETsecret123")
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com/")
    code, out, err = run("model", "download", "internlm/internlm2-chat-1_8b", "-o", str(tmp_path / "m"),
                         "--token-env", "MY_HUB_TOKEN", "--include", "*.gguf", "--exclude", "README.md", "--dry-run",
                         *PY)
    assert code == 0, err
    assert "hf_SECRET" not in out + err
    assert "--token-env MY_HUB_TOKEN" in out
    assert "--endpoint https://hf-mirror.com " in out  # from HF_ENDPOINT, trailing slash dropped
    assert "--include '*.gguf' --exclude README.md" in out
    assert f"rename {tmp_path / '.m.partial'} -> {tmp_path / 'm'}" in out
    code, out, _ = run("model", "download", "internlm/internlm2-chat-1_8b", "-o", str(tmp_path / "m"),
                       "--token-env", "MY_HUB_TOKEN", "--dry-run", "--json", *PY)
    assert code == 0 and "hf_SECRET" not in out
    job = json.loads(out)[0]
    assert job["env"]["HF_HUB_OFFLINE"] == "0" and "MY_HUB_TOKEN" not in job["env"]
    assert list(tmp_path.iterdir()) == []


def _worker():
    spec = importlib.util.spec_from_file_location("model_download", WORKERS / "model_download.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_default_selection_is_a_model_folder():
    w = _worker()
    sharded = ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model-00001-of-00002.bin",
               "pytorch_model.bin.index.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
               "modeling_internlm2.py", "configuration_internlm2.py", "README.md", ".gitattributes", "model.gguf",
               "onnx/model.onnx", "original/consolidated.00.pth", "optimizer.pt", "training_args.bin"]
    assert w.select(sharded, [], []) == sorted([
        "README.md", "config.json", "configuration_internlm2.py", "generation_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "modeling_internlm2.py", "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"])
    bin_only = ["config.json", "pytorch_model.bin", "training_args.bin", "optimizer.bin", "tokenizer.json"]
    assert w.select(bin_only, [], []) == ["config.json", "pytorch_model.bin", "tokenizer.json"]
    # --include adds (a folder with a trailing slash, as huggingface_hub reads it); --exclude removes last
    assert w.select(sharded, ["original/", "*.gguf"], ["*.py", "README.md"]) == sorted([
        "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
        "tokenizer.model", "tokenizer_config.json", "model.gguf", "original/consolidated.00.pth"])
    assert w.select(sharded, ["*"], []) == sorted(sharded)


def test_modelscope_source_inputs_endpoint_and_dry_run(run, tmp_path, monkeypatch):
    for var in ("MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "m"
    for args, flag, text in [
        (["org/tiny", "--source", "ms"], "--source", "'ms' is not a source"),
        (["tiny", "--source", "modelscope"], "REPO_ID", "not a ModelScope model id"),
        (["org/tiny", "--source", "modelscope", "--endpoint", "modelscope.cn"], "--endpoint", "not an http(s) URL"),
    ]:
        code, _, err = run("model", "download", *args, "-o", str(out), *PY)
        assert code == 2, (args, err)
        _only_error(err, flag)
        assert text in err, (args, err)
    base = ["model", "download", "Shanghai_AI_Laboratory/internlm2-chat-1_8b", "--source", "modelscope", "-o",
            str(out), "--dry-run", *PY]
    code, text, err = run(*base)
    assert code == 0, err
    # ModelScope's client, its default endpoint and branch, and its cache root inside the scratch folder
    assert "--revision master --endpoint https://modelscope.cn --out" in text and "--source modelscope" in text
    assert f"MODELSCOPE_CACHE={tmp_path / '.m.partial' / '.cache' / 'modelscope'}" in text
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "www.modelscope.ai")  # the client's deprecated variable: a bare host
    code, text, _ = run(*base)
    assert code == 0 and "--endpoint https://www.modelscope.ai " in text, text
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "https://ms.example/")  # wins over MODELSCOPE_DOMAIN, as in the client
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")  # only for --source hf
    code, text, _ = run(*base)
    assert code == 0 and "--endpoint https://ms.example " in text, text
    job = json.loads(run(*base, "--json")[1])[0]
    assert job["runtime"] == "hub" and job["env"]["TQDM_DISABLE"] == "1"
    # a partial hf download of the same repo is another download
    (tmp_path / ".m.partial").mkdir()
    (tmp_path / ".m.partial" / ".ichain-download.json").write_text(
        json.dumps({"repo": "Shanghai_AI_Laboratory/internlm2-chat-1_8b", "revision": "master"}))
    code, _, err = run(*base)
    assert code == 2 and "not Shanghai_AI_Laboratory/internlm2-chat-1_8b@master from modelscope" in err, err


def test_missing_hub_runtime_names_its_sync(run, tmp_path, monkeypatch):
    monkeypatch.setenv("ICHAIN_CACHE", str(tmp_path / "cache"))
    code, _, err = run("model", "download", "org/tiny", "-o", str(tmp_path / "m"))
    assert code == 2 and "the hub runtime is not synced" in err and "ichain env sync hub" in err, err
