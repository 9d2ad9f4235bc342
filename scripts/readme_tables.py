"""Copy the benchmark's tables from results/ into README.md (between marker comments).

    .venv/bin/python scripts/readme_tables.py          # rewrite README.md in place
    .venv/bin/python scripts/readme_tables.py --check  # exit 1 if README.md is out of date

The README's numbers are never typed by hand: the main table and the targets table come
from results/fashion-mnist/results.md (written by `eat bench`), the tuning table from
results/fashion-mnist/tuning-12k{,-v2}/results.md (written by `python -m benchmarks.tune`), the
load-check lines from results/app/loadcheck.json (written by `python -m benchmarks.loadcheck`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def section_tables(markdown: str, heading: str) -> str:
    """The Markdown table(s) under ``## heading`` (up to the next ``##``)."""
    match = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    if not match:
        raise SystemExit(f"no section '## {heading}' found")
    rows = [line for line in match.group(1).splitlines() if line.startswith("|")]
    return "\n".join(rows)


def first_table(markdown: str) -> str:
    lines, started = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            started = True
            lines.append(line)
        elif started:
            break
    return "\n".join(lines)


def table_with_provenance(markdown: str) -> str:
    """The first table of a results file and its provenance line (the third: command, commit,
    date, load average)."""
    return first_table(markdown) + "\n\n" + markdown.splitlines()[2]


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"README.md lacks the markers {start} … {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def loadcheck_block(record: dict) -> str:
    """A few lines from results/app/loadcheck.json (written by python -m benchmarks.loadcheck)."""
    prov = record["provenance"]
    search, api = record["search"], record.get("search_api")
    attack = record["attack"]
    lines = [
        "`python -m benchmarks.loadcheck` (`results/app/loadcheck.json`; "
        f"commit `{prov['commit'][:12]}`, "
        f"{prov['date']}, load average before {record['load_average_before'][0]:.2f}), "
        f"{search['concurrency']} concurrent searches × {search['rounds']} rounds, model "
        f"`{search['model']}`, k = {search['k']}"
        + (f" ({record['search_schedule']})" if record.get("search_schedule") else "")
        + ":",
        "",
        "| request | succeeded | p50 | p95 | max | target |",
        "|---|---:|---:|---:|---:|---|",
        f"| search, UI endpoint ({search.get('route', 'upload + queued /search')}) "
        f"| {search['succeeded']}/"
        f"{search['succeeded'] + search['failed']} | {search['round_trip']['p50_ms']:.0f} ms "
        f"| {search['round_trip']['p95_ms']:.0f} ms | {search['round_trip']['max_ms']:.0f} ms "
        "| p95 < 300 ms |",
    ]
    if api:
        lines.append(
            f"| search, `POST /api/search` (one round trip) | {api['succeeded']}/"
            f"{api['succeeded'] + api['failed']} | {api['round_trip']['p50_ms']:.0f} ms "
            f"| {api['round_trip']['p95_ms']:.0f} ms | {api['round_trip']['max_ms']:.0f} ms "
            "| p95 < 300 ms |"
        )
    seq = record.get("search_sequential")
    if seq:
        for label, key in (("UI endpoint", "ui"), ("`POST /api/search`", "api")):
            lines.append(
                f"| search one at a time, {label} | {seq[key]['count']} "
                f"| {seq[key]['p50_ms']:.1f} ms | {seq[key]['p95_ms']:.1f} ms "
                f"| {seq[key]['max_ms']:.1f} ms | – |"
            )
    if api:
        ratio = search["round_trip"]["p95_ms"] / api["round_trip"]["p95_ms"]
        verdict = "met" if ratio <= 2 else "missed"
        lines.append(f"| UI p95 ÷ `/api/search` p95 | | | {ratio:.2f}× | | ≤ 2× ({verdict}) |")
    lines.append(
        f"| attack lab, PGD-{attack['steps']} {attack['attack'].upper()} on "
        f"{' + '.join(attack['pgd_only'])}, one at a time | {attack['round_trip']['count']} "
        f"| {attack['round_trip']['p50_ms']:.0f} ms "
        f"| {attack['round_trip']['p95_ms']:.0f} ms | {attack['round_trip']['max_ms']:.0f} ms "
        "| < 2 s |"
    )
    return "\n".join(lines)


