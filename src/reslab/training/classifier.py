"""The LightningModule `ImageClassifier`: cross-entropy training of any `nn.Module` that maps
images to logits, with errors summed on the device (`reslab.training.scores.Scores`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

import lightning as L
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from reslab.errors import ConfigError
from reslab.training.schedules import LRSchedule
from reslab.training.scores import NAMES, VAL_ERR, BatchScores, Scores, metric_key

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]


def param_groups(net: nn.Module, weight_decay_bn_bias: bool) -> list[dict[str, Any]]:
    """All parameters in one group, or BN weights and biases (every 1-d tensor) in a
    second group without weight decay."""
    if weight_decay_bn_bias:
        return [{"params": list(net.parameters())}]
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class ImageClassifier(L.LightningModule):
    """Cross-entropy training with top-1/top-5 accuracy; error (%) = 100 - top-1 accuracy.

    `optimizer` is a partial taking the parameter groups; `scheduler` an `LRSchedule` (the torch
    scheduler, its interval and warm-up), whose length is the trainer's real run length.
    `channels_last` (None: on for CUDA, where NHWC convolutions are faster; off on the CPU) and
    `compile` (torch.compile; it pays back on long runs) are speed switches that leave the
    state_dict unchanged.

    Scores are summed on the device batch by batch (`Scores`, a torchmetrics metric) and
    logged only on Lightning's logging steps (`train/*_step`) and at each epoch's end
    (`train/*_epoch`, `val/*`, `test/*`): one `self.log` call costs about 1 ms of host time,
    a torchmetrics Accuracy update 0.2 ms (2-core CPU), and a CIFAR ResNet's step on a GPU is
    a few ms.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: LRSchedule | None = None,
        label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0,
        weight_decay_bn_bias: bool = True,
        channels_last: bool | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.schedule = scheduler
        self.label_smoothing = label_smoothing
        self.weight_decay_bn_bias = weight_decay_bn_bias
        self.channels_last, self.compile_net, self.compiled = channels_last, compile, False
        # "window": the training images since the last logging step, so `train/*_step` is the
        # mean over every image of the period, not one batch.
        self.scores = {s: Scores() for s in ("train", "window", "val", "test")}
        # What Lightning computes, logs and resets at the epoch ends: one metric per value.
        self.epoch_scores = {s: self.scores[s].views() for s in ("train", "val", "test")}
        # Registered, so they move with the module and Lightning finds the metrics it logs
        # among its modules ("train" cannot name a ModuleDict entry: it is Module.train).
        views = [view for stage in self.epoch_scores.values() for view in stage.values()]
        self.metrics = nn.ModuleList([*self.scores.values(), *views])
        self.epoch_trained = False  # the epoch's last training batch is done

    @property
    def num_classes(self) -> int:
        return self.net.fc.out_features

    def setup(self, stage: str) -> None:
        """The device is known from here on; the layout follows it (modules keep their memory
        format when Lightning moves them)."""
        if self.channels_last is None:
            self.channels_last = self.trainer.strategy.root_device.type == "cuda"
        size = getattr(self.trainer.datamodule, "input_size", None)
        if size is not None:  # the model summary then counts FLOPs and shapes on one image
            self.example_input_array = torch.zeros(1, *size)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net and not self.compiled:  # setup runs again for `trainer.test`
            self.net.compile()
            self.compiled = True

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, BatchScores]:
        """The loss, and this batch's scores (also added to the stage's `Scores`)."""
        x, y = batch
        if x.ndim == 5:  # multi-crop evaluation: average the crops' softmax scores
            probs = self(x.flatten(0, 1)).softmax(-1).unflatten(0, x.shape[:2]).mean(1)
            logits = probs.clamp_min(1e-12).log()
        else:
            logits = self(x)
        smoothing = self.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        scores = BatchScores.of(logits.detach(), y, loss.detach())
        self.scores[stage].update(scores)
        if stage == "train":
            self.scores["window"].update(scores)
        return loss, scores

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        loss, scores = self._step(batch, "train")
        trainer = self.trainer
        last = batch_idx + 1 >= trainer.num_training_batches
        steps = last or (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        every, step = trainer.log_every_n_steps, trainer.global_step + 1
        # The steps whose values Lightning sends to the loggers (its own rule).
        if steps and (trainer.fast_dev_run or (every and step % every == 0)):
            self._log(self.scores["window"], "train", "_step", on_step=True)
        if last or (steps and step >= trainer.max_steps > 0):
            self._log(self.scores["train"], "train", "_epoch", on_step=False)
        self.epoch_trained = last
        return {"loss": loss, "err": scores.error}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.scores["val"].reset()  # the sanity check's batches, or a validation cut short

    def on_test_epoch_start(self) -> None:
        self.scores["test"].reset()

    def on_validation_epoch_end(self) -> None:
        self._log(self.scores["val"], "val", "", on_step=False)

    def on_test_epoch_end(self) -> None:
        self._log(self.scores["test"], "test", "", on_step=False)

    def _log(self, scores: Scores, stage: str, suffix: str, on_step: bool) -> None:
        """A logging step's values (the window's, computed now, then the window restarts), or
        the epoch's metrics, which Lightning computes at the epoch's end and then resets.
        torchmetrics sums the scores over the DDP ranks, so every rank logs the same value;
        the validation error also goes to the progress bar."""
        if not scores.update_called:
            return
        names = NAMES if scores.hard_labels else NAMES[:1]
        if on_step:
            values = scores.compute()
            for name in names:
                self.log(metric_key(stage, name, suffix), values[name], on_step=True)
            scores.reset()
            return
        for name in names:
            key = metric_key(stage, name, suffix)
            view = self.epoch_scores[stage][name]
            self.log(key, view, on_step=False, on_epoch=True, prog_bar=key == VAL_ERR)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A run resumed mid-epoch continues the epoch's training scores. One saved after the
        # epoch's last batch (at its validation's end) still holds the whole epoch's sums,
        # which Lightning resets only after logging them; its resume starts the next epoch.
        checkpoint["window_scores"] = self.scores["window"].metric_state
        if not self.epoch_trained:
            checkpoint["train_scores"] = self.scores["train"].metric_state

    def check_architecture(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, in one line, a checkpoint of another architecture (before Lightning loads
        its weights and fails deep inside `load_state_dict`)."""
        state, ours = checkpoint.get("state_dict", {}), self.state_dict()
        bad = [k for k in ours if k not in state or state[k].shape != ours[k].shape]
        bad += [k for k in state if k not in ours]
        if bad:
            theirs = (checkpoint.get("hyper_parameters") or {}).get("model") or {}
            theirs = dict(theirs) if isinstance(theirs, dict) else {}
            raise ConfigError(
                f"the checkpoint holds another architecture ({theirs or 'unknown'}; first "
                f"mismatch: {bad[0]}); use the model options of the run that wrote it"
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_architecture(checkpoint)
        for stage in ("train", "window"):
            if f"{stage}_scores" in checkpoint:
                self.scores[stage].load(checkpoint[f"{stage}_scores"])

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("ImageClassifier was built without an optimizer (evaluation only)")
        try:
            optimizer = self.optimizer_factory(param_groups(self.net, self.weight_decay_bn_bias))
        except (ValueError, TypeError) as e:  # torch's own argument checks
            raise ConfigError(f"optimizer: {e}") from None
        if self.schedule is None:
            return optimizer
        return [optimizer], self.schedule.configure(
            optimizer, self.trainer.estimated_stepping_batches
        )
