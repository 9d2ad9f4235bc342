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
