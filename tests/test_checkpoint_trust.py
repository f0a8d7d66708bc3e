"""A checkpoint gives values, never code: `reslab-eval`, resume and fine-tuning rebuild a run
from reslab's own config groups, so a crafted checkpoint whose stored config names other
targets is refused in one line (eval) or never read for targets (resume, `weights=`), and the
payload never runs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.runs import QUIET, compose_run
from hydra.utils import instantiate

from reslab.checks.schema import MOVED
from reslab.commands.train import train

RUN = [*QUIET, "trainer.max_steps=2", "test=false"]


def payload(marker: Path) -> dict[str, Any]:
    """A node that writes `marker` when Hydra instantiates it."""
    path = {"_target_": "pathlib.Path", "_args_": [str(marker)]}
    return {"_target_": "pathlib.Path.write_text", "self": path, "data": "payload ran"}


def _set(key: str, value: Any) -> Callable[[dict], None]:
    def put(hp: dict) -> None:
        *parents, last = key.split(".")
        node = hp
        for k in parents:
            node = node[k]
        node[last] = value(node.get(last)) if callable(value) else value

    return put


# Where a crafted config hides its payload: a value replaced by a node, a whole node, a list
# item, a new callback or logger, and a target swapped in place.
def tampering(marker: Path) -> dict[str, Callable[[dict], None]]:
    p = payload(marker)
    return {
        "model.zero_init_residual": _set("model.zero_init_residual", p),
        "model": _set("model", p),
        "model._target_": _set("model._target_", "pathlib.Path.write_text"),
        "data.root": _set("data.root", p),
        "data.augmentation.train": _set("data.augmentation.train", [p]),
        "augmentation.train": _set("augmentation.train", [p]),
        "optimizer.lr": _set("optimizer.lr", p),
        "scheduler.scheduler": _set("scheduler.scheduler", p),
        "module.net": _set("module.net", p),
        "callbacks.evil": _set("callbacks.evil", p),
        "logger.csv._target_": _set("logger.csv._target_", "pathlib.Path.write_text"),
        "logger.evil": _set("logger.evil", p),
        "trainer.plugins": _set("trainer.plugins", [p]),
        "choices.model": _set("choices", {"model": "../../../tmp/evil"}),
        "data.root interpolation": _set("data.root", "${oc.env:HOME}"),
    }


@pytest.fixture(scope="module")
def trained(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    train(compose_run(run_dir, cifar10_root, RUN))
    return run_dir / "checkpoints" / "last.ckpt"


def crafted(trained: Path, out: Path, tamper: Callable[[dict], None]) -> Path:
    ckpt = torch.load(trained, weights_only=False)
    hp = copy.deepcopy(ckpt["hyper_parameters"])
    tamper(hp)
    ckpt["hyper_parameters"] = hp
    torch.save(ckpt, out)
    return out


def test_the_payload_runs_when_instantiated(tmp_path: Path) -> None:
    """The control: the payload is real, so the refusals below are what stops it."""
    marker = tmp_path / "marker"
    instantiate(payload(marker))
    assert marker.read_text() == "payload ran"


@pytest.mark.parametrize("where", list(tampering(Path("m"))))
def test_eval_refuses_a_stored_target_in_one_line_and_runs_nothing(
    where: str, trained: Path, cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    marker = tmp_path / "marker"
    ckpt = crafted(trained, tmp_path / "crafted.ckpt", tampering(marker)[where])
    run = eval_in_process(
        [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"], cifar10_root, tmp_path
    )
    assert run.code == 2 and "Traceback" not in run.err, run.err[-2000:]
    (line,) = [ln for ln in run.err.splitlines() if ln.startswith("reslab: error:")]
    assert f"ckpt_path={ckpt}: stored config" in line
    key = where.split(" ")[0]
    assert key.split(".")[0] in line
    assert not marker.exists()
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_an_untouched_checkpoint_still_evaluates(
    trained: Path, cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    run = eval_in_process(
        [f"ckpt_path={trained}", f"hydra.run.dir={tmp_path / 'eval'}"], cifar10_root, tmp_path
    )
    assert run.code == 0, run.err[-2000:]
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_a_checkpoint_naming_classes_where_they_were_before_they_moved_evaluates(
    trained: Path, cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    """A checkpoint written before reslab's modules moved into subpackages names its classes
    by their old paths (`reslab.classifier.ImageClassifier`); it evaluates as it did, and a
    class that never was at the old path is still refused."""

    def old_paths(node: Any) -> int:
        count = 0
        if isinstance(node, dict):
            for old, new in MOVED.items():
                if str(node.get("_target_", "")).startswith(new):
                    node["_target_"] = old + node["_target_"][len(new) :]
                    count += 1
            node = list(node.values())
        if isinstance(node, list):
            count += sum(old_paths(v) for v in node)
        return count

    hp = torch.load(trained, weights_only=False)["hyper_parameters"]
    assert old_paths(copy.deepcopy(hp)) >= 5  # the module, schedule, callbacks and loggers
    old = crafted(trained, tmp_path / "old.ckpt", old_paths)
    runs = [
        eval_in_process([f"ckpt_path={c}", f"hydra.run.dir={tmp_path / n}"], cifar10_root, tmp_path)
        for c, n in ((old, "old"), (trained, "new"))
    ]
    assert [r.code for r in runs] == [0, 0], runs[0].err[-2000:]
    assert (tmp_path / "old" / "metrics.json").read_text() == (
        (tmp_path / "new" / "metrics.json").read_text()
    )
    renamed = crafted(
        trained, tmp_path / "r.ckpt", _set("module._target_", "reslab.classifier.Other")
    )
    run = eval_in_process(
        [f"ckpt_path={renamed}", f"hydra.run.dir={tmp_path / 'r'}"], cifar10_root, tmp_path
    )
    assert run.code == 2 and "'reslab.training.classifier.Other' is not reslab's" in run.err


def test_a_checkpoint_from_before_the_model_summary_factory_evaluates(
    trained: Path, cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    """Checkpoints written before `callbacks.model_summary` became reslab's factory store
    Lightning's RichModelSummary there; they evaluate (every earlier checkpoint was refused)."""
    node = {"_target_": "lightning.pytorch.callbacks.RichModelSummary", "max_depth": 1}
    old = crafted(trained, tmp_path / "old.ckpt", _set("callbacks.model_summary", node))
    run = eval_in_process(
        [f"ckpt_path={old}", f"hydra.run.dir={tmp_path / 'eval'}"], cifar10_root, tmp_path
    )
    assert run.code == 0, run.err[-2000:]


