"""Data loading from IDX files and image folders, splits and the class-balanced sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eat_models.data import (
    ClassBalancedBatchSampler,
    DatasetNotFoundError,
    IDXFormatError,
    PairBatchSampler,
    class_disjoint_parts,
    class_disjoint_split,
    find_fashion_mnist,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
    stratified_split,
)
from eat_models.data import fashion_mnist as data
from tests.eat_models.idx_files import write_idx


def write_tiny_fashion_mnist(directory, n_train=40, n_test=20, seed=0):
    """Four IDX .gz files in the Fashion-MNIST layout with random pixels; returns arrays."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        img_file, lbl_file = data.FASHION_MNIST_FILES[part]
        write_idx(directory / img_file, images)
        write_idx(directory / lbl_file, labels)
        arrays[part] = (images, labels)
    return arrays


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """Hide the Debian dataset, $EAT_DATA_DIR and the cache, so only explicit paths count."""
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.delenv("EAT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))


def test_idx_round_trip_plain_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name), arr)
    wide = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    write_idx(tmp_path / "w.gz", wide)
    np.testing.assert_array_equal(read_idx(tmp_path / "w.gz"), wide)


def test_idx_header_matches_the_spec(tmp_path):
    write_idx(tmp_path / "l.idx", np.array([1, 2, 3], dtype=np.uint8))
    raw = (tmp_path / "l.idx").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 1])
    assert int.from_bytes(raw[4:8], "big") == 3
    assert raw[8:] == bytes([1, 2, 3])


