"""Small JPEG folders in ImageNet's ImageFolder layout, with ImageNet's oddities: some images
greyscale, some CMYK, sizes and aspect ratios that vary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WNIDS = ("n02086240", "n02087394", "n02088364", "n02089973")


def write_imagefolder(root: Path, train: int = 12, val: int = 4, seed: int = 0) -> Path:
    """root/{train,val}/<wnid>/*.JPEG; each class has its own colour so a net can learn it."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for c, wnid in enumerate(WNIDS):
            folder = Path(root, split, wnid)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(40, 90, 2)
                colour = np.array([60 * c, 255 - 60 * c, 127], dtype=np.float64)
                pixels = np.clip(colour + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(pixels)
                if i % 5 == 1:
                    img = img.convert("L")
                elif i % 5 == 2:
                    img = img.convert("CMYK")
                img.save(folder / f"ILSVRC2012_{split}_{c}_{i:04d}.JPEG", quality=90)
    return Path(root)
