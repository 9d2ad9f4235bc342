"""The ``eat`` console command and the web app.

Services (plain Python, no Gradio): :mod:`app.uploads`, :mod:`app.gallery`,
:mod:`app.search`, :mod:`app.clustering`, :mod:`app.attack_lab`, :mod:`app.report`,
:mod:`app.projection`, :mod:`app.plots`. The Gradio wiring is :mod:`app.layout`;
:mod:`app.server` loads everything and serves it (``eat app`` / ``python -m app``).
"""
