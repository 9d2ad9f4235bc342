"""EAT: member splits, self-transfer, HM's adversary, epoch accounting, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import eat_models.defenses.base as defense_base
from eat_models import load_model
from eat_models.defenses import build_defense
from eat_models.ensemble import AveragedEmbedding
from eat_models.train import TrainConfig, train
from tests.eat_models.defenses.helpers import (
    M,
    P,
    grads_of,
    make_batches,
    make_config,
    make_members,
    record_forwards,
)


@pytest.mark.parametrize(
    "overrides, trained_rows",
    [
        ({}, M * P * 3),  # own + 2 transferred
        ({"clean_weight": 0.5}, M * P * 4),  # + the clean batch
        ({"lambda_transfer": 0.0}, M * P),
        ({"lambda_transfer": 0.0, "clean_weight": 0.5}, M * P * 2),
    ],
)
def test_eat_switches_change_what_each_member_trains_on(pool, overrides, trained_rows):
    members, losses = make_members(3)
    defense = build_defense("eat", make_config("eat", **overrides))
    calls, handles = record_forwards(members)
    _, logs = defense.training_loss(members, losses, make_batches(pool, 3))
    for h in handles:
        h.remove()
    steps = defense.budget.steps
    for member_calls in calls:
        training = [n for is_training, n in member_calls if is_training]
        crafting = [n for is_training, n in member_calls if not is_training]
        assert training == [trained_rows]  # one forward over all parts, in train mode
        assert len(crafting) == steps + 1  # PGD steps plus the final best-iterate check
    assert ("loss_transfer" in logs) == (overrides.get("lambda_transfer") != 0.0)


def test_without_transfer_a_member_ignores_the_other_members_batches(pool):
    """λ_transfer = 0 (and λ_ensemble = 0): member 0's update does not depend on batches 1, 2."""

    def member0_grad(lambda_transfer, offset):
        members, losses = make_members(3)
        batches = make_batches(pool, 3)
        batches[1:] = make_batches(pool, 3, offset)[1:]  # other images for members 1 and 2
        defense = build_defense("eat", make_config("eat", lambda_transfer=lambda_transfer))
        torch.manual_seed(7)
        value, _ = defense.training_loss(members, losses, batches)
        return grads_of(members, value)[0]

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
    config = tiny_config("cd", defense="eat", member_split="class-disjoint")
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


def test_eat_pgd_calls_per_epoch_are_k_per_step(tmp_path, monkeypatch):
    """1,200 images, batch 160: an EAT epoch is 400 // 160 = 2 steps of 3 member crafts;
    PGD-AT makes 1200 // 160 = 7."""
    calls = []
    original = defense_base.perturb

    def counting(model, images, *args, **kwargs):
        calls.append((type(model).__name__, len(images)))
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(defense_base, "perturb", counting)
    common = dict(epochs=1, max_train=1200, width=4, embedding_dim=16, train_steps=1)
    out = train(
        TrainConfig(
            defense="eat",
            out=str(tmp_path / "eat"),
            **common,
        ),
        progress=False,
    )
    record = json.loads((out / "config.json").read_text())["train"]
    assert record["steps_per_epoch"] == 2
    assert len(calls) == 2 * 3
    assert all(n == 160 and name != "AveragedEmbedding" for name, n in calls)  # one batch each
    calls.clear()
    train(TrainConfig(defense="pgd-at", out=str(tmp_path / "pgd"), **common), progress=False)
    assert len(calls) == 7


def test_eat_with_hm_member_attack_transfers_the_manipulated_triplets(pool, monkeypatch):
    """``member_attack hm``: each member crafts HM triplets against itself (3 × its batch,
    no random start), trains on them, and the others receive them by self-transfer."""
    seen = []
    original = defense_base.perturb

    def counting(model, images, *args, **kwargs):
        seen.append((len(images), args[1].random_start))
        return original(model, images, *args, **kwargs)

    import eat_models.defenses.hm as hm_module

    monkeypatch.setattr(defense_base, "perturb", counting)
    monkeypatch.setattr(hm_module, "perturb", counting)
    members, losses = make_members(3)
    batches = make_batches(pool, 3)
    defense = build_defense("eat", make_config("eat", member_attack="hm"))
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
    assert set(defense.adversary.previous_loss) == {0, 1, 2}  # a state per member
    assert all(g.abs().sum() > 0 for g in grads_of(members, loss))
    with pytest.raises(ValueError, match="member_attack"):
        build_defense("eat", make_config("eat", member_attack="fgsm")).training_loss(
            members, losses, batches
        )


def test_eat_hm_with_the_triplet_loss_scores_each_part_on_its_own_triplets(pool):
    """``member_attack hm`` with the triplet loss: member k's loss is HM's, the triplet loss
    of its manipulated triplets [ã; p̃; ñ] (no re-mining) plus λ_ICS · ICS, plus the other
    members' manipulated triplets at λ_transfer/(K−1); its training pass sets the gradual
    adversary's previous loss."""
    from eat_models.defenses.hm import intra_class_structure_loss
    from eat_models.defenses.triplets import split_triplets, triplet_loss

    members, losses = make_members(3, loss="triplet")
    batches = make_batches(pool, 3)
    config = make_config("eat", member_attack="hm", hm_ics_weight=0.5, loss="triplet")
    defense = build_defense("eat", config)
    defense.prepare_step(members, losses, batches)
    for m in members:  # eval mode: each part's embeddings do not depend on the others'
        m.eval()
    own, rows = defense._own, defense._rows[0]
    assert all(len(b.images) == 3 * P * M for b in own) and len(rows) == 3 * P * M
    value, logs = defense.member_loss(0, members[0], losses[0], batches[0])
    net, images = members[0], batches[0].images
    with torch.no_grad():
        triplets = [triplet_loss(*split_triplets(net(b.images))) for b in own]
        m = len(rows) // 3
        ics = intra_class_structure_loss(
            net(images[rows[:m]]),
            split_triplets(net(own[0].images))[0],
            net(images[rows[m : 2 * m]]),
        )
    expected = triplets[0] + 0.5 * triplets[1] + 0.5 * triplets[2] + 0.5 * ics
    assert value.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    assert set(logs) == {"loss_adv", "loss_transfer", "loss_ics"}
    assert logs["loss_ics"] == pytest.approx(ics.item(), rel=1e-4, abs=1e-6)
    assert defense.adversary.previous_loss[0] == pytest.approx(logs["loss_adv"])
    # without ICS and transfer: the own triplets alone
    defense = build_defense(
        "eat", make_config("eat", member_attack="hm", lambda_transfer=0.0, loss="triplet")
    )
    defense.prepare_step(members, losses, batches)
    value, logs = defense.member_loss(1, members[1], losses[1], batches[1])
    with torch.no_grad():
        alone = triplet_loss(*split_triplets(members[1](defense._own[1].images)))
    assert value.item() == pytest.approx(alone.item(), rel=1e-4, abs=1e-6)
    assert set(logs) == {"loss_adv"}
