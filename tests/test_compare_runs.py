"""`scripts/compare_runs.py`: two real runs that differ in their seed, side by side."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from helpers.runs import QUIET, compose_run
from omegaconf import OmegaConf

from reslab.commands.train import train

SCRIPT = Path(__file__).parents[1] / "scripts" / "compare_runs.py"


def test_labels_table_and_curves_of_two_seeds(
    cifar10_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [tmp_path / f"seed{s}" for s in (0, 1)]
    for seed, run_dir in enumerate(runs):
        cfg = compose_run(run_dir, cifar10_root, [*QUIET, "trainer.max_steps=20", f"seed={seed}"])
        train(cfg)
        (run_dir / ".hydra").mkdir()
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as Hydra's job runner does
        # The command lines: the seed, and values that say how a run ran, not what it trained.
        how = ["data.num_workers=0"] if seed else ["resume=true", "trainer.log_every_n_steps=1"]
        OmegaConf.save([f"seed={seed}", *how], run_dir / ".hydra" / "overrides.yaml")
    main = runpy.run_path(str(SCRIPT))["main"]
    main([*map(str, runs), "--out", str(tmp_path / "curves.png")])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| seed=")]
    assert len(rows) == 2
    for seed, (run_dir, row) in enumerate(zip(runs, rows, strict=True)):
        # The seed differs (and data.seed, which follows it: not a label); nothing else does.
        assert row.startswith(f"| seed={seed} | completed |")
        record = json.loads((run_dir / "summary.json").read_text())
        assert f"| {record['test_err']:.2f} | 20 | {record['precision']} |" in row
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    plot = runpy.run_path(str(SCRIPT))["plot"]
    fig = plot(runs, ["seed=0", "seed=1"])
    fig.draw_without_rendering()  # lays it out
    (legend,) = fig.legends
    inside = fig.bbox.bounds
    box = legend.get_window_extent()
    assert box.x0 >= inside[0] and box.x1 <= inside[0] + inside[2]  # the legend fits
    assert box.y1 <= fig.axes[0].get_window_extent().y0  # below the axes, covering nothing
    assert [t.get_text() for t in legend.get_texts()][:2] == ["seed=0", "seed=1"]

    with pytest.raises(SystemExit):
        main([str(runs[0]), str(tmp_path)])
    assert (
        f"not a reslab-train run dir (no .hydra/config.yaml): {tmp_path}" in capsys.readouterr().err
    )


def test_labels_write_values_as_the_command_line_does(tmp_path: Path) -> None:
    """`model.residual=false`, as it was typed, not Python's `False`."""
    runs = []
    for residual in (True, False):
        run_dir = tmp_path / f"residual-{residual}"
        (run_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(
            {"model": {"residual": residual, "depth": 8}}, run_dir / ".hydra" / "config.yaml"
        )
        OmegaConf.save([f"model.residual={str(residual).lower()}", "model.depth=8"],
                       run_dir / ".hydra" / "overrides.yaml")  # fmt: skip
        runs.append(run_dir)
    labels = runpy.run_path(str(SCRIPT))["labels"]
    assert labels(runs) == ["model.residual=true", "model.residual=false"]
