"""Uploads: good images decode, bad ones are refused by name, limits hold, zips are safe."""

from __future__ import annotations

import io
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageFile

from app.services import uploads
from app.services.uploads import UploadError, decode_image, load_image, load_uploads


def _image_bytes(mode: str, fmt: str, size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    colour = {"L": 90, "RGB": (10, 200, 30), "RGBA": (10, 200, 30, 128), "P": 3}[mode]
    Image.new(mode, size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("RGB", "JPEG"), ("RGBA", "PNG"), ("P", "GIF"), ("RGB", "WEBP"), ("RGB", "BMP")],
)
def test_common_formats_decode(mode, fmt):
    image = decode_image(_image_bytes(mode, fmt), f"x.{fmt.lower()}")
    assert image.size == (40, 30)
    assert image.mode in ("L", "RGB", "RGBA", "LA")


def test_large_images_are_shrunk_to_the_working_size():
    image = decode_image(_image_bytes("RGB", "PNG", size=(2000, 1000)), "big.png")
    assert max(image.size) == uploads.WORKING_MAX_SIDE
    assert image.size == (512, 256)


def test_bad_files_are_refused_with_their_name(bad_files):
    cases = {
        "corrupt": "corrupt.png",
        "text": "notes.jpg: not an image file",
        "huge": "megapixel limit",
        "empty": "empty",
    }
    for key, expected in cases.items():
        with pytest.raises(UploadError) as info:
            load_image(bad_files[key])
        assert expected in str(info.value), (key, str(info.value))
        assert bad_files[key].name in str(info.value)


def test_a_decompression_bomb_is_refused_before_its_pixels_are_decoded(bad_files, monkeypatch):
    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the pixels of a 144-megapixel image were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(UploadError, match="megapixel limit"):
        load_image(bad_files["huge"])


def test_pillow_guard_is_set_to_the_app_limit():
    assert Image.MAX_IMAGE_PIXELS == uploads.MAX_PIXELS


def test_oversized_files_are_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.png"
    path.write_bytes(_image_bytes("RGB", "PNG", size=(300, 300)) + b"\0" * 2000)
    with pytest.raises(UploadError, match="limit per file"):
        load_image(path)


def test_a_truncated_png_is_reported_as_corrupt(tmp_path, png_bytes):
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UploadError, match="cut.png: the image file is corrupt or truncated"):
        load_image(path)


def test_no_upload_is_a_clear_error():
    with pytest.raises(UploadError, match="No image was uploaded"):
        load_image(None)
    with pytest.raises(UploadError, match="No files were uploaded"):
        load_uploads([])
    with pytest.raises(UploadError, match="No files were uploaded"):
        load_uploads(None)


def test_bad_files_are_skipped_and_the_rest_processed(tmp_path, bad_files, png_bytes):
    good = []
    for i in range(3):
        path = tmp_path / f"good{i}.png"
        path.write_bytes(png_bytes(np.full((28, 28), 40 * i, dtype=np.uint8)))
        good.append(path)
    batch = load_uploads([good[0], bad_files["corrupt"], good[1], bad_files["text"], good[2]])
    assert batch.names == ["good0.png", "good1.png", "good2.png"]
    assert {s.name for s in batch.skipped} == {"corrupt.png", "notes.jpg"}
    assert all(s.reason for s in batch.skipped)
    assert batch.labels is None


def test_only_bad_files_is_an_error_that_lists_them(bad_files):
    with pytest.raises(UploadError) as info:
        load_uploads(list(bad_files.values()))
    message = str(info.value)
    assert "None of the uploaded files" in message
    for path in bad_files.values():
        assert path.name in message


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_folders_become_labels_and_junk_is_skipped(tmp_path, png_bytes):
    img = png_bytes(np.zeros((28, 28), dtype=np.uint8))
    archive = _zip(
        tmp_path / "set.zip",
        {
            "shoes/a.png": img,
            "shoes/b.png": img,
            "bags/c.png": img,
            "bags/readme.txt": b"hello",
            "__MACOSX/bags/._c.png": b"junk",
            ".hidden/d.png": img,
            "inner.zip": b"PK\x03\x04",
        },
    )
    batch = load_uploads([archive])
    assert batch.names == ["set.zip/shoes/a.png", "set.zip/shoes/b.png", "set.zip/bags/c.png"]
    assert batch.labels == ["shoes", "shoes", "bags"]
    skipped = {s.name: s.reason for s in batch.skipped}
    assert "set.zip/bags/readme.txt" in skipped
    assert "zip" in skipped["set.zip/inner.zip"]
    assert not any("MACOSX" in name or ".hidden" in name for name in skipped)


