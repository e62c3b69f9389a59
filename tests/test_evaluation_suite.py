"""The offline suite on packaged data, evaluate() end to end, the report, --compare and the CLI (tiny models)."""

import json

import numpy as np
import pytest

from llm2comp import LLM2Comp
from llm2comp.cli.main import main
from llm2comp.evaluation import Embedder, EvalSettings, compare_models, evaluate, load_results, memory_states
from llm2comp.evaluation.offline_suite import OFFLINE_TASK_NAMES, offline_tasks
from llm2comp.evaluation.packaged_data import lee_documents, polarity_sentences

MAX_ITEMS = 12


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=48)


@pytest.fixture(scope="module")
def first_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "tiny"
    settings = EvalSettings(max_items=MAX_ITEMS, show_progress_bar=False)
    return evaluate(tiny, "offline", settings, output_dir=out, name="tiny"), out


def test_packaged_data_reads_without_importing_the_packages():
    import sys

    docs, gold = lee_documents()
    assert len(docs) == 50 and gold.shape == (50, 50) and np.allclose(gold, gold.T)
    assert gold[0, 1] > 0 and gold[1, 0] == gold[0, 1]  # the file fills only the upper triangle
    texts, labels = polarity_sentences()
    assert len(texts) == 200 and sorted(set(labels)) == ["neg", "pos"]
    assert "gensim" not in sys.modules and "scattertext" not in sys.modules


def test_offline_suite_is_seeded_and_sized():
    tasks = offline_tasks()
    assert tuple(t.name for t in tasks) == OFFLINE_TASK_NAMES
    sizes = {t.name: t.n_items for t in tasks}
    assert sizes == {"LeeDocSim": 1225, "Polarity200": 200, "RTPolarity": 200, "RTSubjectivity": 200,
                     "RTMovieClustering": 240, "RTPlotReviewRetrieval": 30, "RTPlotReviewReranking": 30,
                     "RTSameMoviePairs": 240}
    again = offline_tasks()
    assert again[2].texts == tasks[2].texts and again[5].queries == tasks[5].queries
    assert offline_tasks(seed=1)[2].texts != tasks[2].texts
    small = {t.name: t.n_items for t in offline_tasks(max_items=16)}
    assert small["LeeDocSim"] == 120 and small["Polarity200"] == 16 and small["RTPlotReviewRetrieval"] == 2
    retrieval, clustering = tasks[5], tasks[4]
    assert retrieval.corpus == clustering.texts  # shared reviews: encoded once
    assert retrieval.instruction and not clustering.instruction


def test_embedder_caches_and_keeps_instructions_apart(tiny):
    embed = Embedder(tiny, batch_size=4, show_progress_bar=False)
    first = embed(["a short text", "another one", "a short text"])
    assert first.shape == (3, tiny.hidden_size) and embed.num_encoded == 2
    np.testing.assert_allclose(first[0], first[2])
    np.testing.assert_allclose(first, tiny.encode(["a short text", "another one", "a short text"]), atol=1e-5)
    with_instruction = embed(["a short text"], instruction="Find it")
    assert embed.num_encoded == 3 and not np.allclose(with_instruction[0], first[0])
    assert sorted(embed.plain_texts()) == ["a short text", "another one"]


def test_evaluate_writes_results_report_and_plots(first_run):
    results, out = first_run
    assert [r["task_name"] for r in results["tasks"]] == list(OFFLINE_TASK_NAMES)
    for record in results["tasks"]:
        assert -1.0 <= record["main_score"] <= 1.0
        assert record["scores"]["test"][0]["main_score"] == record["main_score"]
        assert record["n"] > 0
    assert results["average"] == pytest.approx(np.mean([r["main_score"] for r in results["tasks"]]))
    saved = load_results(out)
    assert saved["tasks"][0]["task_name"] == "LeeDocSim" and saved["model"]["num_memory_tokens"] == 4
    report = (out / "report.md").read_text()
    assert "| task | type | metric | n | score |" in report and "| LeeDocSim | STS | cosine_spearman | 66 pairs |" in report
    assert (out / "spectrum.png").stat().st_size > 0 and (out / "memory_correlation.png").stat().st_size > 0
    memory = results["diagnostics"]["memory_correlation"]
    assert memory["k"] == 4 and np.allclose(np.diag(memory["matrix"]), 1.0, atol=1e-3)
    assert 1.0 <= results["diagnostics"]["spectrum"]["effective_dim"] <= tiny_dim(results)


def tiny_dim(results):
    return results["model"]["embedding_dim"]


def test_memory_states_shape(tiny):
    states = memory_states(tiny, ["one text", "a second, longer text"], batch_size=1)
    assert states.shape == (2, 4, tiny.hidden_size)


def test_compare_with_saved_results_and_baseline_model(first_run, tiny_llama_dir, tmp_path):
    _, saved = first_run
    settings = EvalSettings(pooling="mean", max_items=MAX_ITEMS, show_progress_bar=False)
    results = compare_models(str(tiny_llama_dir), saved, "offline", settings, output_dir=tmp_path / "mean")
    comparison = results["comparison"]
    assert comparison["label_b"] == "tiny (memory_mean)" and comparison["shared_tasks"] == len(OFFLINE_TASK_NAMES)
    row = comparison["rows"][0]
    assert row["delta"] == pytest.approx(row["a"] - row["b"])
    assert "memory_correlation" not in results["diagnostics"]  # mean pooling: no memory tokens
    report = (tmp_path / "mean" / "report.md").read_text()
    assert "## Comparison:" in report and "Memory-token correlation: not applicable" in report


def test_cli_eval_and_errors(first_run, tiny_llama_dir, tmp_path, capsys):
    _, saved = first_run
    out = tmp_path / "cli"
    code = main(["eval", "--model", str(tiny_llama_dir), "--pooling", "last", "--max-items", "8", "--output", str(out),
                 "--compare", str(saved / "results.json"), "--no-diagnostics"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "on offline: average" in printed and "compared with tiny (memory_mean)" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["pooling"] == "last" and results["diagnostics"] == {}
    assert main(["eval", "--model", str(tiny_llama_dir), "--suite", "nope"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_llama_dir), "--suite", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "--compare" in capsys.readouterr().out


def test_paper14_without_hub_is_a_clear_error(tiny_llama_dir, capsys, monkeypatch):
    pytest.importorskip("mteb")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--model", str(tiny_llama_dir), "--suite", "paper14"]) == 2
    err = capsys.readouterr().err
    assert "paper14 suite downloads its data sets from the Hugging Face Hub" in err and "--suite offline" in err
    assert "Traceback" not in err


def test_compare_results_matches_tasks_by_name():
    from llm2comp.evaluation import compare_results, render_markdown

    def record(name, score):
        return {"task_name": name, "main_metric": "m", "main_score": score, "n": 3, "unit": "texts"}

    a = {"model": {"name": "A"}, "tasks": [record("x", 0.5), record("y", 0.25)], "average": 0.375}
    b = {"model": {"name": "B", "pooling": "mean"}, "tasks": [record("y", 0.5), record("z", 0.1)]}
    comparison = compare_results(a, b)
    assert [row["task_name"] for row in comparison["rows"]] == ["x", "y", "z"]
    assert comparison["rows"][0]["b"] is None and comparison["rows"][1]["delta"] == pytest.approx(-0.25)
    assert comparison["shared_tasks"] == 1 and comparison["label_b"] == "B (mean)"
    report = render_markdown(dict(a, comparison=comparison))
    assert "| y | m | 3 texts | 25.00 | 50.00 | -25.00 |" in report and "| x | m | 3 texts | 50.00 | — | — |" in report
