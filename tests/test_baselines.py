"""The trained non-LLM baselines (evaluation/baselines.py): TF-IDF+SVD and WordLlama, and `--baselines`."""

import importlib.util
import json
import socket
import sys

import numpy as np
import pytest

from llm2comp.cli.main import main
from llm2comp.errors import InvalidSetting, MissingDependency, UnknownName
from llm2comp.evaluation import TextEncoder
from llm2comp.evaluation import baselines as baselines_module
from llm2comp.evaluation.baselines import TfidfSvdBaseline, make_baseline, parse_baselines

CORPUS = [f"{a} {b} {c} and the {b} of {c}" for a in ("red", "green", "blue", "small", "large", "old")
          for b in ("cat", "dog", "bird", "horse", "fish") for c in ("garden", "river", "house", "forest")]
TEXTS = ["the red cat in the garden", "a large horse by the river", "old fish and the blue house",
         "green bird of the forest", "a dog"]
PAIRS = [("a cat sat on the mat", "a cat was sitting on a mat", 5), ("the dog barked at night", "a dog was barking", 4),
         ("stocks fell sharply today", "the market dropped", 3), ("he plays the guitar", "rain fell in the city", 1),
         ("a child reads a book", "the weather is cold", 0), ("she cooked dinner for friends", "a meal was made", 2)]
HAS_WORDLLAMA = importlib.util.find_spec("wordllama") is not None


@pytest.fixture
def pairs_suite(tmp_path):
    """A one-task STS suite of 6 pairs whose words a bag-of-words model can tell apart."""
    rows = "\n".join(f"{a}\t{b}\t{score}" for a, b, score in PAIRS)
    (tmp_path / "pairs.tsv").write_text("sentence1\tsentence2\tscore\n" + rows + "\n")
    (tmp_path / "suite.yaml").write_text("name: tiny\ntasks:\n  - type: sts\n    name: TinySTS\n    path: pairs.tsv\n")
    return tmp_path / "suite.yaml"


def test_tfidf_is_deterministic_of_the_configured_dimension_and_unit_length():
    first = TfidfSvdBaseline(dim=12, corpus=CORPUS).encode(TEXTS)
    again = TfidfSvdBaseline(dim=12, corpus=CORPUS).encode(TEXTS)  # a fresh fit
    assert isinstance(TfidfSvdBaseline(dim=12, corpus=CORPUS), TextEncoder)
    assert first.shape == (5, 12) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, rtol=1e-5)
    assert TfidfSvdBaseline(dim=7, corpus=CORPUS).encode(TEXTS).shape == (5, 7)


def test_tfidf_embedding_depends_on_the_text_alone():
    baseline = TfidfSvdBaseline(dim=12, corpus=CORPUS)
    together = baseline.encode(TEXTS)
    alone = np.stack([baseline.encode([text])[0] for text in TEXTS])
    reversed_order = baseline.encode(TEXTS[::-1])[::-1]
    with_others = baseline.encode(["zebra garden party", *TEXTS, "blue blue blue"])[1:-1]
    for other in (alone, reversed_order, with_others):
        np.testing.assert_allclose(other, together, rtol=1e-6, atol=1e-7)
    # the fit corpus is fixed: encoding other texts first changes nothing
    np.testing.assert_allclose(TfidfSvdBaseline(dim=12, corpus=CORPUS).encode(TEXTS), together, rtol=1e-6, atol=1e-7)
    # instructions are ignored: the same words would be added to every query
    np.testing.assert_array_equal(baseline.encode([("Retrieve reviews of the movie", TEXTS[0])]), together[:1])
    assert not np.allclose(together[0], together[1])  # different texts, different vectors


def test_tfidf_refuses_a_dimension_its_corpus_cannot_give_and_windows():
    with pytest.raises(InvalidSetting, match=r"dim=500 must be below the number of fit texts and of terms; "
                       r"the given corpus has 120 texts and 87 terms \(dim <= 86\)"):
        TfidfSvdBaseline(dim=500, corpus=CORPUS).encode(TEXTS)
    baseline = TfidfSvdBaseline(dim=12, corpus=CORPUS)
    with pytest.raises(InvalidSetting, match="reads each text whole"):
        baseline.encode(TEXTS, long_texts="segments")
    with pytest.raises(InvalidSetting, match="reads each text whole"):
        baseline.encode_windows(TEXTS)


def test_baseline_names_are_parsed_and_unknown_ones_listed():
    assert parse_baselines("tfidf, WordLlama,tfidf") == ["tfidf", "wordllama"]
    assert parse_baselines("none") == [] and parse_baselines(None) == []
    with pytest.raises(UnknownName, match=r"unknown baseline\(s\) 'bm25'; known baselines: tfidf, wordllama"):
        parse_baselines("tfidf,bm25")
    default = make_baseline("tfidf")  # nothing fit yet: the identity names the bundled corpus file
    assert default.label == "TF-IDF+SVD (256)" and default.dimension == 256 and default._fitted is None
    assert default.identity()["corpus"]["source"] == "wiki_default"
    assert default.identity()["corpus"]["sha256"] == make_baseline("tfidf").identity()["corpus"]["sha256"]


