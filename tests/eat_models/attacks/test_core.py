"""The PGD core, the registry and the ES / QA / CA-clu attacks, on the small trained vanilla
model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eat_models.attacks import (
    ATTACKS,
    AttackBudget,
    AttackSet,
    craft,
    default_step_size,
    embedding_shift_attack,
    embedding_shift_objective,
    evaluate_attack,
    evaluation_key,
    parse_evaluation_key,
    pgd,
    query_neighbours,
    random_other_clusters,
)
from eat_models.data import stratified_slice
from eat_models.evaluate import embed, gallery_retrieval_metrics, kmeans_assign, retrieval_metrics
from eat_models.networks import NetworkConfig, build_network
from tests import oracles

EPS = 0.1


@pytest.fixture(scope="module")
def attack_set(fmnist_small):
    """300 test images, 30 per class."""
    return stratified_slice(fmnist_small[1], 300, seed=1)


@pytest.fixture(scope="module")
def images(attack_set):
    return attack_set.batch(np.arange(0, 300, 10))


def _within_budget(x_adv, x, eps):
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_every_attack_stays_in_the_eps_ball_and_the_pixel_range(vanilla_model, images):
    labels = torch.arange(len(images)) % 10
    gallery = vanilla_model(images).detach()
    centroids = torch.randn(len(images), gallery.shape[1])
    assert float(images.min()) == 0.0  # Fashion-MNIST backgrounds sit on the clamp
    known = AttackSet(
        clean=gallery,
        labels=labels,
        gallery=gallery,
        gallery_labels=labels,
        self_index=torch.arange(len(images)),
        centroids=centroids,
    )
    for eps in (0.03, EPS, 0.3):
        for attack in ATTACKS:
            for method in ("pgd", "apgd"):
                budget = AttackBudget(eps, 4, method=method)
                _within_budget(craft(vanilla_model, images, attack, budget, known), images, eps)
    # a scalar (batch-level) objective and a huge step size still respect the budget
    scalar = pgd(vanilla_model, images, lambda e: e[:, 0].sum(), EPS, 3, step_size=1.0)
    _within_budget(scalar, images, EPS)
    assert torch.equal(pgd(vanilla_model, images, lambda e: e[:, 0], 0.0, 5), images)


def test_pgd_runs_in_eval_mode_and_restores_each_module_mode(vanilla_model, images):
    net = vanilla_model.net
    net.train()
    net.features[1].eval()  # a mixed state must come back as it was
    running = net.features[4].running_mean.clone()
    modes = [m.training for m in net.modules()]
    seen = []
    hook = net.register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
    try:
        embedding_shift_attack(vanilla_model, images, AttackBudget(EPS, 3))
    finally:
        hook.remove()
        restored = [m.training for m in net.modules()]
        vanilla_model.eval()
    assert seen and not any(seen)
    assert restored == modes
    assert torch.equal(net.features[4].running_mean, running)  # no batch statistics used


def test_restarts_never_lower_the_objective(vanilla_model, images):
    clean = vanilla_model(images).detach()
    objective = embedding_shift_objective(clean)

    def run(restarts):
        gen = torch.Generator().manual_seed(3)
        x_adv = pgd(vanilla_model, images, objective, EPS, 3, restarts=restarts, generator=gen)
        with torch.no_grad():
            return objective(vanilla_model(x_adv))

    one, three = run(1), run(3)
    assert torch.all(three >= one - 1e-6)
    assert float(three.mean()) > float(one.mean())


def test_larger_eps_and_more_steps_shift_the_embedding_more(vanilla_model, images):
    clean = vanilla_model(images).detach()

    def shift(eps, steps):
        gen = torch.Generator().manual_seed(0)
        x_adv = embedding_shift_attack(vanilla_model, images, AttackBudget(eps, steps), gen)
        with torch.no_grad():
            return float((vanilla_model(x_adv) - clean).norm(dim=1).mean())

    shifts = [shift(eps, 10) for eps in (0.01, 0.03, 0.1)]
    assert shifts[0] < shifts[1] < shifts[2]
    assert shift(EPS, 1) < shift(EPS, 10)


def test_default_step_size():
    assert default_step_size(0.1, 20) == pytest.approx(0.0125)
    assert default_step_size(0.1, 5) == pytest.approx(0.05)
    assert default_step_size(0.1, 100) == pytest.approx(0.0125)


def test_query_neighbours_are_same_class_and_exclude_the_query():
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen), dim=1)
    labels = torch.arange(40) % 4
    idx, valid = query_neighbours(emb, labels, emb, labels, k=3, exclude_index=torch.arange(40))
    assert valid.all()
    assert torch.all(labels[idx] == labels[:, None])
    assert not torch.any(idx == torch.arange(40)[:, None])
    for q in range(40):  # against a naive ranking
        cands = [j for j in range(40) if j != q and labels[j] == labels[q]]
        best = sorted(cands, key=lambda j: -float(emb[q] @ emb[j]))[:3]
        assert idx[q].tolist() == best
    # fewer same-class items than k: the rest is marked invalid
    _, valid = query_neighbours(emb, labels, emb, labels, k=12, exclude_index=torch.arange(40))
    assert valid.sum(1).tolist() == [9] * 40


def test_random_other_clusters_never_pick_the_own_cluster():
    assign = np.repeat(np.arange(5), 200)
    targets = random_other_clusters(assign, 5, np.random.default_rng(0))
    assert not np.any(targets == assign)
    for c in range(5):
        assert set(targets[assign == c]) == set(range(5)) - {c}


def test_gallery_retrieval_metrics_match_the_single_set_metrics(rng):
    emb = rng.normal(size=(120, 6)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = rng.integers(0, 5, size=120)
    got = gallery_retrieval_metrics(emb, labels, emb, labels, exclude_index=np.arange(120))
    assert got == pytest.approx(retrieval_metrics(emb, labels))
    # a naive Recall@1 of separate queries against the gallery (no exclusion)
    queries = emb[:30] + 0.3 * rng.normal(size=(30, 6)).astype(np.float32)
    got = gallery_retrieval_metrics(queries, labels[:30], emb, labels, chunk=7)
    nearest = np.argmax(queries @ emb.T, axis=1)
    assert got["recall@1"] == pytest.approx(np.mean(labels[nearest] == labels[:30]))


def _crafted_images(monkeypatch):
    """Record ``(clean images, adversarial images)`` of every batch the driver crafts."""
    import eat_models.attacks.evaluate as driver

    crafted = []
    original = driver.perturb

    def spy(model, x, objective, budget, generator=None):
        x_adv = original(model, x, objective, budget, generator)
        crafted.append((x, x_adv))
        return x_adv

    monkeypatch.setattr(driver, "perturb", spy)
    return crafted


def _clustering_oracle(embeddings, labels):
    """NMI / pairwise F1 / ARI of a fresh k-means (K = 10, seed 0) scored by sklearn and a
    pair count."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    assign = KMeans(n_clusters=10, n_init=5, random_state=0).fit_predict(
        np.asarray(embeddings, dtype=np.float32)
    )
    return {
        "nmi": normalized_mutual_info_score(labels, assign),
        "f1": oracles.pairwise_f1(labels, assign),
        "ari": adjusted_rand_score(labels, assign),
    }


