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


def test_small_cnn_without_batchnorm_has_no_batch_effects():
    """``norm="none"`` (RobRank's rc2f2 has no BatchNorm): no BatchNorm module, biased
    convs, so an image's embedding does not depend on its batch or on train/eval mode;
    the default keeps BatchNorm, and both variants share every other state-dict key."""
    torch.manual_seed(0)
    plain = build_network(NetworkConfig(width=8, norm="none"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert all(
        conv.bias is not None for conv in plain.features if isinstance(conv, torch.nn.Conv2d)
    )
    x = torch.rand(6, 1, 28, 28)
    in_batch = plain.train()(x)
    torch.testing.assert_close(plain(x[:2]), in_batch[:2])
    torch.testing.assert_close(plain.eval()(x), in_batch)
    batch = build_network(NetworkConfig(width=8))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in batch.modules()) == 3
    bn_keys = {
        k for k in batch.state_dict() if k.startswith(("features.1.", "features.4.", "features.7."))
    }
    conv_bias = {f"features.{i}.bias" for i in (0, 3, 6)}
    assert set(plain.state_dict()) == (set(batch.state_dict()) - bn_keys) | conv_bias


def test_unknown_or_misplaced_norm_is_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        build_network(NetworkConfig(width=8, norm="layer"))
    with pytest.raises(ValueError, match="small-cnn only"):
        build_network(NetworkConfig(arch="rc2f2", width=8, norm="none"))
