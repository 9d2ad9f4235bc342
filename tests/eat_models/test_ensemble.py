"""The averaged embedding, attacks through it, and ensemble checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eat_models import load_model, save_checkpoint
from eat_models.attacks import AttackBudget, embedding_shift_attack, embedding_shift_objective, pgd
from eat_models.ensemble import AveragedEmbedding, averaged_embedding
from eat_models.networks import NetworkConfig, build_network

CONFIG = NetworkConfig(width=8, embedding_dim=16)


def _members(k=3, config=CONFIG):
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(build_network(config).eval())
    return nets


def test_averaged_embedding_is_the_normalised_mean():
    members = _members()
    x = torch.rand(5, 1, 28, 28)
    each = [m(x) for m in members]
    naive = sum(each) / 3
    naive = naive / naive.norm(dim=1, keepdim=True)
    assert torch.allclose(AveragedEmbedding(members)(x), naive, atol=1e-6)
    assert torch.allclose(averaged_embedding(each), naive, atol=1e-6)
    assert torch.allclose(AveragedEmbedding(members[:1])(x), each[0], atol=1e-6)


def test_attack_gradient_reaches_every_member():
    members = _members()
    ensemble = AveragedEmbedding(members)
    x = torch.rand(4, 1, 28, 28)
    clean = ensemble(x).detach()
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    objective = embedding_shift_objective(clean)
    objective(ensemble(x_adv)).sum().backward()
    for member in members:
        grads = [p.grad for p in member.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0

    def input_grad():
        xr = x_adv.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(objective(ensemble(xr)).sum(), xr)
        return g

    base = input_grad()
    for member in members:  # the input gradient depends on each member
        with torch.no_grad():
            member.head.weight.mul_(1.5)
        changed = input_grad()
        with torch.no_grad():
            member.head.weight.div_(1.5)
        assert not torch.allclose(changed, base)
    assert torch.allclose(input_grad(), base)


def test_pgd_on_a_loaded_ensemble_runs_every_member(tmp_path):
    members = _members()
    ckpt = save_checkpoint(
        tmp_path / "ens", members, [CONFIG] * 3, {"dataset": "t", "class_names": ["a", "b"]}
    )
    model = load_model(ckpt)
    assert model.meta["kind"] == "ensemble" and model.meta["num_members"] == 3
    assert len(model.meta["members"]) == 3 and len(model.members) == 3
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), AveragedEmbedding(members)(x), atol=1e-6)
    backward_calls = [0, 0, 0]
    for k, member in enumerate(model.members):
        member.head.register_full_backward_hook(
            lambda mod, gin, gout, k=k: backward_calls.__setitem__(k, backward_calls[k] + 1)
        )
    x_adv = embedding_shift_attack(model, x, AttackBudget(0.1, 4))
    assert backward_calls == [4, 4, 4]
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6


def test_scalar_objective_through_the_ensemble_keeps_the_budget():
    model = AveragedEmbedding(_members())
    x = torch.rand(8, 1, 28, 28)
    labels = torch.arange(8) % 2
    x_adv = pgd(model, x, lambda e: F.cross_entropy(e[:, :2] * 10, labels), 0.05, 3)
    assert float((x_adv - x).abs().max()) <= 0.05 + 1e-6
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
