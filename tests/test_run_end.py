"""What a run says when it ends and how it is continued: a few lines with its result, its dir
and the next commands; `resume=<run dir>` continues it with its own overrides, refusing a
changed value; a resumed run's record keeps the wall time of every segment; progress lines
where stdout is no terminal, and live bars drawn once where it is one."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pyte
import pytest
import torch
from helpers.processes import BIN, dirs_env, holder
from helpers.runs import QUIET, TINY
from lightning.pytorch.callbacks import ModelSummary, RichModelSummary

from reslab.runs.layout import scored_name
from reslab.training.callbacks import LossProgressBar, ProgressLines, model_summary, progress_bar

# The progress bar stays: its lines are under test here.
RUN = [a for a in QUIET if a != "~callbacks.progress_bar"]


@pytest.fixture
def first(cifar10_root: Path, tmp_path: Path, train_in_process) -> Path:
    """A finished run of 6 steps, in a run dir Hydra named."""
    run = train_in_process([*RUN, "trainer.max_steps=6"], cifar10_root, tmp_path / "logs")
    assert run.code == 0, run.err[-2000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    lines = [ln for ln in run.out.splitlines() if "resnet-8_seed0 completed" in ln]
    assert lines and "6 steps in" in lines[0] and "test err" in lines[0]
    out = run.out[run.out.index("resnet-8_seed0 completed") :]
    assert f"run dir   {run_dir}" in out
    assert f"reslab-eval ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}" in out
    assert f"reslab-train resume={run_dir} trainer.max_steps=<more steps>" in out
    assert '"metrics"' not in run.out  # the record is in summary.json, not on the screen
    return run_dir


def test_resume_run_dir_continues_with_the_runs_overrides_and_keeps_every_segment(
    first: Path, cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    before = json.loads((first / "summary.json").read_text())
    run = train_in_process([f"resume={first}", "trainer.max_steps=12"], cifar10_root, tmp_path)
    assert run.code == 0, run.err[-2000:]
    after = json.loads((first / "summary.json").read_text())
    assert after["steps"] == 12 and after["depth"] == 8  # model.depth=8 came from the run
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 12
    segments = after["wall_time_segments_s"]
    assert len(segments) == 2 and segments[0] <= before["wall_time_s"]
    assert after["wall_time_s"] == pytest.approx(sum(segments), abs=0.02)
    assert len(list(first.parent.iterdir())) == 1  # no new run dir
    # Every step logged once, at its own step (0-based), the resumed segment's last included.
    rows = csv.DictReader((first / "csv" / "metrics.csv").read_text().splitlines())
    assert [int(r["step"]) for r in rows if r.get("train/loss_step")] == list(range(12))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model.depth=14"], "model.depth=14 differs from the run's model.depth=8"),
        (["-m", "seed=1,2"], "continues one run; continue a sweep with"),
    ],
)
def test_resume_run_dir_refuses_a_changed_value(
    args: list[str], needle: str, first: Path, cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    run = train_in_process([f"resume={first}", *args], cifar10_root, tmp_path)
    assert run.code == 2 and "Traceback" not in run.err
    line = next(ln for ln in run.err.splitlines() if ln.startswith("reslab: error:"))
    assert f"resume={first}" in line and needle in line
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == mtimes


def test_resume_of_a_dir_that_is_no_run_is_refused(tmp_path: Path, train_in_process) -> None:
    run = train_in_process([f"resume={tmp_path / 'nothing'}"], tmp_path, tmp_path)
    assert run.code == 2
    assert "is no run dir (no .hydra/overrides.yaml); pass a run's dir" in run.err


def test_without_a_terminal_lightnings_lines_and_the_model_table_go_to_the_log(
    cifar10_root: Path, tmp_path: Path, train_in_process, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert type(model_summary()) is ModelSummary  # pytest's stdout is no terminal
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert isinstance(model_summary(), RichModelSummary)
    monkeypatch.setattr("reslab.training.callbacks.shares_a_terminal", lambda: True)
    assert type(model_summary()) is ModelSummary  # a terminal the jobs of a sweep share
    monkeypatch.undo()
    args = [*TINY, "trainer.max_steps=2", "test=false", "~callbacks.progress_bar"]
    run = train_in_process(args, cifar10_root, tmp_path)
    assert run.code == 0, run.err[-2000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    log = (run_dir / "train.log").read_text()
    assert "][lightning.pytorch.utilities.rank_zero][INFO] - GPU available: " in log
    assert "Total params" in log and "| net " in log


def test_torchmetrics_messages_print_once_through_the_runs_handlers() -> None:
    """torchmetrics gives its logger a console handler of its own and lets it propagate too."""
    code = (
        "import logging, torchmetrics\n"
        "from reslab.commands.startup import lightning_logs_as_ours\n"
        "logging.basicConfig(format='ours: %(message)s')\n"
        "lightning_logs_as_ours()\n"
        "logging.getLogger('torchmetrics').warning('a torchmetrics message')\n"
    )
    run = subprocess.run([BIN / "python", "-c", code], capture_output=True, text=True, check=True)
    assert run.stderr.splitlines() == ["ours: a torchmetrics message"], run.stderr


def test_progress_lines_without_a_terminal(
    cifar10_root: Path, tmp_path: Path, train_in_process, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(progress_bar(), ProgressLines)  # pytest's stdout is no terminal
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert isinstance(progress_bar(), LossProgressBar)
    monkeypatch.undo()
    args = [*RUN, "trainer.max_steps=12", "callbacks.progress_bar.every_s=0", "test=false"]
    run = train_in_process(args, cifar10_root, tmp_path)
    assert run.code == 0, run.err[-2000:]
    lines = [ln for ln in run.out.splitlines() if " - step " in ln]
    assert any("step 3/12 (epoch 0): loss " in ln and " img/s, " in ln for ln in lines)
    assert any(ln.endswith("left") for ln in lines)
    assert any("step 10 (epoch 0): val err " in ln for ln in lines)  # the epoch's validation
    assert any("step 12 (epoch 1): val err " in ln for ln in lines)  # and the run's end
    assert any(ln.startswith("[") and "][resnet-8_seed0][INFO] - step 3/12" in ln for ln in lines)
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    assert "][reslab][INFO] - step 3/12 (epoch 0): loss " in (run_dir / "train.log").read_text()


def test_reslab_runs_lists_completed_failed_running_and_stopped_runs(
    first: Path, cifar10_root: Path, tmp_path: Path, train_in_process, capsys
) -> None:

    from reslab.commands.runs import main

    logs = tmp_path / "logs"
    args = ["-m", *RUN, "trainer.max_steps=2", "test=false", "model.depth=8,9"]
    sweep = train_in_process(args, cifar10_root, logs)
    assert sweep.code == 1  # depth 9 fails, reported
    # A job's overrides as the command line wrote them, not as Hydra hands them back (False).
    (line,) = [ln for ln in sweep.out.splitlines() if ln.startswith("  overrides: ")]  # depth 8
    assert line.startswith("  overrides: data.verify_md5=false data.batch_size=50 "), line
    assert " trainer.deterministic=true " in line and line.endswith(" test=false"), line
    stopped = logs / "train" / "runs" / "stopped"
    (stopped / ".hydra").mkdir(parents=True)
    (stopped / ".hydra" / "config.yaml").write_text("{}\n")
    running = logs / "train" / "runs" / "running"
    (running / ".hydra").mkdir(parents=True)
    (running / ".hydra" / "config.yaml").write_text("{}\n")
    proc = holder(running)
    try:
        main([str(logs / "train")])
    finally:
        proc.kill()
        proc.wait()
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0][:3] == ["time", "run", "status"]
    by_name = {row[2]: row for row in rows[1:]}
    assert by_name["running"][3] == "running" and by_name["stopped"][3] == "stopped"
    assert by_name["resnet-8_seed0"][3] == "completed"
    statuses = sorted(row[3] for row in rows[1:])
    assert statuses == ["completed", "completed", "failed", "running", "stopped"]
    assert rows[1][2] == "running"  # newest first
    assert any(row[-1] == str(first) and row[4] == "6" for row in rows[1:])


def screen(args: list[str], data: Path, logs: Path, columns: int = 120) -> list[str]:
    """What a terminal shows after `reslab-train ARGS` ran in it: the command on a real
    pseudo-terminal (so Rich draws its live bars), its output replayed through pyte's
    terminal emulator; the screen's rows, trailing blanks dropped."""
    main, child = os.openpty()
    env = {**os.environ, **dirs_env(data, logs), "TERM": "xterm", "COLUMNS": str(columns)}
    proc = subprocess.Popen(
        [str(BIN / "reslab-train"), *args], stdin=child, stdout=child, stderr=child, env=env
    )
    os.close(child)
    raw = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child side closed: the command ended
            break
        if not chunk:
            break
        raw += chunk
    os.close(main)
    assert proc.wait(timeout=300) == 0, raw.decode(errors="replace")[-3000:]
    term = pyte.Screen(columns, 400)
    pyte.Stream(term).feed(raw.decode(errors="replace").replace("\n", "\r\n"))
    rows = [row.rstrip() for row in term.display]
    while rows and not rows[-1]:
        rows.pop()
    return rows


