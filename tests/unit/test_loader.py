"""The chain-file loader: interpolation, includes, overrides, references and every error path."""

from __future__ import annotations

import pytest

from internlm_chain.config.loader import load_chain
from internlm_chain.errors import ChainError


def problems(path, overrides=(), environ=None):
    with pytest.raises(ChainError) as info:
        load_chain(path, overrides, environ or {})
    return info.value.problems


def test_minimal_chain_gets_defaults(write_chain):
    loaded = load_chain(write_chain("name: demo\n"), environ={})
    assert loaded.config.name == "demo"
    assert loaded.config.device == "auto"
    assert loaded.workdir == loaded.base_dir / "runs" / "demo"
    assert loaded.config.enabled_stages() == []


def test_env_interpolation_with_and_without_default(write_chain):
    path = write_chain("name: demo\nworkdir: ${OUT}/w\nmodel:\n  path: ${MODEL_DIR:-/models/base}\n")
    loaded = load_chain(path, environ={"OUT": "/tmp/o"})
    assert loaded.config.workdir == "/tmp/o/w"
    assert loaded.config.model.path == "/models/base"
    loaded = load_chain(path, environ={"OUT": "/tmp/o", "MODEL_DIR": "/m"})
    assert loaded.config.model.path == "/m"


def test_escaped_placeholder_stays_literal(write_chain):
    loaded = load_chain(write_chain("name: demo\nmodel:\n  path: /a/$${HOME}/b\n"), environ={"HOME": "/root"})
    assert loaded.config.model.path == "/a/${HOME}/b"


def test_unset_env_is_located_error(write_chain):
    path = write_chain("name: demo\nmodel:\n  path: ${NOPE}\n")
    [p] = problems(path)
    assert p.line == 3 and p.path == "model.path"
    assert "NOPE is not set" in p.message and "${NOPE:-default}" in p.hint


def test_unknown_key_suggests_the_right_one(write_chain):
    path = write_chain("name: demo\ndevce: cpu\nmodel:\n  chat_templat: x\n")
    found = {p.path: p for p in problems(path)}
    assert found["devce"].line == 2 and found["devce"].hint == "did you mean 'device'?"
    assert found["model.chat_templat"].line == 4 and "chat_template" in found["model.chat_templat"].hint


def test_all_problems_are_collected_not_just_the_first(write_chain):
    path = write_chain("name: 'bad name'\ndevice: tpu\nlauncher:\n  nnodes: 0\n")
    paths = {p.path for p in problems(path)}
    assert paths == {"name", "device", "launcher.nnodes"}


def test_wrong_type_names_file_line_and_expected(write_chain):
    path = write_chain("name: demo\ndevice: tpu\n")
    [p] = problems(path)
    assert (p.file.endswith("chain.yaml"), p.line, p.path) == (True, 2, "device")
    assert "'auto', 'cpu' or 'cuda'" in p.message + (p.hint or "")


def test_duplicate_key_is_an_error(write_chain):
    [p] = problems(write_chain("name: demo\ndevice: cpu\ndevice: cuda\n"))
    assert p.line == 3 and "written twice" in p.message


def test_invalid_yaml_reports_line(write_chain):
    [p] = problems(write_chain("name: demo\nmodel: [unclosed\n"))
    assert p.line is not None and "invalid YAML" in p.message


def test_top_level_must_be_mapping(write_chain):
    [p] = problems(write_chain("- a\n- b\n"))
    assert "mapping" in p.message


def test_missing_file(tmp_path):
    [p] = problems(tmp_path / "nope.yaml")
    assert p.message == "file not found"


def test_include_merges_later_wins_and_keeps_locations(write_chain):
    write_chain("launcher:\n  kind: torchrun\n  nproc_per_node: 8\ndevice: cuda\n", "base.yaml")
    write_chain("launcher:\n  nnodes: 2\n", "cluster.yaml")
    path = write_chain("include: [base.yaml, cluster.yaml]\nname: demo\ndevice: cpu\nlauncher:\n  nproc_per_node: 9x\n")
    [p] = problems(path)
    assert p.path == "launcher.nproc_per_node" and p.file.endswith("chain.yaml") and p.line == 5
    loaded = load_chain(path, ["launcher.nproc_per_node=4"], environ={})
    lc = loaded.config.launcher
    assert (lc.kind, lc.nnodes, lc.nproc_per_node, loaded.config.device) == ("torchrun", 2, 4, "cpu")


def test_error_inside_included_file_points_at_that_file(write_chain):
    write_chain("launcher:\n  kindd: local\n", "base.yaml")
    [p] = problems(write_chain("include: base.yaml\nname: demo\n"))
    assert p.file.endswith("base.yaml") and p.line == 2 and p.hint == "did you mean 'kind'?"


def test_include_cycle_and_missing_include(write_chain):
    write_chain("include: b.yaml\nname: a\n", "a.yaml")
    write_chain("include: a.yaml\n", "b.yaml")
    [p] = problems(write_chain("include: a.yaml\nname: c\n"))
    assert "include cycle" in p.message
    [p] = problems(write_chain("include: [missing.yaml]\nname: c\n"))
    assert "included file not found" in p.message and p.line == 1


def test_overrides_are_typed(write_chain):
    path = write_chain("name: demo\nstages:\n  data:\n    inputs: [a]\n")
    loaded = load_chain(path, ["launcher.nnodes=3", "stages.data.languages=[zh]", "stages.data.enabled=false",
                               "runtimes.cache_dir=/c", "launcher.slurm.extra_args=[--exclusive]"], environ={})
    assert loaded.config.launcher.nnodes == 3
    assert loaded.config.stages.data.languages == ["zh"]
    assert loaded.config.stages.data.enabled is False
    assert loaded.config.launcher.slurm.extra_args == ["--exclusive"]


def test_override_errors_name_the_override(write_chain):
    path = write_chain("name: demo\n")
    [p] = problems(path, ["launcher.nnodes=many"])
    assert p.file == "--set launcher.nnodes=many" and p.path == "launcher.nnodes"
    [p] = problems(path, ["nonsense"])
    assert "no '='" in p.message
    [p] = problems(path, ["name.x=1"])
    assert "cannot set a field inside a str" in p.message


def test_reference_to_an_enabled_earlier_stage_is_accepted(write_chain):
    path = write_chain(
        "name: demo\nstages:\n  data: {inputs: [x]}\n  finetune:\n    runtime: {python: '${stages.data.outputs.sft}'}\n")
    assert load_chain(path, environ={}).config.stages.finetune.runtime.python == "${stages.data.outputs.sft}"


@pytest.mark.parametrize(
    ("ref", "expect"),
    [
        ("${stages.nope.outputs.x}", "'nope' is not a stage"),
        ("${stages.data.outputs.nothing}", "stage 'data' has no output 'nothing'"),
        ("${stages.eval.outputs.report}", "which runs after it"),
        ("${stages.pretrain.outputs.model}", "which is not enabled"),
    ],
)
def test_bad_references(write_chain, ref, expect):
    path = write_chain(
        f"name: demo\nstages:\n  data: {{inputs: [x]}}\n  eval: {{}}\n  finetune:\n    runtime: {{python: '{ref}'}}\n")
    found = problems(path)
    assert any(expect in p.message for p in found), [p.render() for p in found]
    assert all(p.line == 6 for p in found)


def test_control_characters_are_a_clean_yaml_error(write_chain):
    [p] = problems(write_chain("name: demo\x0c\n"))
    assert "invalid YAML" in p.message and "special characters" in p.message
