"""Image decoding, the shared preprocessing, thumbnails and sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eat_models.images import dark_background_model
from index.errors import ImageDecodeError
from index.images import (
    FileSource,
    PILSource,
    folder_source,
    make_thumbnail,
    open_image,
    parse_source,
    preprocess_image,
)

FMNIST_META = {"channels": 1, "input_size": 28}
RGB_META = {"channels": 3, "input_size": 64}


def test_a_fashion_mnist_png_preprocesses_to_the_dataset_tensor(tmp_path, fmnist_small):
    _, test = fmnist_small
    for row in range(5):
        path = tmp_path / f"{row}.png"
        Image.fromarray(test.images[row].numpy()).save(path)
        got = preprocess_image(open_image(path), FMNIST_META)
        assert got.dtype == torch.float32 and got.shape == (1, 28, 28)
        torch.testing.assert_close(got, test.image(row), rtol=0, atol=0)


def _photo(size=(120, 80), background=235, mode="L") -> Image.Image:
    """A light-background 'photo' with a dark rectangle in the middle."""
    arr = np.full((size[1], size[0]), background, dtype=np.uint8)
    arr[20:60, 30:90] = 40
    image = Image.fromarray(arr)
    return image.convert(mode)


def test_a_light_background_photo_is_inverted_to_look_like_fashion_mnist():
    x = preprocess_image(_photo(mode="RGB"), FMNIST_META)
    assert x.shape == (1, 28, 28)
    assert x[0, 0].max() == 0 and x[0, :, 0].max() == 0  # background brought to black
    assert x[0, 14, 14] > 0.8  # the dark object is now bright
    kept = preprocess_image(_photo(), FMNIST_META, invert=False)
    assert kept[0, 0, 0] > 0.9 and kept[0, 14, 14] < 0.2


def test_a_dark_background_image_is_not_inverted():
    arr = np.zeros((28, 28), dtype=np.uint8)
    arr[8:20, 8:20] = 200
    x = preprocess_image(Image.fromarray(arr), FMNIST_META)
    assert x[0, 0, 0] == 0 and abs(float(x[0, 10, 10]) - 200 / 255) < 1e-6


def test_non_square_images_are_padded_for_small_greyscale_models():
    x = preprocess_image(_photo(size=(200, 50)), FMNIST_META)
    # padded with the background: the top rows stay background (black after inversion)
    assert x.shape == (1, 28, 28) and x[0, :5].max() == 0


def test_rgb_models_get_rgb_at_their_input_size_and_no_inversion():
    assert not dark_background_model(RGB_META) and dark_background_model(FMNIST_META)
    x = preprocess_image(_photo(), RGB_META)
    assert x.shape == (3, 64, 64) and x.min() >= 0 and x.max() <= 1
    assert x[:, 0, 0].min() > 0.9  # light background kept
    assert preprocess_image(_photo(), RGB_META, invert=True)[:, 0, 0].max() < 0.1


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    x = preprocess_image(rgba, RGB_META)
    assert torch.all(x == 1.0)


def test_undecodable_files_raise_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageDecodeError, match="bad.jpg: cannot decode"):
        open_image(bad)
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageDecodeError, match="cut.png"):
        open_image(cut)
    with pytest.raises(ImageDecodeError, match="missing.png"):
        open_image(tmp_path / "missing.png")


def test_thumbnails_are_small_uint8_arrays():
    thumb = make_thumbnail(_photo(), 28, 1)
    assert thumb.shape == (28, 28, 1) and thumb.dtype == np.uint8
    assert make_thumbnail(_photo(mode="RGB"), 16, 3).shape == (16, 16, 3)


def test_folder_source_labels_items_by_subfolder(image_folder):
    source = folder_source(image_folder)
    assert source.class_names == ["Sneaker", "T-shirt-top", "Trouser"]
    assert len(source) == 20  # 18 images + the corrupt and the truncated file
    record = source.record(len(source) - 1)
    assert record["class_name"] == "Trouser" and record["label"] == 2
    assert record["source"].endswith(".png")


def test_parse_source(image_folder, tmp_path):
    assert parse_source(str(image_folder)).class_names == folder_source(image_folder).class_names
    assert len(parse_source("fashion-mnist:test")) == 10_000
    one = next(image_folder.rglob("*.png"))
    assert isinstance(parse_source(str(one)), FileSource)
    with pytest.raises(FileNotFoundError, match="neither"):
        parse_source(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="fashion-mnist has the parts train, test"):
        parse_source("fashion-mnist:validation")
    with pytest.raises(FileNotFoundError, match="'NAME:train' or 'NAME:test' with NAME one of"):
        parse_source("imagenet:test")


def test_pil_source_names_uploads():
    source = PILSource([_photo(), _photo()], names=["a.jpg", "b.jpg"])
    assert source.record(1) == {"source": "b.jpg", "label": None, "class_name": None}
    assert PILSource([_photo()]).ref(0) == "upload:0"
    with pytest.raises(ImageDecodeError, match="not an image"):
        PILSource(["x"]).load(0)
