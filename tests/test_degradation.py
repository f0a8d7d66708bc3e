"""The degradation study end to end: a plain/residual x 2-depth multirun through the local
parallel launcher on generated CIFAR data (real processes), then `reslab-report` on its run
dirs (the console script once, its entry point in this process for the other checks)."""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import pytest
import torch
from helpers.processes import ok, run_main, run_script

from reslab.commands.report import (
    load_runs,
    main,
    plot_curves,
    plot_gradients,
    smooth,
    table_rows,
)
from reslab.models import cifar_resnet
from reslab.models.flops import count_macs
from reslab.training.callbacks import ErrorWarmup

STEPS = 8
NAMES = ["0_plain-8_seed0", "1_plain-14_seed0", "2_resnet-8_seed0", "3_resnet-14_seed0"]


def python_m(module: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def sweep(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    args = [
        "-m",
        "experiment=cifar10_degradation",
        "model.depth=8,14",
        "hydra/launcher=local",
        "data.verify_md5=false",
        "data.batch_size=100",
        "data.num_workers=0",
        f"trainer.max_steps={STEPS}",
        "trainer.log_every_n_steps=2",
        "callbacks.gradient_diagnostics.every_n_steps=2",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
    ]
    proc = python_m(
        "reslab.commands.train", args, {"DATA_DIR": str(cifar10_root), "RESLAB_LOG_DIR": str(logs)}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sweep_dir,) = (logs / "train" / "multiruns").iterdir()
    return sweep_dir


def report(args: list[str]):
    """`reslab-report ARGS` by its entry point in this process."""
    return run_main(lambda: main(args), ["reslab-report", *args])


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_multirun_writes_one_named_dir_with_a_summary_per_grid_point(sweep: Path) -> None:
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == NAMES
    for name in NAMES:
        s = summary(sweep / name)
        depth, residual = int(name.split("-")[1].split("_")[0]), "resnet" in name
        net = cifar_resnet(depth, residual=residual)
        assert s["run_name"] == name.split("_", 1)[1] and s["status"] == "completed"
        assert s["depth"] == depth and s["residual"] is residual and s["steps"] == STEPS
        assert s["params"] == sum(p.numel() for p in net.parameters())
        assert s["macs"] == count_macs(net)["total"] and s["input_size"] == [3, 32, 32]
        rows = list(csv.DictReader((sweep / name / "csv" / "metrics.csv").open()))
        for key, column in (("train_err", "train/err_epoch"), ("val_err", "val/err")):
            curve = [float(r[column]) for r in rows if r.get(column)]
            assert len(curve) >= 1 + (key == "train_err")
            expected = {"final": pytest.approx(curve[-1])}
            if key == "train_err":  # validation is the test set: its best is no result
                expected["best"] = pytest.approx(min(curve))
            assert s[key] == expected
        # validation ran on the test set, so the test pass scores the final weights (after
        # step 8, mid-epoch: later than the last validation)
        assert s["val_is_test"] is True and s["test_weights"] == "final"
        (test,) = [float(r["test/err"]) for r in rows if r.get("test/err")]
        assert s["test_err"] == pytest.approx(test)
        assert s["wall_time_s"] > 0


@pytest.mark.slow
def test_gradient_diagnostics_are_logged_per_stage(sweep: Path) -> None:
    for name in NAMES:
        rows = list(csv.DictReader((sweep / name / "csv" / "metrics.csv").open()))
        grad_steps = [int(r["step"]) for r in rows if r.get("grad_norm/layer1")]
        assert grad_steps == list(range(0, STEPS, 2))
        assert all(float(r["grad_norm/layer3"]) > 0 for r in rows if r.get("grad_norm/layer3"))
        ratios = [float(r["branch_ratio/layer2"]) for r in rows if r.get("branch_ratio/layer2")]
        assert (len(ratios) == len(grad_steps)) if "resnet" in name else not ratios
        assert all(r > 0 for r in ratios)


@pytest.mark.slow
def test_report_table_and_figures_match_the_summaries(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = ok(run_script(["reslab-report", str(sweep), "--out", str(out)]))
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [int(r["depth"]) for r in rows] == [8, 14]
    md = (out / "table.md").read_text()
    # No paper column: the generated data did not pass the official md5 check.
    assert md.splitlines()[0] == (
        "| depth | params | MACs | plain final train error (%) | residual final train error (%) "
        "| plain test error (%) | residual test error (%) |"
    )
    for row in rows:
        d = row["depth"]
        plain = summary(sweep / NAMES[0 if d == "8" else 1])
        res = summary(sweep / NAMES[2 if d == "8" else 3])
        assert float(row["plain_test_mean"]) == pytest.approx(plain["test_err"])
        assert float(row["residual_test_mean"]) == pytest.approx(res["test_err"])
        assert float(row["plain_train_mean"]) == pytest.approx(plain["train_err"]["final"])
        assert float(row["residual_train_mean"]) == pytest.approx(res["train_err"]["final"])
        assert int(row["residual_params"]) == res["params"] and row["paper_err"] == ""
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {d} |"))
        assert f"{plain['test_err']:.2f}" in line and f"{res['test_err']:.2f}" in line
        assert f"{plain['train_err']['final']:.2f}" in line
        assert f"{res['params'] / 1e6:.2f}M" in line
    for name in ("curves", "gradients"):
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.shape[0] > 300 and image.shape[1] > 800
    assert "written to" in proc.stdout and "not in the table" in proc.stdout


@pytest.mark.slow
def test_figures_have_the_papers_panels_and_lines(sweep: Path) -> None:
    runs = load_runs(sweep)
    fig = plot_curves(runs)
    plain, residual = fig.axes
    assert (plain.get_title(), residual.get_title()) == ("plain", "residual")
    for ax, kind in ((plain, "plain"), (residual, "ResNet")):
        styles = {line.get_label(): line.get_linestyle() for line in ax.lines}
        assert styles == {
            f"{kind}-{d} {split}": "--" if split == "train" else "-"
            for d in (8, 14)
            for split in ("train", "test")
        }
        colours = {line.get_label(): line.get_color() for line in ax.lines}
        assert colours[f"{kind}-8 train"] == colours[f"{kind}-8 test"]
        assert colours[f"{kind}-8 test"] != colours[f"{kind}-14 test"]
    val = [v for _, v in next(r for r in runs if r.dir.name == NAMES[0]).curves["val/err"]]
    line = next(ln for ln in plain.lines if ln.get_label() == "plain-8 test")
    assert list(line.get_ydata()) == pytest.approx(val)
    grads, ratios = plot_gradients(runs).axes
    labels = {line.get_label(): list(line.get_xdata()) for line in grads.lines}
    assert labels == {f"{k} layer{i}": [8, 14] for k in ("plain", "residual") for i in (1, 2, 3)}
    assert {line.get_label() for line in ratios.lines} == {"layer1", "layer2", "layer3"}


@pytest.mark.slow
def test_report_lists_failed_and_missing_runs(sweep: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(sweep, partial, ignore=shutil.ignore_patterns("*.ckpt"))
    (partial / NAMES[1] / "summary.json").unlink()
    failed = {**summary(partial / NAMES[3]), "status": "failed", "error": "CUDA out of memory"}
    (partial / NAMES[3] / "summary.json").write_text(json.dumps(failed))
    run = report([str(partial)])
    assert run.code == 0, run.err
    md = (partial / "report" / "table.md").read_text()
    assert f"- {NAMES[1]}: missing: no summary.json" in md
    assert f"- {NAMES[3]}: failed: CUDA out of memory" in md
    row14 = next(r for r in table_rows(load_runs(partial)) if r["depth"] == 14)
    assert row14["plain_n"] == row14["residual_n"] == 0
    assert "| 14 | - | - | - | - | - | - |" in md


def test_report_of_a_wrong_dir_is_one_line(tmp_path: Path) -> None:
    run = report([str(tmp_path / "nope")])
    assert run.code == 2 and "Traceback" not in run.err
    assert f"reslab: error: sweep dir {tmp_path / 'nope'} does not exist" in run.err
    run = report([str(tmp_path)])
    assert run.code == 2 and "no run dirs" in run.err


def fake_trainer(lr: float) -> SimpleNamespace:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return SimpleNamespace(optimizers=[opt], global_step=0)


def lr_of(trainer: SimpleNamespace) -> float:
    return trainer.optimizers[0].param_groups[0]["lr"]


def test_warmup_holds_lr_until_the_training_error_drops_below_80() -> None:
    trainer, warmup = fake_trainer(0.1), ErrorWarmup(lr=0.01, until_train_err=80.0)
    warmup.on_train_start(trainer, None)
    assert lr_of(trainer) == pytest.approx(0.01)
    for step, err in enumerate([90.0, 85.0, 80.0]):
        trainer.global_step = step
        warmup.on_train_batch_end(trainer, None, {"err": torch.tensor(err)}, None, step)
        assert lr_of(trainer) == pytest.approx(0.01)
    trainer.global_step = 3
    warmup.on_train_batch_end(trainer, None, {"err": torch.tensor(79.0)}, None, 3)
    assert lr_of(trainer) == pytest.approx(0.1) and warmup.state_dict()["ended_at"] == 3
    # resumed after the warm-up: nothing changes
    resumed = ErrorWarmup()
    resumed.load_state_dict(warmup.state_dict())
    trainer = fake_trainer(0.1)
    resumed.on_train_start(trainer, None)
    assert lr_of(trainer) == pytest.approx(0.1)
    disabled, trainer = ErrorWarmup(enabled=False), fake_trainer(0.1)
    disabled.on_train_start(trainer, None)
    assert lr_of(trainer) == pytest.approx(0.1)


def test_a_run_that_validated_once_draws_its_test_point(tmp_path: Path) -> None:
    from reslab.commands.report import Run

    curves = {"train/err_step": [(1, 90.0), (2, 80.0)], "val/err": [(2, 75.0)]}
    run = Run(tmp_path, {"model": {"depth": 8, "residual": True}}, None, curves)
    (test,) = [ln for ln in plot_curves([run]).axes[1].lines if ln.get_label() == "ResNet-8 test"]
    assert list(test.get_ydata()) == [75.0] and test.get_marker() == "o"


def test_training_curves_are_smoothed_only_where_they_have_points_to_spare() -> None:
    """A short run's two logging steps stay two levels (a window over both flattened them);
    a long run's noisy curve is averaged over a few neighbours and keeps its trend."""
    short = [(49, 76.8), (99, 69.8)]
    assert smooth(short) == short
    long = [(50 * i, 90.0 - i / 10 + (-1) ** i) for i in range(1, 401)]
    smoothed = smooth(long)
    assert [x for x, _ in smoothed] == [x for x, _ in long]

    def wiggle(points: list[tuple[int, float]]) -> float:
        return max(abs(b[1] - a[1]) for a, b in itertools.pairwise(points))

    assert wiggle(smoothed) < wiggle(long) / 2
    assert smoothed[-1][1] < smoothed[0][1] - 30


@pytest.mark.parametrize(
    ("data", "official"),
    [
        ({"format": "ilsvrc2012"}, True),
        ({"format": "folder"}, False),
        ({"verify_md5": True}, True),
        ({"verify_md5": False}, False),
    ],
)
def test_the_papers_column_needs_the_official_files(
    tmp_path: Path, data: dict, official: bool
) -> None:
    """ImageNet read from its archives (md5-checked as they unpack) or CIFAR that passed the md5
    check gets the paper's column; a folder of JPEGs or unchecked CIFAR files are named as the
    reason it is left out."""
    from omegaconf import OmegaConf

    from reslab.commands.report import report

    for job, residual in enumerate((False, True)):
        run_dir = tmp_path / "sweep" / f"{job}_run"
        (run_dir / ".hydra").mkdir(parents=True)
        config = {"model": {"depth": 18, "residual": residual}, "data": data}
        OmegaConf.save({**config, "paper_error": {18: 27.88}}, run_dir / ".hydra" / "config.yaml")
        record = {"status": "completed", "test_err": 30.0 + job, "test_weights": "final"}
        (run_dir / "summary.json").write_text(json.dumps({**record, "val_is_test": True}))
    table = (report(tmp_path / "sweep") / "table.md").read_text()
    assert ("| 27.88 |" in table) is official
    why = "folder of JPEGs" if "format" in data else "data.verify_md5=false"
    assert ("The paper's column is left out" in table and why in table) is not official
