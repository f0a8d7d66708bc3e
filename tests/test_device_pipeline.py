"""CIFAR's device pipeline (the default): same augmentation and pixels as the workers
pipeline, resumable, sharded under DDP."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from reslab.data import CIFARDataModule
from reslab.data.device import DeviceLoader, crop_flip, normalize
from reslab.errors import ConfigError
from reslab.models import cifar_resnet
from reslab.training.classifier import ImageClassifier

PAPER = {"pad": 4, "flip": 0.5}  # augmentation=cifar


def candidates(images: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """(2 * (2 pad + 1)^2, N, C, H, W): every crop of the zero-padded images, and its mirror."""
    padded = F.pad(images, (pad, pad, pad, pad))
    h, w = images.shape[-2:]
    crops = [
        padded[..., dy : dy + h, dx : dx + w]
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
    ]
    return torch.stack(crops + [c.flip(-1) for c in crops])


def match(out: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Index of the candidate (crop offset, flip) each output image equals; -1 for none."""
    found = torch.full((len(out),), -1)
    for k, cand in enumerate(candidates(source)):
        hit = (cand == out).flatten(1).all(1)
        found[hit & (found < 0)] = k
    return found


def test_crop_flip_is_a_crop_or_mirror_of_the_padded_image() -> None:
    images = torch.randint(0, 256, (600, 3, 32, 32), dtype=torch.uint8)
    out = crop_flip(images, 4, 0.5, torch.Generator().manual_seed(0))
    found = match(out, images)
    assert (found >= 0).all(), "an augmented image is no crop/flip of its padded original"
    flipped = found >= 81
    assert 0.4 < flipped.float().mean() < 0.6
    offsets = set((found % 81).tolist())
    assert len(offsets) >= 75 and {0, 40, 80} <= offsets  # corners and centre included


def test_no_flip_and_no_pad() -> None:
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(crop_flip(images, 0, 0.0, torch.Generator()), images)
    assert torch.equal(crop_flip(images, 0, 1.0, torch.Generator()), images.flip(-1))


def to_uint8(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """The uint8 pixels whose normalisation is exactly `x` (asserted: no rounding hides)."""
    table = normalize(torch.arange(256, dtype=torch.uint8).expand(3, 1, 256), mean, std)[:, 0]
    flat = x.permute(1, 0, 2, 3).reshape(3, -1)
    pixels = torch.searchsorted(table.contiguous(), flat.contiguous()).clamp(max=255)
    assert torch.equal(table.gather(1, pixels), flat), "not a normalised uint8 image"
    return pixels.to(torch.uint8).reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1)


def datamodules(root: Path, **kw) -> tuple[CIFARDataModule, CIFARDataModule]:
    args = dict(root=str(root), batch_size=64, verify_md5=False, augmentation=PAPER, **kw)
    cpu = CIFARDataModule(pipeline="workers", num_workers=0, **args)
    gpu = CIFARDataModule(**args)
    for dm in (cpu, gpu):
        dm.prepare_data()
        dm.setup("fit")
    return cpu, gpu


@pytest.mark.parametrize("val_size", [0, 100])
def test_eval_batches_equal_the_cpu_path(cifar10_root: Path, val_size: int) -> None:
    cpu, gpu = datamodules(cifar10_root, val_size=val_size)
    for a_loader, b_loader in (
        (cpu.val_dataloader(), gpu.val_dataloader()),
        (cpu.test_dataloader(), gpu.test_dataloader()),
    ):
        a = list(a_loader)
        b = list(b_loader)
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert xb.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_train_batches_are_augmented_like_the_cpu_path(cifar10_root: Path) -> None:
    cpu, gpu = datamodules(cifar10_root)
    loader = gpu.train_dataloader()
    images, labels = (
        torch.from_numpy(cpu.train_set.data).permute(0, 3, 1, 2),
        torch.as_tensor(cpu.train_set.targets),
    )
    order = loader._order()
    seen, found = [], []
    for i, (x, y) in enumerate(loader):
        idx = order[i * 64 : (i + 1) * 64]
        assert torch.equal(y, labels[idx])
        found.append(match(to_uint8(x, gpu.mean, gpu.std), images[idx]))
        seen.append(idx)
    found = torch.cat(found)
    assert (found >= 0).all()
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(500))  # each image once
    assert 0.35 < (found >= 81).float().mean() < 0.65
    assert len(set((found % 81).tolist())) >= 70


