"""Image search: a query image in, the top-k gallery items of each chosen model out.

The query is brought to the model's domain by :func:`index.preprocess_image` (greyscale,
resized, inverted when its background is light — as the gallery was), and the result
carries that preprocessed image, so the user sees what the model saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio.to_thread
import numpy as np
from PIL import Image

from .display import DISPLAY_SIDE, tensor_to_image
from .gallery import ModelView, Resources
from .models import MODEL_KEYS
from .ood import OODScore, model_cues
from .serialize import attributes

#: what a search's ``model`` may name besides a model key (or a comma-separated list of keys)
MODEL_GROUPS = {"both": ("eat", "vanilla"), "all": MODEL_KEYS}
SEARCH_CHOICES = (*MODEL_KEYS, *MODEL_GROUPS)
DEFAULT_K = 8
#: the most results one search returns, in the UI and over HTTP alike
MAX_K = 24
#: the model(s) a search uses unless told otherwise, in the UI and over HTTP alike
DEFAULT_MODEL = "all"
#: searches that decode and embed at the same time, the UI's and ``POST /api/search``'s
#: together; the others wait for a slot without holding a thread
SEARCH_CONCURRENCY = 4

T = TypeVar("T")


@dataclass
class SearchHit:
    """One gallery item in a ranking; ``image`` is its thumbnail, made when asked for."""

    rank: int
    item_id: int
    label: int
    class_name: str
    score: float
    resources: Resources = field(repr=False, compare=False)

    @property
    def image(self) -> Image.Image:
        return self.resources.thumbnail(self.item_id)

    @property
    def caption(self) -> str:
        return f"{self.class_name} {self.score:.2f}"

    def to_dict(self) -> dict:
        return {
            **attributes(self, "rank", "item_id", "label", rename={"item_id": "id"}),
            "class": self.class_name,
            "score": round(self.score, 4),
            # where the item came from (a dataset row or a file): with ``eat app --index`` the
            # ids above are gallery positions, and this names the index's item
            "source": self.resources.refs[self.item_id],
        }


@dataclass
class ModelSearch:
    """One model's answer to a query."""

    key: str
    label: str
    hits: list[SearchHit]
    seconds: float
    ood: OODScore | None = None

    def to_dict(self) -> dict:
        out = {
            "model": self.key,
            "seconds": round(self.seconds, 4),
            "hits": [h.to_dict() for h in self.hits],
        }
        if self.ood is not None:
            out["out_of_domain"] = self.ood.out_of_domain
            out["ood_score"] = round(self.ood.score, 4)
            out["ood_cues"] = self.ood.to_dict()["cues"]
        return out


@dataclass
class SearchResult:
    """The preprocessed query (what the model saw) and each chosen model's top-k."""

    model_input: Image.Image
    results: dict[str, ModelSearch]
    #: time spent reading (decoding) the upload before the search, set by the caller
    read_seconds: float = 0.0
    #: what was searched, in words ("your upload coat.jpg"), set by the caller
    query: str = ""

    def to_dict(self) -> dict:
        return {key: result.to_dict() for key, result in self.results.items()}

    @property
    def out_of_domain(self) -> bool:
        """Whether any chosen model finds the query unlike what it was trained on."""
        return any(r.ood is not None and r.ood.out_of_domain for r in self.results.values())

    @property
    def ood(self) -> OODScore | None:
        """The most confident out-of-domain verdict among the chosen models."""
        scores = [r.ood for r in self.results.values() if r.ood is not None]
        return max(scores, key=lambda o: o.score) if scores else None


