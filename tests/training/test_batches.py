import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils.data import DistributedSampler

from lenet_mnist.training.batches import Grouped, TensorBatches, iterations_per_epoch


def test_iterations_with_a_last_partial_batch():
    assert iterations_per_epoch(1050, 100) == 11
    assert [len(y) for _, y in _batches()] == [100] * 10 + [50]


def test_iterations_exact_division_and_drop_last():
    assert iterations_per_epoch(60_000, 100) == 600
    assert iterations_per_epoch(60_000, 100) * 10 == 6000  # updates in 10 epochs
    assert iterations_per_epoch(1050, 100, drop_last=True) == 10
    assert iterations_per_epoch(55_000, 64) == 860


def _batches(seed=0, shuffle=True, drop_last=False):
    x = torch.arange(1050, dtype=torch.float32).reshape(-1, 1)
    return TensorBatches(
        x, torch.arange(1050), 100, shuffle=shuffle, seed=seed, drop_last=drop_last
    )


def test_each_epoch_is_a_permutation_of_all_samples():
    batches = _batches()
    assert len(batches) == 11
    for _ in range(2):
        seen = [b for _, b in batches]
        assert [len(b) for b in seen] == [100] * 10 + [50]
        assert sorted(torch.cat(seen).tolist()) == list(range(1050))


def test_order_depends_only_on_seed_and_epoch():
    a, b, c = _batches(seed=1), _batches(seed=1), _batches(seed=2)
    first_a, first_b, first_c = (torch.cat([y for _, y in it]) for it in (a, b, c))
    assert torch.equal(first_a, first_b)
    assert not torch.equal(first_a, first_c)
    second_a = torch.cat([y for _, y in a])
    assert not torch.equal(first_a, second_a)  # a new permutation each epoch
    assert torch.equal(second_a, torch.cat([y for _, y in b]))


def test_images_stay_paired_with_labels_and_unshuffled_is_in_order():
    for x, y in _batches():
        assert torch.equal(x.squeeze(1).long(), y)
    assert torch.equal(torch.cat([y for _, y in _batches(shuffle=False)]), torch.arange(1050))
    assert len(list(_batches(drop_last=True))) == 10


def test_groups_hand_on_every_batch_once_in_order():
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    plain = TensorBatches(x, y, 3, shuffle=True, seed=5)
    grouped = Grouped(TensorBatches(x, y, 3, shuffle=True, seed=5), 3)
    for _ in range(2):  # two epochs: the permutation moves on alike
        groups = list(grouped)
        assert [len(g) for g in groups] == [3, 1] and len(grouped) == 2
        flat = [b for g in groups for b in g]
        for (gx, gy), (px, py) in zip(flat, plain, strict=True):
            assert torch.equal(gx, px) and torch.equal(gy, py)


def _epoch_labels(batches):
    return torch.cat([batch[1] for batch in batches])


def test_ranks_take_disjoint_shards_of_one_permutation_that_cover_the_set():
    x, y = torch.arange(1050.0).reshape(-1, 1), torch.arange(1050)
    whole = TensorBatches(x, y, 100, shuffle=True, seed=3)
    ranks = [TensorBatches(x, y, 100, shuffle=True, seed=3, rank=r, world_size=4) for r in range(4)]
    for _ in range(2):  # the shards move on to the next permutation together
        order = _epoch_labels(whole)
        shards = [_epoch_labels(r) for r in ranks]
        assert {len(s) for s in shards} == {263}  # ceil(1050 / 4): equal steps on every rank
        assert {len(r) for r in ranks} == {3}
        interleaved = torch.stack(shards, dim=1).flatten()  # rank r holds positions r, r+4, ...
        assert torch.equal(interleaved[:1050], order)  # the one permutation, split
        assert torch.equal(interleaved[1050:], order[:2])  # padded by wrapping around
    for rx, ry, *_ in ranks[1]:
        assert torch.equal(rx.squeeze(1).long(), ry)


def test_unshuffled_shards_split_the_set_in_file_order():
    x, y = torch.arange(10.0).reshape(-1, 1), torch.arange(10)
    shards = [
        _epoch_labels(TensorBatches(x, y, 4, shuffle=False, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert shards[0].tolist() == [0, 2, 4, 6, 8] and shards[1].tolist() == [1, 3, 5, 7, 9]


def test_sharded_drop_last_drops_only_each_rank_s_partial_batch():
    x, y = torch.arange(1050.0).reshape(-1, 1), torch.arange(1050)
    ranks = [
        TensorBatches(x, y, 100, shuffle=True, seed=3, drop_last=True, rank=r, world_size=4)
        for r in range(4)
    ]
    shards = [_epoch_labels(r) for r in ranks]
    assert [len(r) for r in ranks] == [2] * 4 and {len(s) for s in shards} == {200}
    assert len(torch.cat(shards).unique()) == 800  # still disjoint


@pytest.mark.parametrize(("rank", "world"), [(2, 2), (-1, 2), (0, 5)])
def test_a_rank_outside_the_world_is_refused(rank, world):
    x, y = torch.zeros(4, 1), torch.arange(4)
    with pytest.raises(ValueError, match=f"rank={rank} of world_size={world} for 4 samples"):
        TensorBatches(x, y, 2, shuffle=False, rank=rank, world_size=world)


@given(n=st.integers(2, 60), world=st.integers(2, 5), shuffle=st.booleans())
@settings(max_examples=60, deadline=None)
def test_shards_are_the_ones_distributed_sampler_takes(n, world, shuffle):
    """Padded by wrapping around and dealt out rank by rank, as torch's sampler does it."""
    assume(world <= n)
    x, y = torch.arange(float(n)).reshape(-1, 1), torch.arange(n)
    whole = _epoch_labels(TensorBatches(x, y, 3, shuffle=shuffle, seed=7))
    for rank in range(world):
        ours = TensorBatches(x, y, 3, shuffle=shuffle, seed=7, rank=rank, world_size=world)
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        assert _epoch_labels(ours).tolist() == whole[list(sampler)].tolist()


def test_starting_an_iteration_draws_nothing_until_the_first_batch():
    """Lightning calls `iter` on the loader to check it: that must not move the batch order."""
    batches = TensorBatches(torch.arange(10.0), torch.arange(10), 3, shuffle=True, seed=1)
    state = batches.generator.get_state()
    iter(Grouped(batches, 2))
    assert torch.equal(batches.generator.get_state(), state)
