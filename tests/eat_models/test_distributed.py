"""Data-parallel training and embedding with torch.distributed: two gloo ranks on CPU,
started the way torchrun starts them (environment variables), compared with one process."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from eat_models import distributed, load_model
from eat_models.train import TrainConfig, train

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_rank(rank: int, port: int, fn, args) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _spawn(fn, *args) -> None:
    mp.start_processes(_as_rank, args=(_free_port(), fn, args), nprocs=WORLD, start_method="spawn")


def _config(out: Path, defense: str, **overrides) -> TrainConfig:
    base = {
        "defense": defense,
        "max_train": 800,
        "epochs": 2,
        "width": 4,
        "embedding_dim": 16,
        "classes_per_batch": 8,
        "samples_per_class": 4,
        "train_steps": 1,
        "threads": 1,
        "out": str(out),
    }
    return TrainConfig(**{**base, **overrides})


def _train_rank(rank: int, out: str, defense: str) -> None:
    train(_config(Path(out), defense), progress=False)


def _gradient_rank(rank: int, out: str) -> None:
    """One linear layer, an MSE loss: the mean of the two half-batch gradients must equal
    the full-batch gradient exactly (the loss is a mean over rows)."""
    ctx = distributed.context("cpu")
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3)
    x, y = torch.randn(8, 6), torch.randn(8, 3)
    torch.nn.functional.mse_loss(layer(ctx.shard(x)), ctx.shard(y)).backward()
    distributed.average_gradients(list(layer.parameters()), ctx)
    if ctx.is_main:
        torch.save({"weight": layer.weight.grad, "bias": layer.bias.grad}, out)


def test_averaged_shard_gradients_equal_the_full_batch_gradient(tmp_path):
    out = tmp_path / "grads.pt"
    _spawn(_gradient_rank, str(out))
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3)
    x, y = torch.randn(8, 6), torch.randn(8, 3)
    torch.nn.functional.mse_loss(layer(x), y).backward()
    got = torch.load(out, weights_only=True)
    torch.testing.assert_close(got["weight"], layer.weight.grad)
    torch.testing.assert_close(got["bias"], layer.bias.grad)


@pytest.mark.parametrize("defense", ["vanilla", "eat"])
def test_two_rank_training_follows_single_process_training(tmp_path, defense):
    single = train(_config(tmp_path / "single", defense), progress=False)
    _spawn(_train_rank, str(tmp_path / "ddp"), defense)
    ddp = tmp_path / "ddp"
    model = load_model(ddp)  # one checkpoint, loadable, written by rank 0
    assert model.meta["num_members"] == (3 if defense == "eat" else 1)
    records = {
        name: json.loads((path / "config.json").read_text())["train"]
        for name, path in (("single", single), ("ddp", ddp))
    }
    assert records["ddp"]["world_size"] == 2 and records["single"]["world_size"] == 1
    assert records["ddp"]["global_batch_size"] == records["single"]["global_batch_size"] == 32
    assert records["ddp"]["steps"] == records["single"]["steps"]  # the same global batches
    single_loss = np.array([h["loss"] for h in records["single"]["history"]])
    ddp_loss = np.array([h["loss"] for h in records["ddp"]["history"]])
    # Each rank's metric loss is taken on its half of the batch. Proxy-Anchor sums over the
    # batch's items inside a log, so a half batch has a smaller loss: the levels differ
    # (about 15 % here) while the trajectories move alike, and the models end up alike.
    assert (ddp_loss[1:] < ddp_loss[:-1]).all() and (single_loss[1:] < single_loss[:-1]).all()
    np.testing.assert_allclose(ddp_loss / ddp_loss[0], single_loss / single_loss[0], atol=0.05)
    np.testing.assert_allclose(ddp_loss, single_loss, rtol=0.25)
    from eat_models.data import load_fashion_mnist, stratified_slice
    from eat_models.evaluate import evaluate_model

    test = stratified_slice(load_fashion_mnist("standard")[1], 1000, 0)
    r1 = {
        name: evaluate_model(load_model(path), test)["recall@1"]
        for name, path in (("single", single), ("ddp", ddp))
    }
    assert abs(r1["ddp"] - r1["single"]) < 0.08, r1


def _gallery_source():
    from eat_models.data import load_fashion_mnist, stratified_slice
    from index import DatasetSource

    return DatasetSource(stratified_slice(load_fashion_mnist("standard")[1], 301, 0))


def _embed_rank(rank: int, model_dir: str, out: str) -> None:
    from index.build import embed_source

    ctx = distributed.context("cpu")
    embedded = embed_source(
        load_model(model_dir), _gallery_source(), batch_size=64, thumbnail_size=28, ctx=ctx
    )
    if ctx.is_main:
        np.savez(out, vectors=embedded.vectors, thumbnails=embedded.thumbnails)
        Path(out + ".json").write_text(json.dumps(embedded.records))


def test_sharded_gallery_embedding_equals_single_process_embedding(trained_vanilla, tmp_path):
    from index.build import embed_source

    out = str(tmp_path / "sharded.npz")
    _spawn(_embed_rank, str(trained_vanilla), out)
    single = embed_source(
        load_model(trained_vanilla), _gallery_source(), batch_size=64, thumbnail_size=28
    )
    sharded = np.load(out)
    assert sharded["vectors"].shape == (301, single.vectors.shape[1])  # odd count: 151 + 150
    np.testing.assert_allclose(sharded["vectors"], single.vectors, atol=1e-5)
    np.testing.assert_array_equal(sharded["thumbnails"], single.thumbnails)
    assert json.loads(Path(out + ".json").read_text()) == single.records  # source order
