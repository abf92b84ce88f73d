"""`ichain env sync|list|doctor`: the per-stage locked runtimes."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import typer

from internlm_chain.cli.common import ConfigFile, Json, Sets

app = typer.Typer(help="Create and inspect the per-stage locked runtimes.", no_args_is_help=True)

RuntimesArg = typer.Argument(None, help="Runtime names (data, xtuner, opencompass, lmdeploy, internevo, agent, "
                             "serve-cpu, hub). Default: those the chain file needs, else all with a lock.")
VariantOpt = typer.Option(None, "--variant", help="Lock variant: cpu or cuda. Default: the chain's device, "
                          "else cuda when nvidia-smi sees a GPU.")


@dataclass
class Target:
    runtime: str
    variant: str
    kind: str = "env"  # env | python | image
    where: str = ""  # interpreter or image for python / image
    engine: str = ""
    stages: tuple[str, ...] = ()
    explicit: bool = False


def _load(config: Path | None, sets: list[str] | None):
    if config is None:
        return None
    from internlm_chain.config.loader import load_chain

    return load_chain(config, sets or [])


def _check_variant(variant: str | None) -> str | None:
    if variant not in (None, "cpu", "cuda"):
        from internlm_chain.errors import ChainError, Problem

        raise ChainError(Problem(f"--variant must be cpu or cuda, not '{variant}'"))
    return variant


@functools.lru_cache(maxsize=1)
def _machine_variant() -> str:
    from internlm_chain.runtimes.machine import detect_device

    return detect_device()


def _targets(runtimes: list[str] | None, variant: str | None, loaded, *, synced_variant: bool = False,
             every_variant: bool = False) -> list[Target]:
    """What to act on: named runtimes, else the chain's, else every runtime with a lock (or an env).

    Without --variant or a chain, `synced_variant` (list, doctor) looks at the variant an env was synced
    with; sync uses the machine's (cuda when a GPU is visible).
    """
    from internlm_chain.runtimes.locks import shipped
    from internlm_chain.runtimes.state import envs_root, read_marker

    root = envs_root(_cache(loaded))

    def plain(name: str, explicit: bool) -> Target:
        record = read_marker(root / name) if synced_variant and not variant else None
        return Target(name, variant or (record or {}).get("variant") or _machine_variant(), explicit=explicit)

    if loaded is not None:
        chain = _chain_targets(loaded, variant)
        if not runtimes:
            return chain
        picked = [t for t in chain if t.runtime in runtimes]
        for t in picked:
            t.explicit = True
        return picked + [plain(n, True) for n in dict.fromkeys(runtimes) if n not in {t.runtime for t in chain}]
    if runtimes:
        return [plain(n, True) for n in dict.fromkeys(runtimes)]
    from internlm_chain.runtimes.locks import lock_path

    locks = shipped()
    existing = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")] \
        if root.is_dir() else []
    out = []
    for name in dict.fromkeys([*locks, *existing]):
        t = plain(name, False)
        if lock_path(name, t.variant) is None and name not in existing:
            if not every_variant:
                continue  # e.g. lmdeploy (CUDA only) on a CPU machine: not part of "all" here
            t.variant = sorted(locks[name])[0]
        out.append(t)
    return out


def _chain_targets(loaded, variant: str | None) -> list[Target]:
    from internlm_chain.runtimes.needs import chain_runtimes

    merged: dict[tuple, Target] = {}
    for sr in chain_runtimes(loaded):
        v = variant or sr.variant
        if sr.kind == "python":
            key, t = ("python", sr.runtime, sr.spec.python), Target(sr.runtime, v, "python", sr.spec.python)
        elif sr.kind == "image":
            key = ("image", sr.runtime, sr.spec.image)
            t = Target(sr.runtime, v, "image", sr.spec.image, sr.spec.engine)
        else:
            key, t = ("env", sr.runtime, v), Target(sr.runtime, v)
        merged.setdefault(key, t).stages += (sr.stage,)
    return list(merged.values())


def _cache(loaded) -> Path:
    from internlm_chain.runtimes.resolve import cache_dir

    return cache_dir(loaded)


# ---- sync ----------------------------------------------------------------------------------------
@app.command("sync")
def sync(
    runtimes: list[str] = RuntimesArg,
    variant: str = VariantOpt,
    force: bool = typer.Option(False, "--force", help="Rebuild even when the env matches its lock."),
    python: str = typer.Option(None, "--python", help="Interpreter (or version) for new envs. Default: the one "
                               "running ichain when it is 3.10–3.12, else 3.11."),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="Skip named runtimes that have no lock "
                                    "(instead of failing), e.g. for a test script's fixed list."),
    host_torch: bool = typer.Option(False, "--host-torch", help="Build on the torch of --python PY: the runtime "
                                    "sees PY's packages and installs its lock without torch, triton, "
                                    "torchvision/torchaudio and the CUDA libraries (offline GPU hosts, "
                                    "vendor images)."),
    config: ConfigFile = None,
    sets: Sets = None,
) -> None:
    """Create or update runtimes from their locks (only those whose lock changed, unless --force)."""
    from internlm_chain.cli.output import err
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.runtimes.hosttorch import HostTorchError
    from internlm_chain.runtimes.locks import lock_path
    from internlm_chain.runtimes.sync import SyncError, sync_runtime

    loaded = _load(config, sets)
    targets = _targets(runtimes, _check_variant(variant), loaded)
    cache = _cache(loaded)
    host = _host_torch(python, [t for t in targets if t.kind == "env"]) if host_torch else None
    if not targets:
        err.print("nothing to sync: no runtime is named, needed by the chain, or shipped with a lock", markup=False)
    failures: list[Problem] = []
    for t in targets:
        label = f"{t.runtime} ({t.variant})"
        if t.kind != "env":
            err.print(f"{label}: uses {t.kind} {t.where} — nothing to sync", markup=False)
            continue
        if lock_path(t.runtime, t.variant) is None:
            if t.explicit and not missing_ok:
                failures.append(Problem(f"no lock is shipped for runtime '{t.runtime}' ({t.variant})",
                                        hint=_lock_hint(t.runtime)))
            else:
                err.print(f"{label}: skipped, no lock for this variant", markup=False)
            continue
        try:
            with _progress(label) as report:
                result = sync_runtime(t.runtime, t.variant, cache, force=force, python=python, report=report,
                                      host=host)
        except HostTorchError as exc:  # checked up front; only a host changed mid-sync gets here
            raise ChainError(Problem(exc.message, hint=exc.hint)) from None
        except SyncError as exc:
            if exc.tail:
                err.print(f"[bold]{label}: last installer lines[/]" + (f" (full log: {exc.log})" if exc.log else ""))
                for line in exc.tail:
                    err.print("  " + line, markup=False, style="dim")
            failures.append(Problem(f"{label}: {exc.message}",
                                    hint=f"log: {exc.log}" if exc.log else None))
            continue
        on_host = f", on the host's torch {host.torch}" if host else ""
        if result.action == "up to date":
            err.print(f"[green]✓[/] {label}: up to date ({result.state.path}{on_host})")
        else:
            err.print(f"[green]✓[/] {label}: synced {result.record.get('packages', '?')} packages in "
                      f"{result.seconds:.1f} s → {result.state.path}{on_host}")
    if failures:
        raise ChainError(failures, exit_code=1)


def _host_torch(python: str | None, targets: list[Target]):
    """Probe --python for torch and check every target's lock against it, before anything is built."""
    from internlm_chain.cli.output import err
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.runtimes.hosttorch import HostTorchError, plan, probe_host
    from internlm_chain.runtimes.locks import lock_path, parse_lock, variant_of

    if not python:
        raise ChainError(Problem("--host-torch needs --python PY, the interpreter whose torch the runtimes use"))
    try:
        host = probe_host(python)
    except HostTorchError as exc:
        raise ChainError(Problem(exc.message, hint=exc.hint)) from None
    err.print(f"host: torch {host.torch} (CUDA {host.cuda or 'none'}), Python {host.python_version}, "
              f"from {', '.join(host.site)}", markup=False)
    problems = []
    for t in targets:
        lock = lock_path(t.runtime, t.variant)
        if lock is not None:
            for text in plan(parse_lock(lock, t.runtime, variant_of(lock)), host.dists, host.torch).problems:
                problems.append(Problem(f"{t.runtime} ({t.variant}): {text}",
                                        hint=f"install it into {python}'s environment, or sync without --host-torch"))
    if problems:
        raise ChainError(problems)
    return host


