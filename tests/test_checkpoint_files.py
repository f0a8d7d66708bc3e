"""Damaged and unusual checkpoint files: a checksum beside every checkpoint reslab writes,
checked wherever one is read (resume, `ckpt_path=`, `weights=`, `reslab-eval`); files without
one still load; torch's legacy (non-zip) format is read as zip files are, pickles refused."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from helpers.damaged_files import damage
from helpers.processes import error_line, run_main
from helpers.runs import FIT_ONLY, QUIET

from reslab.errors import ConfigError
from reslab.models import cifar_resnet
from reslab.runs import checkpoints
from reslab.runs.atomic import WriteError
from reslab.runs.checkpoints import AtomicCheckpointIO
from reslab.runs.layout import checksum_file


@pytest.fixture(scope="module")
def trained(cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run dir (10 steps, one validation) with its checkpoints."""
    from reslab.commands.train import main

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    args = [
        "reslab-train",
        *QUIET,
        "test=false",
        "trainer.max_steps=10",
        f"hydra.run.dir={run_dir}",
    ]
    run = run_main(main, args, cifar10_root, run_dir.parent)
    assert run.code == 0, run.err[-3000:]
    return run_dir


def test_every_checkpoint_of_a_run_has_its_checksum_beside_it(trained: Path) -> None:
    ckpts = sorted((trained / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in ckpts] == ["best.ckpt", "last.ckpt"]
    for ckpt in ckpts:
        # The format of `sha256sum`, so `sha256sum -c last.ckpt.sha256` checks it too.
        digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
        assert checksum_file(ckpt).read_text() == f"{digest}  {ckpt.name}\n"
    names = {p.name for p in (trained / "checkpoints").iterdir()}
    assert names == {"best.ckpt", "best.ckpt.sha256", "last.ckpt", "last.ckpt.sha256"}


# Every reader, with a damaged tensor; a damaged pickle is caught by the same check.
READERS = ("resume", "ckpt_path", "weights", "eval ckpt_path", "eval weights")
CASES = [*((reader, "tensor") for reader in READERS), ("resume", "pickle")]


@pytest.mark.parametrize(("reader", "where"), CASES)
def test_a_damaged_checkpoint_is_refused_in_one_line_naming_it(
    reader: str,
    where: str,
    trained: Path,
    cifar10_root: Path,
    tmp_path: Path,
    train_in_process,
    eval_in_process,
) -> None:
    """Before: a damaged tensor was accepted and the run stopped with "training loss is nan
    ...; lower optimizer.lr", blaming the wrong thing; a damaged pickle gave a traceback."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    damage(last, where)
    if reader.startswith("eval"):
        key = reader.split()[1]
        data = ["model=resnet20", "model.depth=8", "data=cifar10", "data.verify_md5=false"]
        args = [f"{key}={last}", *(data if key == "weights" else []), f"hydra.run.dir={tmp_path}/e"]
        run = eval_in_process(args, cifar10_root, tmp_path)
    else:
        where = {
            "resume": [f"hydra.run.dir={run_dir}", "resume=true"],
            "ckpt_path": [f"ckpt_path={last}", f"hydra.run.dir={tmp_path}/new"],
            "weights": [f"weights={last}", f"hydra.run.dir={tmp_path}/new"],
        }[reader]
        run = train_in_process([*FIT_ONLY, "trainer.max_steps=12", *where], cifar10_root, tmp_path)
    line = error_line(run)
    assert f"={last} is damaged: its sha256 differs from the one written beside it" in line
    assert "last.ckpt.sha256" in line


def test_a_checkpoint_without_a_checksum_still_loads(
    trained: Path, cifar10_root: Path, tmp_path: Path, eval_in_process
) -> None:
    """Older runs and torchvision's downloads have no checksum file: read unchecked."""
    old = tmp_path / "old.ckpt"
    shutil.copy(trained / "checkpoints" / "last.ckpt", old)
    assert not checksum_file(old).exists()
    run = eval_in_process([f"ckpt_path={old}", f"hydra.run.dir={tmp_path}/e"], cifar10_root)
    assert run.code == 0, run.err[-3000:]


def test_an_unreadable_checksum_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, path)
    checksum_file(path).write_text("garbage\n")
    with pytest.raises(ConfigError, match=r"checksum file .*last\.ckpt\.sha256 lists no sha256"):
        checkpoints.load(path, "ckpt_path")


