"""Where training time goes: one table, every ratio measured side by side in this process.

    python scripts/benchmark.py                                   # ResNet-20, CIFAR, CPU
    python scripts/benchmark.py --device cuda --precision bf16-mixed --channels-last --compile

Rows: the full reslab pipeline (DataModule + LightningModule + Trainer, built from the Hydra
config as `reslab-train` builds it) vs a bare PyTorch loop over the same model, data, batch,
optimizer and schedule; our ResNet's forward+backward vs torchvision's same architecture; the
input pipelines alone (device-resident and DataLoader) vs what the model consumes. Uses CIFAR-10
under --data-dir, or random images in the CIFAR format when there is none there.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from reslab.config import CONFIG_DIR, build, register_resolvers
from reslab.data.gpu_cifar import DeviceLoader, tensors
from reslab.models import imagenet_resnet
from reslab.module import param_groups
from reslab.train import build_module, build_net


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


def config(args: argparse.Namespace, data: str, out: Path) -> DictConfig:
    overrides = [
        f"model={args.model}", f"data={data}", f"data.root={args.data_dir}",
        "data.download=false", "data.verify_md5=false", f"data.batch_size={args.batch_size}",
        f"trainer.accelerator={args.device}", f"trainer.precision={args.precision}",
        f"module.channels_last={args.channels_last}", f"module.compile={args.compile}",
        f"paths.output_dir={out}", "test=false",
    ]  # fmt: skip
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
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


def full_pipeline(cfg: DictConfig, args: argparse.Namespace) -> float:
    """img/s of `reslab-train`'s objects: config-built DataModule, module, callbacks, logger."""
    datamodule = build(cfg.data, "data")
    module = build_module(cfg, datamodule.num_classes)
    timer = StepTimer(args.warmup, args.steps, args.device)
    callbacks = [build(c, f"callbacks.{k}") for k, c in cfg.callbacks.items()]
    loggers = [build(c, f"logger.{k}") for k, c in cfg.logger.items()]
    trainer = build(cfg.trainer, "trainer", callbacks=[*callbacks, timer], logger=loggers)
    trainer.fit(module, datamodule=datamodule)
    return args.steps * args.batch_size / timer.seconds


def autocast(precision: str, device: str) -> contextlib.AbstractContextManager:
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
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
    net = prepare(build_net(cfg, 10), args).train()
    optimizer = build(cfg.optimizer, "optimizer")(param_groups(net, True))
    scheduler = build(cfg.scheduler, "scheduler")["scheduler"](optimizer)
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


def fwd_bwd(net: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace) -> Callable[[], None]:
    def run() -> None:
        with autocast(args.precision, args.device):
            net(x).float().sum().backward()
        sync(args.device)

    return run


def ours_vs_torchvision(args: argparse.Namespace) -> tuple[float, float]:
    """img/s of forward+backward, ours and torchvision's, same weights, interleaved rounds."""
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
    for _ in range(args.rounds * 3):
        for k, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - start)
    return tuple(args.tv_batch / statistics.median(t) for t in times)  # type: ignore[return-value]


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
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the compared runs")
    parser.add_argument("--data-dir", type=Path, default=None, help="holds cifar-10-batches-py/")
    parser.add_argument("--tv-model", default="resnet18", help="torchvision twin to compare")
    parser.add_argument("--tv-size", type=int, default=224)
    parser.add_argument("--tv-batch", type=int, default=16)
    args = parser.parse_args()
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    register_resolvers()
    out = Path(tempfile.mkdtemp(prefix="reslab-bench-"))
    if args.data_dir is None or not (args.data_dir / "cifar-10-batches-py").is_dir():
        args.data_dir = out / "data"
        write_random_cifar10(args.data_dir)
        data_note = "random images in CIFAR-10's format (50k)"
    else:
        data_note = f"CIFAR-10 from {args.data_dir}"

    device_cfg = config(args, "cifar10_gpu", out / "device")
    loader_cfg = config(args, "cifar10", out / "loader")
    dm = build(device_cfg.data, "data")
    dm.setup("fit")
    images, labels = tensors(dm.train_set)
    device_batches = DeviceLoader(
        images.to(args.device), labels.to(args.device), args.batch_size, dm.mean, dm.std,
        pad=dm.pad, flip_p=dm.flip_p, train=True,
    )  # fmt: skip
    cpu_dm = build(loader_cfg.data, "data")
    cpu_dm.setup("fit")
    cpu_batches = cpu_dm.train_dataloader()
    to_device = [(x.to(args.device), y.to(args.device)) for x, y in _take(cpu_batches, 8)]

    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        rows.setdefault("bare", []).append(bare_loop(device_cfg, args, device_batches))
        rows.setdefault("full_device", []).append(full_pipeline(device_cfg, args))
        rows.setdefault("full_loader", []).append(full_pipeline(loader_cfg, args))
        rows.setdefault("model_only", []).append(bare_loop(device_cfg, args, to_device))
    count = args.batch_size * (args.steps + args.warmup)
    device_input = input_pipeline(device_batches, args.device, count * 4)
    loader_input = input_pipeline(cpu_batches, args.device, count)
    ours, theirs = ours_vs_torchvision(args)

    med = {k: statistics.median(v) for k, v in rows.items()}
    bare, model = med["bare"], med["model_only"]
    print(
        f"\n{args.model}, batch {args.batch_size}, {args.precision}, channels_last="
        f"{args.channels_last}, compile={args.compile}, {args.device} "
        f"({torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}), torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; {data_note}; median of "
        f"{args.rounds} rounds of {args.steps} steps\n"
    )
    print("| measurement | img/s | ratio | to |")
    print("| --- | ---: | ---: | --- |")
    table = [
        ("bare PyTorch loop, device-resident data", bare, 1.0, "itself"),
        (
            "reslab-train pipeline, `data=cifar10_gpu`",
            med["full_device"],
            med["full_device"] / bare,
            "bare loop",
        ),
        (
            "reslab-train pipeline, `data=cifar10` (DataLoader)",
            med["full_loader"],
            med["full_loader"] / bare,
            "bare loop",
        ),
        ("model alone (8 cached batches, bare loop)", model, 1.0, "itself"),
        ("input: device-resident loader alone", device_input, device_input / model, "model alone"),
        (
            "input: DataLoader (`data.num_workers`) alone",
            loader_input,
            loader_input / model,
            "model alone",
        ),
        (
            f"our {args.tv_model} fwd+bwd, {args.tv_size}px batch {args.tv_batch}",
            ours,
            ours / theirs,
            "torchvision",
        ),
        (f"torchvision {args.tv_model} fwd+bwd", theirs, 1.0, "itself"),
    ]
    for name, rate, ratio, ref in table:
        print(f"| {name} | {rate:,.0f} | {ratio:.3f} | {ref} |")


def _take(batches: Iterable[Any], n: int) -> list[Any]:
    out = []
    for batch in batches:
        out.append(batch)
        if len(out) == n:
            break
    return out


if __name__ == "__main__":
    main()
