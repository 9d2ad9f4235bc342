"""The Gradio UI: one module per tab (:mod:`.search_tab`, :mod:`.cluster_tab`,
:mod:`.lab_tab`, :mod:`.report_tab`), each building its components from the factories of
:mod:`.common` and wiring them to one service; nothing else.

Every component has an ``elem_id``; the public API endpoints are ``/search``,
``/cluster``, ``/attack``, ``/report`` and ``/status`` (callable with gradio_client);
helper events (picking an example, previews) are private. Handlers turn uploads into
PIL images through :mod:`app.services.uploads`, call one service, and turn what goes wrong into a
``gr.Error`` a person understands — the full traceback goes to the server log only.
"""

from __future__ import annotations

import gradio as gr

from ..services import Services
from . import cluster_tab, lab_tab, present, report_tab, search_tab
from .common import CACHE_SWEEP_S, CSS, INTRO, STATUS_REFRESH_S, UI, ThumbnailFiles

__all__ = ["CSS", "build_demo"]


def build_demo(services: Services) -> gr.Blocks:
    """The Blocks app; launch it with the settings in :mod:`app.server`."""
    ui = UI(services, ThumbnailFiles(services))
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
            search_tab.build(ui)
            cluster_tab.build(ui)
            lab_tab.build(ui)
            report_tab.build(ui, demo)

        def status():
            info = services.status()
            return present.status_markdown(info), info

        def refresh_status():
            info = services.status()
            warming = info["umap_enabled"] and not info["umap_warm"]
            return present.status_markdown(info), info, gr.Timer(active=warming)

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
