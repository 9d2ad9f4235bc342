"""``eat app`` / ``python -m app``: load the models and gallery, then serve the web UI.

Safe defaults: bound to 127.0.0.1, no share link, no analytics, monitoring off, uploads
capped (file size, file count, pixels: :mod:`app.services.uploads`), attack and clustering events
one at a time with a bounded queue, errors shown only as readable messages, the private
cache and model folders blocked from being served. UMAP is warmed in a background thread
after the server is up, so the first page is served without waiting for it.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("eat.app")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "assets" / "models"
QUEUE_SIZE = 64


def _quiet_environment() -> None:
    """No analytics, telemetry or downloads; numba's JIT cache in the user cache."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Gradio's queue rebuilds a pandas table of its last 10,000 events after every event,
    # for a monitoring page this app does not serve: about 5 ms per search at first, and
    # growing with the events kept. Summarise never, and keep only a few events.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(10**9))
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "256")
    from eat_models.files import user_cache_dir

    os.environ.setdefault("NUMBA_CACHE_DIR", str(user_cache_dir("numba")))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``eat app`` (each default in one place, shown in ``--help``)."""
    from .defaults import DEFAULT_GALLERY, DEFAULT_MAP_POINTS

    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to bind; keep 127.0.0.1 unless you mean to expose the app "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a Host header the server answers (repeatable; '*' for any). Requests naming "
        "another host get 400, which closes DNS rebinding (default: localhost, 127.0.0.1, "
        "::1 and --host)",
    )
    parser.add_argument(
        "--models",
        default=str(DEFAULT_MODELS_DIR),
        help="folder holding the checkpoints vanilla/ and eat/ written by 'eat train' "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--gallery",
        default=DEFAULT_GALLERY,
        help="gallery to search: 'fashion-mnist:test', 'fashion-mnist:train' or an image "
        "folder root/class_name/*.jpg (default: %(default)s)",
    )
    parser.add_argument(
        "--index",
        action="append",
        default=None,
        metavar="LOCATION",
        help="serve the gallery of an index built by 'eat index build' instead of --gallery: "
        "a FAISS index folder, a Milvus Lite file (*.db) or a Milvus server URI "
        "(http://host:19530); repeatable, one per model. Each index serves the model whose "
        "fingerprint built it (another model's index is refused); the other models get "
        "indexes of the same items. Items added to the index later appear after a restart",
    )
    parser.add_argument(
        "--collection",
        default=None,
        help="with --index on Milvus: the collection (default: the one 'eat index build' "
        "names by default)",
    )
    parser.add_argument(
        "--gallery-size",
        type=int,
        default=None,
        help="use a class-balanced subset of this many gallery images (default: all)",
    )
    parser.add_argument(
        "--map-points",
        type=int,
        default=DEFAULT_MAP_POINTS,
        help="gallery points on the UMAP maps (fitting time grows with it) (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where indexes and maps are cached (default: ~/.cache/eat/app)",
    )
    parser.add_argument(
        "--results-dir",
        default=None,
        help="benchmark results shown in the report tab (default: results/fashion-mnist)",
    )
    parser.add_argument(
        "--no-umap",
        action="store_true",
        help="skip the UMAP warm-up: maps stay PCA (or cached UMAP) and new points are "
        "placed by nearest neighbours",
    )
    parser.add_argument(
        "--write-maps",
        action="store_true",
        help="compute each model's gallery UMAP map now, store it beside the models "
        "(MODELS/maps/, .npy arrays) and exit: a later start with the same models, gallery "
        "and --map-points shows UMAP maps at once instead of fitting them for minutes",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch CPU threads for start-up work (embedding the gallery); requests run "
        "single-threaded (default: %(default)s)",
    )


def allowed_hosts(args: argparse.Namespace) -> list[str]:
    """Host names the server answers: ``--allowed-host`` values, else the loopback names
    and the bound address."""
    if args.allowed_host:
        return list(args.allowed_host)
    hosts = ["localhost", "127.0.0.1", "::1", "[::1]"]
    if args.host not in ("0.0.0.0", "::", "") and args.host not in hosts:
        hosts.append(args.host)
    return hosts


def serve(args: argparse.Namespace) -> int:
    """Load everything, launch the server, warm UMAP, block until interrupted."""
    started = time.perf_counter()
    _quiet_environment()
    if args.gallery_size is not None and args.gallery_size < 10:
        print("error: --gallery-size must be at least 10")
        return 2
    from .defaults import DEFAULT_GALLERY

    if args.index and args.gallery != DEFAULT_GALLERY:
        print("error: give either --gallery or --index (the index's items are the gallery)")
        return 2
    import torch

    from index import SearchIndexError

    from .services import build_services
    from .services.gallery import load_resources
    from .services.models import ModelsNotFoundError
    from .services.projection import start_warm_up
    from .services.sources import GalleryIndexError

    torch.set_num_threads(max(1, args.threads))
    try:
        resources = load_resources(
            args.models,
            gallery=args.gallery,
            gallery_size=args.gallery_size,
            cache_root=args.cache_dir,
            map_points=args.map_points,
            indexes=args.index or (),
            collection=args.collection,
        )
    except (ModelsNotFoundError, GalleryIndexError, SearchIndexError) as exc:
        print(f"error: {exc}")
        return 2
    if args.write_maps:
        from .services.gallery import write_maps

        out = write_maps(resources, args.models)
        print(
            f"gallery maps of {', '.join(resources.keys)} written to {out} "
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        return 0
    services = build_services(
        resources, results_dir=args.results_dir, umap_enabled=not args.no_umap
    )
    # Requests work on one image (or a few hundred) at a time: one intra-op thread is
    # fastest there, and several requests then run side by side on the cores.
    torch.set_num_threads(1)

    import gradio as gr
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from .rest import search_route
    from .services.uploads import MAX_FILE_BYTES
    from .ui import CSS, build_demo

    demo = build_demo(services)
    # api_open=False: queued events cannot be called around the queue and its concurrency
    # limits (search: 4 at a time; clustering and attacks share one worker). Programs that
    # want a search in one round trip use the JSON route POST /api/search (app.rest).
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2, api_open=False)
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )
    blocked = [str(resources.cache_dir.parent), str(Path(args.models).resolve())]
    if not args.gallery.startswith("fashion-mnist"):
        blocked.append(str(Path(args.gallery).resolve()))
    for location in args.index or ():
        if Path(location).exists():
            blocked.append(str(Path(location).resolve()))
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=False,
            show_error=False,
            max_file_size=MAX_FILE_BYTES,
            enable_monitoring=False,
            prevent_thread_lock=True,
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            quiet=True,
            run_history=False,  # no run records in browsers, no bucket uploads
            footer_links=["api", "settings"],
            blocked_paths=blocked,
            theme=theme,
            css=CSS,
            # A plain JSON route for programs, served before Gradio's own routes, and a
            # Host-header check in front of everything (DNS rebinding).
            app_kwargs={
                "routes": [search_route(services)],
                "middleware": [
                    Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(args))
                ],
            },
        )
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port} ({exc})")
        return 2
    print(
        f"EAT app serving on http://{args.host}:{args.port} "
        f"(ready {time.perf_counter() - started:.1f} s after start)",
        flush=True,
    )
    if not args.no_umap:
        start_warm_up(resources.projections)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``app`` to the ``eat`` command's subparsers."""
    p = sub.add_parser(
        "app",
        help="serve the web UI: search, clustering and the attack lab",
        description="Serve the Gradio web app on 127.0.0.1:7860 with the vanilla model and "
        "the EAT ensemble from --models, over the gallery from --gallery.",
    )
    add_arguments(p)
    p.set_defaults(func=serve)


def main(argv: list[str] | None = None) -> int:
    """``python -m app``: the same flags as ``eat app``."""
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve the EAT web app (same as 'eat app').",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return serve(args)
