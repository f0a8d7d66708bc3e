"""A training DataLoader that a checkpoint taken mid-epoch resumes exactly."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torchdata.stateful_dataloader import StatefulDataLoader


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


class ResumableDataLoader(StatefulDataLoader):
    """torchdata's `StatefulDataLoader` (whose position Lightning's fit loop saves and restores),
    with two fixes that make a mid-epoch resume replay the same batches:

    - Lightning prefetches one batch, so at a checkpoint the loader has already yielded the next
      batch; `state_dict` reports the state from before that batch, which is then fetched again.
    - Augmentations draw from the main process's RNGs (with `num_workers=0`); their state from
      before that batch is restored when the resumed loader fetches its first batch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._before_last: dict[str, Any] | None = None
        self._rng_to_restore: dict[str, Any] | None = None

    def _now(self) -> dict[str, Any]:
        return {"loader": super().state_dict(), "rng": rng_states()}

    def __iter__(self) -> Iterator[Any]:
        iterator = super().__iter__()
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        return self._track(iterator)

    def _track(self, iterator: Iterator[Any]) -> Iterator[Any]:
        while True:
            before = self._now()
            try:
                batch = next(iterator)
            except StopIteration:
                self._before_last = None
                return
            self._before_last = before
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self._before_last if self._before_last is not None else self._now()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict["loader"])
        self._rng_to_restore = state_dict["rng"]
        self._before_last = None
