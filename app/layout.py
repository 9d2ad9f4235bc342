"""The Gradio layout: four tabs wired to the services, nothing else.

Every component has an ``elem_id``; the public API endpoints are ``/search``,
``/cluster``, ``/attack``, ``/report`` and ``/status`` (callable with gradio_client);
helper events (picking an example, previews) are private. Handlers turn uploads into
PIL images through :mod:`app.uploads`, call one service, and turn what goes wrong into a
``gr.Error`` a person understands — the full traceback goes to the server log only.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder
from PIL import ImageOps

from index import SearchIndexError

from . import present
from .attack_lab import ATTACK_LABELS, DEFAULT_EPS, DEFAULT_STEPS, LAB_ORDER
from .clustering import ALGORITHM_LABELS, AUTO_K_RANGE, MAX_ATTACK_STEPS, MAX_EPS, MAX_K
from .search import DEFAULT_K
from .search import MAX_K as MAX_RESULTS
from .services import Services
from .uploads import UploadError, load_image, load_uploads

log = logging.getLogger(__name__)

CLUSTER_SLOTS = 12
QUERY_SIDE = 256  # the uploaded image is shown at most this large, beside what the model saw
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
#report-plots .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
#report-plots img { object-fit: contain !important; }
.compact-gallery .grid-container {
    grid-template-columns: repeat(auto-fill, minmax(var(--eat-thumb, 88px), 1fr)) !important;
}
#lab-panels .compact-gallery .grid-container {
    grid-template-columns: repeat(5, minmax(0, 1fr)) !important;
}
#search-examples .grid-wrap, #lab-gallery .grid-wrap { padding-top: 34px !important; }
#cluster-output .compact-gallery .grid-container {
    grid-template-columns: repeat(auto-fill, 96px) !important;
}
"""


