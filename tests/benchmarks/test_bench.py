"""`eat bench --quick` end to end on a tiny slice: report files, resumability, --only."""

from __future__ import annotations

import json

import pytest

from eat_command import main

# the quick profile, trained and scored end to end on a small slice (minutes)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    args = [
        "bench",
        "--quick",
        "--max-train",
        "400",
        "--attack-images",
        "80",
        "--quiet",
        "--out",
        str(root / "results"),
        "--runs",
        str(root / "runs"),
    ]
    assert main(args) == 0
    return root, args


def test_quick_bench_writes_every_artefact(tiny_bench):
    root, _ = tiny_bench
    results = json.loads((root / "results" / "results.json").read_text())
    meta = results["meta"]
    assert {"command", "commit", "date", "this_invocation_wall_s"} <= set(meta)
    rows = results["rows"]
    expected = {
        "vanilla",
        "vanilla-ens",
        "pgd-at",
        "trades",
        "est",
        "act",
        "at-ensemble",
        "eat-split",
        "eat",
        "pgd-at-eqc",
        "hm",
        "hm-eqc",
        "pgd-at-wide-eqc",
        "hm-wide-eqc",
        "eat-triplet",
        "pgd-at-triplet-eqc",
    }
    assert set(rows) == expected
    for name, record in rows.items():
        assert "clean" in record["evals"] and "ca@0.1/5" in record["evals"], name
        assert "ca@0.1/5/s1" in record["evals"], name
        assert record["train"]["train_wall_s"] > 0
    assert rows["eat"]["members"] == 3 and rows["pgd-at"]["members"] == 1
    assert "eps 0.05" in (root / "results" / "results.md").read_text()
    assert any(c["check"].startswith("ca transfer") for c in results["masking_checks"])
    assert results["targets"] and all("met" in t for t in results["targets"])
    for plot in ("robustness_vs_eps.png", "clean_vs_robust.png"):
        assert (root / "results" / plot).read_bytes()[:4] == b"\x89PNG"
    assert rows["pgd-at-eqc"]["train"]["epochs"] >= rows["pgd-at"]["train"]["epochs"]
    assert rows["pgd-at-wide-eqc"]["train"]["config"]["width"] == 14  # 8·√3: K members' FLOPs


def test_seeds_train_the_decisive_rows_again_and_report_mean_and_sd(tiny_bench):
    root, args = tiny_bench
    assert main([*args, "--seeds", "1"]) == 0
    results = json.loads((root / "results" / "results.json").read_text())
    best = results["meta"]["best_single_equal_compute"]
    assert best in {"pgd-at-eqc", "hm-eqc", "pgd-at-wide-eqc", "hm-wide-eqc"}
    seeds = results["training_seeds"]
    assert set(seeds) == {"eat", "at-ensemble", "hm", best}
    for name, summary in seeds.items():
        record = json.loads((root / "results" / "rows" / f"{name}-s1.json").read_text())
        assert record["train"]["config"]["seed"] == 1
        base = results["rows"][name]
        assert record["train"]["epochs"] == base["train"]["epochs"]
        values = [base["evals"]["ca@0.1/5"]["attacked"]["nmi"]]
        values.append(record["evals"]["ca@0.1/5"]["attacked"]["nmi"])
        assert summary["ca_nmi"]["values"] == values
        assert summary["ca_nmi"]["mean"] == pytest.approx(sum(values) / 2)
    assert "## Training seeds" in (root / "results" / "results.md").read_text()
    assert any(t["target"].startswith("decisive") for t in results["targets"])


def test_rerun_keeps_finished_rows(tiny_bench):
    root, args = tiny_bench
    before = {p.name: p.read_text() for p in (root / "results" / "rows").glob("*.json")}
    assert main(args) == 0
    after = {p.name: p.read_text() for p in (root / "results" / "rows").glob("*.json")}
    assert before == after


def test_only_retrains_the_named_row(tiny_bench):
    root, args = tiny_bench
    rows = root / "results" / "rows"
    untouched = (rows / "trades.json").read_text()
    old = json.loads((rows / "vanilla.json").read_text())
    ckpt = root / "runs" / "vanilla" / "model.safetensors"
    old_mtime = ckpt.stat().st_mtime_ns
    assert main([*args, "--only", "vanilla"]) == 0
    new = json.loads((rows / "vanilla.json").read_text())
    assert ckpt.stat().st_mtime_ns > old_mtime  # retrained
    assert new["fingerprint"] == old["fingerprint"]  # same seed, same weights
    assert set(new["evals"]) == set(old["evals"])  # and re-evaluated
    assert (rows / "trades.json").read_text() == untouched


