"""Where training time goes: one table, every ratio measured side by side in this process.

    python scripts/benchmark.py                                   # ResNet-20, CIFAR, CPU
    python scripts/benchmark.py --device cuda --precision bf16-mixed --channels-last --compile
    python scripts/benchmark.py --device cuda --model resnet50 --data synthetic --image-size 224

Rows: the full reslab pipeline (DataModule + LightningModule + Trainer, built from the Hydra
config as `reslab-train` builds it) vs a bare PyTorch loop over the same model, data, batch,
optimizer and schedule; our ResNet's forward+backward vs torchvision's same architecture; the
input pipelines alone (device and workers) vs what the model consumes. Training rows also give
the model FLOP utilisation: forward+backward FLOPs counted by `torch.utils.flop_counter`, over
the device's peak (datasheet for known GPUs, else a measured matmul). Uses CIFAR-10 under
--data-dir, or random images in the CIFAR format when there is none there; `--data synthetic`
serves random device-resident images of --image-size instead (no DataModule, no files).
`--data imagefolder --data-dir DIR` compares ImageNet's input pipelines instead: PIL decoding
(the pipeline before `data.decode`), `data.decode=cpu` and, on CUDA, `data.decode=gpu`, each
with one worker core, against what the model consumes, in the same rotated rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import pickle
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from host_syncs import HostSyncs
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from reslab.commands.startup import register_resolvers
from reslab.data.base import build_transform
from reslab.data.device import DeviceLoader, tensors
from reslab.data.transforms import RandomShorterSideCrop
from reslab.models import imagenet_resnet
from reslab.training.builders import build, build_datamodule, build_module, build_net, build_trainer
from reslab.training.classifier import param_groups

HALF = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

# Dense (no sparsity) tensor-core peaks from NVIDIA's datasheets, TFLOP/s: (fp32, tf32, 16-bit).
# Matched on torch.cuda.get_device_name(); first match wins, so PCIe comes before SXM.
GPU_PEAKS = {
    "H100 PCIe": (51.2, 378.0, 756.0),
    "H100": (66.9, 494.7, 989.4),
    "H200": (66.9, 494.7, 989.4),
    "A100": (19.5, 156.0, 312.0),
}


def write_random_cifar10(root: Path, n: int = 50_000) -> None:
    """Random pixels in the official CIFAR-10 python format (speed does not depend on them)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = n // 5 if name != "test_batch" else 1000
        batch = {
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, count).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)


def config(args: argparse.Namespace, pipeline: str, out: Path) -> DictConfig:
    overrides = [
        f"model={args.model}", f"data.pipeline={pipeline}", f"data.root={args.data_dir}",
        "data.download=false", "data.verify_md5=false", f"data.batch_size={args.batch_size}",
        f"trainer.accelerator={args.device}", f"trainer.precision={args.precision}",
        f"module.channels_last={args.channels_last}", f"module.compile={args.compile}",
        f"paths.output_dir={out}", "test=false", f"model.num_classes={args.num_classes}",
    ]  # fmt: skip
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.trainer.max_steps = args.warmup + args.steps
        cfg.trainer.limit_val_batches = 0
    return cfg


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepTimer(L.Callback):
    """Wall time of training steps warmup .. warmup + steps - 1, Lightning's work included."""

    def __init__(self, warmup: int, steps: int, device: str) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.seconds = float("nan")

    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        if trainer.global_step == self.warmup:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if trainer.global_step == self.warmup + self.steps:
            sync(self.device)
            self.seconds = time.perf_counter() - self.start


