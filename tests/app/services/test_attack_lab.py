"""The attack lab: each attack on the chosen models, budgets, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.services.attack_lab import true_class_rank


@pytest.mark.parametrize("kind", ["es", "qa", "ca"])
def test_attack_lab_runs_each_attack_on_the_chosen_models(services, kind):
    result = services.lab.run(gallery_id=10, kind=kind, eps=0.1, steps=10)
    assert list(result.outcomes) == ["vanilla", "baseline", "eat"]  # plain model first
    assert result.label_source == "gallery item 10"
    for outcome in result.outcomes.values():
        assert outcome.linf <= 0.1 + 1e-6
        assert outcome.embedding_shift > 0
        assert outcome.true_rank_clean >= 1 and outcome.true_rank_adversarial >= 1
        assert len(outcome.clean_hits) == len(outcome.adversarial_hits) == 5
        assert all(h.item_id != 10 for h in outcome.clean_hits)  # the query itself left out
        assert outcome.adversarial.size == outcome.perturbation.size
    assert result.figure.size[0] > result.figure.size[1]


def test_attack_lab_attacks_only_the_chosen_models(services):
    result = services.lab.run(gallery_id=10, kind="es", eps=0.05, steps=3, models=["eat"])
    assert list(result.outcomes) == ["eat"]
    with pytest.raises(ValueError, match="at least one model"):
        services.lab.run(gallery_id=10, kind="es", eps=0.05, steps=3, models=[])


def test_embedding_shift_attack_moves_embeddings_more_than_noise(services, resources):
    result = services.lab.run(gallery_id=3, kind="es", eps=0.1, steps=20)
    view = resources.views["vanilla"]
    x = resources.model_input(3, "vanilla")[None]
    noise = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    random_shift = float(np.linalg.norm(view.embed(noise)[0] - view.embed(x)[0]))
    assert result.outcomes["vanilla"].embedding_shift > random_shift


def test_zero_budget_changes_nothing(services):
    result = services.lab.run(gallery_id=5, kind="es", eps=0.0, steps=5)
    for outcome in result.outcomes.values():
        assert outcome.embedding_shift == pytest.approx(0.0, abs=1e-5)
        assert outcome.true_rank_clean == outcome.true_rank_adversarial
        assert [h.item_id for h in outcome.clean_hits] == [
            h.item_id for h in outcome.adversarial_hits
        ]
        assert len(set(np.asarray(outcome.perturbation.convert("L")).ravel().tolist())) == 1


def test_attack_lab_on_an_upload_uses_the_clean_top1_class(services):
    photo = next(e for e in services.examples if "photo" in e.name)
    result = services.lab.run(image=photo.image, kind="qa", eps=0.05, steps=5)
    assert "upload" in result.label_source
    assert result.true_class == result.outcomes["eat"].clean_hits[0].class_name


def test_attack_lab_refuses_bad_settings(services):
    with pytest.raises(ValueError, match="unknown attack"):
        services.lab.run(gallery_id=1, kind="fgsm")
    with pytest.raises(ValueError, match="ε must lie between"):
        services.lab.run(gallery_id=1, eps=0.9)
    with pytest.raises(ValueError, match="steps must lie between"):
        services.lab.run(gallery_id=1, steps=0)
    with pytest.raises(ValueError, match="no image to attack"):
        services.lab.run(image=None, gallery_id=None)


def test_true_class_rank_matches_a_naive_loop(rng):
    gallery = rng.normal(size=(50, 8)).astype(np.float32)
    labels = rng.integers(0, 4, size=50)
    query = rng.normal(size=8).astype(np.float32)
    for exclude in (None, 3):
        order = sorted(
            (i for i in range(50) if i != exclude), key=lambda i: -float(gallery[i] @ query)
        )
        for label in range(4):
            expected = next(r for r, i in enumerate(order, start=1) if labels[i] == label)
            assert true_class_rank(query, gallery, labels, label, exclude) == expected
