"""``python -m benchmarks.loadcheck``: concurrent searches and live attacks against a real server.

Starts ``python -m app`` in a subprocess (or uses ``--url``), waits until it serves and
UMAP is warm, then measures over HTTP with Gradio's documented REST protocol (what curl
or any HTTP client does), one connection per simulated user:

* ``--concurrency`` (20) searches sent at once, repeated ``--rounds`` times; every one
  must succeed; round-trip p50 / p95 / max (upload of the query included). For
  comparison, sequential searches through ``gradio_client``, which adds its own
  client-side overhead;
* the same bursts against the plain JSON route ``POST /api/search`` (image in the
  body, answer in one round trip, no queue), taking turns with the UI's round by round
  so that the two are measured under the same conditions;
* the same two, one search at a time (100 each): the per-request cost without contention;
* the attack lab's PGD-``--steps`` request on gallery images, one at a time (round trip,
  and the server's own attack time per model).

Writes ``results/app/loadcheck.json`` with :func:`eat_models.provenance.provenance`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from app.services.example_images import example_paths
from app.services.models import ATTACK_ORDER, MODEL_KEYS
from eat_models.files import write_json

from . import command_parser
from .timing import latency_summary

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "results" / "app" / "loadcheck.json"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, log_path: Path) -> tuple[subprocess.Popen, str, float]:
    """``python -m app`` on a free port; returns the process, its URL and seconds to serve."""
    port = _free_port()
    cmd = [sys.executable, "-m", "app", "--models", args.models, "--port", str(port)]
    if args.gallery_size:
        cmd += ["--gallery-size", str(args.gallery_size)]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return proc, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.25)
        if time.perf_counter() - started > args.start_timeout:
            proc.kill()
            raise RuntimeError(f"the app did not serve within {args.start_timeout} s")


class HTTPUser:
    """One simulated user speaking Gradio's documented REST protocol with its own
    connection: upload the query, ``POST /gradio_api/call/<api>``, read the result stream."""

    def __init__(self, url: str) -> None:
        import httpx

        self.base = url.rstrip("/") + "/gradio_api"
        self.http = httpx.Client(timeout=120)
        self.session = uuid.uuid4().hex[:12]  # one session per user, as a browser tab has

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as fh:
            response = self.http.post(f"{self.base}/upload", files={"files": (path.name, fh)})
        response.raise_for_status()
        return {
            "path": response.json()[0],
            "orig_name": path.name,
            "meta": {"_type": "gradio.FileData"},
        }

    def call(self, api: str, data: list) -> list:
        body = {"data": data, "session_hash": self.session}
        response = self.http.post(f"{self.base}/call/{api}", json=body)
        response.raise_for_status()
        event_id = response.json()["event_id"]
        stream = self.http.get(f"{self.base}/call/{api}/{event_id}")
        stream.raise_for_status()
        event = None
        for line in stream.text.splitlines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line.split(":", 1)[1])
                if event == "error":
                    raise RuntimeError(f"{api} failed: {payload}")
                return payload
        raise RuntimeError(f"{api}: no result in the stream")

    def run(self, api: str, data: list) -> list:
        """A direct call of an event that is not queued (``POST /gradio_api/run/<api>``);
        ``data`` lists every input, ``None`` for session state."""
        body = {"data": data, "session_hash": self.session}
        response = self.http.post(f"{self.base}/run/{api}", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"{api} failed ({response.status_code}): {response.text[:200]}")
        return response.json()["data"]

    def close(self) -> None:
        self.http.close()


def wait_until_warm(url: str, timeout: float) -> tuple[bool, float]:
    user = HTTPUser(url)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < timeout:
            _, info = user.call("status", [])
            if info["umap_warm"]:
                return True, time.perf_counter() - started
            time.sleep(2)
        return False, time.perf_counter() - started
    finally:
        user.close()


def model_list(model: str) -> list[str]:
    """The UI's model selection (a list of keys) for a ``--model`` value."""
    from app.services.search import MODEL_GROUPS

    return list(MODEL_GROUPS.get(model, model.split(",")))


