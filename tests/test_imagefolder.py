from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from helpers.runs import compose_run
from omegaconf import DictConfig
from torchvision.transforms import v2

from reslab.commands import eval as reslab_eval
from reslab.data import ImageFolderDataModule
from reslab.data.transforms import Lighting, add_rounded
from reslab.errors import ConfigError, DataError
from reslab.training.builders import build_datamodule, build_module, build_trainer

# augmentation=lowres's parameters: eval resizes the shorter side to 36, then the centre 32.
SMALL = {
    "size": 32,
    "resize": 36,
    "train": [v2.RandomResizedCrop(32, antialias=True), v2.RandomHorizontalFlip()],
}


def dm(root: Path, **kw) -> ImageFolderDataModule:
    kw = {"num_workers": 0, "batch_size": 8, "augmentation": SMALL, **kw}
    return ImageFolderDataModule(root=str(root), **kw)


def test_reads_folders_with_grey_and_cmyk_jpegs(imagefolder_root: Path) -> None:
    data = dm(imagefolder_root)
    assert data.num_classes == 4
    data.setup("fit")
    assert len(data.train_set) == 48 and len(data.val_set) == 16
    assert data.test_set is data.val_set
    for i in (1, 2):  # greyscale and CMYK files come out as 3-channel RGB
        x, _ = data.val_set[i]
        assert x.shape == (3, 32, 32)
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.max() < 4


def test_class_count_is_checked(imagefolder_root: Path) -> None:
    assert dm(imagefolder_root, num_classes=4).num_classes == 4
    with pytest.raises(ConfigError, match=r"data.num_classes=1000 but .* has 4 classes"):
        dm(imagefolder_root, num_classes=1000)


def test_missing_and_unreadable_data_name_the_path(tmp_path: Path, imagefolder_root) -> None:
    with pytest.raises(DataError, match=r"expected train/<class>/\*.JPEG"):
        dm(tmp_path / "nothing")
    with pytest.raises(DataError, match="ILSVRC2012 archives not found"):
        dm(tmp_path, format="ilsvrc2012")
    shutil.copytree(imagefolder_root, tmp_path / "copy")
    bad = next((tmp_path / "copy" / "val").rglob("*.JPEG"))
    bad.write_bytes(b"not a jpeg")
    data = dm(tmp_path / "copy")
    data.setup("fit")
    index = [p for p, _ in data.val_set.samples].index(str(bad))
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        data.val_set[index]


@pytest.mark.parametrize("name", reslab_eval.options("augmentation"))
def test_photos_batch_with_each_photo_augmentation_and_cifar_ones_are_refused(
    imagefolder_root: Path, tmp_path: Path, name: str
) -> None:
    """The fixture's photos have several sizes: a recipe crops them to its size, or, without
    one (CIFAR's), the DataModule refuses it at construction, before any compute."""
    overrides = ["data=imagefolder", f"data.root={imagefolder_root}", f"augmentation={name}"]
    cfg = compose_run(tmp_path, tmp_path, [*overrides, "data.batch_size=4", "data.num_workers=0"])
    if "size" not in cfg.augmentation:
        with pytest.raises(
            ConfigError, match=r"^augmentation\.size is not set, .* use augmentation=paper"
        ):
            build_datamodule(cfg)
        return
    data = build_datamodule(cfg)
    data.setup("fit")
    size = cfg.augmentation.size
    for loader in (data.train_dataloader(), data.val_dataloader()):
        x, _ = next(iter(loader))
        assert x.shape == (4, 3, size, size) and x.dtype == torch.uint8
    cfg = compose_run(tmp_path, tmp_path, [*overrides, "+augmentation.flip=0.5"])
    with pytest.raises(ConfigError, match=r"augmentation\.flip=0\.5 are CIFAR's pad-crop-flip"):
        build_datamodule(cfg)


def evaluated(tmp_path: Path, overrides: list[str], stored: dict) -> DictConfig:
    """The run config `reslab-eval OVERRIDES` scores with, the checkpoint `stored` given."""
    cfg = compose_run(tmp_path / "eval", tmp_path, overrides, name="eval")
    return reslab_eval.run_config(cfg, stored)


def test_eval_keeps_a_checkpoints_augmentation_when_the_data_is_chosen_again(
    imagefolder_root: Path, tmp_path: Path
) -> None:
    """data=imagefolder implies augmentation=paper, but only where nothing is stored: a run
    trained at 32 px is scored at 32 px, with the values given on the command line on top."""
    folder = ["data=imagefolder", f"data.root={imagefolder_root}"]
    run = compose_run(tmp_path / "run", tmp_path, [*folder, "augmentation=lowres"])
    trainer = build_trainer(run)
    trainer.strategy.connect(build_module(run))
    trainer.save_checkpoint(tmp_path / "run.ckpt", weights_only=True)
    stored = torch.load(tmp_path / "run.ckpt", weights_only=True)
    ckpt = f"ckpt_path={tmp_path / 'run.ckpt'}"
    assert evaluated(tmp_path, [ckpt, *folder], stored).augmentation.size == 32
    resized = evaluated(tmp_path, [ckpt, *folder, "augmentation.resize=40"], stored).augmentation
    assert (resized.size, resized.resize) == (32, 40)
    assert (
        evaluated(tmp_path, [ckpt, *folder, "augmentation=paper"], stored).augmentation.size == 224
    )
    weights = ["weights=w.pth", "model=resnet18", *folder]
    assert evaluated(tmp_path, weights, {}).augmentation.size == 224  # nothing stored: paper's