class SyntheticData(L.LightningDataModule):
    """Random uint8 images resident on the training device, served (flipped, normalised) by
    the device pipeline's loader: the pipeline rows then time module + Trainer alone."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def train_dataloader(self) -> DeviceLoader:
        return synthetic_loader(self.images, self.labels, self.batch_size)


def synthetic_loader(images: torch.Tensor, labels: torch.Tensor, batch: int) -> DeviceLoader:
    mean = std = (0.5, 0.5, 0.5)
    return DeviceLoader(images, labels, batch, mean, std, flip_p=0.5, train=True)


def full_pipeline(cfg: DictConfig, args: argparse.Namespace, datamodule: Any = None) -> float:
    """img/s of `reslab-train`'s objects: config-built DataModule (unless given), module,
    Trainer with its callbacks and logger."""
    datamodule = datamodule or build_datamodule(cfg)
    module = build_module(cfg)
    trainer = build_trainer(cfg)
    timer = StepTimer(args.warmup, args.steps, args.device)
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule)
    if trainer.global_step < args.warmup + args.steps:
        raise SystemExit(f"benchmark: the reslab-train run stopped at step {trainer.global_step}")
    del trainer, datamodule  # persistent DataLoader workers exit before the next measurement
    gc.collect()
    return args.steps * args.batch_size / timer.seconds


def autocast(precision: str, device: str) -> contextlib.AbstractContextManager:
    dtype = HALF.get(precision)
    return torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()


def prepare(net: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    """The module's switches, applied the way `ImageClassifier.setup` applies them."""
    net = net.to(args.device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if args.compile:
        net.compile()
    return net


def bare_loop(cfg: DictConfig, args: argparse.Namespace, batches: Iterable[Any]) -> float:
    """img/s of a hand-written loop: same net, optimizer, schedule, precision and batches."""
    net = prepare(build_net(cfg), args).train()
    optimizer = build(cfg.optimizer, "optimizer")(param_groups(net, True))
    schedule = build(cfg.scheduler, "scheduler")
    schedulers = [c["scheduler"] for c in schedule.configure(optimizer, cfg.trainer.max_steps)]
    scaler = torch.amp.GradScaler(enabled=args.precision == "16-mixed")
    step, start = 0, 0.0
    while step < args.warmup + args.steps:
        for x, y in batches:
            if step == args.warmup:
                sync(args.device)
                start = time.perf_counter()
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(args.precision, args.device):
                loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            for scheduler in schedulers:
                scheduler.step()
            step += 1
            if step == args.warmup + args.steps:
                break
    sync(args.device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def input_pipeline(batches: Iterable[Any], device: str, count: int) -> float:
    """img/s a loader delivers onto the device with nothing else to do."""
    seen, start = 0, time.perf_counter()
    while seen < count:
        for x, _ in batches:
            x = x.to(device, non_blocking=True)
            seen += len(x)
            if seen >= count:
                break
    sync(device)
    return seen / (time.perf_counter() - start)


def host_bound(args: argparse.Namespace, out: Path, images: int = 64) -> tuple[Any, DictConfig]:
    """The benchmark's model on batches so small (2 images of 8 px, 32 for ImageNet nets)
    that a step's time is mostly host time: the framework's own share shows. Returns the
    settings (with `.data`: random device-resident images and labels) and the config."""
    small = argparse.Namespace(**{**vars(args), "batch_size": 2, "warmup": 10})
    small.steps = args.overhead_steps
    cfg = config(small, "device", out)
    small.image_size = 8 if cfg.model._target_.endswith("cifar_resnet") else 32
    shape = (images, 3, small.image_size, small.image_size)
    small.data = (
        torch.randint(0, 256, shape, dtype=torch.uint8, device=args.device),
        torch.randint(0, args.num_classes, (images,), device=args.device),
    )
    return small, cfg


def framework_time(args: argparse.Namespace, out: Path) -> tuple[int, float, float, float]:
    """Image size of the host-bound steps; their ms per step in the bare loop and in the
    reslab-train pipeline (medians of --rounds alternating pairs), and the median of the
    pairs' differences."""
    small, cfg = host_bound(args, out)
    images, labels = small.data
    runs = {
        "bare": lambda: bare_loop(cfg, small, synthetic_loader(images, labels, 2)),
        "full": lambda: full_pipeline(cfg, small, SyntheticData(images, labels, 2)),
    }
    ms: dict[str, list[float]] = {key: [] for key in runs}
    for round_ in range(args.rounds):
        for key in list(runs)[:: 1 if round_ % 2 == 0 else -1]:
            ms[key].append(2000 / runs[key]())
    diff = statistics.median(f - b for b, f in zip(ms["bare"], ms["full"], strict=True))
    return small.image_size, statistics.median(ms["bare"]), statistics.median(ms["full"]), diff


class CountSyncs(L.Callback):
    """`HostSyncs` (scripts/host_syncs.py) over training steps first+1 .. last, each step's logging
    included (counted from a step's start to the next step's start)."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last, self.syncs = first, last, HostSyncs()

    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        if trainer.global_step == self.first:
            self.syncs.__enter__()
        elif trainer.global_step == self.last:
            self.syncs.__exit__(None, None, None)


def host_syncs(args: argparse.Namespace, out: Path, period: int) -> tuple[int, Counter[str]]:
    """Host-device syncs of the bare loop over `period` (log_every_n_steps) steps, and of
    reslab-train in one logging period mid-epoch (steps period+1 .. 2 period) by where they
    happen; on host-bound steps (the count does not depend on the batch)."""
    small, cfg = host_bound(args, out, images=4 * period + 4)
    images, labels = small.data
    with open_dict(cfg):
        cfg.trainer.max_steps = 2 * period + 1
    module = build_module(cfg)
    trainer = build_trainer(cfg)
    count = CountSyncs(period, 2 * period)
    trainer.callbacks.append(count)
    trainer.fit(module, datamodule=SyntheticData(images, labels, 2))
    small.warmup, small.steps = 0, period
    with HostSyncs() as bare:
        bare_loop(cfg, small, synthetic_loader(images, labels, 2))
    return bare.total, count.syncs.calls


def fwd_bwd(net: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace) -> Callable[[], None]:
    def run() -> None:
        with autocast(args.precision, args.device):
            net(x).float().sum().backward()
        sync(args.device)

    return run


def train_flops_per_image(cfg: DictConfig, args: argparse.Namespace) -> float:
    """FLOPs of one training step's forward+backward per image, counted on the CPU."""
    net = build_net(cfg).train()
    x = torch.randn(2, 3, args.image_size, args.image_size)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return counter.get_total_flops() / 2


def peak_flops(args: argparse.Namespace) -> tuple[float, str]:
    """(FLOP/s, source) the utilisation is measured against."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12, "--peak-tflops"
    sixteen = args.precision in HALF
    if args.device == "cuda":
        name = torch.cuda.get_device_name()
        for key, (fp32, tf32, half) in GPU_PEAKS.items():
            if key in name:
                if sixteen:
                    return half * 1e12, f"{key} datasheet, dense 16-bit"
                if torch.backends.cudnn.allow_tf32:  # PyTorch's default for convolutions
                    return tf32 * 1e12, f"{key} datasheet, dense TF32 (cudnn.allow_tf32)"
                return fp32 * 1e12, f"{key} datasheet, fp32"
    # Mixed precision runs some ops in fp32: on a CPU without fast 16-bit units that is the
    # faster path, so the peak is the best of both.
    dtypes = [torch.float32, *([HALF[args.precision]] if args.precision in HALF else [])]
    n = 4096 if args.device == "cuda" else 2048
    best = {dtype: matmul_flops(n, dtype, args.device) for dtype in dtypes}
    dtype = max(best, key=best.get)
    return best[dtype], f"measured {n}x{n} {str(dtype).removeprefix('torch.')} matmul"


def matmul_flops(n: int, dtype: torch.dtype, device: str) -> float:
    """FLOP/s of the best of ten n x n matmuls."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(10):
        sync(device)
        start = time.perf_counter()
        a @ a
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def ours_vs_torchvision(args: argparse.Namespace) -> tuple[float, float, float]:
    """img/s of forward+backward, ours and torchvision's, same weights, and the median of
    their paired speed ratios; pairs alternate who runs first."""
    depth = int(args.tv_model.removeprefix("resnet"))
    ours = imagenet_resnet(depth=depth, shortcut="B")
    theirs = getattr(torchvision.models, args.tv_model)()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(args.tv_batch, 3, args.tv_size, args.tv_size, device=args.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    runs = [fwd_bwd(prepare(net, args).train(), x, args) for net in (ours, theirs)]
    for run in runs:
        run()
    times: list[list[float]] = [[], []]
    for pair in range(args.rounds * 4):
        for k in (0, 1) if pair % 2 == 0 else (1, 0):
            start = time.perf_counter()
            runs[k]()
            times[k].append(time.perf_counter() - start)
    ratio = statistics.median(b / a for a, b in zip(*times, strict=True))
    return (
        args.tv_batch / statistics.median(times[0]),
        args.tv_batch / statistics.median(times[1]),
        ratio,
    )


def pil_rgb(path: str) -> Image.Image:
    """The decoder before `data.decode`: PIL, converted to RGB."""
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def two_step(steps: list[Any]) -> list[Any]:
    """The transforms as before `RandomShorterSideCrop`: it becomes torchvision's RandomResize
    (the whole image) + RandomCrop, which draw the same side and window."""
    out: list[Any] = []
    for t in steps:
        if isinstance(t, RandomShorterSideCrop):
            resize = v2.RandomResize(t.min_side, t.max_side + 1, t.interpolation, t.antialias)
            out += [resize, v2.RandomCrop(t.size)]
        else:
            out.append(t)
    return out


def imagefolder_config(args: argparse.Namespace, decode: str, out: Path) -> DictConfig:
    overrides = [
        f"model={args.model}", "data=imagefolder", f"data.root={args.data_dir}",
        f"data.decode={decode}", "data.num_workers=0", f"data.batch_size={args.batch_size}",
        f"augmentation={args.augmentation}", f"trainer.accelerator={args.device}",
        f"trainer.precision={args.precision}", f"module.channels_last={args.channels_last}",
        f"module.compile={args.compile}", f"paths.output_dir={out}", "test=false",
    ]  # fmt: skip
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.trainer.max_steps = args.warmup + args.steps
    return cfg


def decode_paths(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Per decode path, its DataModule, set up; `pil` is `decode=cpu`'s with PIL decoding, the
    two-step resize and crop (`two_step`), the float conversion and normalisation in the
    worker and torch's default collate, as before `data.decode`. All take the same
    augmentation."""
    paths = ["pil", "cpu"] + (["gpu"] if args.device == "cuda" else [])
    datamodules = {}
    for path in paths:
        dm = build_datamodule(imagefolder_config(args, "cpu" if path == "pil" else path, out))
        dm.setup("fit")
        if path == "pil":
            transform = build_transform(two_step(dm.train_steps), dm.mean, dm.std)
            dm.train_set = ImageFolder(str(dm.root / "train"), transform, loader=pil_rgb)
            dm.uint8_batches, dm.collate_fn = False, None
        datamodules[path] = dm
    return datamodules


def worker_rate(dm: Any, count: int) -> float:
    """img/s of a worker's share (read, decode, augment, collate) on one core: the DataLoader
    in this process with one thread, timed after its first batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seen, start = 0, 0.0
    for i, batch in enumerate(dm.train_dataloader()):
        if i == 0:
            start = time.perf_counter()
            continue
        seen += len(batch[-1])  # the labels
        if seen >= count:
            break
    torch.set_num_threads(threads)
    return seen / (time.perf_counter() - start)


def device_rate(dm: Any, batches: list[Any], device: str) -> float:
    """img/s of `data.decode=gpu`'s device share: decode, augment, normalise, on the GPU."""
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        x, y = dm.device_batch(batch, device)
        dm.on_after_batch_transfer((x, y.to(device)), 0)
    sync(device)
    return sum(len(b.labels) for b in batches) / (time.perf_counter() - start)


def imagefolder_table(args: argparse.Namespace, out: Path) -> None:
    """Each decode path's worker share on one core (and the GPU path's device share), and the
    model alone on cached device batches (bare loop), in rotated rounds; ratios to the PIL
    path measured in the same round, and worker cores needed to keep the model fed."""
    dms = decode_paths(args, out / "paths")
    cfg = imagefolder_config(args, "cpu", out / "model")
    cpu = dms["cpu"]
    cached = [
        cpu.on_after_batch_transfer((x.to(args.device), y.to(args.device)), 0)
        for x, y in _take(cpu.train_dataloader(), 4)
    ]
    count = args.batch_size * args.input_batches
    runs: dict[str, Callable[[], float]] = {
        path: lambda dm=dm: worker_rate(dm, count) for path, dm in dms.items()
    }
    if "gpu" in dms:
        encoded = _take(dms["gpu"].train_dataloader(), 4)
        runs["gpu_device"] = lambda: device_rate(dms["gpu"], encoded, args.device)
    runs["model"] = lambda: bare_loop(cfg, args, cached)
    rows: dict[str, list[float]] = {key: [] for key in runs}
    # The input rows back to back in each round (their ratios are the point; on a CPU the model
    # row takes minutes), rotated among themselves; then the model.
    inputs = [key for key in runs if key != "model"]
    for round_ in range(args.rounds):
        turn = round_ % len(inputs)
        for key in [*inputs[turn:], *inputs[:turn], "model"]:
            rows[key].append(runs[key]())
            print(f"round {round_}: {key} {rows[key][-1]:,.1f} img/s", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    size = cfg.augmentation.size
    print(
        f"\n{args.model}, batch {args.batch_size}, {args.precision}, channels_last="
        f"{args.channels_last}, {args.device} "
        f"({torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}), torch "
        f"{torch.__version__}, torchvision {torchvision.__version__}; ImageFolder "
        f"{args.data_dir}, augmentation={args.augmentation} ({size} px); worker rows: one core "
        f"(DataLoader in process, 1 thread), {count} images after the first batch; model: "
        f"{args.steps} steps on 4 cached batches ({torch.get_num_threads()} threads on a CPU); "
        f"median of {args.rounds} rounds (input rows back to back, rotated)\n"
    )
    names = {
        "pil": "worker: PIL decode, float normalised in the worker (before `data.decode`)",
        "cpu": "worker: `data.decode=cpu` (libjpeg-turbo, v2 on uint8; default)",
        "gpu": "worker: `data.decode=gpu` (read bytes, draw the crops)",
        "gpu_device": "device: `data.decode=gpu` (nvJPEG decode, crop, flip, normalise)",
        "model": f"model alone ({args.model} {args.precision}, {size} px, bare loop)",
    }
    print("| measurement | img/s | rounds min-max | per round to PIL | model / this |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key in runs:
        rate, digits = med[key], int(med[key] < 100)
        to_pil = statistics.median(a / b for a, b in zip(rows[key], rows["pil"], strict=True))
        print(
            f"| {names[key]} | {rate:,.{digits}f} | {min(rows[key]):,.{digits}f}-"
            f"{max(rows[key]):,.{digits}f} | {'' if key == 'model' else f'{to_pil:.2f}'} | "
            f"{med['model'] / rate:.2f} |"
        )
    print(
        "\n`model / this`: on a worker row, the worker cores that path needs to keep the model "
        "fed; on the device row, the share of the model's step time the GPU spends decoding."
    )
    if "gpu" not in dms:
        print("`data.decode=gpu`: not measured (needs --device cuda).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", help="a configs/model option")
    parser.add_argument("--batch-size", type=int, default=128)
    precisions = ["32-true", "bf16-mixed", "16-mixed"]
    parser.add_argument("--precision", default="32-true", choices=precisions)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=4, help="rotations of the compared runs")
    parser.add_argument(
        "--data", default="cifar10", choices=["cifar10", "synthetic", "imagefolder"],
        help="CIFAR-10 through `data=cifar10` (both pipelines), random device-resident images, "
        "or the ImageNet decode paths on an ImageFolder (--data-dir)",
    )  # fmt: skip
    parser.add_argument("--augmentation", default="torchvision_v1", help="of --data imagefolder")
    parser.add_argument(
        "--input-batches", type=int, default=10, help="timed batches per input row (imagefolder)"
    )
    parser.add_argument("--image-size", type=int, default=32, help="of --data synthetic")
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help="holds cifar-10-batches-py/, or train/ and val/ (--data imagefolder)",
    )  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the peak")
    parser.add_argument("--tv-model", default="resnet18", help="torchvision twin to compare")
    parser.add_argument("--tv-size", type=int, default=224)
    parser.add_argument("--tv-batch", type=int, default=16)
    parser.add_argument(
        "--overhead-steps", type=int, default=200, help="timed steps of the host-bound runs"
    )
    parser.add_argument(
        "--training-only", action="store_true",
        help="the training rows alone: no input, torchvision, framework-time or sync rows "
        "(each of those builds, and with --compile compiles, more networks)",
    )  # fmt: skip
    parser.add_argument(
        "--variants", default=None,
        help="compare precision/compile settings side by side instead, e.g. "
        "32-true,bf16-mixed,bf16-mixed+compile: the bare loop and the pipeline under each, "
        "in the same rotated rounds, with ratios to the first",
    )  # fmt: skip
    args = parser.parse_args()
    if args.data == "cifar10" and args.image_size != 32:
        parser.error(f"--image-size={args.image_size} needs --data synthetic (CIFAR is 32px)")
    if args.data == "imagefolder" and (
        args.data_dir is None or not (args.data_dir / "train").is_dir()
    ):
        parser.error(
            f"--data imagefolder needs --data-dir DIR with train/<class>/ (got {args.data_dir})"
        )
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    register_resolvers()
    with tempfile.TemporaryDirectory(prefix="reslab-bench-") as scratch:
        measure(args, Path(scratch))


def measure(args: argparse.Namespace, out: Path) -> None:
    """Every table the arguments ask for; run dirs and generated data go in `out`, removed
    after."""
    if args.data == "imagefolder":
        imagefolder_table(args, out)
        return
    if args.data == "synthetic":
        args.data_dir = out / "data"  # composed, never read
        data_note = f"random device-resident {args.image_size}px images"
    elif args.data_dir is None or not (args.data_dir / "cifar-10-batches-py").is_dir():
        args.data_dir = out / "data"
        write_random_cifar10(args.data_dir)
        data_note = "random images in CIFAR-10's format (50k)"
    else:
        data_note = f"CIFAR-10 from {args.data_dir}"

    args.num_classes = 1000 if args.data == "synthetic" else 10
    device_cfg = config(args, "device", out / "device")
    if args.data == "synthetic":
        shape = (args.batch_size * 8, 3, args.image_size, args.image_size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, device=args.device)
        labels = torch.randint(0, args.num_classes, (shape[0],), device=args.device)
        device_batches = synthetic_loader(images, labels, args.batch_size)
        device_dm = SyntheticData(images, labels, args.batch_size)
        loader_cfg = cpu_batches = None
    else:
        loader_cfg = config(args, "workers", out / "loader")
        dm = build_datamodule(device_cfg)
        dm.setup("fit")
        images, labels = tensors(dm.train_set)
        device_batches = DeviceLoader(
            images.to(args.device), labels.to(args.device), args.batch_size, dm.mean, dm.std,
            pad=dm.pad, flip_p=dm.flip, train=True,
        )  # fmt: skip
        device_dm = None
        cpu_dm = build_datamodule(loader_cfg)
        cpu_dm.setup("fit")
        cpu_batches = cpu_dm.train_dataloader()
    cached = [(x.to(args.device), y.to(args.device)) for x, y in _take(device_batches, 8)]

    if args.variants:
        compare_variants(args, out, device_batches, device_dm, data_note)
        return
    runs: dict[str, Callable[[], float]] = {
        "bare": lambda: bare_loop(device_cfg, args, device_batches),
        "full_device": lambda: full_pipeline(device_cfg, args, device_dm),
        "model_only": lambda: bare_loop(device_cfg, args, cached),
    }
    if loader_cfg is not None:
        runs["full_loader"] = lambda: full_pipeline(loader_cfg, args)
    rows: dict[str, list[float]] = {key: [] for key in runs}
    order = list(runs)
    for round_ in range(args.rounds):  # each round starts one later: no run is always first
        for key in order[round_ % len(order) :] + order[: round_ % len(order)]:
            rows[key].append(runs[key]())
    flops = train_flops_per_image(device_cfg, args)
    peak, peak_source = peak_flops(args)

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(
        f"\n{args.model}, batch {args.batch_size}, {args.precision}, channels_last="
        f"{args.channels_last}, compile={args.compile}, {args.device} "
        f"({torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}), torch "
        f"{torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads; "
        f"{data_note}; median of {args.rounds} rounds of {args.steps} steps; "
        f"{flops / 1e9:.3f} GFLOP per image per training step (forward+backward); peak "
        f"{peak / 1e12:,.2f} TFLOP/s ({peak_source})\n"
    )
    pipeline = "`data=cifar10` (device pipeline, default)"
    if args.data == "synthetic":
        pipeline = "module + Trainer, synthetic device data"
    # Training rows: (name, measurement, reference, its name).
    workers = "reslab-train pipeline, `data.pipeline=workers` (DataLoader)"
    training = [
        ("bare PyTorch loop, device-resident data", "bare", "bare", "itself"),
        (f"reslab-train pipeline, {pipeline}", "full_device", "bare", "bare loop"),
        (workers, "full_loader", "bare", "bare loop"),
        ("model alone (8 cached batches, bare loop)", "model_only", "model_only", "itself"),
    ]
    print("| measurement | img/s | rounds min-max | ratio | to | TFLOP/s | MFU |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for name, key, ref, to in training:
        if key not in med:
            continue
        rate = med[key]
        digits = int(rate < 100)  # one decimal for the slow rows (a CPU's ResNet-50)
        spread = f"{min(rows[key]):,.{digits}f}-{max(rows[key]):,.{digits}f}"
        # A measured peak is a lower bound (a busy machine): above 100% it says nothing.
        mfu = rate * flops / peak
        print(
            f"| {name} | {rate:,.{digits}f} | {spread} | {rate / med[ref]:.3f} | {to} | "
            f"{rate * flops / 1e12:.3f} | {f'{mfu:.1%}' if mfu <= 1 else '- (peak low)'} |"
        )
    if not args.training_only:
        extras(args, out, device_cfg, (device_batches, cpu_batches), med)


def variant(args: argparse.Namespace, spec: str) -> argparse.Namespace:
    """`args` with the precision and compile switch of `spec` (`bf16-mixed+compile`)."""
    precision, _, extra = spec.partition("+")
    if extra not in ("", "compile"):
        raise SystemExit(f"--variants: {spec!r} is not PRECISION or PRECISION+compile")
    return argparse.Namespace(**{**vars(args), "precision": precision, "compile": bool(extra)})


def compare_variants(
    args: argparse.Namespace, out: Path, batches: Iterable[Any], datamodule: Any, note: str
) -> None:
    """The bare loop and the reslab-train pipeline (device data) under each variant, all in
    the same rotated rounds, as img/s and ratios to the first variant's."""
    specs = args.variants.split(",")
    runs: dict[tuple[str, str], Callable[[], float]] = {}
    for spec in specs:
        v = variant(args, spec)
        cfg = config(v, "device", out / spec)
        runs[(spec, "bare")] = lambda cfg=cfg, v=v: bare_loop(cfg, v, batches)
        runs[(spec, "pipeline")] = lambda cfg=cfg, v=v: full_pipeline(cfg, v, datamodule)
    rows: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    order = list(runs)
    for round_ in range(args.rounds):
        for key in order[round_ % len(order) :] + order[: round_ % len(order)]:
            rows[key].append(runs[key]())
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(
        f"\n{args.model}, batch {args.batch_size}, {args.device}, torch {torch.__version__}, "
        f"lightning {L.__version__}, {torch.get_num_threads()} threads; {note}; median of "
        f"{args.rounds} rounds of {args.steps} steps after {args.warmup} warm-up steps "
        "(compilation happens in the warm-up)\n"
    )
    print("| variant | bare loop img/s | ratio | reslab-train img/s | ratio | rounds min-max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for spec in specs:
        bare, full = med[(spec, "bare")], med[(spec, "pipeline")]
        spread = rows[(spec, "pipeline")]
        print(
            f"| {spec} | {bare:,.0f} | {bare / med[(specs[0], 'bare')]:.2f} | {full:,.0f} | "
            f"{full / med[(specs[0], 'pipeline')]:.2f} | {min(spread):,.0f}-{max(spread):,.0f} |"
        )


def extras(
    args: argparse.Namespace,
    out: Path,
    device_cfg: DictConfig,
    batches: tuple[Iterable[Any], Iterable[Any] | None],
    med: dict[str, float],
) -> None:
    """The rows and notes after the training rows: the input pipelines alone, our ResNet vs
    torchvision's, framework time per step and host-device syncs."""
    device_batches, cpu_batches = batches
    count = args.batch_size * (args.steps + args.warmup)
    device_input = input_pipeline(device_batches, args.device, count * 4)
    loader_input = input_pipeline(cpu_batches, args.device, count) if cpu_batches else None
    ours, theirs, ours_ratio = ours_vs_torchvision(args)
    small_size, bare_ms, full_ms, overhead_ms = framework_time(args, out / "overhead")
    period = device_cfg.trainer.log_every_n_steps
    bare_syncs, syncs = host_syncs(args, out / "syncs", period)
    model = med["model_only"]
    # (name, img/s, ratio, to)
    others = [("input: device loader alone", device_input, device_input / model, "model alone")]
    if loader_input is not None:
        name = "input: DataLoader (`data.num_workers`) alone"
        others.append((name, loader_input, loader_input / model, "model alone"))
    size = f"{args.tv_size}px batch {args.tv_batch}"
    others += [
        (f"our {args.tv_model} fwd+bwd, {size}", ours, ours_ratio, "torchvision (paired)"),
        (f"torchvision {args.tv_model} fwd+bwd", theirs, 1.0, "itself"),
    ]
    for name, rate, ratio, to in others:
        print(f"| {name} | {rate:,.{int(rate < 100)}f} | | {ratio:.3f} | {to} | | |")
    step_ms = 1000 * args.batch_size / med["bare"]
    print(
        f"\nFramework time per step, on batches of 2 images of {small_size} px (little work "
        f"for the model, so host time shows), median of {args.rounds} pairs of "
        f"{args.overhead_steps} steps: bare loop {bare_ms:.2f} ms, reslab-train pipeline "
        f"{full_ms:.2f} ms; reslab-train adds {overhead_ms:.2f} ms per step, "
        f"{overhead_ms / step_ms:.1%} of a bare step at batch {args.batch_size} "
        f"({step_ms:.1f} ms): expected pipeline/bare {step_ms / (step_ms + overhead_ms):.3f}."
    )
    where = ", ".join(f"{n} {k}" for k, n in syncs.most_common())
    print(
        f"\nHost-device syncs (each idles a GPU until the host queues more work), counted by "
        f"HostSyncs (scripts/host_syncs.py) over {period} steps (one logging period): bare loop "
        f"{bare_syncs}; reslab-train {sum(syncs.values())}: {where}."
    )


def _take(batches: Iterable[Any], n: int) -> list[Any]:
    out = []
    for batch in batches:
        out.append(batch)
        if len(out) == n:
            break
    return out


if __name__ == "__main__":
    main()
