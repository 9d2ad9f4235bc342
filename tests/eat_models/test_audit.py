"""``eat audit`` on each model format: our checkpoint, TorchScript of a torchvision network,
a ``module:function`` factory; the card's JSON, Markdown and plots."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from eat_models.cli import main
from tests.oracles import ROBRANK_ERS_TERMS


def tiny_factory() -> nn.Module:
    """A factory ``eat audit`` imports and calls (tests.eat_models.test_audit:tiny_factory)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16))


def _audit(tmp_path, model: str, *flags: str) -> dict:
    out = tmp_path / "card"
    argv = ["audit", model, "--max-images", "50", "--out", str(out), "--quiet", "--threads", "1"]
    assert main(argv + list(flags)) == 0
    card = json.loads((out / "audit.json").read_text())
    assert (out / "audit.md").read_text().startswith("# Robustness card")
    for plot in ("eps_sweep.png", "ers_terms.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert card["images"] == 50 and {"commit", "load_average"} <= set(card["provenance"])
    return card


def test_audit_of_a_checkpoint_standard_and_strong(tmp_path, trained_vanilla, capsys):
    card = _audit(tmp_path, str(trained_vanilla), "--surrogate", str(trained_vanilla))
    assert card["format"] == "checkpoint" and set(card["strengths"]) == {"standard", "strong"}
    standard, strong = card["strengths"]["standard"], card["strengths"]["strong"]
    assert strong["ers"] <= standard["ers"] + 1e-9
    assert set(standard["terms"]) == set(ROBRANK_ERS_TERMS)
    assert set(standard["headline"]) == {"es", "qa", "ca/p1", "ca/p0.1", "ca/p0.3"}
    assert [p["eps"] for p in card["sweep"]["points"]] == [0.03, 0.05, 0.1, 0.2, 0.3]
    checks = {m["check"] for m in card["masking"]}
    assert any("transfer" in c for c in checks) and any("non-zero" in c for c in checks)
    printed = capsys.readouterr().out
    assert "robustness card of" in printed and "ERS" in printed and "strong" in printed


def test_audit_of_a_torchscript_torchvision_network(tmp_path):
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    path = tmp_path / "mobilenet.pt"
    torch.jit.save(torch.jit.script(mobilenet_v3_small(num_classes=32).eval()), str(path))
    card = _audit(
        tmp_path,
        str(path),
        "--input-size",
        "32",
        "--channels",
        "3",
        "--strength",
        "standard",
        "--mean",
        "0.485",
        "0.456",
        "0.406",
        "--std",
        "0.229",
        "0.224",
        "0.225",
    )
    assert card["format"] == "torchscript" and list(card["strengths"]) == ["standard"]


def test_audit_of_a_factory(tmp_path):
    card = _audit(
        tmp_path,
        "tests.eat_models.test_audit:tiny_factory",
        "--input-size",
        "28",
        "--channels",
        "1",
        "--strength",
        "standard",
    )
    assert card["format"] == "factory"


def test_audit_refuses_a_foreign_model_without_its_shape_and_unknown_files(tmp_path, capsys):
    assert main(["audit", "tests.eat_models.test_audit:tiny_factory"]) == 2
    assert "--input-size and --channels" in capsys.readouterr().err
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"not a model")
    assert main(["audit", str(junk)]) == 2
    assert "not a model this command reads" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--data",
        "--max-images",
        "--strength",
        "--input-size",
        "--channels",
        "--mean",
        "--std",
        "--surrogate",
        "--out",
        "RUNS that code",
    ):
        assert flag in text
