"""The metric losses' triplet miners: semi-hard (the default) and random (RobRank's)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners

from eat_models.losses import TRIPLET_MARGIN, MetricLoss, random_triplets


def _batch(n: int = 24, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(n, 8, generator=g), dim=1)
    return embeddings, torch.arange(n) % classes


def _mean_hinge(embeddings, anchor, positive, negative) -> torch.Tensor:
    """``mean relu(d(a, p) − d(a, n) + margin)`` over every triplet, zeros included."""
    a, p, n = embeddings[anchor], embeddings[positive], embeddings[negative]
    gap = (a - p).norm(dim=1) - (a - n).norm(dim=1) + TRIPLET_MARGIN
    return gap.clamp(min=0).mean()


def test_the_semihard_miner_is_pytorch_metric_learnings():
    embeddings, labels = _batch()
    miner = miners.TripletMarginMiner(margin=TRIPLET_MARGIN, type_of_triplets="semihard")
    expected = losses.TripletMarginLoss(margin=TRIPLET_MARGIN)(
        embeddings, labels, miner(embeddings, labels)
    )
    assert torch.allclose(MetricLoss("triplet", 4, 8)(embeddings, labels), expected)


def test_the_random_miner_takes_the_mean_over_one_random_triplet_per_anchor():
    """Every row anchors one triplet, and the easy triplets' zeros count in the mean (as
    RobRank's ptriplet; pytorch-metric-learning's default averages the non-zero ones)."""
    embeddings, labels = _batch()
    torch.manual_seed(3)
    value = MetricLoss("triplet", 4, 8, miner="random")(embeddings, labels)
    torch.manual_seed(3)
    anchor, positive, negative = random_triplets(labels)
    assert len(anchor) == len(labels)
    hinge = _mean_hinge(embeddings, anchor, positive, negative)
    assert torch.allclose(value, hinge, atol=1e-5)
    a, p, n = embeddings[anchor], embeddings[positive], embeddings[negative]
    zeros = ((a - p).norm(dim=1) - (a - n).norm(dim=1) + TRIPLET_MARGIN) <= 0
    assert zeros.any() and not zeros.all()  # the test would not tell the reducers apart


def test_the_random_miner_on_spc2_pairs_takes_one_triplet_per_pair():
    """RobRank's spc2-random: anchor the even row, positive its partner, a random negative."""
    embeddings, _ = _batch(n=20)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 0, 3, 3, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1])
    torch.manual_seed(5)
    value = MetricLoss("triplet", 4, 8, miner="random", pairs=True)(embeddings, labels)
    torch.manual_seed(5)
    anchor, positive, negative = random_triplets(labels, pairs=True)
    assert anchor.tolist() == list(range(0, 20, 2))
    assert positive.tolist() == list(range(1, 20, 2))
    assert bool((labels[negative] != labels[anchor]).all())
    assert torch.allclose(value, _mean_hinge(embeddings, anchor, positive, negative), atol=1e-5)


def test_the_random_miner_refuses_a_batch_that_is_not_spc2_pairs():
    embeddings, labels = _batch(n=20)  # rows 0, 1 are of different classes
    loss = MetricLoss("triplet", 4, 8, miner="random", pairs=True)
    with pytest.raises(ValueError, match="SPC-2"):
        loss(embeddings, labels)


def test_a_miner_is_checked_when_the_loss_is_built():
    with pytest.raises(ValueError, match="unknown triplet miner 'hard'"):
        MetricLoss("triplet", 4, 8, miner="hard")
    with pytest.raises(ValueError, match="applies to the triplet loss"):
        MetricLoss("proxy-anchor", 4, 8, miner="random")


def test_a_run_on_spc2_batches_gets_the_random_miner_of_pairs():
    from eat_models.train import TrainConfig

    embeddings, labels = _batch(n=20)  # not laid out as pairs
    config = TrainConfig(loss="triplet", triplet_miner="random", sampler="spc2")
    with pytest.raises(ValueError, match="SPC-2"):
        MetricLoss.for_run(config, 4)(embeddings, labels)
    config.sampler = "class-balanced"
    assert MetricLoss.for_run(config, 4)(embeddings, labels) > 0
    with pytest.raises(ValueError, match="applies to the triplet loss"):
        MetricLoss.for_run(TrainConfig(loss="proxy-anchor", triplet_miner="random"), 4)
