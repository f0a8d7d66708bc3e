"""Crash safety, exact resume, preemption, NaN, sweep isolation and bad input. Crashes and
signals hit the real console script in real subprocesses (real kill -9 and real signals); the
rest runs `reslab-train`'s entry point in this process."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers.damaged_files import damage
from helpers.processes import BIN, dirs_env, run_script
from helpers.runs import FIT_ONLY, QUIET

from reslab.models import cifar_resnet
from reslab.runs.checkpoints import AtomicCheckpointIO
from reslab.training.callbacks import FiniteLoss, NonFiniteLoss


def train(args: list[str], data: Path, logs: Path) -> subprocess.CompletedProcess:
    return run_script(["reslab-train", *args], data, logs)


def start(args: list[str], data: Path, logs: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "reslab-train"), *args],
        env={**os.environ, **dirs_env(data, logs)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not path.is_file():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.02)


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=False)["state_dict"]


def step(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=False)["global_step"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "loading",
    [
        ["data.pipeline=device"],
        ["data.pipeline=workers"],
        ["data.pipeline=workers", "data.num_workers=2"],
    ],
    ids=["device", "workers", "2-worker-processes"],
)
def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(
    cifar10_root: Path, tmp_path: Path, loading: list[str]
) -> None:
    args = [
        *QUIET,
        "test=false",
        *loading,
        "trainer.max_steps=25",
        "callbacks.last_checkpoint.every_n_train_steps=7",
    ]
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    assert train([*args, f"hydra.run.dir={full}"], cifar10_root, tmp_path).returncode == 0

    proc = start([*args, f"hydra.run.dir={crashed}"], cifar10_root, tmp_path)
    last = crashed / "checkpoints" / "last.ckpt"
    wait_for(last, proc)
    proc.kill()  # SIGKILL: no handler runs
    assert proc.wait() == -signal.SIGKILL
    killed_at = step(last)
    assert killed_at < 25 and killed_at % 10 != 0  # a mid-epoch checkpoint, not the end

    proc2 = train([*args, f"hydra.run.dir={crashed}", "resume=true"], cifar10_root, tmp_path)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert step(last) == 25
    a, b = weights(full / "checkpoints" / "last.ckpt"), weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma = json.loads((full / "summary.json").read_text())["metrics"]
    mb = json.loads((crashed / "summary.json").read_text())["metrics"]
    assert mb["val/err"] == ma["val/err"] and mb["val/loss"] == ma["val/loss"]
    # The interrupted epoch's training scores include the steps before the kill.
    assert epoch_scores(crashed) == epoch_scores(full)


def epoch_scores(run_dir: Path) -> list[tuple[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    scores = [(r["epoch"], r["train/loss_epoch"], r["train/err_epoch"]) for r in rows]
    return sorted({s for s in scores if s[1]})


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_saves_a_checkpoint_before_exit(
    sig: signal.Signals, cifar10_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [*FIT_ONLY, "trainer.max_steps=100000", f"hydra.run.dir={run_dir}"]
    proc = start(args, cifar10_root, tmp_path)
    wait_for(run_dir / "csv" / "metrics.csv", proc)  # training steps are being logged
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 128 + sig
    last = run_dir / "checkpoints" / "last.ckpt"
    assert 0 < step(last) < 100000


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    run_dir = tmp_path / "run"
    args = [
        *QUIET,
        "test=false",
        "trainer.max_steps=200",
        "optimizer.lr=1e12",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        f"hydra.run.dir={run_dir}",
    ]
    run = train_in_process(args, cifar10_root, tmp_path)
    assert run.code == 2, run.err[-3000:]
    (line,) = [ln for ln in run.err.splitlines() if ln.startswith("reslab: error:")]
    assert any(f"{what} at step" in line for what in ("is nan", "is inf", "not finite"))
    bad_step = int(line.split(" at step ")[1].split()[0])
    last = run_dir / "checkpoints" / "last.ckpt"
    assert str(last) in line
    assert step(last) < bad_step
    assert all(torch.isfinite(t).all() for t in weights(last).values() if t.is_floating_point())
    failed = json.loads((run_dir / "summary.json").read_text())  # reslab-runs: failed, not stopped
    assert failed["status"] == "failed"
    assert failed["error"] == "NonFiniteLoss: " + line.removeprefix("reslab: error: ")


def test_a_failed_sweep_job_does_not_stop_the_others_and_a_relaunch_skips_finished(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    """The sweep runs every job, then names the failed ones and exits 1; relaunched with
    `resume=true` it skips the finished job and fails the bad one again."""
    sweep = tmp_path / "sweep"
    args = ["-m", *FIT_ONLY, "trainer.max_steps=3", f"hydra.sweep.dir={sweep}"]
    run = train_in_process([*args, "optimizer.lr=-1,0.05"], cifar10_root, tmp_path)
    assert run.code == 1, run.err[-3000:]
    failed, done = sorted(sweep.glob("[0-9]_*"))
    bad = json.loads((failed / "summary.json").read_text())
    assert bad["status"] == "failed" and "optimizer.lr=-1" in bad["error"]
    good = json.loads((done / "summary.json").read_text())
    assert good["status"] == "completed" and good["steps"] == 3
    assert "reslab: 1 job(s) of the sweep did not complete:" in run.err
    (listed,) = [ln for ln in run.err.splitlines() if ln.startswith("  resnet-8_seed0: ")]
    assert "ConfigError: optimizer.lr=-1 is not valid" in listed and listed.endswith(f"({failed})")

    again = train_in_process([*args, "optimizer.lr=-1,0.05", "resume=true"], cifar10_root, tmp_path)
    assert again.code == 1 and "1 job(s) of the sweep did not complete" in again.err
    assert json.loads((done / "summary.json").read_text()) == good  # skipped, not re-run
    assert "already finished; skipping" in (done / "train.log").read_text()


def test_a_run_resumed_for_longer_keeps_one_best_checkpoint(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    """The fit's final `last.ckpt` holds the best checkpoint's record of the final validation,
    so a run resumed for longer replaces `best.ckpt` when it does better. Before, a periodic
    save of the fit's last step came before that validation and was kept: the resumed run did
    not know `best.ckpt` and wrote `best-v1.ckpt` beside it."""
    run_dir = tmp_path / "run"
    every = "callbacks.last_checkpoint.every_n_train_steps=2"
    args = [*FIT_ONLY, every, f"hydra.run.dir={run_dir}"]
    for steps, more in ((2, []), (4, ["resume=true"])):
        run = train_in_process([*args, f"trainer.max_steps={steps}", *more], cifar10_root)
        assert run.code == 0, run.err[-3000:]
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert names == ["best.ckpt", "last.ckpt"]
    with open(run_dir / "csv" / "metrics.csv") as f:
        first, second = [float(r["val/err"]) for r in csv.DictReader(f) if r["val/err"]]
    best = step(run_dir / "checkpoints" / "best.ckpt")
    assert best == (4 if second < first else 2)


def test_an_epoch_bounded_run_resumed_with_more_epochs_continues(
    cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    """Before: the finished run's record was compared with `trainer.max_steps` alone (-1 for an
    epoch-bounded run), so any resume of it was skipped as already finished."""
    run_dir = tmp_path / "run"
    args = [*FIT_ONLY, "trainer.max_steps=-1", f"hydra.run.dir={run_dir}"]
    first = train_in_process([*args, "trainer.max_epochs=1"], cifar10_root, tmp_path)
    assert first.code == 0, first.err[-3000:]
    record = json.loads((run_dir / "summary.json").read_text())
    assert (record["steps"], record["epochs"]) == (10, 1)
    longer = [*args, "trainer.max_epochs=2", "resume=true"]
    assert train_in_process(longer, cifar10_root, tmp_path).code == 0
    record = json.loads((run_dir / "summary.json").read_text())
    assert (record["steps"], record["epochs"]) == (20, 2)
    assert step(run_dir / "checkpoints" / "last.ckpt") == 20
    again = train_in_process(longer, cifar10_root, tmp_path)  # now it is finished
    assert again.code == 0
    assert json.loads((run_dir / "summary.json").read_text()) == record
    assert "already finished; skipping" in (run_dir / "train.log").read_text()


class _Saves(L.Callback):
    """The step of every checkpoint the trainer writes."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_save_checkpoint(self, trainer: L.Trainer, *args) -> None:
        self.steps.append(trainer.global_step)


