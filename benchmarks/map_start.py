"""``python -m benchmarks.map_start``: seconds from ``eat app`` start to a UMAP gallery map.

Starts ``python -m app`` on the models (with a fresh, empty cache, as a first start on a
new machine) and polls its ``status`` endpoint over HTTP until every model's gallery map
shows UMAP coordinates (``maps_ready``). Case ``stored``: the models as given, with the maps
that ``eat app --write-maps`` stored beside them. Case ``fit`` (``--fit-too``): a copy of
the models without stored maps, so the app fits UMAP in the background after it serves.

Writes ``results/app/map_start.json`` with :func:`eat_models.provenance.provenance` and
the load average before each case.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from eat_models.files import write_json

from . import command_parser
from .loadcheck import REPO, HTTPUser, start_server

DEFAULT_OUT = REPO / "results" / "app" / "map_start.json"


def time_to_maps(models: Path, timeout: float, poll: float = 0.5) -> dict:
    """One start of the app on ``models`` with an empty cache: seconds to the first page,
    seconds from start to UMAP maps, and which maps were shown."""
    work = Path(tempfile.mkdtemp(prefix="eat-map-start-"))
    args = argparse.Namespace(
        models=str(models),
        gallery_size=None,
        cache_dir=str(work / "cache"),
        start_timeout=timeout,
    )
    load = list(os.getloadavg())
    started = time.perf_counter()
    proc, url, serve_s = start_server(args, work / "server.log")
    user = HTTPUser(url)
    first_methods = None
    try:
        while True:
            _, info = user.call("status", [])
            first_methods = first_methods or dict(info["maps"])
            if info.get("maps_ready"):
                ready_s = time.perf_counter() - started
                break
            if time.perf_counter() - started > timeout:
                ready_s = None
                break
            time.sleep(poll)
        return {
            "models": str(models),
            "load_average_before": load,
            "seconds_to_first_page": round(serve_s, 2),
            "seconds_to_umap_maps": None if ready_s is None else round(ready_s, 2),
            "maps_at_first_status": first_methods,
            "maps_when_ready": dict(info["maps"]),
        }
    finally:
        user.close()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("map_start", __doc__)
    parser.add_argument(
        "--models",
        default=str(REPO / "assets" / "models"),
        help="models folder, with maps stored by 'eat app --write-maps' (default: %(default)s)",
    )
    parser.add_argument(
        "--fit-too",
        action="store_true",
        help="also time a start without stored maps (UMAP fitted after start: minutes)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="give up on a case after this (default: 900 s)"
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="result JSON (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    from eat_models.provenance import provenance

    started = time.perf_counter()
    models = Path(args.models)
    cases = {"stored": time_to_maps(models, args.timeout)}
    print(f"stored maps: {cases['stored']}", flush=True)
    if args.fit_too:
        bare = Path(tempfile.mkdtemp(prefix="eat-models-")) / "models"
        shutil.copytree(models, bare, ignore=shutil.ignore_patterns("maps"))
        try:
            cases["fit"] = time_to_maps(bare, args.timeout)
        finally:
            shutil.rmtree(bare.parent, ignore_errors=True)
        print(f"no stored maps: {cases['fit']}", flush=True)
    record = {
        "cases": cases,
        "wall_s": round(time.perf_counter() - started, 1),
        "provenance": provenance(),
    }
    write_json(Path(args.out), record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