def _lock_hint(runtime: str) -> str:
    from internlm_chain.runtimes.locks import shipped

    have = shipped().get(runtime)
    if have:
        return "available variants: " + ", ".join(sorted(have)) + " (pass --variant)"
    return "known runtimes: " + ", ".join(shipped()) or "no locks are shipped"


class _progress:
    """A spinner with the installer's latest line on a terminal; plain step lines otherwise."""

    def __init__(self, label: str):
        self.label = label

    def __enter__(self):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from internlm_chain.cli.output import err

        self.live = err.is_terminal
        if not self.live:
            def report(text: str, kind: str) -> None:
                if kind == "step":  # installer lines would flood a log; on failure its last lines are shown
                    err.print(f"{self.label}: {text}", markup=False)

            return report
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[label]}[/]"),
                                 TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                                 transient=True)
        self.progress.start()
        task = self.progress.add_task("checking", label=self.label)
        return lambda text, _kind: self.progress.update(task, description=text[:100])

    def __exit__(self, *exc):
        if self.live:
            self.progress.stop()
        return False


def _inspected(runtimes: list[str] | None, variant: str | None, config: Path | None, sets: list[str] | None,
               every_variant: bool = False) -> tuple[Path, list[Target]]:
    """The cache and targets `list` and `doctor` look at: each env under the variant it was synced with."""
    loaded = _load(config, sets)
    return _cache(loaded), _targets(runtimes, _check_variant(variant), loaded, synced_variant=True,
                                    every_variant=every_variant)