def test_resume_mid_epoch_replays_the_same_batches(cifar10_root: Path) -> None:
    _, gpu = datamodules(cifar10_root)
    loader = gpu.train_dataloader()
    it = iter(loader)
    next(it), next(it)
    state = copy.deepcopy(loader.state_dict())
    rest = list(it) + list(loader)  # rest of this epoch, then the next one
    resumed = gpu.train_dataloader()
    resumed.load_state_dict(state)
    again = list(resumed) + list(resumed)
    assert len(again) == len(rest) == len(loader) - 2 + len(loader)
    for (xa, ya), (xb, yb) in zip(rest, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(rest[-1][0], rest[len(loader) - 3][0])


def test_ddp_ranks_get_disjoint_equal_shards() -> None:
    images = torch.randint(0, 256, (101, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(101)
    ranks = [
        DeviceLoader(images, labels, 10, (0.5,) * 3, (0.25,) * 3, train=True, rank=r, world_size=2)
        for r in range(2)
    ]
    got = [torch.cat([y for _, y in loader]) for loader in ranks]
    assert len(got[0]) == len(got[1]) == 50 and len(ranks[0]) == len(ranks[1]) == 5
    assert not set(got[0].tolist()) & set(got[1].tolist())


def test_other_augmentations_are_refused(cifar10_root: Path) -> None:
    """The device path runs `pad` and `flip` only: per-image transforms, photo resizing and
    batch mixing are refused, naming the workers pipeline."""
    refused = r"runs the pad-crop-flip augmentations.*data\.pipeline=workers"
    jitter = {**PAPER, "train": [v2.ColorJitter()]}
    with pytest.raises(ConfigError, match=refused):
        CIFARDataModule(root=str(cifar10_root), augmentation=jitter)
    reflect = {"train": [v2.RandomCrop(32, padding=4, padding_mode="reflect")]}
    with pytest.raises(ConfigError, match=refused):
        CIFARDataModule(root=str(cifar10_root), augmentation=reflect)
    for photo in ({"size": 32, "resize": 36}, {**PAPER, "mixup_alpha": 0.2}):
        with pytest.raises(ConfigError, match=refused):
            CIFARDataModule(root=str(cifar10_root), augmentation=photo)
    with pytest.raises(ConfigError, match=r"data\.pipeline='gpu'"):
        CIFARDataModule(root=str(cifar10_root), pipeline="gpu")
    CIFARDataModule(root=str(cifar10_root), augmentation=jitter, pipeline="workers")


def test_fit_with_device_data_and_speed_switches(cifar10_root: Path, tmp_path: Path) -> None:
    """A Lightning fit on the device path, channels_last forced on: the loader's state lands in
    the checkpoint, the layout is NHWC and the outputs equal the NCHW model's."""
    _, gpu = datamodules(cifar10_root)
    module = ImageClassifier(
        cifar_resnet(depth=8), optimizer=lambda p: torch.optim.SGD(p, lr=0.1), channels_last=True
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=gpu)
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False)
    (state,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state["served"] >= 3 and state["epoch"] == 0
    assert module.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32)
    reference = cifar_resnet(depth=8).eval()
    reference.load_state_dict(module.net.state_dict())
    module.eval()
    torch.testing.assert_close(module(x), reference(x), rtol=1e-4, atol=1e-4)


def test_lightning_runs_every_epoch_and_validation_in_full(cifar10_root: Path) -> None:
    """Lightning stops each pass after len() batches (the sanity check after two); the next
    pass must still be a whole new epoch, not the empty rest of the old one."""
    _, gpu = datamodules(cifar10_root, val_size=100)
    seen: list[tuple[str, int]] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            seen.append(("train", trainer.current_epoch))

        def on_validation_batch_start(self, trainer, *_):
            seen.append(("sanity" if trainer.sanity_checking else "val", trainer.current_epoch))

    module = ImageClassifier(cifar_resnet(depth=8), optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(module, datamodule=gpu)
    train_batches, val_batches = len(gpu.train_dataloader()), len(gpu.val_dataloader())
    assert (train_batches, val_batches) == (7, 2)  # 400 / 64 and 100 / 64, rounded up
    assert seen.count(("sanity", 0)) == 2
    for epoch in range(3):
        assert seen.count(("train", epoch)) == train_batches
        assert seen.count(("val", epoch)) == val_batches
    assert trainer.global_step == 3 * train_batches
