"""The ``eat`` console command: library commands plus ``eat index …``, ``eat app`` and the
measuring commands of :mod:`benchmarks` (``eat bench``, ``eat speed``, ``eat index bench``).

Every registrar imports only what its flags need, so ``eat train`` runs on a core install
(``pip install .``) without faiss, gradio or the plotting stack.
"""

from __future__ import annotations

import sys

from benchmarks.cli import register as register_benchmarks
from eat_models import cli as model_cli
from index.cli import register as register_index

from .server import register as register_app


def _registrars() -> list:
    return [register_index, register_app, register_benchmarks]


def main(argv: list[str] | None = None) -> int:
    return model_cli.main(argv, registrars=_registrars())


if __name__ == "__main__":
    sys.exit(main())
