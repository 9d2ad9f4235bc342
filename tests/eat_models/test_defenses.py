"""Defenses: registry, one step of each, and what each EAT switch changes (checked directly)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import eat_models.defenses.base as defense_base
from eat_models import load_model
from eat_models.defenses import DEFENSES, Batch, build_defense
from eat_models.defenses.act import collapse_objective, random_triplets
from eat_models.defenses.eat import ensemble_batch
from eat_models.ensemble import AveragedEmbedding
from eat_models.losses import MetricLoss
from eat_models.networks import NetworkConfig, build_network
from eat_models.train import TrainConfig, train

NET = NetworkConfig(width=4, embedding_dim=16)
P, M = 4, 4  # classes × images per class in each test batch


def _config(defense, **overrides):
    return TrainConfig(defense=defense, train_steps=2, **overrides)


def _setup(k, loss="proxy-anchor", seed=0):
    members, losses = [], []
    for j in range(k):
        torch.manual_seed(seed + j)
        members.append(build_network(NET).train())
        losses.append(MetricLoss(loss, 10, NET.embedding_dim))
    return members, losses


@pytest.fixture(scope="module")
def pool(fmnist_small):
    """Row indices per class of the small training slice."""
    train_set = fmnist_small[0]
    return train_set, {c: np.flatnonzero(train_set.labels == c) for c in range(10)}


def _batches(pool, k, offset=0):
    """k class-balanced batches (P classes × M images); ``offset`` picks other images."""
    train_set, by_class = pool
    batches = []
    for j in range(k):
        rows = np.concatenate(
            [by_class[(j + c) % 10][offset + M * j : offset + M * (j + 1)] for c in range(P)]
        )
        batches.append(
            Batch(train_set.batch(rows), torch.as_tensor(train_set.labels[rows], dtype=torch.long))
        )
    return batches


def _grads(members, loss):
    for m in members:
        m.zero_grad(set_to_none=True)
    loss.backward()
    return [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in members]


def test_every_defense_is_registered_and_a_cli_choice():
    expected = {"vanilla", "pgd-at", "trades", "est", "act", "hm", "at-ensemble", "eat"}
    assert set(DEFENSES) == expected
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}["defense"]
    assert set(field.metadata["choices"]) == set(DEFENSES)
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
    with pytest.raises(ValueError, match="unknown defense"):
        build_defense("nope", TrainConfig())


def test_member_counts_default_per_defense():
    expected = {"at-ensemble": 3, "eat": 3}
    for name in DEFENSES:
        assert build_defense(name, TrainConfig(defense=name)).num_members == expected.get(name, 1)
        assert build_defense(name, TrainConfig(defense=name, members=2)).num_members == 2
    assert TrainConfig().defense == "vanilla" and TrainConfig().members is None


@pytest.mark.parametrize("name", sorted(DEFENSES))
@pytest.mark.parametrize("loss", ["proxy-anchor", "triplet"])
def test_one_step_of_each_defense_trains_every_member(pool, name, loss):
    k = 2
    members, losses = _setup(k, loss)
    defense = build_defense(name, _config(name, members=k))
    batches = _batches(pool, k)
    value, logs = defense.training_loss(members, losses, batches)
    assert value.dim() == 0 and torch.isfinite(value)
    assert logs and all(np.isfinite(v) for v in logs.values())
    for grad in _grads(members, value):
        assert float(grad.abs().sum()) > 0
    assert all(m.training for m in members)  # crafting restored train mode


def _record_forwards(members):
    """Per member, ``(training?, batch size)`` of every forward call."""
    calls = [[] for _ in members]
    handles = [
        m.register_forward_pre_hook(
            lambda mod, inp, j=j: calls[j].append((mod.training, len(inp[0])))
        )
        for j, m in enumerate(members)
    ]
    return calls, handles


@pytest.mark.parametrize(
    "overrides, trained_rows",
    [
        ({}, M * P * 3),  # own + 2 transferred (the term through F is off by default)
        ({"lambda_ensemble": 1.0}, M * P * 4),  # + the ensemble batch
        ({"lambda_ensemble": 1.0, "clean_weight": 0.5}, M * P * 5),
        ({"lambda_ensemble": 1.0, "lambda_transfer": 0.0}, M * P * 2),
        ({"lambda_transfer": 0.0}, M * P),
    ],
)
def test_eat_switches_change_what_each_member_trains_on(pool, overrides, trained_rows):
    members, losses = _setup(3)
    defense = build_defense("eat", _config("eat", **overrides))
    calls, handles = _record_forwards(members)
    _, logs = defense.training_loss(members, losses, _batches(pool, 3))
    for h in handles:
        h.remove()
    steps = defense.steps
    for member_calls in calls:
        training = [n for is_training, n in member_calls if is_training]
        crafting = [n for is_training, n in member_calls if not is_training]
        assert training == [trained_rows]  # one forward over all parts, in train mode
        own = steps + 1  # PGD steps plus the final best-iterate check
        f_term = overrides.get("lambda_ensemble", 0.0) > 0
        through_f = 1 + steps + 1 if f_term else 0
        assert len(crafting) == own + through_f  # crafting only in eval mode
    assert ("loss_transfer" in logs) == (overrides.get("lambda_transfer") != 0.0)
    assert ("loss_ensemble" in logs) == f_term


def test_eat_runs_pgd_through_the_ensemble_only_when_lambda_ensemble_is_on(pool, monkeypatch):
    seen = []
    original = defense_base.pgd

    def counting(model, *args, **kwargs):
        seen.append(type(model).__name__)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(defense_base, "pgd", counting)
    for lam, expected in ((0.0, 0), (0.5, 1)):
        seen.clear()
        members, losses = _setup(3)
        defense = build_defense("eat", _config("eat", lambda_ensemble=lam))
        defense.training_loss(members, losses, _batches(pool, 3))
        assert seen.count("AveragedEmbedding") == expected
        assert len(seen) == 3 + expected  # one PGD per member, plus the one through F


def test_without_transfer_a_member_ignores_the_other_members_batches(pool):
    """λ_transfer = 0 (and λ_ensemble = 0): member 0's update does not depend on batches 1, 2."""

    def member0_grad(lambda_transfer, offset):
        members, losses = _setup(3)
        batches = _batches(pool, 3)
        batches[1:] = _batches(pool, 3, offset)[1:]  # other images for members 1 and 2
        defense = build_defense(
            "eat", _config("eat", lambda_transfer=lambda_transfer, lambda_ensemble=0.0)
        )
        torch.manual_seed(7)
        value, _ = defense.training_loss(members, losses, batches)
        return _grads(members, value)[0]

    assert torch.allclose(member0_grad(0.0, 0), member0_grad(0.0, 20), rtol=0, atol=0)
    assert not torch.allclose(member0_grad(1.0, 0), member0_grad(1.0, 20))