def test_mixup_cutmix_mix_training_batches_only(imagefolder_root: Path) -> None:
    data = dm(imagefolder_root, augmentation={**SMALL, "mixup_alpha": 0.2, "cutmix_alpha": 1.0})
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))

    class _Trainer:
        training = True

    data.trainer = _Trainer()
    mx, my = data.on_after_batch_transfer((x, y), 0)
    assert mx.shape == x.shape and not torch.equal(mx, x)
    assert my.shape == (8, 4) and torch.allclose(my.sum(1), torch.ones(8))
    _Trainer.training = False
    assert data.on_after_batch_transfer((x, y), 0)[1] is y


def test_mixup_and_cutmix_train_with_the_model_summary_on(
    imagefolder_root: Path, tmp_path: Path, train_in_process
) -> None:
    """`augmentation=modern` through the CLI with the default callbacks: the model summary's
    example input (one tensor, no labels) passes the batch hook as training starts."""
    run = train_in_process(
        ["data=imagefolder", f"data.root={imagefolder_root}", "data.num_workers=0",
         "data.batch_size=8", "model=resnet18", "augmentation=modern", "augmentation.size=32",
         "augmentation.resize=36", "trainer.max_steps=2", "test=false"],
        imagefolder_root,
        tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.err[-3000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2


def test_lighting_shifts_colours_along_the_principal_components() -> None:
    torch.manual_seed(0)
    img = torch.full((3, 4, 4), 0.5)
    out = Lighting(0.1)(img)
    shift = out - img
    assert shift.abs().sum() > 0 and torch.allclose(shift, shift[:, :1, :1].expand_as(shift))
    assert torch.equal(Lighting(0.0)(img), img)


def test_uint8_lighting_is_the_same_in_either_memory_layout() -> None:
    """Interleaved images (decoded photos) take a faster path than planar ones; both give the
    float sum rounded and clamped, including shifts past 0 and 255."""
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 37, 51), (3, 224, 224), (2, 3, 20, 20)]:
        planar = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        interleaved = planar.movedim(-3, -1).contiguous().movedim(-1, -3)
        for _ in range(10):
            shift = torch.randn(3, generator=g) * 40
            ref = (planar.float() + shift.view(3, 1, 1)).round().clamp(0, 255).to(torch.uint8)
            assert torch.equal(add_rounded(planar, shift), ref)
            assert torch.equal(add_rounded(interleaved, shift), ref)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [18])
def test_train_and_ten_crop_eval_through_the_cli(
    imagefolder_root: Path, tmp_path: Path, depth: int, train_in_process, eval_in_process
) -> None:
    common = [f"data.root={imagefolder_root}", "data.num_workers=0", "data.batch_size=16"]
    run = train_in_process(
        [
            "data=imagefolder",
            f"model=resnet{depth}",
            "augmentation=torchvision_v1",
            "augmentation.size=64",
            "augmentation.resize=72",
            "scheduler=cosine",
            "trainer.max_steps=6",
            *common,
        ],
        imagefolder_root,
        tmp_path,
    )
    assert run.code == 0, run.err[-3000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params"] == 11_689_512 - 1000 * 512 - 1000 + 4 * 512 + 4
    assert summary["input_size"] == [3, 64, 64]
    best = run_dir / "checkpoints" / "best.ckpt"
    for name, extra in (("one", []), ("ten", ["ten_crop=true"])):
        args = [f"ckpt_path={best}", *extra, f"hydra.run.dir={tmp_path / 'e' / name}"]
        run = eval_in_process(args, imagefolder_root, tmp_path / "e")
        assert run.code == 0, run.err[-3000:]
    one, ten = (
        json.loads((tmp_path / "e" / name / "metrics.json").read_text()) for name in ("one", "ten")
    )
    assert set(one) == set(ten) == {"test/acc", "test/acc5", "test/err", "test/loss"}
    assert one["test/loss"] != ten["test/loss"]  # ten crops really were scored


def test_eval_of_torchvision_weights_from_a_local_file(
    imagefolder_root: Path, tmp_path: Path, eval_in_process
) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=4)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    overrides = [
        f"weights={tmp_path / 'resnet18.pth'}",
        "model=resnet18",
        "data=imagefolder",
        f"data.root={imagefolder_root}",
        "data.num_workers=0",
        "augmentation=torchvision_v1",
        "augmentation.size=64",
        "augmentation.resize=72",
    ]
    run = eval_in_process(overrides, imagefolder_root, tmp_path)
    assert run.code == 0, run.err[-3000:]
    (out,) = (tmp_path / "eval" / "runs").iterdir()
    ours = json.loads((out / "metrics.json").read_text())
    # The same weights in torchvision's own model, on the same images (shorter side resized to
    # 72, centre 64 crop, normalised as the batch hook does on the device), give the same
    # accuracy.
    data = dm(imagefolder_root, augmentation={"size": 64, "resize": 72})
    data.setup("test")
    tv.eval()
    with torch.no_grad():
        batches = (data.on_after_batch_transfer(b, 0) for b in data.test_dataloader())
        correct = sum((tv(x).argmax(1) == y).sum().item() for x, y in batches)
    assert ours["test/acc"] == pytest.approx(correct / len(data.test_set))
