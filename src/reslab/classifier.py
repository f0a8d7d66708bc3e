"""The LightningModule `ImageClassifier`: cross-entropy training of any `nn.Module` that maps
images to logits, with errors summed on the device (`Tally`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LinearLR

from reslab.errors import ConfigError

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

    `optimizer` is a partial taking the parameter groups; `scheduler` is Lightning's
    lr-scheduler dict whose `scheduler` entry is a partial taking the optimizer, so a
    recipe decides per config whether it steps per iteration (`interval: step`) or epoch.
    `channels_last` (None: on for CUDA, where NHWC convolutions are faster; off on the CPU) and
    `compile` (torch.compile; it pays back on long runs) are speed switches that leave the
    state_dict unchanged.

    Scores are summed on the device batch by batch (`Tally`) and logged only on Lightning's
    logging steps (`train/*_step`) and at each epoch's end (`train/*_epoch`, `val/*`,
    `test/*`): one `self.log` call costs about 1 ms of host time, a torchmetrics Accuracy
    update 0.2 ms (2-core CPU), and a CIFAR ResNet's step on a GPU is a few ms.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        weight_decay_bn_bias: bool = True,
        channels_last: bool | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.label_smoothing = label_smoothing
        self.weight_decay_bn_bias = weight_decay_bn_bias
        self.channels_last, self.compile_net, self.compiled = channels_last, compile, False
        # "window": the training images since the last logging step, so `train/*_step` is the
        # mean over every image of the period, not one batch.
        self.tallies = {stage: Tally() for stage in ("train", "window", "val", "test")}

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

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, Tally]:
        """The loss, and this batch's scores (also added to the stage's tally)."""
        x, y = batch
        if x.ndim == 5:  # multi-crop evaluation: average the crops' softmax scores
            probs = self(x.flatten(0, 1)).softmax(-1).unflatten(0, x.shape[:2]).mean(1)
            logits = probs.clamp_min(1e-12).log()
        else:
            logits = self(x)
        smoothing = self.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        batch_tally = Tally.of(logits.detach(), y, loss.detach())
        self.tallies[stage].add(batch_tally)
        if stage == "train":
            self.tallies["window"].add(batch_tally)
        return loss, batch_tally

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        loss, scores = self._step(batch, "train")
        trainer = self.trainer
        last = batch_idx + 1 >= trainer.num_training_batches
        steps = last or (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        every, step = trainer.log_every_n_steps, trainer.global_step + 1
        # The steps whose values Lightning sends to the loggers (its own rule).
        if steps and (trainer.fast_dev_run or (every and step % every == 0)):
            self._log(self.tallies["window"], "train/", "_step", on_step=True)
            self.tallies["window"] = Tally()
        if last or (steps and step >= trainer.max_steps > 0):
            self._log(self.tallies["train"], "train/", "_epoch", on_step=False)
            self.tallies["train"] = Tally()
        return {"loss": loss, "err": scores.error}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.tallies["val"] = Tally()

    def on_test_epoch_start(self) -> None:
        self.tallies["test"] = Tally()

    def on_validation_epoch_end(self) -> None:
        self._log(self.tallies["val"], "val/", "", on_step=False)

    def on_test_epoch_end(self) -> None:
        self._log(self.tallies["test"], "test/", "", on_step=False)

    def _log(self, tally: Tally, prefix: str, suffix: str, on_step: bool) -> None:
        """Scores summed over all ranks (every rank logs the same value); the validation
        error also goes to the progress bar."""
        if self.trainer.world_size > 1:
            tally = tally.reduce(self.trainer.strategy, self.device)
        if tally.images == 0:
            return
        for key, value in tally.values().items():
            self.log(
                f"{prefix}{key}{suffix}", value, on_step=on_step, on_epoch=not on_step,
                prog_bar=f"{prefix}{key}" == "val/err", batch_size=tally.images,
            )  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A run resumed mid-epoch continues the epoch's training scores.
        checkpoint["train_tally"] = self.tallies["train"].state_dict()
        checkpoint["window_tally"] = self.tallies["window"].state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, in one line, a checkpoint of another architecture (before Lightning loads
        its weights and fails deep inside `load_state_dict`)."""
        state, ours = checkpoint.get("state_dict", {}), self.state_dict()
        bad = [k for k in ours if k not in state or state[k].shape != ours[k].shape]
        bad += [k for k in state if k not in ours]
        if bad:
            theirs = checkpoint.get("hyper_parameters", {}).get("model", {})
            raise ConfigError(
                f"the checkpoint holds another architecture ({dict(theirs) or 'unknown'}; first "
                f"mismatch: {bad[0]}); use the model options of the run that wrote it"
            )
        for stage in ("train", "window"):
            if f"{stage}_tally" in checkpoint:
                self.tallies[stage] = Tally(**checkpoint[f"{stage}_tally"])

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("ImageClassifier was built without an optimizer (evaluation only)")
        try:
            optimizer = self.optimizer_factory(param_groups(self.net, self.weight_decay_bn_bias))
        except (ValueError, TypeError) as e:  # torch's own argument checks
            raise ConfigError(f"optimizer: {e}") from None
        if self.scheduler_config is None:
            return optimizer
        config = dict(self.scheduler_config)
        warmup_steps = config.pop("warmup_steps", 0)
        schedulers = []
        if warmup_steps:
            # Its own per-step scheduler on the same optimizer: both scale the lr they find, so
            # the warm-up composes with any schedule (epoch-wise and ReduceLROnPlateau too).
            # One name for both: LearningRateMonitor would log the same lr twice (lr-SGD-1).
            warmup = LinearLR(optimizer, start_factor=1 / warmup_steps, total_iters=warmup_steps)
            config["name"] = config.get("name") or f"lr-{type(optimizer).__name__}"
            schedulers.append({"scheduler": warmup, "interval": "step", "name": config["name"]})
        config["scheduler"] = config["scheduler"](optimizer)
        return [optimizer], [*schedulers, config]


