"""``eat app`` / ``python -m app``: flags with help text, and a clear refusal without models."""

from __future__ import annotations

import pytest

from eat_command import main


def test_app_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["app", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--host", "--port", "--models", "--gallery", "--gallery-size", "--cache-dir"):
        assert flag in text
    assert "127.0.0.1" in text and "7860" in text


def test_missing_models_exit_2_with_a_message(tmp_path, capsys):
    assert main(["app", "--models", str(tmp_path), "--cache-dir", str(tmp_path / "c")]) == 2
    out = capsys.readouterr().out
    assert "vanilla" in out and "eat train" in out
