"""Uploads in: decode what people send, safely, and say what was wrong with the rest.

Every upload goes through here before any model sees it. Limits (one place each):

* ``MAX_FILE_BYTES`` per file (also passed to Gradio as ``max_file_size``),
* ``MAX_FILES`` images per request (a zip counts its members),
* ``MAX_PIXELS`` per image: the header is read first and a larger image is refused
  before its pixel data is decoded (decompression bombs); Pillow's own guard is set to
  the same limit as a second line,
* ``MAX_TOTAL_BYTES`` of uncompressed data per request (zip bombs),
* ``MAX_REQUEST_PIXELS`` decoded pixels per request (summed over its images, from their
  headers, after JPEG's draft reduction), so 200 small files that each decode to 25
  megapixels cannot hold a worker for minutes,
* ``MAX_PIXELS_IN_FLIGHT`` decoded pixels across all concurrent requests
  (:data:`PIXELS_IN_FLIGHT`): a decode waits until its pixels fit, so memory stays bounded
  however many requests arrive at once; after a large decode the freed heap is handed back
  to the system (``malloc_trim``).

A file that is not an image, is corrupt or breaks a limit is reported by name and
skipped; the rest are processed. Only when nothing usable is left does a call raise
:class:`UploadError`, whose message is meant for a person.
"""

from __future__ import annotations

import ctypes
import os
import threading
import zipfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from eat_models import images

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_FILES = 200
MAX_PIXELS = 25_000_000
MAX_TOTAL_BYTES = 200 * 1024 * 1024
MAX_REQUEST_PIXELS = 100_000_000
MAX_PIXELS_IN_FLIGHT = 60_000_000
#: decodes at least this large give their freed memory back to the system afterwards
TRIM_AFTER_PIXELS = 4_000_000
# Decoded uploads are shrunk to this side at once (as on every road into a model), so 200
# uploads never hold more than a few MB of pixels; and only these formats are opened.
WORKING_MAX_SIDE = images.WORKING_MAX_SIDE
UPLOAD_FORMATS = images.IMAGE_FORMATS
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
#: skipped files listed by name before the rest are only counted
MAX_SKIPPED_LINES = 20

# Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; we refuse earlier
# ourselves (see decode_image), this is the second line for any other Image.open.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class UploadError(ValueError):
    """An upload that cannot be used at all; the message is shown to the user as is."""