def test_a_missing_checkpoint_is_remade_only_when_an_evaluation_needs_it(tiny_bench):
    import dataclasses
    import shutil

    from benchmarks.robustness.profiles import PROFILES
    from benchmarks.robustness.runner import Bench

    root, args = tiny_bench
    rows = root / "results" / "rows"
    shutil.rmtree(root / "runs" / "est")
    before = json.loads((rows / "est.json").read_text())
    assert main(args) == 0  # every evaluation of est is stored: no retraining
    assert not (root / "runs" / "est").exists()
    assert json.loads((rows / "est.json").read_text()) == before
    profile = dataclasses.replace(PROFILES["quick"], max_train=400, attack_images=80)
    bench = Bench(profile, root / "results", root / "runs", progress=False)
    bench.attack("est", "es", 0.05, 2)
    after = json.loads((rows / "est.json").read_text())
    assert (root / "runs" / "est" / "config.json").is_file()
    assert after["fingerprint"] == before["fingerprint"]  # seeded: the same weights again
    assert set(after["evals"]) == set(before["evals"]) | {"es@0.05/2"}
    # the original training time stays the row's; the retraining is recorded beside it
    assert after["train"]["train_wall_s"] == before["train"]["train_wall_s"]
    assert after["train"]["retrained_for_checkpoint"]["train_wall_s"] > 0


def test_report_only_rebuilds_the_report_without_running_anything(tiny_bench):
    root, args = tiny_bench
    rows_before = {p.name: p.read_text() for p in (root / "results" / "rows").glob("*.json")}
    (root / "results" / "results.md").unlink()
    assert main([*args, "--report-only"]) == 0
    assert (root / "results" / "results.md").is_file()
    rows_after = {p.name: p.read_text() for p in (root / "results" / "rows").glob("*.json")}
    assert rows_after == rows_before


def test_unknown_row_is_refused(tiny_bench):
    root, args = tiny_bench
    with pytest.raises(ValueError, match="unknown rows"):
        main([*args, "--only", "nope"])


def test_tuning_sweep_scores_each_entry(tmp_path):
    """`python -m benchmarks.tune` on a tiny slice: trained, scored, table written."""
    from benchmarks.tune import main as tune_main

    out = tmp_path / "tune"
    args = ["--entries", "eat", "at-ensemble", "--max-train", "200", "--attack-images", "60"]
    args += ["--out", str(out), "--runs", str(tmp_path / "runs"), "--threads", "1"]
    assert tune_main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert {e["entry"] for e in results["entries"]} == {"eat", "at-ensemble"}
    for entry in results["entries"]:
        assert 0 <= entry["ca_nmi"] <= 1 and 0 <= entry["es_r1"] <= 1
    assert results["meta"]["profile"]["max_train"] == 200
    md = (out / "results.md").read_text()
    assert "| eat | members=3 |" in md and results["meta"]["commit"] in md


def test_tuning_grid_v2_reports_cost_per_epoch_and_a_compute_curve(tmp_path):
    from benchmarks.tune import family
    from benchmarks.tune import main as tune_main

    assert family("eat-f2-e16") == "eat-f2" and family("hm-e3") == "hm" and family("eat") == "eat"
    out = tmp_path / "tune"
    args = ["--grid", "eat-v2", "--entries", "pgd-at-e3", "eat-hm-e4", "--max-train", "1200"]
    args += ["--attack-images", "60", "--out", str(out), "--runs", str(tmp_path / "runs")]
    assert tune_main([*args, "--threads", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    entries = {e["entry"]: e for e in results["entries"]}
    pgd, eat = entries["pgd-at-e3"], entries["eat-hm-e4"]
    # an epoch: PGD-AT 1200 // 160 = 7 steps; EAT, each member over its third once, 400 // 160
    assert (pgd["steps"], eat["steps"]) == (3 * 7, 4 * 2)
    md = (out / "results.md").read_text()
    ratio = eat["seconds_per_epoch"] / pgd["seconds_per_epoch"]
    assert f"| {ratio:.2f}× |" in md and "| 1.00× |" in md
    assert (out / "robustness_vs_compute.png").read_bytes()[:4] == b"\x89PNG"


def test_a_retired_tuning_entry_keeps_its_result_but_is_not_retrained():
    from benchmarks.tune import GRIDS, current_overrides

    defense, overrides = GRIDS["eat-v2"]["eat-e3"]  # it trained the removed term through F
    with pytest.raises(ValueError, match="term through F, which was removed"):
        current_overrides("eat-e3", overrides)
    # an entry that only restated today's recipe (the term off) trains as it is
    assert current_overrides("eat-nof-e10", GRIDS["eat-v2"]["eat-nof-e10"][1]) == {
        "members": 3,
        "lr": 1e-3,
        "epochs": 10,
    }


def test_ship_copies_vanilla_baseline_and_eat_with_their_numbers(tiny_bench, tmp_path):
    from benchmarks.robustness.ship import ship_models
    from eat_models import load_model

    root, _ = tiny_bench
    assets = tmp_path / "models"
    assets.mkdir()
    ship_models(root / "runs", assets, root / "results", "pgd-at-eqc")
    readme = (assets / "README.md").read_text()
    for target, name in (("vanilla", "vanilla"), ("baseline", "pgd-at-eqc"), ("eat", "eat")):
        record = json.loads((root / "results" / "rows" / f"{name}.json").read_text())
        model = load_model(assets / target)
        assert model.meta["fingerprint"] == record["fingerprint"]
        assert f"| {target} | {name} | {record['members']} |" in readme
    assert "eat bench --only vanilla eat pgd-at-eqc --ship" in readme
