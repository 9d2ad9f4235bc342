"""Benchmark of the index kinds against plain brute force, on this machine.

Data sets: the Fashion-MNIST test set (10k) embedded by a model (``--model`` is required:
nothing is trained here; queries are 1,000 training images), and synthetic 128-d unit
vectors (100k and 1M; ``--quick`` skips 1M) drawn from 1,000 clusters, each spanning a
random 16-d subspace plus isotropic noise (fixed seed; queries are fresh draws).

For each set and method — ``flat``, ``hnsw``, ``ivf-pq`` (through :class:`VectorIndex`,
the code path the app uses), numpy ``matmul + argpartition`` and scikit-learn
``NearestNeighbors(algorithm="brute")`` on the normalised vectors — it measures build
time, index bytes (``faiss.serialize_index`` size, or the arrays' bytes), the RSS growth
during the build, query latency (median and p95; one query, and batches of 100) and
recall@10 against ``flat``; ratios are to ``flat``. It also sweeps the search knobs
(efSearch, nprobe × refine factor) of the approximate kinds.

Run: ``python -m benchmarks.index_bench --model CKPT [--quick]`` or ``eat index bench …``. Writes
``results/index/bench.json`` and ``bench.md`` with command, commit, date and wall time.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from eat_models.files import write_json

from . import command_parser
from .timing import percentile_ms

log = logging.getLogger(__name__)

K = 10
DIM = 128
SYNTH_CLUSTERS = 1000
SYNTH_LATENT = 16
SYNTH_LATENT_SCALE = 0.25
SYNTH_NOISE = 0.05
SEED = 0
SINGLE_QUERIES = 200
BATCH = 100
BATCHES = 5
SLOW_BUDGET_S = 15.0  # per latency measurement of a slow method: stop early after this
EF_SEARCH_SWEEP = (16, 32, 64, 128, 256, 512)
NPROBE_SWEEP = (8, 16, 32, 64)
K_FACTOR_SWEEP = (2, 4, 8, 16)
RECALL_TARGET = 0.95
SPEEDUP_TARGET = 10.0
FLAT_10K_TARGET_MS = 1.0


# --------------------------------------------------------------------------- data


def synthetic_vectors(
    n: int, seed: int = SEED, n_queries: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` gallery and ``n_queries`` query unit vectors, 128-d, clustered (fixed seed)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((SYNTH_CLUSTERS, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    bases = rng.standard_normal((SYNTH_CLUSTERS, DIM, SYNTH_LATENT)).astype(np.float32)
    bases /= np.sqrt(DIM)
    total = n + n_queries
    cluster = rng.integers(0, SYNTH_CLUSTERS, size=total)
    out = np.empty((total, DIM), dtype=np.float32)
    for c in range(SYNTH_CLUSTERS):
        rows = np.flatnonzero(cluster == c)
        z = rng.standard_normal((len(rows), SYNTH_LATENT)).astype(np.float32)
        noise = rng.standard_normal((len(rows), DIM)).astype(np.float32)
        out[rows] = centers[c] + SYNTH_LATENT_SCALE * z @ bases[c].T + SYNTH_NOISE * noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out[:n], out[n:]


def fashion_mnist_vectors(model_dir: str, n_queries: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Test-set embeddings (gallery) and ``n_queries`` training-image embeddings (queries)."""
    from eat_models import load_model
    from eat_models.data import load_fashion_mnist
    from eat_models.evaluate import embed

    model = load_model(model_dir)
    train, test = load_fashion_mnist("standard")
    gallery = embed(model, test, batch_size=512)
    rows = np.random.default_rng(SEED).choice(len(train), size=n_queries, replace=False)
    queries = embed(model, train.subset(np.sort(rows)), batch_size=512)
    return gallery, queries, {"model": model_dir, "fingerprint": model.meta["fingerprint"]}


