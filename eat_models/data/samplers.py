"""Batch samplers: P classes × M images per batch, or RobRank's SPC-2 pairs."""

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

    @property
    def batch_size(self) -> int:
        """Images per batch (P × M)."""
        return self.p * self.m

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


class PairBatchSampler(torch.utils.data.Sampler[list[int]]):
    """RobRank's SPC-2 batches: ``pairs_per_batch`` (anchor, positive) pairs of rows,
    interleaved ``[a0, p0, a1, p1, …]`` (2 × pairs images, classes as they fall).

    One epoch walks a permutation of all rows as anchors (``len(labels) // pairs`` batches,
    each row an anchor about once), each anchor with a positive drawn at random among the
    other rows of its class (the anchor itself only when its class has a single row). So an
    epoch sees twice the images of one pass, as RobRank's ``MNISTPairDataset`` does: its
    8 epochs of 128 pairs see what 16 epochs of 128 images do. The defenses that build their
    own triplets take the even rows as anchors (:attr:`eat_models.defenses.base.Batch.pairs`).
    Deterministic for a given seed and epoch (call :meth:`set_epoch`).
    """

    def __init__(
        self,
        labels: np.ndarray,
        pairs_per_batch: int,
        num_batches: int | None = None,
        seed: int = 0,
    ) -> None:
        self.labels = np.asarray(labels)
        if len(self.labels) == 0:
            raise ValueError("PairBatchSampler needs at least one row")
        if pairs_per_batch < 1:
            raise ValueError(f"pairs_per_batch must be at least 1, got {pairs_per_batch}")
        self.by_class = {int(c): np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        self.pairs = int(pairs_per_batch)
        self.num_batches = num_batches or max(1, len(self.labels) // self.pairs)
        self.seed = seed
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        """Images per batch (two per pair)."""
        return 2 * self.pairs

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def _positives(self, rng: np.random.Generator, anchors: np.ndarray) -> np.ndarray:
        """A random other row of each anchor's class (vectorised per class)."""
        positives = np.empty_like(anchors)
        anchor_labels = self.labels[anchors]
        for c, rows in self.by_class.items():
            where = np.flatnonzero(anchor_labels == c)
            if len(where) == 0:
                continue
            if len(rows) == 1:
                positives[where] = rows[0]
                continue
            # draw among the class's other rows: an index into rows without the anchor's own
            own = np.searchsorted(rows, anchors[where])
            pick = rng.integers(0, len(rows) - 1, size=len(where))
            positives[where] = rows[pick + (pick >= own)]
        return positives

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch, 2))
        order = rng.permutation(len(self.labels))
        cursor = 0
        for _ in range(self.num_batches):
            if cursor + self.pairs > len(order):
                order, cursor = rng.permutation(len(self.labels)), 0
            anchors = order[cursor : cursor + self.pairs]
            cursor += self.pairs
            if len(anchors) < self.pairs:  # fewer rows than pairs: fill with replacement
                anchors = np.concatenate(
                    [anchors, rng.choice(len(self.labels), self.pairs - len(anchors))]
                )
            batch = np.empty(2 * self.pairs, dtype=np.int64)
            batch[0::2] = anchors
            batch[1::2] = self._positives(rng, anchors)
            yield batch.tolist()
