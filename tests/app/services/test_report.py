"""The robustness report tab's reading of the results folder."""

from __future__ import annotations

import pytest
from PIL import Image

from app.services.report import audit_names, load_audit, load_report


def test_report_without_results_says_how_to_get_them(tmp_path):
    report = load_report(tmp_path / "missing")
    assert not report.found and "eat bench" in report.markdown and report.plots == []


def test_report_reads_table_and_plots(tmp_path, bad_files):
    (tmp_path / "results.md").write_text(
        "| defense | NMI |\n|---|---|\n| eat | 0.8 |\n![x](x.png)\n"
    )
    Image.new("RGB", (60, 40), "white").save(tmp_path / "nmi_vs_eps.png")
    (tmp_path / "broken.png").write_bytes(bad_files["corrupt"].read_bytes())
    report = load_report(tmp_path)
    assert report.found and "| eat | 0.8 |" in report.markdown and "![x]" not in report.markdown
    assert [caption for _, caption in report.plots] == ["nmi vs eps"]


def test_audit_cards_are_listed_and_loaded_by_name_only(tmp_path):
    card = tmp_path / "audit" / "vanilla"
    card.mkdir(parents=True)
    (card / "audit.md").write_text(
        "# Robustness card: vanilla\n\n![plot](eps_sweep.png)\nERS 3.8\n"
    )
    Image.new("RGB", (20, 10), "white").save(card / "eps_sweep.png")
    (tmp_path / "audit" / "empty").mkdir()
    (tmp_path / "secret.md").write_text("not a card")
    assert audit_names(tmp_path / "audit") == ["vanilla"]
    report = load_audit(tmp_path / "audit", "vanilla")
    assert report.found and report.markdown.startswith("# Robustness card: vanilla")
    assert "![plot]" not in report.markdown and "ERS 3.8" in report.markdown
    assert [caption for _, caption in report.plots] == ["eps sweep"]
    for bad in ("empty", "..", "../secret", "missing"):
        with pytest.raises(ValueError, match="unknown audit"):
            load_audit(tmp_path / "audit", bad)
    assert audit_names(tmp_path / "nowhere") == []


def test_targets_of_another_eat_run_say_which_run_is_served(resources, tmp_path, monkeypatch):
    """The benchmark's targets table is about its `eat` row; an app serving `eat-triplet`
    says so under it, so no one reads those numbers as the served model's."""
    from app.services import build_services

    (tmp_path / "results.md").write_text(
        "# Bench\n\n## Targets (DESIGN.md §7), EAT row and cost\n\n| target | measured |\n"
    )
    services = build_services(resources, results_dir=tmp_path)
    meta = resources.views["eat"].model.meta
    monkeypatch.setitem(meta, "run", "eat-triplet")
    text = services.report().markdown
    heading = text.index("## Targets")
    note = text.index("this app serves the run `eat-triplet`")
    assert heading < note < text.index("| target |")
    monkeypatch.setitem(meta, "run", "eat")
    assert "this app serves" not in services.report().markdown
