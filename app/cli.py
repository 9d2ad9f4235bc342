"""The ``eat`` console command: library commands plus ``eat index …`` and ``eat app``."""

from __future__ import annotations

import sys

from eat_models import cli as model_cli
from index.cli import register as register_index

from .server import register as register_app


def _registrars() -> list:
    return [register_index, register_app]


def main(argv: list[str] | None = None) -> int:
    return model_cli.main(argv, registrars=_registrars())


if __name__ == "__main__":
    sys.exit(main())
