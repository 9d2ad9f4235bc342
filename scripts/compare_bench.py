"""Compare the numbers of two benchmark result folders (e.g. the quick profile before and
after a restructure): every row's fingerprint and every stored metric, value by value.

    python scripts/compare_bench.py BEFORE_DIR AFTER_DIR

Prints each difference and a summary; exits 1 when any metric differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _metrics(record: dict) -> dict[str, float]:
    out = {}
    for key, ev in record["evals"].items():
        for part in ("metrics", "clean", "attacked"):
            for name, value in (ev.get(part) or {}).items():
                if isinstance(value, (int, float)):
                    out[f"{key}/{part}/{name}"] = float(value)
        if "mean_embedding_shift" in ev:
            out[f"{key}/shift"] = float(ev["mean_embedding_shift"])
    return out


def main(before: str, after: str) -> int:
    a_rows, b_rows = Path(before) / "rows", Path(after) / "rows"
    stems = [{p.stem for p in rows.glob("*.json")} for rows in (a_rows, b_rows)]
    names = sorted(stems[0] | stems[1])
    compared = differing = 0
    for name in names:
        pa, pb = a_rows / f"{name}.json", b_rows / f"{name}.json"
        if not (pa.is_file() and pb.is_file()):
            print(f"{name}: only in {'before' if pa.is_file() else 'after'}")
            differing += 1
            continue
        ra, rb = json.loads(pa.read_text()), json.loads(pb.read_text())
        if ra["fingerprint"] != rb["fingerprint"]:
            print(f"{name}: weights differ ({ra['fingerprint']} vs {rb['fingerprint']})")
        ma, mb = _metrics(ra), _metrics(rb)
        for key in sorted(set(ma) | set(mb)):
            compared += 1
            if ma.get(key) != mb.get(key):
                differing += 1
                print(f"{name} {key}: {ma.get(key)} vs {mb.get(key)}")
    print(f"{len(names)} rows, {compared} metrics compared, {differing} differ")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
