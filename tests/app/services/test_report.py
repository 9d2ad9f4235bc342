"""The robustness report tab's reading of the results folder."""

from __future__ import annotations

from PIL import Image

from app.services.report import load_report


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
