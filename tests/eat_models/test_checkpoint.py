"""Checkpoint round trips and the clear errors of load_model."""

from __future__ import annotations

import json

import pytest
import torch

from eat_models import CheckpointError, load_model, save_checkpoint
from eat_models.networks import NetworkConfig, build_network

META = {"dataset": "fashion-mnist", "class_names": [f"c{i}" for i in range(10)]}


def small_nets(k, seed=0):
    config = NetworkConfig(width=8, embedding_dim=16)
    nets = []
    for i in range(k):
        torch.manual_seed(seed + i)
        nets.append(build_network(config).eval())
    return nets, [config] * k


def test_single_model_round_trip(tmp_path):
    nets, configs = small_nets(1)
    save_checkpoint(tmp_path / "m", nets, configs, META, {"epochs": 1})
    model = load_model(tmp_path / "m")
    assert not model.training
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(model(x), nets[0](x))
    meta = model.meta
    assert (meta["input_size"], meta["channels"], meta["embedding_dim"]) == (28, 1, 16)
    assert meta["dataset"] == "fashion-mnist" and meta["class_names"] == META["class_names"]
    assert meta["kind"] == "single" and meta["num_members"] == 1 and len(meta["fingerprint"]) == 16


def test_ensemble_round_trip_gives_averaged_embedding(tmp_path):
    nets, configs = small_nets(3)
    save_checkpoint(tmp_path / "e", nets, configs, META)
    model = load_model(tmp_path / "e")
    x = torch.rand(4, 1, 28, 28)
    expected = torch.nn.functional.normalize(torch.stack([n(x) for n in nets]).mean(0), dim=1)
    torch.testing.assert_close(model(x), expected)
    assert model.meta["kind"] == "ensemble" and len(model.meta["members"]) == 3
    torch.testing.assert_close(model(x).norm(dim=1), torch.ones(4))


def test_fingerprint_changes_with_weights(tmp_path):
    a, configs = small_nets(1, seed=0)
    b, _ = small_nets(1, seed=5)
    save_checkpoint(tmp_path / "a", a, configs, META)
    save_checkpoint(tmp_path / "b", b, configs, META)
    assert (
        load_model(tmp_path / "a").meta["fingerprint"]
        != load_model(tmp_path / "b").meta["fingerprint"]
    )


def test_truncated_weights_are_refused(tmp_path):
    nets, configs = small_nets(1)
    save_checkpoint(tmp_path / "m", nets, configs, META)
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated, corrupt or was replaced"):
        load_model(tmp_path / "m")


def test_foreign_weights_with_matching_hash_are_refused(tmp_path):
    nets, configs = small_nets(1)
    save_checkpoint(tmp_path / "m", nets, configs, META)
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(b"\x80\x04\x95 a pickle, not safetensors")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    import hashlib

    cfg["members"][0]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "not valid JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not valid JSON"),
        (b'{"format": "something-else"}', "not an EAT checkpoint"),
        (b'{"format": "eat-checkpoint", "format_version": 99, "members": [1]}', "version 99"),
    ],
)
def test_corrupt_or_foreign_config(tmp_path, content, message):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "c")


def test_missing_checkpoint_and_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model(tmp_path / "empty")


def test_wrong_input_shape_and_type(tmp_path):
    nets, configs = small_nets(1)
    save_checkpoint(tmp_path / "m", nets, configs, META)
    model = load_model(tmp_path / "m")
    with pytest.raises(ValueError, match=r"expected input of shape \[B, 1, 28, 28\]"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="got \\[28, 28\\]"):
        model(torch.rand(28, 28))
    with pytest.raises(TypeError, match="float tensor"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_norm_round_trips_and_older_checkpoints_load_with_batchnorm(tmp_path):
    """A BatchNorm-free small-cnn saves and loads as such; a checkpoint written before the
    ``norm`` field existed (no key) loads as the BatchNorm network it was."""
    torch.manual_seed(0)
    config = NetworkConfig(width=8, embedding_dim=16, norm="none")
    net = build_network(config).eval()
    save_checkpoint(tmp_path / "plain", [net], [config], META)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(load_model(tmp_path / "plain")(x), net(x))
    nets, configs = small_nets(1)
    save_checkpoint(tmp_path / "old", nets, configs, META)
    path = tmp_path / "old" / "config.json"
    stored = json.loads(path.read_text())
    for member in stored["members"]:
        del member["network"]["norm"]
    path.write_text(json.dumps(stored))
    torch.testing.assert_close(load_model(tmp_path / "old")(x), nets[0](x))
