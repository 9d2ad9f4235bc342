"""RobRank's ten ranking attacks, ERS, APGD and the strong worst case, each against a direct
computation (naive loops over a tiny gallery, or hand-computed values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eat_models.attacks import (
    ATTACKS,
    ERS_TERMS,
    AttackBudget,
    AttackSet,
    Scored,
    apgd,
    apgd_checkpoints,
    craft,
    ers,
    ers_terms,
    evaluate_attack,
    evaluate_suite,
    pgd,
    suite,
    worst_case,
)
from tests.oracles import ROBRANK_ERS_TERMS, dist, percentile_rank

N, D = 60, 4  # gallery size, embedding size
RANKING = ["ca_pos", "ca_neg", "qa_pos", "qa_neg", "tma", "es", "ltm", "gtm", "gtt"]


class TinyEmbedder(nn.Module):
    """4×4 greyscale images → L2-normalised 4-d embeddings through one linear map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(16, D)

    def forward(self, x):
        return F.normalize(self.linear(x.flatten(1)), dim=1)


class TinySet:
    """Images and labels with ``batch(rows)``, as the evaluation driver reads them."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows):
        return self.images[torch.as_tensor(np.asarray(rows))]


@pytest.fixture(scope="module")
def tiny():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(N, 1, 4, 4, generator=gen)
    labels = np.arange(N) % 3
    return TinyEmbedder().eval(), TinySet(images, labels)


def _unit(rng, n, d=D):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def scored(rng):
    """A gallery, attacked embeddings of 10 of its rows and random targets."""
    clean = _unit(rng, N)
    adversarial = clean.copy()
    rows = np.sort(rng.choice(N, 10, replace=False))
    adversarial[rows] = _unit(rng, 10)
    labels = np.arange(N) % 3
    index = rng.integers(0, N, size=10)
    targets = {"query": index, "candidate": index, "target": index, "top1": index}
    return Scored(clean, adversarial, labels, rows, targets)


def test_the_ers_suite_is_robranks_ten(tiny):
    assert sorted(a.name for a in suite("ers")) == sorted(RANKING)
    assert tuple(ERS_TERMS) == ROBRANK_ERS_TERMS


# --------------------------------------------------------------------------- scores


def test_candidate_and_query_attacks_report_the_percentile_rank(scored):
    """CA±: where the attacked candidate ranks among the gallery for its query; QA±: where
    the candidate ranks among the gallery for the attacked query."""
    s = scored
    pairs = list(zip(s.rows, s.targets["query"], s.targets["candidate"], strict=True))
    expected = {
        "ca": [percentile_rank(s.clean[q], s.adversarial[row], s.clean) for row, q, _ in pairs],
        "qa": [percentile_rank(s.adversarial[row], s.clean[c], s.clean) for row, _, c in pairs],
    }
    for name in ("ca_pos", "ca_neg", "qa_pos", "qa_neg"):
        got = ATTACKS[name].score(s)["prank"]
        assert got == pytest.approx(np.mean(expected[name[:2]]), abs=1e-6)


def test_tma_reports_the_cosine_to_the_target(scored):
    got = ATTACKS["tma"].score(scored)["cosine"]
    cosines = [
        float(scored.adversarial[r] @ scored.clean[t])
        for r, t in zip(scored.rows, scored.targets["target"], strict=True)
    ]
    assert got == pytest.approx(np.mean(cosines), abs=1e-6)


def _naive_recall_at_1(s: Scored, rows) -> float:
    hits = []
    for row in rows:
        others = [j for j in range(N) if j != row]
        nearest = min(others, key=lambda j: dist(s.adversarial[row], s.clean[j]))
        hits.append(s.labels[nearest] == s.labels[row])
    return float(np.mean(hits))


def test_ltm_and_gtm_report_recall_at_1_with_the_own_row_masked(scored):
    expected = _naive_recall_at_1(scored, scored.rows)
    for name in ("ltm", "gtm"):
        assert ATTACKS[name].score(scored)["recall@1"] == pytest.approx(expected)


def test_es_reports_es_r_and_es_d(scored):
    got = ATTACKS["es"].score(scored)
    assert got["recall@1"] == pytest.approx(_naive_recall_at_1(scored, range(N)))
    shifts = [dist(scored.adversarial[r], scored.clean[r]) for r in scored.rows]
    assert got["embedding_shift"] == pytest.approx(np.mean(shifts), abs=1e-6)


def test_gtt_reports_retain_at_4(scored):
    got = ATTACKS["gtt"].score(scored)["retain@4"]
    kept = []
    for row, top1 in zip(scored.rows, scored.targets["top1"], strict=True):
        others = sorted(
            (j for j in range(N) if j != row),
            key=lambda j: dist(scored.adversarial[row], scored.clean[j]),
        )
        kept.append(top1 in others[:4])
    assert got == pytest.approx(np.mean(kept))


# --------------------------------------------------------------------------- targets


def _gallery_set(gallery: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> AttackSet:
    """The rows ``rows`` of a gallery attacked, each with its own gallery row known."""
    return AttackSet(
        clean=gallery[rows],
        labels=labels[rows],
        gallery=gallery,
        gallery_labels=labels,
        self_index=rows,
        rng=np.random.default_rng(0),
    )


def _set(rng, n=12):
    gallery = torch.from_numpy(_unit(rng, N))
    labels = torch.arange(N) % 3
    return _gallery_set(gallery, labels, torch.from_numpy(np.sort(rng.choice(N, n, replace=False))))


def _clean_ranking(s: AttackSet, i: int) -> list[int]:
    own = int(s.self_index[i])
    others = [j for j in range(N) if j != own]
    return sorted(others, key=lambda j: dist(s.clean[i], s.gallery[j]))


def test_near_targets_come_from_the_top_one_percent_and_greedy_targets_are_exact(rng):
    s = _set(rng)
    for name, key in (("ca_neg", "query"), ("qa_neg", "candidate")):
        drawn = ATTACKS[name].targets(s)[key]
        for i, j in enumerate(drawn.tolist()):  # N = 60: the top 1 % is the nearest item
            assert j == _clean_ranking(s, i)[0]
    top1 = ATTACKS["gtt"].targets(s)["top1"]
    aim = ATTACKS["gtm"].targets(s)["target"]
    for i in range(len(s)):
        ranking = _clean_ranking(s, i)
        assert int(top1[i]) == ranking[0]
        first_label = int(s.gallery_labels[ranking[0]])
        assert int(aim[i]) == next(j for j in ranking if int(s.gallery_labels[j]) != first_label)
    for name, key in (("ca_pos", "query"), ("qa_pos", "candidate"), ("tma", "target")):
        drawn = ATTACKS[name].targets(_set(np.random.default_rng(3), n=12))[key]
        assert drawn.min() >= 0 and drawn.max() < N and len(set(drawn.tolist())) > 3


# --------------------------------------------------------------------------- objectives


def _naive_loss(name: str, e, s: AttackSet, t: dict, i: int) -> float:
    g = s.gallery.numpy()
    own = int(s.self_index[i])
    if name in ("ca_pos", "ca_neg"):
        q = g[int(t["query"][i])]
        a = dist(e, q)
        gaps = [(a - dist(gj, q)) if name == "ca_pos" else (dist(gj, q) - a) for gj in g]
        return float(np.mean(np.maximum(gaps, 0)))
    if name in ("qa_pos", "qa_neg", "gtt"):
        c = g[int(t["top1" if name == "gtt" else "candidate"][i])]
        a = dist(e, c)
        raise_ = name == "qa_pos"
        gaps = [(a - dist(e, gj)) if raise_ else (dist(e, gj) - a) for gj in g]
        return float(np.mean(np.maximum(gaps, 0)))
    if name == "tma":
        return 1.0 - float(e @ g[int(t["target"][i])] / np.linalg.norm(e))
    if name == "es":
        return -(dist(e, s.clean[i].numpy()) ** 2)
    if name == "ltm":
        y = int(s.labels[i])
        neg = max(dist(e, g[j]) for j in range(N) if int(s.gallery_labels[j]) != y)
        pos = min(dist(e, g[j]) for j in range(N) if int(s.gallery_labels[j]) == y and j != own)
        return max(neg - pos, 0.0)
    if name == "gtm":
        return dist(e, g[int(t["target"][i])])
    raise AssertionError(name)


@pytest.mark.parametrize("name", RANKING)
def test_each_objective_is_minus_robranks_loss_and_the_attack_raises_it(tiny, name):
    model, data = tiny
    rows = torch.arange(0, N, 5)
    with torch.no_grad():
        gallery = model(data.images)
    labels = torch.from_numpy(data.labels)
    s = _gallery_set(gallery, labels, rows)
    attack = ATTACKS[name]
    targets = attack.targets(s)
    objective = attack.objective(targets, s)
    probe = F.normalize(
        gallery[rows] + 0.3 * torch.randn(len(rows), D, generator=torch.Generator().manual_seed(2)),
        dim=1,
    )
    values = objective(probe)
    for i in range(len(rows)):
        expected = -_naive_loss(name, probe[i].numpy(), s, targets, i)
        if name == "es":  # the reference sits a hair off the clean embedding (a gradient at 0)
            assert float(values[i]) == pytest.approx(expected, abs=1e-5)
        else:
            assert float(values[i]) == pytest.approx(expected, abs=1e-5)
    x = data.images[rows]
    before = objective(model(x)).detach()
    x_adv = craft(model, x, name, AttackBudget(0.3, 10, 0.05, random_start=False), s, targets)
    after = objective(model(x_adv)).detach()
    assert torch.all(after >= before - 1e-6) and float((after - before).mean()) > 0


# --------------------------------------------------------------------------- ERS


def _scores(ca_pos, ca_neg, qa_pos, qa_neg, tma, shift, es_r, ltm, gtm, gtt) -> dict:
    """Attacked metrics of the nine ERS attacks, as the attacks report them."""
    return {
        "ca_pos": {"prank": ca_pos},
        "ca_neg": {"prank": ca_neg},
        "qa_pos": {"prank": qa_pos},
        "qa_neg": {"prank": qa_neg},
        "tma": {"cosine": tma},
        "es": {"embedding_shift": shift, "recall@1": es_r},
        "ltm": {"recall@1": ltm},
        "gtm": {"recall@1": gtm},
        "gtt": {"retain@4": gtt},
    }


def test_ers_against_hand_computed_values():
    """RobRank's vanilla Fashion row (docs/robrank-attacks-spec.md §2): raw scores 1.1, 96.8,
    0.3, 97.8 (percent), TMA 0.990, ES:D 1.604, ES:R 0.1 %, LTM 0 %, GTM 12.6 %, GTT 0 %."""
    attacked = _scores(0.011, 0.968, 0.003, 0.978, 0.990, 1.604, 0.001, 0.0, 0.126, 0.0)
    terms = ers_terms(attacked)
    hand = [2.2, 3.2, 0.6, 2.2, 1.0, 19.8, 0.1, 0.0, 12.6, 0.0]
    assert list(terms.values()) == pytest.approx(hand, abs=1e-9)
    assert ers(attacked) == pytest.approx(sum(hand) / 10)  # 4.17, RobRank prints 4.2
    # an attack that did nothing: the clean state of a perfect model scores 100 on each term
    untouched = _scores(0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0)
    assert ers(untouched) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="ERS needs the attacks gtt"):
        ers({k: v for k, v in attacked.items() if k != "gtt"})


def test_the_suite_reports_every_term_and_ers(tiny):
    model, data = tiny
    result = evaluate_suite(model, data, "ers", AttackBudget(0.3, 5, 0.05, random_start=False))
    assert set(result["attacks"]) == set(RANKING)
    assert result["ers"] == pytest.approx(
        ers({a: r["attacked"] for a, r in result["attacks"].items()})
    )
    assert result["ers"] < result["clean_ers"]


# --------------------------------------------------------------------------- APGD


def test_apgd_checkpoints_follow_croce_and_hein():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("pgd_step", [0.25, 0.0005], ids=["too-large", "too-small"])
def test_apgd_reaches_at_least_pgds_objective_when_pgds_step_is_off(pgd_step):
    """A peak inside the ε-ball: a fixed step that is too large oscillates around it, one
    that is too small never gets there; APGD's halving step lands on it."""
    x = torch.full((8, 1, 2, 2), 0.5)
    peak = 0.5 + torch.linspace(0.07, 0.23, 8)[:, None]  # every dim of sample b at peak[b]
    model = nn.Flatten()
    objective = lambda e: -(e - peak).pow(2).sum(1)  # noqa: E731
    fixed = pgd(model, x, objective, 0.3, 100, pgd_step, random_start=False)
    adaptive = apgd(model, x, objective, 0.3, 100, random_start=False)
    with torch.no_grad():
        v_pgd, v_apgd = objective(model(fixed)), objective(model(adaptive))
    assert torch.all(v_apgd >= v_pgd - 1e-9)
    assert float(v_apgd.min()) > -1e-4  # within 0.005 of the peak in every pixel
    assert float(v_pgd.min()) < -1e-3  # the fixed step missed it
    assert float((adaptive - x).abs().max()) <= 0.3 + 1e-6


