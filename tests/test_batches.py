import torch

from lenet_mnist.batches import Grouped, TensorBatches, batch_sizes, iterations_per_epoch


def test_iterations_with_a_last_partial_batch():
    assert iterations_per_epoch(1050, 100) == 11
    assert batch_sizes(1050, 100)[-1] == 50
    assert sum(batch_sizes(1050, 100)) == 1050


def test_iterations_exact_division_and_drop_last():
    assert iterations_per_epoch(60_000, 100) == 600
    assert iterations_per_epoch(60_000, 100) * 10 == 6000  # updates in 10 epochs
    assert iterations_per_epoch(1050, 100, drop_last=True) == 10
    assert batch_sizes(1050, 100, drop_last=True) == [100] * 10
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
        assert [len(b) for b in seen] == batch_sizes(1050, 100)
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
