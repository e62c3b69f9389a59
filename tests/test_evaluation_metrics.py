"""Every evaluation metric against a hand-checkable case or scikit-learn / scipy / pytrec_eval directly."""

import math

import numpy as np
import pytest

from llm2comp.evaluation.classification import classification_metrics, split_metrics
from llm2comp.evaluation.clustering import clustering_metrics
from llm2comp.evaluation.diagnostics import correlation_summary, embedding_spectrum, memory_correlation
from llm2comp.evaluation.pair_classification import best_threshold_scores, pair_classification_metrics
from llm2comp.evaluation.reranking import reranking_metrics
from llm2comp.evaluation.retrieval import ranking_metrics, retrieval_metrics
from llm2comp.evaluation.sts import sts_metrics


def test_sts_spearman_of_cosine_hand_case_and_scipy():
    first = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    second = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.2]])  # cosines 1, .71, 0, -.98
    assert sts_metrics(first, second, [4, 3, 2, 1])["main_score"] == pytest.approx(1.0)
    assert sts_metrics(first, second, [1, 2, 3, 4])["cosine_spearman"] == pytest.approx(-1.0)
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    a, b, gold = rng.normal(size=(30, 8)), rng.normal(size=(30, 8)), rng.uniform(0, 5, 30)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    got = sts_metrics(a, b, gold)
    assert got["cosine_spearman"] == pytest.approx(spearmanr(gold, cosine)[0])
    assert got["cosine_pearson"] == pytest.approx(pearsonr(gold, cosine)[0])
    assert got["euclidean_spearman"] == pytest.approx(spearmanr(gold, -np.linalg.norm(a - b, axis=1))[0])


def test_classification_separable_and_equal_to_sklearn_cross_validation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(0)
    labels = np.array(["a"] * 20 + ["b"] * 20)
    separable = np.where(labels[:, None] == "a", 5.0, -5.0) + rng.normal(size=(40, 4))
    got = classification_metrics(separable, labels)
    assert got["accuracy"] == 1.0 and got["f1"] == 1.0 and got["main_score"] == 1.0
    noisy = rng.normal(size=(40, 6)) + (labels[:, None] == "a") * 0.5
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=3)
    got = classification_metrics(noisy, labels, n_folds=5, seed=3)
    for metric, scoring in (("accuracy", "accuracy"), ("f1", "f1_macro")):
        expected = cross_val_score(LogisticRegression(max_iter=100), noisy, labels, cv=folds, scoring=scoring).mean()
        assert got[metric] == pytest.approx(expected)
    split = split_metrics(separable[::2], labels[::2], separable[1::2], labels[1::2])
    assert split["accuracy"] == 1.0


def test_clustering_v_measure_perfect_and_equal_to_sklearn():
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    rng = np.random.default_rng(0)
    labels = np.repeat(["x", "y", "z"], 10)
    centres = {"x": [10, 0], "y": [0, 10], "z": [-10, -10]}
    blobs = np.array([centres[label] for label in labels]) + rng.normal(scale=0.1, size=(30, 2))
    assert clustering_metrics(blobs, labels)["v_measure"] == pytest.approx(1.0)
    noisy = rng.normal(size=(30, 5))
    expected = np.mean([v_measure_score(labels, MiniBatchKMeans(n_clusters=3, batch_size=512, n_init=1,
                                                                random_state=7 + run).fit_predict(noisy))
                        for run in range(3)])
    assert clustering_metrics(noisy, labels, n_runs=3, seed=7)["v_measure"] == pytest.approx(expected)


def test_pair_classification_thresholds_by_hand_and_ap_by_sklearn():
    accuracy, f1 = best_threshold_scores([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0])
    assert accuracy == pytest.approx(0.75)  # cut after 0.9 or after 0.7
    assert f1 == pytest.approx(0.8)  # cut after 0.7: precision 2/3, recall 1
    assert best_threshold_scores([0.5, 0.5], [1, 0]) == (0.0, 0.0)  # tied scores cannot be split
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    a, b, labels = rng.normal(size=(40, 8)), rng.normal(size=(40, 8)), rng.integers(0, 2, 40)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    got = pair_classification_metrics(a, b, labels)
    assert got["cosine_ap"] == pytest.approx(average_precision_score(labels, cosine))
    assert got["manhattan_ap"] == pytest.approx(average_precision_score(labels, -np.abs(a - b).sum(1)))
    assert got["main_score"] == got["max_ap"] == max(got[f"{n}_ap"] for n in ("cosine", "dot", "euclidean", "manhattan"))


