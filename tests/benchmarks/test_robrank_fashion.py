"""RobRank's Fashion-MNIST protocol profile: its rows share RobRank's setting, and the report
reads finished and running rows."""

from __future__ import annotations

import json

import pytest

from benchmarks import robrank_fashion as rf
from eat_models.train import TrainConfig, train


def _tiny_run(out, name: str, defense: str, **extra) -> None:
    """A one-epoch run of ``defense`` on 200 images into ``out/runs/name``."""
    train(
        TrainConfig(
            defense=defense,
            epochs=1,
            max_train=200,
            width=8,
            embedding_dim=16,
            train_steps=2,
            out=str(out / "runs" / name),
            **extra,
        ),
        progress=False,
    )


def test_every_row_trains_in_robranks_setting(tmp_path):
    names = [r.name for r in rf.ROWS]
    assert names[:4] == ["vanilla", "vanilla-rc2f2", "hm", "eat"]  # the decisive ones first
    for row in rf.ROWS:
        config = rf.row_config(row, tmp_path, threads=1)
        assert (config.loss, config.optimizer, config.schedule) == ("triplet", "adam", "constant")
        assert config.classes_per_batch * config.samples_per_class == 128
        if config.sampler == "spc2":  # RobRank's 8 epochs of 128 pairs: 16 epochs' images
            assert (config.pairs_per_batch, config.epochs) == (128, 8)
        epochs = row.overrides.get("epochs", 16)
        assert config.epochs == epochs and config.resume and config.val_images == 2000
        steps = row.overrides.get("train_steps", 8)
        assert config.train_steps == steps
        step = 2.5 * (77 / 255) / steps if "-reach" in row.name else 3 / 255
        assert abs(config.train_eps - 77 / 255) < 1e-12
        assert abs(config.train_step_size - step) < 1e-12
        assert config.out == str(tmp_path / "runs" / row.name)
    assert rf.row_config(rf.ROWS[2], tmp_path, 1, seed=2).out.endswith("hm-s2")
    assert rf.row_config(rf.ROWS[2], tmp_path, 1).hm_ics_weight == 0.5


def test_the_report_lists_running_rows_with_their_progress(tmp_path):
    train(
        TrainConfig(
            epochs=2,
            stop_after=1,
            max_train=200,
            width=8,
            embedding_dim=16,
            out=str(tmp_path / "runs" / "hm"),
        ),
        progress=False,
    )
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "vanilla.json").write_text(
        json.dumps({"train": {"history": [{}] * 16, "epochs": 16, "train_wall_s": 417.0}})
    )
    text = rf.report(tmp_path)
    assert "| vanilla | 16/16 | 417 s |" in text and "0.876 / 0.778 / 4.5" in text
    assert "| hm | 1/2 (running) |" in text
    assert (tmp_path / "results.md").read_text() == text


def test_the_strong_worst_case_is_added_to_a_standard_evaluation(tmp_path, monkeypatch):
    """``evaluate --standard-only`` first, then ``evaluate``: the second run adds only the
    strong strength to the stored record, the standard numbers stay as they were."""
    monkeypatch.setattr(rf, "ATTACK_IMAGES", 40)
    for name in ("vanilla", "hm"):
        _tiny_run(tmp_path, name, name)
    hm = next(r for r in rf.ROWS if r.name == "hm")
    rf.evaluate_rows([hm], tmp_path, threads=1, progress=False, standard_only=True)
    first = json.loads((tmp_path / "eval" / "hm.json").read_text())
    assert list(first["card"]["strengths"]) == ["standard"]
    assert set(first["ca_at_robrank_eps"]) == {"standard/p1", "standard/p0.1"}
    rf.evaluate_rows([hm], tmp_path, threads=1, progress=False)
    second = json.loads((tmp_path / "eval" / "hm.json").read_text())
    assert list(second["card"]["strengths"]) == ["standard", "strong"]
    assert second["card"]["strengths"]["standard"] == first["card"]["strengths"]["standard"]
    assert second["clean_10k"] == first["clean_10k"]
    assert len(second["ca_at_robrank_eps"]) == 4
    assert [e["strengths"] for e in second["evaluations"]] == [["standard"], ["strong"]]
    rf.evaluate_rows([hm], tmp_path, threads=1, progress=False)  # nothing left to add
    assert json.loads((tmp_path / "eval" / "hm.json").read_text()) == second


