"""The DataModules' loaders: the training one resumes exactly from a checkpoint taken mid-epoch,
with any number of workers; their worker processes leave stop signals to the run."""

from __future__ import annotations

import logging
import multiprocessing
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from reslab.training import stopping

log = logging.getLogger("reslab")


def rng_states() -> dict[str, Any]:
    """torch, numpy and python RNG states, as types that `torch.load(weights_only=True)`
    accepts (Lightning loads checkpoints that way)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])


# An odd 64-bit constant (2**64 / golden ratio): distinct indices get distinct seeds.
SPREAD = 0x9E3779B97F4A7C15


def epoch_seed(key: int, epoch: int) -> int:
    """One epoch's seed from the run's key (numpy's `SeedSequence` hashes them)."""
    return int(np.random.SeedSequence((key, epoch)).generate_state(1, np.uint64)[0])


class SeededSamples(Dataset):
    """A dataset whose samples draw their augmentation from a seed of their own, made from the
    epoch's seed and the sample's index, not from a position in a process's RNG stream. A
    worker's stream is in no loader's state (torch and torchdata reseed workers and skip the
    done indices on resume), and which worker takes which sample depends on `num_workers`:
    keyed, a resumed epoch replays its crops, and a sample gets the same crop whichever process
    takes it. `key` is the run's seed, not a draw from the process's RNG, whose state as the
    loader is built depends on the model's initialisation and, under DDP, on Lightning's
    reseeding: so every model and process count of a seed gets one order and the same crops.
    `seed` lives in shared memory, so persistent workers see each epoch's. torch's draws only,
    as transforms make them; the process's own RNG is left as it was."""

    def __init__(self, dataset: Dataset, key: int) -> None:
        self.dataset = dataset
        self.key = key
        self.seed = multiprocessing.RawValue("Q", 0)

    def start(self, epoch: int) -> None:
        """Draw this epoch's order and augmentation (before its first index is asked for)."""
        self.seed.value = epoch_seed(self.key, epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        rng = torch.default_generator
        state = rng.get_state()
        rng.manual_seed((self.seed.value + index * SPREAD) % 2**64)
        try:
            return self.dataset[index]
        finally:
            rng.set_state(state)


class EpochOrder(DistributedSampler):
    """The training order: a permutation made from the epoch's seed (`SeededSamples.seed`), not
    drawn from a generator's current state. torchdata's worker iterator asks for the order
    twice as it starts, so a drawing sampler gave runs with 0 and N workers other orders; made
    from the seed, the order is one function of the run's seed and the epoch, however many
    workers or resumes. Of `world_size` processes, rank r takes every world_size-th index (the
    last `< world_size` dropped, so all ranks step together), so the ranks' batches of a step
    together are the one-process run's batch. A `DistributedSampler`, so that Lightning leaves
    it in place under DDP instead of putting its own reshuffling wrapper around it."""

    def __init__(self, samples: SeededSamples, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(samples, num_replicas=world_size, rank=rank, shuffle=False)
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples) // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        # The seed of index -1, which no sample has (`SPREAD` is odd: index -> seed is 1-1).
        seed = (self.samples.seed.value - SPREAD) % 2**64
        order = torch.randperm(len(self.samples), generator=torch.Generator().manual_seed(seed))
        world = self.num_replicas
        return iter(order[self.rank : len(self) * world : world].tolist())


class EvalDataLoader(DataLoader):
    """torch's DataLoader whose worker processes leave stop signals to the run
    (`reslab.training.stopping.held_from_children`). Its iterators draw their seed from a
    generator of their own, not from the run's RNG: a resumed run creates them at other moments
    (it skips the sanity check), which would shift every draw after them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(*args, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        with stopping.held_from_children():
            return super().__iter__()


class ResumableDataLoader(StatefulDataLoader):
    """torchdata's `StatefulDataLoader` over `samples` in their `EpochOrder`, whose position
    Lightning's fit loop saves in checkpoints and restores, plus the key and epoch that make
    the order and the augmentation (`SeededSamples`; the epoch counts the loader's passes) and
    the main process's RNG states (the batch mixers draw from them), so a mid-epoch resume
    replays the same order, crops and flips. The states are restored once the resumed iterator
    exists (creating it draws a seed). Its worker processes leave stop signals to the run
    (`reslab.training.stopping.held_from_children`). A `sampler` given replaces the order."""

    def __init__(self, samples: SeededSamples, **kwargs: Any) -> None:
        kwargs.setdefault("sampler", EpochOrder(samples))
        super().__init__(samples, **kwargs)
        self.epoch = -1
        self._to_restore: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        restore, self._to_restore = self._to_restore, None
        if restore and "key" in restore:  # the interrupted pass again (not in older checkpoints)
            self.dataset.key, self.epoch = restore["key"], restore["epoch"]
        else:
            self.epoch += 1
        self.dataset.start(self.epoch)
        with stopping.held_from_children():  # the workers start here
            iterator = super().__iter__()
        if restore:
            set_rng_states(restore["rng"])
        return iterator

    def state_dict(self) -> dict[str, Any]:
        state = {"loader": super().state_dict(), "rng": rng_states()}
        return {**state, "key": self.dataset.key, "epoch": self.epoch, "order": "seeded"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "order" not in state_dict:
            drop_drawn_order(state_dict)
            log.warning(
                "resume: this checkpoint is from an earlier reslab, which drew the epoch's order "
                "otherwise; the rest of epoch %s follows the order made from the seed (other "
                "samples than the interrupted run would have seen), and later epochs are whole",
                state_dict.get("epoch", "in progress"),
            )
        super().load_state_dict(state_dict["loader"])
        self._to_restore = state_dict


def drop_drawn_order(state_dict: dict[str, Any]) -> None:
    """Forget the RandomSampler state that earlier loaders saved beside the count of samples
    served (torchdata asserts a stateful sampler to load it into); the count stays, so the
    resumed epoch serves as many batches as were left."""
    loader = state_dict["loader"]
    for part in (loader, loader.get("_snapshot", {}).get("_main_snapshot", {})):
        served = part.get("_sampler_iter_state")
        if isinstance(served, dict):
            served.pop("sampler_iter_state", None)
            served.pop("sampler_state", None)
