"""Root Typer app. Sub-commands live in their own modules and import heavy code only when run."""

from __future__ import annotations

import sys

import typer

from internlm_chain import __version__

app = typer.Typer(
    name="ichain",
    help="Run the InternLM toolchain — data, pretrain, finetune, eval, deploy, agent — as one chain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_DEBUG = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"internlm-chain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    global _DEBUG
    _DEBUG = debug


def _register() -> None:
    from internlm_chain.cli import (
        agent,
        config_cmd,
        data,
        deploy,
        env,
        eval_cmd,
        finetune,
        init_cmd,
        model_cmd,
        plan_cmd,
        pretrain,
        report_cmd,
        run_cmd,
        status_cmd,
    )

    app.add_typer(config_cmd.app, name="config")
    app.add_typer(env.app, name="env")
    app.command("init")(init_cmd.init)
    app.command("run")(run_cmd.run)
    app.command("status")(status_cmd.status)
    app.command("report")(report_cmd.report)
    app.command("plan")(plan_cmd.plan)
    app.add_typer(data.app, name="data")
    app.command("pretrain")(pretrain.pretrain)
    app.command("finetune")(finetune.finetune)
    app.add_typer(eval_cmd.app, name="eval")
    app.add_typer(deploy.app, name="deploy")
    app.add_typer(agent.app, name="agent")
    app.add_typer(model_cmd.app, name="model")


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: every `ChainError` becomes clean lines on stderr and its exit code."""
    from internlm_chain.errors import ChainError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rv = app(args=args, prog_name="ichain", standalone_mode=False)
    except ChainError as exc:
        from internlm_chain.cli.output import print_problems

        if debug:
            raise
        print_problems(exc.problems)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:
        # usage errors (typer's click exceptions) know how to show themselves; anything else is our bug
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        sys.stderr.write(f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for a traceback)\n")
        sys.exit(3)
    # without standalone mode, `typer.Exit(n)` comes back as the return value
    if isinstance(rv, int) and rv:
        sys.exit(rv)