def search_bursts(
    searches: dict[str, Callable[[int, int], dict]],
    concurrency: int,
    rounds: int,
    model: str,
    k: int,
) -> dict[str, dict]:
    """``rounds`` bursts of ``concurrency`` simultaneous calls of each ``search(i, r)`` in
    ``searches`` (user i, round r; returns the per-model results dict), all of a burst
    released at once by a barrier, after one uncounted warm-up burst of each.

    The kinds of search take turns round by round, in alternating order, so that a
    drift in the machine's speed (another process, the CPU's clock) falls on all of them
    alike and their ratio is measured under the same conditions. Every answer must hold
    ``k`` hits per model."""
    expected = model_list(model)
    names = list(searches)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    errors: dict[str, list[str]] = {name: [] for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    lock = threading.Lock()
    for r in range(-1, rounds):  # round -1 warms caches (thumbnail files) and is not counted
        for name in names if r % 2 == 0 else names[::-1]:
            search = searches[name]
            barrier = threading.Barrier(concurrency)

            def one(i: int, r: int = r, name: str = name, search=search, barrier=barrier) -> None:
                barrier.wait()
                t = time.perf_counter()
                try:
                    results = search(i, r)
                    if any(len(results[key]["hits"]) != k for key in expected):
                        raise RuntimeError("wrong number of hits")
                    with lock:
                        if r >= 0:
                            latencies[name].append(time.perf_counter() - t)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors[name].append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrency)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if r >= 0:
                wall[name].append(time.perf_counter() - started)
    return {
        name: {
            "model": model,
            "k": k,
            "concurrency": concurrency,
            "rounds": rounds,
            "succeeded": len(latencies[name]),
            "failed": len(errors[name]),
            "errors": errors[name][:5],
            "round_trip": latency_summary(latencies[name]) if latencies[name] else None,
            "burst_wall_s": [round(w, 3) for w in wall[name]],
        }
        for name in names
    }


def ui_search_data(query: dict, model: str, k: int) -> list:
    """The search event's inputs as the browser sends them: the uploaded file, the picked
    example (session state, ``None``), the models and k."""
    return [query, None, model_list(model), k]


@contextmanager
def ui_searcher(url: str, queries: list[Path], concurrency: int, model: str, k: int):
    """``search(i, r)`` through the UI's endpoint as the browser calls it (upload, then the
    unqueued ``POST /gradio_api/run/search``), one connection per user."""
    users = [HTTPUser(url) for _ in range(concurrency)]
    try:
        for user in users[:3]:  # warm the server's code paths once
            user.run("search", ui_search_data(user.upload(queries[0]), model, k))

        def search(i: int, r: int) -> dict:
            query = users[i].upload(queries[(i + r) % len(queries)])
            return users[i].run("search", ui_search_data(query, model, k))[-1]

        yield search
    finally:
        for user in users:
            user.close()


@contextmanager
def api_searcher(url: str, queries: list[Path], concurrency: int, model: str, k: int):
    """``search(i, r)`` through the plain JSON route ``POST /api/search`` (:mod:`app.rest`):
    the image in the body, the answer in one round trip, one connection per user."""
    import httpx

    bodies = [q.read_bytes() for q in queries]
    endpoint = f"{url.rstrip('/')}/api/search?model={model}&k={k}"
    clients = [httpx.Client(timeout=120) for _ in range(concurrency)]

    def search(i: int, r: int) -> dict:
        response = clients[i].post(
            endpoint,
            content=bodies[(i + r) % len(bodies)],
            headers={"Content-Type": "application/octet-stream"},
        )
        response.raise_for_status()
        return response.json()["results"]

    try:
        yield search
    finally:
        for client in clients:
            client.close()


def paired_searches(
    url: str, queries: list[Path], concurrency: int, rounds: int, model: str, k: int
) -> tuple[dict, dict]:
    """Bursts through the UI's endpoint and through ``POST /api/search``, taking turns
    round by round (:func:`search_bursts`); returns (UI record, API record)."""
    with (
        ui_searcher(url, queries, concurrency, model, k) as ui,
        api_searcher(url, queries, concurrency, model, k) as api,
    ):
        both = search_bursts({"ui": ui, "api": api}, concurrency, rounds, model, k)
    ui_route = "upload + unqueued POST /gradio_api/run/search, as the browser sends it"
    return {"route": ui_route, **both["ui"]}, {"route": "POST /api/search", **both["api"]}


