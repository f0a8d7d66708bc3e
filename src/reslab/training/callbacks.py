"""Lightning callbacks that the library does not have."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EMAWeightAveraging,
    ModelCheckpoint,
    ModelSummary,
    ProgressBar,
    RichModelSummary,
    RichProgressBar,
)
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from reslab.errors import ConfigError, ReslabError
from reslab.runs import layout as run_layout
from reslab.runs.checkpoints import AtomicCheckpointIO
from reslab.training import stopping
from reslab.training.distributed import shares_a_terminal
from reslab.training.scores import TRAIN_ERR, TRAIN_ERR_EPOCH, TRAIN_ERR_STEP, TRAIN_LOSS, VAL_ERR

log = logging.getLogger("reslab")


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` after every validation (or every `every_n_train_steps`), when training ends,
    and when a stop signal arrives (`StopOnSignal` asks for it).

    Lightning's own pieces do not add up to this: `save_last` refreshes `last.ckpt` only when a
    monitored top-k file is written (a run whose best epoch is early would resume from there);
    `save_on_exception` would also save the weights of a run stopped for diverging. Writes go
    through `reslab.runs.checkpoints.AtomicCheckpointIO`. `_last_global_step_saved` is
    ModelCheckpoint's own record of its last save (no public accessor), shared with its
    periodic saves so a step is never written twice.

    Lightning logs a step's metrics, and an epoch's validation and training scores, after the
    hooks that save, and a resumed run starts after the checkpoint's step: so a save is held
    (`AtomicCheckpointIO.held`) and written as the next batch or epoch starts, when training
    ends, or when a stop signal ends the run, once those rows are in `metrics.csv`. A crash
    before that leaves the previous `last.ckpt`, from which the resumed run logs the steps
    again."""

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=run_layout.LAST,  # resume reads this name (reslab.runs.layout)
            monitor=None,
            save_top_k=1,
            every_n_train_steps=every_n_train_steps,
            # Always this one file: a run resumed from a last.ckpt that `save_now` wrote (which
            # ModelCheckpoint's top-k record does not list), or ModelCheckpoint's own save at an
            # epoch's end, wrote last-v1.ckpt beside it.
            enable_version_counter=False,
        )
        self.save_for_stop = False  # set by StopOnSignal for this batch's end
        self._stop_step: int | None = None  # the step of the save for a stop, until written
        # A save is held, on every rank (rank 0 alone writes, so only it holds the bytes).
        self._unwritten = False

    @property
    def path(self) -> Path:
        return Path(self.dirpath, f"{self.filename}{self.FILE_EXTENSION}")

    def save_now(self, trainer: L.Trainer) -> None:
        # Lightning's rule: not twice for one step, nor with fast_dev_run; but a held save of
        # this step is not on disk yet, and a new one holds what came after it (validation:
        # the best checkpoint's record, the plateau schedule).
        if self._unwritten or not self._should_skip_saving_checkpoint(trainer):
            trainer.save_checkpoint(self.path, weights_only=False)
            self._last_global_step_saved = trainer.global_step
            self.last_model_path = str(self.path)

    @staticmethod
    def _writer(trainer: L.Trainer) -> AtomicCheckpointIO | None:
        writer = trainer.strategy.checkpoint_io
        return writer if isinstance(writer, AtomicCheckpointIO) else None

    @contextlib.contextmanager
    def _held(self, trainer: L.Trainer) -> Iterator[None]:
        writer = self._writer(trainer)
        if writer is None:
            yield
            return
        saved = self._last_global_step_saved
        with writer.held():
            yield
        self._unwritten |= self._last_global_step_saved != saved

    def _commit(self, trainer: L.Trainer) -> None:
        if writer := self._writer(trainer):
            writer.commit()
        if self._unwritten and trainer.is_global_zero:
            # As ModelCheckpoint does after a save, now that the file is there (W&B's
            # `log_model=all` uploads it).
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
        self._unwritten = False

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._commit(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._commit(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        with self._held(trainer):
            super().on_train_batch_end(trainer, *args, **kwargs)
            if self.save_for_stop:
                self.save_now(trainer)
                self.save_for_stop = False
                self._stop_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with self._held(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # ModelCheckpoint saves here only without `every_n_train_steps`; `last.ckpt` is
        # promised after every validation either way (not during the sanity check). Not after
        # the fit's last validation: `on_train_end` saves that step, once Lightning has moved
        # its logging step counter; a save from here holds the counter before, which a run
        # resumed from the fit's last save does not add back (it logged its steps one off).
        if trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step:
            return
        with self._held(trainer):
            super().on_validation_end(trainer, pl_module)
            self.save_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with self._held(trainer):
            self.save_now(trainer)
        self._commit(trainer)  # at once: the fit's last rows are logged

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # A stop ends the run as a batch starts, the stopped batch's rows logged; any other
        # exception may come between a save and its rows.
        if isinstance(exception, stopping.Stopped):
            self._commit(trainer)
            if self._stop_step is not None:
                log.warning(
                    "saved %s at step %d; continue with resume=true in this run dir",
                    self.path,
                    self._stop_step,
                )
        elif writer := self._writer(trainer):
            writer.discard()
        self._stop_step, self._unwritten = None, False
        super().on_exception(trainer, pl_module, exception)


class StopOnSignal(Callback):
    """Takes a stop signal (`reslab.training.stopping`) where the run's state is whole, so the
    run ends with `last.ckpt` at the step it stopped and `metrics.csv` holding exactly the steps
    before it.

    In training, after a batch that neither ends the epoch nor is followed by validation:
    `LastCheckpoint` saves `last.ckpt` at the batch's end (after the other callbacks, so it holds
    their state of the step: EMA's average, the warm-up), the batch's metrics are logged, and
    the run stops as the next batch starts, before any callback logs for it. A checkpoint at an
    epoch's end would not do: Lightning, resuming from it, skips that epoch's validation and
    epoch metrics. A stop during validation or an epoch's end waits for the next such batch
    (one validation at most). In a test or sanity check, at the next batch; the test runs again
    on resume. Under DDP the ranks agree after each training batch (`stopping.requested`), and
    a test or sanity check is not cut short: their ranks may run different numbers of batches,
    so the stop comes once the test ends, or after the first training batch. First in the
    Trainer's callbacks (`reslab.training.builders.build_trainer`)."""

    def __init__(self) -> None:
        self._stop_next_batch = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop_next_batch = False

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopping.take_over()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopping.take_over()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopping.take_over()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if self._stop_next_batch or stopping.requested(trainer) is None:
            return
        loop = trainer.fit_loop.epoch_loop
        every = trainer.val_check_batch
        validates = isinstance(every, int) and every > 0 and (i + 1) % every == 0
        if loop.batch_progress.is_last_batch or validates or loop.done:
            return
        for callback in trainer.callbacks:
            if isinstance(callback, LastCheckpoint):
                callback.save_for_stop = True
        self._stop_next_batch = True

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self._stop_next_batch:
            stopping.raise_if_requested("training")

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.sanity_checking and trainer.world_size == 1:
            stopping.raise_if_requested("sanity check")

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.world_size == 1:
            stopping.raise_if_requested("test")


class NonFiniteLoss(ReslabError):
    """The training loss became NaN or infinite."""


class FiniteLoss(Callback):
    """Stop at the first NaN/Inf training loss, weight or BN statistic, naming the step,
    before any checkpoint of the diverged weights is written, so the last good checkpoint
    stays.

    Each step's loss is checked on the device, which keeps the first bad step. The host reads
    that, and checks the weights and buffers, every `trainer.log_every_n_steps` steps (when
    Lightning reads the logged metrics anyway), before every checkpoint and at the end of
    training: reading every step would make the host wait for each step to finish, idling a
    GPU while Python prepares the next. Diverged weights make the next loss NaN, so they are
    caught a step later; BN running statistics (unused by training-mode passes) at the next
    read.
    """

    def __init__(self) -> None:
        self._first_bad: dict[str, Tensor] = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):
            self._note(loss.detach().float(), trainer)
        every = trainer.log_every_n_steps
        if every and trainer.global_step % every == 0:
            self._check(trainer, pl_module)

    def _note(self, loss: Tensor, trainer: L.Trainer) -> None:
        """Keep the step, epoch and value of the first non-finite loss, on the device."""
        if not self._first_bad:
            never = torch.full_like(loss, -1, dtype=torch.int64)
            self._first_bad = {"step": never, "epoch": never, "loss": loss}
        first = ~torch.isfinite(loss) & (self._first_bad["step"] < 0)
        for key, now in (("step", trainer.global_step), ("epoch", trainer.current_epoch)):
            self._first_bad[key] = torch.where(first, now, self._first_bad[key])
        self._first_bad["loss"] = torch.where(first, loss, self._first_bad["loss"])

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._first_bad and self._first_bad["step"] >= 0:
            step, epoch, loss = (self._first_bad[k].item() for k in ("step", "epoch", "loss"))
            what = f"training loss is {loss}"
        elif not torch.isfinite(_largest_magnitude(pl_module)):
            step, epoch = trainer.global_step, trainer.current_epoch
            what = "the weights or BN statistics are not finite"
        else:
            return
        last = [c.path for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
        if last and last[0].is_file():
            kept = f"the last good checkpoint is {last[0]}"
        else:
            kept = "no checkpoint was written before it"
        raise NonFiniteLoss(
            f"{what} at step {step} (epoch {epoch}); {kept}; lower optimizer.lr or check the data"
        )


def _largest_magnitude(module: torch.nn.Module) -> torch.Tensor:
    """max |x| over the float weights and buffers, in fused kernels with one device sync (a
    check per tensor costs hundreds of syncs a step on a GPU); NaN and Inf propagate."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return torch.nn.utils.get_total_norm(tensors, norm_type=math.inf)


class LossProgressBar(RichProgressBar):
    """Lightning's Rich progress bar with the latest training loss, read at most
    `READS_PER_SECOND` times a second.

    Each read makes the host wait for the device: reading every step would idle a GPU
    between steps. A fast run pays a bounded wait; a slow one (the CPU) sees every loss.
    """

    READS_PER_SECOND = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._latest: Tensor | None = None
        self._shown, self._read_at = "", -math.inf

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self._latest = loss if isinstance(loss, Tensor) else None
        super().on_train_batch_end(trainer, pl_module, outputs, *args)
        if self.progress is not None and trainer.max_steps > 0:
            self.progress.update(self.train_progress_bar_id, completed=trainer.global_step)

    @property
    def total_train_batches(self) -> int | float:
        """The bar spans the run (max_steps), not the epoch, so a resumed run shows where it is."""
        steps = self.trainer.max_steps
        return steps if steps > 0 else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        # Lightning's says "Epoch 3/-2" for a run bounded by max_steps (max_epochs=-1).
        return f"Epoch {current_epoch}"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        now = time.monotonic()
        if self._latest is not None and now - self._read_at >= 1 / self.READS_PER_SECOND:
            self._shown, self._read_at = f"{self._latest.item():.3f}", now
        if self._shown:
            metrics[TRAIN_LOSS] = self._shown
        return metrics


class ProgressLines(ProgressBar):
    """Progress as log lines (stdout and `train.log`) every `every_s` seconds, and after each
    validation, for runs whose stdout is no terminal (nohup, tee, SLURM, CI), where a live bar
    shows nothing until the run ends:

        step 1200/64000 (epoch 3): loss 0.853, train err 28.1%, 2,450 img/s, 41m 10s left

    Each line reads the loss from the device once; the training error is the mean of the
    last logging window (`train/err_step`) once there is one."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s, self.enabled = every_s, True
        self._at, self._step, self._images = 0.0, 0, 0

    def disable(self) -> None:  # Lightning disables the bar on every rank but the first
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._at, self._step, self._images = time.monotonic(), trainer.global_step, 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._images += len(batch[-1]) * trainer.world_size
        now = time.monotonic()
        if not self.enabled or now - self._at < self.every_s:
            return
        steps, total = trainer.global_step, trainer.estimated_stepping_batches
        rate = (steps - self._step) / (now - self._at)
        parts = []
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):
            parts.append(f"loss {loss.item():.3f}")
        err = trainer.callback_metrics.get(TRAIN_ERR_STEP)
        if err is not None:
            parts.append(f"train err {float(err):.1f}%")
        parts.append(f"{self._images / (now - self._at):,.0f} img/s")
        if rate > 0 and math.isfinite(total):
            parts.append(f"{duration((total - steps) / rate)} left")
        total_text = f"/{int(total)}" if math.isfinite(total) else ""
        log.info("step %d%s (epoch %d): %s", steps, total_text, trainer.current_epoch,
                 ", ".join(parts))  # fmt: skip
        self._at, self._step, self._images = now, steps, 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        err = trainer.callback_metrics.get(VAL_ERR)
        if self.enabled and not trainer.sanity_checking and err is not None:
            log.info("step %d (epoch %d): val err %.2f%%", trainer.global_step,
                     trainer.current_epoch, float(err))  # fmt: skip


def duration(seconds: float) -> str:
    """`1h 02m`, `4m 10s`, `9s`."""
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m" if hours else f"{m}m {s:02d}s" if m else f"{s}s"


def own_terminal() -> bool:
    """Whether stdout is a terminal this run has to itself: not a file or pipe (nohup, SLURM,
    CI), nor one the jobs of a local sweep share, where live drawings overwrite each other."""
    return sys.stdout.isatty() and not shares_a_terminal()


def model_summary(max_depth: int = 1) -> ModelSummary:
    """Rich's table of the model's layers in a terminal of its own; elsewhere Lightning's plain
    one, logged: with the run's name on the console (the jobs of a local sweep share one) and
    into `train.log` (nohup, SLURM)."""
    if own_terminal():
        return RichModelSummary(max_depth=max_depth)
    return ModelSummary(max_depth=max_depth)


def progress_bar(every_s: float = 30.0) -> ProgressBar:
    """The live bar in a terminal; progress lines every `every_s` seconds elsewhere, and in
    the jobs of a sweep that run at once, whose live bars would overwrite each other (each
    line carries its run's name)."""
    if own_terminal():
        return LossProgressBar()
    return ProgressLines(every_s)


class ErrorWarmup(Callback):
    """He et al. 2015, ResNet-110: train at `lr` until the training error drops below
    `until_train_err` percent (about 400 iterations), then at the optimizer's own lr. A
    scheduler cannot express this because the switch depends on a metric, not on the step.

    The lr is scaled rather than overwritten, so the configured scheduler keeps running
    underneath; `enabled=false` makes it a no-op (e.g. for depths that need no warm-up).
    """

    def __init__(self, lr: float = 0.01, until_train_err: float = 80.0, enabled: bool = True):
        if lr <= 0:
            raise ConfigError(f"callbacks.lr_warmup.lr={lr} must be positive (the paper: 0.01)")
        self.lr, self.until_train_err = lr, until_train_err
        self.state = {"applied": False, "done": not enabled, "scale": 1.0, "ended_at": None}

    def _scale(self, trainer: L.Trainer, factor: float) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= factor

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # On resume the optimizer state already holds the warm-up lr.
        if self.state["done"] or self.state["applied"]:
            return
        scale = self.lr / trainer.optimizers[0].param_groups[0]["lr"]
        self._scale(trainer, scale)
        self.state.update(applied=True, scale=scale)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        """Reads the step's training error (a host sync per step, during the warm-up only)."""
        if self.state["done"]:
            return
        err = outputs.get("err") if isinstance(outputs, dict) else None
        if err is not None and float(err) < self.until_train_err:
            self._scale(trainer, 1.0 / self.state["scale"])
            self.state.update(done=True, ended_at=trainer.global_step)
            log.info("lr warm-up ends at step %d (train error %.1f%%)", trainer.global_step, err)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.state.update(state_dict)


class ErrorTracker(Callback):
    """Best (lowest) and final `train/err` (after every training epoch) and `val/err` (after
    every validation), for the run's summary, which keeps the best `val/err` only where
    validation is held out from training; Lightning only keeps the monitored best."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {TRAIN_ERR: [], VAL_ERR: []}
        self.fit_result: dict[str, dict[str, float | None]] | None = None

    def _record(self, trainer: L.Trainer, key: str, logged_as: str) -> None:
        value = trainer.callback_metrics.get(logged_as)
        if value is not None and not trainer.sanity_checking:
            self.history[key].append(float(value))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, TRAIN_ERR, TRAIN_ERR_EPOCH)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, VAL_ERR, VAL_ERR)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # `trainer.test(ckpt_path="best")` restores this state from that checkpoint: keep the
        # result of the whole fit.
        self.fit_result = self.best_and_final()

    def best_and_final(self) -> dict[str, dict[str, float | None]]:
        return {
            k: {"best": min(v) if v else None, "final": v[-1] if v else None}
            for k, v in self.history.items()
        }

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history.update(state_dict.get("history", {}))


class WallTime(Callback):
    """The training time of the earlier segments of a resumed run (each start or resume),
    each up to its last checkpoint (a segment's time after that was lost with its work), so
    the record keeps the total and its segments. Saved in every checkpoint; restored only when
    a fit continues (`trainer.test` of `best.ckpt` restores callback states too)."""

    def __init__(self) -> None:
        self.previous: list[float] = []
        self._loaded: list[float] = []
        self._start: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.previous, self._start = list(self._loaded), time.monotonic()

    def state_dict(self) -> dict[str, Any]:
        now = [] if self._start is None else [round(time.monotonic() - self._start, 2)]
        return {"segments_s": [*self.previous, *now]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = list(state_dict.get("segments_s", []))


class EMA(EMAWeightAveraging):
    """Lightning's EMA of the weights (validated, and saved as `state_dict` of every checkpoint,
    so `best.ckpt`, `test` and `reslab-eval` use the average; the raw weights ride along for
    resuming), with three fixes to Lightning 2.6's callback:

    - the average lives on the training device: Lightning copies the module in the `setup`
      hook, before the strategy moves it there, so a GPU run kept it on the CPU;
    - the module takes the average when the fit ends, not at `on_train_end`, which runs before
      `last.ckpt` is written there: that file then held the average as the raw weights too, and
      a run continued from it restarted from the average;
    - `trainer.test(ckpt_path=...)` after a fit tests the averaged weights: Lightning reloaded
      the raw ones into the module there."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._device = self._device or trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Training state stays raw until every checkpoint of the fit is written."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class ValidateAtEnd(Callback):
    """Every run validates at its end as well as on its schedule, so each run dir has a
    validation error and a `best.ckpt`, runs shorter than an epoch (`debug=fast`) included.
    After the last optimizer step it asks Lightning to stop, which validates a stop it is asked
    for (as for early stopping), in an epoch it would not validate too."""

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        last_step = 0 < trainer.max_steps <= trainer.global_step
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        last_epoch = 0 < (trainer.max_epochs or 0) <= trainer.current_epoch + 1
        if last_step or (last_epoch and last_batch):
            if trainer.check_val_every_n_epoch is not None:
                trainer.check_val_every_n_epoch = 1
            trainer.should_stop = True