def test_truncated_or_foreign_idx_is_refused(tmp_path):
    write_idx(tmp_path / "x.idx", np.zeros((4, 28, 28), dtype=np.uint8))
    raw = (tmp_path / "x.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-100])
    with pytest.raises(IDXFormatError, match="truncated or corrupt"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "foreign.idx").write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(IDXFormatError, match="magic"):
        read_idx(tmp_path / "foreign.idx")


def test_load_fashion_mnist_from_tiny_idx_files(tmp_path, no_system_data):
    arrays = write_tiny_fashion_mnist(tmp_path / "fm")
    train, test = load_fashion_mnist("standard", root=tmp_path / "fm")
    assert len(train) == 40 and len(test) == 20
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    np.testing.assert_allclose(x[0].numpy() * 255, arrays["train"][0][3], atol=1e-4)
    assert y == arrays["train"][1][3]
    assert train.batch([0, 1, 2]).shape == (3, 1, 28, 28)
    assert train.class_names[0] == "T-shirt/top" and test.ref(5) == "fashion-mnist/test:5"


def test_class_disjoint_fashion_mnist_split(tmp_path, no_system_data):
    write_tiny_fashion_mnist(tmp_path / "fm")
    train, test = load_fashion_mnist("class-disjoint", root=tmp_path / "fm")
    assert set(train.labels) == set(range(5)) and set(test.labels) == set(range(5, 10))
    assert len(train) + len(test) == 60


def test_lookup_order_explicit_then_env_then_debian(tmp_path, monkeypatch, no_system_data):
    for name in ("explicit", "env", "debian"):
        write_tiny_fashion_mnist(tmp_path / name)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    monkeypatch.setenv("EAT_DATA_DIR", str(tmp_path / "env"))
    assert find_fashion_mnist(tmp_path / "explicit") == tmp_path / "explicit"
    assert find_fashion_mnist() == tmp_path / "env"
    monkeypatch.delenv("EAT_DATA_DIR")
    assert find_fashion_mnist() == tmp_path / "debian"


def test_torchvision_cache_layout_is_found(tmp_path, monkeypatch, no_system_data):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_tiny_fashion_mnist(tmp_path / "cache" / "eat" / "datasets" / "FashionMNIST" / "raw")
    assert find_fashion_mnist().parts[-2:] == ("FashionMNIST", "raw")


def test_missing_dataset_says_how_to_get_it(no_system_data):
    with pytest.raises(DatasetNotFoundError) as err:
        load_fashion_mnist()
    message = str(err.value)
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "EAT_DATA_DIR" in message and "--download" in message


def make_image_folder(root, classes=6, per_class=5, size=40):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            ext = ".png" if i % 2 else ".jpg"
            Image.fromarray(arr).save(root / f"class_{c:02d}" / f"img_{i}{ext}")
    (root / "class_00" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_class_disjoint_split(tmp_path):
    root = make_image_folder(tmp_path / "photos")
    train, test = load_image_folder(root, image_size=32, channels=3)
    assert set(train.labels).isdisjoint(set(test.labels))
    assert len(train) + len(test) == 30
    assert train.class_names == test.class_names == [f"class_{c:02d}" for c in range(6)]
    x, _ = test[0]
    assert x.shape == (3, 32, 32) and float(x.max()) <= 1.0
    assert test.ref(0).endswith((".png", ".jpg"))


def test_image_folder_missing_or_empty(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no images"):
        load_image_folder(tmp_path / "empty")


def test_stratified_split_disjoint_covering_and_balanced():
    labels = np.repeat(np.arange(10), 31)
    parts = stratified_split(labels, 3, seed=1)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    for part in parts:
        counts = np.bincount(labels[part], minlength=10)
        assert counts.min() >= 10 and counts.max() <= 11
    assert all(
        np.array_equal(a, b)
        for a, b in zip(parts, stratified_split(labels, 3, seed=1), strict=True)
    )
    with pytest.raises(ValueError, match="fewer than k"):
        stratified_split(np.array([0, 0, 1]), 3)


def test_class_disjoint_parts_and_split():
    labels = np.repeat(np.arange(9), 4)
    parts = class_disjoint_parts(labels, 3, seed=0)
    class_sets = [set(labels[p]) for p in parts]
    assert sum(len(s) for s in class_sets) == 9
    assert all(a.isdisjoint(b) for i, a in enumerate(class_sets) for b in class_sets[i + 1 :])
    train, test = class_disjoint_split(labels)
    assert set(labels[train]) == set(range(5)) and set(labels[test]) == set(range(5, 9))


def test_class_balanced_sampler_shape_and_determinism():
    labels = np.repeat(np.arange(10), 50)
    sampler = ClassBalancedBatchSampler(labels, classes_per_batch=4, samples_per_class=5, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 500 // 20
    for batch in batches:
        counts = np.bincount(labels[batch], minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [5, 5, 5, 5]
    assert batches == list(ClassBalancedBatchSampler(labels, 4, 5, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    small = ClassBalancedBatchSampler(np.array([0, 0, 1, 1, 1, 1]), 2, 4, num_batches=2)
    assert all(len(b) == 8 for b in small)


def test_pair_batch_sampler_draws_robrank_spc2_pairs():
    """SPC-2: batches ``[a0, p0, a1, p1, …]``, each positive another row of its anchor's
    class, every row an anchor once per epoch (len // pairs batches), deterministic per seed
    and epoch; a class of one row pairs that row with itself."""
    labels = np.repeat(np.arange(10), 50)[np.random.default_rng(0).permutation(500)]
    sampler = PairBatchSampler(labels, pairs_per_batch=25, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 500 // 25 and sampler.batch_size == 50
    anchors = []
    for batch in batches:
        batch = np.asarray(batch)
        assert len(batch) == 50
        a, p = batch[0::2], batch[1::2]
        assert (labels[a] == labels[p]).all() and (a != p).all()
        anchors += a.tolist()
    assert sorted(anchors) == list(range(500))  # each row an anchor once in the epoch
    assert batches == list(PairBatchSampler(labels, 25, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    positives = np.concatenate([np.asarray(b)[1::2] for b in batches])
    assert len(set(positives.tolist())) > 250  # positives drawn at random, not fixed
    lone = PairBatchSampler(np.array([0, 1, 1, 1]), pairs_per_batch=4, num_batches=3)
    for batch in lone:
        batch = np.asarray(batch)
        assert len(batch) == 8
        pairs = batch.reshape(-1, 2)
        assert all(p == a for a, p in pairs if a == 0)
        assert all(p != a and p in (1, 2, 3) for a, p in pairs if a != 0)
    with pytest.raises(ValueError, match="pairs_per_batch"):
        PairBatchSampler(labels, 0)


def test_real_fashion_mnist_standard_split(fmnist):
    train, test = fmnist
    assert len(train) == 60000 and len(test) == 10000
    assert np.bincount(test.labels).tolist() == [1000] * 10
