"""Every config file composes, and every object in it instantiates."""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, open_dict
from torch.optim.lr_scheduler import ReduceLROnPlateau

from reslab.checks.preflight import check_values
from reslab.commands.startup import register_resolvers
from reslab.data import Augmentation, ClassificationDataModule
from reslab.errors import ConfigError
from reslab.training import precision
from reslab.training.builders import build, build_datamodule, build_module, build_net, build_trainer
from reslab.training.classifier import ImageClassifier
from reslab.training.schedules import LRSchedule

register_resolvers()
GROUPS = Path(str(files("reslab.configs")))
# What `instantiate` returns for each group's node, alone.
GROUP_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": torch.nn.Module,
    "data": ClassificationDataModule,
    "augmentation": Augmentation,
    "optimizer": functools.partial,
    "scheduler": LRSchedule,
    "trainer": L.Trainer,
    "callbacks": L.Callback,
    "logger": Logger,
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (GROUPS / group).glob("*.yaml"))


def compose_train(tmp_path: Path, overrides: list[str], name: str = "train") -> DictConfig:
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.data_dir = str(tmp_path / "data")
        del cfg.hydra  # as in a real run: the task function never sees it
    return cfg


def test_default_is_the_paper_recipe(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, [])
    assert cfg.model.depth == 20 and cfg.model.shortcut == "A" and cfg.model.residual
    assert cfg.data.name == "cifar10" and cfg.data.batch_size == 128
    assert cfg.optimizer.lr == 0.1 and cfg.optimizer.momentum == 0.9
    assert cfg.optimizer.weight_decay == 1e-4
    assert list(cfg.scheduler.scheduler.milestones) == [32000, 48000]
    assert cfg.scheduler.interval == "step" and cfg.trainer.max_steps == 64000
    assert cfg.run_name == "resnet-20_seed0"


def test_default_precision_follows_the_device(tmp_path: Path, monkeypatch) -> None:
    """bf16 autocast on a CPU with bf16 units only: fp32 on other CPUs and on GPUs."""
    for has_bf16, on_cpu in [(True, "bf16-mixed"), (False, "32-true")]:
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        assert compose_train(tmp_path, ["trainer=cpu"]).trainer.precision == on_cpu
        assert compose_train(tmp_path, ["trainer=gpu"]).trainer.precision == "32-true"
        assert precision.default_precision("cuda") == "32-true"
    chosen = compose_train(tmp_path, ["trainer=cpu", "trainer.precision=16-mixed"])
    assert chosen.trainer.precision == "16-mixed"


