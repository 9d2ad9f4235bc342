"""What the tabs share: errors a person can read, per-request download folders, gallery
thumbnails served as files, and factories for the components that recur across tabs."""

from __future__ import annotations

import functools
import html
import inspect
import logging
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import gradio as gr
from gradio.utils import get_upload_folder

from ..services import Services
from ..services.display import save_png
from ..services.errors import USER_ERRORS

log = logging.getLogger(__name__)

HEAVY_QUEUE = "heavy"  # clustering and attacks share one worker
DOWNLOADS_MAX_AGE_S = 3600
STATUS_REFRESH_S = 10.0  # the header re-reads the UMAP state until it is warm
INTRO = (
    "# EAT — robust image search, clustering and an attack lab\n"
    "Deep-metric-learning embeddings of a plain (**vanilla**) model, a single adversarially "
    "trained **baseline** model (when shipped) and an **EAT** (Ensemble Adversarial "
    "Training) ensemble, side by side: search the gallery, cluster your own images, and "
    "watch an adversarial perturbation move each model's embedding."
)
CSS = """
.eat-pixel img, .thumbnail-item img { image-rendering: pixelated; }
.compact-gallery .grid-wrap.fixed-height { min-height: 0 !important; max-height: none !important; }
.compact-gallery .caption-label {
    font-size: 11px !important; padding: 1px 4px !important;
    max-width: 100% !important; white-space: normal !important; text-overflow: clip !important;
    overflow: visible !important; line-height: 1.15 !important;
}
.prose table th, .prose table td {
    word-break: normal !important; overflow-wrap: normal !important;
}
#lab-panels .compact-gallery .caption-label {
    font-size: 9px !important; padding: 0 2px !important;
}
.prose table { display: block; overflow-x: auto; max-width: 100%; }
#report-plots .grid-container {
    grid-template-columns: minmax(0, 1fr) !important; max-width: 900px;
}
#report-plots img { object-fit: contain !important; height: auto !important; }
#report-plots .grid-wrap { max-height: none !important; min-height: 0 !important;
    padding-top: 34px !important; height: auto !important; overflow: visible !important; }
#report-plots .thumbnail-item { aspect-ratio: auto !important; height: auto !important; }
.compact-gallery .grid-container {
    grid-template-columns: repeat(auto-fill, minmax(var(--eat-thumb, 88px), 1fr)) !important;
}
#lab-panels .compact-gallery .grid-container {
    grid-template-columns: repeat(5, minmax(0, 1fr)) !important;
}
#search-examples .grid-wrap, #lab-gallery .grid-wrap { padding-top: 34px !important; }
.eat-query { display: flex; gap: 12px; flex-wrap: wrap; }
#search-query figure, .eat-hits figure { margin: 0; }
#search-query figure img { height: 230px; width: auto; max-width: 100%; object-fit: contain;
    border: 1px solid var(--border-color-primary); border-radius: 6px; }
#search-query figcaption, .eat-results h4 { font-size: 13px; margin: 2px 0 4px; }
#search-seen img, .eat-hits img { image-rendering: pixelated; }
.eat-results-row { display: flex; gap: 14px; flex-wrap: wrap; }
.eat-results { flex: 1 1 240px; min-width: 0; }
.eat-hits { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 6px; }
.eat-hits img { width: 100%; aspect-ratio: 1; border-radius: 4px; display: block; }
.eat-hits figcaption { font-size: 11px; line-height: 1.15; overflow-wrap: anywhere; }
#cluster-output .compact-gallery .grid-container {
    grid-template-columns: repeat(auto-fill, 96px) !important;
}
"""


def error_for_people(message: str, title: str) -> gr.Error:
    """A ``gr.Error`` whose message shows literally: Gradio renders a toast's message as
    HTML, and messages quote file names that people chose (a zip entry called
    ``<img src=…>.png`` must not load anything). Newlines stay line breaks."""
    text = html.escape(message).replace("\n", "<br>")
    return gr.Error(text, title=title, print_exception=False)


