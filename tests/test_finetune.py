"""Fine-tuning: `weights=<file>` initialises the network (not the optimizer or the loop)
from a torchvision state_dict or a reslab checkpoint, with a new head for another class count."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from helpers.runs import QUIET, compose_run

import reslab.commands.train
from reslab.commands.eval import evaluate
from reslab.commands.train import main, train
from reslab.errors import ConfigError
from reslab.training.builders import build_module, build_trainer

# ImageNet ResNet-18 on the generated 4-class ImageFolder, at 32x32 so a step is quick.
IMAGEFOLDER = [
    *(a for a in QUIET if not a.startswith(("data.verify_md5", "model.depth"))),
    "model=resnet18",
    "data=imagefolder",
    "augmentation=lowres",
    "data.batch_size=8",
]


def torchvision_weights(path: Path, arch: str = "resnet18", num_classes: int = 1000) -> dict:
    """A real torchvision state_dict file (random weights: the hub is not reachable here)."""
    torch.manual_seed(1)
    state = getattr(torchvision.models, arch)(num_classes=num_classes).state_dict()
    torch.save(state, path)
    return state


def finetune_config(run_dir: Path, root: Path, weights: Path, *extra: str):
    args = [*IMAGEFOLDER, f"data.root={root}", f"weights={weights}", *extra]
    return compose_run(run_dir, root, args)


def test_torchvision_weights_give_the_backbone_and_a_new_head(
    imagefolder_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "resnet18.pth"
    state = torchvision_weights(file, num_classes=1000)
    cfg = finetune_config(tmp_path / "run", imagefolder_root, file)
    with caplog.at_level(logging.INFO, logger="reslab"):
        net = build_module(cfg).net
    ours = net.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert len(backbone) == len(ours) - 2
    assert all(torch.equal(ours[k], state[k]) for k in backbone)
    assert ours["fc.weight"].shape == (4, 512)
    (line,) = [r.getMessage() for r in caplog.records if "weights" in r.getMessage()]
    assert "head (fc) is re-initialised for 4 classes (the file's has 1000)" in line

    # The same head size: the head is loaded too.
    torchvision_weights(file, num_classes=4)
    head = build_module(cfg).net.fc.weight
    assert torch.equal(head, torch.load(file)["fc.weight"])


def test_fine_tuning_starts_from_the_weights_with_a_fresh_optimizer_and_loop(
    imagefolder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlike ckpt_path, nothing but the weights: step 0, empty optimizer state, the
    schedule's first lr. reslab-eval of the fine-tuned run's checkpoint does not need the
    starting file any more."""
    file = tmp_path / "resnet18.pth"
    state = torchvision_weights(file)
    start: dict = {}

    class AtStart(L.Callback):
        def on_train_start(self, trainer, pl_module):
            optimizer = trainer.optimizers[0]
            start.update(
                step=trainer.global_step,
                optimizer_state=len(optimizer.state),
                lr=optimizer.param_groups[0]["lr"],
                conv1=pl_module.net.conv1.weight.detach().clone(),
            )

    def trainer_with_spy(cfg):
        trainer = build_trainer(cfg)
        trainer.callbacks.append(AtStart())
        return trainer

    monkeypatch.setattr(reslab.commands.train, "build_trainer", trainer_with_spy)
    run_dir = tmp_path / "run"
    record = train(
        finetune_config(run_dir, imagefolder_root, file, "trainer.max_steps=2", "test=false")
    )
    assert start["step"] == 0 and start["optimizer_state"] == 0 and start["lr"] == 0.1
    assert torch.equal(start["conv1"], state["conv1.weight"])
    assert record["steps"] == 2
    tuned = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not torch.equal(tuned["net.conv1.weight"], state["conv1.weight"])  # it trained

    file.unlink()
    eval_cfg = compose_run(
        tmp_path / "eval", imagefolder_root,
        [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], "eval",
    )  # fmt: skip
    assert 0 <= evaluate(eval_cfg)["test/err"] <= 100


def test_a_reslab_checkpoint_initialises_a_net_for_another_dataset(
    cifar10_root: Path, cifar100_root: Path, tmp_path: Path
) -> None:
    """CIFAR-10 ResNet-8 -> CIFAR-100: the `net.*` weights of the checkpoint, a 100-way head."""
    source = tmp_path / "cifar10"
    train(compose_run(source, cifar10_root, [*QUIET, "trainer.max_steps=1", "test=false"]))
    ckpt = source / "checkpoints" / "last.ckpt"
    trained = torch.load(ckpt, weights_only=False)["state_dict"]
    args = [*QUIET, "data=cifar100", f"weights={ckpt}"]
    net = build_module(compose_run(tmp_path / "run", cifar100_root, args)).net
    ours = net.state_dict()
    assert all(torch.equal(ours[k], trained[f"net.{k}"]) for k in ours if not k.startswith("fc."))
    assert ours["fc.weight"].shape == (100, 64)


def test_a_file_that_does_not_fit_fails_in_one_line_before_compute(
    imagefolder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    other = tmp_path / "resnet34.pth"
    torchvision_weights(other, "resnet34")
    run_dir = tmp_path / "run"
    args = [*IMAGEFOLDER, f"data.root={imagefolder_root}", f"weights={other}"]
    monkeypatch.setattr(sys, "argv", ["reslab-train", *args, f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit) as exit:
        main()
    err = capfd.readouterr().err
    assert exit.value.code == 2 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if "weights" in ln]
    assert line.startswith(f"reslab: error: weights={other} does not fit the model config")
    assert not (run_dir / "checkpoints").exists()

    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    cfg = finetune_config(tmp_path / "run2", imagefolder_root, text)
    with pytest.raises(ConfigError, match=r"weights=.*notes.pth is not a readable torch"):
        build_module(cfg)


def test_eval_weights_still_takes_a_torchvision_file(imagefolder_root: Path, tmp_path: Path):
    file = tmp_path / "resnet18.pth"
    torchvision_weights(file, num_classes=4)
    args = [f"weights={file}", "model=resnet18", "data=imagefolder", "augmentation=lowres"]
    args += [f"data.root={imagefolder_root}", "data.num_workers=0"]
    metrics = evaluate(compose_run(tmp_path / "eval", imagefolder_root, args, "eval"))
    assert 0 <= metrics["test/err"] <= 100


def test_eval_of_weights_with_another_head_names_both_class_counts(
    imagefolder_root: Path, tmp_path: Path
) -> None:
    file = tmp_path / "resnet18.pth"
    torchvision_weights(file)  # torchvision's 1000 ImageNet classes, the data has 4
    args = [f"weights={file}", "model=resnet18", "data=imagefolder", "augmentation=lowres"]
    args += [f"data.root={imagefolder_root}", "data.num_workers=0"]
    with pytest.raises(ConfigError) as e:
        evaluate(compose_run(tmp_path / "eval", imagefolder_root, args, "eval"))
    assert str(e.value).startswith(
        f"weights={file} has a head for 1000 classes and the data 4; evaluate it on the data"
    )
    assert "reslab-train weights=<file>" in str(e.value)
