"""The chain runner through the real `ichain` CLI: skip/re-run, selection, bad input, plugins."""

from __future__ import annotations

import json

from runner_helpers import ichain, manifest

ALL = ("data", "pretrain", "finetune", "eval", "deploy", "agent")


def started(m: dict) -> dict[str, float]:
    return {s: r["started"] for s, r in m["stages"].items()}


def statuses(proc) -> dict[str, str]:
    data = json.loads(proc.stdout)
    return {s["stage"]: s["status"] for s in data["stages"]}


def test_rerun_of_a_completed_chain_runs_nothing(fake_chain):
    chain = fake_chain()
    wd = chain.parent / "wd"
    first = ichain("run", chain, "--json")
    assert first.returncode == 0, first.stderr
    assert statuses(first) == dict.fromkeys(ALL, "done")
    first_manifest = manifest(wd)
    assert (wd / "agent" / "result.txt").read_text().splitlines()[0].startswith("agent ")
    assert not (wd / ".staging" / "agent").exists() and not (wd / ".ichain.lock").exists()
    second = ichain("run", chain, "--json")
    assert statuses(second) == dict.fromkeys(ALL, "up to date")
    assert started(manifest(wd)) == started(first_manifest)  # no stage ran again
    assert manifest(wd)["stages"]["finetune"]["outputs"]["result"]["fingerprint"].startswith("sha256:")


def test_changed_stage_reruns_with_its_dependents_only(fake_chain):
    chain = fake_chain()
    wd = chain.parent / "wd"
    assert ichain("run", chain, "-q").returncode == 0
    before = manifest(wd)["stages"]
    change = ["--set", "stages.pretrain.runtime.variant=cuda"]
    dry = ichain("run", chain, "--dry-run", "--json", *change)
    assert {s["stage"]: s["status"] for s in json.loads(dry.stdout)} == {
        "data": "up to date", "pretrain": "would run", "finetune": "would run",
        "eval": "up to date", "deploy": "up to date", "agent": "up to date"}
    assert ichain("status", chain, "--json", *change).returncode == 0
    rows = {r["stage"]: r["state"] for r in json.loads(ichain("status", chain, "--json", *change).stdout)}
    assert rows["pretrain"] == "stale" and rows["finetune"] == "stale" and rows["eval"] == "done"
    run = ichain("run", chain, "--json", *change)
    assert run.returncode == 0, run.stderr
    assert statuses(run) == {"data": "up to date", "pretrain": "done", "finetune": "done",
                             "eval": "up to date", "deploy": "up to date", "agent": "up to date"}
    after = manifest(wd)["stages"]
    assert [s for s in ALL if after[s]["started"] != before[s]["started"]] == ["pretrain", "finetune"]
    assert after["finetune"]["fingerprint"] != before["finetune"]["fingerprint"]
    assert after["eval"]["fingerprint"] == before["eval"]["fingerprint"]


def test_only_from_to_and_force(fake_chain):
    chain = fake_chain()
    wd = chain.parent / "wd"
    run = ichain("run", chain, "--to", "pretrain", "--json")
    assert list(statuses(run)) == ["data", "pretrain"] and not (wd / "finetune").exists()
    run = ichain("run", chain, "--from", "eval", "--to", "deploy", "--json")
    assert statuses(run) == {"eval": "done", "deploy": "done"}
    run = ichain("run", chain, "--only", "data,finetune", "--json")
    assert statuses(run) == {"data": "up to date", "finetune": "done"}
    run = ichain("run", chain, "--only", "data", "--force", "--json")
    assert statuses(run) == {"data": "done"}
    # data's output content is the same, so its dependents stay up to date
    run = ichain("run", chain, "--json")
    assert statuses(run)["pretrain"] == "up to date" and statuses(run)["agent"] == "done"
    bad = ichain("run", chain, "--only", "train")
    assert bad.returncode == 2 and "'train' is not a stage" in bad.stderr


def test_missing_input_is_one_clear_line(fake_chain):
    chain = fake_chain()
    proc = ichain("run", chain, "--only", "finetune", cwd=chain.parent)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "chain.yaml" in lines[0] and "stages.finetune" in lines[0]
    assert ("finetune needs the outputs of `pretrain`, which has not run yet "
            "(run `ichain run chain.yaml --only pretrain` first)") in lines[0]
    assert not (chain.parent / "wd" / "manifest.json").exists()
    # the stage verb says the same
    verb = ichain("finetune", "-c", chain, cwd=chain.parent)
    assert verb.returncode == 2 and "--only pretrain` first" in verb.stderr


def test_unsynced_runtime_is_one_clear_line(fake_chain, tmp_path):
    chain = fake_chain({"data": "ECHO", "finetune": "XTUNER"})
    assert ichain("run", chain, "--only", "data", "-q").returncode == 0
    proc = ichain("run", chain, env={"ICHAIN_CACHE": str(tmp_path / "empty-cache")})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "runtime 'xtuner' is not synced" in proc.stderr and "run `ichain env sync xtuner`" in proc.stderr
    assert manifest(chain.parent / "wd")["stages"].get("finetune") is None  # nothing started


