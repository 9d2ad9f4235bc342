"""Networks map [0, 1] pixels to L2-normalised embeddings."""

from __future__ import annotations

import torch

from eat_models.networks import NetworkConfig, build_network, default_network_config


def test_small_cnn_output_is_normalised():
    net = build_network(NetworkConfig(width=8, embedding_dim=24)).eval()
    out = net(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 24)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))


def test_resnet18_embedding_offline_random_init():
    config = default_network_config("resnet18", channels=3, image_size=64, embedding_dim=32)
    net = build_network(config).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 32)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_resnet18_loads_local_weights(tmp_path):
    from torchvision.models import resnet18

    state = resnet18(weights=None).state_dict()
    state["conv1.weight"].fill_(0.5)
    torch.save(state, tmp_path / "r18.pth")
    config = default_network_config(
        "resnet18", channels=1, image_size=32, imagenet_weights=str(tmp_path / "r18.pth")
    )
    net = build_network(config)
    assert torch.all(net.backbone.conv1.weight == 0.5)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 128)


def test_normalisation_lives_inside_the_network():
    """The network takes raw pixels in [0, 1]: its first step is (x − mean) / std, so an
    attack on the pixels is an attack on what the network sees."""
    config = NetworkConfig(width=8, mean=(0.25,), std=(0.5,))
    net = build_network(config).eval()
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    seen = {}
    net.features.register_forward_pre_hook(lambda _m, args: seen.update(input=args[0]))
    out = net(x)
    torch.testing.assert_close(seen["input"], (x - 0.25) / 0.5)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0  # gradients reach the pixels through the normalisation