# --------------------------------------------------------------------------- timing


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _percentiles(times_s: list[float]) -> dict:
    return {
        "median": round(percentile_ms(times_s, 50), 4),
        "p95": round(percentile_ms(times_s, 95), 4),
        "n": len(times_s),
    }


def time_calls(fn: Callable, inputs: list, budget_s: float | None = None, warmup: int = 3) -> dict:
    """Median and p95 latency of ``fn(x)`` over ``inputs`` (stops after ``budget_s``)."""
    for x in inputs[:warmup]:
        fn(x)
    times = []
    started = time.perf_counter()
    for x in inputs:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
        if budget_s is not None and len(times) >= 20 and time.perf_counter() - started > budget_s:
            break
    return _percentiles(times)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k found, per query."""
    hits = [
        len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return round(float(np.mean(hits)) / truth.shape[1], 4)


# --------------------------------------------------------------------------- methods


def numpy_topk(gallery: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Brute force: inner products by matmul, top-k by argpartition, then sorted."""
    scores = queries @ gallery.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _measure_method(name, build, search, queries, batches, truth, slow, index_bytes) -> dict:
    gc.collect()
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    handle = build()
    build_s = time.perf_counter() - t0
    rss_delta = _rss_bytes() - rss0
    found = search(handle, queries)
    budget = SLOW_BUDGET_S if slow else None
    with threadpool_limits(limits=1):  # every method answers single queries on one thread
        single = time_calls(lambda q: search(handle, q[None, :]), list(queries), budget)
    batch = time_calls(lambda b: search(handle, b), batches, budget, warmup=1)
    row = {
        "method": name,
        "build_s": round(build_s, 3),
        "index_bytes": int(index_bytes(handle)),
        "rss_delta_bytes": int(rss_delta),
        "single_ms": single,
        "batch100_ms": batch,
        "recall@10": recall_at_k(found, truth) if truth is not None else 1.0,
    }
    return row, handle, found


def bench_dataset(name: str, gallery: np.ndarray, queries: np.ndarray, extra: dict) -> dict:
    """Every method on one data set, with ratios to flat and knob sweeps."""
    import faiss
    from sklearn.neighbors import NearestNeighbors

    from index.kinds import IndexParams
    from index.store import VectorIndex

    n = len(gallery)
    log.info("%s: %d vectors of dim %d, %d queries", name, n, gallery.shape[1], len(queries))
    single_q = queries[:SINGLE_QUERIES]
    batches = [queries[i * BATCH : (i + 1) * BATCH] for i in range(BATCHES)]
    batches = [b for b in batches if len(b) == BATCH] or [queries]

    def faiss_bytes(index: VectorIndex) -> int:
        return len(faiss.serialize_index(index._index))

    def build_faiss(kind: str) -> Callable[[], VectorIndex]:
        def build() -> VectorIndex:
            index = VectorIndex(gallery.shape[1], kind, params=IndexParams())
            index.add(gallery)
            return index

        return build

    def faiss_search(index: VectorIndex, q: np.ndarray, **knobs) -> np.ndarray:
        return index.search(q, K, **knobs).ids

    rows, sweeps = [], {}
    flat_row, flat_index, truth = _measure_method(
        "flat",
        build_faiss("flat"),
        faiss_search,
        single_q,
        batches,
        None,
        slow=n > 200_000,
        index_bytes=faiss_bytes,
    )
    rows.append(flat_row)
    del flat_index
    for kind in ("hnsw", "ivf-pq"):
        row, index, _ = _measure_method(
            kind,
            build_faiss(kind),
            faiss_search,
            single_q,
            batches,
            truth,
            slow=False,
            index_bytes=faiss_bytes,
        )
        row["params"] = {
            k: v
            for k, v in index.params.to_dict().items()
            if k
            in (
                ("hnsw_m", "ef_construction", "ef_search")
                if kind == "hnsw"
                else ("nlist", "nprobe", "pq_m", "refine_k_factor")
            )
        }
        rows.append(row)
        sweeps[kind] = _sweep(index, kind, single_q, truth)
        del index
        gc.collect()

    def numpy_build() -> np.ndarray:
        return np.ascontiguousarray(gallery, dtype=np.float32).copy()

    row, _, _ = _measure_method(
        "numpy matmul+argpartition",
        numpy_build,
        numpy_topk,
        single_q,
        batches,
        truth,
        slow=n > 200_000,
        index_bytes=lambda g: g.nbytes,
    )
    rows.append(row)

    def sklearn_build() -> NearestNeighbors:
        return NearestNeighbors(n_neighbors=K, algorithm="brute", metric="euclidean").fit(gallery)

    def sklearn_search(nn: NearestNeighbors, q: np.ndarray) -> np.ndarray:
        return nn.kneighbors(q, K, return_distance=False)

    row, _, _ = _measure_method(
        "sklearn NearestNeighbors (brute)",
        sklearn_build,
        sklearn_search,
        single_q,
        batches,
        truth,
        slow=n > 50_000,
        index_bytes=lambda nn: nn._fit_X.nbytes,
    )
    rows.append(row)
    gc.collect()

    for row in rows:
        row["speedup_single_vs_flat"] = round(
            flat_row["single_ms"]["median"] / row["single_ms"]["median"], 2
        )
        row["speedup_batch_vs_flat"] = round(
            flat_row["batch100_ms"]["median"] / row["batch100_ms"]["median"], 2
        )
        row["memory_vs_flat"] = round(row["index_bytes"] / flat_row["index_bytes"], 3)
        row["build_vs_flat"] = round(row["build_s"] / max(flat_row["build_s"], 1e-9), 1)
    return {
        "name": name,
        "n": n,
        "dim": int(gallery.shape[1]),
        "queries_single": len(single_q),
        "queries_batch": f"{len(batches)} x {len(batches[0])}",
        **extra,
        "methods": rows,
        "sweeps": sweeps,
    }


