"""`hydra/launcher=local_gpus`: a local sweep with one GPU per job (`reslab.training.gpu_slots`), on
hydra-joblib-launcher's worker processes. Hydra finds launchers in the `hydra_plugins`
namespace only, hence this package. Neither joblib nor submitit_local gives each job its own
GPU (submitit_local gives every job the same first `gpus_per_node` GPUs and starts all jobs at
once), so the binding is ours."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher import joblib_launcher
from omegaconf import DictConfig, OmegaConf

from reslab.training.gpu_slots import OnOwnGpu, plan_slots


class LocalGpusLauncher(joblib_launcher.JoblibLauncher):
    """`len(gpus) * jobs_per_gpu` joblib workers, each bound to one GPU slot for its life;
    further keys go to `joblib.Parallel` as with `hydra/launcher=joblib`."""

    def __init__(
        self,
        gpus: Sequence[int | str] | None = None,
        jobs_per_gpu: int = 1,
        wait_s: float = 60.0,
        **joblib: Any,
    ) -> None:
        super().__init__(**joblib)
        self.gpus, self.jobs_per_gpu, self.wait_s = gpus, jobs_per_gpu, wait_s

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from reslab.errors import ConfigError, print_error

        devices = OmegaConf.select(config, "trainer.devices", default=1)
        try:
            slots = plan_slots(self.gpus, self.jobs_per_gpu, devices)
        except ConfigError as e:
            print_error(e)
            raise SystemExit(2) from None
        self.joblib["n_jobs"] = len(slots)
        lock_dir = tempfile.mkdtemp(prefix="reslab-gpu-slots-")
        atexit.register(shutil.rmtree, lock_dir, True)
        task = OnOwnGpu(task_function, lock_dir, slots, self.wait_s)
        super().setup(hydra_context=hydra_context, task_function=task, config=config)