@pytest.mark.parametrize("name", options("model"))
def test_model_configs(tmp_path: Path, name: str) -> None:
    if name in ("resnet1202", "preact_resnet1001"):
        pytest.skip("built in test_models; too slow to build twice")
    cfg = compose_train(tmp_path, [f"model={name}"])
    net = build_net(cfg)
    assert net.fc.out_features == 10
    size = 32 if cfg.model._target_.endswith("cifar_resnet") else 64
    assert net(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_every_model_config_has_its_own_run_name(tmp_path: Path) -> None:
    """Run names, dirs and W&B tags say which family member ran, in the papers' names."""
    names = {m: compose_train(tmp_path, [f"model={m}"]).run_name for m in options("model")}
    assert len(set(names.values())) == len(names), names
    expected = {
        "resnet56": "resnet-56",
        "resnet110_sd": "resnet-110-sd",
        "preact_resnet164": "preact-resnet-164",
        "inverted_resnet56": "inverted-resnet-56",
        "resnext29_8x64d": "resnext-29-8x64d",
        "wrn28_10": "wrn-28-10",
        "resnet50": "resnet-50",
        "resnet50d": "resnet-50d",
        "se_resnet50": "se-resnet-50",
        "resnext50_32x4d": "resnext-50-32x4d",
        "wide_resnet50_2": "wide-resnet-50-2",
    }
    assert {m: names[m] for m in expected} == {m: f"{n}_seed0" for m, n in expected.items()}


def test_plain_twin_and_any_depth_by_override(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, ["model.residual=false", "model.depth=8", "seed=3"])
    net = build_net(cfg)
    assert not net.residual and len(net.layer1) == 1
    assert cfg.run_name == "plain-8_seed3"


@pytest.mark.parametrize("name", options("data"))
def test_data_configs(tmp_path: Path, name: str, imagefolder_root: Path) -> None:
    cfg = compose_train(tmp_path, [f"data={name}"])
    if not name.startswith("cifar"):
        with open_dict(cfg):
            cfg.data.root = str(imagefolder_root)
            if name == "imagenet":
                cfg.data.num_classes = 4
    data = build_datamodule(cfg)
    assert isinstance(data, ClassificationDataModule)
    assert (
        data.num_classes
        == cfg.data.num_classes
        == (10 if name == "cifar10" else 100 if name == "cifar100" else 4)
    )
    assert build_net(cfg).fc.out_features == data.num_classes


@pytest.mark.parametrize("name", options("augmentation"))
def test_augmentation_configs(tmp_path: Path, name: str) -> None:
    """Every augmentation runs on the workers pipeline; the default device pipeline takes the
    CIFAR ones and refuses the rest before any compute, naming the fix."""
    if name in ("cifar", "none"):
        build_datamodule(compose_train(tmp_path, [f"augmentation={name}"]))
    else:
        with pytest.raises(ConfigError, match=r"data\.pipeline=workers"):
            build_datamodule(compose_train(tmp_path, [f"augmentation={name}"]))
    cfg = compose_train(tmp_path, [f"augmentation={name}", "data.pipeline=workers"])
    data = build_datamodule(cfg)
    size = cfg.augmentation.get("size", 32)
    image = torch.randint(0, 256, (3, 300, 400) if size > 32 else (3, 32, 32), dtype=torch.uint8)
    for transform in (data.train_transform, data.eval_transform):
        out = transform(image)
        assert out.shape == (3, size, size) and out.dtype == torch.float32


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler_configs(tmp_path: Path, optimizer: str, scheduler: str) -> None:
    """Each node alone: the optimizer partial takes parameters, the schedule an optimizer and
    the run's length (a schedule spanning the run takes it from there)."""
    cfg = compose_train(tmp_path, [f"optimizer={optimizer}", f"scheduler={scheduler}"])
    optim = instantiate(cfg.optimizer)(torch.nn.Linear(2, 2).parameters())
    assert isinstance(optim, torch.optim.Optimizer)
    schedule = instantiate(cfg.scheduler)
    assert isinstance(schedule, LRSchedule)
    (config,) = schedule.configure(optim, total_steps=120)
    assert config["interval"] in ("step", "epoch")
    assert isinstance(config["scheduler"], torch.optim.lr_scheduler.LRScheduler | ReduceLROnPlateau)
    if scheduler == "cosine":
        assert config["scheduler"].T_max == 120
    module = instantiate(cfg.module)
    assert isinstance(module, ImageClassifier) and isinstance(module.schedule, LRSchedule)


@pytest.mark.parametrize("trainer", options("trainer"))
@pytest.mark.parametrize("logger", options("logger"))
def test_trainer_logger_callback_configs(tmp_path: Path, trainer: str, logger: str) -> None:
    cfg = compose_train(tmp_path, [f"trainer={trainer}", f"logger={logger}"])
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    t = build_trainer(cfg)
    assert isinstance(t, L.Trainer) and t.max_steps == 64000
    assert t.loggers and t.checkpoint_callback is not None


@pytest.mark.parametrize("group", ["experiment", "debug"])
def test_global_configs(tmp_path: Path, group: str, imagefolder_root: Path) -> None:
    for name in options(group):
        cfg = compose_train(tmp_path, [f"{group}={name}"])
        photos = "ImageFolder" in cfg.data._target_
        if photos:
            with open_dict(cfg):
                cfg.data.root, cfg.data.num_classes = str(imagefolder_root), 4
                cfg.data.batch_size, cfg.data.num_workers = 2, 0
        data = build_datamodule(cfg)
        assert isinstance(data, L.LightningDataModule), name
        if photos:  # photos of several sizes make one batch of the recipe's size
            data.setup("fit")
            x, _ = next(iter(data.train_dataloader()))
            assert x.shape == (2, 3, cfg.augmentation.size, cfg.augmentation.size), name
        assert isinstance(build_module(cfg), ImageClassifier), name
        trainer = build_trainer(cfg)
        assert isinstance(trainer, L.Trainer), name
        if not cfg.trainer.get("fast_dev_run"):  # fast_dev_run sets its own length
            assert trainer.max_steps == cfg.trainer.max_steps, name


def test_eval_config(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, ["ckpt_path=x.ckpt"], name="eval")
    assert not cfg.ten_crop and cfg.weights is None
    assert cfg.get("data") is None and cfg.logger is None
    cfg = compose_train(tmp_path, ["ckpt_path=x.ckpt", "data=cifar100"], name="eval")
    assert cfg.data.num_classes == 100


def test_several_loggers_at_once(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, ["logger=[csv,tensorboard]"])
    assert set(cfg.logger) == {"csv", "tensorboard"}
    assert len(build_trainer(cfg).loggers) == 2


@pytest.mark.parametrize(
    "launcher", [o for o in options("hydra/launcher") if o.startswith("slurm")]
)
def test_slurm_launcher_configs(launcher: str) -> None:
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hydra/launcher={launcher}", "trainer=ddp", "trainer.devices=3"],
            return_hydra_config=True,
        )
    params = cfg.hydra.launcher
    assert params.tasks_per_node == 3 and params.nodes == 1  # one task per DDP rank
    assert params.max_num_timeout > 0 and params.signal_delay_s < params.timeout_min * 60
    assert params.gpus_per_node == (3 if launcher == "slurm" else None)
    assert type(build(params, "hydra.launcher")).__name__ == "SlurmLauncher"


