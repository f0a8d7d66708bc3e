"""`reslab-eval`: test a reslab checkpoint (`ckpt_path=`: the model and data come from reslab's
config groups the run chose, with the values stored in it; no code is taken from a file) or
torchvision ResNet weights (`weights=` a local .pth, with `model=` and `data=`)."""

from __future__ import annotations

import copy
import inspect
import json
import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from reslab.checks.schema import check_targets, import_target, moved_targets, trusted_values
from reslab.commands.task import command
from reslab.errors import ConfigError, one_line
from reslab.runs import checkpoints
from reslab.runs.dirs import shown
from reslab.training.builders import CHOICES, build_datamodule, build_net, build_trainer
from reslab.training.classifier import ImageClassifier
from reslab.training.scores import ACC5, LOSS, TEST_ERR, metric_key

log = logging.getLogger("reslab")
TEST_ACC5, TEST_LOSS = metric_key("test", ACC5), metric_key("test", LOSS)
# Groups a user may pick on the eval command line to replace the stored run's (`data=cifar10`
# after the data moved, `augmentation=...`), and what always comes from the eval config: where
# files live and how to run.
CHOSEN_GROUPS = ("model", "data", "augmentation")
FROM_EVAL = ("paths", "trainer", "logger", "callbacks")
OPTION = re.compile(r"[A-Za-z0-9_\-]+")


def options(group: str) -> list[str]:
    """The option names of one of reslab's config groups."""
    folder = resources.files("reslab.configs").joinpath(group)
    return sorted(f.name[: -len(".yaml")] for f in folder.iterdir() if f.name.endswith(".yaml"))


def compose_train(overrides: list[str]) -> DictConfig:
    """reslab-train's config from reslab's own groups (in or outside a running Hydra app)."""
    try:
        if GlobalHydra.instance().is_initialized():
            return compose("train", overrides=overrides)
        with initialize_config_module("reslab.configs", version_base="1.3"):
            return compose("train", overrides=overrides)
    except Exception as e:
        raise ConfigError(f"the stored run's config groups ({overrides}): {one_line(e)}") from None


def _expanded(node: Any, root: DictConfig) -> Any:
    """`node` as plain containers, interpolations of whole nodes (`net: ${model}`) replaced by
    the node they name, other values as written: the shape of what the config builds."""
    if isinstance(node, dict):
        return {k: _expanded(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_expanded(v, root) for v in node]
    if isinstance(node, str) and (ref := re.fullmatch(r"\$\{([\w.]+)\}", node)):
        target = OmegaConf.select(root, ref[1], default=None, throw_on_resolution_failure=False)
        if isinstance(target, DictConfig | ListConfig):
            return _expanded(OmegaConf.to_container(target, resolve=False), root)
    return node


def command_line() -> list[str]:
    """The keys and groups this eval's command line sets (`data`, `augmentation.size`)."""
    typed = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return [o.key_or_group for o in OverridesParser.create().parse_overrides(typed)
            if not o.is_delete()]  # fmt: skip


def chosen() -> dict[str, str]:
    """The groups of CHOSEN_GROUPS picked on this eval's command line (`data=cifar10`), not
    those a picked group implies (data=imagenet's augmentation)."""
    here = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    picked = set(command_line())
    return {g: here[g] for g in CHOSEN_GROUPS if g in picked and here.get(g) is not None}


def given_values(group: str) -> list[str]:
    """The keys of `group` set one by one on this eval's command line (`augmentation.size`)."""
    return [key for key in command_line() if key.startswith(f"{group}.")]


def values_on_top(argv: list[str]) -> list[str]:
    """`data.verify_md5=false` (and `model.*`, `augmentation.*`) on the eval command line set
    one value over the stored run's; the eval config has no such node until a group is
    chosen, so Hydra is asked to add it (`++`)."""
    groups = tuple(f"{g}." for g in CHOSEN_GROUPS)
    return [f"++{a}" if a.startswith(groups) and "=" in a else a for a in argv]


def moved_data(stored: dict[str, Any]) -> None:
    """A stored `data.root` under the run's `paths.data_dir` follows the eval's
    `paths.data_dir` (DATA_DIR), so data that moved needs that one value."""
    data_dir = str((stored.get("paths") or {}).get("data_dir") or "")
    root = str((stored.get("data") or {}).get("root") or "")
    if data_dir and (root == data_dir or root.startswith(data_dir.rstrip("/") + "/")):
        stored["data"]["root"] = "${paths.data_dir}" + root[len(data_dir.rstrip("/")) :]


def stored_run(cfg: DictConfig, hparams: Any) -> DictConfig:
    """The run a reslab checkpoint stored, rebuilt from reslab's own config groups (its group
    choices, or those chosen on the eval command line) with the stored config's values on top.
    The stored config gives values only: a `_target_` (or other Hydra key) that differs from
    what reslab's groups say is refused, so a checkpoint can make reslab build nothing but what
    its configs build."""
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} holds no reslab run config; was it written by "
            "reslab-train? (torchvision weights: weights=<file> model=<name> data=<name>)"
        )
    source = f"ckpt_path={cfg.ckpt_path}"
    stored = copy.deepcopy({k: v for k, v in hparams.items() if k != "choices"})
    stored["model"].pop("weights", None)  # older checkpoints kept `weights` in the model node
    choices = dict(hparams.get("choices") or {})
    here = chosen()
    choices.update(here)
    overrides = []
    for group, option in choices.items():
        if group not in CHOICES or not isinstance(option, str) or not OPTION.fullmatch(option):
            raise ConfigError(
                f"{source}: stored config choices.{group}={option!r} is not an option of "
                "reslab's config groups"
            )
        overrides.append(f"{group}={option}")
    # Every callback and logger reslab has (the stored run may have used any of them); the
    # eval's own replace them below.
    every = [f"{g}=[{','.join(options(g))}]" for g in ("callbacks", "logger")]
    schema = compose_train([*overrides, *every])
    stored = {k: v for k, v in stored.items() if k not in here}  # replaced whole, not checked
    moved_targets(stored)
    trusted_values(stored, _expanded(OmegaConf.to_container(schema), schema), "", source)
    moved_data(stored)
    stored = {k: v for k, v in stored.items() if k not in FROM_EVAL}
    with open_dict(schema):
        merged = OmegaConf.merge(schema, stored)
    merged.weights = None  # a fine-tuned run's start: the checkpoint replaces it
    return merged