def test_zip_bomb_member_is_skipped_without_extracting_it(tmp_path, monkeypatch, png_bytes):
    monkeypatch.setattr(uploads, "MAX_FILE_BYTES", 100_000)
    img = png_bytes(np.zeros((28, 28), dtype=np.uint8))
    archive = _zip(tmp_path / "bomb.zip", {"ok.png": img, "bomb.png": b"\0" * 5_000_000})
    assert archive.stat().st_size < 50_000
    batch = load_uploads([archive])
    assert batch.names == ["bomb.zip/ok.png"]
    assert "limit per file" in batch.skipped[0].reason


def test_a_corrupt_zip_is_reported(tmp_path):
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UploadError, match="broken.zip: not a readable zip archive"):
        load_uploads([path])


def test_file_count_is_capped(tmp_path, png_bytes):
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        path.write_bytes(png_bytes(np.full((8, 8), i, dtype=np.uint8)))
        paths.append(path)
    batch = load_uploads(paths, max_files=5)
    assert len(batch) == 5
    assert "at most 5 images" in batch.skipped[-1].reason
    assert batch.skipped[-1].name.startswith("2 more")


def test_an_image_over_the_pixel_limit_is_refused_by_its_header(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (6000, 5000), 10).save(path)  # 30 MP: over the app's limit, under Pillow's
    with pytest.raises(UploadError, match="6000×5000 pixels is more than the 25 megapixel"):
        load_image(path)


def test_a_password_protected_zip_is_listed_as_encrypted_not_an_error(tmp_path, png_bytes):
    import subprocess

    img = png_bytes(np.zeros((28, 28), dtype=np.uint8))
    (tmp_path / "a.png").write_bytes(img)
    archive = tmp_path / "locked.zip"
    subprocess.run(["zip", "-q", "-P", "secret", str(archive), "a.png"], cwd=tmp_path, check=True)
    with pytest.raises(UploadError) as info:
        load_uploads([archive])
    assert "locked.zip/a.png: encrypted (password-protected)" in str(info.value)
    # beside a readable image, the encrypted entry is skipped and the rest is used
    batch = load_uploads([archive, tmp_path / "a.png"])
    assert batch.names == ["a.png"] and "encrypted" in batch.skipped[0].reason


def test_zip_entries_that_leave_the_archive_are_listed_as_skipped(tmp_path, png_bytes):
    img = png_bytes(np.zeros((28, 28), dtype=np.uint8))
    archive = _zip(tmp_path / "evil.zip", {"ok/a.png": img, "../../etc/b.png": img})
    batch = load_uploads([archive])
    assert batch.names == ["evil.zip/ok/a.png"]
    skipped = {s.name: s.reason for s in batch.skipped}
    assert "leaves the archive" in skipped["evil.zip/../../etc/b.png"]


def test_the_skipped_list_is_capped(tmp_path, png_bytes):
    img = png_bytes(np.zeros((28, 28), dtype=np.uint8))
    files = {f"junk{i}.txt": b"x" for i in range(30)} | {"a.png": img}
    batch = load_uploads([_zip(tmp_path / "many.zip", files)])
    summary = batch.skipped_summary()
    assert len(batch.skipped) == 30
    assert summary.count("\n- many.zip/junk") == uploads.MAX_SKIPPED_LINES - 1
    assert summary.endswith("… and 10 more skipped files")


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp, mode="I;16").save(buffer, format="PNG")
    decoded = np.asarray(decode_image(buffer.getvalue(), "deep.png").convert("L"), dtype=float)
    assert np.abs(decoded - np.rint(ramp / 257.0)).max() <= 1
    assert (decoded == 255).mean() < 0.01  # clipped, 99.6 % of the pixels were 255


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped():
    from app.services.downloads import csv_cell

    assert csv_cell("=SUM(A1)") == "'=SUM(A1)" and csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("-2+3") == "'-2+3" and csv_cell("+1") == "'+1"
    assert csv_cell("shoes") == "shoes" and csv_cell(3) == 3
    assert csv_cell(" =1+1") == "' =1+1" and csv_cell("\u3000=1") == "'\u3000=1"
    assert csv_cell("\uff1dSUM(A1)") == "'\uff1dSUM(A1)"  # full-width =
    assert csv_cell("\ufe66 1") == "'\ufe66 1" and csv_cell("\uff0b1") == "'\uff0b1"
    assert csv_cell("a=b") == "a=b" and csv_cell("\tx") == "'\tx"


def test_long_names_keep_their_extension_in_the_zip():
    from app.services.downloads import MAX_NAME, safe_name

    long = "a" * 200 + ".jpeg"
    name = safe_name(7, f"folder/{long}")
    assert name.startswith("007_") and name.endswith(".jpeg")
    assert len(name) == 4 + MAX_NAME
    assert safe_name(1, "x/<b>.png") == "001__b_.png"
    assert safe_name(2, "noext") == "002_noext" and safe_name(3, "") == "003_image"