def test_attacks_at_eps_0_1_halve_recall_and_nmi(vanilla_model, attack_set, monkeypatch):
    """Each reported number equals a recomputation from the images the attack crafted: the
    model's embeddings of them, ranked against the clean set by a naive loop (ES, QA) or
    re-clustered by sklearn (CA); the clean numbers likewise from the clean embeddings."""
    crafted = _crafted_images(monkeypatch)
    labels = np.asarray(attack_set.labels)
    self_rows = np.arange(len(labels))
    with torch.no_grad():
        clean = vanilla_model(attack_set.batch(self_rows)).numpy().astype(np.float64)
    results = {}
    for attack in ("es", "qa", "ca"):
        crafted.clear()
        results[attack] = result = evaluate_attack(
            vanilla_model, attack_set, attack, AttackBudget(EPS, 10)
        )
        x = torch.cat([c for c, _ in crafted])
        x_adv = torch.cat([a for _, a in crafted])
        assert torch.equal(x, attack_set.batch(self_rows))  # every image, in order, once
        _within_budget(x_adv, x, EPS)
        with torch.no_grad():
            adversarial = vanilla_model(x_adv).numpy().astype(np.float64)
        shift = np.linalg.norm(adversarial - clean, axis=1).mean()
        assert result["mean_embedding_shift"] == pytest.approx(shift, abs=1e-5)
        assert result["attacked_images"] == 300 and shift > 0.2
        assert result["step_size"] == pytest.approx(default_step_size(EPS, 10))
        if attack == "ca":
            expect_clean = _clustering_oracle(clean, labels)
            expect_attacked = _clustering_oracle(adversarial, labels)
        else:
            expect_clean = oracles.retrieval_scores(clean, labels, clean, labels, self_rows)
            expect_attacked = oracles.retrieval_scores(
                adversarial, labels, clean, labels, self_rows
            )
        if attack == "es":
            expect_clean["embedding_shift"], expect_attacked["embedding_shift"] = 0.0, shift
        assert result["clean"] == pytest.approx(expect_clean, abs=1e-5)
        assert result["attacked"] == pytest.approx(expect_attacked, abs=1e-5)
    es, qa, ca = results["es"], results["qa"], results["ca"]
    assert es["clean"]["recall@1"] > 0.6 and ca["clean"]["nmi"] > 0.5
    assert es["attacked"]["recall@1"] < 0.5 * es["clean"]["recall@1"]
    assert qa["attacked"]["recall@1"] < 0.5 * qa["clean"]["recall@1"]
    assert ca["attacked"]["nmi"] < 0.5 * ca["clean"]["nmi"]