def test_ranking_metrics_hand_case():
    # one query ranked [d2, d0, d1]; d0 relevant (grade 1), d1 relevant (grade 2)
    got = ranking_metrics([[2, 0, 1]], [{0: 1.0, 1: 2.0}], k_values=(1, 3, 10))
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["ndcg_at_10"] == pytest.approx(dcg / idcg)
    assert got["mrr_at_10"] == pytest.approx(0.5)
    assert got["recall_at_1"] == 0.0 and got["recall_at_3"] == 1.0
    assert got["map_at_10"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got["precision_at_3"] == pytest.approx(2 / 3)


def test_retrieval_metrics_equal_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(2)
    queries, docs = rng.normal(size=(6, 8)), rng.normal(size=(40, 8))
    relevance = [{int(d): float(rng.integers(1, 3)) for d in rng.choice(40, size=3, replace=False)} for _ in range(6)]
    got = retrieval_metrics(queries, docs, relevance)
    cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (docs / np.linalg.norm(docs, axis=1,
                                                                                              keepdims=True)).T
    run = {f"q{q}": {f"d{d}": float(cos[q, d]) for d in range(40)} for q in range(6)}
    qrels = {f"q{q}": {f"d{d}": int(r) for d, r in rel.items()} for q, rel in enumerate(relevance)}
    measures = {"ndcg_cut.10", "map_cut.10", "recall.10", "recall.100"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    for ours, theirs in (("ndcg_at_10", "ndcg_cut_10"), ("map_at_10", "map_cut_10"), ("recall_at_10", "recall_10"),
                         ("recall_at_100", "recall_100")):
        assert got[ours] == pytest.approx(np.mean([trec[q][theirs] for q in trec]), abs=1e-9), ours


def test_reranking_map_equals_sklearn_average_precision():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    scores = [rng.normal(size=7) for _ in range(4)]
    labels = [np.array([1, 1, 0, 0, 0, 1, 0]) for _ in range(4)]
    got = reranking_metrics(scores, labels)
    assert got["map"] == pytest.approx(np.mean([average_precision_score(y, s) for s, y in zip(scores, labels)]))
    assert reranking_metrics([np.array([0.9, 0.1, 0.5])], [np.array([1, 0, 0])])["mrr_at_10"] == 1.0


def test_spectrum_effective_dimension_by_hand():
    eye = np.eye(5)
    x = np.concatenate([eye[:3], -eye[:3]])  # mean 0, three equal singular values
    got = embedding_spectrum(x)
    assert got["effective_dim"] == pytest.approx(3.0)  # participation ratio
    assert got["effective_rank"] == pytest.approx(3.0)
    assert got["dims_90"] == 3 and got["singular_values"][0] == 1.0
    collapsed = np.outer([1.0, -1.0, 2.0, -3.0, 0.5], [0.0, 1.0, 0.0, 0.0])  # every embedding on one axis
    assert embedding_spectrum(collapsed)["effective_dim"] == pytest.approx(1.0, abs=1e-6)
    uneven = np.array([[1.0, 0], [-1, 0]] * 3 + [[0, 1.0], [0, -1]])  # variance 6 along x, 2 along y
    got = embedding_spectrum(uneven)
    assert got["effective_dim"] == pytest.approx(8**2 / (6**2 + 2**2))  # (sum lambda)^2 / sum lambda^2 = 1.6
    p = np.sqrt([6, 2]) / np.sqrt([6, 2]).sum()
    assert got["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert got["dims_90"] == 2 and got["dims_99"] == 2


def test_memory_correlation_detects_redundant_tokens():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(50, 16))
    states = np.stack([base, 2 * base + 3.0, rng.normal(size=(50, 16))], axis=1)  # (N, k=3, d)
    matrix = memory_correlation(states)
    assert np.allclose(np.diag(matrix), 1.0)
    assert matrix[0, 1] == pytest.approx(1.0)  # token 1 is a rescaled, shifted token 0
    assert abs(matrix[0, 2]) < 0.2
    summary = correlation_summary(matrix)
    assert summary["redundant_pairs"] == 1 and summary["k"] == 3
