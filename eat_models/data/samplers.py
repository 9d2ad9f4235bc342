"""Batch samplers: P classes × M images per batch."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class ClassBalancedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of ``classes_per_batch`` (P) classes × ``samples_per_class`` (M) images.

    Classes with fewer than M items are sampled with replacement. ``num_batches`` defaults
    to one pass over the data (``len(labels) // (P*M)``). Deterministic for a given seed
    and epoch (call :meth:`set_epoch`).
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int,
        samples_per_class: int,
        num_batches: int | None = None,
        seed: int = 0,
    ) -> None:
        self.labels = np.asarray(labels)
        self.by_class = {int(c): np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        if classes_per_batch > len(self.by_class):
            raise ValueError(
                f"classes_per_batch={classes_per_batch} but only {len(self.by_class)} classes"
            )
        self.p = classes_per_batch
        self.m = samples_per_class
        self.num_batches = num_batches or max(1, len(self.labels) // (self.p * self.m))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        classes = np.array(sorted(self.by_class))
        # Walk through per-class permutations so that one pass sees each image about once.
        queues = {c: rng.permutation(rows) for c, rows in self.by_class.items()}
        cursors = dict.fromkeys(queues, 0)
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c in rng.choice(classes, size=self.p, replace=False):
                c = int(c)
                rows = queues[c]
                if len(rows) < self.m:
                    batch.extend(rng.choice(rows, size=self.m, replace=True).tolist())
                    continue
                if cursors[c] + self.m > len(rows):
                    queues[c] = rows = rng.permutation(rows)
                    cursors[c] = 0
                batch.extend(rows[cursors[c] : cursors[c] + self.m].tolist())
                cursors[c] += self.m
            yield batch