# --------------------------------------------------------------------------- worst case


def test_the_worst_case_over_runs_is_never_weaker_than_any_single_run(tiny):
    model, data = tiny
    x = data.images[:20]
    with torch.no_grad():
        clean = model(x)
    objective = lambda e: (e - clean).pow(2).sum(1)  # noqa: E731
    candidates = [
        pgd(model, x, objective, 0.1, steps, generator=torch.Generator().manual_seed(s))
        for steps, s in ((2, 0), (5, 1), (10, 2))
    ]
    chosen, values = worst_case(model, x, objective, candidates)
    with torch.no_grad():
        picked = objective(model(chosen))
    assert torch.all(picked[:, None] >= values - 1e-7)
    assert torch.equal(picked, values.max(dim=1).values)


def test_strong_is_never_weaker_than_standard(tiny):
    model, data = tiny
    budget = AttackBudget(0.05, 4)
    for name in ("es", "ca", "qa_neg", "gtt"):
        standard = evaluate_attack(model, data, name, budget)
        strong = evaluate_attack(model, data, name, budget, strength="strong")
        attack = ATTACKS[name]
        metric = attack.headline
        assert not attack.less_robust(standard["attacked"], strong["attacked"]), name
        assert strong["runs"][0] == standard["runs"][0] and len(strong["runs"]) == 3
        assert any(c["attacked"] == standard["attacked"] for c in strong["candidates"])
        assert math.isfinite(strong["attacked"][metric])
    ca = evaluate_attack(model, data, "ca", budget, strength="strong")
    assert len({c["draw"] for c in ca["candidates"]}) == 3  # target draws
