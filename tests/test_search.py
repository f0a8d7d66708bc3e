"""`hparams_search=cifar10_optuna` end to end: a real Optuna study over real training runs on
generated CIFAR data, in which a trial that diverges and one the run refuses are FAIL trials of
the study while a completed one is told its run's best validation error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers.runs import TINY
from omegaconf import OmegaConf

pytest.importorskip(
    "hydra_plugins.hydra_optuna_sweeper",
    reason="needs the search extra: pip install -e '.[search]'",
)
import optuna

from reslab.commands.train import main

# lr 1e4 diverges within a few steps, -1 is refused before compute, 0.05 trains. With the
# sampler seeded by seed=0, the three trials draw the three values (checked below).
LRS = {1e4: "NonFiniteLoss", -1: "ConfigError", 0.05: None}


def test_failed_trials_are_fail_and_completed_ones_return_their_final_val_error(
    cifar10_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hparams_search=cifar10_optuna",
        *TINY,
        "data.val_size=100",
        "trainer.max_steps=12",
        "trainer.log_every_n_steps=2",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.params={optimizer.lr:'choice(0.05,1e4,-1)'}",
        f"hydra.sweep.dir={sweep}",
    ]
    monkeypatch.setenv("DATA_DIR", str(cifar10_root))
    monkeypatch.setenv("RESLAB_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(sys, "argv", ["reslab-train", *args])
    with pytest.raises(SystemExit) as exit:
        main()
    stderr = capfd.readouterr().err
    # the search ran all its trials; the sweep then lists its two failed runs and exits 1
    assert exit.value.code == 1
    assert "reslab: 2 job(s) of the sweep did not complete" in stderr

    study = optuna.load_study(study_name="cifar10_optuna", storage=f"sqlite:///{sweep}/optuna.db")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert sorted(t.params["optimizer.lr"] for t in trials) == sorted(LRS)
    completed = []
    for trial in trials:
        (run_dir,) = sweep.glob(f"{trial.number}_*")
        overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        assert f"optimizer.lr={trial.params['optimizer.lr']}" in overrides
        record = json.loads((run_dir / "summary.json").read_text())
        error = LRS[trial.params["optimizer.lr"]]
        if error:
            assert trial.state == optuna.trial.TrialState.FAIL and trial.value is None
            assert record["status"] == "failed" and record["error"].startswith(error)
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert record["status"] == "completed" and record["steps"] == 12
            assert trial.value == pytest.approx(record["val_err"]["final"])
            assert record["test_err"] is None  # the search never looks at the test set
            completed.append(trial)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == pytest.approx(completed[0].value)
    assert results.best_params["optimizer.lr"] == 0.05
    # each trial's dir is named by its values, in 3 significant digits
    p = completed[0].params
    name = f"resnet-8_lr{p['optimizer.lr']:.3g}_wd{p['optimizer.weight_decay']:.3g}"
    assert (
        sweep / f"{completed[0].number}_{name}_ls{p['module.label_smoothing']:.3g}_seed0"
    ).is_dir()