def user_errors(action: str):
    """Turn bad input into a readable ``gr.Error``; log anything else, show a short note."""

    def readable(exc: Exception) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, USER_ERRORS):
            return error_for_people(str(exc), f"Cannot {action}")
        log.exception("unexpected error while trying to %s", action)
        return error_for_people(
            f"Something went wrong while trying to {action}. The server logged the "
            "details; please try another image or setting.",
            f"Could not {action}",
        )

    def decorate(fn):
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def waited(*args, **kwargs):
                try:
                    return await fn(*args, **kwargs)
                except Exception as exc:
                    error = readable(exc)
                    if error is exc:
                        raise
                    raise error from None

            return waited

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                error = readable(exc)
                if error is exc:
                    raise
                raise error from None

        return wrapper

    return decorate


def downloads_dir() -> Path:
    """A new per-request folder under Gradio's upload folder (which it may serve); old
    ones are removed."""
    root = Path(get_upload_folder()) / "eat-downloads"
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - DOWNLOADS_MAX_AGE_S
    for old in root.iterdir():
        try:
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix="req-", dir=root))


class ThumbnailFiles:
    """Gallery thumbnails as PNG files in Gradio's upload folder, written once each.

    Returning these paths lets Gradio serve them as they are (no PNG encoding, hashing,
    copying or path checks per request) under stable URLs the browser caches. The folder
    holds only gallery thumbnails, which the app shows anyway; nothing private.
    """

    def __init__(self, services: Services) -> None:
        res = services.resources
        self.resources = res
        self.directory = Path(get_upload_folder()) / "eat-thumbnails" / res.cache_dir.name
        self.directory.mkdir(parents=True, exist_ok=True)
        # Declared static, Gradio serves them without its per-request path checks and copies.
        gr.set_static_paths(paths=[self.directory])
        self._paths: dict[int, str] = {}
        self._urls: dict[int, str] = {}

    def path(self, item_id: int) -> str:
        found = self._paths.get(item_id)
        if found is not None:
            return found
        path = self.directory / f"{int(item_id)}.png"
        if not path.is_file():
            save_png(self.resources.thumbnail(item_id), path)
        self._paths[item_id] = str(path)
        return self._paths[item_id]

    def hits(self, hits) -> list[tuple[str, str]]:
        return [(self.path(h.item_id), h.caption) for h in hits]

    def url(self, item_id: int) -> str:
        """The thumbnail's URL, relative to the page (so it holds behind a proxy's root
        path), for HTML that shows results without Gradio's per-file output processing."""
        found = self._urls.get(item_id)
        if found is None:
            found = self._urls[item_id] = "gradio_api/file=" + quote(self.path(item_id))
        return found


