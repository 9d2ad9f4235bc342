"""RobRank's Empirical Robustness Score (ERS): one number for the ten ranking attacks.

ERS is the mean of ten terms, each rescaled so that 100 means "the attack did nothing" and
0 "the attack won completely" (robrank ``tools/pjswipe.py``; docs/robrank-attacks-spec.md §2).
With our raw scores as fractions (percentile ranks, recalls, retain@4), cosines and
distances:

=======  =====================  ====================================
term     raw score              ERS term
=======  =====================  ====================================
CA+      ``ca_pos`` prank       2 · 100 · prank
CA−      ``ca_neg`` prank       100 − 100 · prank
QA+      ``qa_pos`` prank       2 · 100 · prank
QA−      ``qa_neg`` prank       100 − 100 · prank
TMA      ``tma`` cosine         100 · (1 − cosine)
ES:D     ``es`` mean shift      50 · (2 − shift)
ES:R     ``es`` recall@1        100 · recall@1
LTM      ``ltm`` recall@1       100 · recall@1
GTM      ``gtm`` recall@1       100 · recall@1
GTT      ``gtt`` retain@4       100 · retain@4
=======  =====================  ====================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

#: term → (attack, metric of its attacked scores, rescaling)
ERS_TERMS: dict[str, tuple[str, str, Callable[[float], float]]] = {
    "CA+": ("ca_pos", "prank", lambda v: 200.0 * v),
    "CA−": ("ca_neg", "prank", lambda v: 100.0 - 100.0 * v),
    "QA+": ("qa_pos", "prank", lambda v: 200.0 * v),
    "QA−": ("qa_neg", "prank", lambda v: 100.0 - 100.0 * v),
    "TMA": ("tma", "cosine", lambda v: 100.0 * (1.0 - v)),
    "ES:D": ("es", "embedding_shift", lambda v: 50.0 * (2.0 - v)),
    "ES:R": ("es", "recall@1", lambda v: 100.0 * v),
    "LTM": ("ltm", "recall@1", lambda v: 100.0 * v),
    "GTM": ("gtm", "recall@1", lambda v: 100.0 * v),
    "GTT": ("gtt", "retain@4", lambda v: 100.0 * v),
}
ERS_ATTACKS = tuple(dict.fromkeys(attack for attack, _, _ in ERS_TERMS.values()))


def raw_scores(attacked: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """RobRank's raw score of each term from ``{attack name: attacked metrics}``."""
    missing = [a for a in ERS_ATTACKS if a not in attacked]
    if missing:
        raise ValueError(f"ERS needs the attacks {', '.join(missing)}")
    return {term: float(attacked[a][m]) for term, (a, m, _) in ERS_TERMS.items()}


def ers_terms(attacked: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The ten rescaled terms (100: robust, 0: broken)."""
    raw = raw_scores(attacked)
    return {term: ERS_TERMS[term][2](value) for term, value in raw.items()}


def ers(attacked: Mapping[str, Mapping[str, float]]) -> float:
    """ERS: the mean of :func:`ers_terms`."""
    terms = ers_terms(attacked)
    return sum(terms.values()) / len(terms)
