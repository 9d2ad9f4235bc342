"""``eat app --index LOCATION``: the app serves the gallery of an index built by ``eat index
build`` (FAISS folder or Milvus Lite file), gives each index to the model that built it,
and refuses indexes it cannot serve with a message that says why."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.services.gallery import load_resources
from app.services.search import SearchService
from app.services.sources import GalleryIndex, GalleryIndexError
from eat_command import main
from index import VectorIndex, load_index


@pytest.fixture(scope="module")
def faiss_gallery(app_models_dir, tmp_path_factory):
    """An index of the eat model over 240 test images, with ids 10…19 removed (gaps)."""
    out = tmp_path_factory.mktemp("outside") / "eat-index"
    model = str(app_models_dir / "eat")
    args = ["index", "build", "--model", model, "--source", "fashion-mnist:test"]
    assert main([*args, "--limit", "240", "--out", str(out)]) == 0
    assert main(["index", "remove", str(out), *map(str, range(10, 20))]) == 0
    return out


def _search(resources, key, image, k=5):
    return SearchService(resources).search(image, key, k).results[key].hits


def test_the_app_serves_an_outside_faiss_index(app_models_dir, faiss_gallery, tmp_path):
    resources = load_resources(
        app_models_dir, cache_root=tmp_path, map_points=100, indexes=[str(faiss_gallery)]
    )
    outside = load_index(faiss_gallery)
    held = outside.ids()
    assert len(resources) == len(held) == 230
    eat = resources.views["eat"].index
    assert isinstance(eat, GalleryIndex) and np.array_equal(eat.item_ids, held)
    # the other models got indexes of the same items, built by the app
    assert not isinstance(resources.views["vanilla"].index, GalleryIndex)
    for position in (0, 9, 10, 229):  # around the gap: position 10 is the index's id 20
        want = outside.record(int(held[position]))["source"]
        assert resources.refs[position] == want
        assert resources.views["vanilla"].index.record(position)["source"] == want
    # the eat view's vectors are the outside index's, in position order
    np.testing.assert_array_equal(resources.views["eat"].vectors, outside.vectors(held)[1])
    # search through the outside index answers in gallery positions, the query itself first
    position = 57
    query = resources.thumbnail(position).resize((28, 28), Image.NEAREST)
    hits = _search(resources, "eat", query)
    assert hits[0].item_id == position and hits[0].score == pytest.approx(1.0, abs=1e-4)
    brute = resources.views["eat"].vectors @ resources.views["eat"].vectors[position]
    assert [h.item_id for h in hits] == list(np.argsort(-brute, kind="stable")[:5])
    # the exact pixels of an item are the Fashion-MNIST row it came from
    row = int(resources.refs[position].rpartition(":")[2])
    x = resources.model_input(position, "eat")
    assert resources.source.dataset.refs[position] == f"fashion-mnist/test:{row}"
    assert x.shape == (1, 28, 28)


def test_the_app_serves_a_milvus_lite_index(app_models_dir, faiss_gallery, tmp_path):
    pytest.importorskip("milvus_lite")
    db = tmp_path / "gallery.db"
    model = str(app_models_dir / "vanilla")
    args = ["index", "build", "--model", model, "--source", "fashion-mnist:test", "--limit", "240"]
    assert main([*args, "--backend", "milvus", "--out", str(db)]) == 0
    assert main(["index", "remove", str(db), *map(str, range(10, 20))]) == 0
    # one index per model: FAISS serves eat, Milvus serves vanilla, baseline is built
    resources = load_resources(
        app_models_dir,
        cache_root=tmp_path / "cache",
        map_points=100,
        indexes=[str(faiss_gallery), str(db)],
    )
    assert isinstance(resources.views["vanilla"].index, GalleryIndex)
    assert isinstance(resources.views["eat"].index, GalleryIndex)
    assert len(resources) == 230
    query = resources.thumbnail(100).resize((28, 28), Image.NEAREST)
    hits = _search(resources, "vanilla", query, k=8)
    vectors = resources.views["vanilla"].vectors
    assert [h.item_id for h in hits] == list(np.argsort(-(vectors @ vectors[100]))[:8])
    resources.views["vanilla"].index.inner.close()


def test_indexes_the_app_cannot_serve_are_refused(app_models_dir, faiss_gallery, tmp_path):
    stranger = VectorIndex(128, "flat", fingerprint="0123456789abcdef")
    stranger.add(np.eye(128, dtype=np.float32)[:3], [{"source": "x"}] * 3)
    stranger.save(tmp_path / "stranger")
    with pytest.raises(GalleryIndexError, match="none of the app's models matches"):
        load_resources(app_models_dir, cache_root=tmp_path, indexes=[str(tmp_path / "stranger")])
    with pytest.raises(GalleryIndexError, match="both indexes of the eat model"):
        load_resources(app_models_dir, cache_root=tmp_path, indexes=[str(faiss_gallery)] * 2)
    with pytest.raises(GalleryIndexError, match="gallery size"):
        load_resources(
            app_models_dir, cache_root=tmp_path, gallery_size=50, indexes=[str(faiss_gallery)]
        )
    # another model's index over other items
    other = tmp_path / "other"
    model = str(app_models_dir / "vanilla")
    args = ["index", "build", "--model", model, "--source", "fashion-mnist:test", "--limit", "30"]
    assert main([*args, "--out", str(other)]) == 0
    with pytest.raises(GalleryIndexError, match="other items"):
        load_resources(
            app_models_dir, cache_root=tmp_path, indexes=[str(faiss_gallery), str(other)]
        )
    # items whose images are nowhere to be found (uploads)
    built = load_index(other)
    uploads = VectorIndex(built.dim, "flat", fingerprint=built.fingerprint)
    vectors = np.eye(built.dim, dtype=np.float32)[:2]
    uploads.add(vectors, [{"source": "upload:0"}, {"source": "upload:1"}])
    uploads.save(tmp_path / "uploads")
    with pytest.raises(GalleryIndexError, match="upload:0"):
        load_resources(app_models_dir, cache_root=tmp_path, indexes=[str(tmp_path / "uploads")])


def test_eat_app_reports_a_refused_index_and_exits(app_models_dir, tmp_path, capsys):
    missing = tmp_path / "no-such-index"
    code = main(["app", "--models", str(app_models_dir), "--index", str(missing)])
    assert code == 2
    assert f"cannot open the index {missing}" in capsys.readouterr().out
    code = main(["app", "--models", str(app_models_dir), "--index", "x", "--gallery", "y"])
    assert code == 2 and "either --gallery or --index" in capsys.readouterr().out
