"""Every private name of Lightning, torch, torchvision and OmegaConf that reslab reads, writes
or overrides still exists, and where reslab overrides or sets one, the library still uses it:
an upgrade past the pinned range that renames one fails here, naming it, instead of silently
changing a run (an override nobody calls, an attribute nobody reads)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector
from omegaconf import DictConfig, ListConfig
from torchvision.datasets import CIFAR10, CIFAR100


def source(fn: Callable) -> str:
    return inspect.getsource(fn)


# (owner, name, where reslab uses it)
ATTRIBUTES = [
    (ModelCheckpoint, "_should_skip_saving_checkpoint", "training.callbacks.LastCheckpoint"),
    (DDPStrategy, "_configure_launcher", "training.distributed.HydraDDPStrategy"),
    (CIFAR10, "_check_integrity", "data.cifar._Checked"),
    (CIFAR10, "_load_meta", "data.cifar._Checked"),
    (CIFAR100, "_check_integrity", "data.cifar._Checked"),
    (torch.cpu, "_is_avx512_bf16_supported", "training.precision.default_precision"),
    (torch.cpu, "_is_amx_tile_supported", "training.precision.default_precision"),
    (DictConfig, "_get_node", "checks.schema"),
    (ListConfig, "_get_node", "checks.schema"),
]


@pytest.mark.parametrize(("owner", "name", "user"), ATTRIBUTES)
def test_private_name_exists(owner: object, name: str, user: str) -> None:
    assert callable(getattr(owner, name, None)), f"{owner}.{name} is gone (used by reslab.{user})"


def test_cpu_feature_probes_answer_a_bool() -> None:
    assert isinstance(torch.cpu._is_avx512_bf16_supported(), bool)
    assert isinstance(torch.cpu._is_amx_tile_supported(), bool)


def test_torchvision_cifar_calls_the_overridden_checks() -> None:
    """`_Checked` replaces the md5 re-check and the meta loading of the constructor."""
    init = source(CIFAR10.__init__)
    assert "self._check_integrity()" in init and "self._load_meta()" in init


def test_model_checkpoint_skips_by_the_step_last_checkpoint_records(tmp_path: Path) -> None:
    """`LastCheckpoint` sets `_last_global_step_saved`; Lightning's skip check reads it."""
    assert ModelCheckpoint(dirpath=tmp_path)._last_global_step_saved == 0
    assert "self._last_global_step_saved" in source(ModelCheckpoint._should_skip_saving_checkpoint)
    assert list(inspect.signature(ModelCheckpoint._should_skip_saving_checkpoint).parameters) == [
        "self",
        "trainer",
    ]


def test_lightning_configures_the_strategy_launcher() -> None:
    assert ".strategy._configure_launcher()" in source(_AcceleratorConnector)


def test_lightnings_watcher_of_the_ddp_processes_holds_the_launchers_list() -> None:
    """`HydraDDPStrategy.on_exception` empties `launcher.procs`, so the watcher thread, which
    kills the launching process once a child has failed, lets it write the record first."""
    assert "_launch_process_observer(self.procs)" in source(_SubprocessScriptLauncher.launch)
    assert "for proc in self._child_processes" in source(_ChildProcessObserver._run)


def test_ema_keeps_its_device_where_reslab_sets_it() -> None:
    """`EMA.setup` fills `_device`, which Lightning reads when it copies the module."""
    assert EMAWeightAveraging()._device is None
    assert "self._device" in source(EMAWeightAveraging.setup)


def test_csv_logger_caches_its_experiment(tmp_path: Path) -> None:
    """`ResumableCSVLogger.experiment` returns the cache Lightning's property fills."""
    assert CSVLogger(tmp_path)._experiment is None
    assert "self._experiment" in source(CSVLogger.experiment.fget)


def test_wandb_logger_hands_its_init_arguments_to_wandb(tmp_path: Path) -> None:
    """`RunDirWandbLogger` drops `anonymous` from Lightning's `_wandb_init`, the arguments of
    `wandb.init`."""
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert "anonymous" in logger._wandb_init
    assert "**self._wandb_init" in source(type(logger).experiment.fget)
