"""The DataModules' loaders: the training one resumes exactly from a checkpoint taken mid-epoch,
with any number of workers; their worker processes leave stop signals to the run."""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from reslab.training import stopping


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
    takes it. `seed` lives in shared memory, so persistent workers see each epoch's. torch's
    draws only, as transforms make them; the process's own RNG is left as it was."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.seed = multiprocessing.RawValue("Q", 0)

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
    """torchdata's `StatefulDataLoader`, whose position Lightning's fit loop saves in checkpoints
    and restores, plus the augmentation's key and epoch (`SeededSamples`: the key is drawn from
    the main process's RNG as the loader is built, the epoch counts its passes) and the main
    process's RNG states (the batch mixers draw from them), so a mid-epoch resume replays the
    same order, crops and flips. The states are restored once the resumed iterator exists
    (creating it draws a seed). Its worker processes leave stop signals to the run
    (`reslab.training.stopping.held_from_children`)."""

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        if not isinstance(dataset, SeededSamples):
            dataset = SeededSamples(dataset)
        super().__init__(dataset, *args, **kwargs)
        self.key, self.epoch = int(torch.randint(2**62, ())), -1
        self._to_restore: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        restore, self._to_restore = self._to_restore, None
        if restore and "key" in restore:  # the interrupted pass again (not in older checkpoints)
            self.key, self.epoch = restore["key"], restore["epoch"]
        else:
            self.epoch += 1
        self.dataset.seed.value = epoch_seed(self.key, self.epoch)  # before the first index
        with stopping.held_from_children():  # the workers start here
            iterator = super().__iter__()
        if restore:
            set_rng_states(restore["rng"])
        return iterator

    def state_dict(self) -> dict[str, Any]:
        state = {"loader": super().state_dict(), "rng": rng_states()}
        return {**state, "key": self.key, "epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict["loader"])
        self._to_restore = state_dict