def _sweep(index, kind: str, queries: np.ndarray, truth: np.ndarray) -> list[dict]:
    settings = (
        [{"ef_search": ef} for ef in EF_SEARCH_SWEEP]
        if kind == "hnsw"
        else [{"nprobe": p, "refine_k_factor": f} for p in NPROBE_SWEEP for f in K_FACTOR_SWEEP]
    )
    out = []
    for knobs in settings:
        found = index.search(queries, K, **knobs).ids
        with threadpool_limits(limits=1):
            lat = time_calls(lambda q, kn=knobs: index.search(q[None, :], K, **kn), list(queries))
        out.append({**knobs, "recall@10": recall_at_k(found, truth), "single_ms": lat})
    return out


def best_setting(sweep: list[dict]) -> dict | None:
    """The fastest setting of a sweep with recall@10 >= the target."""
    ok = [s for s in sweep if s["recall@10"] >= RECALL_TARGET]
    return min(ok, key=lambda s: s["single_ms"]["median"]) if ok else None


# --------------------------------------------------------------------------- report


def _fmt_ms(x: dict) -> str:
    return f"{x['median']:.3f} / {x['p95']:.3f}"


def _fmt_bytes(b: int) -> str:
    return f"{b / 2**20:,.1f} MiB"


def targets(results: dict) -> list[dict]:
    """Each performance target, its measured value and whether it holds."""
    out = []
    by_name = {d["name"]: d for d in results["datasets"]}
    fm = next((d for d in results["datasets"] if d["name"].startswith("fashion-mnist")), None)
    if fm:
        flat = fm["methods"][0]["single_ms"]["median"]
        out.append(
            {
                "target": f"10k flat, single query median < {FLAT_10K_TARGET_MS} ms (in process)",
                "measured": f"{flat:.3f} ms",
                "met": flat < FLAT_10K_TARGET_MS,
            }
        )
        for threads, timing in fm.get("end_to_end_single_ms", {}).items():
            e2e = timing["median"]
            out.append(
                {
                    "target": "10k search by image end to end (preprocess + model + flat) "
                    f"< 20 ms, torch on {threads} thread(s)",
                    "measured": f"{e2e:.2f} ms",
                    "met": e2e < 20.0,
                }
            )
    big = by_name.get("synthetic-1M") or by_name.get("synthetic-100k")
    if big:
        flat = big["methods"][0]["single_ms"]["median"]
        for kind in ("hnsw", "ivf-pq"):
            best = best_setting(big["sweeps"][kind])
            if best is None:
                measured, met = "no setting reached the recall target", False
            else:
                speedup = flat / best["single_ms"]["median"]
                knobs = ", ".join(
                    f"{k}={v}" for k, v in best.items() if k not in ("recall@10", "single_ms")
                )
                measured = f"recall@10 {best['recall@10']:.3f} at {speedup:.0f}x flat ({knobs})"
                met = speedup >= SPEEDUP_TARGET
            out.append(
                {
                    "target": f"{big['name']}: {kind} recall@10 >= {RECALL_TARGET} at >= "
                    f"{SPEEDUP_TARGET:.0f}x flat speed (single query)",
                    "measured": measured,
                    "met": met,
                }
            )
    return out


