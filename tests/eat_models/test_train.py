"""A 1-epoch training smoke run, the CLI, and its help texts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eat_command import main
from eat_models import load_model
from eat_models.train import TrainConfig, resolve_device, train


def _spy_steps(monkeypatch) -> list[tuple[float, np.ndarray]]:
    """Per training step, ``(the defense's loss, the first member batch's class counts)``;
    each step also advances the fake clock ``eat_models.train`` reads by 1.5 s."""
    import eat_models.train as training

    now, steps = [0.0], []
    build_defense = training.build_defense

    def spied_defense(name, config):
        defense = build_defense(name, config)
        step = defense.training_loss

        def training_loss(members, losses, batches):
            value, logs = step(members, losses, batches)
            steps.append((value.item(), np.bincount(batches[0].labels.numpy(), minlength=10)))
            now[0] += 1.5
            return value, logs

        defense.training_loss = training_loss
        return defense

    monkeypatch.setattr(training, "build_defense", spied_defense)
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    return steps


@pytest.mark.parametrize("loss", ["proxy-anchor", "triplet"])
def test_a_two_epoch_smoke_run_records_what_it_did(tmp_path, monkeypatch, loss):
    """The training record against what the run was seen doing: one class-balanced batch
    (10 classes × 16) per step, 960 // 160 steps an epoch, and the times of a fake clock
    that each step advances by 1.5 s."""
    steps = _spy_steps(monkeypatch)
    out = train(
        TrainConfig(
            loss=loss, epochs=2, max_train=960, width=8, embedding_dim=32, out=str(tmp_path / loss)
        ),
        progress=False,
    )
    record = json.loads((out / "config.json").read_text())["train"]
    assert record["loss"] == loss and record["train_images"] == 960
    assert len(steps) == record["steps"] == 2 * record["steps_per_epoch"] == 2 * (960 // 160)
    assert all(counts.tolist() == [16] * 10 for _, counts in steps)
    assert [e["epoch"] for e in record["history"]] == [1, 2]
    assert [e["wall_s"] for e in record["history"]] == [9.0, 18.0]
    assert record["train_wall_s"] == 18.0 and record["step_seconds_median"] == 1.5
    emb = load_model(out)(torch.rand(3, 1, 28, 28))
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize(
    "defense",
    [
        "vanilla",
        "trades",
    ],
)
def test_each_epochs_logged_loss_is_the_mean_of_its_steps(tiny_config, monkeypatch, defense):
    steps = _spy_steps(monkeypatch)
    out = train(tiny_config(defense, defense=defense, epochs=2), progress=False)
    record = json.loads((out / "config.json").read_text())["train"]
    per_epoch = record["steps_per_epoch"]
    assert len(steps) == 2 * per_epoch == 2 * (600 // 160)
    values = [value for value, _ in steps]
    logged = [e["loss"] for e in record["history"]]
    expected = [np.mean(values[:per_epoch]), np.mean(values[per_epoch:])]
    assert logged == pytest.approx(expected, rel=1e-6)


def test_training_is_reproducible(tmp_path):
    outs = [
        train(
            TrainConfig(
                epochs=1, max_train=400, width=8, embedding_dim=16, out=str(tmp_path / f"r{i}")
            ),
            progress=False,
        )
        for i in range(2)
    ]
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(load_model(outs[0])(x), load_model(outs[1])(x))


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_trained_model_beats_chance(vanilla_model, fmnist_small):
    from eat_models.evaluate import evaluate_model

    metrics = evaluate_model(vanilla_model, fmnist_small[1])
    assert metrics["recall@1"] > 0.6 and metrics["nmi"] > 0.45


def test_cli_train_then_eval(tmp_path, capsys):
    ckpt = tmp_path / "cli"
    assert (
        main(
            [
                "train",
                "--epochs",
                "1",
                "--max-train",
                "500",
                "--width",
                "8",
                "--out",
                str(ckpt),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["eval", str(ckpt), "--max-test", "500", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| recall@1 |" in printed
    record = json.loads((ckpt / "eval.json").read_text())
    assert record["test_images"] == 500
    assert {"command", "commit", "date"} <= set(record["provenance"])
    trained = json.loads((ckpt / "config.json").read_text())["train"]
    assert {"command", "commit", "date"} <= set(trained["provenance"])
    assert set(record["metrics"]) >= {"recall@1", "recall@8", "map@r", "nmi", "f1", "ari"}
    assert np.isfinite(list(record["metrics"].values())).all()


def test_cli_reports_missing_data_clearly(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(tmp_path / "none"),
                "--dataset",
                "folder",
                "--out",
                str(tmp_path / "x"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_flag_of_every_command_has_help():
    from eat_command import registrars as _registrars
    from eat_models.cli import build_parser

    stack = list(_subparsers(build_parser(_registrars())))
    seen = set()
    while stack:
        name, sub = stack.pop()
        seen.add(name)
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and len(action.help) > 10, f"eat {name} {action.option_strings}"
        stack.extend(_subparsers(sub))
    assert {"train", "eval", "speed"} <= seen


def test_help_runs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--defense" in capsys.readouterr().out


def _weights(out):
    from safetensors.torch import load_file

    config = json.loads((out / "config.json").read_text())
    return [load_file(str(out / m["weights"])) for m in config["members"]], config["train"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"defense": "hm", "loss": "triplet", "hm_ics_weight": 0.5, "train_steps": 2},
        {"defense": "eat", "members": 2, "train_steps": 2, "ema_decay": 0.9},
        {
            "defense": "hm",
            "loss": "triplet",
            "train_steps": 2,
            "sampler": "spc2",
            "pairs_per_batch": 16,
        },
        {
            "defense": "est",
            "loss": "triplet",
            "triplet_miner": "random",
            "train_steps": 2,
            "sampler": "spc2",
            "pairs_per_batch": 16,
        },
    ],
    ids=["hm", "eat-ema", "hm-spc2", "est-spc2-random"],
)
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, overrides):
    """Stopped after each epoch and resumed (weights, Adam moments, schedule, RNG, the
    defense's state, EMA): the final weights are bit-identical to a run never stopped."""
    common = dict(epochs=3, max_train=300, width=8, embedding_dim=16, val_images=200, **overrides)
    whole = train(TrainConfig(out=str(tmp_path / "whole"), **common), progress=False)
    pieces = tmp_path / "pieces"
    for _ in range(2):
        stopped = train(
            TrainConfig(out=str(pieces), resume=True, stop_after=1, **common), progress=False
        )
        assert stopped == pieces / "resume" and not (pieces / "config.json").exists()
    resumed = train(TrainConfig(out=str(pieces), resume=True, **common), progress=False)
    (a, record_a), (b, record_b) = _weights(whole), _weights(resumed)
    for wa, wb in zip(a, b, strict=True):
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), key
    assert not (pieces / "resume").exists()  # spent once the run completes
    strip = lambda h: [{k: v for k, v in e.items() if k != "wall_s"} for e in h]  # noqa: E731
    assert strip(record_a["history"]) == strip(record_b["history"])
    assert [e["epoch"] for e in record_b["history"]] == [1, 2, 3]
    assert all("val_recall@1" in e and "val_nmi" in e for e in record_b["history"])
    assert record_a["steps"] == record_b["steps"]