def test_eat_member_splits(pool):
    labels = pool[0].labels
    rows = {
        split: build_defense("eat", TrainConfig(defense="eat", member_split=split)).member_rows(
            labels
        )
        for split in ("stratified", "class-disjoint", "none")
    }
    for parts in rows.values():
        assert len(parts) == 3
    for part in rows["none"]:
        assert np.array_equal(part, np.arange(len(labels)))
    strat = rows["stratified"]
    assert np.array_equal(np.sort(np.concatenate(strat)), np.arange(len(labels)))
    for part in strat:
        assert set(labels[part]) == set(range(10))
        assert abs(len(part) - len(labels) / 3) <= 10
    disjoint = [set(labels[part]) for part in rows["class-disjoint"]]
    assert set.union(*disjoint) == set(range(10))
    assert sum(len(s) for s in disjoint) == 10
    with pytest.raises(ValueError, match="member_split"):
        build_defense("eat", TrainConfig(defense="eat", member_split="x")).member_rows(labels)


def test_ensemble_batch_takes_a_share_of_every_member_batch(pool):
    batches = _batches(pool, 3)
    joint = ensemble_batch(batches)
    assert len(joint.images) == len(batches[0].images)
    assert torch.equal(joint.images[: len(batches[0].images[0::3])], batches[0].images[0::3])
    assert torch.equal(joint.labels[-len(batches[2].labels[2::3]) :], batches[2].labels[2::3])


def test_eat_cluster_objective_runs(pool):
    members, losses = _setup(3)
    config = _config("eat", ensemble_objective="cluster", lambda_ensemble=1.0)
    defense = build_defense("eat", config)
    value, logs = defense.training_loss(members, losses, _batches(pool, 3))
    assert torch.isfinite(value) and "loss_ensemble" in logs


