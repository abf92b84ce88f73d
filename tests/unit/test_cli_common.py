"""`option_group`: a group's options stand where the verb's placeholder stands and arrive as one value."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from internlm_chain.cli.common import StageRun, launch_options, option_group, stage_run_options


def _app(seen: list) -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.command()
    @option_group("opts", stage_run_options)
    @option_group("launch", launch_options)
    def verb(first: str = typer.Option("a", "--first"), opts: StageRun = None, last: int = typer.Option(0, "--last"),
             launch: dict = None) -> None:
        seen.append((first, opts, last, launch))

    return app


def test_group_values_arrive_as_one_object_and_the_rest_as_given():
    seen: list = []
    res = CliRunner().invoke(_app(seen), ["--first", "x", "-c", "f.yaml", "--set", "a=1", "--set", "b=2", "--json",
                                          "--last", "3", "--nnodes", "2"])
    assert res.exit_code == 0, res.output
    first, opts, last, launch = seen[0]
    assert (first, last) == ("x", 3)
    assert opts == StageRun(config=opts.config, sets=["a=1", "b=2"], dry_run=False, as_json=True, show_files=False)
    assert str(opts.config) == "f.yaml"
    assert launch == {"launcher": None, "nnodes": 2, "nproc_per_node": None, "partition": None}


def test_defaults_and_option_order_in_the_signature():
    seen: list = []
    assert CliRunner().invoke(_app(seen), []).exit_code == 0
    assert seen[0][1] == StageRun(None, [], False, False, False)
    verb = typer.main.get_command(_app([]))
    names = [p.name for p in verb.params]
    assert names == ["first", "config", "sets", "dry_run", "as_json", "show_files", "last", "launcher", "nnodes",
                     "nproc_per_node", "partition"]
