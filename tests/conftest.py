"""Shared fixtures: small slices of the real Fashion-MNIST files and a small trained model.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (installed by
``scripts/setup.sh``) or ``$EAT_DATA_DIR``. Nothing is downloaded.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def fmnist():
    """``(train, test)`` Fashion-MNIST, standard split, from the local IDX files."""
    from eat_models.data import load_fashion_mnist

    return load_fashion_mnist("standard")


@pytest.fixture(scope="session")
def fmnist_small(fmnist):
    """Stratified slices: 3,000 training and 1,000 test images."""
    from eat_models.data import stratified_slice

    train, test = fmnist
    return stratified_slice(train, 3000, seed=0), stratified_slice(test, 1000, seed=0)


@pytest.fixture(scope="session")
def trained_vanilla(tmp_path_factory):
    """A small vanilla model trained on a 6,000-image slice (a few seconds); its checkpoint dir."""
    from eat_models.train import TrainConfig, train

    out = tmp_path_factory.mktemp("vanilla") / "ckpt"
    config = TrainConfig(epochs=3, max_train=6000, out=str(out), seed=0, width=16, embedding_dim=64)
    return train(config, progress=False)


@pytest.fixture(scope="session")
def vanilla_model(trained_vanilla):
    from eat_models import load_model

    return load_model(trained_vanilla)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(name, **overrides)``: a training config small enough for a test (one
    epoch on a 600-image slice, width 4, 16-d, PGD-1), writing to ``tmp_path / name``."""
    from eat_models.train import TrainConfig

    def make(name: str, **overrides):
        base = {"epochs": 1, "max_train": 600, "width": 4, "embedding_dim": 16, "train_steps": 1}
        return TrainConfig(**{**base, "out": str(tmp_path / name), **overrides})

    return make