# ---- list ----------------------------------------------------------------------------------------
@app.command("list")
def list_(
    variant: str = VariantOpt,
    config: ConfigFile = None,
    sets: Sets = None,
    as_json: Json = False,
) -> None:
    """Runtimes, their variant, path, whether synced, lock hash and size."""
    from internlm_chain.cli.output import out, print_json
    from internlm_chain.runtimes.state import dir_size, env_state, human_size

    cache, targets = _inspected(None, variant, config, sets, every_variant=True)
    rows = []
    for t in targets:
        if t.kind != "env":
            rows.append({"runtime": t.runtime, "variant": t.variant, "kind": t.kind, "path": t.where,
                         "engine": t.engine or None, "synced": None, "lock_hash": None, "size_bytes": None,
                         "stages": list(t.stages), "reason": f"{t.kind}: not synced by ichain"})
            continue
        st = env_state(t.runtime, t.variant, cache)
        size = dir_size(st.path) if st.path.exists() else None
        rows.append({"runtime": t.runtime, "variant": (st.marker or {}).get("variant", t.variant), "kind": "env",
                     "path": str(st.path), "synced": st.synced, "reason": st.reason,
                     "lock": str(st.lock) if st.lock else None,
                     "lock_hash": (st.marker or {}).get("lock_hash"), "size_bytes": size,
                     "stages": list(t.stages), "mode": st.mode, "host_torch": st.host_torch,
                     "host_cuda": ((st.marker or {}).get("host") or {}).get("cuda") if st.host_torch else None})
    if as_json:
        print_json({"cache": str(cache), "runtimes": rows})
        return
    from rich.table import Table

    table = Table(title=f"runtimes in {cache}", title_justify="left")
    for col in ("runtime", "variant", "path", "synced", "lock hash", "size"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r["kind"] != "env":
            synced = f"[cyan]{r['kind']}[/]"
        elif r["synced"]:
            synced = "[green]yes[/]"
        else:
            synced = f"[red]no[/] ({r['reason']})" if r["reason"] != "not synced" else "[red]no[/]"
        digest = (r["lock_hash"] or "").removeprefix("sha256:")[:12] or "-"
        size = human_size(r["size_bytes"]) if r["size_bytes"] is not None else "-"
        shown = r["variant"] + (f", host torch {r['host_torch']}" if r.get("host_torch") else "")
        # the title names the cache: a path inside it is shown relative, so the table stays readable
        path = Path(r["path"])
        shown_path = str(path.relative_to(cache)) if path.is_relative_to(cache) else r["path"]
        table.add_row(r["runtime"], shown, shown_path, synced, digest, size)
    out.print(table)


# ---- doctor --------------------------------------------------------------------------------------
@app.command("doctor")
def doctor(
    runtimes: list[str] = RuntimesArg,
    variant: str = VariantOpt,
    config: ConfigFile = None,
    sets: Sets = None,
    as_json: Json = False,
) -> None:
    """Check each runtime (interpreter, versions vs lock, upstream import) and the machine; exit 1 if wrong."""
    from internlm_chain.cli.output import out, print_json
    from internlm_chain.runtimes import doctor as doc

    cache, targets = _inspected(runtimes, variant, config, sets)
    reports = []
    for t in targets:
        if t.kind == "python":
            r = doc.check_python(t.runtime, t.variant, t.where)
        elif t.kind == "image":
            r = doc.check_image(t.runtime, t.variant, t.where, t.engine)
        else:
            r = doc.check_env(t.runtime, t.variant, cache)
        r.stages = list(t.stages)
        reports.append(r)
    machine = doc.check_machine(cache, want_cuda=any(t.variant == "cuda" for t in targets))
    ok = all(r.ok for r in reports) and machine.ok
    if as_json:
        print_json({"ok": ok, "runtimes": [r.to_dict() for r in reports], "machine": machine.to_dict()})
    else:
        mark = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "error": "[red]✗[/]"}
        for r in reports:
            used_by = f" — used by {', '.join(r.stages)}" if r.stages else ""
            head = "[green]ok[/]" if r.ok else "[red]PROBLEM[/]"
            kind = "env on host torch" if r.mode == "host-torch" else r.kind
            out.print(f"[bold]{r.runtime}[/] ({r.variant}, {kind}: {r.target}){used_by}: {head}")
            for f in r.findings:
                out.print(f"  {mark[f.level]} ", end="")
                out.print(f.message, markup=False)
            if r.key_packages:
                out.print("    " + "  ".join(
                    f"{p.name} {p.installed or 'missing'}" + ("" if p.ok else f" (lock {p.locked})")
                    for p in r.key_packages), markup=False)
        out.print("[bold]machine[/]")
        for f in machine.findings:
            out.print(f"  {mark[f.level]} ", end="")
            out.print(f.message, markup=False)
        for g in machine.gpus:
            out.print(f"    GPU {g['index']}: {g['name']} ({g['memory']})", markup=False)
    if not ok:
        from internlm_chain.errors import ChainError, Problem

        bad = [r.runtime for r in reports if not r.ok] + ([] if machine.ok else ["machine"])
        raise ChainError(Problem(f"problems found in: {', '.join(bad)}"), exit_code=1)


