"""The Search tab: upload a photo or pick an example, see each chosen model's top-k."""

from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr
from PIL import Image, ImageOps

from ..services.display import data_uri
from ..services.search import DEFAULT_K, check_k
from ..services.search import MAX_K as MAX_RESULTS
from ..services.uploads import UploadError, load_image
from . import common, present
from .common import UI

#: How the search runs: outside the queue, in one request (as /api/search), and without
#: Gradio's per-component pre- and postprocessing. Each of those is a hop to a worker
#: thread and back per input and per output, seven per search, which under 20 searches at
#: once cost more than the search itself; the handler takes the values as sent (the
#: upload's FileData: Gradio still checks that its file was uploaded and moves it into
#: the cache) and returns values the page shows as they are (HTML, Markdown, a dict).
#: The search service checks the models and k itself.
RAW = {"queue": False, "preprocess": False, "postprocess": False}

QUERY_SIDE = 256  # the uploaded image is shown at most this large, beside what the model saw


def _figure(caption: str, uri: str | None, elem_id: str) -> str:
    picture = f"<img src='{uri}' alt='{html.escape(caption)}'>" if uri else ""
    return (
        f"<figure id='{elem_id}'>{picture}<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def query_html(shown: Image.Image | None = None, seen: Image.Image | None = None) -> str:
    """The query as the user gave it (a JPEG of at most QUERY_SIDE pixels) beside what the
    model saw (its 28×28 input, drawn with crisp pixels), inlined: no files, no requests."""
    if shown is None and seen is None:
        return ""  # before the first search: no empty frames on the first screen
    return (
        "<div class='eat-query'>"
        + _figure("Your image", data_uri(shown, "JPEG") if shown else None, "search-shown")
        + _figure("What the model saw (28×28)", data_uri(seen) if seen else None, "search-seen")
        + "</div>"
    )


def results_html(models: list[tuple[str, str, list]], url) -> str:
    """Each model's hits, side by side: ``models`` holds (key, label, hits); ``url(item_id)``
    gives a thumbnail's URL (a static file the browser caches)."""
    sections = []
    for key, label, hits in models:
        figures = "".join(
            f"<figure class='gallery-item'><img src='{url(h.item_id)}' "
            f"alt='{html.escape(h.caption)}' loading='lazy'>"
            f"<figcaption>{html.escape(h.caption)}</figcaption></figure>"
            for h in hits
        )
        sections.append(
            f"<section class='eat-results' id='search-results-{key}'>"
            f"<h4>{html.escape(label)}</h4><div class='eat-hits'>{figures}</div></section>"
        )
    return f"<div class='eat-results-row'>{''.join(sections)}</div>"


def build(ui: UI) -> None:
    res, services = ui.resources, ui.services
    keys, examples = res.keys, services.examples
    with gr.Tab("Search", id="search", elem_id="tab-search"):
        example_state = gr.State(None)
        with gr.Row(elem_id="search-row"):
            with gr.Column(scale=1, min_width=330, elem_id="search-controls"):
                query_file = common.upload(
                    "Upload a photo (PNG, JPEG, …; ≤ 10 MB)", "search-upload", height=150
                )
                # right under the upload, so that it is on the first screen at 1280×720
                search_button = gr.Button("Search", variant="primary", elem_id="search-button")
                example_gallery = common.thumbnails(
                    "search-examples",
                    "…or pick an example",
                    value=[(e.image, e.name.split("-", 1)[-1]) for e in examples],
                    columns=3,
                    height=370,
                    allow_preview=False,
                )
                search_model = common.model_picker(
                    ui, keys, "Models (each one chosen is shown side by side)", "search-model"
                )
                search_k = common.slider(1, MAX_RESULTS, DEFAULT_K, 1, "Results", "search-k")
            with gr.Column(scale=3, elem_id="search-output"):
                # Two light HTML outputs rather than two images and a gallery per model:
                # Gradio would encode, hash and path-check each of them as files on every
                # search, and that, not the search, set the page's latency under load.
                query_view = gr.HTML(query_html(), elem_id="search-query")
                search_info = gr.Markdown(elem_id="search-info")
                results_view = gr.HTML(
                    "<p class='eat-hint'>Each chosen model's top results show here.</p>",
                    elem_id="search-results",
                )
                search_json = common.raw_json("search")

    def run_search(file, example_index, models, k):
        k = check_k(k)  # the values arrive as sent (RAW): the cheap checks first
        started = time.perf_counter()
        path = common.file_path(file)
        if path is not None:
            image, query = load_image(path).image, f"your upload {Path(path).name}"
        elif example_index is not None and 0 <= int(example_index) < len(examples):
            example = examples[int(example_index)]
            image, query = example.image, f"the example {example.name.split('-', 1)[-1]}"
        else:
            raise UploadError("No query image: upload an image or pick an example.")
        read = time.perf_counter() - started if path is not None else 0.0
        result = services.search.search(image, models, k)
        result.read_seconds, result.query = read, query
        show = result.results
        big = max(image.size) > QUERY_SIDE
        shown = ImageOps.contain(image, (QUERY_SIDE, QUERY_SIDE)) if big else image
        return (
            query_html(shown, result.model_input),
            present.search_markdown(result),
            results_html(
                [(key, res.views[key].label, show[key].hits) for key in keys if key in show],
                ui.thumbs.url,
            ),
            result.to_dict(),
        )

    @common.user_errors("search")
    async def limited_search(file, example_index, models, k):
        return await services.search.limited(lambda: run_search(file, example_index, models, k))

    async def search(file, example_index, models, k, request: gr.Request):
        # Not queued: one request answers it (no queue join, no event stream), the
        # browser's as the JSON route's. The server's search slots, shared with
        # POST /api/search, bound how many decode and search at once, whoever calls.
        try:
            return await limited_search(file, example_index, models, k)
        except gr.Error as error:
            ui.error_notes.keep(request, error)  # for the queued follow-up's toast
            raise

    def pick_example(evt: gr.SelectData):
        return evt.index, None

    outputs = [query_view, search_info, results_view, search_json]
    inputs = [query_file, example_state, search_model, search_k]
    blank = [query_view, results_view, search_json]

    def when_it_fails(searched) -> None:
        """No stale result under the error, and the error's toast (a queued follow-up that
        runs only after a failure: see :class:`~app.ui.common.ErrorNotes`)."""
        searched.failure(
            common.failed("search", len(blank)),
            outputs=[search_info, *blank],
            api_visibility="private",
            queue=False,
        )
        searched.failure(ui.error_notes.show, api_visibility="private")

    when_it_fails(
        gr.on(
            [search_button.click, query_file.upload],
            search,
            inputs=inputs,
            outputs=outputs,
            api_name="search",
            api_description="Top-k gallery items for an uploaded image: (file, models: a "
            f"list of {', '.join(repr(k) for k in keys)}, k) -> (query HTML, summary Markdown, "
            "results HTML, results as a dict: per model its hits with item id, class and "
            "cosine). POST /api/search answers the same in one JSON round trip.",
            **RAW,
        )
    )
    # Clearing the upload also forgets a previously picked example, so Search never
    # quietly runs on an image that is no longer shown.
    query_file.clear(lambda: None, outputs=[example_state], api_visibility="private", queue=False)
    # An upload replaces a picked example: the example state is forgotten, and the example
    # is no longer highlighted as if it were the query (Gradio 6's gallery keeps its
    # highlight through selected_index=None, so the page's own script removes it).
    query_file.upload(lambda: None, outputs=[example_state], api_visibility="private", queue=False)
    query_file.upload(
        None,
        js="() => { document.querySelectorAll('#search-examples .thumbnail-item.selected')"
        ".forEach(e => e.classList.remove('selected')); }",
        api_visibility="private",
        queue=False,
    )
    when_it_fails(
        example_gallery.select(
            pick_example, outputs=[example_state, query_file], api_visibility="private", queue=False
        ).then(
            # like the search button: this event takes an uploaded file too, and its search
            # waits for one of the same slots
            search,
            inputs=inputs,
            outputs=outputs,
            api_visibility="private",
            **RAW,
        )
    )
