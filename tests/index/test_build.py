"""Building an index from a model and a source; per-file decode failures; adding."""

from __future__ import annotations

import numpy as np
import pytest

from eat_models.evaluate import embed
from index.build import add_images, build_index, embed_source
from index.errors import FingerprintMismatchError, SearchIndexError
from index.images import DatasetSource, FileSource, folder_source


def test_build_from_a_dataset_stores_embeddings_and_metadata(vanilla_model, fmnist_small):
    _, test = fmnist_small
    gallery = test.subset(np.arange(300))
    index, report = build_index(vanilla_model, DatasetSource(gallery), thumbnails=True)
    assert report.added == 300 and not report.failures
    assert index.kind == "flat" and index.dim == vanilla_model.meta["embedding_dim"]
    assert index.fingerprint == vanilla_model.meta["fingerprint"]
    ids, stored = index.vectors()
    np.testing.assert_allclose(stored, embed(vanilla_model, gallery), atol=1e-5)
    record = index.record(int(ids[7]))
    assert record["source"] == gallery.ref(7) and record["source"].startswith("fashion-mnist/test:")
    assert record["label"] == int(gallery.labels[7])
    assert record["class_name"] == gallery.class_names[gallery.labels[7]]
    thumb = index.thumbnail(int(ids[7]))
    assert thumb.shape == (28, 28, 1) and thumb.dtype == np.uint8
    np.testing.assert_array_equal(thumb[:, :, 0], gallery.images[7].numpy())
    assert index.model["path"] == str(vanilla_model.meta["path"])


def test_decode_failures_are_reported_per_file_and_the_rest_indexed(vanilla_model, image_folder):
    index, report = build_index(vanilla_model, folder_source(image_folder), batch_size=4)
    assert report.added == 18 == len(index)
    failed = sorted(f.ref.rsplit("/", 1)[-1] for f in report.failures)
    assert failed == ["corrupt.jpg", "truncated.png"]
    assert all("cannot decode" in f.error for f in report.failures)
    sources = {index.record(int(i))["source"] for i in index.ids()}
    assert not any(s.endswith(("corrupt.jpg", "truncated.png")) for s in sources)


def test_folder_images_embed_like_the_dataset(vanilla_model, image_folder, fmnist_small):
    _, test = fmnist_small
    paths = sorted(image_folder.rglob("[0-9]*.png"))
    embedded = embed_source(vanilla_model, FileSource(paths))
    rows = [int(p.stem) for p in paths]
    np.testing.assert_allclose(embedded.vectors, embed(vanilla_model, test.subset(rows)), atol=1e-5)


def test_nothing_decodable_is_an_error(vanilla_model, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(SearchIndexError, match="none of the 1 images"):
        build_index(vanilla_model, FileSource([bad]))


def test_add_images_continues_ids_and_checks_the_model(vanilla_model, image_folder, fmnist_small):
    _, test = fmnist_small
    index, _ = build_index(vanilla_model, DatasetSource(test.subset(np.arange(50))))
    report = add_images(index, vanilla_model, folder_source(image_folder))
    assert report.ids.min() == 50 and len(index) == 68
    assert len(report.failures) == 2
    impostor = _with_fingerprint(vanilla_model, "0000000000000000")
    with pytest.raises(FingerprintMismatchError, match="0000000000000000"):
        add_images(index, impostor, folder_source(image_folder))


def _with_fingerprint(model, fingerprint):
    """The same network under another fingerprint (as a retrained model would have)."""
    import copy

    other = copy.copy(model)
    other.meta = {**model.meta, "fingerprint": fingerprint}
    return other
