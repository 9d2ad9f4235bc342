"""``eat index …``: build, add to, remove from, search and describe an index."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

from eat_models.cli import add_dataclass_arguments, dataclass_from_args

from .params import KIND_CHOICES, IndexParams

INVERT_CHOICES = {"auto": None, "on": True, "off": False}
LOCATION_HELP = "index directory (FAISS), Milvus Lite file (*.db) or Milvus server URI"


def _reports_errors(command):
    """Print known user errors as one line on stderr and exit 2, instead of a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from .errors import SearchIndexError

        try:
            return command(args)
        except (SearchIndexError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


def _set_threads(threads: int) -> None:
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def _print_report(report, out: Path | None = None) -> None:
    for failure in report.failures:
        print(f"skipped: {failure.error}", file=sys.stderr)
    where = f" to {out}" if out else ""
    print(
        f"indexed {report.added} images{where} in {report.seconds:.1f} s"
        + (f"; {len(report.failures)} could not be decoded" if report.failures else "")
    )


@_reports_errors
def _cmd_build(args: argparse.Namespace) -> int:
    from eat_models import distributed, load_model

    from .build import build_index
    from .images import parse_source
    from .persist import MANIFEST_NAME

    _set_threads(args.threads)
    ctx = distributed.context()  # under torchrun: embedding sharded over the ranks
    if _backend(args) == "milvus":
        return _build_milvus(args, ctx)
    out = Path(args.out)
    if ctx.is_main and (out / MANIFEST_NAME).exists() and not args.overwrite:
        print(
            f"error: {out} already holds an index; pass --overwrite to replace it", file=sys.stderr
        )
        return 2
    model = load_model(args.model)
    source = parse_source(args.source, args.data_dir)
    if args.limit is not None:
        source = _first_rows(source, args.limit)
    index, report = build_index(
        model,
        source,
        kind=args.kind,
        params=dataclass_from_args(IndexParams, args),
        thumbnails=args.thumbnails,
        thumbnail_size=args.thumbnail_size,
        invert=INVERT_CHOICES[args.invert],
        batch_size=args.batch_size,
        progress=not args.quiet,
        ctx=ctx,
    )
    if ctx.is_main:  # every rank holds the merged index; rank 0 alone writes it
        index.save(out)
        _print_report(report, out)
        print(f"kind {index.kind}, {len(index)} items, dim {index.dim}, model {index.fingerprint}")
        if ctx.distributed:
            print(f"embedded by {ctx.world_size} ranks")
    distributed.barrier(ctx)
    return 0


def _backend(args: argparse.Namespace) -> str:
    from .milvus import is_milvus_location

    if args.backend != "auto":
        return args.backend
    return "milvus" if is_milvus_location(args.out) else "faiss"


#: ``--kind`` for the Milvus backend: FAISS's names mapped to Milvus index types
MILVUS_KIND_OF = {"auto": "auto", "flat": "FLAT", "hnsw": "HNSW", "ivf-pq": "IVF_FLAT"}


def _build_milvus(args: argparse.Namespace, ctx) -> int:
    """``eat index build`` into Milvus; under torchrun every rank embeds its share of the
    source and rank 0 alone writes the merged result."""
    from eat_models import distributed, load_model

    from .build import BuildReport, embed_source, model_description
    from .errors import SearchIndexError
    from .images import parse_source, thumbnail_size_for
    from .milvus import MilvusIndex

    model = load_model(args.model)
    meta = model.meta
    source = parse_source(args.source, args.data_dir)
    if args.limit is not None:
        source = _first_rows(source, args.limit)
    size = args.thumbnail_size or thumbnail_size_for(meta)
    started = time.perf_counter()
    embedded = embed_source(
        model,
        source,
        batch_size=args.batch_size,
        thumbnail_size=size if args.thumbnails else None,
        invert=INVERT_CHOICES[args.invert],
        progress=not args.quiet,
        ctx=ctx,
    )
    if ctx.is_main:
        if len(source) and not len(embedded.vectors):
            first = "; ".join(f.error for f in embedded.failures[:3])
            raise SearchIndexError(f"none of the {len(source)} images could be decoded: {first}")
        index = MilvusIndex.create(
            args.out,
            int(meta["embedding_dim"]),
            collection=args.collection,
            kind=MILVUS_KIND_OF[args.kind],
            fingerprint=meta.get("fingerprint"),
            model=model_description(meta),
            preprocess={"invert": INVERT_CHOICES[args.invert]},
            expected_size=len(source),
            thumbnail_shape=(size, size, int(meta["channels"])) if args.thumbnails else None,
            overwrite=args.overwrite,
        )
        ids = index.add(embedded.vectors, embedded.records, thumbnails=embedded.thumbnails)
        index.save()
        _print_report(BuildReport(ids, embedded.failures, time.perf_counter() - started))
        print(
            f"Milvus collection {args.collection!r} at {args.out}, kind {index.kind}, "
            f"{len(index)} items, dim {index.dim}, model {index.fingerprint}"
        )
    distributed.barrier(ctx)
    return 0


def _first_rows(source, limit: int):
    """The first ``limit`` items of a source (a quick look at a big one)."""
    from .images import DatasetSource, FileSource

    if isinstance(source, DatasetSource):
        rows = list(range(min(limit, len(source))))
        return DatasetSource(source.dataset.subset(rows))
    if isinstance(source, FileSource):
        labels = source.labels[:limit] if source.labels is not None else None
        return FileSource(source.paths[:limit], labels, source.class_names, source.name)
    return source


def _open(location: str, collection: str | None = None, verify: bool = True):
    """The index at ``location``: a FAISS directory, a Milvus Lite ``*.db`` or a server URI."""
    from .search import load_index

    return load_index(location, verify=verify, collection=collection)


def _load_with_model(directory: str, model_path: str | None, collection: str | None = None):
    """The index and its model (``model_path``, or the path the index records), checked."""
    from eat_models import load_model

    from .build import check_model

    index = _open(directory, collection)
    path = model_path or index.model.get("path")
    if not path:
        raise FileNotFoundError(f"{directory} does not record its model's path; pass --model")
    model = load_model(path)
    check_model(index, model)
    return index, model


@_reports_errors
def _cmd_add(args: argparse.Namespace) -> int:
    from .build import add_images
    from .images import parse_source

    _set_threads(args.threads)
    index, model = _load_with_model(args.index, args.model, args.collection)
    report = add_images(
        index,
        model,
        parse_source(args.source, args.data_dir),
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    index.save(args.index)
    _print_report(report, Path(args.index))
    return 0


@_reports_errors
def _cmd_remove(args: argparse.Namespace) -> int:
    index = _open(args.index, args.collection)
    removed = index.remove(args.ids, missing_ok=args.missing_ok)
    index.save(args.index)
    print(f"removed {removed} items; {len(index)} left")
    return 0


@_reports_errors
def _cmd_search(args: argparse.Namespace) -> int:
    from .errors import ImageDecodeError
    from .images import open_image
    from .search import FROM_INDEX, search_images

    _set_threads(args.threads)
    index, model = _load_with_model(args.index, args.model, args.collection)
    queries, names, failed = [], [], 0
    for name in args.images:
        try:
            queries.append(open_image(name))
            names.append(name)
        except ImageDecodeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    if queries:
        invert = INVERT_CHOICES[args.invert] if args.invert else FROM_INDEX
        results = search_images(
            index,
            model,
            queries,
            args.k,
            invert=invert,
            ef_search=args.ef_search,
            nprobe=args.nprobe,
        )
        if args.json:
            rows = [
                {"query": name, "hits": [vars(hit) for hit in hits]}
                for name, hits in zip(names, results.hits, strict=True)
            ]
            print(json.dumps(rows, indent=2))
        else:
            for name, hits in zip(names, results.hits, strict=True):
                print(_results_table(name, hits))
    return 1 if failed else 0


def _results_table(query: str, hits) -> str:
    lines = [f"query: {query}", f"{'rank':>4}  {'id':>8}  {'score':>7}  {'class':<14}  source"]
    for rank, hit in enumerate(hits, 1):
        class_name = hit.record.get("class_name") or "–"
        source = hit.record.get("source", "")
        lines.append(f"{rank:>4}  {hit.id:>8}  {hit.score:>7.4f}  {class_name:<14}  {source}")
    return "\n".join(lines) + "\n"


@_reports_errors
def _cmd_info(args: argparse.Namespace) -> int:
    from .persist import read_manifest

    index = _open(args.index, args.collection, verify=not args.no_verify)
    info = index.info()
    milvus = info.get("backend") == "milvus"
    if not milvus:
        files = read_manifest(args.index)["files"]
        info["files"] = {k: v for k, v in files.items() if v}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if milvus:
        model = info["model"]
        for key, value in (
            ("index", f"{args.index} (Milvus collection {info['collection']!r})"),
            ("kind", info["kind"]),
            ("metric", "inner product on L2-normalised vectors (cosine)"),
            ("items", info["count"]),
            ("dim", info["dim"]),
            ("model", f"{model.get('path', '?')} (fingerprint {info['fingerprint']})"),
            ("preprocess", f"invert={_invert_name(info['preprocess'].get('invert'))}"),
            ("thumbnails", info["thumbnail_shape"] or "none"),
            ("created", info["created"]),
            ("updated", info["updated"]),
        ):
            print(f"{key:<11} {value}")
        return 0
    model = info["model"]
    params = info["params"]
    knobs = {
        "flat": {},
        "hnsw": {k: params[k] for k in ("hnsw_m", "ef_construction", "ef_search")},
        "ivf-pq": {k: params[k] for k in ("nlist", "nprobe", "pq_m", "refine_k_factor")},
    }[info["kind"]]
    rows = [
        ("index", args.index),
        (
            "kind",
            info["kind"]
            + (f" ({', '.join(f'{k}={v}' for k, v in knobs.items())})" if knobs else ""),
        ),
        ("metric", f"{info['metric']} on L2-normalised vectors (cosine)"),
        ("items", info["count"]),
        ("dim", info["dim"]),
        ("model", f"{model.get('path', '?')} (fingerprint {info['fingerprint']})"),
        (
            "model kind",
            f"{model.get('kind', '?')}, {model.get('num_members', '?')} member(s), "
            f"{model.get('defense', '?')}, dataset {model.get('dataset', '?')}",
        ),
        ("preprocess", f"invert={_invert_name(info['preprocess'].get('invert'))}"),
        ("thumbnails", info["thumbnail_shape"] or "none"),
        ("created", info["created"]),
        ("updated", info["updated"]),
        ("files", ", ".join(f"{v['name']} ({v['bytes']:,} B)" for v in info["files"].values())),
    ]
    for key, value in rows:
        print(f"{key:<11} {value}")
    return 0


def _invert_name(invert: bool | None) -> str:
    return next(name for name, value in INVERT_CHOICES.items() if value is invert)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``index`` (with ``build``, ``add``, ``remove``, ``search``, ``info``; the
    ``benchmarks`` package adds ``bench``)."""

    parser = sub.add_parser(
        "index",
        help="build and search an index of a model's embeddings (FAISS or Milvus)",
        description="An index of a gallery's embeddings (the ensemble's averaged embedding), "
        "with metadata and thumbnails: FAISS, saved atomically to one directory, or Milvus "
        "(a Milvus Lite '.db' file or a server URI) when a gallery outgrows one machine.",
    )
    commands = parser.add_subparsers(dest="index_command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "build",
        help="embed a gallery with a model and save an index",
        description="Embed every image of SOURCE with the model and save the index to DIR.",
    )
    p.add_argument("--model", required=True, help="checkpoint directory (single model or ensemble)")
    p.add_argument(
        "--source",
        required=True,
        help="'fashion-mnist:test', 'fashion-mnist:train', or an image folder root/class/*.jpg",
    )
    p.add_argument(
        "--out",
        required=True,
        help="where the index goes: a directory (FAISS), a Milvus Lite file 'NAME.db' or a "
        "Milvus server URI 'http://host:19530'",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "faiss", "milvus"),
        default="auto",
        help="auto: Milvus for a '.db' file or a URI, FAISS for a directory (default: %(default)s)",
    )
    _add_collection(p)
    p.add_argument(
        "--kind",
        default="auto",
        choices=KIND_CHOICES,
        help="index kind; auto = exact flat up to 1M items, ivf-pq above (default: "
        "%(default)s). With Milvus: flat → FLAT, hnsw → HNSW, ivf-pq → IVF_FLAT, and auto = "
        "FLAT below 50k items, HNSW below 2M, IVF_FLAT above",
    )
    add_dataclass_arguments(p, IndexParams)
    p.add_argument(
        "--thumbnails",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep a small thumbnail per item (default: %(default)s)",
    )
    p.add_argument(
        "--thumbnail-size",
        type=int,
        default=None,
        help="thumbnail side in pixels (default: the model's input size, at most 64)",
    )
    _add_invert(p)
    p.add_argument("--limit", type=int, default=None, help="index only the first N items")
    p.add_argument("--data-dir", default=None, help="where the Fashion-MNIST IDX files are")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an index already in --out (a Milvus collection of that name is dropped)",
    )
    _add_common(p)
    p.set_defaults(func=_cmd_build)

    p = commands.add_parser(
        "add",
        help="add a source's images to an index",
        description="Embed SOURCE with the index's model and add it (ids continue).",
    )
    p.add_argument("index", help=LOCATION_HELP)
    _add_collection(p)
    p.add_argument(
        "--source", required=True, help="an image folder, an image file, or fashion-mnist:SPLIT"
    )
    p.add_argument(
        "--model", default=None, help="checkpoint directory (default: the index's model)"
    )
    p.add_argument("--data-dir", default=None, help="where the Fashion-MNIST IDX files are")
    _add_common(p)
    p.set_defaults(func=_cmd_add)

    p = commands.add_parser("remove", help="remove items by id", description="Remove items by id.")
    p.add_argument("index", help=LOCATION_HELP)
    _add_collection(p)
    p.add_argument("ids", nargs="+", type=int, help="item ids to remove")
    p.add_argument("--missing-ok", action="store_true", help="ignore ids the index does not hold")
    p.set_defaults(func=_cmd_remove)

    p = commands.add_parser(
        "search",
        help="top-k gallery items for query images",
        description="Embed each IMAGE with the index's model (same preprocessing as the "
        "build) and print its top-k items. Images that fail to decode are reported and "
        "skipped (exit status 1).",
    )
    p.add_argument("index", help=LOCATION_HELP)
    _add_collection(p)
    p.add_argument("images", nargs="+", help="query image files")
    p.add_argument("--k", type=int, default=10, help="results per query (default: %(default)s)")
    p.add_argument(
        "--model", default=None, help="checkpoint directory (default: the index's model)"
    )
    p.add_argument("--ef-search", type=int, default=None, help="hnsw: override efSearch")
    p.add_argument("--nprobe", type=int, default=None, help="ivf-pq: override nprobe")
    p.add_argument(
        "--invert",
        choices=tuple(INVERT_CHOICES),
        default=None,
        help="override the inversion setting stored in the index (default: the index's)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default: %(default)s: a few query images gain nothing from more, "
        "and on a busy machine a second thread only waits)",
    )
    p.set_defaults(func=_cmd_search)

    p = commands.add_parser(
        "info", help="describe an index", description="Validate an index and print its header."
    )
    p.add_argument("index", help=LOCATION_HELP)
    _add_collection(p)
    p.add_argument("--json", action="store_true", help="print the manifest and counts as JSON")
    p.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of data files")
    p.set_defaults(func=_cmd_info)


def _add_collection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collection",
        default="gallery",
        help="Milvus only: the collection holding the index (default: %(default)s)",
    )


def _add_invert(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--invert",
        choices=tuple(INVERT_CHOICES),
        default="auto",
        help="invert light-background photos for greyscale <=32 px models: auto (by border "
        "brightness), on, off (default: %(default)s)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--batch-size", type=int, default=256, help="images per forward pass (default: %(default)s)"
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