def test_resume_refuses_another_config(tmp_path):
    from eat_models.resume import ResumeError

    common = dict(epochs=2, max_train=200, width=8, embedding_dim=16, out=str(tmp_path / "r"))
    train(TrainConfig(stop_after=1, **common), progress=False)
    with pytest.raises(ResumeError, match="lr"):
        train(TrainConfig(resume=True, lr=5e-3, **common), progress=False)


def test_a_constant_rate_run_ends_at_an_epoch_it_reached(tmp_path):
    """Under the constant schedule the first E epochs of a longer run are an E-epoch run: a
    resume point of epoch 2 of a 3-epoch run, resumed with ``epochs 2``, saves the same
    weights as a 2-epoch run (how a row is read at another row's compute). The one-cycle
    schedule depends on the length and refuses; so does an epoch already passed."""
    from eat_models.resume import ResumeError

    common = dict(max_train=200, width=8, embedding_dim=16, schedule="constant", val_images=0)
    whole = train(TrainConfig(epochs=2, out=str(tmp_path / "whole"), **common), progress=False)
    longer = tmp_path / "longer"
    train(TrainConfig(epochs=3, stop_after=2, out=str(longer), **common), progress=False)
    with pytest.raises(ResumeError, match="past the 1 epochs"):
        train(TrainConfig(epochs=1, resume=True, out=str(longer), **common), progress=False)
    ended = train(TrainConfig(epochs=2, resume=True, out=str(longer), **common), progress=False)
    (a, record_a), (b, record_b) = _weights(whole), _weights(ended)
    for wa, wb in zip(a, b, strict=True):
        for key in wa:
            assert torch.equal(wa[key], wb[key]), key
    assert record_b["epochs"] == 2 and record_a["steps"] == record_b["steps"]
    one_cycle = dict(common, schedule="onecycle", out=str(tmp_path / "onecycle"))
    train(TrainConfig(epochs=3, stop_after=1, **one_cycle), progress=False)
    with pytest.raises(ResumeError, match="epochs"):
        train(TrainConfig(epochs=2, resume=True, **one_cycle), progress=False)