def test_a_run_with_extra_callbacks_and_another_model_evaluates(
    cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    """No false alarm: the stored EMA callback and CSV+TensorBoard loggers are reslab's own,
    and the stored group choice (resnet56 here, depth 8) is recomposed from reslab's groups."""
    run_dir = tmp_path / "run"
    args = [*RUN, "model=resnet56", "callbacks=[default,ema]", "logger=[csv,tensorboard]"]
    train(compose_run(run_dir, cifar10_root, args))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["choices"]["model"] == (
        "resnet56"
    )
    run = eval_in_process(
        [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"], cifar10_root, tmp_path
    )
    assert run.code == 0, run.err[-2000:]


def test_a_stored_value_is_checked_like_the_command_line(
    trained: Path, cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    ckpt = crafted(trained, tmp_path / "c.ckpt", _set("model.shortcut", "E"))
    run = eval_in_process(
        [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"], cifar10_root, tmp_path
    )
    assert run.code == 2
    assert "reslab: error: model.shortcut='E' is not valid for reslab.models.cifar_resnet" in (
        run.err
    )


def test_resume_and_fine_tuning_never_read_targets_from_a_checkpoint(
    trained: Path, cifar10_root: Path, tmp_path: Path
) -> None:
    """Resume restores the training state of a checkpoint (its config is the command line's);
    `weights=` reads its network tensors alone."""
    marker = tmp_path / "marker"
    tamper = tampering(marker)
    run_dir = tmp_path / "resumed"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = crafted(trained, run_dir / "checkpoints" / "last.ckpt", lambda hp: None)
    for where in ("model", "data.root", "callbacks.evil", "optimizer.lr", "trainer.plugins"):
        ckpt = crafted(ckpt, ckpt, tamper[where])
    record = train(
        compose_run(
            run_dir, cifar10_root, [*QUIET, "trainer.max_steps=3", "test=false", "resume=true"]
        )
    )
    assert record["steps"] == 3 and not marker.exists()

    tuned = tmp_path / "tuned"
    record = train(compose_run(tuned, cifar10_root, [*RUN, f"weights={ckpt}"]))
    assert record["steps"] == 2 and not marker.exists()


def test_ten_crop_needs_a_datamodule_that_takes_it(
    trained: Path, cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    """Whether the data can evaluate 10 crops is read from its DataModule's signature."""
    run = eval_in_process(
        [f"ckpt_path={trained}", "ten_crop=true", f"hydra.run.dir={tmp_path / 'e'}"],
        cifar10_root,
        tmp_path,
    )
    assert run.code == 2
    assert "reslab: error: ten_crop=true is the ImageNet protocol; use it with ImageNet data" in (
        run.err
    )