def test_every_stage_is_checked_before_the_first_one_runs(fake_chain, tmp_path):
    """A bad last stage, and a runtime a middle stage needs but nobody synced: both reported, nothing ran."""
    chain = fake_chain({"data": "ECHO", "finetune": "XTUNER", "deploy": "SERVICE", "agent": "REJECT_AFTER_DEPLOY"})
    proc = ichain("run", chain, "-q", env={"ICHAIN_CACHE": str(tmp_path / "empty-cache")})
    assert proc.returncode == 2, proc.stderr
    assert "runtime 'xtuner' is not synced" in proc.stderr and "stages.agent.plugin: rejected on purpose" in proc.stderr
    assert "2 problems found" in proc.stderr
    assert not (chain.parent / "wd" / "manifest.json").exists()  # not even data started
    assert not (chain.parent / "wd" / ".staging").exists()


def test_failed_job_is_recorded_and_reported(fake_chain):
    chain = fake_chain({"data": "ECHO", "pretrain": "NEEDS_DATA"})
    wd = chain.parent / "wd"
    proc = ichain("run", chain, "-q", env={"FAKE_FAIL_PRETRAIN": "7"})
    assert proc.returncode == 1
    assert "pretrain: job echo exited with code 7" in proc.stderr
    rec = manifest(wd)["stages"]["pretrain"]
    assert rec["state"] == "failed" and "code 7" in rec["error"]
    log = wd / ".staging" / "pretrain" / "logs" / "echo.log"
    assert "failing on purpose" in log.read_text()
    row = {r["stage"]: r for r in json.loads(ichain("status", chain, "--json").stdout)}["pretrain"]
    assert row["state"] == "failed" and str(log) in row["detail"]
    assert not (wd / "pretrain").exists()  # nothing half-written is published
    assert ichain("run", chain, "-q").returncode == 0
    assert manifest(wd)["stages"]["pretrain"]["state"] == "done"


def test_verbose_prints_commands_and_quiet_hides_output(fake_chain):
    chain = fake_chain({"data": "ECHO"})
    loud = ichain("run", chain, "--verbose", "--force")
    assert "$ cd " in loud.stderr and "data: start" in loud.stderr
    quiet = ichain("run", chain, "--quiet", "--force")
    assert "data: start" not in quiet.stderr and "$ cd" not in quiet.stderr
    assert (chain.parent / "wd" / "data" / "logs" / "echo.log").read_text().count("data: start") == 1  # this run's log only


def test_bad_plugin_names_the_field(fake_chain):
    chain = fake_chain({"data": "NO_SUCH_THING"})
    proc = ichain("run", chain, "--dry-run")
    assert proc.returncode == 2
    assert "chain.yaml:" in proc.stderr and "stages.data.plugin" in proc.stderr
    assert "NO_SUCH_THING" in proc.stderr and "Traceback" not in proc.stderr


def test_stopped_service_restarts_only_when_a_consumer_must_run(fake_chain):
    from runner_helpers import GRAPH, attempts

    chain = fake_chain({**GRAPH, "deploy": "SERVICE", "eval": "ECHO"})
    wd = chain.parent / "wd"
    assert ichain("run", chain, "--json").returncode == 0
    down = {"FAKE_SERVICE_DOWN": "1"}
    again = ichain("run", chain, "--json", env=down)
    assert again.returncode == 0, again.stderr
    assert statuses(again)["deploy"] == "up to date (stopped)" and statuses(again)["agent"] == "up to date"
    assert attempts(wd, "deploy") == 1
    before = manifest(wd)["stages"]["deploy"]["started"]
    # the consumer changed: it must run, so the stopped service comes back first
    changed = ichain("run", chain, "--json", "--set", "stages.agent.max_turns=9", env=down)
    assert changed.returncode == 0, changed.stderr
    assert statuses(changed)["deploy"] == "done" and statuses(changed)["agent"] == "done"
    assert manifest(wd)["stages"]["deploy"]["started"] > before


def test_editing_a_file_named_in_the_settings_reruns_the_stage(fake_chain):
    chain = fake_chain({"data": "ECHO", "pretrain": "NEEDS_DATA"})
    text = chain.read_text().replace("  data: {plugin: ", "  data: {inputs: [corpus.txt], plugin: ")
    chain.write_text(text)
    (chain.parent / "corpus.txt").write_text("one\n")
    assert ichain("run", chain, "--json").returncode == 0
    same = ichain("run", chain, "--json")
    assert statuses(same) == {"data": "up to date", "pretrain": "up to date"}
    (chain.parent / "corpus.txt").write_text("two\n")  # same path, new content
    edited = ichain("run", chain, "--json")
    assert edited.returncode == 0, edited.stderr
    assert statuses(edited)["data"] == "done"