def test_a_resume_point_from_before_the_f_term_was_removed_still_resumes(tmp_path):
    """Runs started before EAT's term through F was removed recorded its options at their
    "off" values; they resume. One that had it on is another config."""
    from eat_models.resume import ResumeError, load_resume_point, save_resume_point

    config = TrainConfig(epochs=2, max_train=200, width=8, embedding_dim=16, stop_after=1)
    config.out = str(tmp_path / "r")
    train(config, progress=False)
    config.stop_after = None
    state = load_resume_point(config.out, config.to_dict())
    off = dict(lambda_ensemble=0.0, member_crafts=True, ensemble_every=1)
    save_resume_point(config.out, {**state, "config": {**state["config"], **off}})
    assert load_resume_point(config.out, config.to_dict())["epoch"] == 1
    on = {**state["config"], **off, "lambda_ensemble": 1.0}
    save_resume_point(config.out, {**state, "config": on})
    with pytest.raises(ResumeError, match="lambda_ensemble"):
        load_resume_point(config.out, config.to_dict())


@pytest.mark.parametrize(
    ("option", "other"),
    [
        ("hm_source", "softhard"),
        ("norm", "none"),
        ("sampler", "spc2"),
        ("pairs_per_batch", 64),
        ("est_start", "clean"),
        ("triplet_miner", "random"),
    ],
)
def test_a_resume_point_from_before_an_option_was_added_still_resumes(tmp_path, option, other):
    """A run recorded before an option existed (``hm_source``: random sources; ``norm``:
    BatchNorm) trained with the value that keeps the old behaviour: it resumes when asked
    for that value, and is another config when asked for another."""
    from eat_models.resume import ADDED_OPTIONS, ResumeError, load_resume_point, save_resume_point

    config = TrainConfig(epochs=2, max_train=200, width=8, embedding_dim=16, stop_after=1)
    config.out = str(tmp_path / "r")
    train(config, progress=False)
    config.stop_after = None
    state = load_resume_point(config.out, config.to_dict())
    older = {k: v for k, v in state["config"].items() if k != option}
    save_resume_point(config.out, {**state, "config": older})
    assert getattr(config, option) == ADDED_OPTIONS[option]
    assert load_resume_point(config.out, config.to_dict())["epoch"] == 1
    setattr(config, option, other)
    with pytest.raises(ResumeError, match=option):
        load_resume_point(config.out, config.to_dict())


@pytest.mark.parametrize("total_steps", [5, 10, 11, 100])
def test_the_one_cycle_schedule_runs_for_any_number_of_steps(total_steps):
    """10 steps once made torch's OneCycleLR divide by zero (a warm-up of exactly one
    step); the rate still rises to its peak and falls again."""
    from eat_models.train import build_schedule

    net = torch.nn.Linear(2, 2)
    groups = [{"params": net.parameters(), "lr": 1e-3}]
    optimiser = torch.optim.Adam(groups)
    schedule = build_schedule(TrainConfig(schedule="onecycle"), optimiser, groups, total_steps)
    rates = []
    for _ in range(total_steps):
        optimiser.step()
        schedule.step()
        rates.append(optimiser.param_groups[0]["lr"])
    assert all(0 < r <= 1e-3 * (1 + 1e-9) for r in rates) and rates[-1] < rates[0] * 1.01
    if total_steps >= 10:  # long enough for a warm-up: the rate reaches its peak
        assert max(rates) == pytest.approx(1e-3, rel=0.1)


def test_train_config_is_made_of_the_registered_option_groups_and_checks_values():
    import dataclasses

    from eat_models.defenses import OPTION_GROUPS
    from eat_models.defenses.base import Options
    from eat_models.train import RunOptions

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for group in (*OPTION_GROUPS, RunOptions):
        assert issubclass(group, Options)
        assert {f.name for f in dataclasses.fields(group)} <= names
    assert len(names) == len(
        {f.name for g in (*OPTION_GROUPS, RunOptions) for f in dataclasses.fields(g)}
    )
    for bad, message in [
        ({"member_attack": "fgsm"}, "member_attack 'fgsm': choose one of pgd, hm"),
        ({"train_eps": -0.1}, "train_eps -0.1: must be at least 0.0"),
        ({"hm_ics_weight": -1.0}, "hm_ics_weight -1.0: must be at least 0.0"),
        ({"trades_beta": -1.0}, "trades_beta"),
        ({"epochs": 0}, "epochs 0: must be at least 1"),
        ({"samples_per_class": 1}, "samples_per_class 1: must be at least 2"),
        ({"loss": "contrastive"}, "loss 'contrastive': choose one of triplet, proxy-anchor"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)
    assert TrainConfig(members=None, train_step_size=None).members is None  # None passes
