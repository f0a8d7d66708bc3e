"""The training loader resumes mid-epoch with the same order and the same random crops, with
worker processes too, and evaluation leaves the run's RNG alone (the real runs, killed and
resumed, are in test_reliability.py)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from reslab.data.resumable import EvalDataLoader, ResumableDataLoader, SeededSamples


class Draws(Dataset):
    """Each sample: its index and a draw from torch's RNG, as a random crop makes one."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, int(torch.randint(10**9, ()))])


def loader(workers: int) -> ResumableDataLoader:
    return ResumableDataLoader(
        Draws(), batch_size=4, shuffle=True, num_workers=workers, persistent_workers=workers > 0
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
    resumed = loader(workers)
    resumed.load_state_dict(state)
    after = []
    for _ in range(3):
        after += batches(resumed, 1)[0]
        if len(before) + len(after) == len(full):
            break
    assert before + after == full
    epochs = [draws(full[epoch * 6 : epoch * 6 + 6]) for epoch in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]  # each epoch draws anew


def test_a_sample_draws_the_same_in_any_process_and_leaves_the_rng_alone() -> None:
    torch.manual_seed(0)
    by_index = {}
    for workers in (0, 2):
        dl = loader(workers)
        dl.key = 12345  # the one key, though each loader draws its own
        by_index[workers] = draws(batches(dl, 1)[0])
    assert by_index[0] == by_index[2]
    samples = SeededSamples(Draws())
    state = torch.get_rng_state()
    assert samples[3].tolist() == samples[3].tolist()
    assert torch.equal(torch.get_rng_state(), state)


def test_evaluation_does_not_draw_from_the_runs_rng() -> None:
    """A resumed run skips the sanity check, so its evaluation loaders start at other moments:
    drawing their seed from the run's RNG shifted every draw after them."""
    images = TensorDataset(torch.arange(24))
    state = torch.get_rng_state()
    for workers in (0, 1):
        assert len(list(EvalDataLoader(images, batch_size=8, num_workers=workers))) == 3
    assert torch.equal(torch.get_rng_state(), state)
