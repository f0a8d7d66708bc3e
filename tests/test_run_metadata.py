"""What a run says about itself: its `tags` (summary.json, W&B, TensorBoard hparams) and the
resolved config tree, printed at the start and saved in the run dir by rank 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import wandb
from helpers.runs import FIT_ONLY, compose_run
from helpers.wandb_records import records
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from reslab.commands.train import print_config, train

TAGS = ["depth-sweep", "baseline"]


def test_tags_reach_the_summary_wandb_and_tensorboard(cifar10_root: Path, tmp_path: Path) -> None:
    args = [*FIT_ONLY, "trainer.max_steps=2", "logger=[csv,tensorboard,wandb]"]
    record = train(compose_run(tmp_path, cifar10_root, [*args, f"tags=[{','.join(TAGS)}]"]))
    wandb.finish()
    wandb.teardown()  # the service writes the run file; it has flushed it once it stops
    assert record["tags"] == TAGS
    assert json.loads((tmp_path / "summary.json").read_text())["tags"] == TAGS

    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    (run,) = [r.run for r in records(run_file) if r.WhichOneof("record_type") == "run"]
    assert list(run.tags) == TAGS

    (events,) = tmp_path.glob("tensorboard/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert all(tag in hparams["tags"].string_value for tag in TAGS)


def test_the_resolved_config_tree_is_saved_and_its_choices_printed(
    cifar10_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_run(tmp_path, cifar10_root, [*FIT_ONLY, "trainer.max_steps=1"])
    with caplog.at_level("INFO", logger="reslab"):
        train(cfg)
    out = caplog.text
    saved = (tmp_path / "config_tree.log").read_text()
    # Resolved: the interpolated run name and cudnn switch, not their ${...} expressions.
    assert "resnet-8_seed0" in saved and "benchmark: false" in saved and "${" not in saved
    assert saved.strip().splitlines()[0] == "config"
    assert "None" not in saved and "ckpt_path\n│   └── null" in saved  # YAML throughout
    assert max(len(line) for line in saved.splitlines()) > 80  # paths on one line each
    assert "config: model=resnet20 data=cifar10 " in out  # what the run chose, on screen
    assert f"full config: {tmp_path / 'config_tree.log'}" in out
    assert "├── module" not in out

    # Other DDP ranks neither print nor write it.
    (tmp_path / "config_tree.log").unlink()
    caplog.clear()
    rank = rank_zero_only.rank
    try:
        rank_zero_only.rank = 1
        print_config(cfg, tmp_path)
    finally:
        rank_zero_only.rank = rank
    assert not (tmp_path / "config_tree.log").exists()
    assert "full config" not in caplog.text
