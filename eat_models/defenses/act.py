"""ACT: Anti-Collapse Triplet (Zhou et al., "Adversarial Attack and Defense in Deep
Ranking", 2021; RobRank's ``pnp`` defense).

Per step, one triplet (anchor, positive, negative) is drawn for every anchor of the batch
that has both (positive and negative at random, as RobRank's random miner does). PGD
perturbs the positive and the negative images together so that their embeddings
*collapse* onto each other (minimise ‖f(p̃) − f(ñ)‖); the model then learns to pull them
apart again:

* triplet loss (RobRank's setting): ``mean relu(‖f(a) − f(p̃)‖ − ‖f(a) − f(ñ)‖ + margin)``
  with the clean anchor and the loss's margin (0.2), through :mod:`.triplets`;
* Proxy-Anchor (our adaptation): the proxies play the anchors' part, so the member's
  metric loss is applied to the collapsed images ``[p̃; ñ]`` with their own labels — each
  collapsed pair is pulled back to its two different class proxies.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks import Objective
from ..losses import MetricLoss, random_triplets
from .base import AdversarialDefense, Batch
from .triplets import split_triplets, triplet_loss


def collapse_objective(num_pairs: int) -> Objective:
    """For embeddings ``[p; n]`` (2·m rows): −‖e_p − e_n‖, repeated for both of a pair.

    Repeating the pair's value per row keeps PGD's per-sample best-iterate choice the
    same for both images of a pair.
    """

    def objective(embeddings: torch.Tensor) -> torch.Tensor:
        gap = -torch.linalg.vector_norm(embeddings[:num_pairs] - embeddings[num_pairs:], dim=1)
        return torch.cat([gap, gap])

    return objective


class ACT(AdversarialDefense):
    """Anti-collapse: collapse positive and negative by PGD, then learn to separate them."""

    name = "act"

    def member_loss(
        self, k: int, net: nn.Module, loss: MetricLoss, batch: Batch
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        anchor, positive, negative = random_triplets(batch.labels, batch.pairs)
        m = len(anchor)
        if m == 0:  # no anchor with both a positive and a negative
            return None, {}
        pairs = torch.cat([batch.images[positive], batch.images[negative]])
        collapsed = self.craft(net, pairs, collapse_objective(m))
        if loss.takes_triplets:  # RobRank's: the clean anchor with the collapsed pair
            emb = net(torch.cat([batch.images[anchor], collapsed]))
            value = triplet_loss(*split_triplets(emb), loss.margin)
        else:
            labels = torch.cat([batch.labels[positive], batch.labels[negative]])
            value = loss(net(collapsed), labels)
        return value, {"loss_adv": value.item()}
