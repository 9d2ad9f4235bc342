"""The ``eat`` console command and the web app.

* :mod:`app.services` — plain Python, no Gradio: the gallery and its per-model views
  (``gallery``), search, clustering, the attack lab, uploads, the out-of-domain signal,
  UMAP maps, plots and the benchmark report.
* :mod:`app.ui` — the Gradio wiring: one module per tab, component factories, and the
  Markdown a person reads (``present``).
* :mod:`app.server` loads everything and serves it (``eat app`` / ``python -m app``);
  :mod:`app.rest` is the plain JSON route ``POST /api/search``.
"""