def test_ship_copies_the_protocols_models_for_the_app(tmp_path, monkeypatch):
    """``ship``: eat, the single-model defense with the highest ERS as baseline, hm and
    vanilla, copied where ``eat app --models`` loads all four, with their numbers."""
    from app.services.models import load_models

    monkeypatch.setattr(rf, "ATTACK_IMAGES", 40)
    for name, defense, extra in (
        ("vanilla", "vanilla", {}),
        ("hm", "hm", {}),
        ("pgd-at", "pgd-at", {}),
        ("eat", "eat", {"members": 2}),
        ("eat-reach", "eat", {"members": 2}),
    ):
        _tiny_run(tmp_path, name, defense, **extra)
        (tmp_path / "train").mkdir(exist_ok=True)
        (tmp_path / "train" / f"{name}.json").write_text(
            json.dumps({"train": {"history": [{}], "epochs": 1, "train_wall_s": 1.0}})
        )
    rows = [r for r in rf.ROWS if r.name in ("vanilla", "hm", "pgd-at", "eat", "eat-reach")]
    rf.evaluate_rows(rows, tmp_path, threads=1, progress=False, standard_only=True)
    ers = {
        name: json.loads((tmp_path / "eval" / f"{name}.json").read_text())["card"]["strengths"][
            "standard"
        ]["ers"]
        for name in ("hm", "pgd-at", "eat", "eat-reach")
    }
    best = max(("hm", "pgd-at"), key=ers.get)
    best_eat = max(("eat", "eat-reach"), key=ers.get)
    to = tmp_path / "shipped"
    text = rf.ship(tmp_path, to)
    assert f"`baseline` is `{best}`" in text and f"`eat` is `{best_eat}`" in text
    assert sorted(p.name for p in to.iterdir()) == ["README.md", "baseline", "eat", "hm", "vanilla"]
    models = load_models(to)
    assert list(models) == ["eat", "baseline", "hm", "vanilla"]
    assert models["eat"].meta["num_members"] == 2
    for key, row in (("eat", best_eat), ("baseline", best), ("hm", "hm"), ("vanilla", "vanilla")):
        record = json.loads((tmp_path / "eval" / f"{row}.json").read_text())
        assert models[key].meta["fingerprint"] == record["fingerprint"]
        assert f"| {key} | {row} |" in text and f"`{record['fingerprint']}`" in text
    text = rf.ship(tmp_path, to, baseline="pgd-at", eat="eat")
    assert "pgd-at" in text.split("`baseline` is ")[1][:10] and "`eat` is `eat`" in text


