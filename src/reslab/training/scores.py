"""Classification scores as torchmetrics metrics, and the names they are logged under: the one
place those names are written out (callbacks, run records, reports and the config's `monitor:`
lines, through `${metric:val_err}`, import them)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.wrappers.abstract import WrapperMetric

LOSS, ACC, ACC5, ERR = "loss", "acc", "acc5", "err"
NAMES = (LOSS, ACC, ACC5, ERR)


def metric_key(stage: str, name: str, suffix: str = "") -> str:
    """The logged key: `train/err_step` (mean over a logging window), `train/err_epoch`,
    `val/err`, `test/acc5`, ..."""
    return f"{stage}/{name}{suffix}"


VAL_ERR = metric_key("val", ERR)
TEST_ERR = metric_key("test", ERR)
TRAIN_ERR_STEP = metric_key("train", ERR, "_step")
TRAIN_ERR_EPOCH = metric_key("train", ERR, "_epoch")
# Not logged by the module: the progress bar's latest loss, and ErrorTracker's per-epoch
# training error in the run record.
TRAIN_LOSS = metric_key("train", LOSS)
TRAIN_ERR = metric_key("train", ERR)

# The names a config reaches through `${metric:...}`.
CONFIG_NAMES = {
    "val_err": VAL_ERR,
    "test_err": TEST_ERR,
    "train_err_step": TRAIN_ERR_STEP,
    "train_err_epoch": TRAIN_ERR_EPOCH,
}


def config_metric(name: str) -> str:
    """`${metric:val_err}` -> `val/err`; an unknown name fails in one line naming the known."""
    try:
        return CONFIG_NAMES[name]
    except KeyError:
        raise ValueError(
            f"${{metric:{name}}}: unknown metric; use one of {', '.join(CONFIG_NAMES)}"
        ) from None


class BatchScores(NamedTuple):
    """One batch's summed loss, top-1 and top-5 hits and image counts (`sums`, on its
    device: a few kernels, no wait for the device), and, known on the host, its image count
    and whether it had hard labels. Soft targets (MixUp/CutMix) have no hard label to score:
    they add to the loss only."""

    sums: Tensor  # loss x images, top-1 hits, top-5 hits, images, images with a hard label
    images: int
    hard_labels: bool

    @classmethod
    def of(cls, logits: Tensor, target: Tensor, loss: Tensor) -> BatchScores:
        """`loss`: the batch's mean loss; `target`: class indices, or soft targets."""
        n = len(logits)
        # Counts filled on the device: a host tensor copied over would wait for the device.
        counts = logits.new_full((2,), n, dtype=torch.float)
        hard = target.ndim == 1
        if hard:
            hits = logits.topk(min(5, logits.shape[-1]), dim=-1).indices == target[:, None]
            top = torch.stack([hits[:, 0].sum(), hits.any(-1).sum()]).float()
        else:
            top = counts.new_zeros(2)
            counts[1] = 0
        return cls(torch.cat([loss.detach().float().reshape(1) * n, top, counts]), n, hard)

    @property
    def error(self) -> Tensor:
        """Top-1 error in percent (NaN without hard labels), on the device."""
        return 100 * (1 - self.sums[1] / self.sums[4])


class Scores(Metric):
    """`BatchScores` summed on their device; torchmetrics sums the state over the DDP ranks
    when it computes. `hard_labels` (on the host) says whether any batch had hard labels,
    i.e. whether acc, acc5 and err exist."""

    full_state_update = False
    is_differentiable = False
    sums: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sums", torch.zeros(5), dist_reduce_fx="sum")
        self.hard_labels = False

    def update(self, batch: BatchScores) -> None:
        self.sums += batch.sums
        self.hard_labels |= batch.hard_labels

    def compute(self) -> dict[str, Tensor]:
        """loss (mean), acc and acc5 (fractions), err (percent: the paper reports error)."""
        loss, top1, top5, images, scored = self.sums
        values = {LOSS: loss / images}
        if self.hard_labels:
            values.update({ACC: top1 / scored, ACC5: top5 / scored, ERR: 100 * (1 - top1 / scored)})
        return values

    def reset(self) -> None:
        super().reset()
        self.hard_labels = False

    def load(self, state: dict[str, Tensor]) -> None:
        """Restore `metric_state` (a checkpoint's copy, on any device): the host flag follows
        the restored counts (one read, at load time)."""
        self.sums = state["sums"].to(self.sums)
        self.hard_labels = bool(self.sums[4] > 0)

    def views(self) -> dict[str, Score]:
        """One metric per value, each `compute` one tensor, as Lightning logs them."""
        return {name: Score(self, name) for name in NAMES}


class Score(WrapperMetric):
    """One value of a `Scores`. Lightning logs a metric whose `compute` is one tensor; the
    sums, their DDP reduction and their reset stay with the `Scores`, which computes once
    for all its views (torchmetrics caches the result until the next update)."""

    def __init__(self, scores: Scores, name: str) -> None:
        super().__init__()
        self.scores, self.name = scores, name

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.scores.update(*args, **kwargs)

    def compute(self) -> Tensor:
        return self.scores.compute()[self.name]

    def reset(self) -> None:
        self.scores.reset()
