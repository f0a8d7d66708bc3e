"""Which weights a run's test error is of. By default validation is the test set, so the run
reports its final weights; only with a validation split held out from training
(`data.val_size` > 0) is `best.ckpt` tested. The record says which, `reslab-report` and
`scripts/compare_runs.py` apply the same rule (to records written before it too), and no
search optimises a number measured on the test set."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from helpers.runs import QUIET, compose_run
from omegaconf import OmegaConf

from reslab.commands.eval import evaluate
from reslab.commands.report import Run, markdown_table, table_rows, weights_note
from reslab.commands.train import optimized_value, train
from reslab.runs import record as run_record

ROOT = Path(__file__).parents[1]
# Two epochs of 10 batches (validation after each, the last on the final weights); best.ckpt
# keeps the first validation's weights (the lowest step), so it is never the final weights.
FIT = [*QUIET, "trainer.max_steps=20", "callbacks.model_checkpoint.monitor=step"]


@pytest.fixture(scope="module")
def runs(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A default run (validation on the test set) and one with 100 images held out."""
    out = {}
    for name, extra in (("default", []), ("held_out", ["data.val_size=100"])):
        run_dir = tmp_path_factory.mktemp(name)
        cfg = compose_run(run_dir, cifar10_root, [*FIT, *extra])
        train(cfg)
        (run_dir / ".hydra").mkdir()
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as Hydra's job runner does
        out[name] = run_dir
    return out


def ckpt_test_loss(run_dir: Path, data_dir: Path, ckpt: str) -> float:
    """The test loss of one of the run's checkpoints, by `reslab-eval`."""
    eval_dir = run_dir.parent / f"{run_dir.name}_eval_{ckpt}"
    path = run_dir / "checkpoints" / f"{ckpt}.ckpt"
    return evaluate(compose_run(eval_dir, data_dir, [f"ckpt_path={path}"], "eval"))["test/loss"]


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_a_default_run_reports_the_final_weights(runs: dict[str, Path], cifar10_root: Path):
    r = record(runs["default"])
    assert r["val_is_test"] is True and r["test_weights"] == "final"
    assert r["test_weights_why"].startswith("validation is the test set")
    # no best validation error: it would be a minimum over test evaluations
    assert set(r["val_err"]) == {"final"} and set(r["train_err"]) == {"best", "final"}
    final = ckpt_test_loss(runs["default"], cifar10_root, "last")
    best = ckpt_test_loss(runs["default"], cifar10_root, "best")
    assert r["metrics"]["test/loss"] == pytest.approx(final, rel=1e-5)
    assert r["metrics"]["test/loss"] != pytest.approx(best, rel=1e-3)
    # the last validation ran on the final weights, on the same images
    assert r["test_err"] == pytest.approx(r["val_err"]["final"])
    assert run_record.reported_test_error(r) == (r["test_err"], "final")


def test_a_held_out_split_tests_best_ckpt_and_says_so(runs: dict[str, Path], cifar10_root: Path):
    r = record(runs["held_out"])
    assert r["val_is_test"] is False and r["test_weights"] == "best"
    assert "held out from training" in r["test_weights_why"]
    assert set(r["val_err"]) == {"best", "final"}
    best = ckpt_test_loss(runs["held_out"], cifar10_root, "best")
    final = ckpt_test_loss(runs["held_out"], cifar10_root, "last")
    assert r["metrics"]["test/loss"] == pytest.approx(best, rel=1e-5)
    assert r["metrics"]["test/loss"] != pytest.approx(final, rel=1e-3)
    assert run_record.reported_test_error(r) == (r["test_err"], "best")