def test_act_collapses_positive_and_negative():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    anchor, positive, negative = random_triplets(labels)
    assert len(anchor) == 7
    assert torch.all(labels[anchor] == labels[positive]) and torch.all(anchor != positive)
    assert torch.all(labels[anchor] != labels[negative])
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    value = collapse_objective(1)(emb)
    assert value.shape == (2,) and torch.allclose(value, -torch.full((2,), 2**0.5))


def test_pgd_at_crafts_within_the_training_budget(pool, monkeypatch):
    crafted = []
    original = defense_base.pgd

    def spy(model, x, *args, **kwargs):
        out = original(model, x, *args, **kwargs)
        crafted.append((x, out, args))
        return out

    monkeypatch.setattr(defense_base, "pgd", spy)
    members, losses = _setup(1)
    defense = build_defense("pgd-at", _config("pgd-at", train_eps=0.05))
    defense.training_loss(members, losses, _batches(pool, 1))
    (x, out, args) = crafted[0]
    assert args[1:] == (0.05, 2, None)  # eps, steps, default step size
    assert 0 < float((out - x).abs().max()) <= 0.05 + 1e-6


def test_eat_checkpoint_round_trips_through_load_model(tiny_config, monkeypatch):
    import eat_models.train as train_module

    captured = {}
    original = train_module.save_checkpoint

    def capture(out_dir, networks, *args, **kwargs):
        captured["members"] = networks
        return original(out_dir, networks, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", capture)
    config = tiny_config("eat", defense="eat", width=8, embedding_dim=32, train_steps=2)
    out = train(config, progress=False)
    model = load_model(out)
    assert model.meta["kind"] == "ensemble" and model.meta["num_members"] == 3
    assert model.meta["defense"] == "eat" and len(model.meta["members"]) == 3
    record = json.loads((out / "config.json").read_text())["train"]
    assert record["members"] == 3 and record["lambda_transfer"] == 1.0
    x = torch.rand(8, 1, 28, 28)
    in_memory = AveragedEmbedding(captured["members"]).eval()
    with torch.no_grad():
        assert torch.allclose(model(x), in_memory(x), atol=1e-6)


def test_class_disjoint_members_train_with_full_batches(tiny_config):
    config = tiny_config("cd", defense="eat", member_split="class-disjoint", lambda_ensemble=0.0)
    out = train(config, progress=False)
    assert load_model(out).meta["num_members"] == 3


def test_an_eat_epoch_passes_each_member_over_its_own_part_exactly_once():
    from eat_models.data import stratified_split
    from eat_models.train import member_samplers

    labels = np.repeat(np.arange(10), 48)  # 48 per class → 3 parts of 16 per class
    parts = stratified_split(labels, 3, seed=0)
    samplers = member_samplers(labels, parts, classes_per_batch=10, samples_per_class=4, seed=0)
    assert [len(s) for s in samplers] == [4, 4, 4]  # 160 rows per part / batch 40
    for rows, sampler in zip(parts, samplers, strict=True):
        visited = np.concatenate([rows[np.asarray(b)] for b in sampler])
        assert np.array_equal(np.sort(visited), rows)
    # a single model (or members on all rows) makes one pass over everything: 480 / 40
    single = member_samplers(labels, [np.arange(480)], 10, 4, seed=0)
    assert len(single[0]) == 12


def test_eat_pgd_calls_per_epoch_are_k_per_step_plus_one_per_f_term(tmp_path, monkeypatch):
    """1,200 images, batch 160: an EAT epoch is 400 // 160 = 2 steps of 3 member crafts,
    plus the term through F on every 2nd step (1 craft); PGD-AT makes 1200 // 160 = 7."""
    calls = []
    original = defense_base.pgd

    def counting(model, images, *args, **kwargs):
        calls.append((type(model).__name__, len(images)))
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(defense_base, "pgd", counting)
    common = dict(epochs=1, max_train=1200, width=4, embedding_dim=16, train_steps=1)
    out = train(
        TrainConfig(
            defense="eat",
            lambda_ensemble=1.0,
            ensemble_every=2,
            out=str(tmp_path / "eat"),
            **common,
        ),
        progress=False,
    )
    record = json.loads((out / "config.json").read_text())["train"]
    assert record["steps_per_epoch"] == 2
    assert [name for name, _ in calls].count("AveragedEmbedding") == 1
    assert len(calls) == 2 * 3 + 1
    assert all(n == 160 for _, n in calls[:3])  # each member craft: one batch
    calls.clear()
    train(TrainConfig(defense="pgd-at", out=str(tmp_path / "pgd"), **common), progress=False)
    assert len(calls) == 7


def test_eat_without_member_crafts_trains_jointly_on_examples_crafted_against_f(pool, monkeypatch):
    seen = []
    original = defense_base.pgd

    def counting(model, images, *args, **kwargs):
        seen.append((type(model).__name__, len(images)))
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(defense_base, "pgd", counting)
    members, losses = _setup(3)
    batches = _batches(pool, 3)
    config = _config("eat", member_crafts=False, ensemble_batch="all", lambda_ensemble=1.0)
    loss, logs = build_defense("eat", config).training_loss(members, losses, batches)
    assert seen == [("AveragedEmbedding", 3 * P * M)]  # one PGD, through F, on all K batches
    assert set(logs) == {"loss_ensemble"}
    grads = _grads(members, loss)
    assert all(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="lambda_ensemble"):
        build_defense(
            "eat", _config("eat", member_crafts=False, lambda_ensemble=0.0)
        ).training_loss(members, losses, batches)


def test_eat_with_hm_member_attack_transfers_the_manipulated_triplets(pool, monkeypatch):
    """``member_attack hm``: each member crafts HM triplets against itself (3 × its batch,
    no random start), trains on them, and the others receive them by self-transfer."""
    seen = []
    original = defense_base.pgd

    def counting(model, images, *args, **kwargs):
        seen.append((len(images), kwargs.get("random_start")))
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(defense_base, "pgd", counting)
    members, losses = _setup(3)
    batches = _batches(pool, 3)
    defense = build_defense("eat", _config("eat", member_attack="hm"))
    parts_seen = []
    original_parts_loss = defense_base.parts_loss

    def recording(net, loss, parts):
        parts_seen.append([(len(p.images), p.weight) for p in parts])
        return original_parts_loss(net, loss, parts)

    import eat_models.defenses.eat as eat_module

    monkeypatch.setattr(eat_module, "parts_loss", recording)
    loss, logs = defense.training_loss(members, losses, batches)
    assert seen == [(3 * P * M, False)] * 3  # one HM craft per member, on its triplets
    # each member: its own manipulated triplets (weight 1) and the other two (weight 1/2)
    assert parts_seen == [[(3 * P * M, 1.0), (3 * P * M, 0.5), (3 * P * M, 0.5)]] * 3
    assert set(logs) == {"loss_adv", "loss_transfer"}
    assert set(defense._hm.previous_loss) == {0, 1, 2}  # the gradual adversary moves per member
    assert all(g.abs().sum() > 0 for g in _grads(members, loss))
    with pytest.raises(ValueError, match="member_attack"):
        build_defense("eat", _config("eat", member_attack="fgsm")).training_loss(
            members, losses, batches
        )


def test_a_defense_that_forgets_its_name_is_an_error():
    from eat_models.defenses import DEFENSES, Defense, Vanilla
    from eat_models.defenses.base import AdversarialDefense

    with pytest.raises(TypeError, match="Forgetful must set its own `name`"):

        class Forgetful(AdversarialDefense):
            def craft_for_member(self, net, loss, batch):
                return batch.images

    with pytest.raises(TypeError, match="must set its own `name`"):

        class Inherits(Vanilla):  # a name inherited from Vanilla would replace it
            pass

    class Named(Defense):
        name = "named"

    assert DEFENSES["vanilla"] is Vanilla and "named" not in DEFENSES


def test_the_base_sums_member_losses_and_averages_logs_over_reporting_members(pool):
    from eat_models.defenses import Defense

    class Half(Defense):
        """Members 0 and 2 train; member 1 has nothing to train on this step."""

        name = "half"
        default_members = 3
        prepared = 0

        def prepare_step(self, members, losses, batches):
            self.prepared += 1

        def member_loss(self, k, net, loss, batch):
            if k == 1:
                return None, {"skipped": 1.0}
            value = net(batch.images).sum() * 0 + float(k + 1)
            return value, {"value": float(k + 1)}

    members, losses = _setup(3)
    defense = Half(_config("vanilla", members=3))
    total, logs = defense.training_loss(members, losses, _batches(pool, 3))
    assert defense.prepared == 1
    assert total.item() == pytest.approx(1.0 + 3.0)
    assert logs == {"skipped": 1.0, "value": 2.0}
