"""Member weight averaging (EMA): the update rule against a hand loop, and the checkpoint
holding the averaged weights that ``load_model`` serves."""

from __future__ import annotations

import json

import pytest
import torch

from eat_models import load_model
from eat_models.networks import NetworkConfig, build_network
from eat_models.train import train
from eat_models.weight_average import WeightAverage, ema_decay_at

NET = NetworkConfig(width=4, embedding_dim=16)


def test_ema_matches_a_hand_computed_average():
    torch.manual_seed(0)
    net = build_network(NET)
    average = WeightAverage([net], decay=0.9)
    expected = [p.detach().clone() for p in net.parameters()]
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.9, (1 + step) / (10 + step))
        assert ema_decay_at(0.9, step) == pytest.approx(d)
        expected = [
            d * e + (1 - d) * p.detach() for e, p in zip(expected, net.parameters(), strict=True)
        ]
        average.update([net])
    for got, want in zip(average.averaged[0].parameters(), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    for got, live in zip(average.averaged[0].buffers(), net.buffers(), strict=True):
        assert torch.equal(got, live)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_ema_refuses_a_decay_outside_0_1(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage([build_network(NET)], decay)


def test_ema_run_saves_averaged_weights_and_load_model_serves_them(tiny_config, monkeypatch):
    import eat_models.train as train_module

    captured = {}
    original = train_module.WeightAverage

    class Capturing(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured["average"] = self

    monkeypatch.setattr(train_module, "WeightAverage", Capturing)
    config = tiny_config("ema", defense="eat", max_train=900, ema_decay=0.5)
    out = train(config, progress=False)
    model, raw = load_model(out), load_model(out / "raw")
    record = json.loads((out / "config.json").read_text())["train"]
    assert record["weights"] == "ema 0.5"
    averaged = captured["average"].averaged
    assert captured["average"].updates == record["steps"]
    for served, ema in zip(model.members, averaged, strict=True):
        for a, b in zip(served.state_dict().values(), ema.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(model(x), raw(x))