class Tally:
    """Summed loss, top-1 and top-5 hits of some batches on their device, and their image
    counts on the host: adding a batch is a few kernels and never waits for the device.
    Soft targets (MixUp/CutMix) have no hard label to score: they add to the loss only."""

    def __init__(self, sums: Tensor | None = None, images: int = 0, scored: int = 0) -> None:
        self.sums, self.images, self.scored = sums, images, scored

    @classmethod
    def of(cls, logits: Tensor, y: Tensor, loss: Tensor) -> Tally:
        n = len(logits)
        loss_sum = loss.float().reshape(1) * n
        if y.ndim != 1:
            return cls(torch.cat([loss_sum, loss_sum.new_zeros(2)]), n, 0)
        hits = logits.topk(min(5, logits.shape[-1]), dim=-1).indices == y[:, None]
        top = torch.stack([hits[:, 0].sum(), hits.any(-1).sum()]).float()
        return cls(torch.cat([loss_sum, top]), n, n)

    def add(self, other: Tally) -> None:
        if self.sums is None:
            self.sums = other.sums.clone()
        else:  # a tally restored from a checkpoint may sit on another device
            self.sums = self.sums.to(other.sums.device).add_(other.sums)
        self.images += other.images
        self.scored += other.scored

    @property
    def error(self) -> Tensor:
        """Top-1 error in percent (NaN without hard labels), on the device."""
        return (
            100.0 * (1.0 - self.sums[1] / self.scored) if self.scored else self.sums[1] * math.nan
        )

    def reduce(self, strategy: Any, device: torch.device) -> Tally:
        """Summed over the DDP ranks (a rank may have seen no batch): every rank gets the
        total."""
        sums = torch.zeros(3, device=device) if self.sums is None else self.sums.to(device)
        counts = sums.new_tensor([self.images, self.scored])
        total = strategy.reduce(torch.cat([sums, counts]), reduce_op="sum")
        return Tally(total[:3], int(total[3]), int(total[4]))

    def values(self) -> dict[str, Tensor]:
        """loss (mean), acc and acc5 (fractions), err (percent): the paper reports error."""
        values = {"loss": self.sums[0] / self.images}
        if self.scored:
            acc = self.sums[1:] / self.scored
            values.update(acc=acc[0], acc5=acc[1], err=100.0 * (1.0 - acc[0]))
        return values

    def state_dict(self) -> dict[str, Any]:
        """The constructor's arguments: `Tally(**state)` restores it."""
        return {"sums": self.sums, "images": self.images, "scored": self.scored}
