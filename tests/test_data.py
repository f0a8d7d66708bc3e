from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from reslab.data import CIFARDataModule
from reslab.data.cifar import _CIFAR10
from reslab.errors import ConfigError, DataError

PAPER = {"pad": 4, "flip": 0.5}  # augmentation=cifar


def dm(root: Path, **kw) -> CIFARDataModule:
    """The workers pipeline: torchvision datasets with per-image transforms (the device
    pipeline's batches are checked against these in test_device_pipeline.py)."""
    kw = {"root": str(root), "verify_md5": False, "num_workers": 0, "batch_size": 32, **kw}
    return CIFARDataModule(**{"augmentation": PAPER, "pipeline": "workers", **kw})


@pytest.mark.parametrize("pipeline", ["workers", "device"])
def test_reads_the_official_format(cifar10_root: Path, pipeline: str) -> None:
    data = dm(cifar10_root, pipeline=pipeline)
    data.prepare_data()
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (500, 200, 200)
    assert data.train_set.classes[:2] == ["airplane", "automobile"]
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.min() >= 0 and y.max() < 10


def test_eval_images_are_the_normalised_pixels(cifar10_root: Path) -> None:
    data = dm(cifar10_root, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    data.setup("test")
    raw = torch.from_numpy(data.test_set.data[0]).permute(2, 0, 1).float() / 255
    x, y = data.test_set[0]
    torch.testing.assert_close(x, (raw - 0.5) / 0.25)
    assert y == data.test_set.targets[0]


def test_train_augmentation_is_pad_crop_flip(cifar10_root: Path) -> None:
    data = dm(cifar10_root, mean=(0, 0, 0), std=(1, 1, 1))
    data.setup("fit")
    base = data.train_set
    raw = torch.from_numpy(base.data[3]).permute(2, 0, 1).float() / 255
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4))
    crops = {(i, j): padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)}
    seen = set()
    for _ in range(40):
        x, _ = base[3]
        match = [
            (k, f)
            for k, c in crops.items()
            for f, img in (("id", c), ("flip", c.flip(-1)))
            if torch.allclose(x, img)
        ]
        assert match, "every augmented image is a flipped or unflipped crop of the padded image"
        seen.update(f for _, f in match)
    assert seen == {"id", "flip"}


def test_paper_validation_split(cifar10_root: Path) -> None:
    data = dm(cifar10_root, val_size=50)
    data.setup("fit")
    assert len(data.train_set) == 450 and len(data.val_set) == 50
    train_idx, val_idx = set(data.train_set.indices), set(data.val_set.indices)
    assert not train_idx & val_idx and len(train_idx | val_idx) == 500
    # The held-out images use the eval transform (deterministic).
    torch.testing.assert_close(data.val_set[0][0], data.val_set[0][0])
    again = dm(cifar10_root, val_size=50)
    again.setup("fit")
    assert again.val_set.indices == data.val_set.indices


def test_cifar100(cifar100_root: Path) -> None:
    data = dm(cifar100_root, name="cifar100", num_classes=100)
    data.setup("fit")
    assert len(data.train_set) == 500 and len(data.train_set.classes) == 100
    assert max(data.train_set.targets) < 100


def test_md5_mismatch_names_the_file(cifar10_root: Path) -> None:
    with pytest.raises(DataError, match=r"data_batch_1 is corrupt \(md5 differs"):
        dm(cifar10_root, verify_md5=True).prepare_data()


def test_missing_data_names_path_files_and_fix(tmp_path: Path, cifar10_root: Path) -> None:
    with pytest.raises(DataError) as e:
        dm(tmp_path, download=False).prepare_data()
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg
    assert "cifar-10-python.tar.gz" in msg and "DATA_DIR" in msg and "\n" not in msg
    shutil.copytree(cifar10_root, tmp_path, dirs_exist_ok=True)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="missing test_batch"):
        dm(tmp_path, download=False).prepare_data()


def test_failed_download_is_one_clear_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_CIFAR10, "url", (tmp_path / "nowhere.tar.gz").as_uri())
    with pytest.raises(DataError, match="download failed") as e:
        dm(tmp_path, download=True).prepare_data()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"name": "mnist"}, "data.name='mnist' is not valid"),
        ({"num_classes": 100}, "data.num_classes=100 but cifar10 has 10"),
        ({"batch_size": 0}, "data.batch_size=0"),
        ({"val_size": -1}, "data.val_size=-1"),
    ],
)
def test_bad_options(tmp_path: Path, kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        dm(tmp_path, **kw)
