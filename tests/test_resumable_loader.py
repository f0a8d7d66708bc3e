"""The training loader serves the same order and random crops with any number of workers,
resumes mid-epoch with them, and evaluation leaves the run's RNG alone (the real runs, killed
and resumed, are in test_reliability.py)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler, TensorDataset

from reslab.data.resumable import EpochOrder, EvalDataLoader, ResumableDataLoader, SeededSamples


class Draws(Dataset):
    """Each sample: its index and a draw from torch's RNG, as a random crop makes one."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, int(torch.randint(10**9, ()))])


def loader(workers: int, key: int = 0) -> ResumableDataLoader:
    samples = SeededSamples(Draws(), key)
    return ResumableDataLoader(
        samples, batch_size=4, num_workers=workers, persistent_workers=workers > 0
    )


def batches(dl: ResumableDataLoader, epochs: int, stop: tuple[int, int] | None = None):
    """The batches of `epochs` passes, or up to the `stop` (epoch, batch) and the state there."""
    seen = []
    for epoch in range(epochs):
        for i, x in enumerate(dl):
            seen.append(x.tolist())
            if (epoch, i) == stop:
                return seen, dl.state_dict()
    return seen, None


def draws(seen: list) -> dict[int, int]:
    """index -> draw, over batches of (index, draw) rows."""
    return {index: draw for batch in seen for index, draw in batch}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_resumed_mid_epoch_replays_the_order_and_the_draws(workers: int) -> None:
    torch.manual_seed(0)
    full, _ = batches(loader(workers), 3)
    torch.manual_seed(0)
    before, state = batches(loader(workers), 3, stop=(0, 2))
    torch.manual_seed(1)  # the resumed process starts elsewhere
    resumed = loader(workers, key=1)  # the state's key wins
    resumed.load_state_dict(state)
    after = []
    for _ in range(3):
        after += batches(resumed, 1)[0]
        if len(before) + len(after) == len(full):
            break
    assert before + after == full
    epochs = [draws(full[epoch * 6 : epoch * 6 + 6]) for epoch in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]  # each epoch draws anew


def test_the_order_and_the_draws_do_not_depend_on_the_worker_count() -> None:
    """torchdata's worker iterator asks for the order twice as it starts: a sampler drawing
    from a generator gave 0 and 2 workers other orders."""
    seen = {}
    for workers in (0, 1, 2):
        torch.manual_seed(workers)  # the process's RNG plays no part: the key is the seed
        seen[workers] = batches(loader(workers), 2)[0]
    assert seen[0] == seen[1] == seen[2]
    first, second = (
        sorted(row[0] for batch in seen[0][e : e + 6] for row in batch) for e in (0, 6)
    )
    assert first == second == list(range(24))  # each epoch takes every sample once
    assert seen[0][:6] != seen[0][6:]  # in an order, and with draws, of its own
    samples = SeededSamples(Draws(), key=0)
    state = torch.get_rng_state()
    assert samples[3].tolist() == samples[3].tolist()
    assert torch.equal(torch.get_rng_state(), state)


def test_under_ddp_the_ranks_batches_together_are_the_one_process_batches() -> None:
    """Each rank takes every world_size-th index of the one order, and the order is a
    `DistributedSampler`, which Lightning leaves in place (it wraps any other sampler in a
    reshuffling one of its own)."""
    single = [sorted(map(tuple, batch)) for batch in batches(loader(0), 1)[0]]
    ranks = []
    for rank in (0, 1):
        samples = SeededSamples(Draws(), key=0)
        order = EpochOrder(samples, rank=rank, world_size=2)
        assert isinstance(order, DistributedSampler)
        ranks.append(batches(ResumableDataLoader(samples, batch_size=2, sampler=order), 1)[0])
    assert [sorted(map(tuple, a + b)) for a, b in zip(*ranks, strict=True)] == single
    odd = EpochOrder(SeededSamples(Draws(), key=0), rank=1, world_size=5)
    assert len(odd) == len(list(odd)) == 4  # 24 samples over 5 ranks: 4 each, 4 left out


def main_snapshot(state: dict, workers: int) -> dict:
    """Where torchdata keeps the main process's part of a loader's state."""
    return state["loader"]["_snapshot"]["_main_snapshot"] if workers else state["loader"]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_state_from_the_drawn_order_resumes_in_the_new_one_and_says_so(
    workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Earlier loaders drew the order with torchdata's RandomSampler and saved its state beside
    the count of samples served; loading one into the keyed order failed an assertion."""
    torch.manual_seed(0)
    _, state = batches(loader(workers), 1, stop=(0, 2))
    del state["order"]
    sampler = main_snapshot(state, workers)["_sampler_iter_state"]
    sampler["sampler_iter_state"] = {"yielded": 12, "generator": torch.get_rng_state()}
    resumed = loader(workers)
    with caplog.at_level(logging.WARNING, logger="reslab"):
        resumed.load_state_dict(state)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "an earlier reslab" in line and "rest of epoch 0" in line
    rest = batches(resumed, 1)[0]
    assert len(rest) == 3  # the epoch's last 3 of 6 batches
    assert len(batches(resumed, 1)[0]) == 6  # and the next epoch whole


def test_evaluation_does_not_draw_from_the_runs_rng() -> None:
    """A resumed run skips the sanity check, so its evaluation loaders start at other moments:
    drawing their seed from the run's RNG shifted every draw after them."""
    images = TensorDataset(torch.arange(24))
    state = torch.get_rng_state()
    for workers in (0, 1):
        assert len(list(EvalDataLoader(images, batch_size=8, num_workers=workers))) == 3
    assert torch.equal(torch.get_rng_state(), state)