def test_the_report_lists_every_seed_and_summarises_them(tmp_path):
    def record(r1, nmi, ers, ca):
        return {
            "clean_10k": {"recall@1": r1, "map@r": 0.5, "nmi": nmi},
            "card": {
                "strengths": {
                    "standard": {"ers": ers, "headline": {"ca/p1": {"attacked": {"nmi": ca}}}}
                }
            },
            "ca_at_robrank_eps": {"standard/p1": {"nmi": ca}, "standard/p0.1": {"nmi": ca}},
        }

    for folder in ("train", "eval"):
        (tmp_path / folder).mkdir()
    runs = (
        ("eat", (0.80, 0.70, 50.0, 0.40)),
        ("eat-s1", (0.82, 0.72, 54.0, 0.44)),
        ("pgd-at", (0.79, 0.70, 60.0, 0.40)),
        ("pgd-at-s1", (0.79, 0.70, 62.0, 0.44)),
        ("hm", (0.83, 0.75, 33.0, 0.10)),
    )
    for name, values in runs:
        (tmp_path / "train" / f"{name}.json").write_text(
            json.dumps({"train": {"history": [{}] * 16, "epochs": 16, "train_wall_s": 9.0}})
        )
        (tmp_path / "eval" / f"{name}.json").write_text(json.dumps(record(*values)))
    # the epoch costs of `time-steps --rows`: a row's compute is its epochs × that cost
    (tmp_path / "row-cost.json").write_text(
        json.dumps(
            {"timings": {"eat": {"epoch_vs_pgd_at": 1.39}, "pgd-at": {"epoch_vs_pgd_at": 1.0}}}
        )
    )
    text = rf.report(tmp_path)
    assert (
        "| eat | 16/16 | 9 s | 1.39× | 22 |" in text
        and "| eat-s1 | 16/16 | 9 s | 1.39× | 22 |" in text
    )
    assert (
        "| pgd-at | 16/16 | 9 s | 1.00× | 16 |" in text and "| hm | 16/16 | 9 s | — | — |" in text
    )
    assert "## Over training seeds" in text
    # mean ± sd (ddof 1): R@1 0.810 ± 0.014, ERS 52.0 ± 2.8
    assert (
        "| eat | 2 | 0.810 ± 0.014 | 0.710 ± 0.014 | 52.0 ± 2.8 | 0.420 ± 0.028 | 0.420 ± 0.028 |"
        in text
    )
    # the verdict: pooled sd over eat and pgd-at (ERS: sqrt((8 + 2) / 2) = 2.24, so 2 sd
    # 4.5); eat − pgd-at = −9.0 → behind; eat − hm = +19.0 → ahead; CA: pooled sd 0.028,
    # eat − pgd-at = 0 → within the spread
    verdict = text.split("## Verdict by seeds")[1]
    assert "| pgd-at | 2 | -9.0 (4.5) → eat behind | +0.000 (0.057) → within the seed spread" in (
        verdict
    )
    assert "| hm | 1 | +19.0 (4.5) → eat ahead | +0.320 (0.057) → eat ahead" in verdict
    assert [n for n in rf.seed_runs(tmp_path, rf.ROWS[0])] == ["vanilla"]


def test_adversary_reach_shows_what_eta_times_step_allows(tmp_path):
    """η 8 × 3/255 from the clean image stays within 24/255 in L∞; η 32 reaches ε."""
    _tiny_run(tmp_path, "vanilla", "vanilla")
    record = rf.adversary_reach(tmp_path, ["vanilla"], images=20, threads=1)
    measured = record["results"]["vanilla"]
    ours = measured["ours: η 8 × 3/255, clean start"]
    assert ours["linf_mean"] <= 8 * rf.ROBRANK_STEP + 1e-4
    assert measured["RobRank: η 32 × 3/255, clean start"]["linf_mean"] == pytest.approx(
        rf.ROBRANK_EPS, abs=1e-3
    )
    scaled = measured["η 8 × 2.5ε/8, clean start"]
    assert scaled["embedding_shift_mean"] > ours["embedding_shift_mean"]
    assert (tmp_path / "adversary-reach.json").is_file()


def test_time_steps_of_rows_writes_their_epoch_cost_against_pgd_at(tmp_path):
    """``time-steps --rows``: each named row trains a few steps in its own config, and
    row-cost.json gives its epoch (median step × steps per epoch) against PGD-AT's."""
    assert (
        rf.main(
            ["time-steps", "--rows", "vanilla", "pgd-at", "--steps", "2", "--out", str(tmp_path)]
        )
        == 0
    )
    record = json.loads((tmp_path / "row-cost.json").read_text())
    timings = record["timings"]
    assert set(timings) == {"vanilla", "pgd-at"} and timings["pgd-at"]["epoch_vs_pgd_at"] == 1.0
    for t in timings.values():
        assert t["steps_per_epoch"] == 468  # 60k images in batches of 128
        assert t["epoch_s"] == round(t["step_s"] * 468, 1)
    assert 0 < timings["vanilla"]["epoch_vs_pgd_at"] < 1  # no attack: cheaper
    assert "provenance" in record and record["command"]
    assert rf.row_cost_table(tmp_path)["vanilla"] == timings["vanilla"]["epoch_vs_pgd_at"]
    with pytest.raises(SystemExit):
        rf.main(["time-steps", "--rows", "nope", "--out", str(tmp_path)])


