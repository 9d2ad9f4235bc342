"""CUB-200-2011, CARS-196 and In-Shop loaders on small fake copies of their on-disk layouts
(made here): the standard splits, labels, class names, and a training run on one."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eat_models.data import DatasetNotFoundError, load_dataset, load_inshop


def _image(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 16, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def cub(tmp_path):
    """CUB_200_2011/ with 200 classes × 2 images (images.txt, labels, classes, images/)."""
    root = tmp_path / "cub" / "CUB_200_2011"
    images, labels, classes = [], [], []
    n = 0
    for c in range(1, 201):
        folder = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {folder}")
        for j in range(2):
            n += 1
            rel = f"{folder}/Bird_{c}_{j}.jpg"
            _image(root / "images" / rel, c)
            images.append(f"{n} {rel}")
            labels.append(f"{n} {c}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return tmp_path / "cub"


def test_cub200_trains_on_classes_1_to_100_and_tests_on_101_to_200(cub):
    train, test = load_dataset("cub200", data_dir=cub, image_size=32)
    assert len(train) == len(test) == 200
    assert set(train.labels) == set(range(100)) and set(test.labels) == set(range(100, 200))
    assert train.class_names[0] == "001.Bird_1" and len(train.class_names) == 200
    x = test.image(0)
    assert x.shape == (3, 32, 32)  # decoded from the file, resized
    assert abs(float(x.mean()) - 101 / 255) < 1e-3  # the first test image is of class 101
    assert train.refs[0].endswith("images/001.Bird_1/Bird_1_0.jpg")


def test_cars196_reads_the_annotations_file(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "cars"
    annotations = np.zeros(
        196 * 2, dtype=[("relative_im_path", "O"), ("class", "O"), ("test", "O")]
    )
    for i in range(len(annotations)):
        c = i // 2 + 1
        path = f"car_ims/{i + 1:06d}.jpg"
        _image(root / path, c)
        annotations[i] = (path, c, i % 2)
    names = np.array([f"Car model {c}" for c in range(1, 197)], dtype=object)
    savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": names})
    train, test = load_dataset("cars196", data_dir=root, image_size=16)
    assert set(train.labels) == set(range(98)) and set(test.labels) == set(range(98, 196))
    assert len(train) == len(test) == 196  # both images of a class go together
    assert test.class_names[98] == "Car model 99"
    assert abs(float(test.image(0).mean()) - 99 / 255) < 1e-3


@pytest.fixture
def inshop(tmp_path):
    root = tmp_path / "inshop"
    rows = []
    for item in range(6):
        for j in range(3):
            rel = f"img/WOMEN/Dresses/id_{item:08d}/{j:02d}_front.jpg"
            _image(root / rel, 10 * item + j)
            status = "train" if item < 3 else ("query" if j == 0 else "gallery")
            rows.append(f"{rel} id_{item:08d} {status}")
    text = f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n"
    (root / "Eval").mkdir(parents=True)
    (root / "Eval" / "list_eval_partition.txt").write_text(text)
    return root


def test_inshop_uses_its_query_and_gallery_lists(inshop):
    train, query, gallery = load_inshop(inshop, image_size=16)
    assert (len(train), len(query), len(gallery)) == (9, 3, 6)
    assert set(train.labels) == {0, 1, 2} and set(query.labels) == set(gallery.labels) == {3, 4, 5}
    assert all("00_front" in r for r in query.refs)
    assert train.class_names[3] == "id_00000003"
    _, test = load_dataset("inshop", data_dir=inshop, image_size=16)
    assert len(test) == 9 and test.refs[:3] == query.refs  # queries first, then the gallery


def test_missing_paper_datasets_say_where_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="CUB_200_2011.tgz"):
        load_dataset("cub200", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="cars_annos.mat"):
        load_dataset("cars196", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="list_eval_partition"):
        load_dataset("inshop", data_dir=tmp_path)


def test_a_model_trains_on_the_fake_cub_layout(cub, tmp_path):
    from eat_models import load_model
    from eat_models.train import TrainConfig, train

    out = train(
        TrainConfig(
            dataset="cub200",
            data_dir=str(cub),
            image_size=28,
            width=4,
            embedding_dim=8,
            epochs=1,
            classes_per_batch=8,
            samples_per_class=2,
            out=str(tmp_path / "m"),
        ),
        progress=False,
    )
    model = load_model(out)
    assert model.meta["dataset"] == "cub200" and len(model.meta["class_names"]) == 200
    assert model.meta["data_dir"] == str(cub.resolve())


def test_eval_attack_and_audit_find_the_training_data_without_flags(
    cub, tmp_path, monkeypatch, capsys
):
    """A model trained with ``--dataset cub200 --data-dir ROOT``: ``eat eval CKPT`` and ``eat
    attack CKPT`` (and ``eat audit``, through the same :func:`checkpoint_data`) find ROOT
    from the checkpoint (run from another directory, so a relative --data-dir would not
    do); ``--data-dir`` still overrides."""
    import json

    from eat_models.cli import main

    ckpt = tmp_path / "m"
    flags = ["--image-size", "28", "--width", "4", "--embedding-dim", "8", "--epochs", "1"]
    flags += ["--classes-per-batch", "8", "--samples-per-class", "2", "--quiet"]
    assert (
        main(["train", "--dataset", "cub200", "--data-dir", str(cub), "--out", str(ckpt)] + flags)
        == 0
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(ckpt), "--quiet"]) == 0
    record = json.loads((ckpt / "eval.json").read_text())
    assert record["dataset"] == "cub200" and record["test_images"] == 200
    assert main(["attack", str(ckpt), "--attack", "es", "--steps", "2", "--quiet"]) == 0
    capsys.readouterr()
    # --data-dir overrides the recorded location (here: a folder without CUB)
    assert main(["eval", str(ckpt), "--data-dir", str(elsewhere), "--quiet"]) == 2
    assert "CUB-200-2011 not found" in capsys.readouterr().err


def test_checkpoint_data_prefers_flags_then_the_recorded_location(tmp_path):
    from eat_models.data import checkpoint_data

    meta = {"dataset": "cub200", "data_dir": str(tmp_path)}
    assert checkpoint_data(meta) == ("cub200", str(tmp_path))
    assert checkpoint_data(meta, data_dir="/x") == ("cub200", "/x")
    assert checkpoint_data(meta, dataset="fashion-mnist") == ("fashion-mnist", None)
    gone = {"dataset": "cub200", "data_dir": str(tmp_path / "moved")}
    assert checkpoint_data(gone) == ("cub200", None)  # falls back to the default location
    assert checkpoint_data({}) == ("fashion-mnist", None)  # a foreign model