def sequential_searches(url: str, queries: list[Path], repeats: int, model: str, k: int) -> dict:
    """One search at a time, ``repeats`` of each: the UI endpoint (upload + unqueued
    ``/search``) and ``POST /api/search``. With nothing else running, the difference is the
    per-request cost of Gradio's protocol, which a burst multiplies."""
    import httpx

    user, client = HTTPUser(url), httpx.Client(timeout=120)
    endpoint = f"{url.rstrip('/')}/api/search?model={model}&k={k}"
    ui, api = [], []
    try:
        for i in range(repeats):
            query = queries[i % len(queries)]
            t = time.perf_counter()
            user.run("search", ui_search_data(user.upload(query), model, k))
            ui.append(time.perf_counter() - t)
            t = time.perf_counter()
            response = client.post(
                endpoint,
                content=query.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            response.raise_for_status()
            api.append(time.perf_counter() - t)
    finally:
        user.close()
        client.close()
    return {"repeats": repeats, "ui": latency_summary(ui), "api": latency_summary(api)}


def gradio_client_searches(url: str, query: Path, repeats: int, model: str, k: int) -> dict:
    """Sequential searches through gradio_client, for comparison (it adds its own
    client-side overhead per call)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    client.predict(handle_file(str(query)), model_list(model), k, api_name="/search")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        client.predict(handle_file(str(query)), model_list(model), k, api_name="/search")
        times.append(time.perf_counter() - t)
    return latency_summary(times)


def attack_requests(url: str, repeats: int, steps: int, eps: float, kind: str) -> dict:
    """PGD attacks on gallery items, one at a time: round trip and the server's times."""
    user = HTTPUser(url)
    _, info = user.call("status", [])
    models = [key for key in ATTACK_ORDER if key in info["models"]]
    user.call("attack", [None, 0, kind, eps, steps, models])  # warm-up
    round_trips, server_total, per_model = [], [], {key: [] for key in models}
    for i in range(repeats):
        t = time.perf_counter()
        out = user.call("attack", [None, 17 * (i + 1), kind, eps, steps, models])
        round_trips.append(time.perf_counter() - t)
        details = out[-1]
        server_total.append(details["seconds"])
        for key in per_model:
            per_model[key].append(details["models"][key]["attack_seconds"])
    user.close()
    return {
        "attack": kind,
        "eps": eps,
        "steps": steps,
        "round_trip": latency_summary(round_trips),
        "server_request": latency_summary(server_total),
        "pgd_only": {key: latency_summary(v) for key, v in per_model.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("loadcheck", __doc__)
    parser.add_argument(
        "--url", default=None, help="use this running server instead of starting one"
    )
    parser.add_argument(
        "--models",
        default=str(REPO / "assets" / "models"),
        help="models folder for the server it starts (default: %(default)s)",
    )
    parser.add_argument(
        "--gallery-size", type=int, default=None, help="gallery subset (default: all)"
    )
    parser.add_argument("--cache-dir", default=None, help="app cache dir (default: the app's)")
    parser.add_argument(
        "--concurrency", type=int, default=20, help="simultaneous searches (default: 20)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="measured bursts of searches (default: 5)"
    )
    parser.add_argument(
        "--model",
        default="eat",
        choices=(*MODEL_KEYS, "both"),
        help="model searched ('both': eat and vanilla) (default: eat)",
    )
    parser.add_argument("--k", type=int, default=8, help="results per search (default: 8)")
    parser.add_argument("--attacks", type=int, default=5, help="attack requests (default: 5)")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps (default: 20)")
    parser.add_argument("--eps", type=float, default=0.1, help="attack ε (default: 0.1)")
    parser.add_argument(
        "--warm-timeout", type=float, default=600, help="wait for UMAP (default: 600 s)"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=600, help="wait to serve (default: 600 s)"
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="result JSON (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    from eat_models.provenance import provenance

    proc = None
    record: dict = {
        "provenance": provenance(),
        "settings": vars(args).copy(),
        "load_average_before": list(os.getloadavg()),
    }
    try:
        if args.url:
            url = args.url
        else:
            log_path = Path(tempfile.mkdtemp(prefix="eat-loadcheck-")) / "server.log"
            proc, url, serve_s = start_server(args, log_path)
            record["server"] = {"seconds_to_first_page": round(serve_s, 2), "log": str(log_path)}
            print(f"server serving after {serve_s:.1f} s", flush=True)
        warm, warm_s = wait_until_warm(url, args.warm_timeout)
        record["umap_warm"] = {"warm": warm, "waited_s": round(warm_s, 1)}
        print(f"UMAP warm: {warm} (waited {warm_s:.1f} s)", flush=True)
        queries = example_paths()
        record["search_schedule"] = (
            "the UI's bursts and /api/search's take turns round by round, in alternating order"
        )
        record["search"], record["search_api"] = paired_searches(
            url, queries, args.concurrency, args.rounds, args.model, args.k
        )
        print("search:", json.dumps(record["search"]["round_trip"]), flush=True)
        print("search /api/search:", json.dumps(record["search_api"]["round_trip"]), flush=True)
        record["search_sequential"] = sequential_searches(url, queries, 100, args.model, args.k)
        print("search, one at a time:", json.dumps(record["search_sequential"]), flush=True)
        record["search_gradio_client"] = gradio_client_searches(
            url, queries[0], 10, args.model, args.k
        )
        record["attack"] = attack_requests(url, args.attacks, args.steps, args.eps, "es")
        print("attack:", json.dumps(record["attack"]["round_trip"]), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    record["load_average_after"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)
    print(f"written to {out}")
    search_ok = record["search"]["failed"] == 0 and record["search_api"]["failed"] == 0
    return 0 if search_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
