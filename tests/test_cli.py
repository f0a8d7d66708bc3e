"""The real console scripts, end to end, as a user runs them; checks that need no new process
run the same entry points in this process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers.processes import ok, run_script
from helpers.runs import TINY

from reslab.models import cifar_resnet
from reslab.training import precision

RUN = [*TINY, "trainer.max_steps=25", "trainer.log_every_n_steps=5"]


@pytest.fixture(scope="module")
def trained(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    ok(run_script(["reslab-train", *RUN], cifar10_root, logs))
    (run_dir,) = (logs / "train" / "runs").iterdir()
    return run_dir


@pytest.mark.slow
def test_train_writes_config_checkpoints_metrics_and_summary(trained: Path) -> None:
    assert trained.name.endswith("_resnet-8_seed0")
    cfg = (trained / ".hydra" / "config.yaml").read_text()
    assert "depth: 8" in cfg and "max_steps: 25" in cfg
    assert "max_steps: 25" in (trained / "config_tree.log").read_text()  # resolved, as printed
    names = {p.name for p in (trained / "checkpoints").iterdir()}
    assert names == {"best.ckpt", "best.ckpt.sha256", "last.ckpt", "last.ckpt.sha256"}
    rows = list(csv.DictReader((trained / "csv" / "metrics.csv").read_text().splitlines()))
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert steps and max(steps) <= 25
    assert any(r.get("val/err") for r in rows) and any(r.get("lr-SGD") for r in rows)
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["run_name"] == "resnet-8_seed0" and summary["steps"] == 25
    assert summary["status"] == "completed" and summary["tags"] == []
    assert summary["precision"] == precision.default_precision("cpu")
    assert summary["params"] == sum(p.numel() for p in cifar_resnet(8).parameters())
    assert 0 <= summary["metrics"]["test/err"] <= 100
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["model"]["depth"] == 8 and ckpt["global_step"] == 25


@pytest.mark.slow
def test_eval_reproduces_the_test_metrics(trained: Path, cifar10_root: Path, tmp_path: Path):
    # validation is the test set (data.val_size=0): the run tested its final weights, last.ckpt
    ckpt = trained / "checkpoints" / "last.ckpt"
    ok(run_script(["reslab-eval", f"ckpt_path={ckpt}"], cifar10_root, tmp_path))
    (out,) = (tmp_path / "eval" / "runs").iterdir()
    assert out.name.endswith("_eval_resnet-8_seed0_last"), out.name  # what it scored
    metrics = json.loads((out / "metrics.json").read_text())
    summary = json.loads((trained / "summary.json").read_text())["metrics"]
    for key in ("test/acc", "test/acc5", "test/err"):
        assert metrics[key] == pytest.approx(summary[key], abs=1e-6)


@pytest.mark.slow
def test_eval_rejects_a_checkpoint_of_another_architecture(
    trained: Path, cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    ckpt["hyper_parameters"]["model"]["depth"] = 14
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    run = eval_in_process([f"ckpt_path={bad}"], cifar10_root, tmp_path)
    assert run.code == 2
    assert "does not fit the model config" in run.err and "Traceback" not in run.err


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.depth=21", "reslab: error: model.depth=21 is not a CIFAR ResNet depth; use 6n+2"),
        (
            "model.shortcut=E",
            "reslab: error: model.shortcut='E' is not valid for reslab.models.cifar_resnet",
        ),
        ("data.download=false", "reslab: error: cifar10 not found in"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    override: str, needle: str, tmp_path: Path, train_in_process
) -> None:
    run = train_in_process([override], tmp_path / "empty", tmp_path)
    assert run.code == 2
    assert needle in run.err and "Traceback" not in run.err
    line = next(ln for ln in run.err.splitlines() if ln.startswith("reslab: error:"))
    assert needle in line
    assert not list(tmp_path.glob("train/runs/*/checkpoints"))


@pytest.mark.slow
def test_resume_continues_in_the_same_run_dir(
    trained: Path, cifar10_root: Path, train_in_process
) -> None:
    args = [*RUN, "trainer.max_steps=30", f"hydra.run.dir={trained}", "resume=true"]
    run = train_in_process(args, cifar10_root, trained.parent.parent.parent)
    assert run.code == 0, run.err[-3000:]
    assert (
        torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 30
    )
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 30
    assert len(list(trained.parent.iterdir())) == 1  # no new run dir
    rows = list(csv.DictReader((trained / "csv" / "metrics.csv").read_text().splitlines()))
    steps = {int(r["step"]) for r in rows if r.get("train/loss_step")}
    assert min(steps) < 10 and max(steps) >= 25  # the first segment's rows are still there


@pytest.mark.slow
def test_a_run_dir_is_never_reused_without_resume(
    trained: Path, cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    """A dir that holds a run is refused without `resume=true`, and `resume=true` with no dir
    to continue, both before anything is written."""
    before = {p: p.stat().st_mtime_ns for p in trained.rglob("*") if p.is_file()}
    run = train_in_process([*RUN, f"hydra.run.dir={trained}"], cifar10_root, tmp_path)
    assert run.code == 2 and "Traceback" not in run.err
    line = next(ln for ln in run.err.splitlines() if ln.startswith("reslab: error:"))
    assert f"{trained} already holds a run" in line and "resume=true" in line
    assert {p: p.stat().st_mtime_ns for p in trained.rglob("*") if p.is_file()} == before
    missing = tmp_path / "no_such_run"
    args = [*RUN, f"hydra.run.dir={missing}", "resume=true"]
    run = train_in_process(args, cifar10_root, tmp_path)
    assert run.code == 2
    assert f"resume=true but there is no run to resume in {missing}" in run.err
    assert not missing.exists()


@pytest.mark.parametrize("command", ["train", "eval", "summary"])
def test_help_says_what_the_command_does_and_its_examples_compose(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`reslab-<command> --help`: a line on the command, examples, the config groups, not the
    whole config; each example (its placeholders filled) is a command line Hydra composes."""
    import importlib
    import re
    import sys

    from hydra import compose, initialize_config_module

    main = importlib.import_module(f"reslab.commands.{command}").main
    monkeypatch.setattr(sys, "argv", [f"reslab-{command}", "--help"])
    with pytest.raises(SystemExit) as exit:
        main()
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"reslab-{command}: ")
    assert "\nmodel: " in text and "resnet56" in text and "_target_" not in text
    # An example, then two spaces or more and what it does.
    lines = [ln.strip() for ln in text.splitlines() if ln.startswith(f"  reslab-{command} ")]
    examples = [re.split(r"\s{2,}", ln)[0].split()[1:] for ln in lines]
    assert len(examples) >= 2
    for words in examples:
        # Placeholders stand for any value.
        args = [w.replace("<dir>", "/data").replace("<run>", "run") for w in words if w != "-m"]
        if any(a.startswith("resume=logs") for a in args):
            continue  # a run dir's own overrides (reslab.runs.dirs.expand_resume, its tests)
        with initialize_config_module("reslab.configs", version_base="1.3"):
            compose(command, overrides=args)
