"""The Robustness report tab: the benchmark table and plots from the results folder, or
one of ``eat audit``'s robustness cards."""

from __future__ import annotations

import gradio as gr

from .common import UI, error_for_people


def build(ui: UI, demo: gr.Blocks) -> None:
    benchmark = "benchmark (eat bench)"
    with gr.Tab("Robustness report", id="report", elem_id="tab-report"):
        # opens with the served models and their numbers; the full tables are folded away
        gr.Markdown(ui.services.served_models(), elem_id="report-served")
        pick = gr.Dropdown(
            [benchmark, *ui.services.audits()],
            value=benchmark,
            label="Report: the benchmark, or a robustness card written by 'eat audit'",
            elem_id="report-pick",
        )
        with gr.Accordion(
            "The full report (every benchmark row, all columns)", open=False, elem_id="report-full"
        ) as full:
            text = gr.Markdown(elem_id="report-text")
        plots = gr.Gallery(
            label="Benchmark plots (click one to enlarge)",
            columns=1,
            height="auto",
            object_fit="contain",
            allow_preview=True,
            preview=False,
            format="png",
            elem_id="report-plots",
        )
        button = gr.Button("Reload", elem_id="report-button", size="sm")

    def report():
        rep = ui.services.report()
        return rep.markdown, gr.update(value=rep.plots or None, visible=bool(rep.plots))

    gr.on(
        [demo.load, button.click],
        report,
        outputs=[text, plots],
        api_name="report",
        api_description="The benchmark table and plots from results/fashion-mnist/.",
    )

    def chosen(name: str):
        if name == benchmark:
            return (*report(), gr.update())
        try:
            rep = ui.services.audit_report(name)
        except ValueError as exc:
            raise error_for_people(str(exc), "No such report") from None
        shown = gr.update(value=rep.plots or None, visible=bool(rep.plots))
        return rep.markdown, shown, gr.update(open=True)  # a card chosen: show it

    pick.change(
        chosen,
        inputs=pick,
        outputs=[text, plots, full],
        api_name="audit_report",
        api_description="An 'eat audit' robustness card from results/audit/NAME/ (or the "
        "benchmark), by name.",
    )