def test_fidelity_judges_each_baseline_within_the_bounds(tmp_path):
    """The fidelity table: gaps to RobRank's rows within ±0.03 / ±0.03 / ±5, and the NMI by
    RobRank's own k-means (``nmi-procedure.json``) judged where it was measured."""
    from benchmarks.robrank_fashion import fidelity

    def record(r1, nmi, ers):
        return {
            "clean_10k": {"recall@1": r1, "nmi": nmi},
            "card": {"strengths": {"standard": {"ers": ers}}},
        }

    seeded = {
        "vanilla": [record(0.883, 0.840, 3.1)],  # NMI +0.062 by ours, +0.029 by theirs
        "hm": [record(0.850, 0.770, 78.5), record(0.852, 0.772, 77.5)],  # R@1 −0.029 ✓
        "act": [record(0.700, 0.696, 67.7)],  # R@1 −0.094 ✗
    }
    (tmp_path / "nmi-procedure.json").write_text(
        json.dumps({"rows": {"vanilla": {"faiss_single_run_mean": 0.807}}})
    )

    # hm's two seeds: one still climbing at the end, one level; act: too short a history
    def history(*values):
        return [{"epoch": i + 1, "val_recall@1": v, "val_nmi": v} for i, v in enumerate(values)]

    (tmp_path / "train").mkdir()
    for run, values in (
        ("hm", (0.70, 0.70, 0.70, 0.70, 0.74, 0.74, 0.74, 0.74)),  # +0.04
        ("hm-s1", (0.70,) * 8),  # +0.00
        ("act", (0.70,) * 7),
    ):
        (tmp_path / "train" / f"{run}.json").write_text(
            json.dumps({"train": {"history": history(*values)}})
        )
    seeded["hm"][0]["row"], seeded["hm"][1]["row"] = "hm", "hm-s1"
    seeded["act"][0]["row"] = "act"
    rows = {line.split(" | ")[0].strip("| "): line for line in fidelity(tmp_path, seeded)[7:]}
    assert set(rows) == {"vanilla", "hm", "act"}
    assert "| R@1 +0.020, NMI +0.020: still climbing |" in rows["hm"]
    assert rows["act"].count("| — |") == 1 and rows["vanilla"].count("| — |") == 1
    seeded["hm"][0]["row"] = "hm-s1"  # both level now
    again = {line.split(" | ")[0].strip("| "): line for line in fidelity(tmp_path, seeded)[7:]}
    assert "| R@1 +0.000, NMI +0.000: levelled off: not the training length |" in again["hm"]
    assert "(+0.062 ✗ [+0.029 ✓])" in rows["vanilla"] and "| faithful |" in rows["vanilla"]
    assert "| 2 |" in rows["hm"] and "(-5.9 ✗)" in rows["hm"]
    assert "not faithful: ERS" in rows["hm"] and "(-0.029 ✓)" in rows["hm"]
    assert "not faithful: R@1 |" in rows["act"]


