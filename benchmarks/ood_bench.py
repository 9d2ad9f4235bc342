"""``python -m benchmarks.ood_bench``: how well the out-of-domain signal separates strange uploads.

Loads the app's models and gallery exactly as ``eat app`` does (the detectors calibrate on
the gallery), then scores, through the same search path as an upload:

* **in-domain**: Fashion-MNIST *training* images (the gallery is the test set, so none of
  them is in it), as 28×28 PNG-like PIL images;
* **out-of-domain**, all made on this machine: crops of the two photos scikit-learn ships
  (a temple in China, a flower) at random places and scales; handwritten digits
  (scikit-learn's 8×8 digits, enlarged: dark background, centred — the hardest kind);
  uniform noise; blank images of every grey level; linear gradients; stripes and
  checkerboards; text and logo-like shapes drawn with Pillow; and **real photographs**:
  crops of scikit-image's sample photos (``skimage.data``), split in two: seed 0 uses one
  half (astronaut, camera, cat, coffee, coins, moon, rocket, brick, grass), every other seed
  the other half (motorcycle, horse, retina, Hubble deep field, gravel, clock, page, cells,
  tissue); and **held-out photos**: crops of the sample photos that gradio and matplotlib
  ship (cheetahs, a lion, a tree, a tower, Grace Hopper).

How the detector was tuned, so that the table measures it on images it was not tuned on:
its cues, the Fisher rule and the threshold were chosen on seed 0's images; the ``frame``
cue was added after seeds 1–3 showed which real photos went unflagged (horse silhouettes,
tissue, gravel, a page, all on a ground that the preprocessing brings to black at its
median but not all round). Seeds 4–6, the default, score it: their in-domain images, their
made images and the held-out photos were not looked at before the cues were fixed.

Reports, per model, the operating point of the shipped flag (the share flagged of each
kind, i.e. its true-positive rate, against the in-domain false-alarm rate; #21's target:
≥ 90 % of every kind at ≤ 1 % false alarms) and the AUROC of the OOD score (in-domain vs
all out-of-domain, and per kind); writes
``results/app/ood.json`` and ``ood.md`` (with the command, commit, date and load average)
and a contact sheet of the images used (``ood_images.png``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from eat_models.files import write_json
from eat_models.provenance import provenance

from . import command_parser


def _photo_crops(rng, n: int) -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(60, min(photo.size)))
        x = int(rng.integers(0, photo.width - side))
        y = int(rng.integers(0, photo.height - side))
        out.append(photo.crop((x, y, x + side, y + side)))
    return out


#: scikit-image's sample photographs, by half: the first is tuned on (seed 0), the second scored
TUNING_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "moon",
    "rocket",
    "brick",
    "grass",
)
SCORED_PHOTOS = (
    "motorcycle_left",
    "horse",
    "retina",
    "hubble_deep_field",
    "gravel",
    "clock_motion",
    "page",
    "cell",
    "ihc",
)


#: photographs that other installed packages ship (gradio's and matplotlib's samples), never
#: looked at while the cues and the threshold were chosen: (package, path inside it)
HELD_OUT_PHOTOS = (
    ("gradio", "media_assets/images/cheetah.jpg"),
    ("gradio", "media_assets/images/cheetah1.jpg"),
    ("gradio", "test_data/cheetah2.jpg"),
    ("gradio", "media_assets/images/groot.jpeg"),
    ("gradio", "media_assets/images/lion.jpg"),
    ("gradio", "media_assets/images/tower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def _real_photos(rng, n: int, seed: int) -> list[Image.Image]:
    """Square crops, at random places and scales, of scikit-image's sample photographs
    (shipped inside its wheel: nothing is downloaded)."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    names = TUNING_PHOTOS if seed == 0 else SCORED_PHOTOS
    return _crops([next(folder.glob(f"{name}.*")) for name in names], rng, n)


def _held_out_photos(rng, n: int) -> list[Image.Image]:
    """Square crops of :data:`HELD_OUT_PHOTOS` (installed with the app's own dependencies)."""
    import importlib

    paths = [
        Path(importlib.import_module(package).__file__).parent / inside
        for package, inside in HELD_OUT_PHOTOS
    ]
    return _crops(paths, rng, n)


def _crops(paths: list[Path], rng, n: int) -> list[Image.Image]:
    """``n`` square crops, at random places and scales (a side of 48 px to the whole
    photo's shorter side), of the photos at ``paths``, taken in turn."""
    photos = []
    for path in paths:
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(48, min(photo.size) - 1), min(photo.size)))
        x = int(rng.integers(0, photo.width - side + 1))
        y = int(rng.integers(0, photo.height - side + 1))
        out.append(photo.crop((x, y, x + side, y + side)))
    return out


def _digits(rng, n: int) -> list[Image.Image]:
    from sklearn.datasets import load_digits

    digits = load_digits().images
    rows = rng.choice(len(digits), n, replace=False)
    return [
        Image.fromarray((digits[r] * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR)
        for r in rows
    ]


def _noise(rng, n: int) -> list[Image.Image]:
    return [
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8))
        if i % 2
        else Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        for i in range(n)
    ]


