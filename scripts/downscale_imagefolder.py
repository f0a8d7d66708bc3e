"""Copy an ImageFolder tree (train/, val/) with every image's shorter side resized to SIZE px
and saved as PNG, so low-resolution CPU runs are not bound by decoding large JPEGs.

    python scripts/downscale_imagefolder.py SRC DST [--size 36]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageOps


def downscale(src: Path, dst: Path, size: int) -> int:
    count = 0
    for path in sorted(src.glob("*/*/*")):
        if not path.is_file():
            continue
        out = (dst / path.relative_to(src)).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            scale = size / min(img.size)
            img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC).save(
                out
            )
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="dir holding train/<class>/ and val/<class>/")
    parser.add_argument("dst", type=Path)
    parser.add_argument("--size", type=int, default=36, help="shorter side in pixels")
    args = parser.parse_args()
    print(f"{downscale(args.src, args.dst, args.size)} images written to {args.dst}")


if __name__ == "__main__":
    main()
