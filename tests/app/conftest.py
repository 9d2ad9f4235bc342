"""Fixtures for the app tests: small checkpoints, a small gallery, a live server.

The models are made here (tests never depend on ``assets/models``): the shared
``trained_vanilla`` model and a 3-member plain ensemble trained for one epoch on a
slice. The server fixture starts ``python -m app`` in a subprocess on a free port with
those checkpoints and 2,000 Fashion-MNIST test images, waits until it serves, and kills
it after the session.
"""

from __future__ import annotations

import copy
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
# UMAP's numba JIT cache where the app keeps it, so the tests and the server share it.
os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(os.path.expanduser("~")) / ".cache" / "eat" / "numba")
)
SERVER_GALLERY_SIZE = 2000
SERVER_START_TIMEOUT_S = 240


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def png_bytes():
    """``png_bytes(uint8 array) -> bytes`` of a PNG."""
    return _png_bytes


@pytest.fixture(scope="session")
def app_models_dir(tmp_path_factory, trained_vanilla) -> Path:
    """``DIR/vanilla`` (the shared small model), ``DIR/eat``: a 3-member ensemble made
    with ``save_checkpoint`` from that model and two slightly perturbed copies of it, and
    ``DIR/baseline``: one more perturbed copy (no extra training; the app only needs real
    checkpoints)."""
    import torch

    from eat_models import load_model, save_checkpoint
    from eat_models.checkpoint import read_config
    from eat_models.networks import NetworkConfig

    root = tmp_path_factory.mktemp("app-models")
    shutil.copytree(trained_vanilla, root / "vanilla")
    _, config = read_config(trained_vanilla)
    base = load_model(trained_vanilla).net
    generator = torch.Generator().manual_seed(0)
    members = []
    for k in range(3):
        member = copy.deepcopy(base)
        with torch.no_grad():
            for param in member.parameters():
                noise = torch.randn(param.shape, generator=generator)
                param.add_(0.05 * k * param.std().nan_to_num(0.0) * noise)
        members.append(member.eval())
    network = NetworkConfig.from_dict(config["members"][0]["network"])
    meta = {k: config["meta"][k] for k in ("dataset", "split", "class_names")}
    train = {"defense": "perturbed-copies", "out": "runs/ensemble-of-copies"}
    save_checkpoint(root / "eat", members, [network] * 3, meta, train_config=train)
    # the single-model baseline: one more perturbed copy, saved alone
    baseline = copy.deepcopy(base)
    with torch.no_grad():
        for param in baseline.parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.add_(0.03 * param.std().nan_to_num(0.0) * noise)
    save_checkpoint(
        root / "baseline",
        [baseline.eval()],
        [network],
        meta,
        train_config={"defense": "perturbed-copy", "out": "runs/one-copy"},
    )
    return root


@pytest.fixture(scope="session")
def app_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-cache")


@pytest.fixture(scope="session")
def empty_results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("no-results")


@pytest.fixture(scope="session")
def resources(app_models_dir, app_cache):
    """The app's resources over 600 test images (PCA maps; UMAP is tested on its own)."""
    from app.services.gallery import load_resources

    return load_resources(app_models_dir, gallery_size=600, cache_root=app_cache, map_points=300)


@pytest.fixture(scope="session")
def services(resources, empty_results):
    from app.services import build_services

    return build_services(resources, results_dir=empty_results)


@pytest.fixture(scope="session")
def fmnist_test_arrays():
    from eat_models.data import load_fashion_mnist_arrays

    return load_fashion_mnist_arrays()["test"]


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    """Files people upload by mistake: corrupt PNG, text named .jpg, a 12000² PNG, empty."""
    good = _png_bytes(np.full((28, 28), 128, dtype=np.uint8))
    files = {
        "corrupt": tmp_path / "corrupt.png",
        "text": tmp_path / "notes.jpg",
        "huge": tmp_path / "huge.png",
        "empty": tmp_path / "empty.png",
    }
    files["corrupt"].write_bytes(good[:8] + b"\x00garbage" * 20)
    files["text"].write_text("this is a text file, not a photo\n" * 10)
    # A flat 12000×12000 PNG: 144 megapixels, but only a few hundred KB on disk.
    Image.new("L", (12000, 12000), 200).save(files["huge"], optimize=True)
    files["empty"].write_bytes(b"")
    return files


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server(app_models_dir, tmp_path_factory, empty_results):
    """``python -m app`` on a free port with the test models; yields its base URL."""
    port = free_port()
    cache = tmp_path_factory.mktemp("server-cache")
    log_path = tmp_path_factory.mktemp("server-log") / "server.log"
    SERVER_LOG["path"] = log_path
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "app",
        "--models",
        str(app_models_dir),
        "--gallery-size",
        str(SERVER_GALLERY_SIZE),
        "--map-points",
        "500",
        "--cache-dir",
        str(cache),
        "--results-dir",
        str(empty_results),
        "--port",
        str(port),
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the app did not serve within {SERVER_START_TIMEOUT_S} s:\n"
                    f"{log_path.read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


#: where the session's app server writes its log (set by the ``server`` fixture)
SERVER_LOG: dict[str, Path] = {}


@pytest.fixture(scope="session")
def server_log(server) -> Path:
    """The app server's log file (stdout and stderr)."""
    return SERVER_LOG["path"]


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


@pytest.fixture(scope="session")
def labelled_batch(resources, png_bytes):
    """12 gallery images each of trousers, bags and sneakers, labelled like a zip's folders."""
    from app.services.uploads import UploadBatch, UploadedImage
    from eat_models.data import FASHION_MNIST_CLASSES

    items = []
    for label in (1, 8, 7):
        for item in np.flatnonzero(resources.labels == label)[:12]:
            pixels = (resources.model_input(int(item), "eat")[0].numpy() * 255).astype(np.uint8)
            name = f"{FASHION_MNIST_CLASSES[label]}/{item}.png"
            items.append(
                UploadedImage(
                    name, Image.fromarray(pixels), png_bytes(pixels), FASHION_MNIST_CLASSES[label]
                )
            )
    return UploadBatch(images=items)
