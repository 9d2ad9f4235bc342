"""``python -m benchmarks.milvus_bench``: the Milvus backend (Milvus Lite, embedded) beside FAISS.

On the same synthetic 128-d unit vectors as ``eat index bench`` (100k and 1M gallery
items, 200 queries), for FAISS ``flat`` and ``hnsw`` (``hnsw`` up to 200k items: its 1M build is in
``results/index/bench.md``) and for
Milvus Lite with the index the backend picks at that size (``HNSW`` from 50k items, as
``--kind auto``) and exact ``FLAT``: build time (insert + index), single-query latency
(median and p95; Milvus includes its local gRPC round trip) and recall@10 against exact
search. Writes ``results/index/milvus.json`` and ``milvus.md`` with the command, commit,
date and load average. A Milvus *server* is not measured here (none can run on this
machine); Lite shares its engine, not its deployment.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from eat_models.files import write_json
from eat_models.provenance import provenance
from index.milvus import MilvusIndex
from index.store import VectorIndex

from . import command_parser
from .index_bench import (
    SINGLE_QUERIES,
    SLOW_BUDGET_S,
    K,
    numpy_topk,
    recall_at_k,
    synthetic_vectors,
    time_calls,
)

DEFAULT_OUT = Path("results/index")
#: FAISS hnsw and Milvus FLAT are measured up to this size (FAISS hnsw's 1M build took 322 s
#: in results/index/bench.md; above it each backend's default index is measured)
HNSW_FAISS_UP_TO = 200_000


def _faiss(kind: str, gallery: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    started = time.perf_counter()
    index = VectorIndex(gallery.shape[1], kind)
    index.add(gallery)
    build = time.perf_counter() - started
    found = index.search(queries, K).ids
    latency = time_calls(lambda q: index.search(q, K), list(queries))
    return {
        "build_s": round(build, 2),
        "latency_ms": latency,
        "recall@10": recall_at_k(found, truth),
    }


def _milvus(kind: str, gallery: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="eat-milvus-bench-"))
    try:
        started = time.perf_counter()
        index = MilvusIndex.create(folder / "bench.db", gallery.shape[1], kind=kind)
        index.add(gallery)
        index.save()
        found = index.search(queries[:1], K)  # the first search waits for the index to load
        build = time.perf_counter() - started
        found = np.concatenate(
            [index.search(queries[i : i + 50], K).ids for i in range(0, len(queries), 50)]
        )
        # at most ~15 s of single queries (at least 20): Lite is slow at a million items
        latency = time_calls(lambda q: index.search(q, K), list(queries), budget_s=SLOW_BUDGET_S)
        index.close()
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        return {
            "build_s": round(build, 2),
            "latency_ms": latency,
            "recall@10": recall_at_k(found, truth),
            "disk_bytes": size,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(sizes: list[int], out_dir: Path) -> dict:
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = {}
    for n in sizes:
        gallery, queries = synthetic_vectors(n, n_queries=SINGLE_QUERIES)
        truth = numpy_topk(gallery, queries, K)
        rows = {"faiss flat": _faiss("flat", gallery, queries, truth)}
        if n <= HNSW_FAISS_UP_TO:  # at 1M its build takes minutes (results/index/bench.md)
            rows["faiss hnsw"] = _faiss("hnsw", gallery, queries, truth)
        milvus_auto = "HNSW" if n >= 50_000 else "FLAT"
        rows[f"milvus-lite {milvus_auto}"] = _milvus(milvus_auto, gallery, queries, truth)
        if milvus_auto != "FLAT" and n <= HNSW_FAISS_UP_TO:  # exact Milvus beside FAISS flat
            rows["milvus-lite FLAT"] = _milvus("FLAT", gallery, queries, truth)
        results[str(n)] = rows
        print(f"{n:,} vectors: " + json.dumps(rows))
        record = {
            **provenance(),
            "load_average_before": [round(x, 2) for x in load_before],
            "wall_s": round(time.perf_counter() - started, 1),
            "dim": 128,
            "queries": SINGLE_QUERIES,
            "k": K,
            "results": results,
        }
        out_dir.mkdir(parents=True, exist_ok=True)  # written after each size
        write_json(out_dir / "milvus.json", record)
        (out_dir / "milvus.md").write_text(to_markdown(record))
    return record


def to_markdown(record: dict) -> str:
    lines = [
        "# Milvus Lite beside FAISS",
        "",
        f"`{record['command']}` at commit `{record['commit']}`, {record['date']}, load average "
        f"before {record['load_average_before'][0]:.2f}, {record['wall_s']:.0f} s. Synthetic "
        f"{record['dim']}-d unit vectors; {record['queries']} single queries, top-{record['k']}; "
        "recall against exact search. Milvus latency includes its local gRPC round trip "
        "(timed over at most ~15 s of queries, at least 20).",
        "",
        "| vectors | backend / index | build (insert + index) | query p50 | query p95 | "
        "recall@10 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n, rows in record["results"].items():
        for name, r in rows.items():
            lines.append(
                f"| {int(n):,} | {name} | {r['build_s']:.1f} s | {r['latency_ms']['median']:.2f} "
                f"ms | {r['latency_ms']['p95']:.2f} ms | {r['recall@10']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("milvus_bench", __doc__)
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=[100_000, 1_000_000],
        help="gallery sizes (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="results folder (default: %(default)s)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    args = parser.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    record = run(args.sizes, Path(args.out))
    print(to_markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
