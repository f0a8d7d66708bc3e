"""`reslab-summary model=<name>`: a model's parameters and multiply-adds per stage and in total,
so a variant's cost can be read before training it and checked against the paper's Table 1."""

from __future__ import annotations

import inspect

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table
from torch import nn

from reslab.commands.task import command
from reslab.errors import ConfigError
from reslab.models.flops import count_macs
from reslab.models.resnet import ResNet, imagenet_resnet
from reslab.training.builders import build_net

# He et al. 2015, Table 1: FLOPs (multiply-adds) at 224x224, by depth.
TABLE1_GFLOPS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
# Options whose non-default value makes a net other than Table 1's.
VARIANT_OPTIONS = ("widths", "stem", "stem_width", "preact", "groups", "base_width", "attention")


def is_cifar(model: DictConfig) -> bool:
    """CIFAR builders (`cifar_resnet`, `wide_cifar_resnet`) take 32x32 images and 10 classes."""
    return "cifar" in str(model.get("_target_", ""))


def table1_gflops(model: DictConfig) -> float | None:
    """Table 1's figure when the config is one of its ImageNet ResNets (or their plain twins)."""
    if not str(model.get("_target_", "")).endswith("imagenet_resnet"):
        return None
    defaults = {
        k: list(p.default) if isinstance(p.default, tuple) else p.default
        for fn in (ResNet, imagenet_resnet)
        for k, p in inspect.signature(fn).parameters.items()
    }
    given = OmegaConf.to_container(model)
    if any(given.get(key, defaults[key]) != defaults[key] for key in VARIANT_OPTIONS):
        return None
    return TABLE1_GFLOPS.get(int(model.get("depth", 18)))


def output_shapes(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, tuple]:
    """The shape each top-level part hands on, for one image."""
    shapes: dict[str, tuple] = {}
    hooks = [
        child.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
        for name, child in model.named_children()
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_size))
    for h in hooks:
        h.remove()
    return shapes


def summarize(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, dict]:
    """Per top-level part with parameters or work: params, MACs, output shape; and `total`."""
    macs = count_macs(model, input_size)
    shapes = output_shapes(model, input_size)
    rows: dict[str, dict] = {}
    for name, child in model.named_children():
        params = sum(p.numel() for p in child.parameters())
        if params or macs.get(name):
            rows[name] = {"params": params, "macs": macs.get(name, 0), "shape": shapes.get(name)}
    rows["total"] = {
        "params": sum(p.numel() for p in model.parameters()),
        "macs": macs["total"],
        "shape": shapes.get("fc"),
    }
    return rows


def render(cfg: DictConfig, rows: dict[str, dict], size: int, paper: float | None) -> Table:
    name = HydraConfig.get().runtime.choices.get("model") or "model"
    table = Table(title=f"{name} at {size}x{size}, {cfg.data.num_classes} classes")
    for col in ("part", "output", "params", "MACs"):
        table.add_column(col, justify="left" if col == "part" else "right")
    # One unit for the column, the paper's (G, 1e9) from a billion on, else M.
    scale, unit = (1e9, "G") if rows["total"]["macs"] >= 1e9 else (1e6, "M")
    for part, row in rows.items():
        shape = "x".join(map(str, row["shape"])) if row["shape"] else ""
        style = "bold" if part == "total" else None
        macs = f"{row['macs'] / scale:.2f} {unit}"
        table.add_row(part, shape, f"{row['params']:,}", macs, style=style)
    if paper is not None:
        paper_macs = f"{paper * 1e9 / scale:.2f} {unit}"
        table.add_row("He et al. 2015, Table 1", "", "", paper_macs, style="italic")
        ours = rows["total"]["macs"] / 1e9
        if int(cfg.model.depth) >= 50:
            table.caption = (
                f"{ours:.1f} vs the paper's {paper}: the stride sits on the bottleneck's 3x3 "
                "(torchvision's v1.5), so the first 1x1 of each downsampling block runs at the "
                "higher resolution"
            )
        else:
            table.caption = f"{ours:.2f} vs the paper's {paper}: same net, the paper rounds down"
    return table


def summary(cfg: DictConfig) -> None:
    cifar = is_cifar(cfg.model)
    with open_dict(cfg):
        if cfg.data.num_classes is None:
            cfg.data.num_classes = 10 if cifar else 1000
        if cfg.input_size is None:
            cfg.input_size = 32 if cifar else 224
    size = cfg.input_size
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"input_size={size!r} is not valid; use a positive integer (32, 224)")
    model = build_net(cfg)
    rows = summarize(model, (int(cfg.model.get("in_channels", 3)), size, size))
    paper = table1_gflops(cfg.model) if size == 224 else None  # Table 1 is at 224x224
    Console(width=120).print(render(cfg, rows, size, paper))


main = command("summary")(summary)

if __name__ == "__main__":
    main()
