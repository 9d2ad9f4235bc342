"""The Milvus backend on Milvus Lite (a real embedded Milvus in a ``.db`` file): the same
answers as FAISS flat, the same refusals, and the CLI on a Milvus location."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from eat_command import main  # noqa: E402
from index import (
    VectorIndex,  # noqa: E402
    errors,  # noqa: E402
)
from index.milvus import MilvusIndex, is_milvus_location, milvus_kind  # noqa: E402
from index.search import load_index  # noqa: E402


def test_locations_and_kinds():
    assert is_milvus_location("gallery.db") and is_milvus_location("http://host:19530")
    assert not is_milvus_location("runs/gallery-index")
    assert milvus_kind(1_000) == "FLAT" and milvus_kind(100_000) == "HNSW"
    assert milvus_kind(5_000_000) == "IVF_FLAT"


def test_milvus_lite_gives_the_same_top_k_as_faiss_flat(tmp_path, make_vectors):
    x = make_vectors(800, dim=32)
    queries = make_vectors(25, dim=32, seed=1)
    records = [{"source": f"item-{i}"} for i in range(len(x))]
    flat = VectorIndex(32, "flat")
    flat.add(x, records)
    milvus = MilvusIndex.create(tmp_path / "g.db", 32, fingerprint="abc", expected_size=len(x))
    assert milvus.kind == "FLAT"
    assert milvus.add(x, records).tolist() == list(range(800))
    want, got = flat.search(queries, 10), milvus.search(queries, 10)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert got.hits[0][0].record == {"source": f"item-{want.ids[0, 0]}", "id": want.ids[0, 0]}
    # the stored vectors are the normalised inputs, by id
    ids, vecs = milvus.vectors()
    np.testing.assert_array_equal(ids, np.arange(800))
    np.testing.assert_allclose(vecs, x, atol=1e-6)


def test_reopen_remove_add_and_refusals(tmp_path, make_vectors):
    path = tmp_path / "g.db"
    x = make_vectors(50, dim=8)
    thumbs = np.random.default_rng(0).integers(0, 255, (50, 4, 4, 1), dtype=np.uint8)
    index = MilvusIndex.create(path, 8, fingerprint="model-a", thumbnail_shape=(4, 4, 1))
    with pytest.raises(ValueError, match="thumbnail for every item"):
        index.add(x)
    index.add(x, [{"n": i} for i in range(50)], thumbnails=thumbs)
    index.save()
    index.close()

    again = MilvusIndex.open(path, fingerprint="model-a")
    assert len(again) == 50 and again.info()["next_id"] == 50
    np.testing.assert_array_equal(again.thumbnail(7), thumbs[7])
    assert again.record(7) == {"n": 7, "id": 7}
    assert again.remove([3, 4]) == 2
    with pytest.raises(errors.UnknownIdError):
        again.remove([3])
    assert again.remove([3], missing_ok=True) == 0
    assert 3 not in again.ids().tolist() and len(again) == 48
    assert again.add(x[:2], [{}, {}], thumbnails=thumbs[:2]).tolist() == [50, 51]  # ids go on
    with pytest.raises(ValueError, match="already in the index"):
        again.add(x[:1], thumbnails=thumbs[:1], ids=[0])
    with pytest.raises(errors.DimensionMismatchError):
        again.search(np.ones(5, dtype=np.float32))
    with pytest.raises(errors.UnknownIdError):
        again.record(3)
    again.close()

    with pytest.raises(errors.FingerprintMismatchError):
        MilvusIndex.open(path, fingerprint="model-b")
    with pytest.raises(errors.IndexFormatError, match="no index collection 'other'"):
        MilvusIndex.open(path, collection="other")
    with pytest.raises(errors.SearchIndexError, match="already holds"):
        MilvusIndex.create(path, 8)
    with pytest.raises(errors.IndexFormatError, match="does not exist"):
        MilvusIndex.open(tmp_path / "missing.db")
    empty = MilvusIndex.create(path, 8, collection="empty")
    with pytest.raises(errors.EmptyIndexError):
        empty.search(x[:1])
    empty.close()


def test_cli_builds_searches_and_edits_a_milvus_lite_index(
    trained_vanilla, image_folder, tmp_path, capsys
):
    db = tmp_path / "gallery.db"
    args = ["--model", str(trained_vanilla), "--source", str(image_folder), "--quiet"]
    assert main(["index", "build", *args, "--out", str(db)]) == 0
    out = capsys.readouterr().out
    assert "indexed 18 images" in out and "Milvus collection 'gallery' at" in out
    faiss_dir = tmp_path / "faiss"
    assert main(["index", "build", *args, "--out", str(faiss_dir)]) == 0
    capsys.readouterr()

    assert main(["index", "info", str(db), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "milvus" and info["count"] == 18
    assert info["thumbnail_shape"] == [28, 28, 1]
    query = sorted((image_folder / "Trouser").glob("*.png"))[0]
    results = {}
    for location in (db, faiss_dir):
        assert main(["index", "search", str(location), str(query), "--k", "5", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        results[location] = [(h["id"], round(h["score"], 4)) for h in rows[0]["hits"]]
    assert results[db] == results[faiss_dir]  # the same answer from either backend
    assert main(["index", "remove", str(db), "0", "1"]) == 0
    assert "removed 2 items; 16 left" in capsys.readouterr().out
    assert main(["index", "build", *args, "--out", str(db)]) == 2  # no silent overwrite
    assert "already holds" in capsys.readouterr().err


def test_commands_in_separate_processes_share_a_milvus_lite_file(
    trained_vanilla, image_folder, tmp_path
):
    """As a person uses it: each command its own process. A later process finds the
    collections released and loads them; a file open in another process is refused clearly."""
    import subprocess
    import sys

    db = tmp_path / "gallery.db"

    def eat(*args):
        return subprocess.run(
            [sys.executable, "-m", "eat_command", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    build = ["--model", str(trained_vanilla), "--source", str(image_folder), "--quiet"]
    assert eat("index", "build", *build, "--out", str(db)).returncode == 0
    assert eat("index", "remove", str(db), "0", "1").returncode == 0
    query = sorted((image_folder / "Trouser").glob("*.png"))[0]
    done = eat("index", "search", str(db), str(query), "--k", "5", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    hits = json.loads(done.stdout)[0]["hits"]
    assert len(hits) == 5 and not {0, 1} & {h["id"] for h in hits}
    # held open by this process, the file is refused to another one with a clear message
    held = load_index(db)
    try:
        busy = eat("index", "info", str(db))
        assert busy.returncode == 2 and "one process at a time" in busy.stderr
    finally:
        held.close()


def test_load_index_refuses_another_models_milvus_index(trained_vanilla, tmp_path, make_vectors):
    from eat_models import load_model

    model = load_model(trained_vanilla)
    index = MilvusIndex.create(tmp_path / "g.db", model.meta["embedding_dim"], fingerprint="x")
    index.close()
    with pytest.raises(errors.FingerprintMismatchError):
        load_index(tmp_path / "g.db", model)
