"""Callers go through the registry: no attack name is branched on outside
``eat_models/attacks``, and every route starts from the one default budget."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from eat_models.attacks import ATTACKS, DEFAULT_EPS, DEFAULT_STEPS

ROOT = Path(__file__).resolve().parents[3]


def test_no_attack_name_is_branched_on_outside_the_registry():
    names = "|".join(re.escape(n) for n in ATTACKS)
    branch = re.compile(rf"""(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    offenders = []
    for folder in ("app", "eat_models", "index", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if "attacks" in path.relative_to(ROOT).parts[:2] and folder == "eat_models":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if branch.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_route_uses_the_one_default_budget():
    from app.services.attack_lab import AttackLab
    from app.services.clustering import ClusterService

    lab = inspect.signature(AttackLab.run).parameters
    assert lab["steps"].default == DEFAULT_STEPS and lab["eps"].default == DEFAULT_EPS
    cluster = inspect.signature(ClusterService.cluster).parameters
    assert cluster["steps"].default == DEFAULT_STEPS
    for tab in ("lab_tab", "cluster_tab"):
        source = (ROOT / "app" / "ui" / f"{tab}.py").read_text()
        assert "DEFAULT_STEPS" in source and not re.search(r"STEPS\s*=\s*\d", source)