class PixelBudget:
    """Decoded pixels held by decodes in progress, across threads, at most ``capacity``.

    :meth:`reserve` blocks until the pixels fit (a single reservation may take the whole
    capacity), so concurrent decodes of huge images queue instead of multiplying memory.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.in_use = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int):
        pixels = min(int(pixels), self.capacity)
        with self._cond:
            self._cond.wait_for(lambda: self.in_use + pixels <= self.capacity)
            self.in_use += pixels
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= pixels
                self._cond.notify_all()


PIXELS_IN_FLIGHT = PixelBudget(MAX_PIXELS_IN_FLIGHT)


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc); a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class UploadedImage:
    """One decoded image: its file name, the image (at most 512 px a side), its original
    bytes (for the download zip) and, for zip members in a folder, the folder name."""

    name: str
    image: Image.Image
    data: bytes
    label: str | None = None


@dataclass
class Skipped:
    """A file that was not used, and why (in words a person understands)."""

    name: str
    reason: str


@dataclass
class UploadBatch:
    """The usable images of one request and the files that were skipped."""

    images: list[UploadedImage] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def names(self) -> list[str]:
        return [item.name for item in self.images]

    @property
    def labels(self) -> list[str] | None:
        """Folder labels when every image has one and there are at least two kinds."""
        labels = [item.label for item in self.images]
        if not labels or any(label is None for label in labels) or len(set(labels)) < 2:
            return None
        return labels  # type: ignore[return-value]

    def skipped_summary(self, limit: int = MAX_SKIPPED_LINES) -> str:
        """One line per skipped file (at most ``limit``, then a count), or an empty string."""
        return summarise_skipped(self.skipped, limit)


def summarise_skipped(skipped, limit: int = MAX_SKIPPED_LINES, show_name=str) -> str:
    """``- name: reason`` per skipped file, at most ``limit`` lines, then how many more."""
    lines = [f"- {show_name(s.name)}: {s.reason}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"- … and {len(skipped) - limit} more skipped files")
    return "\n".join(lines)


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def decode_image(data: bytes, name: str, pixel_allowance: int | None = None) -> Image.Image:
    """Decode image bytes with :func:`eat_models.images.decode_image` (the library's one
    decoder, so an upload gives the tensor that training and ``eat index`` give), adding
    the upload limits: bytes per file, :data:`MAX_PIXELS`, what is left of the request's
    decoded-pixel budget (``pixel_allowance``) and the pixels held by all decodes in
    progress (:data:`PIXELS_IN_FLIGHT`). Raises :class:`UploadError` naming the file.
    """
    if len(data) > MAX_FILE_BYTES:
        raise UploadError(
            f"{name}: {_megabytes(len(data))} is larger than the {_megabytes(MAX_FILE_BYTES)} "
            "limit per file"
        )

    def reserve(size: tuple[int, int]):
        width, height = size
        if pixel_allowance is not None and width * height > pixel_allowance:
            raise UploadError(
                f"{name}: decoding its {width}×{height} pixels would pass "
                f"the {MAX_REQUEST_PIXELS / 1e6:.0f} megapixel budget per request"
            )
        return PIXELS_IN_FLIGHT.reserve(width * height)

    try:
        image = images.decode_image(data, name, max_pixels=MAX_PIXELS, reserve=reserve)
    except images.ImageDecodeError as exc:
        raise UploadError(f"{name}: {exc.reason}") from None
    if image.info["decoded_pixels"] >= TRIM_AFTER_PIXELS:
        _trim_heap()
    return image


def _read_limited(path: Path, name: str) -> bytes:
    try:
        size = path.stat().st_size
    except OSError:
        raise UploadError(f"{name}: the upload could not be read") from None
    if size > MAX_FILE_BYTES:
        raise UploadError(
            f"{name}: {_megabytes(size)} is larger than the {_megabytes(MAX_FILE_BYTES)} "
            "limit per file"
        )
    with open(path, "rb") as fh:
        return fh.read(MAX_FILE_BYTES + 1)


def display_name(path: str | os.PathLike, name: str | None = None) -> str:
    """The name to show for an upload: the given one, else the file name."""
    return name or Path(path).name


def load_image(path: str | os.PathLike, name: str | None = None) -> UploadedImage:
    """Decode one uploaded image file; raises :class:`UploadError` with its name."""
    if path is None:
        raise UploadError("No image was uploaded: choose an image file first.")
    name = display_name(path, name)
    data = _read_limited(Path(path), name)
    return UploadedImage(name=name, image=decode_image(data, name), data=data)


def _is_zip(path: Path) -> bool:
    if path.suffix.lower() == ".zip":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _unsafe_member(filename: str) -> bool:
    """A zip entry whose path climbs out of the archive or is absolute."""
    return filename.startswith(("/", "\\")) or ".." in filename.replace("\\", "/").split("/")


def _zip_members(path: Path, name: str) -> list[zipfile.ZipInfo]:
    """Entries worth opening: files, no hidden or ``__MACOSX`` folders. Entries with ``..``
    or an absolute path are kept, to be reported as skipped."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [
                info
                for info in zf.infolist()
                if not info.is_dir()
                and (
                    _unsafe_member(info.filename)
                    or not any(
                        part.startswith((".", "__MACOSX")) for part in info.filename.split("/")
                    )
                )
            ]
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UploadError(f"{name}: not a readable zip archive") from None


