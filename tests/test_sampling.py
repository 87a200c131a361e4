"""The training order: a shuffle per epoch that depends only on (seed, epoch), and a resume that
skips exactly the batches already trained, per process under DDP."""

from __future__ import annotations

import pytest

from gmsop.data.sampling import Position, ResumableSampler

N, BATCH = 50, 4
DATASET = list(range(N))


def _order(sampler: ResumableSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch():
    a, b = ResumableSampler(DATASET, BATCH, seed=7), ResumableSampler(DATASET, BATCH, seed=7)
    assert _order(a, 3) == _order(b, 3)  # another process, same order
    assert sorted(_order(a, 0)) == DATASET
    assert _order(a, 0) != _order(a, 1)
    assert _order(a, 0) != _order(ResumableSampler(DATASET, BATCH, seed=8), 0)
    assert _order(a, 2) == _order(a, 2)  # iterating again does not advance anything


def test_resume_skips_the_trained_batches_of_that_epoch_only():
    whole = ResumableSampler(DATASET, BATCH, seed=1)
    e2, e3 = _order(whole, 2), _order(whole, 3)
    resumed = ResumableSampler(DATASET, BATCH, seed=1)
    resumed.resume_at(Position(epoch=2, batches=5))
    assert len(resumed) == N  # Lightning counts the epoch's batches from the full length
    assert list(resumed) == e2[5 * BATCH :]
    assert _order(resumed, 3) == e3  # the next epoch is whole again
    resumed.resume_at(Position(epoch=2, batches=5))
    assert _order(resumed, 3) == e3  # a position for another epoch skips nothing


def test_two_processes_split_each_epoch_and_resume_their_own_shard():
    shards = [ResumableSampler(DATASET, BATCH, seed=1, num_replicas=2, rank=r) for r in range(2)]
    orders = [_order(s, 4) for s in shards]
    assert sorted(orders[0] + orders[1]) == DATASET  # 50 samples, 25 each: disjoint and complete
    for rank, shard in enumerate(shards):
        shard.resume_at(Position(epoch=4, batches=3))
        assert list(shard) == orders[rank][3 * BATCH :]


@pytest.mark.parametrize("batches", [-1, N // BATCH + 1])
def test_a_position_outside_the_epoch_is_refused(batches):
    with pytest.raises(ValueError, match=f"cannot resume after {batches} batches of {BATCH}"):
        ResumableSampler(DATASET, BATCH, seed=0).resume_at(Position(0, batches))


def test_the_datamodule_carries_seed_and_position_through_its_state(tmp_path):
    from gmsop.data import build_datamodule

    dm = build_datamodule({"name": "digits", "batch_size": 16, "image_size": 8})
    dm.setup()
    fresh = build_datamodule({"name": "digits", "batch_size": 16, "image_size": 8})
    fresh.setup()
    fresh.load_state_dict({"shuffle_seed": dm.shuffle_seed, "position": [1, 2]})
    sampler = fresh.train_dataloader().sampler
    whole = dm.train_dataloader().sampler
    assert (sampler.epoch, list(sampler)) == (1, _order(whole, 1)[2 * 16 :])
    again = fresh.train_dataloader().sampler  # the position is used once: a reloaded loader starts whole
    assert (again.epoch, len(list(again))) == (0, len(dm._train))
