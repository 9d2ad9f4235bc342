"""Where a result came from: command line, commit, date, machine — stamped into results files."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys


def git_commit(cwd: str | None = None) -> str:
    """The current commit hash (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict:
    """Command, commit, UTC date, Python/torch versions, CPU count and load average."""
    import torch

    return {
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "commit": git_commit(os.path.dirname(os.path.abspath(__file__))),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        # 1/5/15-minute load averages: timings taken on a busy machine say so.
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