def user_errors(action: str):
    """Turn bad input into a readable ``gr.Error``; log anything else, show a short note."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except (UploadError, ValueError, SearchIndexError) as exc:
                raise gr.Error(str(exc), title=f"Cannot {action}", print_exception=False) from None
            except Exception:
                log.exception("unexpected error while trying to %s", action)
                raise gr.Error(
                    f"Something went wrong while trying to {action}. The server logged the "
                    "details; please try another image or setting.",
                    title="Error",
                    print_exception=False,
                ) from None

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

    def path(self, item_id: int) -> str:
        found = self._paths.get(item_id)
        if found is not None:
            return found
        path = self.directory / f"{int(item_id)}.png"
        if not path.is_file():
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
            self.resources.thumbnail(item_id).save(tmp, format="PNG")
            os.replace(tmp, path)
        self._paths[item_id] = str(path)
        return self._paths[item_id]

    def hits(self, hits) -> list[tuple[str, str]]:
        return [(self.path(h.item_id), h.caption) for h in hits]


def _file_path(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return _file_path(value[0]) if value else None
    return getattr(value, "path", None) or str(value)


def _file_paths(value) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [p for p in (_file_path(v) for v in values) if p]


#: how often (and past what age, seconds) Gradio's cached uploads are deleted
CACHE_SWEEP_S = 3600


def build_demo(services: Services) -> gr.Blocks:
    """The Blocks app; launch it with the settings in :mod:`app.server`."""
    res = services.resources
    keys = res.keys
    lab_keys = tuple(k for k in LAB_ORDER if k in keys)
    examples = services.examples
    picks = services.lab_picks
    thumbs = ThumbnailFiles(services)

    # Uploads and outputs Gradio caches are deleted once an hour older than an hour, so
    # the temporary folder does not grow without bound.
    with gr.Blocks(
        title="EAT — robust image search",
        analytics_enabled=False,
        delete_cache=(CACHE_SWEEP_S, CACHE_SWEEP_S),
    ) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        status_md = gr.Markdown(elem_id="status")
        status_json = gr.JSON(visible=False, elem_id="status-json")
        status_timer = gr.Timer(STATUS_REFRESH_S)

        with gr.Tabs(elem_id="tabs"):
            # ---------------------------------------------------------------- search
            with gr.Tab("Search", id="search", elem_id="tab-search"):
                example_state = gr.State(None)
                with gr.Row(elem_id="search-row"):
                    with gr.Column(scale=1, min_width=330, elem_id="search-controls"):
                        query_file = gr.File(
                            label="Upload a photo (PNG, JPEG, …; ≤ 10 MB)",
                            file_types=["image"],
                            elem_id="search-upload",
                            height=150,
                        )
                        example_gallery = gr.Gallery(
                            value=[(e.image, e.name.split("-", 1)[-1]) for e in examples],
                            label="…or pick an example",
                            columns=3,
                            height=370,
                            allow_preview=False,
                            format="png",
                            elem_id="search-examples",
                            elem_classes="compact-gallery",
                            preview=False,
                        )
                        search_model = gr.CheckboxGroup(
                            choices=[(res.views[key].label, key) for key in keys],
                            value=list(keys),
                            label="Models (each one chosen is shown side by side)",
                            elem_id="search-model",
                        )
                        search_k = gr.Slider(
                            1,
                            MAX_RESULTS,
                            value=DEFAULT_K,
                            step=1,
                            label="Results",
                            elem_id="search-k",
                        )
                        search_button = gr.Button(
                            "Search", variant="primary", elem_id="search-button"
                        )
                    with gr.Column(scale=3, elem_id="search-output"):
                        with gr.Row(elem_id="search-query-row"):
                            query_shown = gr.Image(
                                label="Your image",
                                type="pil",
                                interactive=False,
                                height=230,
                                format="png",
                                elem_id="search-query",
                            )
                            seen = gr.Image(
                                label="What the model saw (28×28)",
                                type="pil",
                                interactive=False,
                                height=230,
                                format="png",
                                elem_id="search-seen",
                                elem_classes="eat-pixel",
                            )
                            search_info = gr.Markdown(elem_id="search-info")
                        with gr.Row(elem_id="search-results-row"):
                            search_galleries = {
                                key: gr.Gallery(
                                    label=res.views[key].label,
                                    columns=4,
                                    height="auto",
                                    elem_classes="compact-gallery",
                                    preview=False,
                                    format="png",
                                    elem_id=f"search-results-{key}",
                                )
                                for key in keys
                            }
                        with gr.Accordion("Raw results (JSON)", open=False, elem_id="search-raw"):
                            search_json = gr.JSON(elem_id="search-json")

            # ---------------------------------------------------------------- cluster
            with gr.Tab("Cluster", id="cluster", elem_id="tab-cluster"):
                with gr.Row(elem_id="cluster-row"):
                    with gr.Column(scale=1, min_width=330, elem_id="cluster-controls"):
                        gr.Markdown(
                            f"Upload images or one zip: {present.limits_text()}. "
                            "Folders inside a zip are read as class labels (for NMI / ARI).",
                            elem_id="cluster-limits",
                        )
                        cluster_files = gr.File(
                            label="Images or a zip",
                            file_count="multiple",
                            file_types=["image", ".zip"],
                            height=150,
                            elem_id="cluster-upload",
                        )
                        cluster_model = gr.Radio(
                            choices=[(res.views[key].label, key) for key in keys],
                            value="eat",
                            label="Model",
                            elem_id="cluster-model",
                        )
                        cluster_algorithm = gr.Radio(
                            choices=[(ALGORITHM_LABELS[a], a) for a in ALGORITHM_LABELS],
                            value="kmeans",
                            label="Algorithm (HDBSCAN finds K itself)",
                            elem_id="cluster-algorithm",
                        )
                        cluster_auto = gr.Checkbox(
                            value=True,
                            label=f"Choose K automatically (silhouette over {AUTO_K_RANGE[0]}–"
                            f"{AUTO_K_RANGE[1]})",
                            elem_id="cluster-auto-k",
                        )
                        cluster_k = gr.Slider(
                            2,
                            MAX_K,
                            value=4,
                            step=1,
                            label="K (when not automatic)",
                            elem_id="cluster-k",
                        )
                        with gr.Accordion("Attack this set", open=False, elem_id="cluster-attack"):
                            cluster_attack = gr.Checkbox(
                                value=False,
                                label="Perturb a fraction p of the images with the clustering "
                                "attack and compare the models side by side",
                                elem_id="cluster-attack-on",
                            )
                            cluster_fraction = gr.Slider(
                                0.05,
                                1.0,
                                value=0.3,
                                step=0.05,
                                label="p (attacked fraction)",
                                elem_id="cluster-fraction",
                            )
                            cluster_eps = gr.Slider(
                                0.0,
                                MAX_EPS,
                                value=DEFAULT_EPS,
                                step=0.01,
                                label="ε (L∞)",
                                elem_id="cluster-eps",
                            )
                            cluster_steps = gr.Slider(
                                1,
                                MAX_ATTACK_STEPS,
                                value=10,
                                step=1,
                                label="PGD steps",
                                elem_id="cluster-steps",
                            )
                        cluster_button = gr.Button(
                            "Cluster", variant="primary", elem_id="cluster-button"
                        )
                    with gr.Column(scale=3, elem_id="cluster-output"):
                        cluster_info = gr.Markdown(elem_id="cluster-info")
                        with gr.Row(elem_id="cluster-map-row"):
                            cluster_map = gr.Image(
                                label="Map of the set, coloured by cluster",
                                type="pil",
                                interactive=False,
                                format="png",
                                elem_id="cluster-map",
                            )
                            with gr.Column(min_width=200, elem_id="cluster-downloads"):
                                cluster_csv = gr.File(
                                    label="file → cluster (CSV)",
                                    interactive=False,
                                    elem_id="cluster-csv",
                                )
                                cluster_zip = gr.File(
                                    label="images by cluster (zip)",
                                    interactive=False,
                                    elem_id="cluster-zip",
                                )
                        cluster_galleries = [
                            gr.Gallery(
                                visible=False,
                                columns=10,
                                height="auto",
                                elem_classes="compact-gallery",
                                preview=False,
                                format="png",
                                allow_preview=False,
                                elem_id=f"cluster-gallery-{i + 1}",
                            )
                            for i in range(CLUSTER_SLOTS)
                        ]
                        cluster_attack_info = gr.Markdown(elem_id="cluster-attack-info")
                        cluster_attack_map = gr.Image(
                            label="After the attack: each model",
                            type="pil",
                            interactive=False,
                            visible=False,
                            format="png",
                            elem_id="cluster-attack-map",
                        )
                        with gr.Accordion("Raw results (JSON)", open=False, elem_id="cluster-raw"):
                            cluster_json = gr.JSON(elem_id="cluster-json")

            # ---------------------------------------------------------------- attack lab
            with gr.Tab("Attack lab", id="lab", elem_id="tab-lab"):
                with gr.Row(elem_id="lab-row"):
                    with gr.Column(scale=1, min_width=330, elem_id="lab-controls"):
                        lab_file = gr.File(
                            label="Upload an image to attack (≤ 10 MB)",
                            file_types=["image"],
                            elem_id="lab-upload",
                        )
                        lab_pick = gr.Gallery(
                            value=[
                                (thumbs.path(i), res.class_name(int(res.labels[i]))) for i in picks
                            ],
                            label="…or pick a gallery image",
                            columns=5,
                            height=260,
                            allow_preview=False,
                            format="png",
                            elem_id="lab-gallery",
                            elem_classes="compact-gallery",
                        )
                        lab_item = gr.Number(
                            value=picks[0] if picks else -1,
                            precision=0,
                            label="Gallery item id (−1: the uploaded image)",
                            elem_id="lab-item",
                        )
                        lab_kind = gr.Radio(
                            choices=[(ATTACK_LABELS[k], k) for k in ATTACK_LABELS],
                            value="es",
                            label="Attack",
                            elem_id="lab-kind",
                        )
                        lab_eps = gr.Slider(
                            0.0,
                            MAX_EPS,
                            value=DEFAULT_EPS,
                            step=0.01,
                            label="ε (L∞, pixels in [0, 1])",
                            elem_id="lab-eps",
                        )
                        lab_steps = gr.Slider(
                            1,
                            MAX_ATTACK_STEPS,
                            value=DEFAULT_STEPS,
                            step=1,
                            label="PGD steps",
                            elem_id="lab-steps",
                        )
                        lab_models = gr.CheckboxGroup(
                            choices=[(res.views[key].label, key) for key in lab_keys],
                            value=list(lab_keys),
                            label="Models to attack (each one chosen gets its own panel)",
                            elem_id="lab-models",
                        )
                        lab_button = gr.Button("Attack", variant="primary", elem_id="lab-button")
                        with gr.Accordion("What ES, QA, CA and ε mean", open=False):
                            gr.Markdown(present.GLOSSARY, elem_id="lab-glossary")
                    with gr.Column(scale=3, elem_id="lab-output"):
                        with gr.Row(elem_id="lab-images"):
                            lab_clean = gr.Image(
                                value=thumbs.path(picks[0]) if picks else None,
                                label="clean",
                                buttons=[],
                                type="pil",
                                interactive=False,
                                format="png",
                                height=170,
                                elem_id="lab-clean",
                                elem_classes="eat-pixel",
                                scale=1,
                            )
                            gr.Markdown(
                                "Pick or upload an image, choose an attack and its budget, and "
                                "press **Attack**. Each model is attacked white-box on its own "
                                "embedding. Its panel shows the adversarial image, the "
                                "perturbation δ (amplified to the full grey range), and the "
                                "top-5 gallery items for the clean and the adversarial query; "
                                "the maps below show how far each embedding moved.",
                                elem_id="lab-help",
                                scale=3,
                            )
                        lab_numbers = gr.Markdown(elem_id="lab-numbers")
                        lab_panels, lab_outputs = {}, {}
                        with gr.Row(elem_id="lab-panels"):
                            for key in lab_keys:
                                label = present.SHORT_LABELS[key]
                                with gr.Column(elem_id=f"lab-panel-{key}", min_width=240) as panel:
                                    with gr.Row():
                                        adv = gr.Image(
                                            label=f"{label}: adversarial",
                                            buttons=["download"],
                                            type="pil",
                                            interactive=False,
                                            format="png",
                                            height=150,
                                            elem_id=f"lab-{key}-adv",
                                            elem_classes="eat-pixel",
                                        )
                                        delta = gr.Image(
                                            label=f"{label}: δ amplified",
                                            buttons=[],
                                            type="pil",
                                            interactive=False,
                                            format="png",
                                            height=150,
                                            elem_id=f"lab-{key}-delta",
                                            elem_classes="eat-pixel",
                                        )
                                    clean_hits, adv_hits = (
                                        gr.Gallery(
                                            label=f"{label}: top-5, {which} query",
                                            columns=5,
                                            height="auto",
                                            elem_classes="compact-gallery",
                                            preview=False,
                                            format="png",
                                            allow_preview=False,
                                            elem_id=f"lab-{key}-{tag}-hits",
                                        )
                                        for which, tag in (
                                            ("clean", "clean"),
                                            ("adversarial", "adv"),
                                        )
                                    )
                                lab_panels[key] = panel
                                lab_outputs[key] = [adv, delta, clean_hits, adv_hits]
                        lab_map = gr.Image(
                            label="Gallery maps: clean ○ → adversarial ×",
                            show_label=False,
                            type="pil",
                            interactive=False,
                            format="png",
                            elem_id="lab-map",
                        )
                        with gr.Accordion("Raw results (JSON)", open=False, elem_id="lab-raw"):
                            lab_json = gr.JSON(elem_id="lab-json")

            # ---------------------------------------------------------------- report
            with gr.Tab("Robustness report", id="report", elem_id="tab-report"):
                report_md = gr.Markdown(elem_id="report-text")
                report_plots = gr.Gallery(
                    label="Benchmark plots (click one to enlarge)",
                    columns=2,
                    height="auto",
                    object_fit="contain",
                    allow_preview=True,
                    preview=False,
                    format="png",
                    elem_id="report-plots",
                )
                report_button = gr.Button("Reload", elem_id="report-button", size="sm")

        # -------------------------------------------------------------------- handlers

        def status():
            info = services.status()
            return present.status_markdown(info), info

        def refresh_status():
            info = services.status()
            warming = info["umap_enabled"] and not info["umap_warm"]
            return present.status_markdown(info), info, gr.Timer(active=warming)

        @user_errors("search")
        def search(file, example_index, models, k):
            started = time.perf_counter()
            path = _file_path(file)
            if path is not None:
                image, query = load_image(path).image, f"your upload {Path(path).name}"
            elif example_index is not None and 0 <= int(example_index) < len(examples):
                example = examples[int(example_index)]
                image, query = example.image, f"the example {example.name.split('-', 1)[-1]}"
            else:
                raise UploadError("No query image: upload an image or pick an example.")
            read = time.perf_counter() - started if path is not None else 0.0
            result = services.search.search(image, models, int(k))
            result.read_seconds, result.query = read, query
            show = result.results
            big = max(image.size) > QUERY_SIDE
            shown = ImageOps.contain(image, (QUERY_SIDE, QUERY_SIDE)) if big else image
            return (
                shown,
                result.model_input,
                *[
                    gr.update(
                        value=thumbs.hits(show[key].hits) if key in show else None,
                        visible=key in show,
                    )
                    for key in keys
                ],
                present.search_markdown(result),
                result.to_dict(),
            )

        def pick_example(evt: gr.SelectData):
            return evt.index, None

        @user_errors("cluster the images")
        def cluster(files, model, algorithm, auto_k, k, attack, fraction, eps, steps):
            started = time.perf_counter()
            batch = load_uploads(_file_paths(files))
            read = time.perf_counter() - started
            result = services.cluster.cluster(
                batch,
                model=model,
                k=None if auto_k else int(k),
                algorithm=algorithm,
                out_dir=downloads_dir(),
                attack_fraction=float(fraction) if attack else 0.0,
                eps=float(eps),
                steps=int(steps),
            )
            result.read_seconds = read
            clusters = result.clusters
            slots = []
            for i in range(CLUSTER_SLOTS):
                if i < len(clusters) and (i < CLUSTER_SLOTS - 1 or len(clusters) == CLUSTER_SLOTS):
                    cid = clusters[i]
                    slots.append(
                        gr.update(
                            value=result.members(cid), label=result.cluster_title(cid), visible=True
                        )
                    )
                elif i < len(clusters):  # more clusters than slots: the rest share the last
                    rest = clusters[i:]
                    members = [m for cid in rest for m in result.members(cid)]
                    slots.append(
                        gr.update(
                            value=members, label=f"{len(rest)} smaller clusters", visible=True
                        )
                    )
                else:
                    slots.append(gr.update(value=None, visible=False))
            attack_result = result.attack
            return (
                present.cluster_markdown(result),
                result.figure,
                str(result.csv_path),
                str(result.zip_path),
                *slots,
                present.set_attack_markdown(result),
                gr.update(
                    value=attack_result.figure if attack_result else None,
                    visible=attack_result is not None,
                ),
                result.to_dict(),
            )

        def pick_lab_image(evt: gr.SelectData):
            item = picks[evt.index]
            return item, None, thumbs.path(item)

        @user_errors("read the image")
        def preview_lab_upload(file):
            path = _file_path(file)
            if path is None:
                return gr.update(), None
            return -1, load_image(path).image

        @user_errors("run the attack")
        def attack(file, item, kind, eps, steps, models):
            started = time.perf_counter()
            path = _file_path(file)
            item = -1 if item is None else int(item)
            image = load_image(path).image if path is not None and item < 0 else None
            read = time.perf_counter() - started if image is not None else 0.0
            if image is None and item < 0:
                raise UploadError("No image to attack: upload one or pick one from the gallery.")
            result = services.lab.run(
                image=image,
                gallery_id=item if item >= 0 else None,
                kind=kind,
                eps=float(eps),
                steps=int(steps),
                models=models,
            )
            result.read_seconds = read
            panels = []
            for key in lab_keys:
                shown = result.outcomes.get(key)
                panels.append(gr.update(visible=shown is not None))
                if shown is None:
                    panels += [None, None, None, None]
                else:
                    panels += [
                        shown.adversarial,
                        shown.perturbation,
                        thumbs.hits(shown.clean_hits),
                        thumbs.hits(shown.adversarial_hits),
                    ]
            return (
                result.clean_image,
                *panels,
                present.attack_markdown(result),
                result.figure,
                result.to_dict(),
            )

        def report():
            rep = services.report()
            return rep.markdown, gr.update(value=rep.plots or None, visible=bool(rep.plots))

        # -------------------------------------------------------------------- events

        search_outputs = [
            query_shown,
            seen,
            *search_galleries.values(),
            search_info,
            search_json,
        ]
        search_inputs = [query_file, example_state, search_model, search_k]

        def failed(what: str, blanks: int):
            """After a failed request: no stale result under the error, and a note why."""

            def clear():
                note = f"*Nothing to show: the last {what} failed (the message says why).*"
                return note, *[gr.update(value=None) for _ in range(blanks)]

            return clear

        search_blank = [query_shown, seen, *search_galleries.values(), search_json]
        gr.on(
            [search_button.click, query_file.upload],
            search,
            inputs=search_inputs,
            outputs=search_outputs,
            api_name="search",
            api_description="Top-k gallery items for an uploaded image: (file, models: a list "
            f"of {', '.join(repr(k) for k in keys)}, k).",
            concurrency_limit=4,
        ).failure(
            failed("search", len(search_blank)),
            outputs=[search_info, *search_blank],
            api_visibility="private",
            queue=False,
        )
        # Clearing the upload also forgets a previously picked example, so Search never
        # quietly runs on an image that is no longer shown.
        query_file.clear(
            lambda: None, outputs=[example_state], api_visibility="private", queue=False
        )
        example_gallery.select(
            pick_example,
            outputs=[example_state, query_file],
            api_visibility="private",
            queue=False,
        ).then(
            search,
            inputs=search_inputs,
            outputs=search_outputs,
            api_visibility="private",
            queue=False,
        )

        cluster_outputs = [
            cluster_info,
            cluster_map,
            cluster_csv,
            cluster_zip,
            *cluster_galleries,
            cluster_attack_info,
            cluster_attack_map,
            cluster_json,
        ]
        cluster_button.click(
            cluster,
            inputs=[
                cluster_files,
                cluster_model,
                cluster_algorithm,
                cluster_auto,
                cluster_k,
                cluster_attack,
                cluster_fraction,
                cluster_eps,
                cluster_steps,
            ],
            outputs=cluster_outputs,
            api_name="cluster",
            api_description="Cluster uploaded images (files or one zip): (files, model, "
            "algorithm, auto_k, k, attack, fraction, eps, steps).",
            concurrency_limit=1,
            concurrency_id=HEAVY_QUEUE,
        ).failure(
            lambda: (
                failed("clustering", 0)()[0],
                None,
                None,
                None,
                *[gr.update(value=None, visible=False) for _ in cluster_galleries],
                "",
                gr.update(value=None, visible=False),
                None,
            ),
            outputs=cluster_outputs,
            api_visibility="private",
            queue=False,
        )

        lab_pick.select(
            pick_lab_image,
            outputs=[lab_item, lab_file, lab_clean],
            api_visibility="private",
            queue=False,
        )
        lab_file.upload(
            preview_lab_upload,
            inputs=[lab_file],
            outputs=[lab_item, lab_clean],
            api_visibility="private",
        )
        lab_blank = [*[c for key in lab_keys for c in lab_outputs[key]], lab_map, lab_json]
        lab_button.click(
            attack,
            inputs=[lab_file, lab_item, lab_kind, lab_eps, lab_steps, lab_models],
            outputs=[
                lab_clean,
                *[c for key in lab_keys for c in (lab_panels[key], *lab_outputs[key])],
                lab_numbers,
                lab_map,
                lab_json,
            ],
            api_name="attack",
            api_description="Attack one image against each chosen model: (file or None, "
            "gallery item id or -1, kind 'es'|'qa'|'ca', eps, steps, models: a list of "
            f"{', '.join(repr(k) for k in lab_keys)}).",
            concurrency_limit=1,
            concurrency_id=HEAVY_QUEUE,
        ).failure(
            failed("attack", len(lab_blank)),
            outputs=[lab_numbers, *lab_blank],
            api_visibility="private",
            queue=False,
        )

        gr.on(
            [demo.load, report_button.click],
            report,
            outputs=[report_md, report_plots],
            api_name="report",
            api_description="The benchmark table and plots from results/fashion-mnist/.",
        )
        status_timer.tick(
            refresh_status,
            outputs=[status_md, status_json, status_timer],
            api_visibility="private",
            queue=False,
        )
        demo.load(
            status,
            outputs=[status_md, status_json],
            api_name="status",
            api_description="Gallery size, models and whether UMAP is warm.",
        )
    return demo
