"""Long documents in evaluation: the WikiLongDocRetrieval task, multivector retrieval/reranking,
the longdoc / longembed suites, and the --long-texts flags of encode, search and eval."""

import json

import numpy as np
import pytest

from llm2comp import LLM2Comp
from llm2comp.cli.main import main
from llm2comp.data.wikipedia import WikiArticle, WikiSection
from llm2comp.evaluation import Embedder, RerankingTask, RetrievalTask, get_suite, retrieval_metrics
from llm2comp.evaluation.long_documents import long_document_task
from llm2comp.evaluation.reranking import RerankItem, reranking_metrics
from llm2comp.evaluation.retrieval import ranking_metrics
from llm2comp.models.maxsim import maxsim

SENTENCE_WORDS = 9


def article(name: str, n_sentences: int) -> WikiArticle:
    """Sentences of 9 words, 5 per paragraph: sentence i starts at word 9 * i."""
    sentences = [f"Sentence number {i} about {name} says something rather plain." for i in range(n_sentences)]
    paragraphs = tuple(" ".join(sentences[i:i + 5]) for i in range(0, n_sentences, 5))
    return WikiArticle(name, (WikiSection(None, 1, paragraphs),))


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=16, long_text_overlap=3)


def test_task_takes_queries_past_the_skip_and_removes_them():
    articles = [article("Alpha", 20), article("Beta", 12), article("Gamma", 3)]  # 180, 108 and 27 words
    task = long_document_task(skip_words=40, min_words=100, queries_per_article=3, articles=articles, seed=1)
    assert len(task.corpus) == 2 and len(task.queries) == 6  # Gamma is too short
    for query, judged in zip(task.queries, task.relevance):
        (doc,) = judged
        name = ["Alpha", "Beta"][doc]
        assert name in query and query not in task.corpus[doc]
        assert int(query.split()[2]) * SENTENCE_WORDS >= 40  # starts past word 40: sentence 5 or later
    assert len(task.corpus[0].split()) == 180 - 3 * SENTENCE_WORDS  # only the queries were removed
    again = long_document_task(skip_words=40, min_words=100, queries_per_article=3, articles=articles, seed=1)
    other = long_document_task(skip_words=40, min_words=100, queries_per_article=3, articles=articles, seed=2)
    assert again.queries == task.queries and other.queries != task.queries
    assert len(long_document_task(skip_words=40, max_words=150, articles=articles).corpus) == 1  # Beta only


def test_task_on_the_bundled_wikipedia():
    task = long_document_task(max_items=4, skip_words=128, min_words=600, max_words=1600)
    assert len(task.corpus) == 4 and len(task.queries) == 8
    for query, judged in zip(task.queries, task.relevance):
        assert all(query not in document for document in task.corpus)
        assert 8 <= len(query.split()) <= 40 and len(task.corpus[next(iter(judged))].split()) >= 600 - 80


def test_multivector_retrieval_is_maxsim_over_windows(model):
    corpus = [" ".join(["cats sleep in the sun"] * 8), " ".join(["stocks fell on the market"] * 8), "rain today"]
    task = RetrievalTask(name="t", queries=["where do cats sleep", "the market", "weather"], corpus=corpus,
                         relevance=[{0: 1.0}, {1: 1.0}, {2: 1.0}])
    embed = Embedder(model, long_texts="multivector", show_progress_bar=False)
    got = task.evaluate(embed)
    documents = model.encode(corpus, long_texts="multivector")
    assert all(len(d) > 1 for d in documents[:2]) and len(documents[2]) == 1
    queries = model.encode(task.queries, long_texts="multivector")
    scores = maxsim(queries, documents).numpy()
    expected = ranking_metrics(np.argsort(-scores, axis=1, kind="stable").tolist(), task.relevance)
    assert got["ndcg_at_10"] == pytest.approx(expected["ndcg_at_10"])
    assert got["mrr_at_10"] == pytest.approx(expected["mrr_at_10"])
    # other tasks get the token-weighted mean of the same windows: the segments vector
    np.testing.assert_allclose(embed(corpus), model.encode(corpus, long_texts="segments"), atol=1e-5, rtol=0)
    segments = Embedder(model, long_texts="segments", show_progress_bar=False)
    assert retrieval_metrics(segments(task.queries), segments(corpus), task.relevance)["ndcg_at_10"] == \
        pytest.approx(task.evaluate(segments)["ndcg_at_10"])
    with pytest.raises(ValueError, match="needs long_texts='multivector'"):
        segments.windows(corpus)


