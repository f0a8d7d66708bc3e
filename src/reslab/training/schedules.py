"""The learning-rate schedule of a run (`configs/scheduler/`): a torch scheduler, how often it
steps, and an optional linear warm-up, as one object whose options are checked like every
node's. Schedules that span the run take its real length from the trainer, so no config
repeats `trainer.max_steps` (which is -1 in an epoch-bounded run)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR

from reslab.errors import ConfigError

SchedulerFactory = Callable[..., Any]


def cosine(optimizer: torch.optim.Optimizer, total_steps: int, eta_min: float = 0.0) -> Any:
    """Cosine decay from the optimizer's lr to `eta_min` over the whole run."""
    return CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=eta_min)


class LRSchedule:
    """Lightning's lr-scheduler dict as an object: `scheduler` is a partial taking the optimizer
    (and `total_steps`, the run's optimizer steps, when it has that argument); `interval`
    decides whether it steps per iteration or per epoch; `monitor` names the metric a
    ReduceLROnPlateau reads. `warmup_steps` > 0 adds a linear warm-up from lr / warmup_steps over
    the first iterations, as its own per-step scheduler on the same optimizer: both scale the lr
    they find, so the warm-up composes with any schedule."""

    def __init__(
        self,
        scheduler: SchedulerFactory,
        interval: Literal["step", "epoch"] = "step",
        frequency: Annotated[int, Field(ge=1)] = 1,
        monitor: str | None = None,
        warmup_steps: Annotated[int, Field(ge=0)] = 0,
        name: str | None = None,
    ) -> None:
        self.scheduler, self.interval, self.frequency = scheduler, interval, frequency
        self.monitor, self.warmup_steps, self.name = monitor, warmup_steps, name

    def configure(self, optimizer: torch.optim.Optimizer, total_steps: float) -> list[dict]:
        """The lr-scheduler dicts for `configure_optimizers`, warm-up first."""
        # One name for both: LearningRateMonitor would log the same lr twice (lr-SGD-1).
        name = self.name or (f"lr-{type(optimizer).__name__}" if self.warmup_steps else None)
        out = []
        if self.warmup_steps:
            warmup = LinearLR(
                optimizer, start_factor=1 / self.warmup_steps, total_iters=self.warmup_steps
            )
            out.append({"scheduler": warmup, "interval": "step", "name": name})
        kwargs = {}
        if "total_steps" in inspect.signature(self.scheduler).parameters:
            if not math.isfinite(total_steps):
                raise ConfigError(
                    "this schedule spans the run, which has no end; set trainer.max_steps or "
                    "trainer.max_epochs"
                )
            kwargs["total_steps"] = int(total_steps)
        config: dict[str, Any] = {
            "scheduler": self.scheduler(optimizer, **kwargs),
            "interval": self.interval,
            "frequency": self.frequency,
            "name": name,
        }
        if self.monitor is not None:
            config["monitor"] = self.monitor
        return [*out, config]