def to_markdown(results: dict) -> str:
    prov = results["provenance"]
    lines = [
        "# Search index benchmark",
        "",
        f"- command: `{prov['command']}`",
        f"- commit: `{prov['commit']}`",
        f"- date: {prov['date']}; wall time {results['wall_s']:.0f} s",
        f"- machine: {prov['cpu_count']} CPUs ({prov['machine']}), torch threads "
        f"{prov['torch_threads']}, faiss {results['faiss']}, load average at start/end "
        f"{results['loadavg_start']} / {results['loadavg_end']}",
        "- latency: median / p95 in ms, inside the process, through `VectorIndex.search` for "
        "the faiss kinds; single queries on one thread for every method (as `VectorIndex` "
        "does), batch = 100 queries per call on all threads. Memory: serialized faiss index, or "
        "the arrays' bytes. Recall@10 against flat (exact). Ratios are to flat: speed-up > 1 is "
        "faster, memory < 1 is smaller.",
        f"- synthetic data: {DIM}-d unit vectors, {SYNTH_CLUSTERS} clusters, each a random "
        f"{SYNTH_LATENT}-d subspace (scale {SYNTH_LATENT_SCALE}) plus isotropic noise "
        f"({SYNTH_NOISE}/dim), seed {SEED}; queries are fresh draws.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    for d in results["datasets"]:
        source = f" — model `{d['model']}` ({d['fingerprint']})" if "model" in d else ""
        lines += [
            "",
            f"## {d['name']}: {d['n']:,} vectors, dim {d['dim']}{source}",
            "",
            f"Queries: {d['queries_single']} single, {d['queries_batch']} batched.",
            "",
            "| method | build s | memory | RSS growth | single ms (med / p95) | batch-100 ms "
            "(med / p95) | recall@10 | speed-up single | speed-up batch | memory ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in d["methods"]:
            params = r.get("params")
            name = r["method"] + (
                f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else ""
            )
            lines.append(
                f"| {name} | {r['build_s']:.2f} | {_fmt_bytes(r['index_bytes'])} | "
                f"{_fmt_bytes(r['rss_delta_bytes'])} | {_fmt_ms(r['single_ms'])} | "
                f"{_fmt_ms(r['batch100_ms'])} | {r['recall@10']:.3f} | "
                f"{r['speedup_single_vs_flat']:.1f}x | {r['speedup_batch_vs_flat']:.1f}x | "
                f"{r['memory_vs_flat']:.2f} |"
            )
        for threads, timing in d.get("end_to_end_single_ms", {}).items():
            lines += [
                "",
                "Search by image end to end (PIL image → preprocess → model → flat top-10), "
                f"torch on {threads} thread(s): {_fmt_ms(timing)} ms (median / p95).",
            ]
        flat_ms = d["methods"][0]["single_ms"]["median"]
        for kind, sweep in d["sweeps"].items():
            lines += ["", f"Sweep of {kind} search knobs (single query):", ""]
            knob_names = [k for k in sweep[0] if k not in ("recall@10", "single_ms")]
            lines.append(
                "| " + " | ".join(knob_names) + " | recall@10 | ms (med / p95) | speed-up |"
            )
            lines.append("|" + "---:|" * (len(knob_names) + 3))
            for s in sweep:
                lines.append(
                    "| "
                    + " | ".join(str(s[k]) for k in knob_names)
                    + f" | {s['recall@10']:.3f} | {_fmt_ms(s['single_ms'])} | "
                    f"{flat_ms / s['single_ms']['median']:.0f}x |"
                )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _end_to_end(model_dir: str, threads: int) -> dict:
    """Search-by-image latency on the Fashion-MNIST test index (preprocess + model + flat),
    with torch on ``threads`` threads and on one (what single-image requests should use:
    a second intra-op thread is pure waiting when the cores are busy)."""
    import torch
    from PIL import Image

    from eat_models import load_model
    from eat_models.data import load_fashion_mnist
    from index.build import build_index
    from index.images import DatasetSource
    from index.search import search_images

    model = load_model(model_dir)
    train, test = load_fashion_mnist("standard")
    index, _ = build_index(model, DatasetSource(test), kind="flat")
    images = [Image.fromarray(train.images[i].numpy()) for i in range(SINGLE_QUERIES)]
    out = {}
    for n in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(n)
        out[str(n)] = time_calls(
            lambda img: search_images(index, model, img, K), images, SLOW_BUDGET_S
        )
    torch.set_num_threads(threads)
    return out


def run(model_dir: str, quick: bool, out_dir: Path, threads: int) -> dict:
    import faiss
    import torch

    from eat_models.provenance import provenance

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    stamp = provenance()
    loadavg_start = [round(v, 2) for v in os.getloadavg()]
    n_queries = max(SINGLE_QUERIES, BATCH * BATCHES)
    datasets = []
    gallery, queries, extra = fashion_mnist_vectors(model_dir, n_queries)
    record = bench_dataset("fashion-mnist-test-10k", gallery, queries, extra)
    record["end_to_end_single_ms"] = _end_to_end(model_dir, threads)
    datasets.append(record)
    for n, name in ((100_000, "synthetic-100k"), (1_000_000, "synthetic-1M")):
        if quick and n > 100_000:
            continue
        gallery, queries = synthetic_vectors(n, n_queries=n_queries)
        datasets.append(bench_dataset(name, gallery, queries, {"source": "synthetic"}))
        del gallery, queries
        gc.collect()
    results = {
        "provenance": stamp,
        "faiss": faiss.__version__,
        "quick": quick,
        "loadavg_start": loadavg_start,
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "datasets": datasets,
    }
    results["targets"] = targets(results)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "bench.json", results)
    (out_dir / "bench.md").write_text(to_markdown(results))
    return results


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="checkpoint directory that embeds the Fashion-MNIST test set (nothing is trained)",
    )
    p.add_argument("--quick", action="store_true", help="skip the 1M-vector set")
    p.add_argument(
        "--out-dir",
        default="results/index",
        help="where bench.json and bench.md go (default: %(default)s)",
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")


def run_from_args(args: argparse.Namespace) -> int:
    from eat_models.checkpoint import read_config

    read_config(args.model)  # a clear error before any work if the checkpoint is missing
    results = run(args.model, args.quick, Path(args.out_dir), args.threads)
    print(to_markdown(results))
    print(f"written to {Path(args.out_dir) / 'bench.json'} and bench.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("index_bench", __doc__)
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from eat_models.checkpoint import CheckpointError

    try:
        return run_from_args(args)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
