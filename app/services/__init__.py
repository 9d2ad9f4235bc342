"""The app's services in one place: what the Gradio layout wires to its events.

Plain Python (no Gradio): each service takes PIL images or decoded uploads and returns
result objects with images, numbers and a ``to_dict()`` for the API's JSON output.

One home per job:

* the gallery: ``models`` (which models, their order and names, loading), ``sources``
  (dataset, folder or outside indexes as the gallery), ``cache`` (the private cache),
  ``gallery`` (:class:`Resources`, one view per model, :func:`~.gallery.load_resources`),
  ``ood_calibration`` (each view's out-of-domain detector, :mod:`.ood`), ``projection``;
* the services: ``search``, ``attack_lab``, ``clustering`` (with ``cluster_algorithms``,
  ``downloads`` and ``set_attack``), ``report``;
* what they share: ``budget`` (attack defaults and limits), ``uploads``, ``errors`` (what a
  person is told), ``display`` (enlarged images, thumbnails), ``plots``, ``text``,
  ``serialize`` (JSON output), ``example_images`` (the shipped example queries).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .attack_lab import AttackLab
from .clustering import ClusterService
from .example_images import EXAMPLES_DIR, Example, load_examples
from .gallery import Resources
from .projection import small_sets_warm
from .report import DEFAULT_RESULTS_DIR, Report, audit_names, load_audit, load_report
from .search import SearchService


@dataclass
class Services:
    """Search, clustering, attack lab and report over one set of :class:`Resources`."""

    resources: Resources
    search: SearchService
    cluster: ClusterService
    lab: AttackLab
    results_dir: Path
    examples: list[Example] = field(default_factory=list)
    lab_picks: list[int] = field(default_factory=list)
    umap_enabled: bool = True

    def report(self) -> Report:
        """The benchmark's report, with a note under its targets table when the EAT run it
        measures is not the one served here."""
        rep = load_report(self.results_dir)
        served = self.resources.views["eat"].model.meta.get("run")
        heading = "## Targets (DESIGN.md §7), EAT row"
        if served and served != "eat" and heading in rep.markdown:
            head, tail = rep.markdown.split(heading, 1)
            title, rest = tail.split("\n", 1) if "\n" in tail else (tail, "")
            note = (
                f"\n\n*These targets are measured on the benchmark's `eat` row; this app serves "
                f"the run `{served}`, whose numbers are its row in the main table above.*\n"
            )
            rep.markdown = head + heading + title + note + rest
        return rep

    def served_models(self) -> str:
        """What the report tab opens with: the ``README.md`` of the served models' folder
        (their numbers, written when they were shipped), or a line naming the models."""
        res = self.resources
        folder = Path(res.views["eat"].model.meta.get("path", ".")).parent
        readme = folder / "README.md"
        names = ", ".join(f"{res.views[k].label}" for k in res.keys)
        if readme.is_file():
            text = readme.read_bytes()[:MAX_SERVED_README_BYTES].decode("utf-8", "replace")
            return f"### The models served here ({names})\n\n" + text.split("\n", 1)[-1]
        return f"### The models served here\n\n{names}, from `{folder}` (it has no README.md)."

    @property
    def audit_dir(self) -> Path:
        """Where ``eat audit`` writes its cards: ``results/audit`` beside the benchmark's."""
        return Path(self.results_dir).parent / "audit"

    def audits(self) -> list[str]:
        return audit_names(self.audit_dir)

    def audit_report(self, name: str) -> Report:
        return load_audit(self.audit_dir, name)

    def status(self) -> dict:
        """Gallery size, models and whether UMAP is warm — for the header and the API."""
        res = self.resources
        return {
            "gallery": res.gallery_name,
            "gallery_images": len(res),
            "models": {
                key: {
                    "label": res.views[key].label,
                    "members": res.views[key].model.meta.get("num_members", 1),
                    "defense": res.views[key].model.meta.get("defense"),
                    "run": res.views[key].model.meta.get("run"),
                    "fingerprint": res.views[key].model.meta.get("fingerprint"),
                }
                for key in res.keys
            },
            "knows": {
                "classes": list(res.class_names),
                "input": "{0}×{0} {1}".format(
                    res.views["eat"].model.meta.get("input_size", "?"),
                    "greyscale"
                    if res.views["eat"].model.meta.get("channels", 1) == 1
                    else "colour",
                ),
                "dataset": res.views["eat"].model.meta.get("dataset"),
            },
            "umap_enabled": self.umap_enabled,
            "umap_warm": all(p.ready for p in res.projections) and small_sets_warm(),
            # the gallery maps alone: UMAP coordinates shown (stored ahead, cached or fitted)
            "maps_ready": all(p.ready for p in res.projections),
            "maps": {key: res.views[key].projection.method for key in res.keys},
        }


#: the most of a models folder's README.md shown in the report tab
MAX_SERVED_README_BYTES = 64 * 1024


def build_services(
    resources: Resources,
    results_dir: str | os.PathLike | None = None,
    examples_dir: str | os.PathLike = EXAMPLES_DIR,
    umap_enabled: bool = True,
) -> Services:
    return Services(
        resources=resources,
        search=SearchService(resources),
        cluster=ClusterService(resources),
        lab=AttackLab(resources),
        results_dir=Path(results_dir) if results_dir is not None else DEFAULT_RESULTS_DIR,
        examples=load_examples(examples_dir),
        lab_picks=resources.sample_ids(per_class=2),
        umap_enabled=umap_enabled,
    )
