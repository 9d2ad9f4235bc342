"""``eat index build / search / info / add / remove`` end to end through ``eat_command.main``."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from eat_command import main
from eat_models.cli import build_parser
from index.cli import register
from index.persist import MANIFEST_NAME, read_manifest


@pytest.fixture
def built(trained_vanilla, image_folder, tmp_path, capsys):
    out = tmp_path / "idx"
    code = main(
        [
            "index",
            "build",
            "--model",
            str(trained_vanilla),
            "--source",
            str(image_folder),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return out, captured


def test_build_reports_undecodable_files_and_indexes_the_rest(built):
    out, captured = built
    assert "indexed 18 images" in captured.out and "2 could not be decoded" in captured.out
    assert "corrupt.jpg" in captured.err and "truncated.png" in captured.err
    assert read_manifest(out)["count"] == 18


def test_info(built, capsys):
    out, _ = built
    assert main(["index", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "kind        flat" in text and "items       18" in text and "fingerprint" in text
    assert main(["index", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 18 and info["thumbnail_shape"] == [28, 28, 1]


def test_search_prints_a_table_and_reports_bad_files(built, image_folder, capsys):
    out, _ = built
    query = sorted((image_folder / "Trouser").glob("*.png"))[0]
    bad = image_folder / "Sneaker" / "corrupt.jpg"
    assert main(["index", "search", str(out), str(query), str(bad), "--k", "3"]) == 1
    captured = capsys.readouterr()
    assert "corrupt.jpg: cannot decode" in captured.err
    lines = captured.out.splitlines()
    assert lines[0] == f"query: {query}" and lines[1].split() == [
        "rank",
        "id",
        "score",
        "class",
        "source",
    ]
    assert len([line for line in lines if line]) == 5  # query, header, 3 results
    top = lines[2].split()
    assert top[0] == "1" and float(top[2]) == pytest.approx(1.0, abs=1e-4)
    assert top[3] == "Trouser" and top[4] == str(query)
    assert main(["index", "search", str(out), str(query), "--k", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["hits"][0]["record"]["source"] == str(query) and len(rows[0]["hits"]) == 2


def test_build_from_fashion_mnist_add_and_remove(trained_vanilla, image_folder, tmp_path, capsys):
    out = tmp_path / "fm"
    args = [
        "index",
        "build",
        "--model",
        str(trained_vanilla),
        "--source",
        "fashion-mnist:test",
        "--out",
        str(out),
        "--limit",
        "300",
        "--kind",
        "hnsw",
        "--no-thumbnails",
        "--quiet",
    ]
    assert main(args) == 0
    assert read_manifest(out)["kind"] == "hnsw" and read_manifest(out)["count"] == 300
    assert main(args) == 2  # refuses to replace an index without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["index", "add", str(out), "--source", str(image_folder), "--quiet"]) == 0
    assert read_manifest(out)["count"] == 318
    assert main(["index", "remove", str(out), "0", "1", "317"]) == 0
    assert read_manifest(out)["count"] == 315
    assert main(["index", "remove", str(out), "0"]) == 2
    assert "no items with ids [0]" in capsys.readouterr().err


def test_a_model_with_another_fingerprint_is_refused(built, trained_vanilla, tmp_path, capsys):
    out, _ = built
    other = tmp_path / "other-model"
    shutil.copytree(trained_vanilla, other)
    config = json.loads((other / "config.json").read_text())
    config["fingerprint"] = "feedfacefeedface"
    (other / "config.json").write_text(json.dumps(config))
    query = next(out.parent.rglob("*.png"))
    assert main(["index", "search", str(out), str(query), "--model", str(other)]) == 2
    err = capsys.readouterr().err
    assert "feedfacefeedface" in err and read_manifest(out)["fingerprint"] in err


def test_a_corrupt_index_is_a_clear_error(built, capsys):
    out, _ = built
    vectors = out / read_manifest(out)["files"]["vectors"]["name"]
    vectors.write_bytes(vectors.read_bytes()[:100])
    assert main(["index", "info", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "truncated" in err
    (out / MANIFEST_NAME).unlink()
    assert main(["index", "search", str(out), "x.png"]) == 2


def test_every_flag_has_help(capsys):
    from benchmarks.cli import register as register_benchmarks

    parser = build_parser([register, register_benchmarks])
    index_parser = _subparsers(parser)["index"]
    commands = _subparsers(index_parser)
    assert set(commands) == {"build", "add", "remove", "search", "info", "bench"}
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"eat index {name} {action.option_strings or action.dest}"
    with pytest.raises(SystemExit) as exit_info:
        main(["index", "build", "--help"])
    assert exit_info.value.code == 0 and "--ef-search" in capsys.readouterr().out


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)
