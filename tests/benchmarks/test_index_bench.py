"""The benchmark's pieces on a small synthetic set (the real run: ``python -m
benchmarks.index_bench``)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import index_bench as bench


def test_synthetic_vectors_are_seeded_unit_vectors():
    gallery, queries = bench.synthetic_vectors(500, n_queries=20)
    again, _ = bench.synthetic_vectors(500, n_queries=20)
    assert gallery.shape == (500, bench.DIM) and queries.shape == (20, bench.DIM)
    np.testing.assert_array_equal(gallery, again)
    np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-5)


def test_numpy_topk_is_sorted_exact_top_k(rng):
    gallery = rng.standard_normal((300, 8)).astype(np.float32)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    got = bench.numpy_topk(gallery, queries, k=4)
    want = np.argsort(-(queries @ gallery.T), axis=1)[:, :4]
    np.testing.assert_array_equal(got, want)


def test_recall_at_k():
    truth = np.array([[1, 2, 3, 4]])
    assert bench.recall_at_k(np.array([[4, 3, 9, -1]]), truth) == 0.5


def test_bench_dataset_and_report(monkeypatch):
    monkeypatch.setattr(bench.gc, "collect", lambda: 0)  # a full collection per method is slow
    monkeypatch.setattr(bench, "SINGLE_QUERIES", 10)
    monkeypatch.setattr(bench, "BATCH", 5)
    monkeypatch.setattr(bench, "BATCHES", 2)
    monkeypatch.setattr(bench, "NPROBE_SWEEP", (4, 32))
    monkeypatch.setattr(bench, "K_FACTOR_SWEEP", (16,))
    gallery, queries = bench.synthetic_vectors(2000, n_queries=10)
    record = bench.bench_dataset("synthetic-100k", gallery, queries, {"source": "synthetic"})
    methods = {row["method"]: row for row in record["methods"]}
    assert list(methods) == [
        "flat",
        "hnsw",
        "ivf-pq",
        "numpy matmul+argpartition",
        "sklearn NearestNeighbors (brute)",
    ]
    assert methods["flat"]["recall@10"] == 1.0
    assert methods["numpy matmul+argpartition"]["recall@10"] == 1.0
    assert methods["sklearn NearestNeighbors (brute)"]["recall@10"] == 1.0
    assert methods["hnsw"]["recall@10"] >= 0.9
    assert methods["flat"]["index_bytes"] >= gallery.nbytes
    assert methods["flat"]["speedup_single_vs_flat"] == 1.0
    assert len(record["sweeps"]["hnsw"]) == len(bench.EF_SEARCH_SWEEP)
    assert len(record["sweeps"]["ivf-pq"]) == 2
    results = {
        "provenance": {
            "command": "bench",
            "commit": "abc",
            "date": "today",
            "cpu_count": 2,
            "machine": "x86_64",
            "torch_threads": 2,
        },
        "faiss": "1.x",
        "loadavg_start": [0, 0, 0],
        "loadavg_end": [0, 0, 0],
        "wall_s": 1.0,
        "datasets": [record],
    }
    results["targets"] = bench.targets(results)
    assert [t["target"].split(":")[0] for t in results["targets"]] == ["synthetic-100k"] * 2
    text = bench.to_markdown(results)
    assert "## synthetic-100k: 2,000 vectors" in text and "Sweep of ivf-pq" in text


def test_the_benchmark_requires_a_model(capsys):
    with pytest.raises(SystemExit):
        bench.main([])
    assert "--model" in capsys.readouterr().err
    assert bench.main(["--model", "/nonexistent/checkpoint"]) == 2