def check_k(k) -> int:
    """``k`` as an int in 1 … MAX_K, or a ValueError that says so."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise ValueError(f"the number of results must be a whole number, got {k!r}") from None
    if not 1 <= k <= MAX_K:
        raise ValueError(f"the number of results must lie between 1 and {MAX_K}, got {k}")
    return k


def ranked_hits(
    resources: Resources,
    view: ModelView,
    vector: np.ndarray,
    k: int,
    exclude: int | None = None,
) -> list[SearchHit]:
    """The top-``k`` gallery items for one embedding (``exclude``: an item id left out)."""
    extra = 0 if exclude is None else 1
    found = view.index.search(vector.reshape(1, -1), min(k + extra, len(resources)))
    hits = [h for h in found.hits[0] if h.id != exclude][:k]
    return [
        SearchHit(
            rank=i + 1,
            item_id=h.id,
            label=int(resources.labels[h.id]),
            class_name=resources.class_name(int(resources.labels[h.id])),
            score=h.score,
            resources=resources,
        )
        for i, h in enumerate(hits)
    ]


def models_for(choice, loaded: tuple[str, ...] = MODEL_KEYS) -> tuple[str, ...]:
    """The model keys a choice stands for, in display order: one key, ``both`` (eat and
    vanilla), ``all`` (every loaded model), or several keys (a list or ``"eat,baseline"``).
    Keys the app has not loaded are refused by name. Case and spaces do not matter; a
    group stands alone."""
    if isinstance(choice, str):
        parts = tuple(c.strip().lower() for c in choice.split(",") if c.strip())
    else:
        parts = tuple(str(c).strip().lower() for c in choice or ())
    if not parts:
        raise ValueError("choose at least one model")
    groups = [p for p in parts if p in MODEL_GROUPS]
    if groups and len(parts) > 1:
        raise ValueError(
            f"{groups[0]!r} stands for several models and is given alone; to combine models, "
            f"list their keys ({', '.join(MODEL_KEYS)}) separated by commas"
        )
    if groups:
        names = loaded if groups[0] == "all" else MODEL_GROUPS[groups[0]]
    else:
        names = parts
    unknown = [n for n in names if n not in MODEL_KEYS]
    if unknown:
        raise ValueError(
            f"unknown model {unknown[0]!r}; choose one of {', '.join(SEARCH_CHOICES)} "
            "(or several keys separated by commas)"
        )
    missing = [n for n in names if n not in loaded]
    if missing:
        raise ValueError(
            f"the {missing[0]} model is not loaded in this app (loaded: {', '.join(loaded)})"
        )
    return tuple(k for k in loaded if k in names)


class SearchService:
    """Top-k search of the gallery with any of the loaded models (vanilla, the single-model
    baseline, the EAT ensemble)."""

    def __init__(self, resources: Resources, concurrency: int = SEARCH_CONCURRENCY) -> None:
        self.resources = resources
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self.running = 0  # searches holding a slot now
        self.most_running = 0  # the most that ever held one at once

    async def limited(self, work: Callable[[], T]) -> T:
        """Run ``work`` (decoding a query and searching with it) in a worker thread once
        one of the server's :attr:`concurrency` search slots is free. Every way to search
        (the UI's events, ``POST /api/search``) goes through here, so no route, queued or
        not, can make more searches run at once; a caller waiting for a slot holds no
        thread."""
        async with self._slots:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                return await anyio.to_thread.run_sync(work)
            finally:
                self.running -= 1

    def out_of_domain(self, key: str, tensor, top1: float) -> OODScore | None:
        """Model ``key``'s out-of-domain verdict on one model input ``[C, H, W]``."""
        detector = self.resources.ood.get(key)
        if detector is None:
            return None
        view = self.resources.views[key]
        cues = model_cues(view.model, tensor[None])
        flat = tensor.reshape(1, -1).numpy()
        return detector.score_cues(flat, np.asarray([top1]), cues)[0]

    def search(
        self, image: Image.Image, model: str | list[str] = DEFAULT_MODEL, k: int = DEFAULT_K
    ) -> SearchResult:
        if not isinstance(image, Image.Image):
            raise ValueError("no query image: upload an image or pick an example")
        k = check_k(k)
        keys = models_for(model, self.resources.keys)
        results = {}
        model_input = None
        for key in keys:
            started = time.perf_counter()
            view = self.resources.views[key]
            tensor = view.preprocess(image)
            vector = view.embed(tensor[None])[0]
            hits = ranked_hits(self.resources, view, vector, k)
            verdict = self.out_of_domain(key, tensor, hits[0].score if hits else -1.0)
            results[key] = ModelSearch(
                key, view.label, hits, time.perf_counter() - started, verdict
            )
            if model_input is None:
                model_input = tensor_to_image(tensor, 2 * DISPLAY_SIDE)
        return SearchResult(model_input=model_input, results=results)