def test_a_shorter_row_of_the_same_config_is_made_on_the_way(tmp_path, monkeypatch):
    """``eat-hm-reach-e9`` of a new seed is ``eat-hm-reach``'s epoch 9 of that seed: the
    longer run stops there, hands its resume point to the shorter row, and goes on."""
    tiny = {
        "max_train": 200,
        "width": 8,
        "embedding_dim": 16,
        "train_steps": 2,
        "val_images": 40,
        "classes_per_batch": 4,
        "samples_per_class": 4,
    }
    long = rf.ProtocolRow("v", "vanilla", "two epochs", {**tiny, "epochs": 2})
    short = rf.ProtocolRow("v-e1", "vanilla", "one epoch", {**tiny, "epochs": 1})
    other = rf.ProtocolRow("v-lr", "vanilla", "another rate", {**tiny, "epochs": 1, "lr": 5e-4})
    monkeypatch.setattr(rf, "ROWS", (long, short, other))
    rf.train_rows([long], tmp_path, threads=1, seeds=(1,), progress=False)
    made = sorted(p.name for p in (tmp_path / "train").glob("*.json"))
    assert made == ["v-e1-s1.json", "v-s1.json"]  # not the row of another rate
    first = json.loads((tmp_path / "train" / "v-e1-s1.json").read_text())["train"]["history"]
    history = json.loads((tmp_path / "train" / "v-s1.json").read_text())["train"]["history"]
    assert len(first) == 1 and len(history) == 2 and history[0] == first[0]
    assert (tmp_path / "runs" / "v-e1-s1" / "config.json").is_file()
    # the same weights as the shorter row trained on its own
    from safetensors.torch import load_file

    alone = tmp_path / "alone"
    rf.train_rows([short], alone, threads=1, seeds=(1,), progress=False)
    made_on_the_way = load_file(str(tmp_path / "runs" / "v-e1-s1" / "model.safetensors"))
    on_its_own = load_file(str(alone / "runs" / "v-e1-s1" / "model.safetensors"))
    assert made_on_the_way.keys() == on_its_own.keys()
    assert all((made_on_the_way[k] == on_its_own[k]).all() for k in on_its_own)


def test_the_report_shows_what_the_strong_worst_case_takes_and_the_gaps_under_it(tmp_path):
    """Runs evaluated at both strengths get a standard → strong row with the drop; a pair of
    them (EAT on HM against hm-reach) gets its gap at each strength; a run evaluated at the
    standard strength only stays out of the section."""

    def strengths(ers, ca):
        return {"ers": ers, "headline": {"ca/p1": {"attacked": {"nmi": ca}}}}

    def record(name, standard, strong=None):
        cards = {"standard": strengths(*standard)}
        robrank = {"standard/p1": {"nmi": standard[1]}, "standard/p0.1": {"nmi": standard[1]}}
        if strong is not None:
            cards["strong"] = strengths(*strong)
            robrank |= {"strong/p1": {"nmi": strong[1]}, "strong/p0.1": {"nmi": strong[1]}}
        return {
            "row": name,
            "clean_10k": {"recall@1": 0.8, "map@r": 0.5, "nmi": 0.7},
            "card": {"strengths": cards},
            "ca_at_robrank_eps": robrank,
        }

    for folder in ("train", "eval"):
        (tmp_path / folder).mkdir()
    runs = {
        "hm-reach": record("hm-reach", (73.0, 0.66), (66.0, 0.56)),
        "eat-hm-reach": record("eat-hm-reach", (72.0, 0.65), (67.5, 0.60)),
        "pgd-at": record("pgd-at", (60.0, 0.50)),
    }
    for name, values in runs.items():
        (tmp_path / "train" / f"{name}.json").write_text(
            json.dumps({"train": {"history": [{}] * 16, "epochs": 16, "train_wall_s": 9.0}})
        )
        (tmp_path / "eval" / f"{name}.json").write_text(json.dumps(values))
    text = rf.report(tmp_path).split("## The strong worst case")[1]
    assert "| hm-reach | 73.0 → 66.0 (-7.0) | 0.660 → 0.560 (-0.100) |" in text
    assert "| eat-hm-reach | 72.0 → 67.5 (-4.5) | 0.650 → 0.600 (-0.050) |" in text
    assert "| pgd-at |" not in text
    # behind by 1.0 at the standard strength, ahead by 1.5 under the strong worst case
    assert "| eat-hm-reach − hm-reach | -1.0 / +1.5 | -0.010 / +0.040 |" in text


