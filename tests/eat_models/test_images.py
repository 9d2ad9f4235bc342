"""The one image pipeline: a model trained on an image folder sees, at training time,
exactly the tensors that indexing and search give it for the same files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eat_models.data import ClassBalancedBatchSampler, load_dataset
from eat_models.distributed import context
from eat_models.images import ImageDecodeError, load_model_input, open_image, preprocess_image
from eat_models.train import member_batches
from index.images import FileSource


def _awkward_folder(root, rng):
    """Two classes of images that differ from one another in every way the pipeline
    handles: transparency, palette, non-square shapes, greyscale, EXIF orientation."""
    for name in ("bags", "shoes"):
        (root / name).mkdir(parents=True)
    for i in range(6):
        rgba = rng.integers(0, 256, (30, 50, 4), dtype=np.uint8)
        rgba[:, :10, 3] = 0  # a transparent strip
        Image.fromarray(rgba, "RGBA").save(root / "bags" / f"rgba-{i}.png")
        Image.fromarray(rng.integers(0, 256, (60, 20, 3), dtype=np.uint8)).convert("P").save(
            root / "shoes" / f"palette-{i}.png"
        )
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(root / "bags" / "g.png")
    rotated = Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    rotated.save(root / "shoes" / "exif.jpg", exif=exif)


@pytest.mark.parametrize("channels, size", [(3, 40), (1, 28)])
def test_a_folder_model_sees_the_same_tensors_in_training_and_at_search(
    tmp_path, rng, channels, size
):
    root = tmp_path / "photos"
    _awkward_folder(root, rng)
    train, _ = load_dataset("folder", "standard", root, image_size=size, channels=channels)
    meta = {"channels": channels, "input_size": size}
    # what training reads: through the DataLoader with worker processes, batch by batch
    sampler = ClassBalancedBatchSampler(train.labels, 2, 2, seed=0)
    rows = np.arange(len(train))
    loader = member_batches(
        train, torch.as_tensor(train.labels), sampler, rows, context(), workers=2
    )
    seen = 0
    for (images, labels), idx in zip(loader, sampler, strict=True):
        for image, label, row in zip(images, labels, idx, strict=True):
            path = train.images[row]
            at_search = preprocess_image(open_image(path), meta)
            assert torch.equal(image, at_search), path
            assert int(label) == int(train.labels[row])
            seen += 1
    assert seen == len(sampler) * 4
    # and what the index embeds for the same files is the same input
    source = FileSource(train.images, train.labels)
    assert all(
        torch.equal(preprocess_image(source.load(i), meta), train.image(i))
        for i in range(len(train))
    )


def test_orientation_alpha_and_shape_are_handled_once(tmp_path, rng):
    _awkward_folder(tmp_path, rng)
    upright = open_image(tmp_path / "shoes" / "exif.jpg")
    assert upright.size == (24, 36)  # stored 36×24, shown (and fed) rotated
    x = load_model_input(tmp_path / "bags" / "rgba-0.png", 3, 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    # the transparent strip is composited onto white, not dropped to black
    assert torch.all(x[:, :, :2] > 0.9)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="broken.png"):
        load_model_input(tmp_path / "broken.png", 3, 16)


def _every_kind(root, rng):
    """One file of each kind the decoder must treat alike on every road, in two classes."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    ramp = (np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16)
    Image.fromarray(ramp).save(root / "a" / "sixteen-bit.png")  # mode I;16
    y, x = np.mgrid[0:2000, 0:3000]
    large = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(large).save(root / "a" / "large.jpg", quality=85)
    rgba = rng.integers(0, 256, (30, 50, 4), dtype=np.uint8)
    rgba[:, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(root / "a" / "rgba.png")
    palette = Image.fromarray(rng.integers(0, 256, (60, 20, 3), dtype=np.uint8)).convert("P")
    palette.info["transparency"] = 0
    palette.save(root / "b" / "palette.png", transparency=0)
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).convert("CMYK").save(
        root / "b" / "cmyk.jpg"
    )
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)).save(
        root / "b" / "exif.jpg", exif=exif
    )


@pytest.mark.parametrize("channels, size", [(3, 40), (1, 28)])
def test_one_decoder_one_tensor_through_an_upload_training_and_eat_index(
    tmp_path, rng, channels, size
):
    """The same file gives the same model input through the web app's upload, through
    training on an image folder and through ``eat index`` (build and query)."""
    from app.services.uploads import MAX_FILE_BYTES, load_image
    from index.images import parse_source

    root = tmp_path / "kinds"
    _every_kind(root, rng)
    assert Image.open(root / "a" / "sixteen-bit.png").mode.startswith("I;16")
    assert Image.open(root / "b" / "cmyk.jpg").mode == "CMYK"
    assert (root / "a" / "large.jpg").stat().st_size < MAX_FILE_BYTES
    meta = {"channels": channels, "input_size": size}
    train, test_part = load_dataset("folder", "standard", root, image_size=size, channels=channels)
    training = {
        str(p): part.image(i) for part in (train, test_part) for i, p in enumerate(part.images)
    }
    source = parse_source(str(root))  # what `eat index build` reads; it embeds as below
    indexed = {source.ref(i): preprocess_image(source.load(i), meta) for i in range(len(source))}
    assert set(training) == set(indexed) and len(training) == 6
    for path, at_training in training.items():
        uploaded = preprocess_image(load_image(path).image, meta)
        queried = preprocess_image(open_image(path), meta)  # `eat index search --image FILE`
        for road, tensor in (("upload", uploaded), ("index", indexed[path]), ("query", queried)):
            assert torch.equal(tensor, at_training), (path, road)
    # the 16-bit ramp is scaled, not clipped to white, on every road
    ramp = training[str(root / "a" / "sixteen-bit.png")]
    assert float(ramp.min()) < 0.05 and float(ramp.max()) > 0.95 and ramp.unique().numel() > 10