@pytest.mark.parametrize(
    ("every", "saved"), [(None, [10, 15]), (4, [4, 8, 10, 12, 15]), (100, [10, 15])]
)
def test_last_checkpoint_is_written_after_every_validation(
    every: int | None, saved: list[int], tmp_path: Path
) -> None:
    """A real fit of 15 steps, 10 a epoch, validated after each epoch. Before: with
    `every_n_train_steps` set (the default config's 200), Lightning's ModelCheckpoint wrote
    nothing after validation, against the docs."""
    from lightning.pytorch.demos.boring_classes import BoringModel

    from reslab.training.callbacks import LastCheckpoint

    saves = _Saves()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=15,
        limit_train_batches=10,
        limit_val_batches=2,
        callbacks=[LastCheckpoint(str(tmp_path / "checkpoints"), every), saves],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert saves.steps == saved  # not during the sanity check, never twice for a step
    assert step(tmp_path / "checkpoints" / "last.ckpt") == 15
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]  # no -v1


def _other_arch_ckpt(path: Path, lightning: bool = True) -> Path:
    """A Lightning checkpoint of a ResNet-14 (a plain state_dict file with `lightning=False`)."""
    net = cifar_resnet(14)
    if not lightning:
        torch.save(net.state_dict(), path)
        return path
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    ckpt = {"state_dict": state, "hyper_parameters": {"model": {"depth": 14}}}
    torch.save({**ckpt, "pytorch-lightning_version": L.__version__}, path)
    return path