def test_multivector_reranking_uses_maxsim(model):
    long_positive = " ".join(["the cat naps on a warm windowsill"] * 6)
    items = [RerankItem("cats", [long_positive], ["stock prices", "rainy weather " * 20])]
    task = RerankingTask(name="r", items=items)
    got = task.evaluate(Embedder(model, long_texts="multivector", show_progress_bar=False))
    candidates = model.encode([long_positive, "stock prices", "rainy weather " * 20], long_texts="multivector")
    scores = maxsim(model.encode(["cats"], long_texts="multivector"), candidates).numpy()[0]
    assert got["map"] == pytest.approx(reranking_metrics([scores], [np.array([1, 0, 0])])["map"])


def test_suites_register_longdoc_and_longembed(tmp_path):
    suite = get_suite("longdoc", max_items=2)
    assert suite.name == "longdoc" and [t.name for t in suite.tasks] == ["WikiLongDocRetrieval"]
    assert len(suite.tasks[0].corpus) == 2
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("tasks:\n  - builtin: WikiLongDocRetrieval\n    max_items: 1\n")
    assert len(get_suite(yaml_file).tasks[0].corpus) == 1
    with pytest.raises(ValueError, match="longembed suite runs through mteb"):
        get_suite("longembed")


def test_longembed_without_hub_is_the_same_one_line_error(tiny_llama_dir, capsys, monkeypatch):
    pytest.importorskip("mteb")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--model", str(tiny_llama_dir), "--suite", "longembed"]) == 2
    err = capsys.readouterr().err
    assert "longembed suite downloads its data sets from the Hugging Face Hub" in err and "--suite longdoc" in err
    assert "LEMBNarrativeQARetrieval" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "--model", str(tiny_llama_dir), "--suite", "paper14", "--long-texts", "multivector"]) == 2
    assert "one vector per text" in capsys.readouterr().err


def test_cli_encode_multivector_writes_windows(model, tmp_path, capsys):
    folder = tmp_path / "model"
    model.save(folder)
    texts = [" ".join(["word"] * 30), "short one"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.npz"
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "in.txt"), "--output", str(out),
                 "--long-texts", "multivector", "--overlap", "2"]) == 0
    saved = np.load(out)
    expected = model.encode(texts, long_texts="multivector", overlap=2)
    np.testing.assert_allclose(saved["vectors"], np.concatenate(expected), atol=1e-6)
    assert saved["text_index"].tolist() == [0] * len(expected[0]) + [1]
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "in.txt"), "--output",
                 str(tmp_path / "x.npy"), "--long-texts", "multivector"]) == 2
    assert "expected a .npz file" in capsys.readouterr().err
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "in.txt"), "--output",
                 str(tmp_path / "s.npy"), "--long-texts", "segments", "--overlap", "2"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), model.encode(texts, long_texts="segments", overlap=2),
                               atol=1e-6)


def test_cli_search_and_eval_take_the_mode(model, tmp_path, capsys):
    from llm2comp.cli.search_cmd import semantic_search

    documents = [" ".join(["cats sleep in the sun"] * 8), "stocks fell"]
    model.set_long_texts("multivector")
    try:
        results = semantic_search(model, ["sleeping cats"], documents, None, top=2)
        scores = maxsim(model.encode(["sleeping cats"]), model.encode(documents))[0]
        assert sorted(score for score, _ in results[0]) == pytest.approx(sorted(scores.tolist()), abs=1e-6)
    finally:
        model.set_long_texts("truncate")
    folder = tmp_path / "model"
    model.save(folder)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(folder), "--suite", "longdoc", "--max-items", "1", "--long-texts",
                 "multivector", "--overlap", "4", "--output", str(out), "--no-diagnostics"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["long_texts"] == "multivector" and results["settings"]["overlap"] == 4
    assert results["tasks"][0]["task_name"] == "WikiLongDocRetrieval"
