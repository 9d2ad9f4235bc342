"""The Attack lab tab: attack one image live against each chosen model, side by side."""

from __future__ import annotations

import time

import gradio as gr

from ..services.attack_lab import ATTACK_LABELS
from ..services.budget import DEFAULT_EPS, DEFAULT_STEPS, MAX_ATTACK_STEPS, MAX_EPS
from ..services.models import ATTACK_ORDER
from ..services.uploads import UploadError, load_image
from . import common, present
from .common import UI

HELP = (
    "Pick or upload an image, choose an attack and its budget, and press **Attack**. Each "
    "model is attacked white-box on its own embedding. Its panel shows the adversarial "
    "image, the perturbation δ (amplified to the full grey range), and the top-5 gallery "
    "items for the clean and the adversarial query; the maps below show how far each "
    "embedding moved."
)


def _panel(key: str) -> tuple[gr.Column, list]:
    """One model's panel: adversarial image, amplified δ, top-5 clean and adversarial."""
    label = present.SHORT_LABELS[key]
    with gr.Column(elem_id=f"lab-panel-{key}", min_width=240) as panel:
        with gr.Row():
            adv = common.picture(
                f"{label}: adversarial",
                f"lab-{key}-adv",
                pixelated=True,
                buttons=["download"],
                height=150,
            )
            delta = common.picture(
                f"{label}: δ amplified", f"lab-{key}-delta", pixelated=True, buttons=[], height=150
            )
        clean_hits, adv_hits = (
            common.thumbnails(
                f"lab-{key}-{tag}-hits",
                f"{label}: top-5, {which} query",
                columns=5,
                allow_preview=False,
            )
            for which, tag in (("clean", "clean"), ("adversarial", "adv"))
        )
    return panel, [adv, delta, clean_hits, adv_hits]


def build(ui: UI) -> None:
    res, services, thumbs = ui.resources, ui.services, ui.thumbs
    lab_keys = tuple(k for k in ATTACK_ORDER if k in res.keys)
    picks = services.lab_picks
    with gr.Tab("Attack lab", id="lab", elem_id="tab-lab"):
        with gr.Row(elem_id="lab-row"):
            with gr.Column(scale=1, min_width=330, elem_id="lab-controls"):
                lab_file = common.upload("Upload an image to attack (≤ 10 MB)", "lab-upload")
                pick = common.thumbnails(
                    "lab-gallery",
                    "…or pick a gallery image",
                    value=[(thumbs.path(i), res.class_name(int(res.labels[i]))) for i in picks],
                    columns=5,
                    height=260,
                    allow_preview=False,
                )
                item = gr.Number(
                    value=picks[0] if picks else -1,
                    precision=0,
                    label="Gallery item id (−1: the uploaded image)",
                    elem_id="lab-item",
                )
                kind = common.choice(ATTACK_LABELS, "es", "Attack", "lab-kind")
                eps = common.slider(
                    0.0, MAX_EPS, DEFAULT_EPS, 0.01, "ε (L∞, pixels in [0, 1])", "lab-eps"
                )
                steps = common.slider(
                    1, MAX_ATTACK_STEPS, DEFAULT_STEPS, 1, "PGD steps", "lab-steps"
                )
                models = common.model_picker(
                    ui,
                    lab_keys,
                    "Models to attack (each one chosen gets its own panel)",
                    "lab-models",
                )
                button = gr.Button("Attack", variant="primary", elem_id="lab-button")
                with gr.Accordion("What ES, QA, CA and ε mean", open=False):
                    gr.Markdown(present.GLOSSARY, elem_id="lab-glossary")
            with gr.Column(scale=3, elem_id="lab-output"):
                with gr.Row(elem_id="lab-images"):
                    clean = common.picture(
                        "clean",
                        "lab-clean",
                        pixelated=True,
                        value=thumbs.path(picks[0]) if picks else None,
                        buttons=[],
                        height=170,
                        scale=1,
                    )
                    gr.Markdown(HELP, elem_id="lab-help", scale=3)
                numbers = gr.Markdown(elem_id="lab-numbers")
                panels, outputs = {}, {}
                with gr.Row(elem_id="lab-panels"):
                    for key in lab_keys:
                        panels[key], outputs[key] = _panel(key)
                lab_map = common.picture(
                    "Gallery maps: clean ○ → adversarial ×", "lab-map", show_label=False
                )
                lab_json = common.raw_json("lab")

    def pick_lab_image(evt: gr.SelectData):
        chosen = picks[evt.index]
        return chosen, None, thumbs.path(chosen)

    @common.user_errors("read the image")
    def preview_upload(file):
        path = common.file_path(file)
        if path is None:
            return gr.update(), None
        return -1, load_image(path).image

    @common.user_errors("run the attack")
    def attack(file, item, kind, eps, steps, models):
        started = time.perf_counter()
        path = common.file_path(file)
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
        shown_panels = []
        for key in lab_keys:
            shown = result.outcomes.get(key)
            shown_panels.append(gr.update(visible=shown is not None))
            if shown is None:
                shown_panels += [None, None, None, None]
            else:
                shown_panels += [
                    shown.adversarial,
                    shown.perturbation,
                    thumbs.hits(shown.clean_hits),
                    thumbs.hits(shown.adversarial_hits),
                ]
        return (
            result.clean_image,
            *shown_panels,
            present.attack_markdown(result),
            result.figure,
            result.to_dict(),
        )

    pick.select(
        pick_lab_image, outputs=[item, lab_file, clean], api_visibility="private", queue=False
    )
    lab_file.upload(
        preview_upload, inputs=[lab_file], outputs=[item, clean], api_visibility="private"
    ).failure(
        # a bad upload forgets the gallery item picked before, so Attack does not quietly
        # run on it while the box shows the bad file (it names the file again instead)
        lambda: (-1, None),
        outputs=[item, clean],
        api_visibility="private",
        queue=False,
    )
    blank = [*[c for key in lab_keys for c in outputs[key]], lab_map, lab_json]
    button.click(
        attack,
        inputs=[lab_file, item, kind, eps, steps, models],
        outputs=[
            clean,
            *[c for key in lab_keys for c in (panels[key], *outputs[key])],
            numbers,
            lab_map,
            lab_json,
        ],
        api_name="attack",
        api_description="Attack one image against each chosen model: (file or None, "
        "gallery item id or -1, kind 'es'|'qa'|'ca', eps, steps, models: a list of "
        f"{', '.join(repr(k) for k in lab_keys)}).",
        concurrency_limit=1,
        concurrency_id=common.HEAVY_QUEUE,
    ).failure(
        common.failed("attack", len(blank)),
        outputs=[numbers, *blank],
        api_visibility="private",
        queue=False,
    )
