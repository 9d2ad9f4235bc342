"""The ``eat`` console command: library commands plus ``eat index …`` and ``eat app``."""

from __future__ import annotations

import sys

from eat_models import cli as model_cli


def _registrars() -> list:
    registrars = []
    try:
        from index.cli import register as register_index
    except ImportError:  # the index package is optional while it is being built
        register_index = None
    if register_index is not None:
        registrars.append(register_index)
    return registrars


def main(argv: list[str] | None = None) -> int:
    return model_cli.main(argv, registrars=_registrars())


if __name__ == "__main__":
    sys.exit(main())
