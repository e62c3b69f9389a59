"""Evaluation: task types with MTEB's metrics on local files, the offline and paper14 suites,
an MTEB adapter, diagnostics (effective dimension, memory-token correlation) and reports.

    from llm2comp.evaluation import EvalSettings, cached_evaluate, compare_models, evaluate
    floor = evaluate("smollm2-135m", "offline", EvalSettings(pooling="mean"), output_dir="eval/mean")
    results = compare_models(trained_model, "eval/mean", "offline", EvalSettings(), output_dir="eval/trained")
    results = cached_evaluate("runs/stage3/final/model", "offline", EvalSettings(max_items=100), "eval/final")

A model is any `TextEncoder` (encoders.py: LLM2Comp is one), a sentence-transformers-like object
(wrapped by `SentenceEncoder`), or a name/path to load.
"""

from .base import Embedder, EvalDataError, Task
from .baselines import TfidfSvdBaseline, WordLlamaBaseline, evaluate_baselines, make_baseline
from .cache import cached_evaluate
from .classification import ClassificationTask, classification_metrics, load_classification
from .clustering import ClusteringTask, clustering_metrics, load_clustering
from .diagnostics import embedding_spectrum, memory_correlation, memory_states
from .encoders import SentenceEncoder, TextEncoder, as_encoder
from .pair_classification import PairClassificationTask, load_pair_classification, pair_classification_metrics
from .report import compare_results, load_results, render_markdown, write_report
from .reranking import RerankingTask, load_reranking, reranking_metrics
from .retrieval import RetrievalTask, load_retrieval, retrieval_metrics
from .runner import compare_models, evaluate, load_model
from .settings import EvalSettings
from .sts import STSTask, load_sts, sts_metrics
from .suites import Suite, get_suite, load_suite_file, offline_suite

__all__ = [
    "evaluate", "compare_models", "cached_evaluate", "EvalSettings", "TextEncoder", "SentenceEncoder", "as_encoder",
    "load_model", "Suite", "get_suite", "load_suite_file", "offline_suite",
    "make_baseline", "evaluate_baselines", "TfidfSvdBaseline", "WordLlamaBaseline",
    "Task", "Embedder", "EvalDataError",
    "STSTask", "ClassificationTask", "ClusteringTask", "PairClassificationTask", "RetrievalTask", "RerankingTask",
    "load_sts", "load_classification", "load_clustering", "load_pair_classification", "load_retrieval",
    "load_reranking",
    "sts_metrics", "classification_metrics", "clustering_metrics", "pair_classification_metrics",
    "retrieval_metrics", "reranking_metrics",
    "embedding_spectrum", "memory_correlation", "memory_states",
    "load_results", "compare_results", "render_markdown", "write_report",
]
