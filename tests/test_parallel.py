"""Data-parallel training: 2 processes × batch b take the same step as 1 process × batch 2b (gloo on
CPU, the product's own loop), for the full and the sampled loss (whose item table gets sparse
gradients); and `train --nproc 2` runs end to end under torchrun and writes a checkpoint build accepts."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import DIGINETICA, cli, needs_shared

pytestmark = needs_shared

ENC = {"dim": 16, "max_len": 10, "dropout": 0.0}


def _one_step(loss: str, rank: int = 0, world: int = 1, port: int = 0, out: str = "") -> dict:
    from odrec_export.data.sessions import load_sessions
    from odrec_export.models.encoder import EncoderConfig
    from odrec_export.models.registry import build_model
    from odrec_export.train import parallel
    from odrec_export.train.loop import TrainConfig, cross_entropy_loss, fit

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                           "RANK": str(rank), "LOCAL_RANK": str(rank)})
        parallel.init("cpu")
    data = load_sessions(DIGINETICA)
    torch.manual_seed(0)
    model = build_model({"encoder": EncoderConfig(num_items=data.num_items, **ENC).to_dict(),
                         "compressor": "none", "items": {}})
    cfg = TrainConfig(epochs=1, max_batches=1, batch_size=32, loss=loss, negatives=64, seed=5)
    fit(model, data, cfg, cross_entropy_loss, log=lambda _: None)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.update({"grad/" + k: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone()
                  for k, p in model.named_parameters() if p.grad is not None})
    if rank == 0 and out:
        torch.save(state, out)
    if world > 1:  # both ranks done with gloo before either tears it down (a rank exiting mid-teardown aborts)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return state


def _worker(rank: int, loss: str, port: int, out: str) -> None:
    _one_step(loss, rank, 2, port, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_two_processes_of_b_equal_one_process_of_2b(loss, tmp_path):
    single = _one_step(loss)
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(loss, _free_port(), out), nprocs=2, join=True)
    double = torch.load(out, weights_only=True)
    grads = [k for k in single if k.startswith("grad/")]
    assert "grad/items.weight" in grads and len(grads) > 10
    for name in grads:  # the same averaged gradient
        assert torch.allclose(single[name], double[name], rtol=1e-4, atol=1e-7), name
    for name, t in single.items():  # so the same step: Adam's first update is ±lr wherever the gradient is
        if name.startswith("grad/"):  # not ~0, where float noise may flip its sign
            continue
        settled = single["grad/" + name].abs() > 1e-6 if "grad/" + name in single else torch.ones_like(t, dtype=bool)
        assert torch.allclose(t[settled], double[name][settled], rtol=1e-5, atol=1e-6), name
    # the step did move the weights (the comparison above is not between two untouched models)
    from odrec_export.data.sessions import load_sessions
    from odrec_export.models.encoder import EncoderConfig
    from odrec_export.models.registry import build_model
    torch.manual_seed(0)
    start = build_model({"encoder": EncoderConfig(num_items=load_sessions(DIGINETICA).num_items, **ENC).to_dict(),
                         "compressor": "none", "items": {}}).state_dict()
    assert not torch.equal(start["items.weight"], single["items.weight"])


def test_train_nproc_2_writes_a_checkpoint_build_accepts(tmp_path):
    from odrec_export.checkpoint import load_checkpoint

    r = cli("train", "--data", str(DIGINETICA), "--out", str(tmp_path / "t.pt"), "--epochs", "1", "--dim", "16",
            "--loss", "sampled", "--negatives", "64", "--nproc", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "on 2 processes" in r.stdout and r.stdout.count("wrote ") == 1
    ckpt = load_checkpoint(tmp_path / "t.pt")
    assert ckpt.provenance["history"][0]["processes"] == 2 and ckpt.provenance["complete"]
    r = cli("build", "--ckpt", str(tmp_path / "t.pt"), "--out", str(tmp_path / "art"), "--quant", "fp32")
    assert r.returncode == 0, r.stderr