def test_manipulation_leaves_triplets_at_the_destination_clean(tmp_path):
    """``manipulation``: for each source, the triplets already as hard as the destination
    are counted, and soft-hard sources start harder than random ones on the same model."""
    _tiny_run(tmp_path, "hm", "hm", train_eps=0.3, train_step_size=0.1)
    record = rf.manipulation(tmp_path, ["hm"], batches=2, threads=1)
    sources = record["rows"]["hm"]["sources"]
    assert set(sources) == {"random", "softhard"}
    for measured in sources.values():
        assert 0.0 <= measured["share_at_destination_unperturbed"] <= 1.0
        assert 0.0 <= measured["triplet_linf_mean"] <= 0.3 + 1e-6
        # PGD raises hardness towards the destination, never lowers it on average
        assert measured["hardness_after"] >= measured["hardness_before"] - 1e-6
    assert sources["softhard"]["hardness_before"] > sources["random"]["hardness_before"]
    assert (tmp_path / "manipulation.json").is_file()
    assert record["rows"]["hm"]["batches"].startswith("8 classes × 16")
    # a row trained on SPC-2 batches is measured on SPC-2 batches of its own pair count
    _tiny_run(
        tmp_path,
        "hm-spc2",
        "hm",
        train_eps=0.3,
        train_step_size=0.1,
        sampler="spc2",
        pairs_per_batch=16,
    )
    record = rf.manipulation(tmp_path, ["hm", "hm-spc2"], batches=2, threads=1)
    assert record["rows"]["hm-spc2"]["batches"].startswith("SPC-2, 16 pairs")
    for measured in record["rows"]["hm-spc2"]["sources"].values():
        assert 0.0 <= measured["share_at_destination_unperturbed"] <= 1.0
        assert measured["hardness_after"] >= measured["hardness_before"] - 1e-6
    _tiny_run(tmp_path, "vanilla", "vanilla")
    with pytest.raises(ValueError, match="not an HM run"):
        rf.manipulation(tmp_path, ["vanilla"], batches=1, threads=1)


def test_the_ers_had_the_two_stronger_attacks_done_nothing(tmp_path):
    """LTM and GTM at the clean R@1 of the attacked images: the ERS rises by their shortfall
    over ten terms, and the gap to RobRank's ERS is judged against that bound."""
    from benchmarks.robrank_fashion import stronger_terms, unattacked_ers

    def record(ers, ltm, gtm, clean):
        terms = {f"t{i}": 50.0 for i in range(8)} | {"LTM": ltm, "GTM": gtm}
        attacks = {a: {"clean": {"recall@1": clean}} for a in ("ltm", "gtm")}
        return {
            "card": {
                "strengths": {"standard": {"ers": ers, "terms": terms, "ers_attacks": attacks}}
            }
        }

    # (80 − 60 + 80 − 40) / 10 = +6
    assert unattacked_ers(record(70.0, 60.0, 40.0, 0.8)) == pytest.approx(76.0)
    seeded = {
        "hm": [record(70.0, 60.0, 40.0, 0.8), record(72.0, 60.0, 40.0, 0.8)],  # 71 → 77
        "act": [record(60.0, 30.0, 30.0, 0.8)],  # 60 → 70, within 5 of 67.7
        "est": [record(48.8, 52.0, 24.0, 0.78)],  # above RobRank's 36.4
        "vanilla": [{"card": {"strengths": {"standard": {"ers": 3.0, "terms": {}}}}}],
    }
    rows = {line.split(" | ")[0].strip("| "): line for line in stronger_terms(seeded)[7:]}
    assert set(rows) == {"hm", "act", "est"}  # vanilla's record has no per-attack scores
    assert "| hm | 2 | 71.0 | 60.0 / 80.0; 40.0 / 80.0 | 77.0 | 83.9 |" in rows["hm"]
    assert rows["hm"].endswith("| no: even unattacked, 6.9 short |")
    assert rows["act"].endswith("| 70.0 | 67.7 | possibly: unattacked, within the bound |")
    assert rows["est"].endswith("| no: ours is above RobRank's already |")
