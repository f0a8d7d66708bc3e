"""EMA of the weights (`callbacks=[default,ema]`): validation, `best.ckpt`, the test after
fitting and `reslab-eval` see the average; a resumed run continues the same average."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.runs import QUIET, compose_run

from reslab.commands.eval import evaluate
from reslab.commands.train import train
from reslab.training.builders import build_datamodule, build_module, build_net, build_trainer
from reslab.training.callbacks import EMA
from reslab.training.classifier import ImageClassifier

EMA_ON = [*QUIET, "callbacks=[default,ema]", "callbacks.ema.decay=0.7"]


def val_loss(cfg, state: dict[str, torch.Tensor]) -> float:
    """The validation loss of the network weights `state` (`net.*` keys) on the run's data."""
    net = build_net(cfg)
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        precision=cfg.trainer.precision,  # as the run validated
    )  # fmt: skip
    data = build_datamodule(cfg)
    return trainer.validate(ImageClassifier(net), datamodule=data, verbose=False)[0]["val/loss"]


def test_validation_best_ckpt_test_and_eval_use_the_average(
    cifar10_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    cfg = compose_run(run_dir, cifar10_root, [*EMA_ON, "trainer.max_steps=20"])
    record = train(cfg)
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)
    average, raw = best["state_dict"], best["current_model_state"]
    assert best["averaging_state"]["n_averaged"] == best["global_step"]
    assert not torch.equal(average["net.fc.weight"], raw["net.fc.weight"])
    averaged_loss, raw_loss = val_loss(cfg, average), val_loss(cfg, raw)
    assert averaged_loss != pytest.approx(raw_loss, rel=1e-3)

    # The validation logged at the best checkpoint's step was of the averaged weights.
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["val/loss"]]
    logged = {int(r["epoch"]): float(r["val/loss"]) for r in rows}
    assert len(logged) == 2
    assert logged[best["epoch"]] == pytest.approx(averaged_loss, rel=1e-5)

    # The test set is the validation set here (data.val_size=0): the test after fitting scores
    # the final average, as the last validation did, and reslab-eval of best.ckpt its average
    # (best.ckpt tested after a held-out fit: tests/test_test_weights.py).
    assert record["test_weights"] == "final"
    assert record["metrics"]["test/loss"] == pytest.approx(logged[max(logged)], rel=1e-5)
    eval_dir = tmp_path / "eval"
    eval_cfg = compose_run(
        eval_dir, cifar10_root, [f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}"], "eval"
    )
    assert evaluate(eval_cfg)["test/loss"] == pytest.approx(averaged_loss, rel=1e-5)
    assert json.loads((eval_dir / "metrics.json").read_text())["test/loss"] == pytest.approx(
        averaged_loss, rel=1e-5
    )


def test_a_resumed_run_continues_the_same_average(cifar10_root: Path, tmp_path: Path) -> None:
    """8 steps, then 8 more on resume (mid-epoch both times) equal 16 steps in one go: the
    raw weights, the average and its update count."""
    args = [*EMA_ON, "test=false"]
    full, split = tmp_path / "full", tmp_path / "split"
    train(compose_run(full, cifar10_root, [*args, "trainer.max_steps=16"]))
    train(compose_run(split, cifar10_root, [*args, "trainer.max_steps=8"]))
    train(compose_run(split, cifar10_root, [*args, "trainer.max_steps=16", "resume=true"]))
    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(split / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 16
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    average, raw = a["state_dict"]["net.fc.weight"], a["current_model_state"]["net.fc.weight"]
    assert not torch.equal(average, raw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_average_lives_on_the_training_device(cifar10_root: Path, tmp_path: Path) -> None:
    cfg = compose_run(tmp_path, cifar10_root, [*EMA_ON, "trainer=gpu", "trainer.max_steps=2"])
    trainer = build_trainer(cfg)
    trainer.fit(build_module(cfg), datamodule=build_datamodule(cfg))
    (ema,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
    assert {p.device.type for p in ema._average_model.parameters()} == {"cuda"}
