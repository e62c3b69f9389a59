"""Evaluation: task types with MTEB's metrics on local files, the offline and paper14 suites,
an MTEB adapter, diagnostics (effective dimension, memory-token correlation) and reports.

    from llm2comp.evaluation import evaluate
    results = evaluate("smollm2-135m", suite="offline", pooling="mean", output_dir="eval/mean")
    results = evaluate(trained_model, suite="offline", output_dir="eval/trained", compare="eval/mean")
"""

from .base import Embedder, EvalDataError, Task
from .classification import ClassificationTask, classification_metrics, load_classification
from .clustering import ClusteringTask, clustering_metrics, load_clustering
from .diagnostics import embedding_spectrum, memory_correlation, memory_states
from .pair_classification import PairClassificationTask, load_pair_classification, pair_classification_metrics
from .report import compare_results, load_results, render_markdown, write_report
from .reranking import RerankingTask, load_reranking, reranking_metrics
from .retrieval import RetrievalTask, load_retrieval, retrieval_metrics
from .runner import evaluate, load_model
from .sts import STSTask, load_sts, sts_metrics
from .suites import Suite, get_suite, load_suite_file, offline_suite

__all__ = [
    "evaluate", "load_model", "Suite", "get_suite", "load_suite_file", "offline_suite",
    "Task", "Embedder", "EvalDataError",
    "STSTask", "ClassificationTask", "ClusteringTask", "PairClassificationTask", "RetrievalTask", "RerankingTask",
    "load_sts", "load_classification", "load_clustering", "load_pair_classification", "load_retrieval",
    "load_reranking",
    "sts_metrics", "classification_metrics", "clustering_metrics", "pair_classification_metrics",
    "retrieval_metrics", "reranking_metrics",
    "embedding_spectrum", "memory_correlation", "memory_states",
    "load_results", "compare_results", "render_markdown", "write_report",
]