def test_eval_with_tfidf_writes_the_baseline_rows_and_reuses_them(pairs_suite, tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["eval", "--model", str(tiny_llama_dir), "--pooling", "mean", "--suite", str(pairs_suite),
            "--output", str(out), "--no-diagnostics"]
    assert main([*args, "--baselines", "tfidf"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    own = json.loads((out / "baselines" / "tfidf" / "results.json").read_text())
    assert saved["tasks"][0]["task_name"] == "TinySTS" and saved["model"]["name"] == str(tiny_llama_dir)
    (entry,) = saved["baselines"]
    assert entry["label"] == "TF-IDF+SVD (256)" and entry["results"] == "baselines/tfidf/results.json"
    assert entry["tasks"][0]["main_score"] == own["tasks"][0]["main_score"] == entry["average"]
    assert own["model"]["fit_on"] == "bundled Wikipedia paragraphs (wiki_default)" and "cache_key" in own
    assert f"baseline TF-IDF+SVD (256): average {100 * entry['average']:.2f}" in printed
    report = (out / "report.md").read_text()
    assert "## Baselines" in report
    assert f"| task | metric | {tiny_llama_dir} (mean) | TF-IDF+SVD (256) |" in report
    model_score, baseline_score = saved["tasks"][0]["main_score"], entry["average"]
    assert f"| TinySTS | cosine_spearman | {100 * model_score:.2f} | {100 * baseline_score:.2f} |" in report

    assert main([*args, "--baselines", "tfidf"]) == 0  # a rerun reuses the baseline's saved results
    assert f"reusing {out / 'baselines' / 'tfidf' / 'results.json'} (same model" in capsys.readouterr().out
    assert main(args) == 0  # without --baselines the report is as before
    assert "baselines" not in json.loads((out / "results.json").read_text())
    assert "## Baselines" not in (out / "report.md").read_text()


def test_an_unknown_baseline_is_refused_before_the_model_loads(pairs_suite, tiny_llama_dir, tmp_path, capsys,
                                                                no_model_load):
    out = tmp_path / "out"
    argv = ["eval", "--model", str(tiny_llama_dir), "--suite", str(pairs_suite), "--output", str(out)]
    assert main([*argv, "--baselines", "tfidf,bm25"]) == 2
    assert "unknown baseline(s) 'bm25'; known baselines: tfidf, wordllama (or none)" in capsys.readouterr().err
    assert not out.exists()


def test_demo_refuses_an_unknown_baseline_before_training(tmp_path, monkeypatch, capsys):
    import llm2comp.recipes.pipeline as pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: pytest.fail("trained before checking --baselines"))
    assert main(["demo", "--baselines", "tfidf,nope"]) == 2
    assert "unknown baseline(s) 'nope'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_wordllama_missing_says_how_to_install(monkeypatch, pairs_suite, tiny_llama_dir, tmp_path, capsys,
                                               no_model_load):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(baselines_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wordllama" else real_find_spec(name, *a))
    with pytest.raises(MissingDependency, match=r"pip install wordllama==0\.4\.0\.post1"):
        make_baseline("wordllama")
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_llama_dir), "--suite", str(pairs_suite), "--output", str(out),
                 "--baselines", "wordllama"]) == 2
    assert "the WordLlama baseline needs the wordllama package: pip install wordllama==0.4.0.post1" in \
        capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(not HAS_WORDLLAMA, reason="wordllama is not installed (pip install wordllama==0.4.0.post1)")
def test_wordllama_loads_from_the_wheel_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the WordLlama baseline tried to reach the network")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    baselines_module._load_wordllama.cache_clear()
    baseline = make_baseline("wordllama")
    assert baseline.weights_path.name == "l2_supercat_256.safetensors"
    assert baseline.weights_path.parent.parent == baseline.tokenizer_path.parent.parent  # both in the wheel
    texts = ["a happy cat", "a joyful kitten", "the stock market crashed", ""]
    vectors = baseline.encode(texts)
    assert vectors.shape == (4, 256) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), [1, 1, 1, 0], atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # it carries meaning
    np.testing.assert_array_equal(baseline.encode([("Retrieve pets", "a happy cat")]), vectors[:1])
    np.testing.assert_allclose(baseline.encode(texts[::-1])[::-1], vectors, rtol=1e-6, atol=1e-7)
    assert baseline.label == "WordLlama (l2_supercat_256)"
    assert "wordllama" not in sys.modules  # read from its files; the package (Hub download code) never imported
