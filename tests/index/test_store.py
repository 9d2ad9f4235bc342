"""VectorIndex: exact search vs numpy, ids, persistence, atomic saves, corruption, threads."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from index import persist
from index import store as store_module
from index.errors import (
    DimensionMismatchError,
    EmptyIndexError,
    FingerprintMismatchError,
    IndexFormatError,
    SearchIndexError,
    UnknownIdError,
)
from index.kinds import IndexParams
from index.persist import MANIFEST_NAME, read_manifest
from index.store import VectorIndex

# ivf-pq needs >= 256 training vectors; small lists keep these tests exact-ish and fast.
SMALL_IVF = IndexParams(nlist=8, nprobe=8, pq_m=8, refine_k_factor=16)
KIND_PARAMS = [("flat", None), ("hnsw", None), ("ivf-pq", SMALL_IVF)]


def numpy_topk(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def filled(vectors, kind="flat", params=None, thumbnails=True, **kwargs) -> VectorIndex:
    """An index of ``vectors`` with a record (and a 4x4 thumbnail) per item."""
    index = VectorIndex(vectors.shape[1], kind, params=params, **kwargs)
    records = [{"source": f"synthetic:{i}", "label": int(i % 3)} for i in range(len(vectors))]
    thumbs = None
    if thumbnails:
        thumbs = np.full((len(vectors), 4, 4, 1), 7, dtype=np.uint8)
        thumbs[:, 0, 0, 0] = np.arange(len(vectors)) % 256
        index.thumbnail_shape = (4, 4, 1)
    index.add(vectors, records, thumbnails=thumbs)
    return index


def test_flat_search_matches_numpy_brute_force(vectors, rng):
    index = filled(vectors)
    queries = rng.standard_normal((25, vectors.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    results = index.search(queries, k=10)
    want_ids, want_scores = numpy_topk(vectors, queries, 10)
    np.testing.assert_array_equal(results.ids, want_ids)
    np.testing.assert_allclose(results.scores, want_scores, rtol=0, atol=1e-5)
    hit = results.hits[3][0]
    assert hit.id == want_ids[3, 0] and hit.record["source"] == f"synthetic:{hit.id}"


def test_queries_and_vectors_are_normalised(vectors):
    index = VectorIndex(vectors.shape[1], "flat")
    index.add(vectors * 5.0)
    results = index.search(vectors[:4] * 0.1, k=1)
    np.testing.assert_array_equal(results.ids[:, 0], np.arange(4))
    np.testing.assert_allclose(results.scores[:, 0], 1.0, atol=1e-5)
    ids, stored = index.vectors([2, 0])
    np.testing.assert_array_equal(ids, [2, 0])
    np.testing.assert_allclose(stored, vectors[[2, 0]], atol=1e-6)


@pytest.mark.parametrize("kind,params", KIND_PARAMS)
def test_approximate_kinds_find_the_stored_vectors(kind, params, make_vectors):
    vectors = make_vectors(1000)
    index = filled(vectors, kind, params)
    assert index.kind == kind
    results = index.search(vectors[:50], k=5)
    assert (results.ids[:, 0] == np.arange(50)).mean() >= 0.96
    truth, _ = numpy_topk(vectors, vectors[:50], 5)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(results.ids, truth, strict=True)])
    assert overlap >= 0.9


def test_k_larger_than_the_index_returns_every_item(vectors):
    index = filled(vectors[:7])
    results = index.search(vectors[0], k=50)
    assert results.ids.shape == (1, 7)
    assert sorted(results.ids[0].tolist()) == list(range(7))
    assert len(results.hits[0]) == 7


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_refused(vectors, k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        filled(vectors).search(vectors[0], k=k)


def test_empty_index_search_is_a_clear_error(vectors):
    with pytest.raises(EmptyIndexError, match="empty"):
        VectorIndex(vectors.shape[1]).search(vectors[0])
    index = filled(vectors[:3])
    index.remove([0, 1, 2])
    with pytest.raises(EmptyIndexError):
        index.search(vectors[0])


def test_wrong_dimension_is_refused(vectors):
    index = filled(vectors)
    with pytest.raises(DimensionMismatchError, match="dimension 16.*32-d"):
        index.search(np.ones((2, 16), dtype=np.float32))
    with pytest.raises(DimensionMismatchError):
        index.add(np.ones((2, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full(32, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="all-zero"):
        index.add(np.zeros((1, 32), dtype=np.float32))
    assert len(index) == len(vectors)


def test_thumbnails_are_kept_for_all_items_or_none(vectors):
    index = filled(vectors[:10])
    with pytest.raises(ValueError, match="pass thumbnails"):
        index.add(vectors[10:12])
    with pytest.raises(ValueError, match="differ"):
        index.add(vectors[10:12], thumbnails=np.zeros((2, 5, 5, 1), dtype=np.uint8))
    assert filled(vectors[:10], thumbnails=False).thumbnail(3) is None


def test_ids_are_stable_through_add_and_remove(vectors):
    index = filled(vectors[:10], thumbnails=False)
    assert index.remove([3, 9]) == 2
    new = index.add(vectors[10:13])
    np.testing.assert_array_equal(new, [10, 11, 12])  # removed ids are never reused
    explicit = index.add(vectors[13:15], ids=[100, 50])
    np.testing.assert_array_equal(explicit, [100, 50])
    assert index.search(vectors[13], k=1).ids[0, 0] == 100
    assert 3 not in index.ids().tolist() and 50 in index.ids().tolist()
    with pytest.raises(ValueError, match="already in the index"):
        index.add(vectors[:1], ids=[100])
    with pytest.raises(UnknownIdError, match="3"):
        index.remove([3])
    assert index.remove([3, 4], missing_ok=True) == 1
    with pytest.raises(UnknownIdError):
        index.record(4)
    assert index.record(5)["source"] == "synthetic:5"


@pytest.mark.parametrize("kind,params", KIND_PARAMS)
def test_remove_works_for_every_kind(kind, params, make_vectors):
    vectors = make_vectors(600)
    index = filled(vectors, kind, params)
    gone = np.arange(0, 600, 3)
    assert index.remove(gone) == len(gone)
    assert len(index) == 400
    results = index.search(vectors[:60], k=10)
    assert not np.isin(results.ids, gone).any()
    kept = np.setdiff1d(np.arange(60), gone)
    assert (results.ids[kept, 0] == kept).mean() >= 0.95
    assert index.thumbnail(1)[0, 0, 0] == 1


@pytest.mark.parametrize("kind,params", KIND_PARAMS)
def test_save_load_round_trip_is_identical(tmp_path, kind, params, make_vectors):
    vectors = make_vectors(600)
    index = filled(vectors, kind, params, fingerprint="abc123", model={"path": "/m"})
    index.remove([5])
    queries = vectors[:40] + 0.01
    before = index.search(queries, k=10)
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx", fingerprint="abc123")
    after = loaded.search(queries, k=10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert [h.record for h in after.hits[0]] == [h.record for h in before.hits[0]]
    assert loaded.info() == index.info()
    np.testing.assert_array_equal(loaded.thumbnail(7), index.thumbnail(7))
    one_thumb = np.zeros((1, 4, 4, 1), dtype=np.uint8)
    assert loaded.add(vectors[:1], thumbnails=one_thumb)[0] == 600  # next id survives


def test_empty_index_round_trip(tmp_path):
    VectorIndex(8, "hnsw").save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx")
    assert len(loaded) == 0 and loaded.kind == "hnsw"


def test_fingerprint_mismatch_is_refused_naming_both(tmp_path, vectors):
    filled(vectors, fingerprint="aaaa1111").save(tmp_path / "idx")
    with pytest.raises(FingerprintMismatchError, match="aaaa1111.*bbbb2222"):
        VectorIndex.load(tmp_path / "idx", fingerprint="bbbb2222")


def _fail_on_replace(monkeypatch):
    def replace(src, dst):
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(store_module.os, "replace", replace)


def test_a_save_killed_before_the_rename_leaves_the_old_index(tmp_path, vectors, monkeypatch):
    directory = tmp_path / "idx"
    index = filled(vectors[:300], thumbnails=False)
    index.save(directory)
    before = index.search(vectors[:20], k=5)
    index.add(vectors[300:])
    index.remove([0, 1])
    with monkeypatch.context() as m:
        _fail_on_replace(m)
        with pytest.raises(OSError, match="simulated crash"):
            index.save(directory)
    old = VectorIndex.load(directory)
    assert len(old) == 300
    after = old.search(vectors[:20], k=5)
    np.testing.assert_array_equal(after.ids, before.ids)
    assert len(old.ids()) == 300 and old.record(0)["source"] == "synthetic:0"
    files = read_manifest(directory)["files"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [MANIFEST_NAME] + [f["name"] for f in files.values() if f]
    )
    index.save(directory)  # the next save succeeds and replaces it
    assert len(VectorIndex.load(directory)) == 598


def test_a_save_killed_while_writing_data_leaves_the_old_index(tmp_path, vectors, monkeypatch):
    directory = tmp_path / "idx"
    filled(vectors[:100]).save(directory)
    index = filled(vectors)
    calls = []
    real_write = persist._write_file

    def write_then_die(path, data):
        calls.append(path)
        if len(calls) == 2:
            real_write(path, data[: len(data) // 2])
            raise KeyboardInterrupt("killed mid-write")
        real_write(path, data)

    monkeypatch.setattr(persist, "_write_file", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        index.save(directory)
    monkeypatch.undo()
    assert len(VectorIndex.load(directory)) == 100


def test_a_failure_after_the_rename_keeps_the_new_index(tmp_path, vectors, monkeypatch):
    directory = tmp_path / "idx"
    filled(vectors[:100]).save(directory)

    def fail(path):
        raise OSError("fsync of the directory failed")

    monkeypatch.setattr(persist, "fsync_dir", fail)
    with pytest.raises(OSError, match="fsync"):
        filled(vectors).save(directory)
    monkeypatch.undo()
    assert len(VectorIndex.load(directory)) == len(vectors)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _data_file(directory, key):
    return directory / read_manifest(directory)["files"][key]["name"]


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda d: _truncate(_data_file(d, "vectors")), "truncated"),
        (lambda d: _flip_byte(_data_file(d, "vectors")), "SHA-256"),
        (lambda d: _truncate(_data_file(d, "items")), "truncated"),
        (lambda d: _truncate(_data_file(d, "thumbnails")), "truncated"),
        (lambda d: _data_file(d, "vectors").unlink(), "missing"),
        (lambda d: _truncate(d / MANIFEST_NAME), "not valid JSON"),
        (lambda d: (d / MANIFEST_NAME).write_text('{"format": "other"}'), "not a search-index"),
        (lambda d: (d / MANIFEST_NAME).unlink(), "index.json is missing"),
    ],
)
def test_corrupt_or_truncated_files_give_a_clear_error(tmp_path, vectors, damage, match):
    directory = tmp_path / "idx"
    filled(vectors).save(directory)
    damage(directory)
    with pytest.raises(IndexFormatError, match=match):
        VectorIndex.load(directory)


def _rewrite(directory, key, content: bytes) -> None:
    """Replace a data file and make the manifest agree (so only the parser can object)."""
    path = _data_file(directory, key)
    path.write_bytes(content)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["files"][key] = persist._describe(path)
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "key,content,match",
    [
        ("vectors", b"\x00" * 100, "not a readable FAISS index"),
        ("items", b'{"id": 0}\n{"id": 1', "line 2 is not an item record"),
        ("thumbnails", b"garbage", "not a readable thumbnail array"),
    ],
)
def test_foreign_contents_give_a_clear_error(tmp_path, vectors, key, content, match):
    directory = tmp_path / "idx"
    filled(vectors).save(directory)
    _rewrite(directory, key, content)
    with pytest.raises(IndexFormatError, match=match):
        VectorIndex.load(directory)


def test_unknown_format_version_is_refused(tmp_path, vectors):
    directory = tmp_path / "idx"
    filled(vectors).save(directory)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["format_version"] = 99
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="version 99"):
        VectorIndex.load(directory)


def test_save_refuses_a_foreign_directory(tmp_path, vectors):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SearchIndexError, match="non-empty directory"):
        filled(vectors).save(tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_concurrent_search_during_adds_from_four_threads(kind, make_vectors):
    vectors = make_vectors(2200, seed=1)
    index = VectorIndex(vectors.shape[1], kind)
    index.add(vectors[:200])
    added = set(range(200))
    added_lock = threading.Lock()
    errors: list[BaseException] = []
    seen: list[np.ndarray] = []
    stop = threading.Event()

    def adder(part: int) -> None:
        try:
            for start in range(200 + part * 1000, 200 + (part + 1) * 1000, 100):
                ids = np.arange(start, start + 100)
                with added_lock:
                    added.update(ids.tolist())  # announced before they can be found
                index.add(vectors[start : start + 100], ids=ids)
        except BaseException as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                results = index.search(vectors[rng.integers(0, 2200, 8)], k=10)
                assert results.ids.shape == (8, 10)
                seen.append(results.ids.copy())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=adder, args=(p,)) for p in range(2)]
    threads += [threading.Thread(target=searcher, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join(timeout=60)
    stop.set()
    for t in threads[2:]:
        t.join(timeout=60)
    assert not errors, errors
    assert len(index) == 2200 and len(seen) > 0
    found = np.concatenate(seen).ravel()
    assert set(found[found >= 0].tolist()) <= added
    if kind == "flat":
        assert (found >= 0).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf-pq"])
def test_search_works_after_faiss_torch_utils_is_imported(kind, make_vectors):
    """pytorch-metric-learning imports faiss.contrib.torch_utils, which replaces
    Index.search with a wrapper that has no ``params``; searching must still work."""
    import faiss.contrib.torch_utils  # noqa: F401

    data = make_vectors(600)
    index = VectorIndex(data.shape[1], kind)
    index.add(data, [{"source": f"s{i}"} for i in range(len(data))])
    result = index.search(data[:3], 5)
    assert [row[0] for row in result.ids.tolist()] == [0, 1, 2]
