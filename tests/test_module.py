from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy

from reslab.data import CIFARDataModule
from reslab.models import cifar_resnet
from reslab.training.classifier import ImageClassifier, param_groups
from reslab.training.schedules import LRSchedule
from reslab.training.scores import BatchScores, Scores


def test_scores_score_as_torchmetrics_functional_does() -> None:
    """Summed over uneven batches, the scores give torchmetrics' micro top-1/top-5 accuracy
    of all images together, the mean per-image loss, and the error in percent."""
    torch.manual_seed(0)
    logits, y = torch.randn(70, 10), torch.randint(0, 10, (70,))
    scores = Scores()
    for lo, hi in ((0, 32), (32, 64), (64, 70)):
        loss = torch.nn.functional.cross_entropy(logits[lo:hi], y[lo:hi])
        scores.update(BatchScores.of(logits[lo:hi], y[lo:hi], loss))
    values = scores.compute()
    for key, k in (("acc", 1), ("acc5", 5)):
        expected = multiclass_accuracy(logits, y, 10, top_k=k, average="micro")
        assert values[key].item() == pytest.approx(expected.item())
    assert values["err"].item() == pytest.approx(100 * (1 - values["acc"].item()))
    whole = torch.nn.functional.cross_entropy(logits, y)
    assert values["loss"].item() == pytest.approx(whole.item(), rel=1e-6)
    assert scores.sums[3:].tolist() == [70, 70]  # images, images with a hard label
    views = {name: view.compute() for name, view in scores.views().items()}
    assert views == values


def test_soft_targets_score_the_loss_only() -> None:
    soft = torch.softmax(torch.randn(8, 10), -1)
    batch = BatchScores.of(torch.randn(8, 10), soft, torch.tensor(2.0))
    scores = Scores()
    scores.update(batch)
    assert scores.compute() == {"loss": torch.tensor(2.0)}
    assert batch.error.isnan()
    assert not scores.hard_labels


def test_scores_restored_from_their_state_continue_the_sums() -> None:
    """What a mid-epoch checkpoint carries: the sums, and with them whether acc/err exist."""
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    scores = Scores()
    scores.update(BatchScores.of(logits, y, torch.tensor(1.0)))
    restored = Scores()
    restored.load({k: v.clone() for k, v in scores.metric_state.items()})
    assert restored.hard_labels
    for metric in (scores, restored):
        metric.update(BatchScores.of(logits, y, torch.tensor(3.0)))
    assert restored.compute() == scores.compute()
    assert restored.compute()["loss"] == 2.0


def test_bn_and_bias_can_skip_weight_decay() -> None:
    net = cifar_resnet(8)
    decay, no_decay = param_groups(net, weight_decay_bn_bias=False)
    assert no_decay["weight_decay"] == 0.0
    bn_and_bias = {
        id(p)
        for m in net.modules()
        for p in m.parameters(recurse=False)
        if isinstance(m, torch.nn.BatchNorm2d)
    } | {id(net.fc.bias)}
    assert {id(p) for p in no_decay["params"]} == bn_and_bias
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))
    assert len(param_groups(net, weight_decay_bn_bias=True)) == 1


def quiet_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    """A Trainer without logger, checkpoints or progress bar, writing under tmp_path."""
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_scheduler_steps_per_iteration(tmp_path: Path, cifar10_root: Path) -> None:
    """The paper's schedule is in iterations: lr drops after exactly `milestones` steps."""
    module = ImageClassifier(
        cifar_resnet(8),
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        scheduler=LRSchedule(
            partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[3, 5]), interval="step"
        ),
    )
    data = CIFARDataModule(root=str(cifar10_root), verify_md5=False, num_workers=0, batch_size=64)
    trainer = quiet_trainer(tmp_path, max_steps=6, limit_val_batches=0)
    seen: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(Record())
    trainer.fit(module, datamodule=data)
    assert [round(x, 6) for x in seen] == [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]


def test_training_learns_the_generated_classes(tmp_path: Path, cifar10_root: Path) -> None:
    torch.manual_seed(0)
    module = ImageClassifier(
        cifar_resnet(8), optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    )
    data = CIFARDataModule(
        root=str(cifar10_root),
        verify_md5=False,
        num_workers=0,
        batch_size=50,
        augmentation={"flip": 0.5},
    )
    trainer = quiet_trainer(tmp_path, max_epochs=4)
    trainer.fit(module, datamodule=data)
    metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert metrics["val/acc"] > 0.5, metrics  # chance is 0.1
    assert abs(metrics["val/err"] - 100 * (1 - metrics["val/acc"])) < 1e-3
    assert metrics["val/acc5"] >= metrics["val/acc"]


def test_scores_are_logged_per_optimizer_step_and_cover_the_whole_epoch(
    tmp_path: Path, cifar10_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With gradient accumulation, a step's values are logged once (on the batch that steps),
    over every image since the last logging step (both batches of the step), and the epoch's
    scores cover every batch, the last epoch cut short by max_steps too."""
    logged: list[tuple[str, int]] = []
    log = ImageClassifier._log

    def spy(self, scores, stage, suffix, on_step):
        logged.append((stage + suffix, int(scores.sums[3])))
        log(self, scores, stage, suffix, on_step)

    monkeypatch.setattr(ImageClassifier, "_log", spy)
    module = ImageClassifier(cifar_resnet(8), optimizer=partial(torch.optim.SGD, lr=0.05))
    # The global batch of a step, in 2 micro-batches of 50.
    data = CIFARDataModule(root=str(cifar10_root), verify_md5=False, num_workers=0, batch_size=100)
    trainer = quiet_trainer(
        tmp_path,
        max_steps=7,  # 14 batches: one epoch of 10, then 4
        accumulate_grad_batches=2,
        log_every_n_steps=1,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    assert [n for name, n in logged if name == "train_step"] == [100] * 7  # 2 batches a step
    assert [n for name, n in logged if name == "train_epoch"] == [500, 200]
    assert trainer.callback_metrics["train/err_epoch"] >= 0
