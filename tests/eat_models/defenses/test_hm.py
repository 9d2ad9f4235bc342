"""HM (hardness manipulation): its loss, its adversary's objective and its destinations,
each checked against a direct per-triplet computation on a tiny batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from eat_models.defenses import Batch, build_defense
from eat_models.defenses.hm import (
    HM,
    hardness_manipulation_objective,
    intra_class_structure_loss,
    linear_gradual_destination,
    semihard_destination,
)
from eat_models.defenses.triplets import (
    hardness,
    softhard_triplets,
    triplet_loss,
)
from eat_models.losses import MetricLoss, random_triplets
from eat_models.networks import NetworkConfig, build_network
from eat_models.train import TrainConfig


def _dist(u, v):
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v, strict=True)))


@pytest.fixture
def triplet_embeddings():
    g = torch.Generator().manual_seed(0)
    return [
        F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1) for _ in range(3)
    ]


def test_hardness_is_d_ap_minus_d_an(triplet_embeddings):
    a, p, n = triplet_embeddings
    expected = [_dist(a[i], p[i]) - _dist(a[i], n[i]) for i in range(5)]
    assert hardness(a, p, n).tolist() == pytest.approx(expected, abs=1e-12)


def test_triplet_and_ics_losses_match_a_direct_computation(triplet_embeddings):
    a, p, n = triplet_embeddings
    margin = 0.2
    expected = sum(max(0.0, _dist(a[i], p[i]) - _dist(a[i], n[i]) + margin) for i in range(5)) / 5
    assert triplet_loss(a, p, n, margin).item() == pytest.approx(expected, abs=1e-12)
    # ICS with clean anchor a, adversarial anchor ã = n here, clean positive p:
    expected_ics = sum(max(0.0, _dist(a[i], n[i]) - _dist(a[i], p[i])) for i in range(5)) / 5
    assert intra_class_structure_loss(a, n, p).item() == pytest.approx(expected_ics, abs=1e-12)


@pytest.mark.parametrize("destination", [-0.2, -0.05, 0.0])
def test_adversary_objective_is_minus_mean_squared_shortfall(triplet_embeddings, destination):
    a, p, n = triplet_embeddings
    shortfalls = [max(0.0, destination - (_dist(a[i], p[i]) - _dist(a[i], n[i]))) for i in range(5)]
    expected = -sum(s * s for s in shortfalls) / 5
    value = hardness_manipulation_objective(destination)(torch.cat([a, p, n]))
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_adversary_objective_takes_a_per_triplet_destination(triplet_embeddings):
    a, p, n = triplet_embeddings
    destination = torch.linspace(-0.3, 0.1, 5, dtype=torch.float64)
    h = hardness(a, p, n)
    expected = -sum(max(0.0, float(destination[i] - h[i])) ** 2 for i in range(5)) / 5
    value = hardness_manipulation_objective(destination)(torch.cat([a, p, n]))
    assert value.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("previous", "expected"), [(2.0, -0.2), (0.2, -0.2), (0.1, -0.1), (0.0, 0.0), (-1.0, 0.0)]
)
def test_linear_gradual_adversary_hardens_as_the_loss_falls(previous, expected):
    assert linear_gradual_destination(previous, 0.2) == pytest.approx(expected)


def test_semihard_destination_matches_a_naive_search():
    g = torch.Generator().manual_seed(3)
    emb = F.normalize(torch.randn(12, 6, generator=g, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    anchors, positives = torch.tensor([0, 3, 6, 9]), torch.tensor([1, 4, 7, 10])
    margin = 0.2
    got = semihard_destination(emb, labels, anchors, positives, margin)
    for row, (i, j) in enumerate(zip(anchors.tolist(), positives.tolist(), strict=True)):
        d_ap = _dist(emb[i], emb[j])
        negs = [_dist(emb[i], emb[k]) for k in range(12) if labels[k] != labels[i]]
        band = [d for d in negs if d_ap < d < d_ap + margin]
        d_an = min(band) if band else min(negs)
        assert got[row].item() == pytest.approx(d_ap - d_an, abs=1e-12)


def _tiny_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(16, 1, 28, 28, generator=g)
    labels = torch.arange(4).repeat_interleave(4)
    return Batch(images, labels)


def _hm(**overrides):
    return build_defense("hm", TrainConfig(defense="hm", train_steps=5, train_eps=0.1, **overrides))


def test_hm_is_registered():
    assert isinstance(_hm(), HM)


def test_manipulation_raises_triplet_hardness_toward_the_destination():
    torch.manual_seed(0)
    net = build_network(NetworkConfig(width=4, embedding_dim=16)).eval()
    batch = _tiny_batch()
    defense = _hm()
    images = batch.images[:12]
    objective = hardness_manipulation_objective(0.0)
    manipulated = defense.craft(net, images, objective)
    assert (manipulated - images).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        before, after = objective(net(images)), objective(net(manipulated))
    assert after > before  # shortfall below H_D = 0 shrinks


def test_hm_step_updates_the_gradual_adversary_from_its_triplet_loss():
    torch.manual_seed(0)
    net = build_network(NetworkConfig(width=4, embedding_dim=16)).train()
    loss = MetricLoss("triplet", 4, 16)
    defense = _hm(loss="triplet")
    batch = _tiny_batch()
    value, logs = defense.training_loss([net], [loss], [batch])
    # first step: destination from RobRank's initial previous loss 2.0 → −margin
    assert logs["hm_destination"] == pytest.approx(-0.2)
    assert defense.adversary.previous_loss[0] == pytest.approx(value.item())
    # second step: destination follows the first step's loss, −0.2·clip(ℓ/0.2, 0, 1)
    _, logs2 = defense.training_loss([net], [loss], [batch])
    assert logs2["hm_destination"] == pytest.approx(linear_gradual_destination(value.item(), 0.2))
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_hm_with_ics_adds_the_weighted_structure_term():
    torch.manual_seed(0)
    net = build_network(NetworkConfig(width=4, embedding_dim=16)).eval()  # no BN batch effects
    loss = MetricLoss("triplet", 4, 16)
    batch = _tiny_batch(1)
    torch.manual_seed(5)
    plain, logs_plain = _hm(loss="triplet").training_loss([net], [loss], [batch])
    torch.manual_seed(5)
    with_ics, logs_ics = _hm(loss="triplet", hm_ics_weight=0.5).training_loss(
        [net], [loss], [batch]
    )
    assert with_ics.item() == pytest.approx(plain.item() + 0.5 * logs_ics["loss_ics"], abs=1e-6)
    assert logs_plain["loss_adv"] == pytest.approx(logs_ics["loss_adv"], abs=1e-6)


def test_softhard_triplets_match_a_naive_search():
    """Every drawn negative is closer to its anchor than the anchor's farthest positive, and
    every drawn positive farther than its nearest negative, wherever such exist (RobRank's
    ``spc2-softhard``); otherwise any negative / positive. Over many draws each allowed
    candidate shows up."""
    g = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3])  # class 3 has no positive
    embeddings = F.normalize(torch.randn(9, 4, generator=g), dim=1)
    dist = torch.cdist(embeddings, embeddings)
    allowed_neg, allowed_pos = {}, {}
    for a in range(9):
        pos = [j for j in range(9) if j != a and labels[j] == labels[a]]
        neg = [j for j in range(9) if labels[j] != labels[a]]
        if not pos:
            continue
        far_p, near_n = max(dist[a, j] for j in pos), min(dist[a, j] for j in neg)
        allowed_neg[a] = {j for j in neg if dist[a, j] < far_p} or set(neg)
        allowed_pos[a] = {j for j in pos if dist[a, j] > near_n} or set(pos)
    seen_neg = {a: set() for a in allowed_neg}
    seen_pos = {a: set() for a in allowed_pos}
    torch.manual_seed(0)
    for _ in range(300):
        anchor, positive, negative = softhard_triplets(embeddings, labels)
        assert anchor.tolist() == sorted(allowed_neg)  # the anchor without a positive is out
        for a, p, n in zip(anchor.tolist(), positive.tolist(), negative.tolist(), strict=True):
            assert labels[p] == labels[a] and p != a and labels[n] != labels[a]
            seen_neg[a].add(n)
            seen_pos[a].add(p)
    assert seen_neg == allowed_neg and seen_pos == allowed_pos


def test_pair_batches_take_one_triplet_per_pair():
    """On SPC-2 rows ``[a0, p0, a1, p1, …]`` (``Batch.pairs``) the anchors are the even
    rows: random triplets take the pair's other row as positive (RobRank's
    ``spc2-random``), soft-hard ones any allowed positive of the batch (``spc2-softhard``);
    every negative is of another class. HM then manipulates one triplet per pair."""
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 2, 2, 1, 1])
    g = torch.Generator().manual_seed(1)
    embeddings = F.normalize(torch.randn(10, 4, generator=g), dim=1)
    torch.manual_seed(0)
    for _ in range(50):
        anchor, positive, negative = random_triplets(labels, pairs=True)
        assert anchor.tolist() == [0, 2, 4, 6, 8] and positive.tolist() == [1, 3, 5, 7, 9]
        assert (labels[negative] != labels[anchor]).all()
        anchor, positive, negative = softhard_triplets(embeddings, labels, pairs=True)
        assert anchor.tolist() == [0, 2, 4, 6, 8]
        assert (labels[positive] == labels[anchor]).all() and (positive != anchor).all()
        assert (labels[negative] != labels[anchor]).all()
    assert len(random_triplets(labels)[0]) == 10  # without pairs every row anchors one
    torch.manual_seed(0)
    net = build_network(NetworkConfig(width=4, embedding_dim=16)).eval()
    tiny = _tiny_batch()
    paired = Batch(tiny.images, tiny.labels, pairs=True)
    made = _hm(loss="triplet").adversary.manipulate(0, net, paired)
    rows = made[0]
    assert len(rows) == 3 * (len(tiny.labels) // 2)  # one triplet per pair
    assert (rows[: len(rows) // 3] % 2 == 0).all()


def test_hm_with_softhard_sources_trains_on_harder_triplets_than_random_ones():
    """The soft-hard source (RobRank's published HM) draws triplets from the clean
    embeddings that are harder on average than random ones; the defense trains on them."""
    torch.manual_seed(0)
    net = build_network(NetworkConfig(width=4, embedding_dim=16)).eval()
    batch = _tiny_batch()
    with torch.no_grad():
        clean = net(batch.images)
    soft = [
        hardness(*(clean[i] for i in softhard_triplets(clean, batch.labels))).mean()
        for _ in range(20)
    ]
    rand = [hardness(*(clean[i] for i in random_triplets(batch.labels))).mean() for _ in range(20)]
    assert sum(soft) / 20 > sum(rand) / 20
    loss = MetricLoss("triplet", 4, 16)
    defense = _hm(loss="triplet", hm_source="softhard", hm_ics_weight=0.5)
    assert defense.adversary.source == "softhard"
    value, logs = defense.training_loss([net.train()], [loss], [batch])
    assert torch.isfinite(value) and "loss_ics" in logs
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(ValueError, match="hm_source"):
        _hm(hm_source="hardest")
    eat = build_defense("eat", TrainConfig(defense="eat", member_attack="hm", hm_source="softhard"))
    assert eat.adversary.source == "softhard"  # EAT's members craft with HM's adversary