def file_path(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return file_path(value[0]) if value else None
    if isinstance(value, dict):  # an event without preprocessing: the FileData as sent
        return value.get("path") or None
    return getattr(value, "path", None) or str(value)


def file_paths(value) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [p for p in (file_path(v) for v in values) if p]


#: how often (and past what age, seconds) Gradio's cached uploads are deleted
CACHE_SWEEP_S = 3600


class ErrorNotes:
    """The last error of an unqueued event, per browser session, until a queued follow-up
    shows it. Gradio 6's page shows no toast for an error of an event outside the queue
    (its client drops the error's ``visible`` flag), while an unqueued event answers in one
    request; so the unqueued search raises as usual (callers of ``/run/search`` get the
    message with its 500) and notes the error here, and its queued ``.failure`` follow-up,
    which runs only when it failed, raises it again where the page does show it. Notes are
    few and short (the oldest go past :attr:`limit`), and a note is shown at most once."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._notes: OrderedDict[str, gr.Error] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, request: gr.Request | None, error: gr.Error) -> None:
        session = getattr(request, "session_hash", None)
        if not session:
            return
        with self._lock:
            self._notes[session] = error
            self._notes.move_to_end(session)
            while len(self._notes) > self.limit:
                self._notes.popitem(last=False)

    def show(self, request: gr.Request) -> None:
        """The queued follow-up: raise the session's noted error (the page's toast)."""
        with self._lock:
            error = self._notes.pop(getattr(request, "session_hash", None) or "", None)
        if error is not None:
            raise error

    def __len__(self) -> int:
        return len(self._notes)


@dataclass
class UI:
    """What every tab builds from: the services and the gallery thumbnails as files."""

    services: Services
    thumbs: ThumbnailFiles
    #: errors of the unqueued search, for its queued follow-up to show (:class:`ErrorNotes`)
    error_notes: ErrorNotes = field(default_factory=ErrorNotes)

    @property
    def resources(self):
        return self.services.resources

    def model_choices(self, keys: Sequence[str]) -> list[tuple[str, str]]:
        return [(self.resources.views[key].label, key) for key in keys]


def failed(what: str, blanks: int):
    """After a failed request: no stale result under the error, and a note why."""

    def clear():
        note = f"*Nothing to show: the last {what} failed (the message says why).*"
        return note, *[gr.update(value=None) for _ in range(blanks)]

    return clear


# --------------------------------------------------------------------------- components


def upload(label: str, elem_id: str, **options) -> gr.File:
    """An upload box for images (``options``: e.g. ``file_count``, ``height``)."""
    options.setdefault("file_types", ["image"])
    return gr.File(label=label, elem_id=elem_id, **options)


def thumbnails(elem_id: str, label: str | None = None, **options) -> gr.Gallery:
    """A gallery of small thumbnails with short captions (results, picks, clusters)."""
    settings = {
        "height": "auto",
        "elem_classes": "compact-gallery",
        "preview": False,
        "format": "png",
    }
    return gr.Gallery(label=label, elem_id=elem_id, **{**settings, **options})


def picture(label: str, elem_id: str, *, pixelated: bool = False, **options) -> gr.Image:
    """A read-only image (model inputs and perturbations are shown with crisp pixels)."""
    settings = {"type": "pil", "interactive": False, "format": "png"}
    if pixelated:
        settings["elem_classes"] = "eat-pixel"
    return gr.Image(label=label, elem_id=elem_id, **{**settings, **options})


def _out_of_range(label: str, value, low, high) -> gr.Error:
    return error_for_people(
        f"{label} must lie between {low:g} and {high:g}; {value!r} is outside that range.",
        "Value out of range",
    )


def slider(low: float, high: float, value: float, step: float, label: str, elem_id: str):
    """A ``gr.Slider`` whose out-of-range values (sent by API clients; the page cannot) get
    a plain message naming the control, and no traceback in the server log (Gradio's own
    bounds check raises an error that prints one for every such request). The check wraps
    this instance's ``preprocess``: subclassing a Gradio component would make Gradio write a
    ``.pyi`` stub beside this module at import."""
    control = gr.Slider(low, high, value=value, step=step, label=label, elem_id=elem_id)
    gradio_preprocess = control.preprocess

    def preprocess(payload: float) -> float:
        if isinstance(payload, (int, float)) and not (low <= payload <= high):
            raise _out_of_range(label, payload, low, high)
        return gradio_preprocess(payload)

    control.preprocess = preprocess
    return control


def raw_json(prefix: str) -> gr.JSON:
    """The request's full result, folded away."""
    with gr.Accordion("Raw results (JSON)", open=False, elem_id=f"{prefix}-raw"):
        return gr.JSON(elem_id=f"{prefix}-json")


def choice(labels: dict[str, str], value: str, label: str, elem_id: str) -> gr.Radio:
    """Radio buttons over ``labels`` (value → what a person reads)."""
    choices = [(text, key) for key, text in labels.items()]
    return gr.Radio(choices=choices, value=value, label=label, elem_id=elem_id)


def model_picker(ui: UI, keys: Sequence[str], label: str, elem_id: str, *, one: str | None = None):
    """Tick boxes for several of the models (all ticked), or radio buttons for ``one``."""
    if one is not None:
        return gr.Radio(choices=ui.model_choices(keys), value=one, label=label, elem_id=elem_id)
    choices = ui.model_choices(keys)
    return gr.CheckboxGroup(choices=choices, value=list(keys), label=label, elem_id=elem_id)