BAD = [
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is not valid; use a positive finite number"),
    ("optimizer.lr=0", "optimizer.lr=0 is not valid; use a positive finite number"),
    ("data.batch_size=0", "data.batch_size=0 is not valid for reslab.data.CIFARDataModule"),
    ("model=resnet999", "model=resnet999 is not an option of model; did you mean"),
    ("optimizer=sgdd", "optimizer=sgdd is not an option of optimizer; did you mean optimizer=sgd?"),
    ("data=imagenet1", "data=imagenet1 is not an option of data; did you mean data=imagenet?"),
    # A key that does not exist, without + (Hydra's own advice is several lines and says +).
    ("trainer.max_stepz=5", "trainer.max_stepz: trainer has no key 'max_stepz'; did you mean"),
    ("model.dept=3", "model.dept: model has no key 'dept'; did you mean model.depth?"),
    # An argument the node's target takes, not set by reslab's config: add it with +.
    (
        "trainer.val_check_interval=100",
        "lightning.Trainer takes it, so add it: +trainer.val_check_interval=<value>",
    ),
    ("dat.root=x", "dat.root: the config has no key 'dat'; did you mean data"),
    ("~callbacks.nothing", "callbacks.nothing: callbacks has no key 'nothing'; its keys: "),
    (
        "~callbacks.progres_bar",
        "callbacks has no key 'progres_bar'; did you mean callbacks.progress_bar?",
    ),
    # Every option tied for nearest is named.
    ("model=resnet2O", "did you mean model=resnet20 or model=resnet32? options: "),
    ("SLURM_MISSING", "hydra/launcher=slurm needs SLURM (no sbatch on PATH); launch from"),
    ("model.depth=21", "model.depth=21 is not a CIFAR ResNet depth"),
    ("model.shortcut=E", "model.shortcut='E' is not valid"),
    ("trainer.devices=999", "trainer.devices=999 but this machine has"),
    ("model.num_classes=100", "model.num_classes=100 but the data has 10 classes; drop"),
    ("CORRUPT", "data_batch_1 is corrupt (md5 differs"),
    ("OTHER_ARCH", "holds another architecture"),
    ("TRUNCATED", "is not a readable torch file"),
    ("STATE_DICT", "is not a Lightning checkpoint"),
    ("EMPTY_CKPT", "is not a readable torch file (0 bytes"),
    ("TEXT_CKPT", "is not a readable torch file"),
    ("DAMAGED_CKPT", "is damaged: its sha256 differs from the one written beside it"),
    ("LEGACY_PICKLE", "cannot be loaded (UnpicklingError: Weights only load failed"),
    # Values checked against the signature of what they build, and the ranges table.
    ("data.batch_size=abc", "data.batch_size='abc' is not valid for reslab.data.CIFAR"),
    ("trainer.max_steps=abc", "trainer.max_steps='abc' is not valid"),
    ("trainer.max_steps=0", "trainer.max_steps=0 is not valid; use a positive number"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is not valid"),
    ("trainer.precision=bf17", "trainer.precision='bf17' is not valid for lightning.Trainer"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 is not valid"),
    ("optimizer.lr=inf", "optimizer.lr=inf is not valid; use a positive finite number"),
    ("optimizer.lr=nan", "optimizer.lr=nan is not valid; use a positive finite number"),
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5 is not valid; use in [0, 1)"),
    ("optimizer.weight_decay=abc", "optimizer.weight_decay='abc' is not valid"),
    (
        "module.label_smoothing=1",
        "module.label_smoothing=1 is not valid for reslab.training.classifier",
    ),
    ("scheduler.warmup_steps=-5", "scheduler.warmup_steps=-5 is not valid"),
    ("seed=-1", "seed=-1 is not valid; use a non-negative integer"),
    ("data.pipeline=gpu", "data.pipeline='gpu' is not valid for reslab.data.CIFARDataModule"),
    # Top-level values of the wrong kind (no signature types them): a bare string is no list
    # (Python would store its letters), a record field that is no number (it crashed after
    # training).
    ("tags=baseline", "tags='baseline' is not valid; use a list of names: tags=[baseline]"),
    ("tags=[7]", "tags=[7] is not valid; use a list of names"),
    ("optimized_metric=val_err", "optimized_metric='val_err' is not valid; use null or a number"),
    ("optimized_metric=val_err.fnal", "optimized_metric='val_err.fnal' is not valid"),
    ("test=maybe", "test='maybe' is not valid; use true or false"),
    ("paper_error=abc", "paper_error='abc' is not valid; use null, a percentage, or one per"),
    # Unknown keys: top level (a misspelled group added with +), inside a node, the scheduler.
    (
        "+optimiser.lr=0.5",
        "unknown config key 'optimiser' (added with +?); did you mean optimizer?",
    ),
    ("+trainer.max_stepz=5", "unknown option trainer.max_stepz for lightning.Trainer; did you"),
    (
        "+scheduler.warmup=5",
        "unknown option scheduler.warmup for reslab.training.schedules.LRSchedule; did you mean "
        "scheduler.warmup_steps?",
    ),
    ("+data.colour=red", "unknown option data.colour for reslab.data.CIFARDataModule"),
    # Unknown keys in every node: the augmentation and the model options included.
    ("+augmentation.pda=4", "unknown option augmentation.pda for reslab.data.Augmentation; did"),
    ("+model.foo=1", "unknown option model.foo for reslab.models.cifar_resnet"),
    ("+module.foo=1", "unknown option module.foo for reslab.training.classifier.ImageClassifier"),
    ("+optimizer.lrr=0.1", "unknown option optimizer.lrr for torch.optim.SGD; did you mean"),
    # Choices and ranges from the signatures.
    ("+model.block=basik", "model.block='basik' is not valid for reslab.models.cifar_resnet"),
    ("scheduler.interval=iteration", "scheduler.interval='iteration' is not valid for"),
    ("augmentation.flip=2", "augmentation.flip=2 is not valid for reslab.data.Augmentation"),
    ("augmentation.pad=-4", "augmentation.pad=-4 is not valid for reslab.data.Augmentation"),
    # Rules across fields, against the real data and the trainer.
    ("data.val_size=2000", "data.val_size=2000 leaves no training image of the 500"),
    ("data.mean=[0.5,0.5]", "data.mean=[0.5, 0.5] has 2 values; give one per input channel"),
    ("data.std=[0,0,0]", "data.std=[0, 0, 0] must be positive"),
    ("data.batch_size=600", "data.batch_size=600 is larger than the 500 training images"),
    ("trainer.accumulate_grad_batches=3", "data.batch_size=50 is the global batch and does not"),
    ("trainer.max_steps=-1", "the run has no end; set one of them"),
    # A schedule steered by validation, when validation is the CIFAR test set.
    ("scheduler=plateau", "validation is the test set here, so the test set would steer"),
    # Files where resume reads them.
    ("callbacks.last_checkpoint.dirpath=/tmp/elsewhere", "but resume reads"),
    # Resume with nothing to resume.
    ("resume=true", "resume=true but there is no run to resume in"),
]
if not torch.cuda.is_available():
    BAD.append(("trainer.accelerator=gpu", "this machine has no CUDA GPU; use trainer=cpu"))


@pytest.mark.parametrize(("override", "needle"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_fails_before_compute_in_one_line(
    override: str, needle: str, cifar10_root: Path, tmp_path: Path, train_in_process
) -> None:
    data, args, env = cifar10_root, [*FIT_ONLY], None
    if override == "CORRUPT":
        data = tmp_path / "data"
        shutil.copytree(cifar10_root, data)
        (data / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not cifar")
        args = [a for a in args if a != "data.verify_md5=false"]
    elif override == "OTHER_ARCH":
        args.append(f"ckpt_path={_other_arch_ckpt(tmp_path / 'other.ckpt')}")
    elif override == "TRUNCATED":
        full = _other_arch_ckpt(tmp_path / "full.ckpt").read_bytes()
        (tmp_path / "cut.ckpt").write_bytes(full[: len(full) // 2])
        args.append(f"ckpt_path={tmp_path / 'cut.ckpt'}")
    elif override in ("EMPTY_CKPT", "TEXT_CKPT"):
        (tmp_path / "bad.ckpt").write_bytes(b"" if override == "EMPTY_CKPT" else b"text\n")
        args.append(f"ckpt_path={tmp_path / 'bad.ckpt'}")
    elif override == "DAMAGED_CKPT":
        written = tmp_path / "written" / "last.ckpt"
        ckpt = torch.load(_other_arch_ckpt(tmp_path / "other.ckpt"))
        AtomicCheckpointIO().save_checkpoint(ckpt, written)
        damage(written)
        args.append(f"ckpt_path={written}")
    elif override == "LEGACY_PICKLE":
        legacy = tmp_path / "legacy.ckpt"
        torch.save({"x": SimpleNamespace()}, legacy, _use_new_zipfile_serialization=False)
        args.append(f"ckpt_path={legacy}")
    elif override == "SLURM_MISSING":
        args = ["-m", *args, "hydra/launcher=slurm", "seed=0,1"]
        env = {"PATH": str(Path(sys.executable).parent)}
    elif override == "STATE_DICT":
        args.append(f"ckpt_path={_other_arch_ckpt(tmp_path / 'weights.pth', lightning=False)}")
    else:
        args.append(override)
    run_dir = tmp_path / "run"
    where = [] if override == "resume=true" else [f"hydra.run.dir={run_dir}"]
    run = train_in_process([*args, *where], data, tmp_path, env=env)
    stderr = run.err
    assert run.code != 0
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if needle in ln]
    assert len(lines) == 1, stderr[-2000:]  # the error is one line
    assert lines[0].startswith("reslab: error:")
    # Refused before the run started (no config tree): the dir Hydra made for it is gone.
    assert not run_dir.exists() and not (tmp_path / "train").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["weight", "running_var"])
def test_non_finite_weights_or_buffers_stop_the_run(bad: float, where: str) -> None:
    """The weights are checked even when the loss is finite, BN statistics included (a
    training-mode pass never uses them); finite weights pass. The check runs where the host
    reads anyway: every `log_every_n_steps` steps and before every checkpoint."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    trainer = SimpleNamespace(callbacks=[], global_step=7, current_epoch=0, log_every_n_steps=10)
    check = FiniteLoss()
    check.on_train_batch_end(trainer, net, torch.tensor(1.0), None, 0)
    check.on_save_checkpoint(trainer, net, {})
    getattr(net[1], where).data[2] = bad
    trainer.global_step = 8
    check.on_train_batch_end(trainer, net, torch.tensor(1.0), None, 0)  # not a read step
    with pytest.raises(NonFiniteLoss, match="weights or BN statistics are not finite at step 8"):
        check.on_save_checkpoint(trainer, net, {})
    trainer.global_step = 10
    with pytest.raises(NonFiniteLoss, match="not finite at step 10"):
        check.on_train_batch_end(trainer, net, torch.tensor(1.0), None, 0)


def test_the_first_non_finite_loss_is_named_with_its_step_and_value() -> None:
    """Kept on the device until a read: the first bad step, not the one where it is read."""
    net = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(callbacks=[], global_step=3, current_epoch=1, log_every_n_steps=50)
    check = FiniteLoss()
    check.on_train_batch_end(trainer, net, {"loss": torch.tensor(float("inf"))}, None, 0)
    trainer.global_step = 4
    check.on_train_batch_end(trainer, net, {"loss": torch.tensor(float("nan"))}, None, 0)
    with pytest.raises(NonFiniteLoss, match=r"training loss is inf at step 3 \(epoch 1\)"):
        check.on_train_end(trainer, net)