@pytest.mark.parametrize("fails_at", [1, 2, 3])
def test_a_save_stopped_at_any_write_leaves_a_checkpoint_that_matches_its_checksum(
    fails_at: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save is three atomic writes (checksums old+new, the checkpoint, checksum new); a crash
    or a full disk may stop it after any of them. Whatever file is left passes the check."""
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(100)}, path)
    real = checkpoints.write_atomic
    calls = []

    def stops(target: Path, data: bytes) -> None:
        calls.append(target)
        if len(calls) == fails_at:
            raise WriteError(f"cannot write {target}: stopped here")
        real(target, data)

    monkeypatch.setattr(checkpoints, "write_atomic", stops)
    with pytest.raises(WriteError):
        io.save_checkpoint({"step": 2, "w": torch.zeros(100)}, path)
    monkeypatch.setattr(checkpoints, "write_atomic", real)
    step = checkpoints.load(path, "ckpt_path", weights_only=True)["step"]
    assert step == (1 if fails_at <= 2 else 2)
    io.save_checkpoint({"step": 3, "w": torch.zeros(100)}, path)  # the next save cleans up
    assert len(checksum_file(path).read_text().splitlines()) == 1


def test_a_removed_checkpoint_takes_its_checksum_along(tmp_path: Path) -> None:
    """ModelCheckpoint removes a replaced best file through the plugin."""
    io = AtomicCheckpointIO()
    path = tmp_path / "best.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)
    io.remove_checkpoint(path)
    assert list(tmp_path.iterdir()) == []


def _legacy(path: Path, obj: object) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    return path


def test_legacy_format_weights_are_read_by_train_and_eval(
    cifar10_root: Path, tmp_path: Path, train_in_process, eval_in_process
) -> None:
    """Older torchvision `.pth` files are in torch's format before zip; read with
    `weights_only=True` as zip files are."""
    net = cifar_resnet(8)
    legacy = _legacy(tmp_path / "resnet8-legacy.pth", net.state_dict())
    train = train_in_process(
        [
            *QUIET,
            "test=false",
            "trainer.max_steps=1",
            f"weights={legacy}",
            f"hydra.run.dir={tmp_path}/t",
        ],
        cifar10_root,
        tmp_path,
    )
    assert train.code == 0, train.err[-3000:]
    assert (
        "network initialised from the file, head included"
        in (tmp_path / "t" / "train.log").read_text()
    )
    data = ["model=resnet20", "model.depth=8", "data=cifar10", "data.verify_md5=false"]
    run = eval_in_process([f"weights={legacy}", *data, f"hydra.run.dir={tmp_path}/e"], cifar10_root)
    assert run.code == 0, run.err[-3000:]


class _Payload:
    """Unpickled, it would create `target`."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("kind", ["pickle payload", "truncated"])
def test_a_legacy_file_with_a_pickle_or_cut_short_is_refused_in_one_line(
    kind: str, tmp_path: Path
) -> None:
    net = cifar_resnet(8)
    if kind == "pickle payload":
        payload = _Payload(tmp_path / "pwned")
        bad = _legacy(tmp_path / "bad.pth", {"state_dict": net.state_dict(), "x": payload})
        needle = "cannot be loaded (UnpicklingError: Weights only load failed"
    else:
        bad = _legacy(tmp_path / "bad.pth", net.state_dict())
        bad.write_bytes(bad.read_bytes()[:-1000])
        needle = "cannot be loaded (RuntimeError"
    with pytest.raises(ConfigError, match=rf"^weights={bad} {re.escape(needle)}"):
        checkpoints.load(bad, "weights", weights_only=True)
    assert not (tmp_path / "pwned").exists()


def test_a_held_save_is_written_by_commit_and_dropped_by_discard(tmp_path: Path) -> None:
    """What `LastCheckpoint` holds until Lightning has logged the step: the state of the save's
    moment, on disk (with its checksum) only once committed; a later save outside the hold
    replaces it."""
    writer, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    state = {"step": torch.tensor(1)}
    with writer.held():
        writer.save_checkpoint(state, path)
    state["step"] += 1  # the held save keeps its moment's state
    assert not path.exists() and not checksum_file(path).exists()
    writer.commit()
    assert torch.load(path)["step"] == 1 and not writer.pending
    assert checksum_file(path).read_text().startswith(hashlib.sha256(path.read_bytes()).hexdigest())

    with writer.held():
        writer.save_checkpoint({"step": torch.tensor(2)}, path)
    writer.discard()
    writer.commit()
    assert torch.load(path)["step"] == 1

    with writer.held():
        writer.save_checkpoint({"step": torch.tensor(3)}, path)
    writer.save_checkpoint({"step": torch.tensor(4)}, path)
    writer.commit()
    assert torch.load(path)["step"] == 4


def test_loggers_hear_of_each_last_ckpt_once_it_is_on_disk(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    """A logger that uploads checkpoints when told of a save (W&B's `log_model=all`) finds each
    held `last.ckpt` written: the epoch ends' (steps 10, 20) and the fit's end (25)."""
    probe = tmp_path / "probe.jsonl"
    run = train_in_process(
        [*FIT_ONLY, "trainer.max_steps=25", f"hydra.run.dir={tmp_path / 'run'}",
         "+logger.probe._target_=helpers.checkpoint_probe.SavedCheckpoints",
         f"+logger.probe.path={probe}"],
        cifar10_root,
        tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.err[-3000:]
    seen = [json.loads(line)["last_ckpt_step"] for line in probe.read_text().splitlines()]
    assert {10, 20, 25} <= set(seen), seen
