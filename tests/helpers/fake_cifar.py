"""Small archives in the exact on-disk format of the official CIFAR python releases.

Images are learnable: each class has its own colour and stripe pattern plus noise, so a short
training run can show accuracy well above chance.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    hue = np.stack(
        [
            np.linspace(40, 215, num_classes),
            np.linspace(215, 40, num_classes)[np.random.default_rng(1).permutation(num_classes)],
            (np.arange(num_classes) * 97) % 176 + 40,
        ],
        axis=1,
    )
    img = np.broadcast_to(hue[labels][:, :, None, None], (n, 3, 32, 32)).astype(np.float32)
    stripes = (np.arange(32)[None, :] // (2 + labels[:, None] % 4)) % 2
    img = img + 30 * stripes[:, None, :, None]
    img = img + rng.normal(0, 20, img.shape)
    # Row-major 3x32x32 per image: 1024 red, 1024 green, 1024 blue, as in the official files.
    return np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 100, test: int = 200, seed: int = 0) -> Path:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    for i, (name, n) in enumerate([*((nm, per_batch) for nm in names), ("test_batch", test)]):
        labels = rng.integers(0, 10, n)
        _dump(
            folder / name,
            {
                "batch_label": f"batch {i + 1} of 5" if name != "test_batch" else "testing batch",
                "labels": labels.tolist(),
                "data": _images(labels, 10, rng),
                "filenames": [f"img_{i}_{j}.png" for j in range(n)],
            },
        )
    label_names = ["airplane", "automobile", "bird", "cat", "deer"]
    label_names += ["dog", "frog", "horse", "ship", "truck"]
    _dump(
        folder / "batches.meta",
        {"num_cases_per_batch": per_batch, "label_names": label_names, "num_vis": 3072},
    )
    return Path(root)


def write_cifar100(root: Path, train: int = 500, test: int = 200, seed: int = 0) -> Path:
    """root/cifar-100-python/{train, test, meta}."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        fine = rng.integers(0, 100, n)
        _dump(
            folder / name,
            {
                "filenames": [f"img_{j}.png" for j in range(n)],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": fine.tolist(),
                "coarse_labels": (fine // 5).tolist(),
                "data": _images(fine, 100, rng),
            },
        )
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)],
        },
    )
    return Path(root)