# ---- wheels --------------------------------------------------------------------------------------
@app.command("wheels")
def wheels(
    runtimes: list[str] = typer.Argument(..., help="Runtimes whose wheels to collect."),
    dest: Path = typer.Option(..., "-d", "--dest", help="Folder the wheels go to (created; files already there "
                              "are reused)."),
    variant: str = typer.Option("cuda", "--variant", help="Lock variant: cpu or cuda."),
    python_version: str = typer.Option("3.12", "--python-version", help="The host's Python (major.minor)."),
    platforms: list[str] = typer.Option(["manylinux_2_28_x86_64"], "--platform", help="The host's platform "
                                        "tag(s); manylinux_2_X also takes every older manylinux wheel."),
    host_torch: bool = typer.Option(False, "--host-torch", help="For `env sync --host-torch`: leave out what the "
                                    "host's torch provides (torch, triton, CUDA libraries)."),
    torch_version: str = typer.Option(None, "--torch-version", help="With --host-torch: the host's torch "
                                      "(e.g. 2.11.0), to collect the torchvision/torchaudio built for it when a "
                                      "lock needs them and the host lacks them."),
    ichain: bool = typer.Option(True, "--ichain/--no-ichain", help="Also collect ichain's own dependencies "
                                "(pydantic, uv, ... and setuptools for the editable install)."),
    build: bool = typer.Option(True, "--build/--no-build", help="Build wheels here for sdist-only pins when they "
                               "come out pure Python (py3-none-any); others are reported."),
    split_mib: float = typer.Option(None, "--split-mib", help="Then split the folder into DEST/bundles/NN of at "
                                    "most this many MiB each (bigger files in parts; join with "
                                    "runtimes/bundles.py join)."),
    as_json: Json = False,
) -> None:
    """Download every wheel a host needs to sync RUNTIMES (and install ichain) without any index."""
    from internlm_chain.cli.output import err, out, print_json
    from internlm_chain.errors import ChainError, Problem
    from internlm_chain.runtimes import bundles
    from internlm_chain.runtimes.state import human_size
    from internlm_chain.runtimes.wheels import Target, WheelsError, collect

    _check_variant(variant)
    if torch_version and not host_torch:
        raise ChainError(Problem("--torch-version only means something with --host-torch"))
    if not re.fullmatch(r"3\.\d+", python_version):
        raise ChainError(Problem(f"--python-version must be major.minor, e.g. 3.12, not '{python_version}'"))
    try:
        col = collect([(r, variant) for r in dict.fromkeys(runtimes)], dest, Target(python_version, tuple(platforms)),
                      host_torch=host_torch, torch_version=torch_version, ichain=ichain, build=build,
                      report=lambda text: err.print(text, markup=False))
    except WheelsError as exc:
        for line in exc.tail:
            err.print("  " + line, markup=False, style="dim")
        raise ChainError(Problem(exc.message), exit_code=2 if "lock" in exc.message else 1) from None
    # only what this collection needs: the folder may hold wheels of earlier collections
    needed = sorted({f for r in col.runtimes for f in r.files} | {"wheels.json"})
    try:
        folders = bundles.split(col.dest, col.dest / "bundles", split_mib, needed) if split_mib else []
    except bundles.BundleError as exc:
        raise ChainError(Problem(str(exc))) from None
    if as_json:
        print_json({**col.to_dict(), "bundles": [str(f) for f in folders]})
    else:
        for r in col.runtimes:
            biggest = sorted(r.files, key=lambda f: -(col.dest / f).stat().st_size)[:2]
            out.print(f"{r.runtime:<12} {len(r.files):>4} wheels {human_size(r.bytes):>10}   largest: "
                      + ", ".join(f"{f} ({human_size((col.dest / f).stat().st_size)})" for f in biggest), markup=False)
            for note in r.notes:
                out.print(f"{'':<12} note: {note}", markup=False)
        out.print(f"{'total':<12} {human_size(col.total_bytes):>16} in {col.dest} (each wheel once)", markup=False)
        for f in folders:
            size = sum(p.stat().st_size for p in f.iterdir())
            out.print(f"bundle {f} {human_size(size)}", markup=False)
    if col.missing:
        raise ChainError([Problem(f"no wheel for {col.target.describe()}: {m}",
                                  hint="only an sdist, or no build for this Python; the host cannot install it "
                                       "offline") for m in col.missing], exit_code=1)
