"""The ImageNet input pipeline (`reslab.data.decode`): libjpeg-turbo decoding, uint8 batches
normalised on the device, the recipes' crop geometry, determinism, and the GPU path run by the
same code with `device="cpu"` (the GPU decoder itself only on a CUDA machine)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from reslab.data import ImageFolderDataModule
from reslab.data.decode import (
    Encoded,
    Photo,
    Planner,
    collate_encoded,
    decode_rgb,
    device_images,
    read_encoded,
)
from reslab.data.transforms import Lighting, RandomShorterSideCrop
from reslab.errors import ConfigError, DataError
from reslab.training.builders import build

CONFIGS = Path(__file__).parents[1] / "configs" / "augmentation"
# The recipes' transforms at the fake images' scale (40-90 px): torchvision_v1 and paper.
RECIPES = {
    "torchvision_v1": [v2.RandomResizedCrop(32, antialias=True), v2.RandomHorizontalFlip()],
    "paper": [RandomShorterSideCrop(32, 36, 60), v2.RandomHorizontalFlip(), Lighting()],
}
# Image shapes for the paper crop: landscape and portrait 320 px photos (Imagewoof's), a square,
# and odd sides, so the longer side's truncation in torchvision's resize is exercised.
SHAPES = [(320, 427), (480, 320), (320, 320), (333, 501)]


def recipe(name: str) -> list:
    """A shipped `configs/augmentation/NAME.yaml`'s training transforms, as Hydra builds them."""
    cfg = OmegaConf.create({"augmentation": OmegaConf.load(CONFIGS / f"{name}.yaml")})
    return list(instantiate(cfg.augmentation).train)


def dm(root: Path, train: list, decode: str = "cpu", **kw) -> ImageFolderDataModule:
    aug = {"size": 32, "resize": 36, "train": train}
    kw = {"num_workers": 0, "batch_size": 8, "augmentation": aug, **kw}
    if decode == "cpu":
        return ImageFolderDataModule(root=str(root), **kw)
    # The one thing faked: that a GPU exists (the check at construction); the rest runs as is.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)
        return ImageFolderDataModule(root=str(root), decode="gpu", **kw)


def ramp(height: int, width: int) -> torch.Tensor:
    """uint8 image whose red is the column and green the row (blue constant): a crop's pixels
    say where in the image they came from."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([cols, rows, torch.full_like(rows, 128)]).to(torch.uint8)


def fit(profile: torch.Tensor) -> tuple[float, float]:
    """Slope and intercept of a line through a 1-D profile's interior (the borders of an
    antialiased resize are clamped)."""
    x = torch.arange(len(profile), dtype=torch.float64)[3:-3]
    y = profile.double()[3:-3]
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return slope.item(), (y.mean() - slope * x.mean()).item()


def source_box(out: torch.Tensor) -> tuple[float, float, float, float, bool]:
    """(left, top, width, height) of the source region a 224 output was resized from, and
    whether it was mirrored: output pixel o samples source (o + 0.5) * scale - 0.5 + offset."""
    size = out.shape[-1]
    sx, ix = fit(out[0].double().mean(0))
    sy, iy = fit(out[1].double().mean(1))
    flipped = sx < 0
    if flipped:  # the mirror: column o shows source column of size - 1 - o
        sx, ix = -sx, ix + sx * (size - 1)
    return ix + 0.5 - 0.5 * sx, iy + 0.5 - 0.5 * sy, sx * size, sy * size, flipped


def crops(transforms: list, decode: str, n: int) -> list[tuple[float, float, float, float, bool]]:
    """The source boxes of `n` augmented 256x256 ramps, by the CPU path's transform or by
    the GPU path (plan drawn as a worker draws it, replayed with `device="cpu"`)."""
    image = ramp(256, 256)
    torch.manual_seed(0)
    out = []
    for _ in range(n):
        if decode == "cpu":
            x = v2.Compose(transforms)(image)
        else:
            sample = Planner(transforms)(Encoded(image, (256, 256), "ramp"))
            (x,) = device_images(collate_encoded([(sample, 0)]), "cpu", transforms, None)
        out.append(source_box(x))
    return out


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_random_resized_crop_geometry_of_torchvision_v1_and_modern(decode: str) -> None:
    """RandomResizedCrop: a source box of 8-100% of the area, aspect ratio 3/4-4/3, inside the
    image, resized to 224; mirrored half the time. Read back from the pixels."""
    transforms = recipe("torchvision_v1")
    assert [type(t) for t in recipe("modern")[:2]] == [type(t) for t in transforms]
    boxes = crops(transforms, decode, 120)
    areas, ratios = [], []
    for left, top, w, h, _ in boxes:
        assert min(left, top) > -1 and max(left + w, top + h) < 257
        areas.append(w * h / 256**2)
        ratios.append(w / h)
    assert 0.08 * 0.95 < min(areas) < 0.2 and 0.8 < max(areas) < 1.03
    assert 3 / 4 * 0.97 < min(ratios) < 0.85 and 1.18 < max(ratios) < 4 / 3 * 1.03
    flips = sum(b[4] for b in boxes)
    assert 40 < flips < 80


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_paper_geometry_shorter_side_256_to_480_then_a_224_crop(decode: str) -> None:
    """He et al.: the image resized so its shorter side is random in [256, 480], a random 224
    crop of that, mirrored half the time (Lighting left out here: it shifts the colours)."""
    transforms = [t for t in recipe("paper") if not isinstance(t, Lighting)]
    boxes = crops(transforms, decode, 120)
    sides, lefts = [], []
    for left, top, w, h, _ in boxes:
        side = 256 * 224 / w  # the resized image's side: 224 output pixels span w source ones
        assert abs(w - h) < 0.02 * w and 255 < side < 482
        assert min(left, top) > -1 and max(left + w, top + h) < 257
        sides.append(side)
        lefts.append(left / (256 - w) if w < 250 else 0.5)
    assert min(sides) < 290 and max(sides) > 440
    assert min(lefts) < 0.15 and max(lefts) > 0.85  # the crop moves over the whole image
    assert 40 < sum(b[4] for b in boxes) < 80


def resize_then_crop(height: int, width: int) -> tuple[int, int, int, int]:
    """The window torchvision's two-step recipe draws next (RandomResize 256-480, RandomCrop
    224), as (resized height, resized width, top, left) in resized pixels; sized on a
    bounding-box stand-in, as the GPU path's Planner does (no pixels)."""
    canvas = tv_tensors.BoundingBoxes(torch.zeros(1, 4), format="XYXY", canvas_size=(height, width))
    resize, crop = v2.RandomResize(256, 481), v2.RandomCrop(224)
    resized = resize.transform(canvas, resize.make_params([canvas]))
    params = crop.make_params([resized])
    return (*resized.canvas_size, params["top"], params["left"])