def train_speed_block(record: dict) -> str:
    """Tables from results/speed/train-step.json (python -m benchmarks.train_speed)."""
    lines = [
        f"`python -m benchmarks.train_speed` (commit `{record['commit'][:12]}`, {record['date']}, "
        f"load average before {record['load_average_before'][0]:.2f}; medians of "
        f"{record['setup']['timed_steps']} steps, 12k slice, width {record['setup']['width']}):",
        "",
        "| recipe | s/step | step vs PGD-AT | epoch vs PGD-AT |",
        "|---|---:|---:|---:|",
    ]
    for name, r in record["recipes"].items():
        ratios = f"{r['step_vs_pgd_at']:.2f}× | {r['epoch_vs_pgd_at']:.2f}×"
        lines.append(f"| {name} | {r['step_s']:.3f} | {ratios} |")
    lines += ["", "| EAT step option | s/step | speed-up over fp32 |", "|---|---:|---:|"]
    for name, value in record["eat_step_options_s"].items():
        lines.append(
            f"| {name} | {value:.3f} | {record['eat_step_speedup_over_fp32'][name]:.2f}× |"
        )
    for name, error in record.get("eat_step_option_failures", {}).items():
        lines.append(f"| {name} | failed: {error} | – |")
    g = record["grouped_members_forward_backward"]
    lines += [
        "",
        f"K members as one grouped-convolution network, forward + backward of 3 batches of 160: "
        f"{g['grouped_ms']:.1f} ms against {g['separate_ms']:.1f} ms for three separate calls "
        f"({g['speedup']:.2f}×).",
    ]
    return "\n".join(lines)


FOUNDATION_RUNS = (
    ("proxy-anchor (default)", "proxy-anchor-8ep"),
    ("triplet (margin 0.2, semi-hard)", "triplet-8ep"),
)


def foundation_block() -> str:
    """The clean table from results/foundation/*-{eval,train}.json (eat eval / eat train)."""
    keys = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi", "f1", "ari")
    lines = [
        "| loss | Recall@1 | Recall@2 | Recall@4 | Recall@8 | mAP@R | NMI | F1 | ARI "
        "| training wall | load average |",
        "|---|" + "---:|" * 10,
    ]
    for label, stem in FOUNDATION_RUNS:
        folder = REPO / "results" / "foundation"
        metrics = json.loads((folder / f"{stem}-eval.json").read_text())["metrics"]
        train = json.loads((folder / f"{stem}-train.json").read_text())
        load = train["provenance"]["load_average"][0]
        cells = " | ".join(f"{metrics[k]:.3f}" for k in keys)
        lines.append(f"| {label} | {cells} | {train['train_wall_s']:.0f} s | {load:.2f} |")
    return "\n".join(lines)


AUDITED = ("vanilla", "baseline", "eat")


