"""The DataModules' loaders: the training one resumes exactly from a checkpoint taken mid-epoch;
their worker processes leave stop signals to the run."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
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


class EvalDataLoader(DataLoader):
    """torch's DataLoader whose worker processes leave stop signals to the run
    (`reslab.training.stopping.held_from_children`)."""

    def __iter__(self) -> Iterator[Any]:
        with stopping.held_from_children():
            return super().__iter__()


class ResumableDataLoader(StatefulDataLoader):
    """torchdata's `StatefulDataLoader`, whose position Lightning's fit loop saves in checkpoints
    and restores, plus the main process's RNG states: augmentations draw from them (with
    `num_workers=0`), so a mid-epoch resume replays the same crops and flips. They are restored
    once the resumed iterator exists (creating it draws a seed). Its worker processes leave
    stop signals to the run (`reslab.training.stopping.held_from_children`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng_to_restore: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        with stopping.held_from_children():  # the workers start here
            iterator = super().__iter__()
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        return iterator

    def state_dict(self) -> dict[str, Any]:
        return {"loader": super().state_dict(), "rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict["loader"])
        self._rng_to_restore = state_dict["rng"]