@pytest.mark.parametrize("name", options("callbacks"))
def test_callback_configs(tmp_path: Path, name: str) -> None:
    cfg = compose_train(tmp_path, [f"callbacks=[default,{name}]"])
    callbacks = [build(c, f"callbacks.{k}") for k, c in cfg.callbacks.items()]
    assert {type(c).__name__ for c in callbacks} >= {"ModelCheckpoint", "ErrorTracker"}
    assert len(build_trainer(cfg).callbacks) >= len(callbacks)


@pytest.mark.parametrize(("depth", "warm"), [(56, False), (110, True), (1202, True)])
def test_table6_warms_up_from_depth_110(tmp_path: Path, depth: int, warm: bool) -> None:
    cfg = compose_train(tmp_path, ["experiment=cifar10_table6", f"model.depth={depth}"])
    warmup = build(cfg.callbacks.lr_warmup, "callbacks.lr_warmup")
    assert warmup.lr == 0.01 and warmup.until_train_err == 80.0
    assert warmup.state["done"] is not warm
    assert cfg.paper_error[depth] == {56: 6.97, 110: 6.43, 1202: 7.93}[depth]


def test_degradation_sweeps_plain_and_residual_twins(tmp_path: Path) -> None:
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose("train", ["experiment=cifar10_degradation"], return_hydra_config=True)
        imagenet = compose("train", ["experiment=imagenet_degradation"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {
        "model.residual": "false,true",
        "model.depth": "20,32,44,56",
        "seed": "0",
    }
    assert cfg.model.shortcut == "A" and "gradient_diagnostics" in cfg.callbacks
    assert imagenet.hydra.sweeper.params["model.depth"] == "18,34"
    assert imagenet.data._target_.endswith("ImageFolderDataModule")


def test_imagenet_data_trains_with_the_papers_augmentation_unless_another_is_chosen(
    tmp_path: Path,
) -> None:
    def picked(overrides: list[str]) -> tuple[str, str]:
        with initialize_config_module("reslab.configs", version_base="1.3"):
            cfg = compose("train", overrides, return_hydra_config=True)
        return cfg.hydra.runtime.choices.augmentation, cfg.hydra.runtime.choices.scheduler

    assert picked([]) == ("cifar", "cifar_paper")
    assert picked(["data=imagenet"])[0] == picked(["data=imagefolder"])[0] == "paper"
    assert picked(["data=imagefolder", "augmentation=lowres"])[0] == "lowres"
    assert picked(["augmentation=modern", "data=imagenet"])[0] == "modern"
    assert picked(["experiment=imagenet_torchvision_v1"])[0] == "torchvision_v1"
    # Figure 4's sweep trains with the paper's ImageNet recipe, not CIFAR's.
    assert picked(["experiment=imagenet_degradation"]) == ("paper", "plateau")


def test_local_parallel_launcher_config(tmp_path: Path) -> None:
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=local"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


@pytest.mark.parametrize("name", ["preact_resnet164", "wrn28_10"])
def test_cifar_headline_experiments_use_cifar_augmentation(tmp_path: Path, name: str) -> None:
    cfg = compose_train(tmp_path, [f"experiment={name}"])
    data = build_datamodule(cfg)
    out = data.train_transform(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
    assert out.shape == (3, 32, 32) and cfg.data.name == "cifar10"


EVERY_OPTION = [(g, o) for g in GROUP_TYPES for o in options(g)]


@pytest.mark.parametrize(("group", "option"), EVERY_OPTION)
def test_every_option_of_every_group_instantiates_alone_and_passes_the_schema(
    tmp_path: Path, group: str, option: str, imagefolder_root: Path
) -> None:
    """`instantiate(cfg.<group>)` on its own builds the group's object (no argument injected
    by code), and every shipped config passes the signature checks of `reslab.checks.schema`."""
    overrides = [f"{group}={option}" if group not in ("callbacks", "logger") else ""]
    if group == "data" and option.startswith("image"):
        overrides.append(f"data.root={imagefolder_root}")
        if option == "imagenet":
            overrides.append("data.num_classes=4")
    cfg = compose_train(tmp_path, [o for o in overrides if o])
    check_values(cfg)
    if group == "trainer" and cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    nodes = cfg[group].values() if group in ("callbacks", "logger") else [cfg[group]]
    if group in ("callbacks", "logger"):
        cfg = compose_train(tmp_path, [f"{group}=[{option}]"])
        check_values(cfg)
        nodes = list(cfg[group].values())
    for node in nodes:
        assert isinstance(instantiate(node), GROUP_TYPES[group])


def test_the_module_node_nests_its_net_optimizer_and_schedule(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, ["model=resnet56", "data=cifar100", "optimizer=adamw"])
    module = instantiate(cfg.module)
    assert module.num_classes == 100 and len(module.net.layer1) == 9
    optimizer = module.optimizer_factory(module.net.parameters())
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 0.001


@pytest.mark.parametrize(
    "overrides",
    [["scheduler=plateau", "data.val_size=5000"], ["experiment=imagenet_resnet_paper"]],
    ids=["cifar-held-out", "imagenet"],
)
def test_a_plateau_schedule_runs_where_validation_is_no_test_set_of_its_own(
    tmp_path: Path, overrides: list[str], imagefolder_root: Path
) -> None:
    """CIFAR with a held-out split, or ImageNet, whose val split is by convention the one it
    reports (the paper's recipe): the schedule may read it. (CIFAR validating on its test set:
    refused, test_reliability.py.)"""
    from reslab.checks.preflight import check_built

    cfg = compose_train(tmp_path, overrides)
    if "ImageFolder" in cfg.data._target_:
        with open_dict(cfg):
            cfg.data.root, cfg.data.num_classes = str(imagefolder_root), 4
    data = build_datamodule(cfg)
    module = build_module(cfg)
    assert module.schedule.monitor == "val/err" and data.val_is_test == ("imagenet" in overrides[0])
    check_built(build_trainer(cfg), data, module)
