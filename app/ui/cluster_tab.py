"""The Cluster tab: cluster uploaded images (or one zip) with one model, optionally attack
a fraction of them and compare every model."""

from __future__ import annotations

import time

import gradio as gr

from ..services.budget import DEFAULT_EPS, DEFAULT_STEPS, MAX_ATTACK_STEPS, MAX_EPS
from ..services.cluster_algorithms import ALGORITHM_LABELS, AUTO_K_RANGE, MAX_K
from ..services.uploads import load_uploads
from . import common, present
from .common import UI

CLUSTER_SLOTS = 12


def build(ui: UI) -> None:
    res, services = ui.resources, ui.services
    with gr.Tab("Cluster", id="cluster", elem_id="tab-cluster"):
        with gr.Row(elem_id="cluster-row"):
            with gr.Column(scale=1, min_width=330, elem_id="cluster-controls"):
                gr.Markdown(
                    f"Upload images or one zip: {present.limits_text()}. "
                    "Folders inside a zip are read as class labels (for NMI / ARI).",
                    elem_id="cluster-limits",
                )
                files = common.upload(
                    "Images or a zip",
                    "cluster-upload",
                    file_count="multiple",
                    file_types=["image", ".zip"],
                    height=150,
                )
                model = common.model_picker(ui, res.keys, "Model", "cluster-model", one="eat")
                algorithm = common.choice(
                    ALGORITHM_LABELS,
                    "kmeans",
                    "Algorithm (HDBSCAN finds K itself)",
                    "cluster-algorithm",
                )
                auto_k = gr.Checkbox(
                    value=True,
                    label=f"Choose K automatically (silhouette over {AUTO_K_RANGE[0]}–"
                    f"{AUTO_K_RANGE[1]})",
                    elem_id="cluster-auto-k",
                )
                k = common.slider(2, MAX_K, 4, 1, "K (when not automatic)", "cluster-k")
                with gr.Accordion("Attack this set", open=False, elem_id="cluster-attack"):
                    attack = gr.Checkbox(
                        value=False,
                        label="Perturb a fraction p of the images with the clustering "
                        "attack and compare the models side by side",
                        elem_id="cluster-attack-on",
                    )
                    fraction = common.slider(
                        0.05, 1.0, 0.3, 0.05, "p (attacked fraction)", "cluster-fraction"
                    )
                    eps = common.slider(0.0, MAX_EPS, DEFAULT_EPS, 0.01, "ε (L∞)", "cluster-eps")
                    steps = common.slider(
                        1, MAX_ATTACK_STEPS, DEFAULT_STEPS, 1, "PGD steps", "cluster-steps"
                    )
                button = gr.Button("Cluster", variant="primary", elem_id="cluster-button")
            with gr.Column(scale=3, elem_id="cluster-output"):
                info = gr.Markdown(elem_id="cluster-info")
                with gr.Row(elem_id="cluster-map-row"):
                    cluster_map = common.picture(
                        "Map of the set, coloured by cluster", "cluster-map"
                    )
                    with gr.Column(min_width=200, elem_id="cluster-downloads"):
                        csv = gr.File(
                            label="file → cluster (CSV)", interactive=False, elem_id="cluster-csv"
                        )
                        zipped = gr.File(
                            label="images by cluster (zip)",
                            interactive=False,
                            elem_id="cluster-zip",
                        )
                galleries = [
                    common.thumbnails(
                        f"cluster-gallery-{i + 1}", visible=False, columns=10, allow_preview=False
                    )
                    for i in range(CLUSTER_SLOTS)
                ]
                attack_info = gr.Markdown(elem_id="cluster-attack-info")
                attack_map = common.picture(
                    "After the attack: each model", "cluster-attack-map", visible=False
                )
                cluster_json = common.raw_json("cluster")

    @common.user_errors("cluster the images")
    def cluster(files, model, algorithm, auto_k, k, attack, fraction, eps, steps):
        started = time.perf_counter()
        batch = load_uploads(common.file_paths(files))
        read = time.perf_counter() - started
        result = services.cluster.cluster(
            batch,
            model=model,
            k=None if auto_k else int(k),
            algorithm=algorithm,
            out_dir=common.downloads_dir(),
            attack_fraction=float(fraction) if attack else 0.0,
            eps=float(eps),
            steps=int(steps),
        )
        result.read_seconds = read
        attack_result = result.attack
        return (
            present.cluster_markdown(result),
            result.figure,
            str(result.csv_path),
            str(result.zip_path),
            *_slots(result),
            present.set_attack_markdown(result),
            gr.update(
                value=attack_result.figure if attack_result else None,
                visible=attack_result is not None,
            ),
            result.to_dict(),
        )

    outputs = [info, cluster_map, csv, zipped, *galleries, attack_info, attack_map, cluster_json]
    button.click(
        cluster,
        inputs=[files, model, algorithm, auto_k, k, attack, fraction, eps, steps],
        outputs=outputs,
        api_name="cluster",
        api_description="Cluster uploaded images (files or one zip): (files, model, "
        "algorithm, auto_k, k, attack, fraction, eps, steps).",
        concurrency_limit=1,
        concurrency_id=common.HEAVY_QUEUE,
    ).failure(
        lambda: (
            common.failed("clustering", 0)()[0],
            None,
            None,
            None,
            *[gr.update(value=None, visible=False) for _ in galleries],
            "",
            gr.update(value=None, visible=False),
            None,
        ),
        outputs=outputs,
        api_visibility="private",
        queue=False,
    )


def _slots(result) -> list:
    """One gallery per cluster; when there are more clusters than slots, the smallest
    ones share the last slot."""
    clusters = result.clusters
    slots = []
    for i in range(CLUSTER_SLOTS):
        if i < len(clusters) and (i < CLUSTER_SLOTS - 1 or len(clusters) == CLUSTER_SLOTS):
            cid = clusters[i]
            slots.append(
                gr.update(value=result.members(cid), label=result.cluster_title(cid), visible=True)
            )
        elif i < len(clusters):
            rest = clusters[i:]
            members = [m for cid in rest for m in result.members(cid)]
            slots.append(
                gr.update(value=members, label=f"{len(rest)} smaller clusters", visible=True)
            )
        else:
            slots.append(gr.update(value=None, visible=False))
    return slots
