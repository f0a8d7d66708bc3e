"""`reslab-train`: check the config, build every object from it, fit, test, write the run
record."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from reslab import checkpoints, run_layout, run_record, stopping
from reslab.builders import build_datamodule, build_module, build_trainer
from reslab.cli import command
from reslab.loggers import ResumableCSVLogger
from reslab.preflight import check_built, check_config

log = logging.getLogger("reslab")


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """`ckpt_path` if given; with `resume=true`, this run dir's last checkpoint if any. Checked
    to be a complete Lightning checkpoint here; its architecture is checked as Lightning loads
    it."""
    if cfg.get("ckpt_path"):
        return str(checkpoints.check_lightning(cfg.ckpt_path, "ckpt_path"))
    last = run_layout.last_checkpoint(cfg.paths.output_dir)
    if cfg.get("resume") and last.is_file():
        return str(checkpoints.check_lightning(last, "resume=true: checkpoints/last.ckpt"))
    return None


@rank_zero_only
def print_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config as a tree at the start of the run, also saved as
    `<run dir>/config_tree.log` (`.hydra/config.yaml` keeps it unresolved)."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else value
        syntax = Syntax(str(text).strip(), "yaml", theme="ansi_dark", word_wrap=True)
        tree.add(str(key)).add(syntax)
    console = Console(record=True)
    console.print(tree)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_layout.config_tree(run_dir).write_text(console.export_text())


def build_run(cfg: DictConfig) -> tuple[L.Trainer, Any, Any]:
    """Trainer, DataModule (its files checked and read on the node's first process) and
    LightningModule, with the rules across them checked: every failure that can be found
    before compute is found here, before the config tree is printed."""
    L.seed_everything(cfg.seed, workers=True)
    trainer = build_trainer(cfg)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    if trainer.local_rank == 0:  # the others read the files once fit starts, as Lightning does
        datamodule.prepare_data()
        datamodule.setup("fit")
    check_built(trainer, datamodule, module)
    return trainer, datamodule, module


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and test) one run; returns its record, also written to `summary.json`. A stop
    signal (`reslab.stopping`) ends it with `last.ckpt` saved and the record saying
    `interrupted`."""
    try:
        try:
            stopping.raise_if_requested("starting")  # a sweep stopped before this job
            return _train(cfg)
        except SIGTERMException:
            # Lightning's own SIGTERM stop, from a signal in the moment before `StopOnSignal`
            # takes over its handler: after a batch, as ours.
            if (signum := stopping.requested()) is None:
                raise
            raise stopping.Stopped(signum, "training") from None
    except stopping.Stopped as stop:
        run_record.write_interrupted(cfg, stop)
        stop.advice = "continue it with resume=true"
        raise


def _train(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)
    done = run_record.finished_metrics(cfg.paths.output_dir, cfg.trainer.max_steps)
    if cfg.get("resume") and done is not None:
        log.info("%s already finished; skipping it (resume=true)", cfg.paths.output_dir)
        return done
    ckpt_path = resume_checkpoint(cfg)
    trainer, datamodule, module = build_run(cfg)
    if ckpt_path:  # another architecture's checkpoint is refused before the run starts
        stored = checkpoints.load(ckpt_path, "ckpt_path", weights_only=True)
        module.check_architecture(stored)
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.resume_at(stored["global_step"])
    print_config(cfg, Path(cfg.paths.output_dir))
    start = time.time()
    with stopping.deferred():
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        stopping.raise_if_requested("after training")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        tested = None
        if cfg.get("test"):
            # The final weights, unless validation is held out from training (run_record says
            # why).
            best = trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
            tested = run_record.tested_weights(run_record.val_is_test(datamodule), best or None)
            ckpt = best if tested[0] == "best" else None
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
            stopping.raise_if_requested("test")
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        record = run_record.write_completed(
            cfg, module, trainer, datamodule, time.time() - start, metrics, tested
        )
    if trainer.is_global_zero:
        log.info("summary: %s", json.dumps(record))
    return record


def optimized_value(cfg: DictConfig, record: dict[str, Any]) -> float | None:
    """The run's value of `optimized_metric` for a Hydra sweeper: a field of the run record,
    e.g. `val_err.final`. None (a failed trial for Optuna) for a number measured on the test
    set, the test error or a validation error when validation is the test set: a search on it
    would tune on the test set."""
    key = cfg.get("optimized_metric")
    if not key:
        return None
    on_test = key.startswith(("test_err", "metrics.test/"))
    if record.get("val_is_test", True) and key.startswith(("val_err", "metrics.val/")):
        on_test = True
    if on_test:
        log.warning(
            "optimized_metric=%s is measured on the test set; no value is returned (tune on a "
            "held-out split: data.val_size=5000 optimized_metric=val_err.final)",
            key,
        )
        return None
    value = OmegaConf.select(OmegaConf.create(record), key)
    return float(value) if value is not None else None


def _task(cfg: DictConfig) -> float | None:
    return optimized_value(cfg, train(cfg))


main = command("train")(_task)

if __name__ == "__main__":
    main()