def test_the_timings_split_the_wall_clock_into_embedding_and_attack(
    vanilla_model, attack_set, monkeypatch
):
    """On a fake clock that only the clean embedding (2 s), the k-means (0.5 s) and each
    crafted batch (3 s) advance: ``clean_s`` is the embedding alone, ``attack_s`` the
    batches alone and ``total_s`` everything."""
    import eat_models.attacks.evaluate as driver

    now = [100.0]

    def advancing(seconds, function):
        def wrapped(*args, **kwargs):
            out = function(*args, **kwargs)
            now[0] += seconds
            return out

        return wrapped

    monkeypatch.setattr(driver, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(driver, "embed", advancing(2.0, driver.embed))
    monkeypatch.setattr(driver, "kmeans_assign", advancing(0.5, driver.kmeans_assign))
    monkeypatch.setattr(driver, "perturb", advancing(3.0, driver.perturb))
    small = stratified_slice(attack_set, 60, seed=0)
    for attack, before_attack in (("es", 2.0), ("ca", 2.5)):
        result = evaluate_attack(vanilla_model, small, attack, AttackBudget(EPS, 1), batch_size=25)
        batches = 3  # 60 images in batches of 25
        assert (result["clean_s"], result["attack_s"]) == (2.0, 3.0 * batches)
        assert result["total_s"] == before_attack + 3.0 * batches
    # a surrogate embeds the set a second time, before the attack (one batch of 60)
    result = evaluate_attack(
        vanilla_model, small, "es", AttackBudget(EPS, 1), surrogate=vanilla_model
    )
    assert (result["clean_s"], result["attack_s"], result["total_s"]) == (4.0, 3.0, 7.0)


def test_clustering_attack_on_no_sample_changes_nothing(vanilla_model, attack_set):
    result = evaluate_attack(vanilla_model, attack_set, "ca", AttackBudget(EPS, 5), fraction=0.0)
    assert result["attacked_images"] == 0 and result["mean_embedding_shift"] == 0.0
    assert result["attacked"] == result["clean"]
    partial = evaluate_attack(vanilla_model, attack_set, "ca", AttackBudget(EPS, 5), fraction=0.3)
    assert partial["attacked_images"] == 90
    assert partial["attacked"]["nmi"] < partial["clean"]["nmi"]


def test_clustering_targets_are_random_other_clusters(vanilla_model, attack_set, monkeypatch):
    """Each attacked image is pushed toward a centroid other than its own clean one."""
    import eat_models.attacks.clu as clu

    seen = []
    original = clu.clustering_objective

    def spy(own, target):
        seen.append((own, target))
        return original(own, target)

    monkeypatch.setattr(clu, "clustering_objective", spy)
    evaluate_attack(vanilla_model, attack_set, "ca", AttackBudget(EPS, 1), batch_size=128)
    own = torch.cat([o for o, _ in seen])
    target = torch.cat([t for _, t in seen])
    assert len(own) == 300
    assert not torch.any(torch.all(own == target, dim=1))
    _, centroids = kmeans_assign(embed(vanilla_model, attack_set), 10, seed=0)
    assert torch.allclose(
        torch.unique(own, dim=0), torch.unique(torch.from_numpy(centroids), dim=0)
    )
    assert len(torch.unique(target, dim=0)) == 10  # targets spread over all clusters


def test_transfer_mode_crafts_on_the_surrogate(vanilla_model, attack_set):
    white = evaluate_attack(vanilla_model, attack_set, "es", AttackBudget(EPS, 5))
    same = evaluate_attack(
        vanilla_model, attack_set, "es", AttackBudget(EPS, 5), surrogate=vanilla_model
    )
    assert same["transfer"] and not white["transfer"]
    assert same["attacked"] == white["attacked"]
    torch.manual_seed(0)
    stranger = build_network(NetworkConfig(width=8, embedding_dim=16)).eval()
    transfer = evaluate_attack(
        vanilla_model, attack_set, "es", AttackBudget(EPS, 5), surrogate=stranger
    )
    assert transfer["clean"] == white["clean"]
    assert transfer["attacked"]["recall@1"] > white["attacked"]["recall@1"] + 0.1


def test_evaluate_attack_rejects_bad_arguments(vanilla_model, attack_set):
    with pytest.raises(ValueError, match="unknown attack"):
        evaluate_attack(vanilla_model, attack_set, "xx", AttackBudget(EPS, 1))
    with pytest.raises(ValueError, match="fraction"):
        evaluate_attack(vanilla_model, attack_set, "ca", AttackBudget(EPS, 1), fraction=1.5)


def test_attack_command_writes_json_with_provenance(trained_vanilla, tmp_path, capsys):
    from eat_models.cli import main

    out = tmp_path / "ca.json"
    argv = ["attack", str(trained_vanilla), "--attack", "ca", "--eps", "0.1", "--steps", "2"]
    rc = main(argv + ["--max-test", "200", "--fraction", "0.5", "--out", str(out), "--quiet"])
    assert rc == 0
    record = json.loads(out.read_text())
    assert record["attack"] == "ca" and record["images"] == 200
    assert record["attacked_images"] == 100 and record["steps"] == 2
    assert {"nmi", "f1", "ari"} == set(record["clean"]) == set(record["attacked"])
    assert {"commit", "date", "torch"} <= set(record["provenance"])
    assert record["fingerprint"] and record["surrogate"] is None
    printed = capsys.readouterr().out
    assert "| clean |" in printed and "nmi" in printed


def test_attack_command_help_documents_every_flag(capsys):
    from eat_models.cli import main

    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    text = capsys.readouterr().out
    for flag in ("--attack", "--eps", "--steps", "--step-size", "--restarts", "--fraction"):
        assert flag in text
    for flag in ("--suite", "--strength"):
        assert flag in text
    for name, attack in ATTACKS.items():  # every registered attack is listed with its label
        assert f"{name}" in text and attack.label in text
    for flag in ("--surrogate", "--max-test", "--out", "--neighbours", "--seed"):
        assert flag in text


def test_the_registry_names_each_attack_and_what_it_needs(vanilla_model, attack_set):
    ours = ["es", "qa", "ca"]
    robrank = ["ca_pos", "ca_neg", "qa_pos", "qa_neg", "tma", "ltm", "gtm", "gtt"]
    assert list(ATTACKS) == ours + robrank
    x = attack_set.batch(np.arange(4))
    with pytest.raises(ValueError, match="unknown attack 'xx'; choose one of es, qa, ca, ca_pos"):
        craft(vanilla_model, x, "xx", AttackBudget())
    with pytest.raises(ValueError, match="needs centroids"):
        craft(vanilla_model, x, "ca", AttackBudget())
    with pytest.raises(ValueError, match="needs labels, gallery, gallery_labels"):
        craft(vanilla_model, x, "qa", AttackBudget())
    # the same budget and seed give the same images, through craft or the named function
    budget = AttackBudget(0.05, 3, seed=7)
    a = craft(vanilla_model, x, "es", budget)
    b = embedding_shift_attack(
        vanilla_model, x, budget.replace(seed=None), torch.Generator().manual_seed(7)
    )
    assert torch.equal(a, b)


def test_budget_defaults_and_refusals():
    budget = AttackBudget()
    assert (budget.eps, budget.steps, budget.restarts) == (0.1, 20, 1)
    assert budget.alpha == pytest.approx(0.0125) and budget.generator() is None
    assert budget.replace(step_size=0.01).alpha == 0.01
    with pytest.raises(ValueError, match="restarts"):
        AttackBudget(restarts=0)
    with pytest.raises(ValueError, match="eps"):
        AttackBudget(eps=-0.1)
    with pytest.raises(ValueError, match="unknown attack method"):
        AttackBudget(method="fgsm")
    # the app's limits: one validation, with the message a person reads
    assert AttackBudget.checked(0.1, 20).seed == 0
    with pytest.raises(ValueError, match="ε must lie between 0 and"):
        AttackBudget.checked(99, 20)
    with pytest.raises(ValueError, match="PGD steps must lie between 1 and"):
        AttackBudget.checked(0.1, 1000)


@pytest.mark.parametrize(
    "key, options",
    [
        ("ca@0.1/20", {}),
        ("ca@0.1/20x3", {"restarts": 3}),
        ("ca@0.1/20/p0.3", {"fraction": 0.3}),
        ("es@0.1/20/from-vanilla", {"transfer_from": "vanilla"}),
        ("ca@0.2/50/s2", {"steps": 50, "eps": 0.2, "seed": 2}),
        ("es@0.3/32", {"attack": "es", "eps": 0.3, "steps": 32}),
        ("ca@0.1/20/s1/strong", {"seed": 1, "strength": "strong"}),
    ],
)
def test_evaluation_keys_round_trip(key, options):
    base = {"attack": "ca" if key.startswith("ca") else "es", "eps": 0.1, "steps": 20}
    settings = {**base, **options}
    attack, eps, steps = settings.pop("attack"), settings.pop("eps"), settings.pop("steps")
    assert evaluation_key(attack, eps, steps, **settings) == key
    parsed = parse_evaluation_key(key)
    assert (parsed["attack"], parsed["eps"], parsed["steps"]) == (attack, eps, steps)
    assert evaluation_key(**parsed) == key
    assert parse_evaluation_key("clean") is None
