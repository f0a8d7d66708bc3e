"""Run names in the papers' words, from a model config: what run dirs, W&B runs and reports
call a net."""

from __future__ import annotations

from omegaconf import DictConfig


def arch_name(model: DictConfig) -> str:
    """The paper's names for run names, dirs and tags: `resnet-56` / `plain-56`, and for the
    family variants `preact-resnet-164`, `resnext-50-32x4d`, `wrn-28-10`, `wide-resnet-50-2`,
    `se-resnet-50`, `resnet-50d`, `inverted-resnet-56`, `resnet-110-sd` (stochastic depth)."""
    depth = model.get("depth")
    if depth is None:
        depth = str(model.get("_target_", "model")).rsplit(".", 1)[-1]
    groups, width = model.get("groups") or 1, model.get("base_width") or 64
    if not model.get("residual", True):
        name = f"plain-{depth}"
    elif model.get("widen_factor"):
        name = f"wrn-{depth}-{model.widen_factor}"
    elif groups > 1:
        name = f"resnext-{depth}-{groups}x{width}d"
    elif width != 64:
        name = f"wide-resnet-{depth}-{width // 64}"
    else:
        name = f"resnet-{depth}"
    if model.get("shortcut") == "D":
        name += "d"
    if model.get("drop_path"):
        name += "-sd"
    if model.get("block") == "inverted":
        name = f"inverted-{name}"
    if model.get("attention") == "se":
        name = f"se-{name}"
    if model.get("preact") and not model.get("widen_factor"):  # WRNs are preact by definition
        name = f"preact-{name}"
    return name
