"""Experiment tooling, apart from the library: the robustness benchmark (``eat bench``), the
tuning grids, speed and load measurements, the index benchmarks and the app's screenshots.

Nothing in ``eat_models``, ``index`` or ``app`` imports this package; it imports them. Every
command writes its results with their provenance (command line, commit, date, load
average, wall time).
"""

import argparse


def command_parser(module: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks.MODULE``: its usage line names the command, its
    description is the first paragraph of the module's docstring."""
    summary = (description or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=summary)