def _run_threads(work, n: int) -> list[str]:
    """Run ``work(errors)`` in ``n`` threads at once; the errors they appended."""
    errors: list[str] = []
    threads = [threading.Thread(target=work, args=(errors,), daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a thread is still waiting for the budget"
    return errors


def test_the_pixel_budget_lets_decodes_that_fit_run_at_once():
    """Two reservations of 5 fit a capacity of 10: both must be inside together (a barrier
    of two that breaks after 10 s if the budget made one wait), and never a third."""
    budget = uploads.PixelBudget(10)
    both_inside = threading.Barrier(2, timeout=10)
    lock, inside, most = threading.Lock(), [0], [0]

    def work(errors):
        with budget.reserve(5):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            try:
                both_inside.wait()
            except threading.BrokenBarrierError:
                errors.append("a reservation that fits waited for another to end")
            with lock:
                inside[0] -= 1

    assert _run_threads(work, 4) == []
    assert most[0] == 2 and budget.peak == 10 and budget.in_use == 0


def test_the_pixel_budget_holds_concurrent_decodes_under_its_capacity():
    """Eight reservations of 6 against a capacity of 10: the first one in holds the budget
    until all eight have asked for it (failing after 10 s if they never overlap), so the
    other seven are waiting on it at once, and still only one is ever inside."""
    n = 8
    budget = uploads.PixelBudget(10)
    lock, asked, inside, most = threading.Lock(), [0], [0], [0]
    all_asked = threading.Event()

    def work(errors):
        with lock:
            asked[0] += 1
            if asked[0] == n:
                all_asked.set()
        with budget.reserve(6):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            if not all_asked.wait(timeout=10):
                errors.append("the threads never asked for the budget at the same time")
            time.sleep(0.02)  # the last to ask reaches reserve's wait meanwhile
            with lock:
                inside[0] -= 1

    assert _run_threads(work, n) == []
    assert most[0] == 1 and budget.peak == 6 and budget.in_use == 0
    with budget.reserve(50):  # larger than the capacity: takes all of it, does not deadlock
        assert budget.in_use == 10


def test_a_request_stops_decoding_past_its_pixel_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_REQUEST_PIXELS", 3000)
    paths = []
    for i in range(3):
        path = tmp_path / f"im{i}.png"
        path.write_bytes(_image_bytes("L", "PNG", size=(40, 30)))  # 1,200 pixels each
        paths.append(path)
    batch = load_uploads(paths)
    assert batch.names == ["im0.png", "im1.png"]
    assert "megapixel budget per request" in batch.skipped[0].reason


@pytest.mark.parametrize(
    "fmt", ["PPM", "TGA", "ICO", "PCX", "SGI", "QOI", "DDS", "JPEG2000", "EPS"]
)
def test_formats_outside_the_promised_list_are_refused(fmt):
    """Only PNG, JPEG, GIF, BMP, WebP and TIFF are opened: Pillow would read these too (EPS
    through Ghostscript where it is installed)."""
    if fmt == "EPS":
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    else:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format=fmt)
        data = buffer.getvalue()
    with pytest.raises(UploadError, match="PNG, JPEG, GIF, BMP, WebP or TIFF"):
        decode_image(data, f"x.{fmt.lower()}")
    assert set(uploads.UPLOAD_FORMATS) == {"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"}


def test_zip_inflation_stops_once_the_request_budget_is_spent(tmp_path, monkeypatch, png_bytes):
    """The probe's 900 × 10 MB of zeros: entries are checked by their declared size before
    they are inflated, so only what fits the budget is extracted, and the images left over
    are named in one line at the top of the skipped list."""
    monkeypatch.setattr(uploads, "MAX_TOTAL_BYTES", 5_000_000)
    img = png_bytes(np.full((28, 28), 120, dtype=np.uint8))
    entries = {f"junk/{i:03}.bin": b"\0" * 1_000_000 for i in range(40)}
    entries.update({"real/a.png": img, "real/b.png": img})
    archive = _zip(tmp_path / "inflate.zip", entries)
    opened = []
    real_open = zipfile.ZipFile.open

    def counting_open(self, member, *args, **kwargs):
        opened.append(getattr(member, "filename", member))
        return real_open(self, member, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", counting_open)
    with pytest.raises(UploadError) as caught:
        load_uploads([archive])
    assert len(opened) == 5  # 5 × 1 MB fit the budget, the other 35 + 2 are not inflated
    first_line = str(caught.value).splitlines()[1]
    assert first_line.startswith("- 37 entries of inflate.zip: not extracted")
    assert "inflate.zip/real/a.png, inflate.zip/real/b.png" in first_line
    assert "(2 look like images)" in first_line