@pytest.mark.parametrize("shape", SHAPES)
def test_shorter_side_crop_is_the_resize_then_crop_window_mapped_back(
    shape: tuple[int, int],
) -> None:
    """From the same seed, `RandomShorterSideCrop` draws the two-step recipe's side and window
    and takes their source region: each end of the window mapped back to source pixels and
    rounded (so within half a source pixel), inside the image. Over 600 draws the side comes
    within 4 px of both ends of [256, 480] and the window reaches both edges of both axes."""
    height, width = shape
    image = tv_tensors.Image(torch.zeros(3, height, width, dtype=torch.uint8))
    ours = RandomShorterSideCrop(224, 256, 480)
    sides, spots = set(), {"top": [], "left": []}
    for seed in range(600):
        torch.manual_seed(seed)
        resized_h, resized_w, top, left = resize_then_crop(height, width)
        next_draw = torch.rand(1)
        torch.manual_seed(seed)
        region = ours.make_params([image])
        assert torch.rand(1) == next_draw  # the same random calls: the streams stay in step
        sides.add(min(resized_h, resized_w))
        for key, start, resized, source in (
            ("top", top, resized_h, height),
            ("left", left, resized_w, width),
        ):
            size = region["height" if key == "top" else "width"]
            first, last = start * source / resized, (start + 224) * source / resized
            assert abs(region[key] - first) <= 0.5 and abs(region[key] + size - last) <= 0.5
            assert region[key] >= 0 and region[key] + size <= source
            spots[key].append(region[key] / (source - size) if source > size else 0.5)
    assert min(sides) <= 260 and max(sides) >= 476
    for key, spot in spots.items():
        assert min(spot) < 0.02 and max(spot) > 0.98, key


