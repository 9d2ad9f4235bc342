"""The ``eat`` console command, assembled here so that no package imports the one above it
(``benchmarks`` → ``app`` → ``index`` → ``eat_models``; DESIGN's one-way imports):

* the library's commands (``eat train``, ``eval``, ``attack``, ``audit``: :mod:`eat_models.cli`);
* ``eat index …`` (:mod:`index.cli`) and ``eat app`` (:mod:`app.server`);
* the measuring commands of :mod:`benchmarks` (``eat bench``, ``eat speed``, ``eat index
  bench``). The benchmarks are part of the source checkout, not of the installed wheel:
  they are added when this file sits in a checkout (an editable install, ``pip install
  -e .``), and left out of an installed wheel.

Every registrar imports only what its flags need, so ``eat train`` runs on a core install
(``pip install .``) without faiss, gradio or the plotting stack. Under torchrun:
``torchrun --nproc_per_node N -m eat_command train …``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from app.server import register as register_app
from eat_models import cli as model_cli
from index.cli import register as register_index

#: the source checkout this module lives in (its benchmarks/ folder, when there is one)
CHECKOUT = Path(__file__).resolve().parent


def benchmarks_registrar():
    """``benchmarks.cli.register`` from the source checkout, or None in a wheel install."""
    if importlib.util.find_spec("benchmarks") is None:
        if not (CHECKOUT / "benchmarks" / "cli.py").is_file():
            return None
        sys.path.insert(0, str(CHECKOUT))
    from benchmarks.cli import register

    return register


def registrars() -> list:
    found = [register_index, register_app]
    bench = benchmarks_registrar()
    return found + ([bench] if bench is not None else [])


def main(argv: list[str] | None = None) -> int:
    return model_cli.main(argv, registrars=registrars())


if __name__ == "__main__":
    sys.exit(main())
