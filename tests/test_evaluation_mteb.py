"""The MTEB adapter: protocol conformance, instructions on queries only, and scores equal to ours.

mteb cannot reach the Hub here, so the tasks are mteb custom tasks whose `load_data` builds local data.
"""

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")

from datasets import Dataset  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402

from llm2comp import LLM2Comp  # noqa: E402
from llm2comp.evaluation.mteb_adapter import (  # noqa: E402
    DEFAULT_INSTRUCTIONS,
    PAPER14,
    STS_INSTRUCTION,
    HubUnavailableError,
    MTEBEncoder,
    load_paper14,
    run_mteb,
)
from llm2comp.evaluation.retrieval import retrieval_metrics  # noqa: E402
from llm2comp.evaluation.sts import sts_metrics  # noqa: E402

COMMON = dict(description="local test data", reference=None, dataset={"path": "local/none", "revision": "0"},
              category="t2t", eval_splits=["test"], eval_langs=["eng-Latn"], modalities=["text"])
FIRST = ["a man plays guitar", "the cat sleeps", "stocks fell today", "it is raining", "a child reads a book"]
SECOND = ["someone plays music", "a dog barks", "markets dropped", "the sun shines", "a kid with a novel"]
GOLD = [4.0, 1.0, 4.5, 0.5, 3.5]
QUERIES = {"q1": "what do cats do", "q2": "how did the market do"}
DOCS = {"d1": "cats sleep most of the day", "d2": "stocks fell sharply today", "d3": "the weather is rainy"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}}


class LocalSTS(AbsTaskSTS):
    metadata = TaskMetadata(type="STS", name="LocalSTS", main_score="cosine_spearman", **COMMON)
    min_score, max_score = 0, 5

    def load_data(self, num_proc=None, **kwargs):
        self.dataset = {"default": {"test": Dataset.from_dict({"sentence1": FIRST, "sentence2": SECOND,
                                                               "score": GOLD})}}
        self.data_loaded = True


class LocalRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(type="Retrieval", name="LocalRetrieval", main_score="ndcg_at_10", **COMMON)

    def load_data(self, num_proc=None, **kwargs):
        corpus = Dataset.from_dict({"id": list(DOCS), "text": list(DOCS.values())})
        queries = Dataset.from_dict({"id": list(QUERIES), "text": list(QUERIES.values())})
        self.dataset = {"default": {"test": {"corpus": corpus, "queries": queries, "relevant_docs": QRELS,
                                             "top_ranked": None}}}
        self.data_loaded = True


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)


@pytest.fixture
def spy(model, monkeypatch):
    """Record the instruction of every encode call."""
    calls = []
    original = model.encode

    def encode(texts, **kwargs):
        calls.append((list(texts), kwargs.get("instruction")))
        return original(texts, **kwargs)

    monkeypatch.setattr(model, "encode", encode)
    return calls


def test_adapter_satisfies_the_encoder_protocol(model):
    encoder = MTEBEncoder(model)
    assert isinstance(encoder, mteb.EncoderProtocol)
    meta = encoder.mteb_model_meta
    assert meta.name.startswith("llm2comp/") and meta.embed_dim == model.hidden_size
    sims = encoder.similarity(np.eye(3), np.eye(3))
    assert np.allclose(np.asarray(sims), np.eye(3))
    assert np.allclose(np.asarray(encoder.similarity_pairwise(np.eye(2), np.eye(2))), [1.0, 1.0])


def test_instruction_selection():
    encoder = MTEBEncoder.__new__(MTEBEncoder)
    encoder.instructions = {"SciFact": "Custom", "STS17": ""}
    assert encoder.instruction_for("SciFact", "Retrieval", "query") == "Custom"
    assert encoder.instruction_for("SciFact", "Retrieval", "document") is None
    assert encoder.instruction_for("STS17", "STS", None) is None  # "" switches it off
    assert encoder.instruction_for("NFCorpus", "Retrieval", "query") == DEFAULT_INSTRUCTIONS["NFCorpus"]
    assert encoder.instruction_for("SomeNewTask", "Clustering", None).startswith("Identify")
    assert set(DEFAULT_INSTRUCTIONS) == set(PAPER14)


def test_sts_through_mteb_equals_our_metric(model, spy):
    results = mteb.evaluate(MTEBEncoder(model), LocalSTS(), cache=None, show_progress_bar=False)
    score = results.task_results[0].get_score()
    assert {instruction for _, instruction in spy} == {STS_INSTRUCTION}  # symmetric task: every input
    ours = sts_metrics(model.encode(FIRST, instruction=STS_INSTRUCTION),
                       model.encode(SECOND, instruction=STS_INSTRUCTION), GOLD)["cosine_spearman"]
    assert score == pytest.approx(ours, abs=1e-6)


def test_retrieval_instruction_on_queries_only_and_same_ndcg(model, spy):
    encoder = MTEBEncoder(model, instructions={"LocalRetrieval": "Find the passage"})
    record = run_mteb(encoder, [LocalRetrieval()], show_progress_bar=False)[0]
    by_instruction = {instruction: texts for texts, instruction in spy}
    assert sorted(by_instruction["Find the passage"]) == sorted(QUERIES.values())
    assert sorted(by_instruction[None]) == sorted(DOCS.values())
    queries = model.encode(list(QUERIES.values()), instruction="Find the passage")
    docs = model.encode(list(DOCS.values()))
    ours = retrieval_metrics(queries, docs, [{0: 1.0}, {1: 1.0}])
    assert record["main_score"] == pytest.approx(ours["ndcg_at_10"], abs=1e-4)
    assert record["task_name"] == "LocalRetrieval" and record["main_metric"] == "ndcg_at_10" and record["n"] == 2


def test_paper14_offline_raises_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="Hugging Face Hub.*BiorxivClusteringS2S"):
        load_paper14()


def test_evaluate_paper14_path_with_local_tasks(model, monkeypatch, tmp_path):
    import llm2comp.evaluation.mteb_adapter as adapter
    from llm2comp.evaluation import EvalSettings, evaluate

    monkeypatch.setattr(adapter, "load_mteb_suite", lambda suite: [LocalSTS(), LocalRetrieval()])
    settings = EvalSettings(instructions={"LocalSTS": ""}, show_progress_bar=False)
    results = evaluate(model, "paper14", settings, output_dir=tmp_path)
    assert results["suite"] == "paper14" and [r["task_name"] for r in results["tasks"]] == ["LocalSTS",
                                                                                             "LocalRetrieval"]
    assert results["tasks"][0]["instruction"] is None  # switched off by the mapping
    assert results["average"] == pytest.approx(np.mean([r["main_score"] for r in results["tasks"]]))
    assert "| LocalSTS | STS | cosine_spearman | 5 samples |" in (tmp_path / "report.md").read_text()
