"""`reslab-train`: check the config, build every object from it, fit, test, write the run
record."""

from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf

from reslab.checks.preflight import check_built, check_config
from reslab.commands.task import command
from reslab.runs import checkpoints
from reslab.runs import layout as run_layout
from reslab.runs import record as run_record
from reslab.runs.dirs import expand_resume, shown
from reslab.training import stopping
from reslab.training.builders import CHOICES, build_datamodule, build_module, build_trainer
from reslab.training.callbacks import duration
from reslab.training.distributed import lost_process_named
from reslab.training.loggers import ResumableCSVLogger

log = logging.getLogger("reslab")
YAML = {"True": "true", "False": "false", "None": "null"}


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
    """The resolved config as a YAML tree in `<run dir>/config_tree.log` (`.hydra/config.yaml`
    keeps it unresolved), and on screen what the run chose: its groups' options, the
    command line's overrides, and where the tree is."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        node = value if isinstance(value, DictConfig | ListConfig) else OmegaConf.create([value])
        text = OmegaConf.to_yaml(node, resolve=True)
        text = text if node is value else text.removeprefix("- ")
        tree.add(str(key)).add(Syntax(text.strip(), "yaml", theme="ansi_dark", word_wrap=True))
    console = Console(file=io.StringIO(), width=160, record=True)  # paths unwrapped
    console.print(tree)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_layout.config_tree(run_dir)
    saved.write_text(console.export_text())
    runtime = HydraConfig.get() if HydraConfig.initialized() else None
    chosen = (runtime.runtime.choices if runtime else {}).items()
    choices = {k: v for k, v in reversed(chosen) if not k.startswith("hydra") and v is not None}
    first = {group: i for i, group in enumerate(CHOICES)}  # model, data, augmentation, ...
    choices = dict(sorted(choices.items(), key=lambda kv: first.get(kv[0], len(first))))
    lines = ["config: " + " ".join(f"{k}={v}" for k, v in choices.items())]
    if runtime and runtime.overrides.task:
        # A sweep's jobs get their values back from Hydra as Python writes them (`False`).
        typed = (re.sub(r"=(True|False|None)$", lambda m: "=" + YAML[m[1]], o)
                 for o in runtime.overrides.task)  # fmt: skip
        lines.append("  overrides: " + " ".join(typed))
    lines.append(f"  full config: {shown(saved)}")
    log.info("%s", "\n".join(lines))


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
    signal (`reslab.training.stopping`) ends it with `last.ckpt` saved and the record saying
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
        stop.advice = f"continue it with {resume_option(cfg)}"
        raise


def _train(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)
    done = run_record.finished_metrics(
        cfg.paths.output_dir, cfg.trainer.max_steps, cfg.trainer.get("max_epochs", -1)
    )
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
    with stopping.deferred(), lost_process_named(trainer, resume_option(cfg)):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        stopping.raise_if_requested("after training", trainer)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        tested = None
        if cfg.get("test"):
            # The final weights, unless validation is held out from training (run_record says
            # why).
            best = trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
            tested = run_record.tested_weights(run_record.val_is_test(datamodule), best or None)
            ckpt = best if tested[0] == "best" else None
            # The outcome line says the test error; Lightning's table mixes units.
            trainer.test(
                module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False
            )
            stopping.raise_if_requested("test", trainer)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        record = run_record.write_completed(
            cfg, module, trainer, datamodule, time.time() - start, metrics, tested
        )
    if trainer.is_global_zero:
        log.info("%s", outcome(record, Path(cfg.paths.output_dir)))
    return record


def resume_option(cfg: DictConfig) -> str:
    """What continues this run from its `last.ckpt`, as the user types it."""
    return f"resume={shown(Path(cfg.paths.output_dir))}"


def outcome(record: dict[str, Any], run_dir: Path) -> str:
    """The end of a run in a few lines: what it gave, where it is, what to run next (the whole
    record is in `summary.json`)."""
    run_dir = shown(run_dir)
    scores = []
    if record.get("test_err") is not None:
        scores.append(f"test err {record['test_err']:.2f}% ({record['test_weights']} weights)")
    if (record.get("val_err") or {}).get("final") is not None:
        scores.append(f"val err {record['val_err']['final']:.2f}%")
    checkpoint = (
        run_layout.best_checkpoint
        if record.get("test_weights") == "best"
        else (run_layout.last_checkpoint)
    )
    return "\n".join(
        [
            f"{record['run_name']} completed: {record['steps']} steps in "
            f"{duration(record['wall_time_s'])}; " + (", ".join(scores) or "not validated"),
            f"  run dir   {run_dir} ({run_layout.SUMMARY}, {run_layout.CHECKPOINTS}/, "
            f"{run_layout.CSV}/)",
            f"  evaluate  reslab-eval ckpt_path={checkpoint(run_dir)}",
            f"  continue  reslab-train resume={run_dir} trainer.max_steps=<more steps>",
        ]
    )


def optimized_value(cfg: DictConfig, record: dict[str, Any]) -> float | None:
    """The run's value of `optimized_metric` for a Hydra sweeper: a field of the run record,
    e.g. `val_err.final` (checked to name a number before the run: `reslab.checks.preflight`).
    None (a failed trial for Optuna) for a number measured on the test
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
    return float(value) if isinstance(value, int | float) else None


def _task(cfg: DictConfig) -> float | None:
    return optimized_value(cfg, train(cfg))


main = command("train", argv=expand_resume)(_task)

if __name__ == "__main__":
    main()