def smooth(height: int, width: int, period: float = 80.0) -> tv_tensors.Image:
    """A uint8 photo stand-in whose channels are products of sines of one period: its slope is
    at most 100 * 2 pi / period levels per pixel along either axis."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    phase = 2 * math.pi / period
    channels = [
        127.5 + 100 * torch.sin(phase * x + c) * torch.sin(phase * y + 2 * c) for c in (0, 1, 2)
    ]
    return tv_tensors.Image(torch.stack(channels).round().to(torch.uint8))


@pytest.mark.parametrize("shape", SHAPES)
def test_shorter_side_crop_matches_the_crop_of_the_resized_image(shape: tuple[int, int]) -> None:
    """On a smooth image the region resize gives the pixels of the resized image's crop up to
    its grid shift: bilinear sampling moved by dy, dx source pixels changes a value by at most
    slope * (dy + dx), the slope here at most 7.85 levels per pixel plus 1 for the source's
    rounding to uint8, and each result rounds by 0.5 more. dy and dx, the larger of the
    window's two end shifts on each axis, are at most 0.5, so the bound is at most 9.9 levels;
    each draw is held to its own. The window 2 rows lower fails it."""
    height, width = shape
    image = smooth(height, width)
    slope = 100 * 2 * math.pi / 80 + 1
    two_step = v2.Compose([v2.RandomResize(256, 481), v2.RandomCrop(224)])
    ours = RandomShorterSideCrop(224, 256, 480)
    for seed in range(40):
        torch.manual_seed(seed)
        ref = two_step(image)
        torch.manual_seed(seed)
        resized_h, resized_w, top, left = resize_then_crop(height, width)
        torch.manual_seed(seed)
        region = ours.make_params([image])
        shifts = []
        for start, resized, source, at, size in (
            (top, resized_h, height, region["top"], region["height"]),
            (left, resized_w, width, region["left"], region["width"]),
        ):
            first, last = start * source / resized, (start + 224) * source / resized
            shifts.append(max(abs(at - first), abs(at + size - last)))
        bound = slope * sum(shifts) + 1
        out = ours.transform(image, region)
        assert out.shape == ref.shape == (3, 224, 224)
        assert (out.int() - ref.int()).abs().max() <= bound, (seed, shifts)
        if region["top"] + region["height"] + 2 <= height:
            off = ours.transform(image, {**region, "top": region["top"] + 2})
            assert (off.int() - ref.int()).abs().max() > bound, seed


def test_shorter_side_crop_refuses_a_crop_larger_than_the_smallest_side() -> None:
    cfg = OmegaConf.create({"augmentation": OmegaConf.load(CONFIGS / "paper.yaml")})
    cfg.augmentation.size = 300
    with pytest.raises(ConfigError, match=r"size=300, min_side=256.*lower augmentation\.size"):
        build(cfg.augmentation, "augmentation")


def test_decodes_grey_cmyk_and_png_as_rgb_like_pil(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for mode, kind in (("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "JPEG"), ("RGB", "PNG")):
        path = tmp_path / f"{mode}_{kind}.JPEG"  # ImageNet has a PNG named .JPEG
        Image.fromarray(pixels).convert(mode).save(path, kind)
        ours = decode_rgb(str(path))
        theirs = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert ours.shape == (3, 30, 40) and ours.dtype == torch.uint8
        assert torch.equal(ours, theirs), (mode, kind)
    bad = tmp_path / "bad.JPEG"
    bad.write_bytes(b"not a jpeg")
    for read in (decode_rgb, read_encoded):  # the CPU path's reader, the GPU path's
        with pytest.raises(DataError, match=f"cannot read image {bad}: .*; delete or replace"):
            read(str(bad))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_photos_resized_crop_is_torchvisions_from_a_dense_copy(shape: tuple[int, int]) -> None:
    """`Photo` sends `resized_crop` to `dense_resized_crop`: torchvision's pixels for crops
    inside the image and over its edge (padded), up and down, with and without antialiasing,
    and the result stays a Photo, interleaved in memory as the decoder writes it."""
    height, width = shape
    rng = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=rng)
    photo, image = Photo(pixels.permute(2, 0, 1)), tv_tensors.Image(pixels.permute(2, 0, 1))
    boxes = [(0, 0, height, width), (11, 23, 150, 201), (height - 50, width - 60, 80, 90)]
    for box in boxes:
        for size in ([224, 224], [64, 48], [400, 400]):
            for antialias in (True, False):
                ours = TF.resized_crop(photo, *box, size=size, antialias=antialias)
                theirs = TF.resized_crop(image, *box, size=size, antialias=antialias)
                assert type(ours) is Photo and torch.equal(ours, theirs), (box, size)
                assert ours.permute(1, 2, 0).is_contiguous()


@pytest.mark.parametrize("name", ["torchvision_v1", "paper", "modern"])
def test_batches_keep_the_cheaper_layout_and_reach_the_model_contiguous(
    imagefolder_root: Path, name: str
) -> None:
    """Crops, flips and lighting keep a photo interleaved; a recipe with other transforms
    (TrivialAugment) takes torchvision's kernels; the images are the plain transforms' either
    way, the batch is `default_collate`'s, stacked in the images' own layout, and normalised to
    a contiguous tensor."""
    train = [*recipe(name)[:-2], v2.TrivialAugmentWide()] if name == "modern" else RECIPES[name]
    data = dm(imagefolder_root, train)
    data.setup("fit")
    torch.manual_seed(0)
    samples = [data.train_set[i] for i in range(8)]
    torch.manual_seed(0)
    plain = v2.Compose(train)
    direct = [plain(decode_rgb(path)) for path, _ in data.train_set.samples[:8]]
    assert all(torch.equal(a, b) for (a, _), b in zip(samples, direct, strict=True))
    assert all((type(image) is Photo) == (name != "modern") for image, _ in samples)
    assert all(type(image) is Photo for image, _ in data.val_set)
    x, y = data.collate_fn(samples)
    ref_x, ref_y = default_collate(samples)
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)
    # interleaved: one row copy per image, no transpose
    assert x.permute(0, 2, 3, 1).is_contiguous() == (name != "modern")
    normalised, _ = data.on_after_batch_transfer((x, y), 0)
    assert normalised.is_contiguous()


def test_batches_are_uint8_and_normalised_on_the_device(imagefolder_root: Path) -> None:
    """The loader sends uint8; `on_after_batch_transfer` gives the pixels torchvision's
    ToDtype + Normalize would have given in the workers."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    data = dm(imagefolder_root, RECIPES["torchvision_v1"], mean=mean, std=std)
    data.setup("fit")
    x, y = next(iter(data.val_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 32, 32)
    nx, ny = data.on_after_batch_transfer((x, y), 0)
    ref = v2.Normalize(mean, std)(v2.ToDtype(torch.float32, scale=True)(x))
    assert torch.equal(nx, ref) and ny is y


@pytest.mark.parametrize("name", list(RECIPES))
def test_gpu_path_on_the_cpu_equals_the_cpu_path(imagefolder_root: Path, name: str) -> None:
    """The same seed gives bit-identical training images (crop, resize, flip, lighting drawn by
    the workers, applied after decoding), and the evaluation crops (centre, 10 crops) are
    the CPU path's, through the loaders and the batch hook."""
    cpu, gpu = (dm(imagefolder_root, RECIPES[name], d) for d in ("cpu", "gpu"))
    for data in (cpu, gpu):
        data.setup("fit")
    for seed in (0, 1):
        torch.manual_seed(seed)
        ref = torch.stack([cpu.train_set[i][0] for i in range(len(cpu.train_set))])
        torch.manual_seed(seed)
        batch = gpu.collate_fn([gpu.train_set[i] for i in range(len(gpu.train_set))])
        x, y = gpu.device_batch(batch, "cpu")
        assert x.dtype == torch.uint8 and torch.equal(x, ref)
        assert y.tolist() == cpu.train_set.targets
    ref = torch.cat([x for x, _ in cpu.val_dataloader()])
    ours = torch.cat([gpu.device_batch(b, "cpu")[0] for b in gpu.val_dataloader()])
    assert torch.equal(ours, ref)
    ten_cpu, ten_gpu = (
        dm(imagefolder_root, RECIPES[name], d, ten_crop=True) for d in ("cpu", "gpu")
    )
    for data in (ten_cpu, ten_gpu):
        data.setup("test")
    ref = next(iter(ten_cpu.test_dataloader()))[0]
    ours = ten_gpu.device_batch(next(iter(ten_gpu.test_dataloader())), "cpu")[0]
    assert ours.shape == (8, 10, 3, 32, 32) and torch.equal(ours, ref)


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_same_seed_same_batches_with_workers(imagefolder_root: Path, decode: str) -> None:
    """Shuffling and augmentation in a worker process follow `data.seed` to the last bit, and
    not the process's RNG."""

    def first_batches(seed: int) -> list[torch.Tensor]:
        data = dm(imagefolder_root, RECIPES["paper"], decode, num_workers=1, seed=seed)
        data.setup("fit")
        torch.manual_seed(len(calls))
        calls.append(seed)
        out = []
        for batch, _ in zip(data.train_dataloader(), range(2), strict=False):
            out.append(batch[0] if decode == "cpu" else data.device_batch(batch, "cpu")[0])
        return out

    calls: list[int] = []
    a, b, c = first_batches(0), first_batches(0), first_batches(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_gpu_decode_is_refused_without_cuda(
    imagefolder_root: Path, tmp_path: Path, train_in_process
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match=r"data\.decode=gpu decodes on a CUDA GPU"):
        ImageFolderDataModule(root=str(imagefolder_root), decode="gpu")
    run = train_in_process(
        ["data=imagefolder", f"data.root={imagefolder_root}", "data.decode=gpu"],
        imagefolder_root,
        tmp_path,
    )
    assert run.code != 0
    (line,) = [ln for ln in run.err.splitlines() if ln.startswith("reslab: error:")]
    assert line.startswith("reslab: error: data.decode=gpu decodes on a CUDA GPU")
    assert line.endswith("use data.decode=cpu") and "Traceback" not in run.err
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").rglob("*.ckpt"))


def test_gpu_decode_refuses_what_it_cannot_replay_and_a_cpu_trainer(
    imagefolder_root: Path, tmp_path: Path
) -> None:
    import lightning as L

    from reslab.checks.preflight import check_built
    from reslab.models import imagenet_resnet
    from reslab.training.classifier import ImageClassifier

    with pytest.raises(ConfigError, match=r"not TrivialAugmentWide .*use data\.decode=cpu"):
        dm(imagefolder_root, recipe("modern"), "gpu")
    data = dm(imagefolder_root, RECIPES["paper"], "gpu")
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    module = ImageClassifier(imagenet_resnet(18, num_classes=4))
    with pytest.raises(ConfigError, match=r"data\.decode=gpu .* trains on cpu; use trainer=gpu"):
        check_built(trainer, data, module)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG needs a CUDA GPU")
def test_on_a_gpu_nvjpeg_decodes_like_libjpeg_turbo(imagefolder_root: Path) -> None:
    """On CUDA: the batch decoded by nvJPEG and cropped there is within a few levels of the
    CPU path's (two decoders' rounding), training batches follow the seed."""
    cpu = ImageFolderDataModule(
        root=str(imagefolder_root), num_workers=0, batch_size=8,
        augmentation={"size": 32, "resize": 36, "train": RECIPES["paper"]},
    )  # fmt: skip
    gpu = ImageFolderDataModule(
        root=str(imagefolder_root), num_workers=0, batch_size=8, decode="gpu",
        augmentation={"size": 32, "resize": 36, "train": RECIPES["paper"]},
    )  # fmt: skip
    cpu.setup("fit")
    gpu.setup("fit")
    ref = next(iter(cpu.val_dataloader()))[0]
    ours = gpu.device_batch(next(iter(gpu.val_dataloader())), "cuda")[0]
    assert ours.is_cuda and (ours.cpu().int() - ref.int()).abs().float().mean() < 2
    torch.manual_seed(0)
    a = gpu.device_batch(next(iter(gpu.train_dataloader())), "cuda")[0]
    torch.manual_seed(0)
    b = gpu.device_batch(next(iter(gpu.train_dataloader())), "cuda")[0]
    assert torch.equal(a, b)


def test_a_corrupt_jpeg_in_a_gpu_batch_is_named(imagefolder_root: Path, tmp_path: Path) -> None:
    """The header reads, the data does not: the batch decoder fails, the file is named."""
    shutil.copytree(imagefolder_root, tmp_path / "copy")
    good = next(p for p in (tmp_path / "copy" / "val").rglob("*.JPEG") if _is_rgb_jpeg(p))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 3])
    gpu = dm(tmp_path / "copy", RECIPES["paper"], "gpu")
    gpu.setup("fit")
    index = [p for p, _ in gpu.val_set.samples].index(str(good))
    batch = gpu.collate_fn([gpu.val_set[index]])
    with pytest.raises(DataError, match=f"cannot read image {good}"):
        gpu.device_batch(batch, "cpu")


def _is_rgb_jpeg(path: Path) -> bool:
    with Image.open(path) as image:
        return image.mode == "RGB"


def test_ramp_readout_is_exact_on_known_crops() -> None:
    """The geometry readout itself: a known crop and mirror are read back."""
    image = ramp(256, 256)
    out = v2.functional.resized_crop(image, 30, 50, 120, 160, [224, 224], antialias=True)
    left, top, w, h, flipped = source_box(v2.functional.horizontal_flip(out))
    assert flipped and math.isclose(left, 50, abs_tol=0.5) and math.isclose(top, 30, abs_tol=0.5)
    assert math.isclose(w, 160, rel_tol=0.01) and math.isclose(h, 120, rel_tol=0.01)
