"""data.batch_size is the global batch under DDP: each process takes its share, and the balance
loss (and its gradients) are those of one process on the whole batch (two CPU processes, gloo)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from gmsop.data import build_datamodule
from gmsop.heads import HEADS
from gmsop.registry import ConfigError
from gmsop.run.build import check_global_batch

BATCH, CHANNELS = 32, 8
HEAD = {"name": "gmsop", "num_components": 4, "k": 2, "component_dims": [6], "gate_dims": [6], "noise": "none"}


def _head() -> torch.nn.Module:
    """Seeded weights, the gate's drawn too (its initial uniform weights tie every score, and ties
    are broken at random)."""
    torch.manual_seed(0)
    head = HEADS.build(HEAD, CHANNELS).double()
    with torch.no_grad():
        for p in head.gate.parameters():
            p.copy_(torch.randn_like(p))
    for m in head.modules():  # BatchNorm's batch statistics are each process's own under DDP (unless
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):  # trainer.sync_batchnorm=true, on GPUs):
            m.eval()  # fixed statistics here, so that only the balance loss's reduction is compared
    return head


def _images() -> torch.Tensor:
    return torch.randn(BATCH, CHANNELS, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _gate_grads(head: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in head.named_parameters() if n.startswith("gate") and p.grad is not None}


def _rank(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # same initial weights on every process (seeded); components get no gradient from this loss
        head = DistributedDataParallel(_head(), find_unused_parameters=True)
        share = _images().chunk(world)[rank]  # this process's 16 of the 32 images
        aux = head(share).aux_loss
        aux.backward()
        out[rank] = (aux.detach(), _gate_grads(head.module))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_balance_loss_and_gate_gradients_over_two_processes_equal_one_process_on_the_whole_batch():
    head = _head()
    aux = head(_images()).aux_loss
    aux.backward()
    expected = _gate_grads(head)
    assert aux.item() > 0 and expected and all(g.abs().sum() > 0 for g in expected.values())
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(2, _free_port(), out), nprocs=2, join=True)
        results = dict(out)
    for rank in (0, 1):
        loss, grads = results[rank]
        torch.testing.assert_close(loss, aux.detach(), rtol=1e-12, atol=1e-14)  # float64: round-off only
        assert grads.keys() == expected.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected[name], rtol=1e-10, atol=1e-14, msg=name)


def test_each_process_takes_its_share_of_the_global_batch():
    dm = build_datamodule({"name": "digits", "batch_size": 32})
    assert [dm.per_process_batch(w) for w in (1, 2, 4)] == [32, 16, 8]
    with pytest.raises(ConfigError, match=r"data.batch_size=32 is the global batch, .* 3 processes .*multiple of 3"):
        dm.per_process_batch(3)
    from omegaconf import OmegaConf

    check_global_batch(OmegaConf.create({"devices": 2, "num_nodes": 2}), OmegaConf.create({"batch_size": 32}))
    check_global_batch(OmegaConf.create({"devices": "auto", "num_nodes": 1}), OmegaConf.create({"batch_size": 31}))
    with pytest.raises(ConfigError, match=r"trainer.devices=3 x trainer.num_nodes=1"):
        check_global_batch(OmegaConf.create({"devices": 3, "num_nodes": 1}), OmegaConf.create({"batch_size": 32}))