def _blanks(n: int) -> list[Image.Image]:
    return [Image.new("L", (28, 28), int(v)) for v in np.linspace(0, 255, n)]


def _gradients(rng, n: int) -> list[Image.Image]:
    out = []
    for _ in range(n):
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:64, 0:64] / 63.0
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
        out.append(Image.fromarray((ramp * 255).astype(np.uint8)))
    return out


def _patterns(rng, n: int) -> list[Image.Image]:
    out = []
    for i in range(n):
        period = int(rng.integers(2, 9))
        yy, xx = np.mgrid[0:56, 0:56]
        if i % 2:
            pattern = ((xx // period + yy // period) % 2) * 255
        else:
            pattern = ((xx // period) % 2) * 255
        out.append(Image.fromarray(pattern.astype(np.uint8)))
    return out


def _drawings(rng, n: int) -> list[Image.Image]:
    words = ["EAT", "LOGO", "42", "Hello", "ACME", "@", "SALE", "x+y", "OK", "PDF"]
    out = []
    for i in range(n):
        background = int(rng.integers(0, 256))
        image = Image.new("L", (96, 96), background)
        draw = ImageDraw.Draw(image)
        ink = 255 - background if abs(255 - 2 * background) > 60 else 0
        if i % 2:
            draw.text(
                (10, 35), words[i % len(words)], fill=ink, font_size=int(rng.integers(18, 34))
            )
        else:
            box = sorted(rng.integers(10, 86, 4).tolist())
            shape = [box[0], box[1], box[2] + 1, box[3] + 1]
            (draw.ellipse if i % 4 == 0 else draw.rectangle)(shape, outline=ink, width=4)
        out.append(image)
    return out


def make_images(seed: int = 0, per_kind: int = 100) -> dict[str, list[Image.Image]]:
    """The out-of-domain images, by kind (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    return {
        "photo crops": _photo_crops(rng, per_kind),
        "handwritten digits": _digits(rng, per_kind),
        "noise": _noise(rng, per_kind),
        "blank": _blanks(per_kind),
        "gradients": _gradients(rng, per_kind),
        "stripes / checkerboards": _patterns(rng, per_kind),
        "text and shapes": _drawings(rng, per_kind),
        "real photos": _real_photos(rng, per_kind, seed),
        "held-out photos": _held_out_photos(rng, per_kind),
    }


def in_domain_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Fashion-MNIST training images (the app's gallery is the test set)."""
    from eat_models.data import load_fashion_mnist, stratified_slice

    train, _ = load_fashion_mnist("standard")
    subset = stratified_slice(train, n, seed)
    return [Image.fromarray(subset.images[i].numpy()) for i in range(len(subset))]


def contact_sheet(groups: dict[str, list[Image.Image]], path: Path, per_row: int = 12) -> None:
    """The first ``per_row`` images of each group, one row each, 48 px a tile."""
    tile = 48
    sheet = Image.new("L", (tile * per_row, tile * len(groups)), 128)
    for r, images in enumerate(groups.values()):
        for c, image in enumerate(images[:per_row]):
            sheet.paste(image.convert("L").resize((tile, tile)), (c * tile, r * tile))
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("ood_bench", __doc__)
    parser.add_argument(
        "--models", default="assets/models", help="checkpoints vanilla/, eat/ (and baseline/)"
    )
    parser.add_argument("--gallery-size", type=int, default=None, help="gallery subset size")
    parser.add_argument("--cache-dir", default=None, help="app cache (default ~/.cache/eat/app)")
    parser.add_argument("--in-domain", type=int, default=1000, help="in-domain images scored")
    parser.add_argument("--per-kind", type=int, default=100, help="images of each OOD kind")
    parser.add_argument("--out", default="results/app", help="folder for ood.json / ood.md")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[4, 5, 6],
        help="which images are made and sampled, one set per seed, pooled in the table "
        "(default: %(default)s; the detector's cues were chosen on seeds 0-3, so seeds from 4 "
        "on measure it on images it was not tuned on; seed 0's real photos are one half of "
        "scikit-image's samples, every other seed's the other half)",
    )
    args = parser.parse_args(argv)

    import torch
    from sklearn.metrics import roc_auc_score

    from app.services.gallery import load_resources
    from app.services.ood import SCORED_CUES
    from app.services.search import SearchService

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    origin = provenance()  # before this run rewrites its own tracked outputs
    resources = load_resources(
        args.models, gallery_size=args.gallery_size, cache_root=args.cache_dir
    )
    service = SearchService(resources)
    keys = resources.keys
    inside = "in-domain (Fashion-MNIST train)"
    groups: dict[str, list] = {}  # every seed's images of a kind, the seeds in order
    #: per seed, model and kind: (score, flagged) of each image
    by_seed: dict[int, dict[str, dict[str, list]]] = {}
    for seed in args.seeds:
        made = {inside: in_domain_images(args.in_domain, seed)}
        made |= make_images(seed=seed, per_kind=args.per_kind)
        by_seed[seed] = {key: {} for key in keys}
        for name, images in made.items():
            groups.setdefault(name, []).extend(images)
            for image in images:
                result = service.search(image, "all", 1)
                for key in keys:
                    ood = result.results[key].ood
                    by_seed[seed][key].setdefault(name, []).append((ood.score, ood.out_of_domain))
    scores = {
        key: {name: [v for seed in args.seeds for v in by_seed[seed][key][name]] for name in groups}
        for key in keys
    }
    per_seed = {
        seed: {
            key: {
                "false_alarm_rate": float(np.mean([f for _, f in by_seed[seed][key][inside]])),
                "flagged": {
                    name: float(np.mean([f for _, f in by_seed[seed][key][name]]))
                    for name in list(groups)[1:]
                },
            }
            for key in keys
        }
        for seed in args.seeds
    }

    report = {}
    for key in keys:
        clean = [s for s, _ in scores[key][inside]]
        per_kind = {}
        strange_all = []
        for name in list(groups)[1:]:
            values = [s for s, _ in scores[key][name]]
            strange_all += values
            per_kind[name] = {
                "images": len(values),
                "auroc": roc_auc_score([0] * len(clean) + [1] * len(values), clean + values),
                "flagged": float(np.mean([f for _, f in scores[key][name]])),
            }
        detector = resources.ood[key]
        report[key] = {
            "threshold": detector.threshold,
            "worst_kind_flagged": min(v["flagged"] for v in per_kind.values()),
            "auroc": roc_auc_score([0] * len(clean) + [1] * len(strange_all), clean + strange_all),
            "false_alarm_rate": float(np.mean([f for _, f in scores[key][inside]])),
            "in_domain_images": len(clean),
            "per_kind": per_kind,
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    contact_sheet(groups, out / "ood_images.png")
    record = {
        **origin,
        "load_average_before": [round(x, 2) for x in load_before],
        "wall_s": round(time.perf_counter() - started, 1),
        "models": {k: resources.views[k].model.meta.get("fingerprint") for k in keys},
        "gallery": resources.gallery_name,
        "gallery_images": len(resources),
        "target_auroc": 0.95,
        "target": "at most 1 % of in-domain images flagged, at least 90 % of every other kind",
        "seeds": args.seeds,
        "per_seed": per_seed,
        "scored_cues": list(SCORED_CUES),
        "results": report,
    }
    write_json(out / "ood.json", record)
    lines = [
        "# Out-of-domain signal",
        "",
        f"Written by `{record['command']}` at commit `{record['commit']}`, {record['date']}, "
        f"load average before {load_before[0]:.2f}, {record['wall_s']:.0f} s. Gallery: "
        f"{len(resources)} images of `{resources.gallery_name}`. In-domain: "
        f"{args.in_domain} Fashion-MNIST training images and {args.per_kind} of each "
        "out-of-domain kind per seed, made on this machine with seeds "
        + ", ".join(map(str, args.seeds))
        + f" ({len(args.seeds)} × those numbers pooled in the table; the cues and the "
        "threshold were chosen on seeds 0–3, so seeds from 4 on score images the detector was "
        "not tuned on, and the held-out photos were never looked at while tuning) "
        "(rows of `ood_images.png`, the first seed's, in this order: in-domain, "
        + ", ".join(list(groups)[1:])
        + "). Scored cues: "
        + ", ".join(SCORED_CUES)
        + ". Each cell: the share of that kind the shipped flag raises (its true-positive rate "
        "at the in-domain false-alarm rate of the third column) / the OOD score's AUROC. "
        "Targets: ≤ 1 % false alarms and ≥ 90 % flagged of every kind (#21); AUROC ≥ 0.95.",
        "",
        "| model | in-domain flagged (false alarms) | worst kind flagged | AUROC, all kinds | "
        + " | ".join(f"{k}: flagged / AUROC" for k in list(groups)[1:])
        + " |",
        "|---|---:|---:|---:|" + "---:|" * (len(groups) - 1),
    ]
    for key in keys:
        r = report[key]
        cells = [f"{v['flagged']:.0%} / {v['auroc']:.3f}" for v in r["per_kind"].values()]
        lines.append(
            f"| {key} | {r['false_alarm_rate']:.1%} | {r['worst_kind_flagged']:.0%} | "
            f"{r['auroc']:.3f} | " + " | ".join(cells) + " |"
        )
    if len(args.seeds) > 1:
        worst_names = list(groups)[1:]
        lines += [
            "",
            "Per seed (each its own images): in-domain false alarms / the worst kind flagged "
            "(which).",
            "",
            "| model | " + " | ".join(f"seed {seed}" for seed in args.seeds) + " |",
            "|---|" + "---|" * len(args.seeds),
        ]
        for key in keys:
            cells = []
            for seed in args.seeds:
                r = per_seed[seed][key]
                worst = min(worst_names, key=lambda n: r["flagged"][n])
                cells.append(f"{r['false_alarm_rate']:.1%} / {r['flagged'][worst]:.0%} ({worst})")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "![images used](ood_images.png)", ""]
    (out / "ood.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