def run_config(cfg: DictConfig, stored: Any) -> DictConfig:
    """The config to evaluate with: the stored run's (a `ckpt_path` checkpoint), or the eval
    config's own (`weights=`), with the groups chosen on the command line in place of the
    stored ones. Interpolations of a chosen group (`${paths.data_dir}`, `${seed}`,
    `${augmentation}`) resolve against this merged config, which is then checked as a
    command line is."""
    here = chosen()
    if cfg.get("ckpt_path"):
        hparams = stored.get("hyper_parameters") if isinstance(stored, dict) else None
        merged = stored_run(cfg, hparams)
    else:
        if "model" not in here or "data" not in here:
            raise ConfigError("weights=... needs model=<name> and data=<name> (e.g. resnet50)")
        merged = OmegaConf.create({"seed": 0})
        # No stored run: a group the picked ones imply (data=imagenet's augmentation) counts.
        here = dict.fromkeys(CHOSEN_GROUPS, "")
    with open_dict(merged):
        for key in CHOSEN_GROUPS:
            if key in here:  # the chosen group, with any values given for it
                merged[key] = cfg.get(key)
                continue
            for path in given_values(key):  # values over the stored run's
                OmegaConf.update(merged, path, OmegaConf.select(cfg, path), force_add=True)
        for key in FROM_EVAL:
            merged[key] = cfg.get(key)
        if cfg.ten_crop:
            data_cls = import_target("data", merged.data._target_)
            if "ten_crop" not in inspect.signature(data_cls).parameters:
                raise ConfigError(
                    "ten_crop=true is the ImageNet protocol; use it with ImageNet data"
                )
            merged.data.ten_crop = True
        # `paths.output_dir` is this eval's run dir.
        merged.paths.output_dir = HydraConfig.get().runtime.output_dir
    OmegaConf.resolve(merged)
    check_targets(merged)
    return merged


def check_fits(net: Any, state: dict[str, Any], source: str) -> None:
    """The weights fit the network, or one line naming the first mismatch and the fix: a head
    for another class count is the usual one (torchvision's 1000 ImageNet classes)."""
    ours = net.state_dict()
    head, theirs = ours.get("fc.weight"), state.get("fc.weight")
    if head is not None and theirs is not None and head.shape != theirs.shape:
        raise ConfigError(
            f"{source} has a head for {theirs.shape[0]} classes and the data {head.shape[0]}; "
            "evaluate it on the data it was trained on (torchvision's: data=imagenet), or "
            "fine-tune it first: reslab-train weights=<file> model=<name> data=<name>"
        )
    bad = [k for k in ours if k not in state or state[k].shape != ours[k].shape]
    bad += [k for k in state if k not in ours]
    if bad:
        theirs_shape = tuple(state[bad[0]].shape) if bad[0] in state else "missing"
        ours_shape = tuple(ours[bad[0]].shape) if bad[0] in ours else "not in the model"
        raise ConfigError(
            f"{source} does not fit the model config (first mismatch: {bad[0]}, file "
            f"{theirs_shape}, model {ours_shape}); use the model the weights were trained "
            "with (model=<name>)"
        )


def evaluate(cfg: DictConfig) -> dict[str, float]:
    source = next((k for k in ("ckpt_path", "weights") if cfg.get(k)), None)
    if source is None:
        raise ConfigError("pass ckpt_path=<run>/checkpoints/best.ckpt or weights=<file>.pth")
    stored = checkpoints.load(cfg[source], source, weights_only=True)
    run_cfg = run_config(cfg, stored)
    state_dict = checkpoints.net_weights(stored, f"{source}={cfg[source]}")
    L.seed_everything(run_cfg.get("seed", 0))
    trainer = build_trainer(run_cfg)
    datamodule = build_datamodule(run_cfg)
    net = build_net(run_cfg)
    check_fits(net, state_dict, f"{source}={cfg[source]}")
    net.load_state_dict(state_dict)
    results = trainer.test(ImageClassifier(net), datamodule=datamodule, verbose=False)[0]
    metrics = {k: float(v) for k, v in results.items()}
    out = Path(cfg.paths.output_dir, "metrics.json")
    out.write_text(json.dumps(metrics, indent=2))
    log.info(
        "%s=%s: test err %.2f%%, top-5 err %.2f%%, loss %.4f\n  metrics   %s",
        source, cfg[source], metrics[TEST_ERR], 100 * (1 - metrics[TEST_ACC5]),
        metrics[TEST_LOSS], shown(out.absolute()),
    )  # fmt: skip
    return metrics


main = command("eval", argv=values_on_top)(evaluate)

if __name__ == "__main__":
    main()
