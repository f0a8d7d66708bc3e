"""Data-parallel training: global batch semantics (accumulation included), DDP that works
inside Hydra multiruns, and one run dir for all processes of a launch."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning import Trainer
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import read_write

from reslab.errors import ConfigError, RunFailed

# Variables Lightning's subprocess launcher sets in the launching process for its children.
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_env_before_launch: dict[str, str | None] | None = None
# Hydra launchers that run a sweep's jobs at once, in worker processes of the launching one.
PARALLEL_LAUNCHERS = (
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "hydra_plugins.reslab_local_gpus.local_gpus_launcher.LocalGpusLauncher",
)


def launch_time(fmt: str) -> str:
    """`${launch_time:%Y-%m-%d_%H-%M-%S}`: the time that names a run dir, the same in every
    process of one launch. Under torchrun each rank runs the command itself, on its own clock
    and on its own node, so the first rank to ask stores its time in the launch's own store
    (torchrun's TCPStore at MASTER_ADDR:MASTER_PORT, `TORCHELASTIC_USE_AGENT_STORE`) and every
    other rank reads it. Elsewhere this process's time, as Hydra's `${now:...}`: Lightning's
    own ranks and submitit's tasks are given the resolved dir."""
    now = datetime.now().strftime(fmt)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return now
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(seconds=60),
    )
    # compare_set with "" sets the key only where it is missing and returns what it holds.
    return store.compare_set(f"reslab/launch_time/{fmt}", "", now).decode()


def shares_a_terminal() -> bool:
    """Whether this is a job of a sweep whose jobs run at once (`hydra/launcher=local`,
    `local_gpus`): its output shares the terminal with theirs."""
    if not HydraConfig.initialized():
        return False
    hydra = HydraConfig.get()
    launcher = hydra.launcher.get("_target_") if hydra.launcher else None
    return hydra.mode == RunMode.MULTIRUN and launcher in PARALLEL_LAUNCHERS


def torchrun_rank_overrides(job_name: str) -> list[str]:
    """Under torchrun every rank runs the command itself, into the one run dir: ranks other
    than 0 log to a file of their own and leave `.hydra/` to rank 0, as Lightning's own ranks
    do (`hydra.job.name=train_ddp_process_<local rank>`, `hydra.output_subdir=null`); else all
    ranks appended to one train.log and wrote `.hydra/` at once."""
    rank = os.environ.get("RANK", "0")
    if os.environ.get("TORCHELASTIC_RUN_ID") is None or rank == "0":
        return []
    return [f"hydra.job.name={job_name}_rank_{rank}", "hydra.output_subdir=null"]


def per_device_batch(global_batch: int, world_size: int, accumulate: int = 1) -> int:
    """`data.batch_size` is the global batch of one optimizer step (the paper's 128 was 2 GPUs
    x 64): each of the `world_size` processes loads its share in `accumulate` micro-batches
    (`trainer.accumulate_grad_batches`), so a recipe optimises the same on any device count
    and memory budget."""
    if global_batch < 1:
        raise ConfigError(f"data.batch_size={global_batch} must be a positive integer")
    parts = world_size * accumulate
    if world_size < 1 or accumulate < 1 or global_batch % parts:
        over = []
        if world_size > 1:
            over.append(f"{world_size} processes (trainer.devices x trainer.num_nodes)")
        if accumulate > 1:
            over.append(f"{accumulate} micro-batches (trainer.accumulate_grad_batches)")
        raise ConfigError(
            f"data.batch_size={global_batch} is the global batch and does not split evenly over "
            f"{' x '.join(over)}; use a multiple of {parts}"
        )
    return global_batch // parts


def _forget_previous_job() -> None:
    """A previous multirun job in this process left Lightning's launcher variables (which would
    make this job believe its ranks already exist) and a process group of finished ranks."""
    global _env_before_launch
    if _env_before_launch is None:
        return
    for key, value in _env_before_launch.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _env_before_launch = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _point_children_at_this_job() -> None:
    """Lightning starts ranks 1..N-1 by re-running `sys.argv` with `hydra.run.dir` set to the
    run dir; in a sweep that re-runs the whole sweep (Lightning #11300, Hydra #2070). Make the
    command line this job's own overrides and the run dir this job's dir."""
    hydra = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra.overrides.task]
    with read_write(hydra.run):
        hydra.run.dir = hydra.runtime.output_dir


class HydraDDPStrategy(DDPStrategy):
    """Lightning's DDP (one process per device, started by re-running the command), made safe
    for Hydra multiruns: each sweep job runs once on N processes, in its own run dir. A
    failure caused by another process's end says so (`lost`): the launching process names
    that process, the others (torchrun's, srun's) say how they learned of it."""

    lost: str | None = None

    def on_exception(self, exception: BaseException) -> None:
        """Another rank's end reaches this one as a broken collective (gloo's "Connection
        closed by peer"), naming no process: note which one ended, then end the rest. The
        processes leave Lightning's watcher (it holds this list), which would kill this one as
        it writes the run's record and says why."""
        super().on_exception(exception)
        if not isinstance(exception, Exception):
            return  # a stop signal: every rank stops by itself
        procs = getattr(self.launcher, "procs", None)
        if not procs:  # started by torchrun or srun, or a rank Lightning started
            peer = broken_collective(exception)
            if peer:
                self.lost = f"another process of this DDP run ended ({peer}; its launcher names it)"
            return
        self.lost = ended(procs)
        children = list(procs)
        procs.clear()
        for proc in children:
            proc.kill()
            proc.wait()

    def _configure_launcher(self) -> None:
        global _env_before_launch
        super()._configure_launcher()
        _forget_previous_job()
        env = self.cluster_environment
        if env is None or env.creates_processes_externally or env.local_rank() != 0:
            return
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            _env_before_launch = {k: os.environ.get(k) for k in _LAUNCHER_ENV}
            _point_children_at_this_job()


def ended(procs: list) -> str | None:
    """Which of these DDP processes (Lightning's launcher's, local ranks 1..N-1) ended with an
    error, in words; None if none did."""
    lost = []
    for local_rank, proc in enumerate(procs, start=1):
        code = proc.poll()
        if code:
            how = f"was killed by {signal_name(-code)}" if code < 0 else f"exited {code}"
            lost.append(f"the DDP process of local rank {local_rank} (pid {proc.pid}) {how}")
    return "; ".join(lost) or None


# How gloo says that the process at the other end of a collective is gone.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def broken_collective(error: BaseException | None) -> str | None:
    """gloo's words for a collective broken by another process's end ("Connection closed by
    peer [10.0.0.2]:4321"), without its source path and advice; None for any other error."""
    while error is not None:
        text = str(error)
        for words in _PEER_GONE:
            if words in text and "gloo" in text:  # not a closed stdout pipe, say
                return "gloo: " + text[text.index(words) :].split(". ")[0].strip()
        error = error.__cause__ or error.__context__
    return None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal
        return f"signal {signum}"


@contextlib.contextmanager
def lost_process_named(trainer: Trainer, resume: str) -> Iterator[None]:
    """This process's failure, when another process of the run ended first and caused it, is
    one line naming that process (`RunFailed`), not the broken collective's traceback."""
    try:
        yield
    except Exception as e:
        lost = getattr(trainer.strategy, "lost", None)
        if lost is None:
            raise
        raise RunFailed(
            f"{lost}, so the run stopped at step {trainer.global_step}; {resume} continues it "
            "from its last.ckpt"
        ) from e
