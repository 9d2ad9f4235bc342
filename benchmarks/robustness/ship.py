"""``eat bench --ship``: copy the benchmark's demo models into ``assets/models``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from eat_models.attacks import evaluation_key, parse_evaluation_key

from .profiles import HEADLINE_EPS


def ship_models(
    runs: Path, assets: Path, out: Path, baseline: str | None, eat: str = "eat"
) -> None:
    """Copy the benchmark's vanilla model, its strongest single-model defense at EAT's
    training compute (``baseline``) and the best EAT ensemble (row ``eat``) into
    ``assets/models``, with a README giving their benchmark numbers and how to reproduce
    them."""
    shipped = {"vanilla": "vanilla", "eat": eat}
    if baseline:
        shipped["baseline"] = baseline
    lines = [
        "# Shipped demo models",
        "",
        "`vanilla/`, `baseline/` and `eat/` are rows of the Fashion-MNIST benchmark: `vanilla`,",
        f"the strongest single-model defense at EAT's training compute (`{baseline}`) and the",
        f"best EAT row (`{eat}`: highest NMI under the clustering attack, over training seeds),",
        f"copied here by `eat bench --ship` (full results in `{out}`). The web app loads them.",
        "",
        "| model | benchmark row | members | train s | clean R@1 | clean NMI "
        f"| ES R@1 (eps {HEADLINE_EPS:g}) | CA NMI (eps {HEADLINE_EPS:g}) | fingerprint |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for target, name in shipped.items():
        src, dst = runs / name, assets / target
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"{src} has not been trained")
        record = json.loads((out / "rows" / f"{name}.json").read_text())
        ev = record["evals"]
        steps = min(  # the headline steps: the fewest stored at the headline eps
            p["steps"] for p in map(parse_evaluation_key, ev) if p and p["eps"] == HEADLINE_EPS
        )
        es_key, ca_key = (evaluation_key(a, HEADLINE_EPS, steps) for a in ("es", "ca"))
        lines.append(
            f"| {target} | {name} | {record['members']} | {record['train']['train_wall_s']:.0f} "
            f"| {ev['clean']['metrics']['recall@1']:.3f} | {ev['clean']['metrics']['nmi']:.3f} "
            f"| {ev[es_key]['attacked']['recall@1']:.3f} "
            f"| {ev[ca_key]['attacked']['nmi']:.3f} | `{record['fingerprint']}` |"
        )
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        tmp.rename(dst)
    lines += [
        "",
        "Reproduce them (each row's full training config, every flag, is inside its",
        "`config.json` under `train`):",
        "",
        f"    eat bench --only vanilla {eat} {baseline or ''} --ship",
        "",
    ]
    (assets / "README.md").write_text("\n".join(lines))