def test_report_and_compare_runs_say_whose_weights(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = [
        Run(d, OmegaConf.to_container(OmegaConf.load(d / ".hydra" / "config.yaml")), record(d))
        for d in runs.values()
    ]
    assert [(r.error, r.weights) for r in loaded] == [
        (record(d)["test_err"], w) for d, w in zip(runs.values(), ("final", "best"), strict=True)
    ]
    assert weights_note(loaded) == (
        "\nTest error: of the final weights (1 run), of the checkpoint with the lowest error on "
        "a validation split held out from training (1 run).\n"
    )
    main = runpy.run_path(str(ROOT / "scripts" / "compare_runs.py"))["main"]
    main([str(runs["default"]), str(runs["held_out"])])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| data.val_size")]
    default, held_out = record(runs["default"]), record(runs["held_out"])
    # validation on the test set: no validation columns, the final weights' test error
    assert f"|  |  | final | {default['test_err']:.2f} |" in rows[0]
    val = held_out["val_err"]
    assert (
        f"| {val['final']:.2f} | {val['best']:.2f} | best | {held_out['test_err']:.2f} |" in rows[1]
    )


def test_a_record_from_before_the_rule_reports_its_final_validation() -> None:
    """Such records tested best.ckpt, chosen on the test set; their final validation ran on the
    final weights at the end of training."""
    old = json.loads(
        (ROOT / "docs/results/resnet20_cifar10/summaries/device_bf16_seed0.json").read_text()
    )
    assert "test_weights" not in old and old["test_err"] == old["val_err"]["best"]
    assert old["val_err"]["best"] < old["val_err"]["final"]
    on_test = {"data": {"val_size": 0}}
    assert run_record.reported_test_error(old, on_test) == (old["val_err"]["final"], "final")
    assert run_record.reported_test_error(old, {"data": {}}) == (old["val_err"]["final"], "final")
    held_out = {"data": {"val_size": 5000}}
    assert run_record.reported_test_error(old, held_out) == (old["test_err"], "best")


def test_the_committed_degradation_table_follows_the_rule() -> None:
    """docs/results/cifar10_degradation_quick/table.md is what reslab-report derives from the
    committed records (validation on the test set, data.val_size=0)."""
    folder = ROOT / "docs/results/cifar10_degradation_quick"
    loaded = []
    for path in sorted((folder / "summaries").glob("*.json")):
        summary = json.loads(path.read_text())
        model = {"depth": summary["depth"], "residual": summary["residual"]}
        loaded.append(Run(path.parent, {"model": model, "data": {"val_size": 0}}, summary))
    text = markdown_table(table_rows(loaded)) + weights_note(loaded)
    assert (folder / "table.md").read_text().startswith(text)
    assert "of the final weights (8 runs)" in text


def test_no_search_optimises_a_number_measured_on_the_test_set() -> None:
    train_cfg = OmegaConf.load(ROOT / "configs" / "train.yaml")
    assert train_cfg.optimized_metric is None  # a run returns a value only when asked
    search = OmegaConf.load(ROOT / "configs" / "hparams_search" / "cifar10_optuna.yaml")
    assert search.optimized_metric == "val_err.final" and search.data.val_size > 0
    assert search.test is False

    def value(key: str, val_is_test: bool) -> float | None:
        rec = {"val_is_test": val_is_test, "val_err": {"final": 3.0}, "test_err": 2.0}
        return optimized_value(OmegaConf.create({"optimized_metric": key}), rec)

    assert value("val_err.final", val_is_test=False) == 3.0
    assert value("val_err.final", val_is_test=True) is None
    assert value("test_err", val_is_test=False) is None
    assert optimized_value(OmegaConf.create({"optimized_metric": None}), {}) is None


def test_a_held_out_ema_run_tests_the_average_of_best_ckpt(cifar10_root: Path, tmp_path: Path):
    """`callbacks=[default,ema]`: `trainer.test(ckpt_path=best)` after the fit scores the
    checkpoint's average (Lightning's callback reloaded the raw weights there)."""
    args = [*FIT, "data.val_size=100", "callbacks=[default,ema]", "callbacks.ema.decay=0.7"]
    r = train(compose_run(tmp_path / "run", cifar10_root, args))
    assert r["test_weights"] == "best"
    best = ckpt_test_loss(tmp_path / "run", cifar10_root, "best")
    assert r["metrics"]["test/loss"] == pytest.approx(best, rel=1e-5)
