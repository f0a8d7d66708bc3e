"""Why plain nets degrade: per-stage gradient norms and, in residual nets, how large the
residual branch is next to the shortcut it is added to."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from reslab.errors import ConfigError


def stage_grad_norms(stages: list[nn.Module]) -> dict[str, float]:
    """L2 norm of all parameter gradients of each stage, `grad_norm/layer<i>`."""
    norms = {}
    for i, stage in enumerate(stages, start=1):
        grads = [p.grad.detach().norm() for p in stage.parameters() if p.grad is not None]
        if grads:
            norms[f"grad_norm/layer{i}"] = float(torch.linalg.vector_norm(torch.stack(grads)))
    return norms


class GradientDiagnostics(Callback):
    """Every `every_n_steps`: `grad_norm/layer<i>` (all nets) and, for residual nets,
    `branch_ratio/layer<i>`, the mean over the stage's blocks of ||F(x)|| / ||shortcut(x)||.

    Needs a net with `stages()` whose blocks have `last_layer()` (the branch output),
    `downsample` and `residual`, as `reslab.models.ResNet`. Values go straight to the loggers,
    like Lightning's LearningRateMonitor, so they do not depend on `log_every_n_steps`.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if every_n_steps < 1:
            raise ConfigError(
                f"callbacks.gradient_diagnostics.every_n_steps={every_n_steps} must be >= 1"
            )
        self.every_n_steps = every_n_steps
        self._handles: list[RemovableHandle] = []
        self._norms: dict[nn.Module, dict[str, Tensor]] = defaultdict(dict)
        self._stage_of: dict[nn.Module, int] = {}

    def _due(self, trainer: L.Trainer) -> bool:
        return trainer.global_step % self.every_n_steps == 0

    def _log(self, trainer: L.Trainer, metrics: dict[str, float], step: int) -> None:
        if metrics and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        net = pl_module.net
        if not (self._due(trainer) and getattr(net, "residual", False)):
            return
        for i, stage in enumerate(net.stages(), start=1):
            for block in stage:
                self._stage_of[block] = i
                self._handles.append(block.register_forward_pre_hook(self._block_input))
                self._handles.append(block.last_layer().register_forward_hook(self._branch(block)))
                if block.downsample is not None:
                    hook = self._shortcut(block)
                    self._handles.append(block.downsample.register_forward_hook(hook))

    def _block_input(self, block: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if block.downsample is None:
            self._norms[block]["shortcut"] = inputs[0].detach().norm()

    def _branch(self, block: nn.Module):
        def hook(_: nn.Module, __: Any, out: Tensor) -> None:
            self._norms[block]["branch"] = out.detach().norm()

        return hook

    def _shortcut(self, block: nn.Module):
        def hook(_: nn.Module, __: Any, out: Tensor) -> None:
            self._norms[block]["shortcut"] = out.detach().norm()

        return hook

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._due(trainer):
            self._log(trainer, stage_grad_norms(pl_module.net.stages()), trainer.global_step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self._handles:
            return
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        ratios: dict[int, list[float]] = defaultdict(list)
        for block, norms in self._norms.items():
            ratios[self._stage_of[block]].append(float(norms["branch"] / norms["shortcut"]))
        self._norms.clear()
        metrics = {f"branch_ratio/layer{i}": sum(r) / len(r) for i, r in sorted(ratios.items())}
        # global_step has advanced by one since the batch started.
        self._log(trainer, metrics, trainer.global_step - 1)