@pytest.mark.slow
def test_a_terminal_shows_each_bar_once_and_the_outcome_after_them(
    cifar10_root: Path, tmp_path: Path
) -> None:
    """In a terminal: the training bar's last state once (15 of 15 steps, with the last
    validation's error), the test bar once, then the outcome; no Lightning note in between,
    nor its warning that an epoch (10 batches) is shorter than `log_every_n_steps` (50)."""
    args = [
        *TINY,
        "trainer.max_steps=15",
        "~callbacks.model_summary",
        f"hydra.run.dir={tmp_path}/r",
    ]
    rows = screen(args, cifar10_root, tmp_path)
    bars = [r for r in rows if r.startswith(("Epoch", "Validation", "Testing"))]
    assert len(bars) == 2, "\n".join(rows)
    assert bars[0].startswith("Epoch 1") and "15/15" in bars[0] and "val/err" in bars[0]
    assert bars[1].startswith("Testing") and "4/4" in bars[1]
    end = rows.index(bars[1])
    assert "resnet-8_seed0 completed: 15 steps" in rows[end + 1], "\n".join(rows)
    assert not any("stopped" in r or "Trainer.fit" in r for r in rows), "\n".join(rows)
    assert not any("logging interval" in r for r in rows), "\n".join(rows)


@pytest.mark.parametrize(
    ("ckpt_path", "weights", "name"),
    [
        ("logs/train/runs/2026-12-03_07-48-23_resnet-20_seed0/checkpoints/best.ckpt", None,
         "eval_resnet-20_seed0_best"),
        ("logs/train/multiruns/2026-12-03_07-48-23/3_plain-56_seed1/checkpoints/last.ckpt", None,
         "eval_plain-56_seed1_last"),
        ("elsewhere/model.ckpt", None, "eval_model"),
        (None, "/hub/resnet50-0676ba61.pth", "eval_resnet50-0676ba61"),
    ],
)  # fmt: skip
def test_an_eval_dir_names_what_it_scored(ckpt_path: str, weights: str, name: str) -> None:
    assert scored_name(ckpt_path, weights) == name


@pytest.mark.slow
def test_jobs_of_a_sweep_that_run_at_once_print_named_lines_not_bars(
    cifar10_root: Path, tmp_path: Path
) -> None:
    """Two jobs at once in one terminal (`hydra/launcher=local`): live bars would overwrite
    each other, so each job prints progress lines that carry its run's name."""
    sweep = ["hydra/launcher=local", "model.depth=8,14", f"hydra.sweep.dir={tmp_path}/s"]
    rows = screen(
        ["-m", *TINY, "trainer.max_steps=12", "test=false", *sweep], cifar10_root, tmp_path
    )
    assert not any(r.startswith(("Epoch", "Validation")) for r in rows), "\n".join(rows)
    for name in ("resnet-8_seed0", "resnet-14_seed0"):
        assert any(f"][{name}][INFO] - step 12 (epoch 1): val err" in r for r in rows), name
        # Lightning's lines and the model table (not Rich's, drawn apart) carry the name too.
        assert any(f"][{name}][INFO] - GPU available: " in r for r in rows), name
    assert not any("┏" in r for r in rows), "\n".join(rows)