def audit_block() -> str | None:
    """PGD-20 (standard) against strong for the shipped models, from
    results/audit/*/audit.json (written by scripts/audit_shipped.sh, i.e. eat audit)."""
    folder = REPO / "results" / "audit"
    cards = {}
    for name in AUDITED:
        path = folder / name / "audit.json"
        if not path.is_file():
            return None
        cards[name] = json.loads(path.read_text())
    lines = [
        "| model | clean R@1 | clean NMI | ES R@1 standard → strong | QA R@1 standard → strong "
        "| CA-clu NMI standard → strong | CA-clu NMI p 0.1 | ERS standard → strong "
        "| masking checks | audit wall | load average |",
        "|---|" + "---:|" * 9 + "---:|",
    ]
    for name, card in cards.items():
        std, strong = card["strengths"]["standard"], card["strengths"]["strong"]

        def pair(key, metric, std=std, strong=strong):
            a = std["headline"][key]["attacked"][metric]
            b = strong["headline"][key]["attacked"][metric]
            return f"{a:.3f} → {b:.3f}"

        passed = sum(m["passed"] for m in card["masking"])
        cells = [
            f"{card['clean']['recall@1']:.3f}",
            f"{card['clean']['nmi']:.3f}",
            pair("es", "recall@1"),
            pair("qa", "recall@1"),
            pair("ca/p1", "nmi"),
            pair("ca/p0.1", "nmi"),
            f"{std['ers']:.1f} → {strong['ers']:.1f}",
            f"{passed}/{len(card['masking'])}",
            f"{card['audit_wall_s']:.0f} s",
            f"{card['provenance']['load_average'][0]:.2f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = cards[AUDITED[0]]
    prov, eb, hb = first["provenance"], first["ers_budget"], first["headline_budget"]
    lines += [
        "",
        f"`bash scripts/audit_shipped.sh` (`eat audit MODEL --max-images {first['images']}`), "
        f"commit `{prov['commit'][:12]}`, {prov['date']}, {first['threads']} threads. "
        f"Headline attacks at ε {hb['eps']:g}, PGD-{hb['steps']}; ERS at RobRank's budget "
        f"(ε {eb['eps']:.4g}, {eb['steps']} steps of {eb['step_size']:.4g}). Strong: per-image "
        "worst case over the standard run, PGD with 2 random restarts and APGD-100 (the "
        "clustering attack also over 3 target draws). Cards: `results/audit/*/audit.md`.",
    ]
    return "\n".join(lines)


#: README block -> (results file, its text as the block), for results a checkout may lack
OPTIONAL_BLOCKS = {
    "ood-table": ("results/app/ood.md", table_with_provenance),
    "train-speed": (
        "results/speed/train-step.json",
        lambda text: train_speed_block(json.loads(text)),
    ),
    "milvus-table": ("results/index/milvus.md", table_with_provenance),
    "robrank-table": ("results/robrank-fashion/results.md", first_table),
    "robrank-fidelity": (
        "results/robrank-fashion/results.md",
        lambda text: section_tables(text, "Fidelity"),
    ),
    "robrank-stronger": (
        "results/robrank-fashion/results.md",
        lambda text: section_tables(text, "ERS had LTM and GTM done nothing"),
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, do not write")
    args = parser.parse_args()
    bench = (REPO / "results/fashion-mnist/results.md").read_text()
    tuning = (REPO / "results/fashion-mnist/tuning-12k/results.md").read_text()
    bench_block = (
        section_tables(bench, "Main table")
        + "\n\n**Targets** (DESIGN.md §7; measured on the `eat` row):\n\n"
        + section_tables(bench, "Targets")
        + (
            "\n\n**Training seeds** (`eat bench --seeds`; mean ± sd over training seeds):\n\n"
            + section_tables(bench, "Training seeds")
            + "\n\n"
            + next(
                line
                for line in bench.split("## Training seeds", 1)[1].splitlines()
                if line.startswith("Decisive target")
            )
            if "## Training seeds" in bench and "Decisive target" in bench
            else ""
        )
        + "\n\n![robustness vs eps](results/fashion-mnist/robustness_vs_eps.png)"
        + "\n![clean vs robust](results/fashion-mnist/clean_vs_robust.png)"
    )
    readme_path = REPO / "README.md"
    readme = readme_path.read_text()
    updated = replace_block(readme, "bench-table", bench_block)
    updated = replace_block(updated, "tuning-table", first_table(tuning))
    tuning_v2 = (REPO / "results/fashion-mnist/tuning-12k-v2/results.md").read_text()
    updated = replace_block(updated, "tuning-v2-table", first_table(tuning_v2))
    updated = replace_block(updated, "foundation-table", foundation_block())
    for name, (path, block) in OPTIONAL_BLOCKS.items():
        if (REPO / path).is_file():
            updated = replace_block(updated, name, block((REPO / path).read_text()))
    audits = audit_block()
    if audits is not None:
        updated = replace_block(updated, "audit-table", audits)
    loadcheck = json.loads((REPO / "results/app/loadcheck.json").read_text())
    updated = replace_block(updated, "loadcheck", loadcheck_block(loadcheck))
    if args.check:
        if updated != readme:
            print("README.md tables are out of date: run scripts/readme_tables.py")
            return 1
        return 0
    readme_path.write_text(updated)
    print("README.md tables updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
