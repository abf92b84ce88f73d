"""Random YAML documents and random --set values: the only outcomes are valid or a clean error."""

from __future__ import annotations

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import run_cli

KEYS = ["name", "workdir", "device", "model", "path", "stages", "data", "finetune", "eval", "launcher",
        "nnodes", "kind", "enabled", "include", "runtimes", "overrides", "python", "inputs", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
                    st.text(string.printable, max_size=12), st.sampled_from(["${X}", "${stages.data.outputs.sft}",
                                                                             "cpu", "demo", "$${Y}"]))
documents = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                      st.dictionaries(st.sampled_from(KEYS), c, max_size=4)),
                         max_leaves=12)
set_values = st.tuples(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3),
                       st.text(string.printable.replace("\n", ""), max_size=10)).map(
    lambda kv: ".".join(kv[0]) + "=" + kv[1])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents, sets=st.lists(set_values, max_size=2), raw=st.booleans())
def test_validate_never_crashes(capsys, tmp_path, doc, sets, raw):
    path = tmp_path / "chain.yaml"
    if raw and isinstance(doc, str):
        path.write_text(doc)  # arbitrary text, often invalid YAML
    else:
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    args = ["config", "validate", str(path)]
    for s in sets:
        args += ["--set", s]
    r = run_cli(capsys, *args)
    assert r.code in (0, 2), r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    if r.code == 2:
        assert "error:" in r.err