class _Collector:
    """Accumulates decoded images and skipped files under the per-request limits."""

    def __init__(self, max_files: int) -> None:
        self.batch = UploadBatch()
        self.max_files = max_files
        self.total_bytes = 0
        self.total_pixels = 0
        self.ignored = 0

    @property
    def full(self) -> bool:
        return len(self.batch.images) >= self.max_files

    def add(self, name: str, data: bytes, label: str | None = None) -> None:
        if self.full:
            self.ignored += 1
            return
        self.total_bytes += len(data)
        if self.total_bytes > MAX_TOTAL_BYTES:
            self.batch.skipped.append(
                Skipped(name, f"over the {_megabytes(MAX_TOTAL_BYTES)} limit per request")
            )
            return
        try:
            image = decode_image(data, name, MAX_REQUEST_PIXELS - self.total_pixels)
        except UploadError as exc:
            self.batch.skipped.append(Skipped(name, str(exc).removeprefix(f"{name}: ")))
            return
        self.total_pixels += image.info.get("decoded_pixels", 0)
        self.batch.images.append(UploadedImage(name=name, image=image, data=data, label=label))

    def skip(self, name: str, reason: str) -> None:
        self.batch.skipped.append(Skipped(name, reason))

    def add_zip(self, path: Path, name: str) -> None:
        members = _zip_members(path, name)
        over_budget: list[str] = []
        with zipfile.ZipFile(path) as zf:
            for info in members:
                member = PurePosixPath(info.filename)
                shown = f"{name}/{info.filename}"
                if self.full:
                    self.ignored += 1
                    continue
                if _unsafe_member(info.filename):
                    self.skip(shown, "its path leaves the archive ('..' or absolute): not opened")
                    continue
                if info.flag_bits & 0x1:
                    self.skip(shown, "encrypted (password-protected): cannot be opened")
                    continue
                if member.suffix.lower() == ".zip":
                    self.skip(shown, "zip files inside a zip are not opened")
                    continue
                if info.file_size > MAX_FILE_BYTES:
                    self.skip(shown, f"larger than the {_megabytes(MAX_FILE_BYTES)} limit per file")
                    continue
                if self.total_bytes + info.file_size > MAX_TOTAL_BYTES:
                    # by its declared size, before inflating it (a lying header is caught
                    # by the read's cap and add()'s count of what really came out)
                    over_budget.append(shown)
                    continue
                try:
                    with zf.open(info) as fh:
                        data = fh.read(MAX_FILE_BYTES + 1)
                except (
                    zipfile.BadZipFile,
                    OSError,
                    ValueError,
                    NotImplementedError,
                    EOFError,
                    RuntimeError,  # zipfile's "encrypted, password required"
                ):
                    self.skip(shown, "could not be extracted (corrupt or encrypted)")
                    continue
                label = member.parent.name or None
                self.add(shown, data, label)
        if over_budget:
            self.batch.skipped.insert(0, _over_budget(name, over_budget))


def _over_budget(name: str, entries: list[str], named: int = 5) -> Skipped:
    """One line for the zip entries left unextracted once the request's budget of
    uncompressed data was spent, naming those that look like images first."""
    looks = [e for e in entries if PurePosixPath(e).suffix.lower() in IMAGE_SUFFIXES]
    rest = [e for e in entries if e not in set(looks)]
    shown = (looks + rest)[:named]
    more = len(entries) - len(shown)
    return Skipped(
        f"{len(entries)} entries of {name}",
        f"not extracted: the {_megabytes(MAX_TOTAL_BYTES)} budget of uncompressed data per "
        f"request was spent on the entries before them; among them "
        + ", ".join(shown)
        + (f" and {more} more" if more else "")
        + (f" ({len(looks)} look like images)" if looks else ""),
    )


def load_uploads(
    paths: Sequence[str | os.PathLike] | None,
    names: Sequence[str] | None = None,
    max_files: int = MAX_FILES,
) -> UploadBatch:
    """Decode uploaded image files and zip archives (members in folders get the folder
    name as label). Bad files are skipped and listed; raises :class:`UploadError` when
    nothing was uploaded or no image at all could be used."""
    paths = [p for p in (paths or []) if p]
    if not paths:
        raise UploadError("No files were uploaded: choose image files or one zip archive.")
    collector = _Collector(max_files)
    for i, raw in enumerate(paths):
        path = Path(raw)
        name = names[i] if names is not None else path.name
        if collector.full:
            collector.ignored += 1
            continue
        try:
            if _is_zip(path):
                collector.add_zip(path, name)
            else:
                collector.add(name, _read_limited(path, name))
        except UploadError as exc:
            collector.skip(name, str(exc).removeprefix(f"{name}: "))
    batch = collector.batch
    if collector.ignored:
        batch.skipped.append(
            Skipped(
                f"{collector.ignored} more file(s)",
                f"ignored: at most {max_files} images are processed per request",
            )
        )
    if not batch.images:
        detail = batch.skipped_summary()
        raise UploadError(
            "None of the uploaded files could be used as an image."
            + (f"\n{detail}" if detail else "")
        )
    return batch
